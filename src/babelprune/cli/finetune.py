"""Training encoders: `tasks`, `finetune`, `finetune-sweep`, `train-dynamic`, `slice`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from babelprune.choices import DynamicImportance, GmpScope, TrainingMode
from babelprune.cli.common import MAX_INT, DeviceOption, DtypeOption, console, err_console, note
from babelprune.flags import language_option
from babelprune.outputs import check_output_folder

# The options `finetune` and `finetune-sweep` share, declared once (each command keeps its own defaults).
EncoderOption = Annotated[str, typer.Option(help="Encoder: alias, folder or hub id.")]
TaskOption = Annotated[str, typer.Option(help="bible-genre, bible-retrieval, wikiann, xnli (see `babelprune tasks`).")]
TaskOptionsOption = Annotated[Optional[list[str]], typer.Option(help="Task option key=value (see `babelprune tasks`); repeatable.")]
ModeOption = Annotated[TrainingMode, typer.Option(help="zero-shot (train on --source-lang), multilingual (all --langs together) or monolingual (one model per language).")]
SourceLangOption = Annotated[str, typer.Option(help="Training language in zero-shot mode.")]
LangsOption = Annotated[Optional[str], typer.Option(help="Evaluation languages (default: all the task has).")]
GmpScopeOption = Annotated[GmpScope, typer.Option(help="Magnitude ranking within each matrix or over all of them.")]
GmpEmbeddingsOption = Annotated[bool, typer.Option(help="Also prune the word-embedding matrix.")]
GmpStartOption = Annotated[float, typer.Option(help="Pruning starts at this share of each run's steps, in [0, 1).")]
GmpEndOption = Annotated[float, typer.Option(help="Pruning reaches the final sparsity at this share of each run's steps, in (0, 1], after --gmp-start.")]
GmpIntervalOption = Annotated[Optional[int], typer.Option(min=1, max=MAX_INT, help="Steps between mask updates (default: about ten updates from start to end).")]
LrOption = Annotated[float, typer.Option(help="Learning rate.")]
BatchSizeOption = Annotated[int, typer.Option(min=1, max=MAX_INT, help="Training batch size.")]
EpochsOption = Annotated[float, typer.Option(help="Passes over the training set.")]
MaxStepsOption = Annotated[Optional[int], typer.Option(min=1, max=MAX_INT, help="Optimizer steps (overrides --epochs).")]
PerturbationsOption = Annotated[Optional[str], typer.Option(help="words, chars, entities (comma-separated; default by task).")]
MaxTrainOption = Annotated[Optional[int], typer.Option(min=1, max=MAX_INT, help="At most this many training examples per run.")]
MaxEvalOption = Annotated[Optional[int], typer.Option(min=1, max=MAX_INT, help="At most this many test examples per language.")]
CheckpointEveryOption = Annotated[Optional[int], typer.Option(min=1, max=MAX_INT, help="Checkpoint every N steps (an interrupted run resumes from the last one).")]
MaxLengthOption = Annotated[int, typer.Option(min=2, max=MAX_INT, help="Longest input in tokens (at most the model's positions, e.g. 512 for e5-small).")]


def tasks_command() -> None:
    """List the built-in tasks and their options."""
    from babelprune.api import task_catalog

    for name, options in task_catalog().items():
        console.print(Text.assemble((name, "bold"), f"  options: {', '.join(options)}"))


def finetune_command(
    out: Annotated[Path, typer.Option(help="Run folder (resumes from its last checkpoint if interrupted).")],
    model: EncoderOption = "e5-small",
    task: TaskOption = "bible-genre",
    task_option: TaskOptionsOption = None,
    mode: ModeOption = "zero-shot",
    source_lang: SourceLangOption = "en",
    langs: LangsOption = None,
    gmp_final: Annotated[float, typer.Option(help="Final sparsity of gradual magnitude pruning (0: dense).")] = 0.0,
    gmp_scope: GmpScopeOption = "per-layer",
    gmp_embeddings: GmpEmbeddingsOption = False,
    gmp_start: GmpStartOption = 0.1,
    gmp_end: GmpEndOption = 0.7,
    gmp_interval: GmpIntervalOption = None,
    lr: LrOption = 1e-4,
    batch_size: BatchSizeOption = 16,
    epochs: EpochsOption = 1.0,
    max_steps: MaxStepsOption = None,
    seed: Annotated[int, typer.Option(min=0, max=MAX_INT, help="Seed of everything random.")] = 0,
    perturbations: PerturbationsOption = None,
    max_train: MaxTrainOption = 256,
    max_eval: MaxEvalOption = 20,
    checkpoint_every: CheckpointEveryOption = None,
    max_length: MaxLengthOption = 128,
    scores_only: Annotated[bool, typer.Option("--scores-only", help="Keep the scores only: save no fine-tuned model (for large sweeps).")] = False,
    config_file: Annotated[Optional[Path], typer.Option("--config", help="A YAML/JSON file holding the whole fine-tuning config (mode, train_per_language, gmp...); its flags may not be typed too.")] = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "auto",
) -> None:
    """Fine-tune an encoder on a multilingual task while pruning gradually; score every language, clean and perturbed; save each run's model."""
    from babelprune.api import FinetuneConfig, finetune_to_folder
    from babelprune.flags import FINETUNE_FLAGS, config_from_flags, task_options, verb_config

    values = dict(locals())
    check_output_folder(out, "--out", reuse=lambda folder: True)  # a run folder resumes; the verb refuses other folders
    flags = {**FINETUNE_FLAGS, "max_length": "max_length"}  # so that --config refuses a typed --max-length too
    if config_file is None:
        config_from_flags(FinetuneConfig, flags, {**values, "gmp_final": 0.5})  # a bad schedule fails even when dense
    config = verb_config(config_file, FinetuneConfig, flags, values)
    if scores_only:  # not a setting of the scores, so it may stand beside --config
        config = config.model_copy(update={"save_model": False})
    # on_notice: e.g. a language with fewer training examples than train_per_language asks
    result, models = finetune_to_folder(model, task, task_options(task_option), config, out, on_notice=note, device=device, dtype=dtype)
    for score in sorted(result.scores, key=lambda s: (s.language, s.perturbation or "")):
        gap = f"  gap {score.gap:+.3f}" if score.gap is not None else ""
        console.print(f"{score.language:6s} {score.perturbation or 'clean':9s} {score.metric} {score.value:.3f}{gap}")
    console.print(f"Result written to {out}")
    for folder in models:
        console.print(f"Model saved to {folder} (load it with load_model or AutoModel; its task head is beside it)", highlight=False)


