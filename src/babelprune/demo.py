"""The main job: a small built-in sweep on a real multilingual model, ending in the HTML report.

`babelprune demo` runs the packaged `demo` recipe (src/babelprune/sweep/recipes/demo.yaml):
gemma3-270m dense, then magnitude, wanda, sparsegpt and mwanda (its paper's method,
CWL layer-wise sparsity included) and the recommended configuration (mwanda + CWL
+ refit) at 50%, and the recommended configuration at 2:4 (mwanda + refit), each scored on the Bible's
22 languages and on 16 UDHR languages that calibration never saw. Every
finished run goes into a results store, so an interrupted demo picks up where
it stopped; the report is written from the store at the end.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.console import Console
from rich.text import Text

from babelprune.errors import BabelpruneError

DEMO_RECIPE = "demo"
# The UDHR languages of the demo and of the quality benchmark: languages the Bible lacks, across scripts
# (Burmese, Georgian, Armenian, Tamil, Amharic, Thai...) and resource levels; none is calibrated.
DEMO_UDHR_LANGUAGES = ("nl", "el-monoton", "he", "th", "ta", "ka", "hy", "am", "yo", "zu", "ha", "cy", "eu", "is", "my", "quy")


@dataclass(frozen=True)
class DemoOutcome:
    report: Path  # the report's index.html
    store: Path
    dropped_sets: tuple[str, ...]  # evaluation sets left out because their corpus is not installed
    ok: bool  # every run finished


def demo_experiment(model: str | None = None, max_tokens: int | None = None, device: str = "cpu",
                    dtype: str = "auto") -> tuple[dict, tuple[str, ...]]:
    """The demo recipe as a dict, with the model, token budget, device and dtype replaced if given.

    The UDHR set is dropped when the UDHR has not been fetched; its name is
    returned so that the caller says so (the keys of the runs change with it).
    The CPU in float32 (the defaults) keeps the keys of the runs of demos made before there was a choice.
    """
    from babelprune.data.udhr import udhr_available
    from babelprune.sweep.experiment import recipe_path

    experiment = yaml.safe_load(recipe_path(DEMO_RECIPE).read_text(encoding="utf-8"))
    if model is not None:
        experiment["models"] = [model]
    if max_tokens is not None:
        if max_tokens < 1:
            raise BabelpruneError(f"--max-tokens is {max_tokens}; give a positive number of predicted tokens per language.")
        for evaluation in experiment["evaluation"]:
            evaluation["max_tokens"] = max_tokens
    experiment["device"], experiment["dtype"] = device, dtype
    dropped: tuple[str, ...] = ()
    if not udhr_available():
        dropped = tuple(e["name"] for e in experiment["evaluation"] if e["corpus"] == "udhr")
        experiment["evaluation"] = [e for e in experiment["evaluation"] if e["corpus"] != "udhr"]
    return experiment, dropped


def default_store(out: Path) -> Path:
    """The demo's results store when none is given: `<out>.sqlite` beside the report folder."""
    out = Path(out)
    return out.with_name(out.name + ".sqlite")


def run_demo(out: Path, store: Path | None = None, model: str | None = None, max_tokens: int | None = None,
             console: Console | None = None, *, device: str = "cpu", dtype: str = "auto") -> DemoOutcome:
    """Run (or resume) the demo sweep into `store` (default: `<out>.sqlite` beside the report) and write the report to `out`.

    Every run's model runs in `dtype` on `device`; a device this machine lacks is refused before any work.
    """
    from babelprune.devices import resolve
    from babelprune.report.html import check_out, write_report
    from babelprune.sweep.local import run_local
    from babelprune.sweep.runs import plan_experiment
    from babelprune.sweep.store import ResultsStore

    console = console or Console()
    out = Path(out)
    store = Path(store) if store is not None else default_store(out)
    resolve(device, dtype)
    check_out(out, overwrite=True)  # a folder that is not a babelprune report is refused before any work
    experiment, dropped = demo_experiment(model, max_tokens, device, dtype)
    if dropped:
        console.print(Text.assemble(("note:", "yellow"), f" the UDHR is not fetched, so the evaluation set(s) {', '.join(dropped)} are left "
                      "out; `babelprune data fetch udhr` adds 16 languages calibration never saw."), highlight=False)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{DEMO_RECIPE}.yaml"
        path.write_text(yaml.safe_dump(experiment, sort_keys=False, allow_unicode=True), encoding="utf-8")
        plan = plan_experiment(path)
    with ResultsStore(store) as results:
        summary = run_local(plan, results, console=console)
    page = write_report(store, out, overwrite=True)
    console.print(
        f"{summary.planned} runs: {len(summary.done)} done now, {summary.skipped} done before, {len(summary.failed)} failed; "
        f"store {store}; report {page}", highlight=False, markup=False,
    )
    return DemoOutcome(report=page, store=store, dropped_sets=dropped, ok=summary.ok)
