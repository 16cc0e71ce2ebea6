"""Typed result records: what evaluation, the CLI, the store and reports exchange.

An `EvalResult` is one evaluation of one model on one corpus: a header (which
model, how it was pruned, on what text) and one score per language. Each
result flattens into `MetricRecord` rows (model, method, config, language,
metric, value, count), the long format that sweeps and stores append to.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from babelprune.cache import atomic_write_text
from babelprune.choices import ResourceLevel
from babelprune.errors import BabelpruneError
from babelprune.records.intervals import MIN_ITEMS, bits_per_byte_interval, ratio_interval
from babelprune.records.kernels import SparseKernelRecord

SCHEMA_VERSION = 1


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LanguageMeta(_Record):
    language: str
    name: str
    script: str
    resource: ResourceLevel
    # Per-language setting: the mask of the bank that served this language, its own
    # ("sw") or the one pooled over all calibration languages ("pooled"). None otherwise.
    # Retrieval queries are always embedded under the source language's mask.
    mask: str | None = None


class LMScore(LanguageMeta):
    """Causal-LM quality on one language's text: perplexity and bits per byte."""

    kind: Literal["lm"] = "lm"
    n_windows: int
    n_tokens: int  # predicted tokens (BOS excluded)
    n_bytes: int  # UTF-8 bytes of the scored text
    nll_nats: float  # total negative log-likelihood over the n_tokens
    # Per window, in a fixed order: what the bootstrap resamples (empty in results saved before them).
    window_nll: list[float] = Field(default_factory=list)
    window_bytes: list[int] = Field(default_factory=list)
    # Per segment of text (verse, paragraph), in order: NLL of its tokens (the separator before it included) and
    # its text's bytes. Models whose tokenizers cut the text into different windows pair on these (`paired_parts`).
    segment_nll: list[float] = Field(default_factory=list)
    segment_bytes: list[int] = Field(default_factory=list)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll_nats / self.n_tokens)

    @property
    def bits_per_byte(self) -> float:
        return self.nll_nats / math.log(2) / self.n_bytes

    @property
    def bits_per_byte_interval(self) -> tuple[float, float] | None:
        """95% bootstrap interval over windows (None without per-window figures or with fewer than MIN_ITEMS windows)."""
        return bits_per_byte_interval(self.window_nll, self.window_bytes, self.language)

    def resample_parts(self) -> tuple[list[float], list[float]] | None:
        """Per window (NLL, bytes): the primary metric is a ratio of their sums (None without window data)."""
        return (self.window_nll, [float(b) for b in self.window_bytes]) if len(self.window_nll) >= MIN_ITEMS else None

    def segment_parts(self) -> tuple[list[float], list[float]] | None:
        """Per segment of text (NLL, bytes), None without segment data."""
        return (self.segment_nll, [float(b) for b in self.segment_bytes]) if len(self.segment_nll) >= MIN_ITEMS else None

    @property
    def primary_interval(self) -> tuple[float, float] | None:
        return self.bits_per_byte_interval

    def metrics(self) -> dict[str, tuple[float, int]]:
        return {"bits_per_byte": (self.bits_per_byte, self.n_bytes), "perplexity": (self.perplexity, self.n_tokens)}


class RetrievalScore(LanguageMeta):
    """Encoder quality: top-1 accuracy of retrieving the aligned segment from a source language."""

    kind: Literal["retrieval"] = "retrieval"
    source_language: str
    n_queries: int
    n_correct: int
    # Per query, in a fixed order: whether it was retrieved (empty in results saved before them).
    query_hits: list[bool] = Field(default_factory=list)

    @property
    def top1(self) -> float:
        return self.n_correct / self.n_queries

    def resample_parts(self) -> tuple[list[float], list[float]] | None:
        """Per query (hit, 1): top-1 accuracy is the ratio of their sums (None without per-query data)."""
        return ([float(hit) for hit in self.query_hits], [1.0] * len(self.query_hits)) if len(self.query_hits) >= MIN_ITEMS else None

    @property
    def primary_interval(self) -> tuple[float, float] | None:
        """95% bootstrap interval of top-1 accuracy over queries."""
        parts = self.resample_parts()
        return ratio_interval(*parts, self.language) if parts else None

    def metrics(self) -> dict[str, tuple[float, int]]:
        return {"top1": (self.top1, self.n_queries)}


