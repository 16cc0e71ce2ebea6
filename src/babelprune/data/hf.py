"""A corpus from a Hugging Face `datasets` dataset with one configuration per language.

This fits FLORES-style sets, where configuration ``eng_Latn`` holds the
English sentences and every configuration has the same rows in the same
order. Loading goes through ``datasets.load_dataset(dataset, config)``, so
``dataset`` may be a hub name (when the hub is reachable or cached) or a
local folder: e.g. a folder whose README.md YAML header declares
``configs:`` with ``data_files`` per configuration.

Configuration codes become babelprune language keys: ``eng_Latn`` -> 'en',
``zho_Hans`` -> 'zh', ``zho_Hant`` -> 'zh-Hant', ``srp_Latn`` -> 'sr-Latn'
(an ISO 639-3 code with an ISO 639-1 equivalent is shortened, and the script
is kept only when it is not the language's usual one); other codes keep their
ISO 639-3 code and script (``ace_Arab`` -> 'ace-Arab').

Rows are grouped by position, in blocks of ``group_size`` rows, so that row
``i`` falls in the same split in every language of an aligned set.
"""

from __future__ import annotations

import re
from typing import Any

from babelprune.data.corpus import Corpus, Segment
from babelprune.data.languages import language_info
from babelprune.errors import BabelpruneError
from babelprune.names import check_language_code

# ISO 639-3 (and a few macro-language or FLORES codes) -> ISO 639-1, for the
# languages babelprune has metadata for.
ISO3_TO_ISO1: dict[str, str] = {
    "afr": "af", "amh": "am", "ara": "ar", "arb": "ar", "aze": "az", "azj": "az",
    "bel": "be", "ben": "bn", "bul": "bg", "cat": "ca", "ces": "cs", "cmn": "zh",
    "cym": "cy", "dan": "da", "deu": "de", "ekk": "et", "ell": "el", "eng": "en",
    "est": "et", "eus": "eu", "fas": "fa", "fin": "fi", "fra": "fr", "gle": "ga",
    "glg": "gl", "grn": "gn", "guj": "gu", "hat": "ht", "hau": "ha", "heb": "he",
    "hin": "hi", "hrv": "hr", "hun": "hu", "hye": "hy", "ibo": "ig", "ind": "id",
    "isl": "is", "ita": "it", "jav": "jv", "jpn": "ja", "kan": "kn", "kat": "ka",
    "kaz": "kk", "khk": "mn", "khm": "km", "kor": "ko", "lao": "lo", "lav": "lv",
    "lit": "lt", "lvs": "lv", "mal": "ml", "mar": "mr", "mlt": "mt", "mon": "mn",
    "msa": "ms", "mya": "my", "nep": "ne", "nld": "nl", "nob": "nb", "nor": "no",
    "npi": "ne", "pan": "pa", "pes": "fa", "pol": "pl", "por": "pt", "que": "qu",
    "quy": "qu", "ron": "ro", "rus": "ru", "sin": "si", "slk": "sk", "slv": "sl",
    "som": "so", "spa": "es", "srp": "sr", "swa": "sw", "swe": "sv", "swh": "sw",
    "tam": "ta", "tel": "te", "tgl": "tl", "tha": "th", "tur": "tr", "ukr": "uk",
    "urd": "ur", "uzb": "uz", "uzn": "uz", "vie": "vi", "xho": "xh", "yor": "yo",
    "zho": "zh", "zsm": "ms", "zul": "zu",
}  # fmt: skip

# Scripts that name the same writing system for our purpose (ISO 15924 has
# both a composite code and its parts).
_SAME_SCRIPT = {"Hang": "Kore", "Jpan": "Jpan", "Hira": "Jpan", "Kana": "Jpan"}

_CONFIG_CODE = re.compile(r"^([a-z]{2,3})[_-]([A-Z][a-z]{3})$")


def config_to_language(config_code: str) -> str:
    """Babelprune language key for a dataset code such as 'eng_Latn' (see module docstring)."""
    match = _CONFIG_CODE.match(config_code)
    if not match:
        return config_code
    iso3, script = match.groups()
    base = ISO3_TO_ISO1.get(iso3)
    if base is None:
        return f"{iso3}-{script}"
    usual = language_info(base).script
    if _SAME_SCRIPT.get(script, script) == _SAME_SCRIPT.get(usual, usual):
        return base
    return f"{base}-{script}"


