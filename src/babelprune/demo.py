"""The main job: evaluate a real multilingual model language by language and write a report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from babelprune.api import evaluate
from babelprune.cache import atomic_dir
from babelprune.data.registry import get_corpus
from babelprune.models.loading import load_model
from babelprune.report.plots import language_bar_chart
from babelprune.report.records import EvalResult
from babelprune.report.tables import markdown_table, rich_table

# UDHR languages added to the demo when the UDHR is in the cache: languages the
# Bible lacks, across scripts and resource levels (absent ones are skipped).
DEMO_UDHR_LANGUAGES = ("nl", "el-monoton", "he", "th", "ta", "ka", "hy", "am", "yo", "zu", "ha", "cy", "eu", "is", "my", "quy")


@dataclass(frozen=True)
class DemoConfig:
    model: str = "gemma3-270m"
    seq_len: int = 256
    # Predicted tokens per language: 1024 tokens keep 22 languages within minutes on 2 cores.
    max_tokens: int = 1024
    batch_size: int = 4
    udhr: bool = True  # also evaluate UDHR languages when the corpus has been fetched


def _report_results(name: str, result: EvalResult, folder: Path, console: Console) -> str:
    result.save(folder / f"{name}.json")
    language_bar_chart(result, folder / f"{name}_by_language.png")
    console.print(rich_table(result))
    return markdown_table(result)


def run_demo(out: Path, config: DemoConfig = DemoConfig(), console: Console | None = None) -> Path:
    """Load the model, evaluate it on every Bible language (and UDHR ones if fetched), write `out`."""
    from babelprune.data.udhr import udhr_available

    console = console or Console()
    loaded = load_model(config.model)
    sections = []
    with atomic_dir(Path(out), overwrite=True) as folder:
        bible = get_corpus("bible")
        result = evaluate(loaded, bible, None, "eval", config.seq_len, config.max_tokens, config.batch_size)
        sections.append(_report_results("dense_bible", result, folder, console))
        if config.udhr and udhr_available():
            udhr = get_corpus("udhr")
            langs = [lang for lang in DEMO_UDHR_LANGUAGES if lang in udhr.languages()]
            if langs:
                result = evaluate(loaded, udhr, langs, "all", config.seq_len, config.max_tokens, config.batch_size)
                sections.append(_report_results("dense_udhr", result, folder, console))
        summary = [
            f"# babelprune report: {config.model}",
            "",
            "Per-language quality of the dense model, grouped by resource level and sorted by bits per byte",
            "(lower is better; comparable across languages and tokenizers).",
            "",
            *sections,
        ]
        (folder / "report.md").write_text("\n".join(summary), encoding="utf-8")
    console.print(f"Report written to [bold]{out}[/bold]")
    return Path(out)
