"""M-Wanda's activation probability on a tiny model: the down-projection counts open gates (x > 0)."""

from __future__ import annotations

import torch

from babelprune.models.adapters import adapter_for
from babelprune.prune.config import PruneConfig
from babelprune.prune.engine import prune
from babelprune.prune.methods import METHODS, Method
from babelprune.prune.stats import DEFAULT_TAU
from tests.test_prune_engine import calibration, loaded


def _share_per_language(x: torch.Tensor, active: torch.Tensor, rows: dict[str, torch.Tensor]) -> torch.Tensor:
    """(L, in): share of each language's tokens on which `active` holds; x is (N, T, in)."""
    return torch.stack([active[index].reshape(-1, x.shape[-1]).double().mean(dim=0) for index in rows.values()])


def test_down_projection_counts_x_above_zero_and_other_linears_abs_above_tau(monkeypatch):
    model = loaded("llama")
    calib = calibration(model.model)
    block = adapter_for(model.model).get_blocks(model.model)[0]
    linears = adapter_for(model.model).block_linears(block)
    inputs: dict[str, torch.Tensor] = {}
    for name in ("q", "down"):
        linears[name].register_forward_pre_hook(lambda module, args, name=name: inputs.setdefault(name, args[0].clone()))
    seen = {}

    def record_without_pruning(task):  # keeps the model dense, so later inputs are the dense ones
        seen.setdefault(task.weight.data_ptr(), task.stats)
        return None, torch.zeros_like(task.weight, dtype=torch.bool)

    monkeypatch.setitem(METHODS, "record", Method("record", record_without_pruning, needs_calibration=True, needs_activity=True))
    prune(model, PruneConfig(method="record"), calib, progress=False)

    rows = calib.rows()
    down_x, q_x = inputs["down"], inputs["q"]
    down_stats = seen[linears["down"].weight.data_ptr()]
    q_stats = seen[linears["q"].weight.data_ptr()]
    assert list(rows) == down_stats.languages == q_stats.languages
    open_gates = _share_per_language(down_x, down_x > 0, rows)
    above_tau = _share_per_language(down_x, down_x.abs() > DEFAULT_TAU, rows)
    assert not torch.allclose(open_gates, above_tau)  # the two rules disagree on these inputs
    assert torch.allclose(down_stats.activation_probability(), open_gates)
    assert torch.allclose(q_stats.activation_probability(), _share_per_language(q_x, q_x.abs() > DEFAULT_TAU, rows))
