"""Which heads and FFN neurons a fine-tuned task head needs: the task loss's gate gradients, or L0 gates trained with it.

* `task_gradient_importance`: every head's output and FFN neuron's
  activation is multiplied by a gate fixed at 1, one gate per example; a
  unit's importance is sum over examples of |dL_n/dxi_n| with L_n the task's
  cross-entropy of example n on the *fine-tuned* head (dropout off), each
  block's scores divided by their L2 norm (Michel et al. 2019, Li et al.
  2022). The weights are not changed.
* `train_joint_l0`: hard-concrete gates (babelprune.prune.structured.l0) on
  every head and neuron, trained *together with the weights*: each step
  samples one gate per unit for the batch, and AdamW moves the weights on
  the task loss while Adam moves the gates' log_alpha on the task loss plus
  the Lagrangian penalty toward the target sparsity, whose multipliers rise
  by gradient ascent (CoFi, Xia et al. 2022). The goal moves from the
  starting expected sparsity to the target over the first `l0_warmup` of
  the steps.
* `allocation_selection`: keeps what the gates learned. Units whose
  deterministic gate is 0 are removed first; if they remove more than the
  target the ones with the highest P(open) are kept back, if less the open
  units with the lowest P(open) are removed too, so the result lands on the
  target (within one unit). Heads and neurons compete in one ranking, so the
  split between attention and FFN is the gates' own.
* `fold_gates`: the kept units' deterministic gate values (in (0, 1]) are
  multiplied into the output projection's and the down projection's input
  columns, so the pruned model computes what the gated one computed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from babelprune.data.tasks import Example
from babelprune.finetune.config import FinetuneConfig
from babelprune.finetune.heads import TaskHead, encode
from babelprune.finetune.trainer import batch_indices, make_optimizer
from babelprune.models.adapters import adapter_for
from babelprune.prune.structured.importance import grads_only_on, head_gates, neuron_gates, unit_norm_per_block
from babelprune.prune.structured.l0 import (
    deterministic_gates,
    expected_sparsity,
    init_log_alpha,
    lagrangian_penalty,
    model_unit_costs,
    prob_nonzero,
    sample_gates,
)
from babelprune.prune.structured.selection import (
    Importance,
    Selection,
    _Candidates,
    _check_tolerance,
    _greedy,
    _head_candidates,
    _layers_keep,
    _neuron_candidates,
)
from babelprune.prune.structured.units import block_params, layer_layouts, total_block_params

GQA = "query"  # e5 / BERT blocks have one key/value head per query head: a unit is a head
_EPS = 1e-6


def _gates_on(head: TaskHead, gates: dict[str, list[torch.Tensor]]):
    """Head and neuron gate hooks reading gates[kind][block], (G, units); an empty kind leaves its units alone."""
    stack = contextlib.ExitStack()
    stack.enter_context(head_gates(head.encoder, GQA, lambda i: gates["heads"][i] if gates["heads"] else None))
    stack.enter_context(neuron_gates(head.encoder, lambda i: gates["ffn"][i] if gates["ffn"] else None))
    return stack


def _widths(head: TaskHead) -> dict[str, list[int]]:
    layouts = layer_layouts(head.encoder, adapter_for(head.encoder))
    return {"heads": [lay.n_head_units(GQA) for lay in layouts], "ffn": [lay.ffn for lay in layouts]}


def task_gradient_importance(head: TaskHead, tokenizer, examples: Sequence[Example], units: set[str],
                             config: FinetuneConfig) -> Importance:
    """Gate-gradient importance of heads and neurons under the task loss of `head` (dropout off, weights untouched)."""
    widths = _widths(head)
    scored = sorted(set(units) & {"heads", "ffn"})
    sums = {kind: [torch.zeros(n, dtype=torch.float64) for n in widths[kind]] for kind in scored}
    gates: dict[str, list[torch.Tensor]] = {"heads": [], "ffn": []}
    head.eval()
    with grads_only_on(head, []), torch.enable_grad(), _gates_on(head, gates):
        for start in range(0, len(examples), config.batch_size):
            batch = encode(tokenizer, examples[start : start + config.batch_size], head.kind, config.max_length, config.text_prefix, device=head.device)
            for kind in scored:  # (N, units): gate n scales example n only
                gates[kind] = [torch.ones(len(batch), n, requires_grad=True) for n in widths[kind]]
            # Per-example losses summed: the gradient of example n's gates is dL_n/dxi_n alone.
            F.cross_entropy(head(batch), batch.labels, reduction="sum").backward()
            for kind in scored:
                for i, gate in enumerate(gates[kind]):
                    sums[kind][i] += gate.grad.abs().sum(dim=0).double()
    return Importance(
        heads=unit_norm_per_block(sums["heads"]) if "heads" in sums else None,
        neurons=unit_norm_per_block(sums["ffn"]) if "ffn" in sums else None,
        gqa=GQA,
    )


@dataclass
class JointL0:
    """What joint training learned: per block, each unit's log_alpha, and the trace of every step."""

    log_alpha: dict[str, list[torch.Tensor]]  # "heads" / "ffn" -> per block (units,)
    expected_sparsity: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lambdas: list[tuple[float, float]] = field(default_factory=list)

    def probs(self, kind: str) -> list[torch.Tensor] | None:
        return [prob_nonzero(a).double() for a in self.log_alpha[kind]] if self.log_alpha[kind] else None

    def gates(self, kind: str) -> list[torch.Tensor] | None:
        return [deterministic_gates(a).double() for a in self.log_alpha[kind]] if self.log_alpha[kind] else None


