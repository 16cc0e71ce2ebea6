"""The experiment of docs/finetune.md: gradual magnitude pruning while fine-tuning e5-small on bible-genre.

    python benchmarks/finetune_experiment.py [--out runs/finetune-bible-genre]
        [--sparsities 0,0.5,0.7,0.9] [--seeds 0,1,2] [--threads 1]

Zero-shot from English: each run fine-tunes e5-small on English verses only,
then scores all 22 Bible languages on their test verses, clean and with
words replaced or letters edited (15% of them). Sparsity 0 is the dense
baseline; the other runs prune the encoder blocks' linear weights on the
cubic schedule from 10% to 70% of training (per-layer magnitude), so the
last 30% of the steps recover at the final sparsity. Sizes are cut to fit a
small CPU budget (see --max-per-label, --max-eval).

Every run writes into its own folder under --out and is skipped when its
result exists, so the command can be stopped and started again; adding a
sparsity or a seed later runs only the new runs. Each run folder is keyed on
a hash of everything that decides it (model, task sizes, the run's
configuration, the code under src/): a folder made with other settings is
removed and run again, and the script says so. At the end the report is
written into docs/results/finetune_experiment.md, its PNG figures next to it.
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
import time
from pathlib import Path

import torch

from _common import RESULTS_DIR, keyed_folder, source_fingerprint, write_result_table
from babelprune.data.tasks import get_task
from babelprune.finetune import FinetuneConfig, run_sweep
from babelprune.finetune.sweep import sweep_configs
from babelprune.report.finetune_report import write_finetune_report

BENCHMARK = {"minutes": 18}
NAME = "finetune_experiment"


def _floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="e5-small")
    parser.add_argument("--out", type=Path, default=Path("runs/finetune-bible-genre"))
    parser.add_argument("--sparsities", default="0,0.5,0.7,0.9")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--max-per-label", type=int, default=32, help="English training verses per genre")
    parser.add_argument("--max-eval", type=int, default=14, help="test verses per language (balanced over genres)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    task = get_task("bible-genre", max_per_label=args.max_per_label, max_eval=args.max_eval)
    base = FinetuneConfig(
        lr=args.lr, batch_size=args.batch_size, epochs=1, mode="zero-shot", source_lang="en",
        perturbations=["words", "chars"], perturbation_rate=0.15, eval_batch_size=16,
        max_train_examples=None, max_eval_examples=None,  # the task options above set the sizes
    )
    started = time.perf_counter()

    def report_run(name, result) -> None:
        clean = [s.value for s in result.scores if s.perturbation is None]
        print(
            f"{time.perf_counter() - started:7.0f}s  {name}: {result.steps} steps in {result.seconds:.0f}s, "
            f"sparsity {result.achieved_sparsity:.3f}, mean {task.metric} {sum(clean) / len(clean):.3f} "
            f"over {len(clean)} languages",
            flush=True,
        )

    sparsities, seeds = _floats(args.sparsities), [int(s) for s in _floats(args.seeds)]
    claim_run_folders(args, task, base, sparsities, seeds)
    results = run_sweep(args.model, task, sparsities, seeds, base, out_dir=args.out, progress=False, on_result=report_run)
    write_report(results, args.threads)


def claim_run_folders(args, task, base: FinetuneConfig, sparsities: list[float], seeds: list[int]) -> None:
    """Key every run folder on what decides it, so that a run made with other settings is not reused."""
    code = source_fingerprint()
    for name, config in sweep_configs(task, base, sparsities, seeds).items():
        fields = {"model": args.model, "task": task.name, "max_per_label": args.max_per_label, "max_eval": args.max_eval,
                  "config": config.model_dump(mode="json"), "threads": args.threads, "code": code}
        keyed_folder(args.out / name, fields, name)


def write_report(results, threads: int) -> None:
    """The sweep's report as docs/results/finetune_experiment.md, its figures renamed next to it."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        report = write_finetune_report(results, Path(tmp)).read_text(encoding="utf-8")
        for figure in Path(tmp).glob("*.png"):
            target = RESULTS_DIR / f"{NAME}-{figure.name}"
            shutil.move(str(figure), target)
            report = report.replace(f"]({figure.name})", f"]({target.name})")
    title, _, body = report.partition("\n")
    write_result_table(NAME, re.sub(r"^#\s*", "", title), body, threads=threads)


if __name__ == "__main__":
    main()