def finetune_sweep_command(
    out: Annotated[Path, typer.Option(help="Sweep folder: its experiment file, results store and report; done runs are skipped.")],
    model: EncoderOption = "e5-small",
    task: TaskOption = "bible-genre",
    task_option: TaskOptionsOption = None,
    sparsities: Annotated[str, typer.Option(help="Final GMP sparsities (0 = dense).")] = "0,0.5,0.7,0.9,0.98",
    seeds: Annotated[str, typer.Option(help="Seeds, comma-separated.")] = "0,1,2",
    mode: ModeOption = "zero-shot",
    source_lang: SourceLangOption = "en",
    langs: LangsOption = None,
    gmp_scope: GmpScopeOption = "per-layer",
    gmp_embeddings: GmpEmbeddingsOption = False,
    gmp_start: GmpStartOption = 0.1,
    gmp_end: GmpEndOption = 0.7,
    gmp_interval: GmpIntervalOption = None,
    lr: LrOption = 1e-4,
    batch_size: BatchSizeOption = 16,
    epochs: EpochsOption = 1.0,
    max_steps: MaxStepsOption = None,
    perturbations: PerturbationsOption = None,
    max_train: MaxTrainOption = 256,
    max_eval: MaxEvalOption = 50,
    checkpoint_every: CheckpointEveryOption = 10,
    max_length: MaxLengthOption = 128,
    # A sweep of the results store keeps the scores only; the flag stays so that older commands still run.
    scores_only: Annotated[bool, typer.Option("--scores-only", hidden=True, help="Kept for older commands: a sweep keeps the scores only.")] = False,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "auto",
) -> None:
    """Fine-tune at several sparsities and seeds in one command (a sweep of the results store); then write the HTML report."""
    from babelprune.api import FinetuneConfig
    from babelprune.flags import FINETUNE_FLAGS, config_from_flags, number_list, task_options
    from babelprune.report.html import write_report
    from babelprune.sweep.finetune_sweep import REPORT_FOLDER, is_finetune_sweep_folder, run_finetune_sweep

    values = dict(locals())
    check_output_folder(out, "--out", reuse=is_finetune_sweep_folder)
    levels = number_list(sparsities, float, "--sparsities", "0,0.5,0.7")
    seed_list = number_list(seeds, int, "--seeds", "0,1,2")
    # The schedule in shares of each run's steps; its final sparsity is a placeholder that each run's level
    # replaces (and validating it here refuses a bad schedule even for a dense run).
    flags = {**FINETUNE_FLAGS, "max_length": "max_length"}
    base = config_from_flags(FinetuneConfig, flags, {**values, "gmp_final": 0.5, "seed": seed_list[0]})
    # Every check (schedules, task, languages, model) is made before the sweep writes anything.
    swept = run_finetune_sweep(model, task, out, task_options=task_options(task_option), base=base, sparsities=levels,
                               seeds=seed_list, console=console, on_notice=note, device=device, dtype=dtype)
    summary = swept.summary
    report = write_report(swept.store, out / REPORT_FOLDER, overwrite=True)  # the runs that failed are listed in it
    console.print(f"{summary.planned} runs: {len(summary.done)} done now, {summary.skipped} done before"
                  + (f" ({swept.imported} read from the old run folders)" if swept.imported else "")
                  + f", {len(summary.failed)} failed; results in {swept.store}; report written to {report}", highlight=False)
    if not summary.ok:
        err_console.print(f"{len(summary.failed)} run(s) failed; `babelprune runs {swept.store}` shows their errors, and "
                          "running the command again retries them.", highlight=False)
        raise typer.Exit(1)


