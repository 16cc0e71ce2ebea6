"""L0 importance: hard-concrete gates trained against a Lagrangian sparsity target.

Every head unit and every FFN neuron gets a gate z in [0, 1] with a learnt
log_alpha (Louizos et al. 2018). A gate is sampled as

    u ~ U(0, 1),  s = sigmoid((log u - log(1 - u) + log_alpha) / beta),
    z = clamp(s * (r - l) + l, 0, 1)

with beta = 2/3 and the stretch (l, r) = (-0.1, 1.1), and is open (z != 0)
with probability P(z != 0) = sigmoid(log_alpha - beta * log(-l / r)): the
expected L0 of the gate. The expected parameter sparsity is
sum_u cost_u * (1 - P_u(z != 0)) / block parameters. Training minimises, over
the log_alphas (model weights stay frozen),

    loss + lambda1 * (expected - target) + lambda2 * (expected - target)^2

while lambda1 and lambda2 are moved by gradient ascent (Wang et al. 2020,
CoFi), so the penalty grows until the expected sparsity meets the target.
The importance of a unit afterwards is its P(z != 0); `select_units` then
keeps the units with the largest.

For a short budget (default 100 steps) the run is damped: the goal moves
linearly from the starting expected sparsity to the target over the first
half (CoFi's warm-up), the log_alphas use Adam without momentum and a step
size that decays after the warm-up, and the lambdas plain SGD. On tiny
models this lands within a few points of the target, where Adam with
momentum oscillated far around it.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from babelprune.errors import BabelpruneError
from babelprune.models.adapters import adapter_for
from babelprune.models.layouts import (
    GqaMode,
    head_unit_map,
    layer_layouts,
    neuron_unit_map,
    total_block_params,
    unit_costs,
)
from babelprune.prune.calibration import Calibration
from babelprune.prune.structured.importance import (
    LossFn,
    Units,
    _model_inputs,
    check_units,
    default_loss,
    grads_only_on,
    head_gates,
    neuron_gates,
)
from babelprune.prune.structured.selection import Importance

BETA = 2.0 / 3.0
LIMIT_LOW = -0.1
LIMIT_HIGH = 1.1
_EPS = 1e-6


# ----- hard-concrete maths (pure) -----------------------------------------------------


def prob_nonzero(log_alpha: torch.Tensor, beta: float = BETA, low: float = LIMIT_LOW, high: float = LIMIT_HIGH) -> torch.Tensor:
    """P(z != 0) of hard-concrete gates: sigmoid(log_alpha - beta * log(-low / high))."""
    return torch.sigmoid(log_alpha - beta * math.log(-low / high))


def sample_gates(log_alpha: torch.Tensor, u: torch.Tensor, beta: float = BETA, low: float = LIMIT_LOW, high: float = LIMIT_HIGH) -> torch.Tensor:
    """Gates z for uniform noise u in (0, 1) of the same shape (differentiable in log_alpha)."""
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / beta)
    return (s * (high - low) + low).clamp(0.0, 1.0)


def deterministic_gates(log_alpha: torch.Tensor, low: float = LIMIT_LOW, high: float = LIMIT_HIGH) -> torch.Tensor:
    """Test-time gates: clamp(sigmoid(log_alpha) * (high - low) + low, 0, 1)."""
    return (torch.sigmoid(log_alpha) * (high - low) + low).clamp(0.0, 1.0)


def expected_sparsity(probs: list[torch.Tensor], costs: list[torch.Tensor], total: float) -> torch.Tensor:
    """sum_u cost_u * (1 - P_u(open)) / total: the expected share of parameters removed."""
    removed = sum(((1 - p) * c.to(p.dtype)).sum() for p, c in zip(probs, costs))
    return removed / total


def lagrangian_penalty(expected: torch.Tensor, target: float, lambda1: torch.Tensor, lambda2: torch.Tensor) -> torch.Tensor:
    """lambda1 * (expected - target) + lambda2 * (expected - target)^2."""
    gap = expected - target
    return lambda1 * gap + lambda2 * gap * gap


def init_log_alpha(droprate: float) -> float:
    """log_alpha making a gate's logistic mean sigmoid(log_alpha) = 1 - droprate."""
    return math.log(1 - droprate) - math.log(droprate)


# ----- training ------------------------------------------------------------------------


@dataclass(frozen=True)
class L0Settings:
    steps: int = 100
    lr: float = 0.03  # Adam, log_alphas
    lambda_lr: float = 1.0  # SGD, gradient ascent on lambda1 and lambda2
    warmup_share: float = 0.5  # the goal moves linearly from the starting expected sparsity to the target over this share
    momentum: float = 0.0  # Adam beta1 of the log_alphas: momentum makes the short run overshoot
    droprate_init: float = 0.5  # Louizos et al. and CoFi start every gate at log_alpha = 0
    batch_size: int = 1
    seed: int = 0


@dataclass
class L0Trace:
    """What training did, step by step."""

    expected_sparsity: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lambdas: list[tuple[float, float]] = field(default_factory=list)