def train_joint_l0(head: TaskHead, tokenizer, examples: Sequence[Example], units: set[str], target: float,
                   config: FinetuneConfig, steps: int, lr: float, lambda_lr: float, warmup: float) -> JointL0:
    """Train L0 gates and `head`'s weights together on the task loss + Lagrangian penalty (weights change in place)."""
    model = head.encoder
    costs_h, costs_n = model_unit_costs(model, units, GQA)
    costs = costs_h + costs_n
    total = float(total_block_params(model, adapter_for(model)))
    start = init_log_alpha(0.5)
    alphas = {"heads": [nn.Parameter(torch.full_like(c, start)) for c in costs_h],
              "ffn": [nn.Parameter(torch.full_like(c, start)) for c in costs_n]}
    every = alphas["heads"] + alphas["ffn"]
    lambdas = nn.Parameter(torch.zeros(2))
    weights, schedule = make_optimizer(head, config, steps)  # AdamW on the head's trainable weights, warm-up + decay
    gate_optimizer = torch.optim.Adam(every, lr=lr, betas=(0.0, 0.999))  # no momentum: a short run overshoots with it
    lambda_optimizer = torch.optim.SGD([lambdas], lr=lambda_lr)
    with torch.no_grad():
        initial = float(expected_sparsity([prob_nonzero(a) for a in every], costs, total))
    warmup_steps = max(1, round(warmup * steps))
    generator = torch.Generator().manual_seed(config.seed)
    trained = [p for p in head.parameters() if p.requires_grad]
    sampled: dict[str, list[torch.Tensor]] = {"heads": [], "ffn": []}
    result = JointL0({kind: [] for kind in alphas})
    torch.manual_seed(config.seed)  # dropout
    head.train()
    with _gates_on(head, sampled):
        for step in range(1, steps + 1):
            for kind, kind_alphas in alphas.items():  # one gate per unit for the whole batch: (1, units)
                sampled[kind] = [sample_gates(a, torch.rand(a.shape, generator=generator).clamp(_EPS, 1 - _EPS)).unsqueeze(0)
                                 for a in kind_alphas]
            chosen = batch_indices(step, len(examples), config.batch_size, config.seed)
            batch = encode(tokenizer, [examples[i] for i in chosen], head.kind, config.max_length, config.text_prefix, device=head.device)
            task_loss = head.loss(head(batch), batch.labels)
            expected = expected_sparsity([prob_nonzero(a) for a in every], costs, total)
            goal = initial + (target - initial) * min(1.0, step / warmup_steps)
            objective = task_loss + lagrangian_penalty(expected, goal, lambdas[0], lambdas[1])
            for optimizer in (weights, gate_optimizer, lambda_optimizer):
                optimizer.zero_grad(set_to_none=True)
            objective.backward()
            lambdas.grad.neg_()  # ascent: the multipliers maximise the objective
            if config.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(trained, config.max_grad_norm)
            for optimizer in (weights, gate_optimizer, lambda_optimizer):
                optimizer.step()
            schedule.step()
            result.expected_sparsity.append(float(expected.detach()))
            result.loss.append(float(task_loss.detach()))
            result.lambdas.append(tuple(lambdas.detach().tolist()))
    head.eval()
    result.log_alpha = {kind: [a.detach().clone() for a in kind_alphas] for kind, kind_alphas in alphas.items()}
    return result


