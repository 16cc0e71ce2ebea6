"""`run_sweep()`: the same fine-tuning at several final sparsities and seeds, one command.

Sparsity 0 is the dense baseline (no pruning). Every other sparsity uses the
base configuration's GMP schedule with its final sparsity replaced, or, when
the base has none, the default `RelativeGMPConfig` (pruning from 10% to 70%
of each run's steps in about ten updates).

Each run writes into its own folder ``<out_dir>/sparsity<s>-seed<n>/``. A run
whose ``result.json`` exists and was made with the same settings (model,
task and its options, configuration: `babelprune.finetune.settings`) is
loaded instead of trained again, and a run cut short resumes from its
checkpoints, so an interrupted sweep picks up where it stopped when started
again with the same arguments. A run made with other settings is trained
again, with a notice naming what changed. Runs go seed by seed (all
sparsities of seed 0 first), so a partial sweep already compares every
sparsity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from babelprune.data.tasks import Task, get_task
from babelprune.errors import BabelpruneError
from babelprune.finetune.config import FinetuneConfig
from babelprune.finetune.trainer import Notice, current_settings, finetune, finished_result, plan_runs
from babelprune.names import child_path
from babelprune.prune.gradual import RelativeGMPConfig
from babelprune.prune.kernels import check_sparsity
from babelprune.records.finetune import FinetuneResult

DEFAULT_SPARSITIES: tuple[float, ...] = (0.0, 0.5, 0.7, 0.9, 0.98)
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)


def is_sweep_folder(folder: Path) -> bool:
    """Whether `folder` is one `run_sweep` goes on writing into: it holds only run folders, the report, or nothing."""
    from babelprune.finetune.settings import holds_run, is_finetune_folder

    return all(entry.name == "report" or entry.name.startswith(".") or is_finetune_folder(entry) or holds_run(entry)
               for entry in Path(folder).iterdir())


def run_folder_name(sparsity: float, seed: int) -> str:
    """The folder of one sweep run, e.g. "sparsity0.70-seed1"."""
    return f"sparsity{sparsity:.2f}-seed{seed}"


def config_for(base: FinetuneConfig, sparsity: float, seed: int) -> FinetuneConfig:
    """`base` with the seed set, and no pruning (sparsity 0) or its GMP schedule ending at `sparsity`.

    Without a schedule in `base`, the default one: shares of each run's steps.
    """
    if sparsity == 0:
        gmp = None
    elif base.gmp is not None:
        gmp = type(base.gmp)(**{**base.gmp.model_dump(), "final_sparsity": sparsity})  # validated again
    else:
        gmp = RelativeGMPConfig(final_sparsity=sparsity)
    return FinetuneConfig(**{**base.model_dump(), "seed": seed, "gmp": gmp})


def sweep_configs(
    task: Task, base: FinetuneConfig, sparsities: Sequence[float], seeds: Sequence[int]
) -> dict[str, FinetuneConfig]:
    """{run folder name: configuration} of a sweep, seed by seed, checked before anything runs."""
    if not sparsities or not seeds:
        raise BabelpruneError("A sweep needs at least one sparsity and one seed.")
    for sparsity in sparsities:
        check_sparsity(sparsity)
    configs = {
        run_folder_name(sparsity, seed): config_for(base, float(sparsity), seed)
        for seed in seeds
        for sparsity in sparsities
    }
    for config in configs.values():
        plan_runs(task, config)  # every input check, before the first run trains
    return configs


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
    on_notice: Notice | None = None,
) -> list[FinetuneResult]:
    """Fine-tune `model` on `task` at every sparsity and seed; return the results (finished ones are reused).

    `on_result(folder name, result)` is called after each run, finished earlier or now;
    `on_notice(line)` when a run made with other settings is trained again (default: a logged warning).
    """
    task = get_task(task) if isinstance(task, str) else task
    configs = sweep_configs(task, base_config or FinetuneConfig(), sparsities, seeds)
    results = []
    for name, config in configs.items():
        # The names are made above from numbers; the join is still checked, as every name that meets the disk is.
        folder = child_path(out_dir, name, "sweep run folder")
        runs = plan_runs(task, config)
        # A run made with scores only is not finished when its models are asked for.
        done = finished_result(folder, current_settings(model, task, config, runs), runs if config.save_model else ())
        if done is None:
            done = finetune(model, task, config, folder, progress=progress, rerun_changed=True, on_notice=on_notice)
        results.append(done)
        if on_result is not None:
            on_result(name, done)
    return results
