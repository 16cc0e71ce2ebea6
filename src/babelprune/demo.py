"""The main job: evaluate a real multilingual model language by language, prune it, and report what each language lost."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from babelprune.api import calibrate, evaluate, prune
from babelprune.cache import atomic_dir
from babelprune.data.registry import get_corpus
from babelprune.models.loading import load_model
from babelprune.prune.config import PruneConfig
from babelprune.prune.engine import restore_linears, snapshot_linears
from babelprune.report.compare import Comparison, compare
from babelprune.report.plots import degradation_chart, language_bar_chart
from babelprune.report.records import EvalResult
from babelprune.report.tables import comparison_markdown, comparison_table, markdown_table, rich_table

# UDHR languages added to the demo when the UDHR is in the cache: languages the
# Bible lacks, across scripts and resource levels (absent ones are skipped).
DEMO_UDHR_LANGUAGES = ("nl", "el-monoton", "he", "th", "ta", "ka", "hy", "am", "yo", "zu", "ha", "cy", "eu", "is", "my", "quy")


@dataclass(frozen=True)
class DemoConfig:
    model: str = "gemma3-270m"
    seq_len: int = 256
    # Predicted tokens per language and model: 512 keeps three models x 38 languages within minutes on 2 cores.
    max_tokens: int = 512
    batch_size: int = 4
    methods: tuple[str, ...] = ("wanda", "mwanda")
    sparsity: float = 0.5
    calib_samples: int = 8  # per calibration language (8 Bible languages by default)
    udhr: bool = True  # also evaluate UDHR languages when the corpus has been fetched


def _corpora(config: DemoConfig) -> list[tuple[str, object, list[str] | None, str]]:
    """(name, corpus, languages, split) of each evaluation set."""
    from babelprune.data.udhr import udhr_available

    sets = [("bible", get_corpus("bible"), None, "eval")]
    if config.udhr and udhr_available():
        udhr = get_corpus("udhr")
        langs = [lang for lang in DEMO_UDHR_LANGUAGES if lang in udhr.languages()]
        if langs:
            sets.append(("udhr", udhr, langs, "all"))
    return sets


def _worst_hit(comparisons: list[Comparison], count: int = 5) -> str:
    lines = []
    for comparison in comparisons:
        ranked = sorted(comparison.changes, key=comparison.degradation, reverse=True)[:count]
        listed = ", ".join(f"{c.language} ({c.resource}) {100 * comparison.degradation(c):+.0f}%" for c in ranked)
        lines.append(f"- **{comparison.label}**: {listed}")
    return "\n".join(lines)


def run_demo(out: Path, config: DemoConfig = DemoConfig(), console: Console | None = None) -> Path:
    """Dense evaluation on every Bible (and fetched UDHR) language, then each pruning method, into a report folder."""
    console = console or Console()
    loaded = load_model(config.model)
    sets = _corpora(config)
    with atomic_dir(Path(out), overwrite=True) as folder:
        dense: dict[str, EvalResult] = {}
        sections = ["## Dense model", ""]
        for name, corpus, langs, split in sets:
            dense[name] = evaluate(loaded, corpus, langs, split, config.seq_len, config.max_tokens, config.batch_size)
            dense[name].save(folder / f"dense_{name}.json")
            language_bar_chart(dense[name], folder / f"dense_{name}_by_language.png")
            console.print(rich_table(dense[name]))
            sections += [markdown_table(dense[name]), f"![dense {name}](dense_{name}_by_language.png)", ""]

        calibration = calibrate(loaded, "bible", None, config.calib_samples, config.seq_len)
        dense_weights = snapshot_linears(loaded.model)
        comparisons: dict[str, list[Comparison]] = {name: [] for name, *_ in sets}
        for method in config.methods:
            restore_linears(loaded.model, dense_weights)
            result = prune(loaded, PruneConfig(method=method, sparsity=config.sparsity), calibration)
            console.print(f"{method}: block sparsity {result.starting_sparsity:.1%} -> {result.achieved_sparsity:.1%} in {result.seconds:.0f} s")
            for name, corpus, langs, split in sets:
                pruned = evaluate(loaded, corpus, langs, split, config.seq_len, config.max_tokens, config.batch_size)
                pruned.save(folder / f"{method}_{name}.json")
                comparisons[name].append(compare(dense[name], pruned))

        calibrated = ", ".join(calibration.language_set)
        sections += [
            f"## Pruned at {config.sparsity:.0%} (shared masks; calibration on {calibrated})",
            "",
            "Relative change in bits per byte from the dense model (positive = worse).",
            "",
        ]
        for name, found in comparisons.items():
            console.print(comparison_table(found))
            degradation_chart(found, folder / f"degradation_{name}.png")
            sections += [
                f"### {name}", "", comparison_markdown(found), f"![degradation on {name}](degradation_{name}.png)", "",
                "Worst-hit languages:", "", _worst_hit(found), "",
            ]
        header = [
            f"# babelprune report: {config.model}",
            "",
            "Per-language quality in bits per byte (lower is better; comparable across tokenizers),",
            "grouped by resource level, for the dense model and after one-shot pruning.",
            "",
        ]
        (folder / "report.md").write_text("\n".join(header + sections), encoding="utf-8")
    console.print(f"Report written to [bold]{out}[/bold]")
    return Path(out)
