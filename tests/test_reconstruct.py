"""Row-wise refit of kept weights: hand-computed cases and a check against least squares."""

import pytest
import torch

from babelprune.errors import BabelpruneError
from babelprune.prune.reconstruct import RefitSystem, damped_hessian, reconstruct, refit_pcg, relative_output_error

# Two inputs with H = X X^T = [[2, 1], [1, 2]]; row 0 keeps input 0, row 1 keeps input 1.
HESSIAN = torch.tensor([[2.0, 1.0], [1.0, 2.0]])
WEIGHT = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
PRUNED = torch.tensor([[False, True], [True, False]])


@pytest.mark.parametrize("solver", ["exact", "pcg"])
def test_two_rows_without_damping_fold_the_pruned_weight_into_the_kept_one(solver):
    # One kept input: w' = (H w)_j / H_jj. Row 0: (2*1 + 1*2) / 2 = 2. Row 1: (1*3 + 2*4) / 2 = 5.5.
    refit, _ = reconstruct(WEIGHT, PRUNED, HESSIAN, damp=1e-9, solver=solver)
    assert torch.allclose(refit, torch.tensor([[2.0, 0.0], [0.0, 5.5]]), atol=1e-6)


@pytest.mark.parametrize("solver", ["exact", "pcg"])
def test_two_rows_with_damping_stay_closer_to_the_dense_weight(solver):
    # damp 0.5 * mean(diag H) = 1 is added to H. Row 0: (4 + 1 * 1) / (2 + 1) = 5/3. Row 1: (11 + 1 * 4) / 3 = 5.
    refit, _ = reconstruct(WEIGHT, PRUNED, HESSIAN, damp=0.5, solver=solver)
    assert torch.allclose(refit, torch.tensor([[5 / 3, 0.0], [0.0, 5.0]]), atol=1e-6)


def test_shrink_moves_the_refit_back_towards_the_masked_weight():
    # Halfway between the masked weight [[1, 0], [0, 4]] and the refit [[2, 0], [0, 5.5]].
    half, _ = reconstruct(WEIGHT, PRUNED, HESSIAN, damp=1e-9, shrink=0.5, solver="exact")
    assert torch.allclose(half, torch.tensor([[1.5, 0.0], [0.0, 4.75]]), atol=1e-6)
    none, _ = reconstruct(WEIGHT, PRUNED, HESSIAN, damp=1e-9, shrink=1.0, solver="exact")
    assert torch.equal(none, torch.tensor([[1.0, 0.0], [0.0, 4.0]]))


