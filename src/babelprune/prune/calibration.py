"""Per-language calibration samples: fixed-length token windows from each language's calibration split."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import PreTrainedTokenizerBase

from babelprune.data.corpus import Corpus
from babelprune.errors import BabelpruneError
from babelprune.evaluate.windows import SEPARATOR, start_token_id

# Segments tokenized at a time while filling a language's token stream.
_TOKENIZE_CHUNK = 64


class CalibrationSpec(BaseModel):
    """Which calibration windows to build (babelprune.api.calibrate): a command's --calib options, a sweep's `calibration`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    corpus: str = "bible"
    languages: list[str] | None = None  # None: the 8 default calibration languages the corpus has
    samples: int = Field(8, ge=1)  # windows per language
    seq_len: int = Field(256, ge=2)
    seed: int = 0


@dataclass(frozen=True)
class Calibration:
    """N windows of T tokens, each labelled with its language; rows of one language are contiguous."""

    ids: torch.Tensor  # (N, T) token ids, BOS first
    languages: tuple[str, ...]  # length N: the language of each row
    corpus: str

    @property
    def language_set(self) -> list[str]:
        return list(dict.fromkeys(self.languages))

    def rows(self) -> dict[str, torch.Tensor]:
        """Row indices (as a LongTensor) of each language."""
        return {
            lang: torch.tensor([i for i, row_lang in enumerate(self.languages) if row_lang == lang], dtype=torch.long, device=self.ids.device)
            for lang in self.language_set
        }

    def subset(self, languages: list[str] | None = None, per_language: int | None = None) -> Calibration:
        """The rows of some languages, at most `per_language` of each."""
        keep = []
        for lang, rows in self.rows().items():
            if languages is None or lang in languages:
                keep.extend(rows.tolist()[:per_language])
        return Calibration(self.ids[keep], tuple(self.languages[i] for i in keep), self.corpus)

    def split_holdout(self, per_language: int) -> tuple[Calibration, Calibration]:
        """(the windows to prune with, the last `per_language` windows of each language, held out)."""
        fit, held = [], []
        for lang, rows in self.rows().items():
            if len(rows) <= per_language:
                raise BabelpruneError(
                    f"Language '{lang}' has {len(rows)} calibration windows, too few to hold {per_language} out; "
                    "raise --samples or lower --holdout-samples."
                )
            fit.extend(rows.tolist()[:-per_language])
            held.extend(rows.tolist()[-per_language:])
        pick = lambda keep: Calibration(self.ids[keep], tuple(self.languages[i] for i in keep), self.corpus)  # noqa: E731
        return pick(fit), pick(held)

    def describe(self) -> dict:
        return {
            "corpus": self.corpus,
            "languages": self.language_set,
            "samples_per_language": {lang: len(rows) for lang, rows in self.rows().items()},
            "seq_len": int(self.ids.shape[1]),
            "tokens": int(self.ids.numel()),
        }


def language_windows(
    tokenizer: PreTrainedTokenizerBase, corpus: Corpus, lang: str, samples: int, seq_len: int, seed: int
) -> torch.Tensor:
    """`samples` windows (samples, seq_len) of one language: BOS + consecutive tokens of its calibration text.

    Groups (chapters, articles) are visited in a seeded random order, so the
    windows come from across the whole calibration split.
    """
    segments = corpus.segments(lang, "calib")
    groups = sorted({s.group for s in segments})
    random.Random(f"{seed}:{lang}").shuffle(groups)
    rank = {group: i for i, group in enumerate(groups)}
    texts = [s.text for s in sorted(segments, key=lambda s: rank[s.group])]  # stable: keeps order inside a group
    needed = samples * (seq_len - 1)
    stream: list[int] = []
    separator = tokenizer(SEPARATOR, add_special_tokens=False)["input_ids"]
    for start in range(0, len(texts), _TOKENIZE_CHUNK):
        for ids in tokenizer(texts[start : start + _TOKENIZE_CHUNK], add_special_tokens=False)["input_ids"]:
            stream.extend(ids + separator)
        if len(stream) >= needed:
            break
    if len(stream) < needed:
        raise BabelpruneError(
            f"Language '{lang}' has only {len(stream)} calibration tokens in corpus '{corpus.name}', "
            f"{needed} are needed; lower --samples or --seq-len, or drop the language."
        )
    body = torch.tensor(stream[:needed]).reshape(samples, seq_len - 1)
    bos = torch.full((samples, 1), start_token_id(tokenizer))
    return torch.cat([bos, body], dim=1)


def build_calibration(
    tokenizer: PreTrainedTokenizerBase,
    corpus: Corpus,
    languages: list[str],
    samples_per_language: int = 8,
    seq_len: int = 256,
    seed: int = 0,
) -> Calibration:
    """Balanced calibration: the same number of windows for every language."""
    if samples_per_language < 1 or seq_len < 2:
        raise BabelpruneError("Calibration needs at least 1 sample per language and windows of at least 2 tokens.")
    languages = corpus.check_languages(languages)
    blocks = [language_windows(tokenizer, corpus, lang, samples_per_language, seq_len, seed) for lang in languages]
    labels = tuple(lang for lang in languages for _ in range(samples_per_language))
    return Calibration(torch.cat(blocks), labels, corpus.name)