def allocation_selection(model: nn.Module, gates: JointL0, sparsity: float, tolerance: float) -> tuple[Selection, dict]:
    """The units the gates closed, cut or filled to `sparsity` by P(open); and counts of what was adjusted."""
    adapter = adapter_for(model)
    blocks, layouts = list(adapter.get_blocks(model)), layer_layouts(model, adapter)
    ids = list(range(len(blocks)))
    parts: list[tuple[str, _Candidates, list[torch.Tensor]]] = []
    for kind in ("heads", "ffn"):
        probs, values = gates.probs(kind), gates.gates(kind)
        if probs is None:
            continue
        # closed units (gate 0) rank below every open one; P(open) orders each group
        scores = [p + 2.0 * (z > 0).double() for p, z in zip(probs, values)]
        found = (_head_candidates(adapter, blocks, layouts, scores, GQA, ids) if kind == "heads"
                 else _neuron_candidates(adapter, blocks, layouts, scores, ids))
        parts.append((kind, found, values))
    merged = _Candidates([], [], [], [], {})
    tags = []
    for kind, found, _ in parts:  # one ranking over heads and neurons; the per-block caps stay per type
        merged.scores += found.scores
        merged.costs += found.costs
        merged.layers += [(kind, layer) for layer in found.layers]
        merged.members += found.members
        merged.caps.update({(kind, layer): cap for layer, cap in found.caps.items()})
        tags += [kind] * len(found.scores)
    total = float(sum(block_params(adapter, b) for b in blocks))
    taken, removed, next_cost = _greedy(merged, sparsity * total)
    _check_tolerance(sparsity, removed, total, next_cost, tolerance, "units")
    gone: dict[str, dict[int, set]] = {"heads": {}, "ffn": {}}
    for k in taken:
        gone[tags[k]].setdefault(merged.layers[k][1], set()).update(merged.members[k])
    closed = sum(int((z == 0).sum()) for _, _, values in parts for z in values)
    closed_removed = sum(1 for k in taken if merged.scores[k] < 2.0)
    counts = {"heads": sum(len(s) for s in gone["heads"].values()), "neurons": sum(len(s) for s in gone["ffn"].values())}
    selection = Selection(_layers_keep(layouts, GQA, gone["heads"], gone["ffn"]), ids, round(removed), round(total), GQA, counts)
    costs_h, costs_n = model_unit_costs(model, {kind for kind, _, _ in parts}, GQA)
    costs = {"heads": costs_h, "ffn": costs_n}
    gate_share = sum(float(c[z == 0].sum()) for kind, _, values in parts for z, c in zip(values, costs[kind]))
    summary = {"closed_units": closed, "removed_units": len(taken), "closed_kept": closed - closed_removed,
               "open_removed": len(taken) - closed_removed, "gate_sparsity": round(gate_share / total, 6),
               "heads_removed": counts["heads"], "neurons_removed": counts["neurons"]}
    return selection, summary


@torch.no_grad()
def fold_gates(model: nn.Module, gates: JointL0) -> None:
    """Scale each open unit's input columns of the output / down projection by its deterministic gate (closed: left as is)."""
    adapter = adapter_for(model)
    layouts = layer_layouts(model, adapter)
    for i, block in enumerate(adapter.get_blocks(model)):
        for kind in ("heads", "ffn"):
            values = gates.gates(kind)
            if values is None:
                continue
            z = values[i].float()
            factor = torch.where(z > 0, z, torch.ones_like(z))
            if kind == "heads":
                linear = adapter.attention_linears(block)["o"]
                factor = factor.repeat_interleave(layouts[i].head_dim)  # (H*d,): head h owns columns h*d .. h*d + d - 1
            else:
                linear = adapter.ffn_linears(block)["down"]
            linear.weight.mul_(factor.unsqueeze(0))  # nn.Linear weight (out, in): scale input columns