def _random_problem(seed: int, out: int = 5, width: int = 7, tokens: int = 60):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(width, tokens, generator=generator, dtype=torch.float64)  # (in, T)
    weight = torch.randn(out, width, generator=generator, dtype=torch.float64)
    pruned = torch.rand(out, width, generator=generator) < 0.5
    pruned[:, 0] = False  # every row keeps at least one input
    return x, weight, pruned


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_refit_matches_least_squares_on_each_row(seed):
    x, weight, pruned = _random_problem(seed)
    refit, _ = reconstruct(weight, pruned, x @ x.T, damp=1e-10, solver="exact")
    for row in range(weight.shape[0]):
        support = (~pruned[row]).nonzero().squeeze(1)
        target = (weight[row] @ x).unsqueeze(1)  # (T, 1): the dense row's outputs
        solution = torch.linalg.lstsq(x[support].T, target).solution.squeeze(1)  # (|S|,)
        assert torch.allclose(refit[row, support], solution, atol=1e-6)
        assert torch.all(refit[row, pruned[row]] == 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pcg_converges_to_the_exact_refit(seed):
    x, weight, pruned = _random_problem(seed)
    exact, _ = reconstruct(weight, pruned, x @ x.T, damp=0.01, solver="exact")
    pcg, report = reconstruct(weight, pruned, x @ x.T, damp=0.01, solver="pcg", iterations=50)
    assert torch.allclose(pcg, exact, atol=1e-3)
    assert report.error_after < report.error_before


def test_pcg_from_zero_iterations_of_work_is_the_masked_weight_and_improves_with_more():
    x, weight, pruned = _random_problem(3, out=8, width=16, tokens=40)
    hessian = x @ x.T
    errors = [reconstruct(weight, pruned, hessian, solver="pcg", iterations=k)[1].error_after for k in (1, 3, 10)]
    masked_error = relative_output_error(weight, weight.masked_fill(pruned, 0), hessian)
    assert masked_error > errors[0] > errors[1] > errors[2]


def test_the_damped_hessian_adds_a_share_of_the_mean_diagonal():
    assert torch.allclose(damped_hessian(HESSIAN, 0.25), torch.tensor([[2.5, 1.0], [1.0, 2.5]], dtype=torch.float64))


@pytest.mark.parametrize(
    "kwargs, message",
    [({"damp": 0.0}, "damping"), ({"shrink": 1.5}, "shrink"), ({"solver": "lbfgs"}, "solver"), ({"iterations": 0}, "iteration")],
)
def test_bad_settings_are_refused_in_one_sentence(kwargs, message):
    with pytest.raises(BabelpruneError, match=message):
        reconstruct(WEIGHT, PRUNED, HESSIAN, **kwargs)


def test_a_hessian_of_another_width_is_refused():
    with pytest.raises(BabelpruneError, match="own inputs"):
        reconstruct(WEIGHT, PRUNED, torch.eye(3))


def test_the_relative_output_error_by_hand():
    # D = W - W' = [0, 2]: D H D^T = 2 * 3 * 2 = 12; W H W^T = 1*2*1 + 2*(1*1*2) + 2*3*2 = 18
    hessian = torch.tensor([[2.0, 1.0], [1.0, 3.0]])
    assert relative_output_error(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 0.0]]), hessian) == pytest.approx(12 / 18)
    assert relative_output_error(torch.zeros(1, 2), torch.zeros(1, 2), hessian) == 0.0


@pytest.mark.parametrize("solver, shrink", [("pcg", 0.0), ("pcg", 0.3), ("exact", 0.0), ("exact", 0.7)])
def test_the_reported_errors_are_those_of_the_masked_and_the_returned_weight(solver, shrink):
    # The report reads the errors off the solver's running gradient; they must equal tr(D H D^T) / tr(W H W^T) computed directly.
    x, weight, pruned = _random_problem(4, out=6, width=9, tokens=50)
    hessian = x @ x.T
    result, report = reconstruct(weight.float(), pruned, hessian, damp=0.05, shrink=shrink, solver=solver, iterations=4)
    masked = weight.masked_fill(pruned, 0)
    assert report.error_before == pytest.approx(relative_output_error(weight, masked, hessian), rel=1e-4)
    assert report.error_after == pytest.approx(relative_output_error(weight, result, hessian), rel=1e-4)


def test_the_pcg_gradient_is_the_damped_hessian_times_what_the_refit_left_out():
    x, weight, pruned = _random_problem(5, out=4, width=8, tokens=30)
    damped = damped_hessian(x @ x.T, 0.1).float()
    refit, used, gradient = refit_pcg(weight.float(), pruned, damped, iterations=3)
    assert used == 3
    assert torch.allclose(gradient, (weight.float() - refit) @ damped, atol=1e-3)


def test_a_refit_system_made_once_gives_what_each_layer_would_make_itself():
    # q, k and v share one input: one RefitSystem serves all three.
    x, weight, pruned = _random_problem(6, out=5, width=7, tokens=40)
    hessian = x @ x.T
    system = RefitSystem.of(hessian, 0.1)
    assert system.lam == pytest.approx(0.1 * float(torch.diagonal(hessian).mean()))
    for solver in ("pcg", "exact"):
        alone, report_alone = reconstruct(weight.float(), pruned, hessian, damp=0.1, solver=solver, iterations=5)
        shared, report_shared = reconstruct(weight.float(), pruned, None, damp=0.1, solver=solver, iterations=5, system=system)
        assert torch.allclose(alone, shared, atol=1e-5)
        assert report_alone.error_after == pytest.approx(report_shared.error_after, rel=1e-4)