LanguageScore = Annotated[Union[LMScore, RetrievalScore], Field(discriminator="kind")]

# The metric a report sorts and compares by, and which direction is better.
PRIMARY_METRIC = {"lm": ("bits_per_byte", False), "retrieval": ("top1", True)}


class GgufRunInfo(_Record):
    """What llama.cpp scored: the GGUF file, its quantization, the llama.cpp that ran it and the tokenizer that made the ids."""

    file: str  # the .gguf path as given
    file_type: str  # general.file_type: "F32", "F16", "Q4_K_M"...
    llama_cpp_python: str  # llama-cpp-python's version
    llama_cpp: str | None = None  # the llama.cpp build it wraps, when it says
    tokenizer: str  # the model whose tokenizer made the windows' token ids (alias, folder or hub id)
    kv_cache: str = "f32"  # the key/value cache's type


class ModelInfo(_Record):
    spec: str  # what was loaded: alias, folder or hub id
    architecture: str  # e.g. Gemma3ForCausalLM
    n_parameters: int
    block_sparsity: float  # share of exact zeros in the blocks' linear weights
    # Where it ran and in which floating-point type ("cuda:0", "bfloat16"); None in results saved before they were recorded.
    device: str | None = None
    dtype: str | None = None
    # With --sparse-kernels 2:4: which block linears ran as semi-structured weights, which stayed dense and why.
    sparse_kernels: SparseKernelRecord | None = None
    # What computed the logits: "torch" (the HF model), or "llama.cpp" (a GGUF file, described in `gguf`).
    runtime: Literal["torch", "llama.cpp"] = "torch"
    gguf: GgufRunInfo | None = None


class PruningInfo(_Record):
    """How the evaluated model was obtained from its dense parent ('dense' if it was not pruned)."""

    method: str = "dense"
    sparsity: float = 0.0
    setting: str | None = None  # 'shared' or 'per-language'
    config: dict[str, Any] = Field(default_factory=dict)


class MetricRecord(_Record):
    """One row of the long results table."""

    model: str
    method: str
    sparsity: float
    setting: str | None
    corpus: str
    split: str
    language: str
    resource: ResourceLevel
    metric: str
    value: float
    count: int  # what the metric was averaged over (bytes, tokens, queries)


