"""`run_sweep()`: the same fine-tuning at several final sparsities and seeds, one command.

Sparsity 0 is the dense baseline (no pruning). Every other sparsity uses the
base configuration's GMP schedule with its final sparsity replaced, or, when
the base has none, `GMPConfig.for_steps` over the run's planned steps
(pruning from 10% to 70% of training in about ten updates).

Each run writes into its own folder ``<out_dir>/sparsity<s>-seed<n>/``. A run
whose ``result.json`` exists is loaded instead of trained again, and a run cut
short resumes from its checkpoints, so an interrupted sweep picks up where it
stopped when started again with the same arguments. Runs go seed by seed
(all sparsities of seed 0 first), so a partial sweep already compares every
sparsity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from babelprune.data.tasks import Task, get_task
from babelprune.errors import BabelpruneError
from babelprune.finetune.config import FinetuneConfig, planned_steps
from babelprune.finetune.trainer import RESULT_FILE, finetune, load_finished, plan_runs
from babelprune.prune.gradual import GMPConfig
from babelprune.prune.kernels import check_sparsity
from babelprune.report.finetune_records import FinetuneResult

DEFAULT_SPARSITIES: tuple[float, ...] = (0.0, 0.5, 0.7, 0.9, 0.98)
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)


def run_folder_name(sparsity: float, seed: int) -> str:
    """The folder of one sweep run, e.g. "sparsity0.70-seed1"."""
    return f"sparsity{sparsity:.2f}-seed{seed}"


def config_for(task: Task, base: FinetuneConfig, sparsity: float, seed: int) -> FinetuneConfig:
    """`base` with the seed set, and no pruning (sparsity 0) or a GMP schedule ending at `sparsity`."""
    seeded = base.model_copy(update={"seed": seed})
    if sparsity == 0:
        return FinetuneConfig(**{**seeded.model_dump(), "gmp": None})
    if base.gmp is not None:
        gmp = GMPConfig(**{**base.gmp.model_dump(), "final_sparsity": sparsity})
    else:
        runs = plan_runs(task, seeded.model_copy(update={"gmp": None}))
        shortest = min(planned_steps(len(run.train), seeded) for run in runs)
        gmp = GMPConfig.for_steps(sparsity, shortest)
    return FinetuneConfig(**{**seeded.model_dump(), "gmp": gmp.model_dump()})


def sweep_configs(
    task: Task, base: FinetuneConfig, sparsities: Sequence[float], seeds: Sequence[int]
) -> dict[str, FinetuneConfig]:
    """{run folder name: configuration} of a sweep, seed by seed, checked before anything runs."""
    if not sparsities or not seeds:
        raise BabelpruneError("A sweep needs at least one sparsity and one seed.")
    for sparsity in sparsities:
        check_sparsity(sparsity)
    return {
        run_folder_name(sparsity, seed): config_for(task, base, float(sparsity), seed)
        for seed in seeds
        for sparsity in sparsities
    }


def run_sweep(
    model: str,
    task: Task | str,
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    base_config: FinetuneConfig | None = None,
    *,
    out_dir: Path,
    progress: bool = True,
    on_result: Callable[[str, FinetuneResult], None] | None = None,
) -> list[FinetuneResult]:
    """Fine-tune `model` on `task` at every sparsity and seed; return the results (finished ones are reused).

    `on_result(folder name, result)` is called after each run, finished earlier or now.
    """
    task = get_task(task) if isinstance(task, str) else task
    configs = sweep_configs(task, base_config or FinetuneConfig(), sparsities, seeds)
    results = []
    for name, config in configs.items():
        folder = Path(out_dir) / name
        done = load_finished(folder / RESULT_FILE, config)
        results.append(done if done is not None else finetune(model, task, config, folder, progress=progress))
        if on_result is not None:
            on_result(name, results[-1])
    return results
