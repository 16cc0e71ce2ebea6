import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from babelprune.evaluate.lm import score_windows
from babelprune.evaluate.windows import Window
from babelprune.report.records import LMScore


def tiny_llama(vocab: int = 40, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def test_uniform_model_scores_log_vocab_per_token():
    model = tiny_llama(vocab=40)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # all logits 0: every token has probability 1/40
    windows = [Window([1, 5, 6, 7], 3), Window([1, 8], 1)]
    totals = score_windows(model, windows, pad_id=0, batch_size=2)
    assert totals.n_tokens == 4 and totals.n_bytes == 4 and totals.n_windows == 2
    assert totals.nll_nats == pytest.approx(4 * math.log(40), rel=1e-5)


def test_padding_and_batching_do_not_change_the_total():
    model = tiny_llama(seed=1)
    windows = [Window([1, 5, 6, 7, 9, 12], 5), Window([1, 8], 1), Window([1, 20, 21, 22], 3)]
    one_by_one = score_windows(model, windows, pad_id=0, batch_size=1).nll_nats
    batched = score_windows(model, windows, pad_id=0, batch_size=3).nll_nats
    assert batched == pytest.approx(one_by_one, rel=1e-5)


def test_score_matches_the_models_own_loss():
    model = tiny_llama(seed=2)
    ids = torch.tensor([[1, 5, 6, 7, 9, 12]])
    with torch.no_grad():
        mean_loss = model(input_ids=ids, labels=ids).loss.item()  # HF mean NLL over 5 targets
    totals = score_windows(model, [Window(ids[0].tolist(), 5)], pad_id=0)
    assert totals.nll_nats == pytest.approx(5 * mean_loss, rel=1e-5)


def test_perplexity_and_bits_per_byte_from_totals():
    score = LMScore(language="en", name="English", script="Latn", resource="high",
                    n_windows=1, n_tokens=4, n_bytes=8, nll_nats=4 * math.log(16))
    assert score.perplexity == pytest.approx(16.0)
    assert score.bits_per_byte == pytest.approx(4 * 4 / 8)  # 4 tokens x 4 bits over 8 bytes


def test_token_nll_by_hand():
    from babelprune.evaluate.lm import token_nll

    # Row 1: logits (0, ln 3) -> p(target 1) = 3 / 4; row 2: (ln 2, ln 2) -> p = 1 / 2.
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(2.0), math.log(2.0)]])
    expected = [-math.log(3 / 4), -math.log(1 / 2)]
    assert token_nll(logits, torch.tensor([1, 0])).tolist() == pytest.approx(expected, rel=1e-6)


def test_each_window_gets_its_own_nll_in_the_given_order():
    model = tiny_llama(vocab=40)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every token costs ln 40
    # Given longest first: batching sorts by length, the record must not.
    windows = [Window([1, 5, 6, 7], 3), Window([1, 8], 1), Window([1, 9, 10], 2)]
    totals = score_windows(model, windows, pad_id=0, batch_size=2)
    assert totals.window_nll == pytest.approx((3 * math.log(40), math.log(40), 2 * math.log(40)), rel=1e-5)
    assert totals.window_bytes == (3, 1, 2)
    assert sum(totals.window_nll) == pytest.approx(totals.nll_nats)
