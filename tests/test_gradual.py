"""Gradual magnitude pruning: the cubic schedule, masks by hand, and zeros that stay zero under AdamW."""

from __future__ import annotations

import pytest
import torch

from babelprune.errors import BabelpruneError
from babelprune.prune.gradual import (
    GMPConfig,
    GradualPruner,
    RelativeGMPConfig,
    cubic_sparsity,
    global_masks,
    gmp_targets,
    per_layer_masks,
)
from tests.tiny_models import tiny_inputs, tiny_model

# ----------------------------------------------------------------------------- schedule


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 0.0),  # t0: s_i
        (10, 0.8 - 0.8 * 0.9**3),  # 0.2168
        (50, 0.7),  # 0.8 + (0 - 0.8) * 0.5^3
        (55, 0.7),  # between updates: the value of step 50
        (59, 0.7),
        (90, 0.8 - 0.8 * 0.1**3),  # 0.7992
        (100, 0.8),  # end: s_f
        (250, 0.8),  # after the end
    ],
)
def test_cubic_schedule_hand_values(step, expected):
    assert cubic_sparsity(step, 0.0, 0.8, 0, 100, 10) == pytest.approx(expected, abs=1e-12)


def test_schedule_before_start_and_with_initial_sparsity():
    # s_i = 0.2, s_f = 0.6, t0 = 20, end = 60, dt = 20: at t=40, progress 0.5 -> 0.6 - 0.4 * 0.125 = 0.55.
    assert cubic_sparsity(5, 0.2, 0.6, 20, 60, 20) == 0.2
    assert cubic_sparsity(20, 0.2, 0.6, 20, 60, 20) == pytest.approx(0.2)
    assert cubic_sparsity(40, 0.2, 0.6, 20, 60, 20) == pytest.approx(0.55)
    assert cubic_sparsity(59, 0.2, 0.6, 20, 60, 20) == pytest.approx(0.55)
    assert cubic_sparsity(60, 0.2, 0.6, 20, 60, 20) == 0.6


def test_end_step_is_an_update_even_off_the_interval_grid():
    # t0=0, end=25, dt=10: updates at 0, 10, 20 and 25.
    assert cubic_sparsity(24, 0.0, 0.5, 0, 25, 10) == pytest.approx(0.5 - 0.5 * (1 - 20 / 25) ** 3)
    assert cubic_sparsity(25, 0.0, 0.5, 0, 25, 10) == 0.5


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ((0, 0.0, 0.5, 50, 40, 10), "before it starts"),
        ((0, 0.0, 0.5, 0, 40, 0), "interval"),
        ((0, 0.0, 1.0, 0, 40, 10), "outside [0, 1)"),
        ((0, -0.1, 0.5, 0, 40, 10), "outside [0, 1)"),
    ],
)
def test_schedule_errors(args, words):
    with pytest.raises(BabelpruneError, match=words.replace("[", r"\[").replace(")", r"\)")):
        cubic_sparsity(*args)


def test_config_validates_like_the_schedule():
    with pytest.raises(BabelpruneError, match="before it starts"):
        GMPConfig(final_sparsity=0.5, start_step=10, end_step=5)
    with pytest.raises(BabelpruneError, match="outside"):
        GMPConfig(final_sparsity=1.0, end_step=5)


def test_for_steps_hand_schedule():
    # 44 steps: start round(4.4) = 4, end round(30.8) = 31, interval ceil(27 / 10) = 3.
    config = GMPConfig.for_steps(0.7, 44)
    assert (config.start_step, config.end_step, config.interval) == (4, 31, 3)
    assert config.sparsity_at(31) == 0.7


@pytest.mark.parametrize(
    ("shares", "total", "expected"),
    [
        ({}, 16, (2, 11, 1)),  # the default run: round(1.6) = 2, round(11.2) = 11, ceil(9 / 10) = 1
        ({}, 60, (6, 42, 4)),  # --max-steps 60: ceil(36 / 10) = 4
        ({"start": 0.25, "end": 0.5, "interval": 5}, 40, (10, 20, 5)),
        ({"start": 0.0, "end": 1.0}, 3, (0, 3, 1)),
        ({}, 0, (0, 0, 1)),  # no training (retrieval): prune at once
    ],
)
def test_relative_schedule_by_hand(shares, total, expected):
    schedule = RelativeGMPConfig(final_sparsity=0.7, scope="global", **shares).for_steps(total)
    assert (schedule.start_step, schedule.end_step, schedule.interval) == expected
    assert (schedule.final_sparsity, schedule.scope) == (0.7, "global")
    assert schedule.sparsity_at(expected[1]) == 0.7


