"""`babelprune shrink`: the budget rule on paired intervals, the Pareto front, resume, refusals, the chosen folder, the CLI."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from pathlib import Path

import pytest

from babelprune import api
from babelprune.data.corpus import HeldOutHalf
from babelprune.data.registry import get_corpus
from babelprune.errors import BabelpruneError
from babelprune.formats.loading import load_model
from babelprune.records.eval import LMScore
from babelprune.shrink import Candidate, CandidateScores, ScoreStore, check_language, choose, closest, judge, pareto_front
from tests.cli_runner import run_cli
from tests.sweep_fixtures import write_tiny_corpus, write_tiny_model
from tests.test_outputs import read_only_folder

LANGS = ["en", "fr", "sw"]
# A small space: two trims, one width; every combination but the dense model (3 candidates).
SPACE = {"trims": ["none", "1"], "widths": ["none", "ffn=0.25"]}
SMALL = {"segments": 6, "seq_len": 128, "importance": "magnitude", "progress": False,
         "calibration": api.CalibrationSpec(samples=2, seq_len=32)}


def score(lang: str, nll: list[float], size: int = 10) -> LMScore:
    return LMScore(language=lang, name=lang, script="Latn", resource="high", n_windows=len(nll), n_tokens=len(nll) * size,
                   n_bytes=len(nll) * size, nll_nats=sum(nll), window_nll=nll, window_bytes=[size] * len(nll))


# ----- the budget rule, by hand


def test_a_language_whose_upper_end_exceeds_the_budget_fails_and_is_named():
    dense = [score("en", [10.0] * 6), score("fr", [10.0] * 6)]
    # Every window 1% (en) and 3% (fr) worse: every resample gives exactly that change, so the interval is a point.
    scored = CandidateScores(bytes=100, scores=[score("en", [10.1] * 6), score("fr", [10.3] * 6)])
    judged = judge(1, Candidate(min_count=1), scored, dense, budget=0.02)
    en, fr = judged.languages
    assert en.interval == pytest.approx((0.01, 0.01)) and en.passed
    assert fr.interval == pytest.approx((0.03, 0.03)) and not fr.passed
    assert not judged.passed and judged.failed_languages == ["fr"]
    assert judge(1, Candidate(min_count=1), scored, dense, budget=0.031).passed  # both within 3.1%


def test_the_upper_end_decides_not_the_point_estimate():
    dense = score("en", [10.0] * 6)
    # One window of six 10% worse: the point estimate is 10% / 6 = 1.67%, within 2%; a resample that draws that
    # window twice or more (probability 0.26) is at least 3.3% worse, so the 97.5th percentile is beyond 2%.
    check = check_language(dense, score("en", [10.0] * 5 + [11.0]), budget=0.02)
    assert check.relative == pytest.approx(1 / 60)
    assert check.relative < 0.02 < check.interval[1]
    assert not check.passed


def test_too_few_windows_give_no_interval_and_never_pass():
    check = check_language(score("en", [10.0] * 3), score("en", [10.0] * 3), budget=0.5)
    assert check.interval is None and not check.passed


def test_pareto_front_of_hand_made_points():
    points = [(1, 5), (2, 3), (3, 4), (4, 1), (5, 1)]
    # (3, 4) is beaten by (2, 3) in both; (5, 1) by (4, 1) in size at the same loss.
    assert pareto_front(points) == [0, 1, 3]
    assert pareto_front([(2, 2), (2, 2)]) == [0, 1]  # equal points do not dominate each other


def test_the_smallest_passing_candidate_is_chosen_and_the_closest_failing_one_named():
    dense = [score("en", [10.0] * 6)]
    big = judge(1, Candidate(min_count=1), CandidateScores(bytes=300, scores=[score("en", [10.0] * 6)]), dense, 0.02)
    small = judge(2, Candidate(min_count=2), CandidateScores(bytes=200, scores=[score("en", [10.1] * 6)]), dense, 0.02)
    tiny_bad = judge(3, Candidate(units=("ffn",), sparsity=0.5), CandidateScores(bytes=50, scores=[score("en", [10.5] * 6)]), dense, 0.02)
    worse = judge(4, Candidate(units=("ffn",), sparsity=0.9), CandidateScores(bytes=10, scores=[score("en", [12.0] * 6)]), dense, 0.02)
    assert choose([big, small, tiny_bad, worse], "size").number == 2
    assert choose([tiny_bad, worse], "size") is None
    assert closest([worse, tiny_bad], 0.02).number == 3


# ----- the dev and test halves


def test_dev_and_test_halves_split_the_evaluation_split(tmp_path):
    corpus = get_corpus(str(write_tiny_corpus(tmp_path / "c.jsonl", segments=60)))
    dev = {s.group for s in HeldOutHalf(corpus, "dev").segments("en", "all")}
    test = {s.group for s in HeldOutHalf(corpus, "test").segments("en", "all")}
    held_out = {s.group for s in corpus.segments("en", "eval")}
    assert dev and test and not dev & test and dev | test == held_out
    assert not held_out & {s.group for s in corpus.segments("en", "calib")}


# ----- the store


def test_the_store_refuses_a_file_that_is_not_its_own(tmp_path):
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE runs (key TEXT)")
    with pytest.raises(BabelpruneError, match="not a babelprune shrink store"):
        ScoreStore(other)
    text = tmp_path / "text.sqlite"
    text.write_text("hello")
    with pytest.raises(BabelpruneError, match="not a babelprune shrink store"):
        ScoreStore(text)


def test_the_store_checks_every_field_of_the_key(tmp_path):
    with ScoreStore(tmp_path / "s.sqlite") as store:
        fields = {"model": "m", "half": "dev"}
        store.put(fields, CandidateScores(bytes=5, scores=[]))
        assert store.get(fields).bytes == 5
        assert store.get({"model": "m", "half": "test"}) is None
    # A row under the right key whose recorded fields differ (another candidate, a hash collision) is not taken.
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        db.execute("UPDATE scores SET fields = ?", (json.dumps({"model": "other", "half": "dev"}),))
    with ScoreStore(tmp_path / "s.sqlite") as store:
        assert store.get(fields) is None


# ----- a whole search on a tiny model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("shrink")
    return write_tiny_model(root / "model"), write_tiny_corpus(root / "corpus.jsonl", segments=60), root


def counting(monkeypatch) -> list[str]:
    """Count the models scored (by spec) through api.segment_scores."""
    calls: list[str] = []
    original = api.segment_scores

    def counted(loaded, *args, **kwargs):
        calls.append(loaded.spec)
        return original(loaded, *args, **kwargs)

    monkeypatch.setattr(api, "segment_scores", counted)
    return calls


@pytest.fixture(scope="module")
def searched(tiny):
    model, corpus, root = tiny
    calls: list[str] = []
    original = api.segment_scores

    def counted(loaded, *args, **kwargs):
        calls.append(loaded.spec)
        return original(loaded, *args, **kwargs)

    api.segment_scores = counted
    try:
        record = api.shrink_to_folder(str(model), LANGS, "5%", root / "out", corpus=str(corpus), store=root / "s.sqlite", **SPACE, **SMALL)
    finally:
        api.segment_scores = original
    return record, root / "out", calls


def test_every_candidate_is_recorded_and_the_smallest_passing_one_chosen(searched):
    record, out, calls = searched
    data = json.loads((out / "shrink.json").read_text(encoding="utf-8"))
    assert len(data["candidates"]) == 3
    assert {c["label"] for c in data["candidates"]} == {"trim min_count 1", "ffn 25%", "trim min_count 1, ffn 25%"}
    for candidate in data["candidates"]:
        assert [check["language"] for check in candidate["languages"]] == LANGS
        assert candidate["passed"] == (not candidate["failed_languages"])
        assert all(len(check["interval"]) == 2 for check in candidate["languages"])
    passing = [c for c in record.candidates if c.passed]
    assert passing, "the test needs a candidate within 5% on the tiny model"
    assert record.chosen == min(passing, key=lambda c: c.bytes).number
    assert [check.language for check in record.test] == LANGS and record.test_passed is not None
    # dense (dev), three candidates (dev), dense (test), the chosen one (test)
    assert len(calls) == 6


def test_the_chosen_model_folder_reloads_and_is_the_chosen_size(searched):
    record, out, _ = searched
    chosen = next(c for c in record.candidates if c.number == record.chosen)
    loaded = load_model(str(out / "model"))
    assert sum(f.stat().st_size for f in (out / "model").glob("*.safetensors")) == chosen.bytes
    scores = api.segment_scores(loaded, HeldOutHalf(get_corpus(record.settings.corpus), "dev"), ["en"], 6, 128)
    assert scores[0].bits_per_byte == pytest.approx(next(c for c in chosen.languages if c.language == "en").bits_per_byte, rel=1e-5)


def test_a_second_search_with_the_same_settings_scores_nothing_again(tiny, searched, monkeypatch):
    model, corpus, root = tiny
    calls = counting(monkeypatch)
    again = api.shrink_to_folder(str(model), LANGS, "5%", root / "out-again", corpus=str(corpus), store=root / "s.sqlite", **SPACE, **SMALL)
    assert calls == []
    assert again.chosen == searched[0].chosen and (root / "out-again" / "model" / "config.json").is_file()


def test_structured_options_are_part_of_the_key(tiny, searched, monkeypatch):
    model, corpus, root = tiny
    halves: list[str] = []
    original = api.segment_scores

    def counted(loaded, held, *args, **kwargs):
        halves.append(held.name.rsplit("-", 1)[-1])
        return original(loaded, held, *args, **kwargs)

    monkeypatch.setattr(api, "segment_scores", counted)
    record = api.shrink_to_folder(str(model), LANGS, "5%", root / "out-per-layer", corpus=str(corpus), store=root / "s.sqlite",
                                  structured_options={"ranking": "per-layer"}, **SPACE, **SMALL)
    # the two structured candidates are scored again on dev; the trim alone is found in the store
    assert halves.count("dev") == 2
    assert all(c.candidate.structured for c in record.candidates if c.label != "trim min_count 1")
    with pytest.raises(BabelpruneError, match="ranking"):
        api.shrink_to_folder(str(model), LANGS, "5%", root / "out-bad", corpus=str(corpus), structured_options={"ranking": "sideways"},
                             **SPACE, **SMALL)


class Interrupted(BaseException):
    """Stands for Ctrl-C or a killed process: nothing catches it on the way out."""


def test_an_interrupted_search_resumes_where_it_stopped(tiny, tmp_path, monkeypatch):
    model, corpus, _ = tiny
    original = api.segment_scores
    calls: list[str] = []

    def interrupted(loaded, *args, **kwargs):  # the dense model and one candidate are scored, then the process stops
        if len(calls) == 2:
            raise Interrupted
        calls.append(loaded.spec)
        return original(loaded, *args, **kwargs)

    monkeypatch.setattr(api, "segment_scores", interrupted)
    with pytest.raises(Interrupted):
        api.shrink_to_folder(str(model), LANGS, "5%", tmp_path / "out", corpus=str(corpus), **SPACE, **SMALL)
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if "work" in p.name]
    monkeypatch.setattr(api, "segment_scores", original)
    resumed = counting(monkeypatch)
    api.shrink_to_folder(str(model), LANGS, "5%", tmp_path / "out", corpus=str(corpus), **SPACE, **SMALL)
    # two candidates left on dev, then the dense model and the chosen one on test
    assert len(resumed) == 4 and str(model) not in resumed[:2]


def test_a_changed_setting_is_scored_anew(tiny, searched, monkeypatch):
    model, corpus, root = tiny
    calls = counting(monkeypatch)
    settings = SMALL | {"segments": 7}
    api.shrink_to_folder(str(model), LANGS, "5%", root / "out-seven", corpus=str(corpus), store=root / "s.sqlite", **SPACE, **settings)
    assert len(calls) == 6


def test_no_candidate_within_the_budget_names_the_closest_and_writes_nothing(tiny, monkeypatch, tmp_path):
    model, corpus, _ = tiny
    original = api.segment_scores

    dense: dict[str, list[LMScore]] = {}

    def worse(loaded, corpus, *args, **kwargs):  # every candidate 3% worse than the dense model in every window
        if loaded.spec == str(model):
            dense[corpus.name] = original(loaded, corpus, *args, **kwargs)
            return dense[corpus.name]
        return [s.model_copy(update={"window_nll": [v * 1.03 for v in s.window_nll], "nll_nats": s.nll_nats * 1.03})
                for s in dense[corpus.name]]

    monkeypatch.setattr(api, "segment_scores", worse)
    with pytest.raises(BabelpruneError, match=r"No candidate keeps every language within 1.00%: the closest, .* misses in en by \+") as refused:
        api.shrink_to_folder(str(model), LANGS, "1%", tmp_path / "out", corpus=str(corpus), trims=["none", "1"], widths=["none"], **SMALL)
    # The refusal carries every judged candidate (one trim here), each failed, for a caller's table.
    assert [(c.label, c.passed) for c in refused.value.candidates] == [("trim min_count 1", False)]
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out.shrink.sqlite"]  # the scores stay for the next try


def test_fewer_trials_than_candidates_sample_with_tpe_and_resume(tiny, tmp_path, monkeypatch):
    model, corpus, root = tiny
    space = {"trims": ["none", "1", "2"], "widths": ["none", "ffn=0.25"]}  # 5 candidates, 3 trials
    first = api.shrink_to_folder(str(model), LANGS, "5%", tmp_path / "a", corpus=str(corpus), store=tmp_path / "s.sqlite",
                                 trials=3, **space, **SMALL)
    assert first.sampler == "tpe" and 1 <= len(first.candidates) <= 3
    calls = counting(monkeypatch)
    again = api.shrink_to_folder(str(model), LANGS, "5%", tmp_path / "b", corpus=str(corpus), store=tmp_path / "s.sqlite",
                                 trials=3, **space, **SMALL)
    assert calls == [] and [c.label for c in again.candidates] == [c.label for c in first.candidates]


def test_goal_speed_chooses_the_fastest_passing_candidate(tiny, tmp_path):
    model, corpus, _ = tiny
    record = api.shrink_to_folder(str(model), LANGS, "5%", tmp_path / "out", corpus=str(corpus), goal="speed", **SPACE, **SMALL)
    assert record.dense_latency_ms is not None and all(c.latency_ms is not None for c in record.candidates)
    passing = [c for c in record.candidates if c.passed]
    assert record.chosen == min(passing, key=lambda c: c.latency_ms).number


# ----- refusals, before any model is loaded


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the refusal")

    monkeypatch.setattr(api, "load_model", refuse)


@pytest.mark.parametrize("budget", ["0%", "100%", "150%", "-1%", "two"])
def test_a_budget_outside_zero_to_a_hundred_percent_is_refused(tiny, tmp_path, no_loading, budget):
    model, corpus, _ = tiny
    with pytest.raises(BabelpruneError, match="--budget"):
        api.shrink_to_folder(str(model), LANGS, budget, tmp_path / "out", corpus=str(corpus), **SMALL)


@pytest.mark.parametrize("language", ["de", "<b>x</b>", "../x"])
def test_a_language_the_corpus_lacks_is_refused(tiny, tmp_path, no_loading, language):
    model, corpus, _ = tiny
    with pytest.raises(BabelpruneError):
        api.shrink_to_folder(str(model), ["en", language], "2%", tmp_path / "out", corpus=str(corpus), **SMALL)
    assert not any(tmp_path.iterdir())


def test_an_existing_out_is_refused(tiny, tmp_path, no_loading):
    model, corpus, _ = tiny
    (tmp_path / "out").mkdir()
    with pytest.raises(BabelpruneError, match="exists"):
        api.shrink_to_folder(str(model), LANGS, "2%", tmp_path / "out", corpus=str(corpus), **SMALL)


def test_an_out_under_a_file_is_refused(tiny, tmp_path, no_loading):
    model, corpus, _ = tiny
    (tmp_path / "file").write_text("x")
    with pytest.raises(BabelpruneError, match="which is a file"):
        api.shrink_to_folder(str(model), LANGS, "2%", tmp_path / "file" / "out", corpus=str(corpus), **SMALL)


def test_an_out_that_cannot_be_written_is_refused(tiny, tmp_path, no_loading):
    model, corpus, _ = tiny
    locked = read_only_folder(tmp_path)
    with pytest.raises(BabelpruneError, match="cannot be written"):
        api.shrink_to_folder(str(model), LANGS, "2%", locked / "out", corpus=str(corpus), store=tmp_path / "s.sqlite", **SMALL)


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is not None, reason="llama-cpp-python is installed here")
def test_quantization_without_llama_cpp_names_the_extra(tiny, tmp_path, no_loading):
    model, corpus, _ = tiny
    with pytest.raises(BabelpruneError, match=r"llama-cpp-python.*llama"):
        api.shrink_to_folder(str(model), LANGS, "2%", tmp_path / "out", corpus=str(corpus), quants=["none", "Q8_0"], **SMALL)
    assert not any(tmp_path.iterdir())


def test_a_bad_search_space_entry_is_refused(tiny, tmp_path, no_loading):
    model, corpus, _ = tiny
    with pytest.raises(BabelpruneError, match="--widths"):
        api.shrink_to_folder(str(model), LANGS, "2%", tmp_path / "out", corpus=str(corpus), widths=["wings=0.2"], **SMALL)
    with pytest.raises(BabelpruneError, match="--trims"):
        api.shrink_to_folder(str(model), LANGS, "2%", tmp_path / "out", corpus=str(corpus), trims=["often"], **SMALL)


# ----- the command line


def test_the_command_line_end_to_end(tiny, tmp_path, monkeypatch, capsys):
    model, corpus, _ = tiny
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, "shrink", "--model", str(model), "--langs", "en,sw", "--budget", "5%",
                             "--corpus", str(corpus), "--out", "small", "--trims", "none,1", "--widths", "none,ffn=0.25",
                             "--importance", "magnitude", "--segments", "6", "--seq-len", "128", "--samples", "2")
    assert code == 0, err
    assert "Chosen:" in out and "test half, sw" in out
    page = (tmp_path / "small" / "index.html").read_text(encoding="utf-8")
    assert "Every candidate" in page and "figures/" in page
    assert len(list((tmp_path / "small" / "figures").glob("*.png"))) == 2
    assert json.loads((tmp_path / "small" / "shrink.json").read_text())["settings"]["languages"] == ["en", "sw"]
    load_model(str(tmp_path / "small" / "model"))


def test_the_command_line_refuses_a_bad_budget_in_one_sentence(tiny, tmp_path, monkeypatch, capsys):
    model, corpus, _ = tiny
    code, out, err = run_cli(monkeypatch, capsys, "shrink", "--model", str(model), "--langs", "en", "--budget", "120%",
                             "--corpus", str(corpus), "--out", str(tmp_path / "x"))
    assert code != 0 and "--budget" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


# ----- pairing and the page


def test_a_trimmed_candidate_reads_the_same_bytes_item_by_item_so_the_interval_is_paired(searched, tiny, tmp_path):
    model, corpus, _ = tiny
    dense = load_model(str(model))
    trimmed = load_model(str(model))
    api.trim_vocabulary(trimmed, get_corpus(str(corpus)), LANGS)
    held = HeldOutHalf(get_corpus(str(corpus)), "dev")
    before, after = (api.segment_scores(loaded, held, ["fr"], 6, 128)[0] for loaded in (dense, trimmed))
    assert before.window_bytes == after.window_bytes and len(before.window_bytes) == 6


HOSTILE = '<img src=x onerror=alert(1)>/../../x'


def test_language_strings_never_become_markup_or_paths_on_the_page(searched, tmp_path):
    from babelprune.report.html import write_shrink_page

    record, _, _ = searched

    def renamed(item):
        return item.model_copy(update={"language": HOSTILE}) if item.language == "en" else item

    hostile = record.model_copy(update={
        "settings": record.settings.model_copy(update={"languages": [HOSTILE if lang == "en" else lang for lang in record.settings.languages]}),
        "dense_dev": [renamed(score) for score in record.dense_dev],
        "test": [renamed(check) for check in record.test],
        "candidates": [c.model_copy(update={"languages": [renamed(check) for check in c.languages],
                                            "failed_languages": [HOSTILE if lang == "en" else lang for lang in c.failed_languages]})
                       for c in record.candidates],
    })
    page = write_shrink_page(hostile, tmp_path / "page")
    html = page.read_text(encoding="utf-8")
    assert HOSTILE not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    written = [path.relative_to(tmp_path / "page") for path in (tmp_path / "page").rglob("*")]
    assert all(".." not in path.parts for path in written)
    assert sorted(str(path.parent) for path in written if path.suffix == ".png") == ["figures"] * 3
    assert not (tmp_path / "x").exists()


def test_quantizations_join_the_default_space_only_where_llama_cpp_can_write_and_score_them(monkeypatch):
    from babelprune.formats import gguf_quant

    monkeypatch.setattr(gguf_quant, "llama_cpp_bindings", lambda: object())
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "llama_cpp" else None)
    if "runtime" not in __import__("inspect").signature(api.evaluate_model).parameters:
        assert api._default_quants(("none",)) == ("none",)  # it writes a GGUF but cannot score one

    def evaluate_model(model, corpus="bible", languages=None, split="eval", seq_len=256, max_tokens=2048, *, runtime="torch"):
        raise AssertionError("not called")

    monkeypatch.setattr(api, "evaluate_model", evaluate_model)
    assert api._default_quants(("none",)) == ("none", "Q8_0", "Q4_K_M")


def test_a_quantized_candidate_is_written_and_scored_through_the_gguf_scorer(tiny, tmp_path, monkeypatch):
    """llama.cpp stood in for: the export writes a file of 1,000 bytes, the scorer scores the GGUF's source folder in torch
    on the segments and window length the torch candidates read (so the intervals pair)."""
    from types import SimpleNamespace

    from babelprune.formats import gguf_quant

    model, corpus, _ = tiny
    asked = []

    def export_quantized(loaded, path, quant, dtype="f32", matrix=None):
        Path(path).write_bytes(b"G" * 1000)

    def scorer(gguf, tokenizer_folder, held, languages, segments, seq_len):
        asked.append((Path(gguf).name, held.half, segments, seq_len, Path(tokenizer_folder) == Path(gguf).parent))
        return api.segment_scores(load_model(str(tokenizer_folder)), held, languages, segments, seq_len)

    monkeypatch.setattr(gguf_quant, "llama_cpp_bindings", lambda: object())
    monkeypatch.setattr(gguf_quant, "export_quantized", export_quantized)
    monkeypatch.setattr(api, "_gguf_scorer", lambda: scorer)
    record = api.shrink_to_folder(str(model), LANGS, "2%", tmp_path / "out", corpus=str(corpus), trims=["none"], widths=["none"],
                                  quants=["none", "Q8_0"], **SMALL)
    (candidate,) = record.candidates
    assert candidate.label == "Q8_0" and candidate.bytes == 1000 and candidate.passed and record.chosen == candidate.number
    assert asked == [("model.gguf", "dev", 6, SMALL["seq_len"], True), ("model.gguf", "test", 6, SMALL["seq_len"], True)]
    assert (tmp_path / "out" / "model.gguf").stat().st_size == 1000
    load_model(str(tmp_path / "out" / "model"))


def test_a_chosen_model_that_misses_on_the_test_half_is_written_but_the_command_fails(searched, tmp_path, monkeypatch, capsys):
    record, _, _ = searched
    missed = record.model_copy(update={"test_passed": False})
    monkeypatch.setattr(api, "shrink_to_folder", lambda *args, **kwargs: missed)
    model, corpus = tmp_path / "model", tmp_path / "corpus.jsonl"
    code, out, err = run_cli(monkeypatch, capsys, "shrink", "--model", str(model), "--langs", "en,sw", "--budget", "5%",
                             "--corpus", str(corpus), "--out", str(tmp_path / "small"))
    assert code == 1
    assert "Shrunk model written to" in out and "does NOT hold the budget on the test half" in err


def test_the_sweep_report_summary_names_the_chosen_model_links_its_page_and_escapes_every_string(searched, tmp_path):
    from babelprune.report.html_parts import Page
    from babelprune.report.html_shrink import ShrinkSummary, shrink_summary_section

    record, _, _ = searched
    chosen = next(c for c in record.candidates if c.number == record.chosen)
    html = shrink_summary_section(Page(tmp_path), ShrinkSummary(record=record, page=f"../{HOSTILE}/index.html"), "Shrunk")
    assert chosen.label in html and f"{len(record.candidates)} candidates" in html
    assert all(f"<td>{check.language}</td>" in html for check in record.test)  # the test half, one row per language
    assert HOSTILE not in html and 'href="../%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E/../../x/index.html"' in html
    refused = shrink_summary_section(Page(tmp_path), ShrinkSummary(record=None, refusal=f"closest {HOSTILE} misses"), "Shrunk")
    assert "No model was chosen" in refused and HOSTILE not in refused and "&lt;img" in refused


def test_a_quantized_structured_candidate_keeps_one_width_per_block_unless_the_options_say_otherwise():
    """A GGUF file holds one width per tensor kind: the global ranking's uneven widths would be refused by its export."""
    from types import SimpleNamespace

    def config(candidate, options=None):
        bench = SimpleNamespace(structured_options=options or {}, importance="activation")
        return api._ShrinkBench.structured_config(bench, candidate)

    quantized = Candidate(units=("ffn",), sparsity=0.1, quant="Q8_0")
    assert config(quantized).ranking == "per-layer"
    assert config(Candidate(units=("ffn",), sparsity=0.1)).ranking == "global"
    assert config(quantized, {"ranking": "global"}).ranking == "global"