def now() -> str:
    """The current UTC time, to the second, as ISO 8601 (the `created` field of saved results)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class SavedRecord(_Record):
    """A result saved as one JSON file: atomic save, and a load that explains what is wrong."""

    # What a missing file is called, what the file is, and the command that writes it (for errors).
    MISSING: ClassVar[str] = "result"
    KIND: ClassVar[str] = "result"
    COMMAND: ClassVar[str] = "babelprune"

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False)

    def save(self, path: Path) -> None:
        atomic_write_text(Path(path), self.to_json() + "\n")

    @classmethod
    def _from_payload(cls, payload: Any):
        return cls.model_validate(payload)

    @classmethod
    def _check_version(cls, path: Path, payload: Any) -> None:
        """Refuse a file from a newer babelprune: its fields may mean something this one would misread."""
        field = cls.model_fields.get("schema_version")
        version = payload.get("schema_version") if isinstance(payload, dict) else None
        if field is None or not isinstance(version, int) or isinstance(version, bool) or version <= field.default:
            return
        raise BabelpruneError(
            f"{path} was written by a newer babelprune (schema {version}, this one reads up to {field.default}); "
            "upgrade babelprune to read it."
        )

    @classmethod
    def load(cls, path: Path):
        path = Path(path)
        if not path.is_file():
            raise BabelpruneError(f"No {cls.MISSING} at {path}; give the JSON written by `{cls.COMMAND}`.")
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            cls._check_version(path, payload)
            return cls._from_payload(payload)
        except (json.JSONDecodeError, ValidationError, UnicodeDecodeError, AttributeError) as exc:
            first = str(exc).splitlines()[0]
            raise BabelpruneError(
                f"{path} is not a babelprune {cls.KIND} ({first}); give the JSON written by `{cls.COMMAND}`."
            ) from None


class EvalResult(SavedRecord):
    MISSING: ClassVar[str] = "result file"
    KIND: ClassVar[str] = "evaluation result"
    COMMAND: ClassVar[str] = "babelprune eval"

    schema_version: int = SCHEMA_VERSION
    model: ModelInfo
    pruning: PruningInfo = Field(default_factory=PruningInfo)
    corpus: str
    split: str
    settings: dict[str, Any] = Field(default_factory=dict)  # seq_len, max_tokens, batch_size...
    created: str = Field(default_factory=now)
    seconds: float = 0.0
    scores: list[LanguageScore]

    @property
    def kind(self) -> str:
        return self.scores[0].kind if self.scores else "lm"

    @property
    def primary_metric(self) -> tuple[str, bool]:
        """(metric name, higher is better)."""
        return PRIMARY_METRIC[self.kind]

    def value(self, language: str, metric: str | None = None) -> float:
        metric = metric or self.primary_metric[0]
        for score in self.scores:
            if score.language == language:
                return score.metrics()[metric][0]
        raise KeyError(language)

    def languages(self) -> list[str]:
        return [s.language for s in self.scores]

    def records(self) -> list[MetricRecord]:
        rows = []
        for score in self.scores:
            for metric, (value, count) in score.metrics().items():
                rows.append(
                    MetricRecord(
                        model=self.model.spec,
                        method=self.pruning.method,
                        sparsity=self.pruning.sparsity,
                        setting=self.pruning.setting,
                        corpus=self.corpus,
                        split=self.split,
                        language=score.language,
                        resource=score.resource,
                        metric=metric,
                        value=value,
                        count=count,
                    )
                )
        return rows

    def to_json(self) -> str:
        payload = self.model_dump(mode="json")
        # Derived metrics are written too, for readers that do not use this class.
        for raw, score in zip(payload["scores"], self.scores):
            raw["metrics"] = {name: value for name, (value, _) in score.metrics().items()}
            interval = score.primary_interval
            if interval is not None:
                raw["metrics"][f"{PRIMARY_METRIC[score.kind][0]}_ci95"] = list(interval)
        return json.dumps(payload, indent=2, ensure_ascii=False)

    @classmethod
    def _from_payload(cls, payload: Any) -> EvalResult:
        for raw in payload.get("scores", []):
            raw.pop("metrics", None)
        return cls.model_validate(payload)


def is_eval_result_file(path: Path) -> bool:
    """Whether `path` holds a JSON object shaped as `babelprune eval --out` writes it (so --overwrite may replace it)."""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(payload, dict) and {"schema_version", "model", "corpus", "scores"} <= payload.keys()


def paired_parts(before, after) -> tuple[tuple | None, tuple | None]:
    """The items a change from score `before` to score `after` of one language resamples, paired where they can be.

    Windows when both scored the same windows (equal bytes window by window).
    Otherwise, for LM scores, the text's segments when both scored the same
    segments: a trimmed vocabulary cuts the text into other windows, but the
    verses are the same, so the change is still paired, segment by segment.
    Otherwise each score's own windows, which `relative_change_replicates`
    draws apart (a wider interval).
    """
    first, second = before.resample_parts(), after.resample_parts()
    if first is None or second is None or list(first[1]) == list(second[1]):
        return first, second
    if isinstance(before, LMScore) and isinstance(after, LMScore):
        by_segment = before.segment_parts(), after.segment_parts()
        if by_segment[0] is not None and by_segment[1] is not None and list(by_segment[0][1]) == list(by_segment[1][1]):
            return by_segment
    return first, second


def resampled_paired(before, after) -> bool:
    """Whether a change from score `before` to score `after` of one language is resampled paired (`paired_parts`)."""
    first, second = paired_parts(before, after)
    return first is not None and second is not None and list(first[1]) == list(second[1])
