"""Language codes and other user strings never become paths outside the folder they are meant for.

A language code names a folder (one pruned model per language, one
fine-tuning run per language), so a corpus whose `lang` is "../ESCAPED" or
an absolute path once wrote whole models outside --out. Codes are now
checked where they enter (every corpus and task reader, typed --langs), and
every join of a user string to a folder goes through `babelprune.names`.
Each test below checks the one-sentence error and that nothing was written
outside the folder it used.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import pytest

from babelprune.data.bible import VERSIONS
from babelprune.data.corpus import Corpus, Segment
from babelprune.data.files import FilesCorpus
from babelprune.data.hf import HFDatasetCorpus
from babelprune.data.ner_nli import WikiannTask, XnliTask
from babelprune.data.registry import get_corpus
from babelprune.data.tasks import TrainingRun, get_task, language_list
from babelprune.errors import BabelpruneError
from babelprune.names import check_language_code, child_path, file_component, is_language_code, slug
from tests.cli_runner import run_cli

# What an attacker (or a careless corpus) might put where a code or a name belongs.
TRAVERSALS = ["..", "../x", "../ESCAPED", "/tmp/x", "a/b", "a\\b"]
CONTROLS = ["a\x00b", "a\nb", "\x1b[31m", "en\n", "a\tb"]
NOT_CODES = ["", ".", " en", "en ", "a b", "-en", "_en", "é", "en.x", "x" * 65, "zh:Hans"]
BAD_CODES = TRAVERSALS + CONTROLS + NOT_CODES
# Real codes: BCP-47 tags of the UDHR ('zh-Hant', 'de-1901'), FLORES configs, ISO 639-3 and script suffixes.
GOOD_CODES = ["en", "zh", "zh-Hant", "zh-Hans", "sr-Latn", "de-1901", "cmn_hans", "eng_Latn", "ace-Arab",
              "es-419", "x" * 64, "0ld"]
FIXTURES = Path(__file__).parent / "fixtures"


def _one_sentence(error: pytest.ExceptionInfo) -> str:
    """The error's message, after checking it is one line and one sentence."""
    message = str(error.value)
    assert "\n" not in message and message.endswith("."), message
    assert message.count(". ") == 0, message  # one sentence: no second one after a full stop
    return message


def _tree(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


# --------------------------------------------------------------------------- names.py


@pytest.mark.parametrize("code", GOOD_CODES)
def test_real_codes_pass(code):
    assert check_language_code(code) == code


def test_every_bible_language_is_a_code():
    # The Bible corpus's keys are fixed in VERSIONS: they must all pass, or the corpus would refuse itself.
    assert all(is_language_code(version.language) for version in VERSIONS.values())


def test_every_udhr_fixture_language_is_a_code():
    from babelprune.data.udhr import UDHRCorpus

    languages = UDHRCorpus(FIXTURES / "udhr").languages()
    assert languages and all(is_language_code(lang) for lang in languages)


@pytest.mark.parametrize("code", BAD_CODES + [None, 3])
def test_bad_codes_are_refused_in_one_sentence(code):
    with pytest.raises(BabelpruneError, match="is not allowed: a code is letters, digits") as error:
        check_language_code(code, "in corpus.jsonl line 3", "fix the corpus")
    message = _one_sentence(error)
    assert "in corpus.jsonl line 3" in message and message.endswith("; fix the corpus.")


@pytest.mark.parametrize("name", TRAVERSALS + CONTROLS + ["", ".", " x", "x ", "x" * 256, "a\u2028b", None])
def test_file_component_refuses_what_could_leave_the_folder(name):
    with pytest.raises(BabelpruneError, match="cannot be a file name") as error:
        file_component(name, "run name")
    _one_sentence(error)


@pytest.mark.parametrize("name", ["en", "zh-Hant", "sparsity0.70-seed1", "mwanda + CWL", "é", "-x"])
def test_file_component_keeps_ordinary_names(name):
    assert file_component(name) == name


@pytest.mark.parametrize("name", TRAVERSALS + CONTROLS + ["", ".", "/etc/passwd"])
def test_child_path_refuses_and_writes_nothing(tmp_path, name):
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(BabelpruneError) as error:
        child_path(root, name, "language folder")
    _one_sentence(error)
    assert _tree(tmp_path) == {"root"}


def test_child_path_refuses_a_link_that_leads_outside(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "en").symlink_to(outside)
    with pytest.raises(BabelpruneError, match="leads outside") as error:
        child_path(root, "en", "language folder")
    _one_sentence(error)


def test_child_path_joins_a_good_name(tmp_path):
    assert child_path(tmp_path, "zh-Hant") == tmp_path / "zh-Hant"


@pytest.mark.parametrize("text", BAD_CODES + ["mwanda + CWL", "../../etc/passwd", "\x1b[31mred"])
def test_slug_maps_anything_to_a_safe_name(text):
    assert file_component(slug(text)) == slug(text)
    assert "/" not in slug(text) and not slug(text).startswith((".", "-"))


# --------------------------------------------------------------------------- corpora


# "en\n" is left out: spaces and newlines around a code are trimmed, as they always were.
@pytest.mark.parametrize("lang", TRAVERSALS + ["a\x00b", "a\nb", "\x1b[31m", "a\tb", "a b", "-en", "zh:Hans"])
def test_jsonl_lang_values_are_checked(tmp_path, lang):
    path = tmp_path / "corpus.jsonl"
    lines = [{"lang": "en", "text": "one"}, {"lang": lang, "text": "two"}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    with pytest.raises(BabelpruneError, match=r"corpus\.jsonl line 2 is not allowed") as error:
        get_corpus(str(path))
    assert _one_sentence(error).endswith("; fix the corpus.")
    assert _tree(tmp_path) == {"corpus.jsonl"}


def test_jsonl_lang_keeps_trimming_surrounding_spaces(tmp_path):
    # Spaces around a code were always dropped; what is left is a good code.
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"lang": " en ", "text": "one"}\n', encoding="utf-8")
    assert FilesCorpus(path).languages() == ["en"]


# File names a folder corpus can meet on a POSIX disk ('/' and NUL cannot be in a name).
@pytest.mark.parametrize("file_name", ["..txt", "...txt", ".txt", "a\nb.txt", "\x1b[31m.txt", "-en.txt", " en.txt",
                                       "a b.txt", "a\\b.txt", "en.x.txt"])
def test_folder_file_names_are_checked(tmp_path, file_name):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "en.txt").write_text("one\n", encoding="utf-8")
    (folder / file_name).write_text("two\n", encoding="utf-8")
    with pytest.raises(BabelpruneError, match="is not allowed") as error:
        FilesCorpus(folder)
    message = _one_sentence(error)
    assert "from the file name" in message and message.endswith("; rename the file.")