class HFDatasetCorpus(Corpus):
    """Rows of a `datasets` dataset, one configuration per language, aligned by row."""

    name = "hf"

    def __init__(
        self,
        dataset: str,
        languages: list[str] | None = None,
        config_template: str = "{lang}",
        split: str = "devtest",
        text_field: str = "text",
        id_field: str | None = "id",
        group_size: int = 10,
        cache_dir: str | None = None,
        **load_kwargs: Any,
    ) -> None:
        """`languages` are the codes put into `config_template` ('eng_Latn'); None = all configs."""
        if "{lang}" not in config_template:
            raise BabelpruneError(
                f"The config template '{config_template}' has no '{{lang}}' placeholder: "
                "write it like 'flores.{lang}'."
            )
        if group_size < 1:
            raise BabelpruneError(f"group_size must be at least 1, not {group_size}.")
        self.dataset = dataset
        self.name = f"hf:{dataset}"
        self.config_template = config_template
        self.split = split
        self.text_field = text_field
        self.id_field = id_field
        self.group_size = group_size
        self.cache_dir = cache_dir
        self.load_kwargs = load_kwargs
        codes = list(languages) if languages is not None else self._discover_codes()
        self._configs = _language_keys(codes, config_template, dataset)
        self._cache: dict[str, list[Segment]] = {}

    def languages(self) -> list[str]:
        return sorted(self._configs)

    def config(self, lang: str) -> str:
        """The dataset configuration that holds `lang`."""
        self.check_languages([lang])
        return self._configs[lang]

    def _segments(self, lang: str) -> list[Segment]:
        if lang not in self._cache:
            self._cache[lang] = self._load(self.config(lang))
        return self._cache[lang]

    def _load(self, config: str) -> list[Segment]:
        datasets = _import_datasets()
        try:
            rows = datasets.load_dataset(
                self.dataset, config, split=self.split, cache_dir=self.cache_dir, **self.load_kwargs
            )
        except Exception as error:  # datasets raises many types; all mean "cannot load"
            raise BabelpruneError(
                f"Cannot load config '{config}' split '{self.split}' of dataset '{self.dataset}' "
                f"({_first_line(error)}): check the name, config and split, and that the "
                "dataset is local or cached when offline."
            ) from None
        columns = list(rows.column_names)
        if self.text_field not in columns:
            raise BabelpruneError(
                f"Dataset '{self.dataset}' config '{config}' has no field '{self.text_field}'; "
                f"pass text_field= one of: {', '.join(columns)}."
            )
        has_id = self.id_field is not None and self.id_field in columns
        segments = []
        for index, row in enumerate(rows):
            text = row[self.text_field]
            if not isinstance(text, str) or not text.strip():
                continue
            key = str(row[self.id_field]) if has_id else str(index)
            segments.append(Segment(key, f"rows {index // self.group_size}", text.strip()))
        return segments

    def _discover_codes(self) -> list[str]:
        datasets = _import_datasets()
        try:
            configs = datasets.get_dataset_config_names(self.dataset, **self.load_kwargs)
        except Exception as error:
            raise BabelpruneError(
                f"Cannot list the configs of dataset '{self.dataset}' ({_first_line(error)}): "
                "check the name, or pass languages= explicitly."
            ) from None
        pattern = re.compile(
            "^" + re.escape(self.config_template).replace(re.escape("{lang}"), "(.+)") + "$"
        )
        codes = [m.group(1) for m in map(pattern.match, configs) if m]
        if not codes:
            raise BabelpruneError(
                f"No config of dataset '{self.dataset}' matches the template "
                f"'{self.config_template}' (configs: {', '.join(configs[:10])}): "
                "pass config_template= or languages=."
            )
        return codes


def _language_keys(codes: list[str], template: str, dataset: str = "") -> dict[str, str]:
    """{language key: config name}; a code whose key is taken keeps its own code as key.

    Keys are checked for the language-code form: they come from the dataset (or the
    caller) and become folder names downstream.
    """
    configs: dict[str, str] = {}
    for code in codes:
        where = f"(config {code!r} of dataset '{dataset}')" if dataset else f"(config {code!r})"
        fix = "pass languages= (and config_template=) so that every code has that form"
        key = check_language_code(config_to_language(check_language_code(code, where, fix)), where, fix)
        if key in configs:
            key = code
        configs[key] = template.format(lang=code)
    return configs


def _import_datasets() -> Any:
    try:
        import datasets
    except ModuleNotFoundError:
        raise BabelpruneError(
            "Hugging Face corpora need the datasets package: run `pip install datasets`."
        ) from None
    return datasets


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