def model_unit_costs(model: nn.Module, units: Units, gqa: GqaMode) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    adapter = adapter_for(model)
    heads, neurons = [], []
    for block, layout in zip(adapter.get_blocks(model), layer_layouts(model, adapter)):
        if "heads" in units:
            kind = layout.head_unit(gqa)
            heads.append(unit_costs(adapter, block, head_unit_map(adapter, layout, kind), layout.n_head_units(gqa)).float())
        if "ffn" in units:
            neurons.append(unit_costs(adapter, block, neuron_unit_map(adapter, layout), layout.ffn).float())
    return heads, neurons


def train_l0(model: nn.Module, calibration: Calibration, units: Units, target: float, gqa: GqaMode = "groups",
             loss_fn: LossFn | None = None, settings: L0Settings = L0Settings(),
             mask_token_id: int | None = None) -> tuple[Importance, L0Trace]:
    """Train gates on `calibration` toward `target` parameter sparsity; importance = P(gate open)."""
    units = check_units(units)
    if "blocks" in units:
        raise BabelpruneError("L0 gates cover heads and FFN neurons, not blocks; use magnitude, gradient or activation for blocks.")
    adapter = adapter_for(model)
    loss_fn = loss_fn or default_loss(model, mask_token_id)
    head_costs, neuron_costs = model_unit_costs(model, units, gqa)
    total = float(total_block_params(model, adapter))
    start = init_log_alpha(settings.droprate_init)
    head_alpha = [nn.Parameter(torch.full_like(c, start)) for c in head_costs]
    neuron_alpha = [nn.Parameter(torch.full_like(c, start)) for c in neuron_costs]
    # The gates' parameters are CPU bookkeeping like the unit costs; the forward hooks move the sampled gates.
    lambdas = nn.Parameter(torch.zeros(2, device="cpu"))
    optimizer = torch.optim.Adam(head_alpha + neuron_alpha, lr=settings.lr, betas=(settings.momentum, 0.999))
    # Plain SGD: the lambdas move in proportion to the gap (Adam would move them at a fixed pace and overshoot).
    lambda_optimizer = torch.optim.SGD([lambdas], lr=settings.lambda_lr)
    warmup_steps = max(1, int(settings.warmup_share * settings.steps))
    # After the warm-up the step size decays linearly to a tenth, so the gates settle instead of jittering.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: 1.0 if k < warmup_steps else 1.0 - 0.9 * (k - warmup_steps) / max(1, settings.steps - warmup_steps)
    )
    with torch.no_grad():
        initial = float(expected_sparsity([prob_nonzero(a) for a in head_alpha + neuron_alpha], head_costs + neuron_costs, total))
    generator = torch.Generator().manual_seed(settings.seed)
    sampled: dict[str, list[torch.Tensor]] = {"heads": [], "ffn": []}
    trace = L0Trace()
    order = torch.randperm(calibration.ids.shape[0], generator=generator, device="cpu")
    with grads_only_on(model, []), torch.enable_grad(), contextlib.ExitStack() as stack:
        if head_alpha:
            stack.enter_context(head_gates(model, gqa, lambda i: sampled["heads"][i].unsqueeze(0)))
        if neuron_alpha:
            stack.enter_context(neuron_gates(model, lambda i: sampled["ffn"][i].unsqueeze(0)))  # (1, ffn): one gate for the batch
        for step in range(settings.steps):
            for name, alphas in (("heads", head_alpha), ("ffn", neuron_alpha)):
                sampled[name] = [sample_gates(a, torch.rand(a.shape, generator=generator, device="cpu").clamp(_EPS, 1 - _EPS)) for a in alphas]
            start_row = (step * settings.batch_size) % len(order)
            ids = calibration.ids[order[start_row : start_row + settings.batch_size]]
            task = loss_fn(model, _model_inputs(ids, adapter, model)).mean()
            expected = expected_sparsity([prob_nonzero(a) for a in head_alpha + neuron_alpha], head_costs + neuron_costs, total)
            goal = initial + (target - initial) * min(1.0, (step + 1) / warmup_steps)
            objective = task + lagrangian_penalty(expected, goal, lambdas[0], lambdas[1])
            optimizer.zero_grad()
            lambda_optimizer.zero_grad()
            objective.backward()
            lambdas.grad.neg_()  # ascent: the lambdas maximise the objective
            optimizer.step()
            lambda_optimizer.step()
            schedule.step()
            trace.expected_sparsity.append(float(expected.detach()))
            trace.loss.append(float(task.detach()))
            trace.lambdas.append(tuple(lambdas.detach().tolist()))
    with torch.no_grad():
        importance = Importance(
            heads=[prob_nonzero(a).double() for a in head_alpha] if head_alpha else None,
            neurons=[prob_nonzero(a).double() for a in neuron_alpha] if neuron_alpha else None,
            gqa=gqa,
        )
    return importance, trace