@pytest.mark.parametrize("lang", TRAVERSALS + CONTROLS)
def test_typed_codes_are_checked(lang):
    if lang.strip() != "en":  # "en\n" typed in a comma list is trimmed to "en", as before
        with pytest.raises(BabelpruneError, match="is not allowed") as error:
            language_list(f"en,{lang}")
        _one_sentence(error)
    with pytest.raises(BabelpruneError, match="in --calib-langs is not allowed"):
        language_list(["en", lang], "in --calib-langs")


class _Listed(Corpus):
    """A corpus that trusts its own list: the typed code is what check_languages must refuse."""

    name = "listed"

    def __init__(self, languages):
        self._languages = languages

    def languages(self):
        return self._languages

    def _segments(self, lang):
        return [Segment("1", "g", "text")]


def test_check_languages_refuses_a_bad_typed_code_even_if_listed():
    with pytest.raises(BabelpruneError, match=r"Language code '\.\./x' for corpus 'listed' is not allowed") as error:
        _Listed(["en", "../x"]).check_languages(["../x"])
    _one_sentence(error)


def test_hf_codes_given_are_checked_before_loading():
    # languages= is checked in the constructor, before `datasets` is even imported.
    with pytest.raises(BabelpruneError, match=r"config '\.\./x' of dataset 'some/dataset'\) is not allowed") as error:
        HFDatasetCorpus("some/dataset", languages=["eng_Latn", "../x"])
    _one_sentence(error)


@pytest.mark.parametrize("config", ["../x", "/tmp/x", "a\tb", "en.v2"])
def test_hf_configs_found_are_checked(monkeypatch, config):
    import babelprune.data.hf as hf

    class FakeDatasets:
        @staticmethod
        def get_dataset_config_names(dataset, **kwargs):
            return ["eng_Latn", config]

    monkeypatch.setattr(hf, "_import_datasets", lambda: FakeDatasets)
    with pytest.raises(BabelpruneError, match="of dataset 'some/dataset'\\) is not allowed") as error:
        HFDatasetCorpus("some/dataset")
    assert _one_sentence(error).endswith("so that every code has that form.")


def test_udhr_tags_are_checked(tmp_path):
    root = tmp_path / "udhr"
    (root / "declaration").mkdir(parents=True)
    (root / "declaration" / "evil.html").write_text('<html lang="../x"><body><p>x</p></body></html>', encoding="utf-8")
    from babelprune.data.udhr import UDHRCorpus

    with pytest.raises(BabelpruneError, match=r"Language code '\.\./x' \(the lang of .*evil\.html\)") as error:
        UDHRCorpus(root).languages()
    _one_sentence(error)


# --------------------------------------------------------------------------- tasks and fine-tuning


@pytest.mark.parametrize("folder_name", ["-x", "a\nb", " en", "a b", "\x1b[31m"])
def test_task_folder_names_are_checked(tmp_path, folder_name):
    source = tmp_path / "wikiann"
    for lang in ("en", folder_name):
        (source / lang).mkdir(parents=True)
        (source / lang / "train.jsonl").write_text('{"tokens": ["a"], "ner_tags": [0]}\n', encoding="utf-8")
    with pytest.raises(BabelpruneError, match=r"\(a folder in .*\) is not allowed") as error:
        WikiannTask(source=str(source)).languages()
    assert _one_sentence(error).endswith("; rename that folder.")


