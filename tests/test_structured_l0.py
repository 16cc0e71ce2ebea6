"""Hard-concrete gates and the Lagrangian sparsity target."""

from __future__ import annotations

import math

import pytest
import torch

from babelprune.errors import BabelpruneError
from babelprune.prune.calibration import Calibration
from babelprune.prune.structured.l0 import (
    L0Settings,
    deterministic_gates,
    expected_sparsity,
    init_log_alpha,
    lagrangian_penalty,
    prob_nonzero,
    sample_gates,
    train_l0,
)
from tests.tiny_models import tiny_model


def test_expected_l0_of_a_neutral_gate_by_hand():
    # P(z != 0) = sigmoid(log_alpha - beta * ln(-l / r)); log_alpha = 0, beta = 2/3, (l, r) = (-0.1, 1.1):
    # sigmoid((2/3) * ln 11) = 1 / (1 + 11 ** (-2/3)).
    assert prob_nonzero(torch.tensor(0.0)).item() == pytest.approx(1 / (1 + 11 ** (-2 / 3)), abs=1e-7)
    assert prob_nonzero(torch.tensor(0.0)).item() == pytest.approx(0.83182, abs=1e-5)
    assert prob_nonzero(torch.tensor(-30.0)).item() < 1e-12


def test_gate_samples_and_test_time_gates_by_hand():
    # u = 1/2 and log_alpha = 0: s = sigmoid(0) = 1/2, stretched 1/2 * 1.2 - 0.1 = 0.5.
    assert sample_gates(torch.tensor([0.0]), torch.tensor([0.5])).item() == pytest.approx(0.5)
    # log_alpha = ln 3, u = 1/2: s = sigmoid(1.5 ln 3) = 3^1.5 / (1 + 3^1.5); stretched and clamped.
    s = 3**1.5 / (1 + 3**1.5)
    assert sample_gates(torch.tensor([math.log(3)]), torch.tensor([0.5])).item() == pytest.approx(min(1.0, s * 1.2 - 0.1))
    assert sample_gates(torch.tensor([0.0]), torch.tensor([1e-6])).item() == 0.0  # stretched below 0: clamped
    assert sample_gates(torch.tensor([0.0]), torch.tensor([1 - 1e-6])).item() == 1.0
    gates = deterministic_gates(torch.tensor([0.0, 10.0, -10.0]))
    assert gates.tolist() == pytest.approx([0.5, 1.0, 0.0])


def test_expected_sparsity_penalty_and_initialisation_by_hand():
    probs = [torch.tensor([1.0, 0.5])]
    costs = [torch.tensor([10.0, 30.0])]
    assert expected_sparsity(probs, costs, 60.0).item() == pytest.approx(15 / 60)
    # lambda1 * (0.3 - 0.5) + lambda2 * (0.3 - 0.5)^2 with lambda1 = 2, lambda2 = 3: -0.4 + 0.12.
    penalty = lagrangian_penalty(torch.tensor(0.3), 0.5, torch.tensor(2.0), torch.tensor(3.0))
    assert penalty.item() == pytest.approx(-0.28)
    assert init_log_alpha(0.5) == 0.0 and init_log_alpha(0.2) == pytest.approx(math.log(4))


def _calibration() -> Calibration:
    ids = torch.randint(4, 128, (8, 16), generator=torch.Generator().manual_seed(0))
    return Calibration(ids, ("en",) * 4 + ("fr",) * 4, "toy")


def test_short_training_moves_expected_sparsity_to_the_target():
    model = tiny_model("llama")
    weights = {name: p.clone() for name, p in model.named_parameters()}
    importance, trace = train_l0(model, _calibration(), {"heads", "ffn"}, 0.5, gqa="query", settings=L0Settings(steps=100))
    start_gap = abs(trace.expected_sparsity[0] - 0.5)
    end_gap = abs(trace.expected_sparsity[-1] - 0.5)
    assert start_gap > 0.3  # neutral gates start at 1 - 0.832 of the parameters
    assert end_gap < 0.1
    assert len(importance.heads) == 2 and importance.heads[0].shape == (4,) and importance.neurons[1].shape == (64,)
    assert all(((imp >= 0) & (imp <= 1)).all() for imp in importance.heads + importance.neurons)
    assert all(torch.equal(p, weights[name]) for name, p in model.named_parameters())  # model weights untouched
    assert not any(p.requires_grad and p.grad is not None for p in model.parameters())


def test_l0_refuses_blocks():
    with pytest.raises(BabelpruneError, match="not blocks"):
        train_l0(tiny_model("llama"), _calibration(), {"blocks"}, 0.3)
