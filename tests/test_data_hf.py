"""HFDatasetCorpus on a tiny local dataset folder (configs declared in README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from babelprune.data import hf
from babelprune.data.hf import HFDatasetCorpus, config_to_language
from babelprune.errors import BabelpruneError

FIXTURE = Path(__file__).parent / "fixtures" / "hf_tiny"


@pytest.mark.parametrize(
    ("code", "key"),
    [
        ("eng_Latn", "en"),
        ("zho_Hans", "zh"),
        ("zho_Hant", "zh-Hant"),
        ("kor_Hang", "ko"),
        ("jpn_Jpan", "ja"),
        ("srp_Cyrl", "sr"),
        ("srp_Latn", "sr-Latn"),
        ("arb_Arab", "ar"),
        ("ace_Arab", "ace-Arab"),
        ("default", "default"),
    ],
)
def test_config_to_language(code: str, key: str) -> None:
    assert config_to_language(code) == key


def test_discovers_configs_and_maps_them(tmp_path: Path) -> None:
    corpus = HFDatasetCorpus(str(FIXTURE), cache_dir=str(tmp_path))
    assert corpus.languages() == ["en", "fr", "zh-Hant"]
    assert corpus.config("zh-Hant") == "zho_Hant"
    assert corpus.name == f"hf:{FIXTURE}"


def test_rows_become_aligned_segments(tmp_path: Path) -> None:
    corpus = HFDatasetCorpus(str(FIXTURE), languages=["eng_Latn", "fra_Latn"], group_size=1, cache_dir=str(tmp_path))
    assert corpus.languages() == ["en", "fr"]
    segments = corpus.segments("fr")
    assert [(s.key, s.group, s.text) for s in segments] == [
        ("1", "rows 0", "Le chat dort."),
        ("2", "rows 1", "Le chien court."),
        ("3", "rows 2", "Les oiseaux chantent."),
        ("4", "rows 3", "Il pleut."),
    ]
    for split in ("calib", "eval"):
        en_keys = [s.key for s in corpus.segments("en", split)]
        assert en_keys == [s.key for s in corpus.segments("fr", split)]
        assert en_keys
    assert not {s.key for s in corpus.segments("en", "calib")} & {s.key for s in corpus.segments("en", "eval")}


def test_default_group_size_puts_small_sets_in_one_group(tmp_path: Path) -> None:
    corpus = HFDatasetCorpus(str(FIXTURE), languages=["eng_Latn"], cache_dir=str(tmp_path))
    assert {s.group for s in corpus.segments("en")} == {"rows 0"}


def test_keys_fall_back_to_row_index(tmp_path: Path) -> None:
    corpus = HFDatasetCorpus(str(FIXTURE), languages=["eng_Latn"], id_field=None, cache_dir=str(tmp_path))
    assert [s.key for s in corpus.segments("en")] == ["0", "1", "2", "3"]


def test_missing_config_is_one_sentence(tmp_path: Path) -> None:
    corpus = HFDatasetCorpus(str(FIXTURE), languages=["deu_Latn"], cache_dir=str(tmp_path))
    with pytest.raises(BabelpruneError, match="Cannot load config 'deu_Latn' split 'devtest'"):
        corpus.segments("de")


def test_missing_split_is_one_sentence(tmp_path: Path) -> None:
    corpus = HFDatasetCorpus(str(FIXTURE), languages=["eng_Latn"], split="dev", cache_dir=str(tmp_path))
    with pytest.raises(BabelpruneError, match="split 'dev'.*Unknown split"):
        corpus.segments("en")


def test_missing_text_field_lists_columns(tmp_path: Path) -> None:
    corpus = HFDatasetCorpus(str(FIXTURE), languages=["eng_Latn"], text_field="sentence", cache_dir=str(tmp_path))
    with pytest.raises(BabelpruneError, match="no field 'sentence'; pass text_field= one of: id, text"):
        corpus.segments("en")


def test_template_must_have_placeholder() -> None:
    with pytest.raises(BabelpruneError, match="no '\\{lang\\}' placeholder"):
        HFDatasetCorpus(str(FIXTURE), config_template="flores")


def test_unreachable_dataset_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeDatasets:
        @staticmethod
        def get_dataset_config_names(name: str) -> list[str]:
            raise ConnectionError(f"Couldn't reach '{name}' on the Hub\nmore detail")

    monkeypatch.setattr(hf, "_import_datasets", lambda: FakeDatasets)
    with pytest.raises(BabelpruneError, match=r"Cannot list the configs of dataset 'org/set' \(Couldn't reach 'org/set' on the Hub\)"):
        HFDatasetCorpus("org/set")