@pytest.mark.parametrize("lang", ["../x", "/tmp/x", "a/b", "a\x00b"])
def test_task_languages_option_is_checked(lang):
    # With the hub as source, the languages option is the task's language list, and each names a run folder.
    with pytest.raises(BabelpruneError, match="is not allowed") as error:
        get_task("xnli", languages=f"en,{lang}")
    _one_sentence(error)
    with pytest.raises(BabelpruneError, match="is not allowed"):
        XnliTask(languages=["en", lang])


def test_task_check_language_refuses_the_form_first():
    with pytest.raises(BabelpruneError, match=r"Language code '\.\./x' for task 'xnli' is not allowed"):
        XnliTask(languages=["en"]).check_language("../x")


def test_a_run_named_like_a_path_is_refused_before_anything(tmp_path):
    from babelprune.finetune import trainer

    out = tmp_path / "out"
    # A finished result just outside: the old join would have read it back as this run's own.
    (tmp_path / "escaped").mkdir()
    run = TrainingRun("../../escaped", [], ("en",))
    with pytest.raises(BabelpruneError, match=r"run name '\.\./\.\./escaped' cannot be a file name") as error:
        # Only the run and the folder matter: the name is checked before anything else is used.
        params = inspect.signature(trainer._train_and_score).parameters
        trainer._train_and_score(**({name: None for name in params} | {"model_spec": "model", "run": run, "out": out}))
    _one_sentence(error)
    assert _tree(tmp_path) == {"escaped"}


def test_old_sweep_run_folders_stay_inside_out_dir(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from babelprune.finetune.config import FinetuneConfig
    from babelprune.sweep import finetune_sweep

    monkeypatch.setattr(finetune_sweep, "old_run_folder", lambda sparsity, seed: "../escaped")
    run = SimpleNamespace(key="k", verb=SimpleNamespace(config=FinetuneConfig(), task="bible-genre", task_options={}))
    store = SimpleNamespace(keys=lambda state: set())
    with pytest.raises(BabelpruneError, match=r"sweep run folder '\.\./escaped' cannot be a file name") as error:
        finetune_sweep.import_old_runs(tmp_path / "out", SimpleNamespace(runs=[run]), store, "model", print)
    _one_sentence(error)
    assert _tree(tmp_path) == set()


# --------------------------------------------------------------------------- report figures


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/escaped", "a\x00b", "\x1b[31m", "..", ""])
def test_figure_files_stay_in_the_figures_folder(tmp_path, name):
    from babelprune.report.html_parts import FIGURES, Page

    folder = tmp_path / "report"
    folder.mkdir()
    drawn = []

    def draw(path: Path) -> None:
        drawn.append(path)
        path.write_bytes(b"png")

    Page(folder).figure(draw, f"overlap-{name}", "alt", "caption")
    assert drawn[0].parent == folder / FIGURES
    assert _tree(tmp_path) == {"report", f"report/{FIGURES}", f"report/{FIGURES}/{drawn[0].name}"}


# --------------------------------------------------------------------------- the reported case, end to end


@pytest.mark.parametrize("typed", [True, False], ids=["typed-codes", "corpus-codes"])
def test_prune_per_language_with_escaping_codes_writes_nothing(tmp_path, monkeypatch, capsys, typed):
    # typed: the bad codes are in --calib-langs too (refused as typed);
    # else only the corpus has them (refused when it is read).
    from tests.sweep_fixtures import write_tiny_model

    model = write_tiny_model(tmp_path / "model")
    work = tmp_path / "work"
    work.mkdir()
    absolute = tmp_path / "abs-target"
    corpus = work / "corpus.jsonl"
    rows = [{"lang": lang, "text": f"some words of text number {i} for the calibration windows here."}
            for lang in ("en", "../ESCAPED", str(absolute)) for i in range(20)]
    corpus.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    before_parent = set(os.listdir(tmp_path.parent))
    before = _tree(tmp_path)

    code, out, err = run_cli(
        monkeypatch, capsys, "prune", "--model", str(model), "--structured", "ffn", "--setting", "per-language",
        "--calib", str(corpus), "--calib-langs", f"en,../ESCAPED,{absolute}" if typed else "en",
        "--samples", "1", "--seq-len", "8", "--out", str(work / "out"),
    )

    assert code == 2, (out, err)
    message = " ".join(err.split())
    assert "Language code '../ESCAPED'" in message and "is not allowed" in message, err
    assert typed or "corpus.jsonl line 21" in message, err
    assert _tree(tmp_path) == before  # no out, no ESCAPED beside it, no absolute target
    assert set(os.listdir(tmp_path.parent)) == before_parent
    assert not absolute.exists()