@pytest.mark.parametrize(
    ("shares", "message"),
    [
        ({"start": 0.8, "end": 0.5}, "The pruning schedule starts at 0.8 of the run but ends at 0.5; "
         "give a start share (--gmp-start) below the end share (--gmp-end)."),
        ({"start": 0.5, "end": 0.5}, "The pruning schedule starts at 0.5 of the run but ends at 0.5; "
         "give a start share (--gmp-start) below the end share (--gmp-end)."),
        ({"start": -0.1}, "The pruning schedule starts at -0.1 of the run; give a start share in [0, 1) (--gmp-start)."),
        ({"end": 1.5}, "The pruning schedule ends at 1.5 of the run; give an end share in (0, 1] (--gmp-end)."),
        ({"interval": 0}, "The pruning interval is 0 steps; give an interval of at least 1 step (--gmp-interval)."),
    ],
)
def test_relative_schedule_errors_name_the_fix(shares, message):
    with pytest.raises(BabelpruneError) as error:
        RelativeGMPConfig(final_sparsity=0.5, **shares)
    assert str(error.value) == message


# ----------------------------------------------------------------------------- masks by hand

A = torch.tensor([[1.0, -5.0], [3.0, 0.5]])
B = torch.tensor([[10.0, 20.0], [30.0, 40.0]])


def test_per_layer_masks_by_hand():
    masks = per_layer_masks({"a": A, "b": B}, 0.5)
    # a: the two smallest |w| are 0.5 and 1; b: 10 and 20.
    assert masks["a"].tolist() == [[True, False], [False, True]]
    assert masks["b"].tolist() == [[True, True], [False, False]]


def test_global_masks_differ_from_per_layer_by_hand():
    masks = global_masks({"a": A, "b": B}, 0.5)
    # One threshold over all 8 weights: the 4 smallest are all of a.
    assert masks["a"].tolist() == [[True, True], [True, True]]
    assert masks["b"].tolist() == [[False, False], [False, False]]


def test_pruner_masks_a_tiny_linear_by_hand():
    model = tiny_model("bert")
    targets = gmp_targets(model)
    name = "0.q"
    with torch.no_grad():
        targets[name].copy_(torch.arange(1.0, 1 + targets[name].numel()).reshape(targets[name].shape))
    pruner = GradualPruner(model, GMPConfig(final_sparsity=0.25, end_step=0, interval=1))
    pruner.step(0)
    weight = targets[name].detach()
    # 32 x 32 = 1024 weights valued 1..1024: the lowest quarter (1..256) is zero, the rest untouched.
    assert torch.equal(weight.reshape(-1)[:256], torch.zeros(256))
    assert torch.equal(weight.reshape(-1)[256:], torch.arange(257.0, 1025.0))


# ----------------------------------------------------------------------------- the pruner in training


def _train_steps(model, pruner: GradualPruner, first: int, last: int, reapply: bool = True) -> None:
    optimizer = getattr(model, "_test_optimizer", None)
    if optimizer is None:
        optimizer = model._test_optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    inputs = tiny_inputs(model, batch=4, seq_len=8)
    model.train()
    for step in range(first, last + 1):
        loss = model(**inputs).last_hidden_state.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        pruner.mask_gradients()
        optimizer.step()
        if reapply:
            pruner.step(step)


def test_update_steps_follow_the_schedule():
    pruner = GradualPruner(tiny_model("bert"), GMPConfig(final_sparsity=0.5, end_step=4, interval=2))
    # Targets: step 0 -> 0, 2 -> 0.5 - 0.5 * 0.5^3 = 0.4375, 4 -> 0.5.
    assert [pruner.step(t) for t in range(6)] == [False, False, True, False, True, False]
    assert pruner.current_sparsity == 0.5