def test_the_chosen_candidate_is_built_once_for_its_dev_and_test_scores_and_its_folder(tiny, tmp_path, monkeypatch):
    model, corpus, _ = tiny
    builds = []
    original = api._ShrinkBench.build

    def counted(self, candidate, folder):
        builds.append(candidate.label())
        return original(self, candidate, folder)

    monkeypatch.setattr(api._ShrinkBench, "build", counted)
    record = api.shrink_to_folder(str(model), LANGS, "50%", tmp_path / "out", corpus=str(corpus), trims=["1"], widths=["none"],
                                  store=tmp_path / "s.sqlite", **SMALL)
    assert record.chosen == 1 and builds == ["trim min_count 1"]
    load_model(str(tmp_path / "out" / "model"))  # the folder moved into place is the whole model
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no work folder is left behind


@pytest.mark.parametrize("text, fields", [
    ("none", {}), ("1", {"min_count": 1}), ("2:30000", {"min_count": 2, "keep_script_rank": 30000}),
    ("1:c20000", {"min_count": 1, "keep_common": 20000}),
    ("1:500:c20", {"min_count": 1, "keep_script_rank": 500, "keep_common": 20}),
])
def test_trim_entries_read_as_candidate_fields(text, fields):
    from babelprune.shrink import parse_trim

    assert parse_trim(text) == fields
    if fields:
        assert Candidate(**fields).trim_label() == text


@pytest.mark.parametrize("text", ["often", "1:c", "1:c5:c6", "0", "1:c0", "1:x3"])
def test_a_malformed_trim_entry_is_one_sentence(text):
    from babelprune.shrink import parse_trim

    with pytest.raises(BabelpruneError, match="--trims entry"):
        parse_trim(text)