def train_dynamic_command(
    out: Annotated[Path, typer.Option(help="Folder for the dynamic model (must not exist).")],
    model: Annotated[str, typer.Option(help="Alias, folder or hub id.")] = "e5-small",
    task: Annotated[Optional[str], typer.Option(help="Encoders: task to fine-tune on (default bible-genre); LMs: none.")] = None,
    levels: Annotated[str, typer.Option(help="Sparsity levels trained (0 is always added).")] = "0.3,0.5,0.7",
    steps: Annotated[int, typer.Option(min=1, max=MAX_INT, help="Training steps.")] = 200,
    importance: Annotated[DynamicImportance, typer.Option(help="How units are ranked before training.")] = "magnitude",
    samples_per_step: Annotated[int, typer.Option(min=0, max=MAX_INT, help="Random levels per step besides the smallest and the full width.")] = 1,
    distill: Annotated[bool, typer.Option(help="Distil every width from the full model.")] = True,
    calib: Annotated[str, typer.Option(help="LMs: corpus of the distillation text.")] = "bible",
    calib_langs: Annotated[Optional[str], typer.Option(help="LMs: languages of the distillation text.")] = None,
    samples: Annotated[int, typer.Option(min=1, max=MAX_INT, help="LMs: windows per language.")] = 8,
    seq_len: Annotated[int, typer.Option(min=2, max=MAX_INT, help="LMs: window length.")] = 256,
    seed: Annotated[int, typer.Option(min=0, max=MAX_INT, help="Seed.")] = 0,
    config_file: Annotated[Optional[Path], typer.Option("--config", help="A YAML/JSON file holding the whole DynamicConfig (levels, steps, importance, units, distill...); its flags may not be typed too.")] = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "auto",
) -> None:
    """Dynamic Sparsification: rank units once, train with weights shared across widths, save a sliceable model."""
    from babelprune.api import CalibrationSpec, DynamicConfig, train_dynamic_to_folder
    from babelprune.flags import DYNAMIC_FLAGS, verb_config

    config = verb_config(config_file, DynamicConfig, DYNAMIC_FLAGS, dict(locals()))
    check_output_folder(out, "--out")
    calibration = CalibrationSpec(corpus=calib, languages=language_option(calib_langs, "--calib-langs"), samples=samples,
                                  seq_len=seq_len)
    result = train_dynamic_to_folder(model, config, out, task, calibration, device=device, dtype=dtype)
    console.print(f"Dynamic model trained in {result.seconds:.0f} s; saved to {out}; cut it with `babelprune slice`.")


def slice_command(
    model: Annotated[Path, typer.Argument(help="A folder written by `babelprune train-dynamic`.")],
    out: Annotated[Path, typer.Option(help="Folder for the smaller model (must not exist).")],
    sparsity: Annotated[float, typer.Option(help="Share of the block parameters to remove.")] = 0.5,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "auto",
) -> None:
    """Cut a dynamically trained model to any size, without retraining (the sliced model is saved in --dtype)."""
    from babelprune.api import slice_to_folder

    check_output_folder(out, "--out")
    sliced = slice_to_folder(model, sparsity, out, device=device, dtype=dtype)
    console.print(Text.assemble("Sliced model saved to ", (str(sliced), "bold")))