def test_pruned_weights_stay_exactly_zero_through_adamw_steps():
    torch.manual_seed(0)
    model = tiny_model("bert")
    pruner = GradualPruner(model, GMPConfig(final_sparsity=0.5, start_step=3, end_step=5, interval=1))
    _train_steps(model, pruner, 1, 2)  # dense steps build up Adam momentum
    _train_steps(model, pruner, 3, 12)  # pruning from step 3, then 7 more steps at 0.5
    report = pruner.sparsity_report()
    # Every targeted matrix has an even size, so exactly half of each is zero.
    assert report.overall == 0.5
    assert set(report.per_matrix.values()) == {0.5}
    assert len(report.per_matrix) == 12  # 2 blocks x (q, k, v, o, up, down)
    for name, pruned in pruner.masks.items():
        assert torch.count_nonzero(pruner.targets[name].detach()[pruned]) == 0


def test_without_reapplying_masks_adam_momentum_revives_pruned_weights():
    # The control for the test above: masking gradients alone is not enough.
    torch.manual_seed(0)
    model = tiny_model("bert")
    pruner = GradualPruner(model, GMPConfig(final_sparsity=0.5, start_step=3, end_step=3, interval=1))
    _train_steps(model, pruner, 1, 3)  # prunes at step 3
    _train_steps(model, pruner, 4, 6, reapply=False)
    revived = sum(int(torch.count_nonzero(pruner.targets[n].detach()[m])) for n, m in pruner.masks.items())
    assert revived > 0


def test_embeddings_are_targeted_when_asked():
    model = tiny_model("bert")
    pruner = GradualPruner(model, GMPConfig(final_sparsity=0.5, end_step=0, include_embeddings=True))
    pruner.step(0)
    report = pruner.sparsity_report()
    # Word embedding: 128 x 32 = 4096 weights, half of them pruned.
    assert report.per_matrix["embeddings"] == 0.5
    assert report.n_weights == 4096 + 2 * (4 * 32 * 32 + 2 * 64 * 32)


def test_state_dict_round_trip_applies_the_same_masks():
    first = tiny_model("bert", seed=0)
    pruner = GradualPruner(first, GMPConfig(final_sparsity=0.5, end_step=0))
    pruner.step(0)
    second = tiny_model("bert", seed=1)
    restored = GradualPruner(second, GMPConfig(final_sparsity=0.5, end_step=0))
    restored.load_state_dict(pruner.state_dict())
    assert restored.current_sparsity == 0.5
    for name, mask in pruner.masks.items():
        assert torch.equal(restored.targets[name].detach() == 0, mask)


def _pruned_state() -> tuple[dict, GradualPruner]:
    """The state of a pruner at 0.5, and a fresh pruner of the same model layout to load it into."""
    pruner = GradualPruner(tiny_model("bert", seed=0), GMPConfig(final_sparsity=0.5, end_step=0))
    pruner.step(0)
    return pruner.state_dict(), GradualPruner(tiny_model("bert", seed=1), GMPConfig(final_sparsity=0.5, end_step=0))


def test_an_empty_state_before_the_first_update_loads():
    state, restored = _pruned_state()
    restored.load_state_dict({"masks": {}, "current_sparsity": 0.0})
    assert restored.masks == {} and restored.current_sparsity == 0.0


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda s: s["masks"].pop("1.up"), "the saved masks lack weights this model prunes (1.up)"),
        (lambda s: s["masks"].update({"9.q": s["masks"]["0.q"]}), "the saved masks name weights this model lacks (9.q)"),
        (lambda s: s["masks"].update({"0.q": s["masks"]["0.q"][:3]}), "the saved mask of 0.q has shape (3, 32), the weight (32, 32)"),
        (lambda s: s.update({"current_sparsity": 1.5}), "the saved pruning sparsity 1.5 is not a share in [0, 1)"),
        (lambda s: s.pop("masks"), "the saved pruning state holds no masks"),
    ],
    ids=["missing", "unknown", "shape", "sparsity", "no-masks"],
)
def test_mask_state_that_does_not_fit_is_one_sentence(edit, problem):
    state, restored = _pruned_state()
    edit(state)
    with pytest.raises(BabelpruneError) as error:
        restored.load_state_dict(state)
    assert str(error.value) == (
        f"The pruning masks cannot be restored: {problem}; restore masks saved with the same model and pruning options."
    )
    assert restored.masks == {}  # nothing half-restored
