"""A tiny model folder, a tiny multilingual corpus and experiment files, for the sweep tests (no real model)."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import yaml

from tests.tiny_models import tiny_model
from tests.tiny_tokenizer import char_tokenizer

LANGUAGES = ("en", "fr", "sw")
WORDS = {
    "en": "the light came over the water and the people saw it was good".split(),
    "fr": "la lumière vint sur les eaux et le peuple vit que cela était bon".split(),
    "sw": "nuru ikaja juu ya maji na watu wakaona kuwa ni njema".split(),
}


def write_tiny_model(folder: Path, family: str = "llama", seed: int = 0) -> Path:
    """A tiny random causal LM and a character tokenizer, saved as a Hugging Face folder."""
    folder.mkdir(parents=True, exist_ok=True)
    tiny_model(family, seed=seed).save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder


def write_tiny_corpus(path: Path, segments: int = 40, seed: int = 0) -> Path:
    """A JSONL corpus of made-up sentences in three languages, one group per segment (both splits get text)."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as out:
        for index in range(segments):
            for lang in LANGUAGES:
                words = [rng.choice(WORDS[lang]) for _ in range(12)]
                record = {"lang": lang, "id": str(index), "group": f"g{index}", "text": " ".join(words) + "."}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def experiment(model: Path, corpus: Path, runs: list[dict], name: str = "tiny", **extra) -> dict:
    """An experiment mapping on the tiny model and corpus, with small budgets."""
    return {
        "name": name,
        "models": [str(model)],
        "calibration": {"corpus": str(corpus), "languages": ["en", "fr"], "samples": 2, "seq_len": 16},
        "evaluation": [{"name": "tiny", "corpus": str(corpus), "languages": ["en", "sw"], "seq_len": 16,
                        "max_tokens": 64, "batch_size": 4}],
        "runs": runs,
        **extra,
    }


def write_experiment(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


class FullDisk:
    """An SQLite connection whose inserts fail as on a full disk (everything else passes through)."""

    def __init__(self, db):
        self.db = db

    def execute(self, sql, *args):
        if sql.startswith("INSERT"):
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.db, name)
