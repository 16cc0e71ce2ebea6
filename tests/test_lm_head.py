"""The evaluator's LM head reproduces each family's own logits, and so its loss."""

from __future__ import annotations

import pytest
import torch

from babelprune.evaluate.lm import batch_nll
from tests.tiny_models import ENCODER_FAMILIES, TINY_FAMILIES, tiny_inputs, tiny_model

DECODERS = [family for family in TINY_FAMILIES if family not in ENCODER_FAMILIES]


@pytest.mark.parametrize("family", DECODERS)
def test_summed_nll_matches_the_models_own_logits(family):
    # batch_nll runs the body once and the head in chunks (with soft-capping or a
    # logit scale where the family has one); the reference is the model's forward.
    model = tiny_model(family)
    inputs = tiny_inputs(model, batch=2, seq_len=8)
    inputs["attention_mask"][1, 5:] = 0  # a padded row: its last three targets do not count
    with torch.no_grad():
        logits = model(**inputs).logits.double()  # (B, T, V)
        ours = batch_nll(model, inputs["input_ids"], inputs["attention_mask"])  # (B,)
    log_probs = logits[:, :-1].log_softmax(-1)
    target_lp = log_probs.gather(-1, inputs["input_ids"][:, 1:].unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    expected = -(target_lp * inputs["attention_mask"][:, 1:]).sum(dim=1)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


def test_a_logit_scale_changes_the_loss():
    # The check above would pass for a family whose head ignores its scale only by chance: make the scale matter.
    model = tiny_model("cohere")
    inputs = tiny_inputs(model)
    with torch.no_grad():
        scaled = batch_nll(model, inputs["input_ids"], inputs["attention_mask"])
        model.config.logit_scale = 1.0
        model.logit_scale = 1.0
        unscaled = batch_nll(model, inputs["input_ids"], inputs["attention_mask"])
    assert not torch.allclose(scaled, unscaled, rtol=1e-3)
