"""The main job: a small built-in sweep on a real multilingual model, ending in the HTML report.

`babelprune demo` runs the packaged `demo` recipe (src/babelprune/sweep/recipes/demo.yaml):
gemma3-270m dense, then magnitude, wanda, sparsegpt and mwanda (its paper's method,
CWL layer-wise sparsity included) and the recommended configuration (mwanda + CWL
+ refit) at 50%, and the recommended configuration at 2:4 (mwanda + refit), each scored on the Bible's
22 languages and on 16 UDHR languages that calibration never saw. Every
finished run goes into a results store, so an interrupted demo picks up where
it stopped.

It ends with `shrink` (`DemoShrink`): the smallest model, among vocabulary trims, whose every
calibration language stays within the budget on held-out Bible text; it is written beside the report
(`<out>-shrink/`: the model and its own page), timed in PyTorch against the dense model (and, when
llama-cpp-python is installed, exported as a Q8_0 GGUF file and timed in llama.cpp), and summarised
as the report's last section. Its scores go
to `<out>.shrink.sqlite`, so a second demo scores nothing twice. The search runs on the CPU in float32
whatever --device and --dtype say (the report says so when they differ). The report is written from
the store at the end.
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
class DemoShrink:
    """The demo's last step: what `shrink` searches for the calibration languages, and on how much text.

    One candidate, the trim that keeps every piece the calibration text used (min_count 1), judged on
    held-out verses of the same Bible (a trim costs far more on another source:
    docs/results/vocab_generalise.md) and confirmed on others: the demo's 15 minutes leave about two for
    this step, four scorings of 16 verses per language. On so little text English's interval is several
    points wide, so the budget is 5%; `babelprune shrink` with its defaults (more trims, structured
    widths, quantizations, 40 segments of 256 tokens) is the search itself.
    """

    budget: float = 0.05
    trims: tuple[str, ...] = ("1",)
    widths: tuple[str, ...] = ("none",)
    segments: int = 16  # held-out verses per language and half: one window each
    seq_len: int = 48


@dataclass(frozen=True)
class DemoOutcome:
    report: Path  # the report's index.html
    store: Path
    dropped_sets: tuple[str, ...]  # evaluation sets left out because their corpus is not installed
    ok: bool  # every run finished
    shrink: object = None  # the report's ShrinkSummary (None when the demo ran without its shrink step)


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


def shrink_folder(out: Path) -> Path:
    """Where the demo writes the model `shrink` chose, and its page: `<out>-shrink` beside the report folder."""
    out = Path(out)
    return out.with_name(out.name + "-shrink")


def shrink_store(out: Path) -> Path:
    """The demo's store of shrink scores: `<out>.shrink.sqlite` beside the report folder."""
    out = Path(out)
    return out.with_name(out.name + ".shrink.sqlite")


def run_demo(out: Path, store: Path | None = None, model: str | None = None, max_tokens: int | None = None,
             console: Console | None = None, *, device: str = "cpu", dtype: str = "auto",
             shrink: DemoShrink | None = DemoShrink()) -> DemoOutcome:
    """Run (or resume) the demo sweep into `store` (default: `<out>.sqlite` beside the report) and write the report to `out`.

    Every run's model runs in `dtype` on `device`; a device this machine lacks is refused before any work.
    `shrink` (None: skipped) is the last step, written to `shrink_folder(out)` (replaced when a demo wrote it).
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
    if shrink is not None:
        check_shrink_outputs(out)
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
    shrunk = None
    if shrink is not None:
        shrunk = run_shrink(shrink, experiment["models"][0], experiment["calibration"]["languages"], out, console,
                            on_another_device=(device, dtype) != ("cpu", "auto"))
    page = write_report(store, out, overwrite=True, shrink=shrunk)
    console.print(
        f"{summary.planned} runs: {len(summary.done)} done now, {summary.skipped} done before, {len(summary.failed)} failed; "
        f"store {store}; report {page}", highlight=False, markup=False,
    )
    return DemoOutcome(report=page, store=store, dropped_sets=dropped, ok=summary.ok, shrink=shrunk)


def check_shrink_outputs(out: Path) -> None:
    """Refuse, before any work, a `<out>-shrink` folder that an earlier demo (or `babelprune shrink`) did not write,
    and a shrink store that cannot be written or is not one."""
    from babelprune.outputs import STORE_SUFFIXES, check_output_file

    folder = shrink_folder(out)
    check_output_file(shrink_store(out), "the shrink store", STORE_SUFFIXES, reuse=True)
    if folder.exists() and not _is_shrink_folder(folder):
        raise BabelpruneError(f"{folder} exists and was not written by `babelprune shrink`, so the demo leaves it alone; "
                              "move it, or choose another --out.")


def _is_shrink_folder(folder: Path) -> bool:
    import json

    try:
        record = json.loads((folder / "shrink.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("format") == "babelprune-shrink-result"


def run_shrink(plan: DemoShrink, model: str, languages: list[str], out: Path, console: Console, on_another_device: bool):
    """The demo's last step: shrink `model` for `languages`, time the chosen model, and say what the report shows.

    The new folder is written beside the old one and takes its place only when complete, so an
    interrupted or refused search leaves an earlier demo's shrunk model as it was.
    """
    import shutil

    from babelprune.api import export_model, llama_cpp_ready, measure_gguf_speeds, measure_model_speeds, shrink_to_folder
    from babelprune.cache import move_into_place
    from babelprune.report.html import ShrinkSummary, write_shrink_page

    folder = shrink_folder(out)
    fresh = folder.with_name(f".{folder.name}.new")
    shutil.rmtree(fresh, ignore_errors=True)  # a step interrupted before its swap
    notes = []
    if on_another_device:
        notes.append("The shrink search ran on the CPU in float32; the runs above used the device and type of --device and --dtype.")
    console.print(Text(f"shrink: the smallest {model} within {plan.budget:.0%} for {', '.join(languages)}"), highlight=False)
    try:
        record = shrink_to_folder(model, languages, plan.budget, fresh, trims=plan.trims, widths=plan.widths, quants=("none",),
                                  segments=plan.segments, seq_len=plan.seq_len, store=shrink_store(out),
                                  write_page=write_shrink_page)
    except BabelpruneError as error:  # no candidate within the budget: a finding for the page, not a failed demo
        console.print(Text.assemble(("shrink:", "yellow"), f" {error}"), highlight=False)
        return ShrinkSummary(record=None, refusal=str(error), notes=notes)
    move_into_place(fresh, folder)  # an earlier demo's folder stays whole until the new one is in place
    chosen = folder / "model"
    speeds = measure_model_speeds([model, str(chosen)], seq_len=32, batch_size=4, runs=3, warmup=1, new_tokens=8)
    gguf_speed = None
    if llama_cpp_ready():  # the chosen model as llama.cpp serves it: Q8_0 (no importance matrix to compute), timed at batch 1
        gguf = folder / "model-Q8_0.gguf"
        export_model(str(chosen), gguf, quant="Q8_0")
        gguf_speed = measure_gguf_speeds([str(gguf)], runs=3, warmup=1)[0]
    else:
        notes.append("The shrunk model's speed in llama.cpp is not measured: llama-cpp-python is not installed. "
                     "`pip install -e '.[llama]'` (babelprune's llama extra) adds it to the next demo, as a Q8_0 GGUF file.")
    relative = f"../{folder.name}/index.html"
    return ShrinkSummary(record=record, page=relative, speeds=speeds, gguf_speed=gguf_speed, notes=notes)
