"""`babelprune report`: the HTML page from a store filled by hand (tests/report_store.py), its tables, values and refusals."""

from __future__ import annotations

import math
import statistics
from html.parser import HTMLParser
from pathlib import Path

import pytest

from babelprune.errors import BabelpruneError
from babelprune.report import html as report_html
from babelprune.report.html import mask_section, speed_section, write_report
from babelprune.report.html_parts import Page
from babelprune.report.runs import describe, eval_set_view
from babelprune.sweep.store import ResultsStore, RunRecord
from tests import report_store as made
from tests.cli_runner import run_cli

LN2 = math.log(2)
BYTES = sum(made.WINDOW_BYTES)


# --------------------------------------------------------------------------- reading the page back


class Tables(HTMLParser):
    """Every <table data-name=...>: its header and body rows; a cell is (text, data-sort, whether it is marked n.s.)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict] = {}
        self.images: list[str] = []
        self._table = self._cell = None
        self._in_body = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("data-name", f"unnamed {len(self.tables)}"),
                                                 {"header": [], "rows": [], "sortable": "sortable" in (attrs.get("class") or "")})
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._table is not None and self._in_body:
            self._table["rows"].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = {"text": "", "sort": attrs.get("data-sort"), "ns": False, "header": tag == "th"}
        elif tag == "span" and self._cell is not None and attrs.get("class") == "ns":
            self._cell["ns"] = True
        elif tag == "img":
            self.images.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            cell, self._cell = self._cell, None
            if cell["header"]:
                self._table["header"].append(cell["text"].strip())
            else:
                self._table["rows"][-1].append((cell["text"].strip(), cell["sort"], cell["ns"]))
        elif tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data


def parse(page: Path) -> Tables:
    parser = Tables()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def column(table: dict, name: str) -> int:
    return table["header"].index(name)


def row_of(table: dict, first: str) -> list[tuple]:
    return next(row for row in table["rows"] if row[0][0] == first)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    store = made.write_store(folder / "runs.sqlite", made.full_records())
    return write_report(store, folder / "out")


@pytest.fixture(scope="module")
def tables(report) -> dict[str, dict]:
    return parse(report).tables


# --------------------------------------------------------------------------- the page


def test_the_page_and_its_figures_are_written_and_every_figure_is_used(report):
    assert report.name == "index.html" and report.is_file()
    images = parse(report).images
    files = sorted(p.relative_to(report.parent).as_posix() for p in (report.parent / "figures").iterdir())
    assert sorted(images) == files and len(files) >= 6
    assert all((report.parent / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in files)
    assert not [p for p in report.parent.parent.iterdir() if ".partial-" in p.name]


def test_the_page_needs_no_network(report):
    text = report.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text and "//cdn" not in text
    assert "default-src 'none'" in text  # the page's own policy refuses any other source


def test_each_table_has_the_expected_rows(tables):
    assert {name: len(table["rows"]) for name, table in tables.items()} == made.expected_rows()
    assert all(table["sortable"] for table in tables.values())


def test_dense_bits_per_byte_and_a_pruned_change_are_the_hand_computed_ones(tables):
    dense_sw = sum(made.DENSE_NLL["sw"]) / LN2 / BYTES
    dense = tables["dense bible"]
    assert row_of(dense, "sw")[column(dense, "bits/byte")][0] == f"{dense_sw:.3f}"
    change = tables["change bible 50%"]
    text, sort, not_resolved = row_of(change, "sw")[column(change, "wanda 50%")]
    # Every Swahili window's NLL times 1.3: bits per byte 1.3 times the dense, +30.0%, on every resample.
    assert text == f"{1.3 * dense_sw:.3f} (+30.0% [+30.0, +30.0])"
    assert float(sort) == pytest.approx(30.0) and not not_resolved


def test_a_change_whose_interval_contains_zero_is_marked_not_resolved(tables):
    change = tables["change bible 70%"]
    en = row_of(change, "en")
    relative = sum(d * f for d, f in zip(made.DENSE_NLL["en"], made.EN_ALTERNATING)) / sum(made.DENSE_NLL["en"]) - 1
    for name in ("wanda 70%", "mwanda 70%"):
        text, sort, not_resolved = en[column(change, name)]
        assert not_resolved and float(sort) == pytest.approx(100 * relative)
    assert not row_of(change, "fr")[column(change, "wanda 70%")][2]


def _mean_change(factors: dict[str, float]) -> float:
    en = sum(d * f for d, f in zip(made.DENSE_NLL["en"], made.EN_ALTERNATING)) / sum(made.DENSE_NLL["en"]) - 1
    return statistics.fmean([en, *(factor - 1 for factor in factors.values())])


def test_the_summary_holds_each_runs_mean_change_and_worst_language(tables):
    summary = tables["summary bible"]
    for (method, sparsity), factors in made.FACTORS.items():
        row = row_of(summary, f"{method} {sparsity:.0%}")
        assert row[column(summary, "mean change")][0].startswith(f"{100 * _mean_change(factors):+.1f}% [")
        worst = max(factors, key=factors.get)
        assert row[column(summary, "worst language")][0].startswith(f"{worst} {100 * (factors[worst] - 1):+.1f}%")


def test_the_curve_table_has_one_line_per_configuration(tables):
    curves = tables["curves bible"]
    methods = [row[0][0] for row in curves["rows"]]
    # The per-language wanda runs differ from the shared ones in their setting, so the setting names the lines.
    assert sorted(set(methods)) == ["mwanda", "wanda (setting=per-language)", "wanda (setting=shared)"]
    sparsities = [(row[0][0], row[column(curves, "sparsity (%)")][0]) for row in curves["rows"]]
    assert ("mwanda", "50") in sparsities and ("mwanda", "70") in sparsities


def test_the_curves_carry_every_languages_hand_computed_change():
    from babelprune.report.runs import sparsity_curves

    view = eval_set_view("bible", made.core_records())
    curves = {curve.label: curve for group in view.groups for curve in sparsity_curves(group.runs)}
    wanda = curves["wanda"]
    assert [point.sparsity for point in wanda.points] == [0.5, 0.7]
    for point in wanda.points:
        factors = made.FACTORS[("wanda", point.sparsity)]
        changes = {language: (resource, degradation) for language, resource, degradation in point.languages}
        assert set(changes) == {"en", "fr", "sw", "yo"}
        # every window's NLL times the factor: bits per byte scale by it, so the change is factor - 1
        for language, factor in factors.items():
            assert changes[language][1] == pytest.approx(factor - 1)
        assert changes["sw"][0] == "low" and changes["fr"][0] == "high"


def test_resource_levels_average_their_languages(tables):
    resource = tables["resource bible"]
    factors = made.FACTORS[("wanda", 0.5)]
    low = statistics.fmean([factors["sw"] - 1, factors["yo"] - 1])
    assert row_of(resource, "wanda 50%")[column(resource, "low resource")][0].startswith(f"{100 * low:+.1f}% [")
    assert resource["header"][2:4] == ["high resource", "low resource"]


def test_method_against_method_gives_the_hand_computed_mean_increases(tables):
    contest = tables["contest bible"]

    def mean_increase(factors):
        increases = [(sum(made.pruned_nll(lang, factors)) - sum(made.DENSE_NLL[lang])) / LN2 / BYTES for lang in made.DENSE_NLL]
        return statistics.fmean(increases)

    row = next(r for r in contest["rows"] if r[column(contest, "candidate")][0] == "mwanda 70%")
    assert row[column(contest, "baseline")][0] == "wanda 70%"
    assert row[column(contest, "baseline mean increase")][0] == f"{mean_increase(made.FACTORS[('wanda', 0.7)]):+.4f}"
    assert row[column(contest, "candidate mean increase")][0] == f"{mean_increase(made.FACTORS[('mwanda', 0.7)]):+.4f}"
    assert row[column(contest, "verdict (mean)")][0] == "mwanda 70%"


def test_overlap_speed_and_fine_tuning_tables_hold_the_records_values(tables):
    overlap = tables["overlap wanda per-language 50%"]
    assert row_of(overlap, "en")[column(overlap, "sw")][0] == "0.62"
    measurements = tables["measurements"]
    assert row_of(measurements, "dense")[column(measurements, "tokens per second")][0] == "500.00"
    languages = tables[f"finetune languages {made.FINETUNE_TITLE}"]
    en = [made.FINETUNE_VALUES[0.0]["en"] + 0.01 * seed for seed in (0, 1)]
    assert row_of(languages, "en")[column(languages, "dense")][0] == f"{statistics.fmean(en):.3f} ± {statistics.stdev(en):.3f}"


def test_failed_run_is_listed_with_its_error(tables):
    failed = tables["failed"]
    row = failed["rows"][0]
    assert row[column(failed, "key")][0] == "fail0001"
    assert row[column(failed, "label")][0] == made.EVIL_LABEL
    assert row[column(failed, "error")][0] == made.FAILED_ERROR


def test_strings_from_the_store_are_escaped(report):
    text = report.read_text(encoding="utf-8")
    assert text.count("<script") == 1  # the page's own sorting script, and no label's
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in text
    assert "&lt;b&gt;&amp;&lt;/b&gt;" in text and "<b>&</b>" not in text
    assert "demo &amp; co" in text


# --------------------------------------------------------------------------- sections without data


def test_without_per_language_masks_the_page_says_so(tmp_path):
    text = mask_section(Page(tmp_path), made.core_records()[:-1])
    assert "No run in this store has per-language masks" in text


def test_per_language_masks_without_overlap_data_are_named(tmp_path):
    bare = made.pruned_record("wanda", 0.5, made.PER_LANGUAGE_FACTORS, 7, setting="per-language", label="bank run")
    text = mask_section(Page(tmp_path), [made.dense_record(), bare])
    assert "Per-language masks were used by 1 run (bank run)" in text and "<img" not in text


def test_without_measurements_the_speed_section_says_so(tmp_path):
    runs = [record.model_copy(update={"measurements": {}}) for record in made.core_records()]
    assert "records measurements of speed or size" in speed_section(Page(tmp_path), runs)


def test_a_run_measured_differently_is_listed_not_compared():
    other = made.pruned_record("wanda", 0.5, made.FACTORS[("wanda", 0.5)], 8)
    result = other.evaluations["bible"]
    other = other.model_copy(update={"evaluations": {"bible": result.model_copy(update={"settings": {"seq_len": 32}})}})
    view = eval_set_view("bible", [made.dense_record(), other])
    assert view.groups[0].runs == []
    assert "measured the same way" in view.unmatched[0][1]


def test_a_record_missing_its_configuration_is_described_without_guessing():
    bare = RunRecord(key="k", sweep="s", kind="trim", label="trimmed", config={}, state="done")
    info = describe(bare)
    assert (info.method, info.sparsity, info.setting, info.model, info.amount) == ("trim", None, None, None, "-")


# --------------------------------------------------------------------------- the command and its refusals


@pytest.fixture
def store(tmp_path) -> Path:
    """A small store (a dense run and a failed one): the page has two figures, so these tests stay quick."""
    return made.write_store(tmp_path / "runs.sqlite", [made.dense_record(), made.failed_record()])


def _one_line(code: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_the_command_writes_the_page(monkeypatch, capsys, tmp_path, store):
    code, out, err = run_cli(monkeypatch, capsys, "report", str(store), "--out", str(tmp_path / "page"))
    assert code == 0, err
    assert "Report written to" in out and (tmp_path / "page" / "index.html").is_file()


def test_an_existing_out_is_refused_and_left_alone(monkeypatch, capsys, tmp_path, store):
    (tmp_path / "page").mkdir()
    (tmp_path / "page" / "mine.txt").write_text("keep")
    code, _, err = run_cli(monkeypatch, capsys, "report", str(store), "--out", str(tmp_path / "page"))
    assert "--overwrite" in _one_line(code, err)
    code, _, err = run_cli(monkeypatch, capsys, "report", str(store), "--out", str(tmp_path / "page"), "--overwrite")
    assert "not a folder written by `babelprune report`" in _one_line(code, err)
    assert [p.name for p in (tmp_path / "page").iterdir()] == ["mine.txt"]


def test_overwrite_replaces_an_earlier_report(tmp_path, store):
    page = write_report(store, tmp_path / "page")
    (page.parent / "figures" / "stale.png").write_bytes(b"old")
    write_report(store, tmp_path / "page", overwrite=True)
    assert page.is_file() and not (page.parent / "figures" / "stale.png").exists()


@pytest.mark.parametrize(("make", "expected"), [
    (lambda path: None, "No results store"),
    (lambda path: path.write_text("notes\n" * 100), "not a babelprune results store"),
    (lambda path: ResultsStore(path).close(), "holds no finished runs"),
])
def test_a_store_that_cannot_be_reported_on_is_one_sentence(monkeypatch, capsys, tmp_path, make, expected):
    path = tmp_path / "runs.sqlite"
    make(path)
    code, _, err = run_cli(monkeypatch, capsys, "report", str(path), "--out", str(tmp_path / "page"))
    assert expected in _one_line(code, err)
    assert not (tmp_path / "page").exists()


def test_an_error_while_writing_leaves_nothing(monkeypatch, tmp_path, store):
    def broken(*args, **kwargs):
        raise BabelpruneError("the disk went away")

    monkeypatch.setattr(report_html, "speed_section", broken)
    with pytest.raises(BabelpruneError, match="disk went away"):
        write_report(store, tmp_path / "page")
    assert not (tmp_path / "page").exists()
    assert not [p.name for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_a_store_of_failed_runs_only_still_gets_a_page_that_lists_them(tmp_path):
    store = made.write_store(tmp_path / "runs.sqlite", [made.failed_record()])
    page = parse(write_report(store, tmp_path / "page"))
    assert page.images == []
    assert len(page.tables["failed"]["rows"]) == 1 and len(page.tables["runs"]["rows"]) == 1
