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

The runs are a sweep of the results store (babelprune.sweep.finetune_sweep):
--out holds the experiment file and the store, and runs done
in the store are skipped, so the command can be stopped and started again;
adding a sparsity or a seed later runs only the new runs. The folder is keyed
on a hash of everything else that decides the runs (model, task sizes, the
base configuration, threads, the code under src/): a folder made with other
settings is removed and run again, and the script says so. At the end the
HTML report is written into docs/results/finetune_experiment/, and
docs/results/finetune_experiment.md holds the headline findings with their
intervals and links to it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from _common import RESULTS_DIR, keyed_folder, source_fingerprint, write_result_table
from babelprune.finetune import FinetuneConfig
from babelprune.report.html import write_report
from babelprune.sweep.finetune_sweep import STORE_FILE, run_finetune_sweep
from babelprune.sweep.store import ResultsStore
from recipe_results import finetune_markdown

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

    options = {"max_per_label": args.max_per_label, "max_eval": args.max_eval}
    base = FinetuneConfig(
        lr=args.lr, batch_size=args.batch_size, epochs=1, mode="zero-shot", source_lang="en",
        perturbations=["words", "chars"], perturbation_rate=0.15, eval_batch_size=16,
        max_train_examples=None, max_eval_examples=None,  # the task options above set the sizes
    )
    fields = {"model": args.model, "task": "bible-genre", **options, "config": base.model_dump(mode="json"),
              "threads": args.threads, "code": source_fingerprint()}
    keyed_folder(args.out, fields, "sweep")
    started = time.perf_counter()
    swept = run_finetune_sweep(args.model, "bible-genre", args.out, task_options=options, base=base,
                               sparsities=_floats(args.sparsities), seeds=[int(s) for s in _floats(args.seeds)],
                               progress=False)
    print(f"{time.perf_counter() - started:.0f}s: {len(swept.summary.done)} runs done now, {swept.summary.skipped} before, "
          f"{len(swept.summary.failed)} failed", flush=True)
    write_results(args.out / STORE_FILE, args.threads)


def write_results(store: Path, threads: int) -> None:
    """The HTML report in docs/results/finetune_experiment/, and the headline findings as docs/results/finetune_experiment.md."""
    report = write_report(store, RESULTS_DIR / NAME, overwrite=True)
    with ResultsStore(store, create=False) as results:
        done = results.records(state="done")
    body = (f"The whole report, with every language, the robustness gaps, the low-resource analysis and its figures: "
            f"[{NAME}/{report.name}]({NAME}/{report.name}).\n\n" + finetune_markdown(done))
    write_result_table(NAME, "e5-small on bible-genre: gradual magnitude pruning during fine-tuning", body, threads=threads)


if __name__ == "__main__":
    main()
