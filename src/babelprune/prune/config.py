"""The one-shot pruning configuration: frozen, validated, serialisable to a dict."""

from __future__ import annotations

import re
from typing import get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from babelprune.choices import (
    CALIB_BATCH,
    Allocation,
    Balance,
    GqaMode,
    Order,
    Ranking,
    RefitDefaults,
    RefitSolver,
    Score,
    Setting,
    Split,
    StructuredImportance,
    StructuredUnit,
)
from babelprune.errors import BabelpruneError
from babelprune.prune.kernels import RIA_EXPONENT, MWandaOptions, check_nm, check_sparsity

_NM = re.compile(r"^(\d+):(\d+)$")


class MWandaConfig(BaseModel):
    """M-Wanda's switchable scoring parts (its third part, CWL, is `allocation='cwl'`).

    Defaults were chosen by the sweep recorded in docs/methods.md.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    language_aware: bool = True  # score by mu_j + alpha * sigma_j over languages
    alpha: float = Field(0.5, ge=0)  # weight of the cross-language spread
    activation_prob: bool = False  # protect features active in all / mainly one language (hurt in the sweep)
    beta: float = Field(1.0, ge=0)  # strength of that protection
    tau: float = Field(1e-2, ge=0)  # |x| above tau counts as active (the FFN down-projection's input: x > 0)
    score: Score = "wanda"  # wanda: |W_ij| * f_j; ria: RIA's relative importance * f_j ** ria_exponent

    def options(self, cwl: bool, lam: float, exponent: float = RIA_EXPONENT) -> MWandaOptions:
        return MWandaOptions(
            language_aware=self.language_aware, alpha=self.alpha, activation_prob=self.activation_prob,
            beta=self.beta, tau=self.tau, cwl=cwl, lam=lam, score=self.score, exponent=exponent,
        )


class ReconstructConfig(BaseModel):
    """Refit of the kept weights after the mask is chosen (babelprune.prune.reconstruct).

    Defaults were chosen on development languages (benchmarks/refit_knobs.py).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    solver: RefitSolver = "pcg"
    damp: float = Field(RefitDefaults.damp, gt=0)  # share of mean(diag H) added to H: larger stays closer to the dense kept weights
    shrink: float = Field(RefitDefaults.shrink, ge=0, le=1)  # 0: the full refit; 1: no refit (the mask method's weight)
    iterations: int = Field(RefitDefaults.iterations, ge=1)  # PCG iterations at most


class PruneConfig(BaseModel):
    """Everything that decides a one-shot pruning run (the calibration data is separate)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    method: str = "wanda"  # a name in babelprune.prune.methods.METHODS
    sparsity: float = 0.5  # target share of zeros in the blocks' linear weights
    pattern: str = "unstructured"  # or "N:M", e.g. "2:4"
    allocation: Allocation = "uniform"  # layer-wise sparsity (cwl is M-Wanda's cross-lingual allocation)
    lam: float = Field(0.08, ge=0, lt=0.5)  # OWL/CWL spread: block sparsities lie in [s - lam, s + lam]
    owl_m: float = Field(5.0, gt=0)  # OWL outlier threshold, in multiples of the block's mean score
    allocation_samples: int = Field(1, ge=1)  # windows per language for the allocation pre-pass (stable from 1: benchmarks/cwl_stability.py)
    setting: Setting = "shared"
    order: Order = "one-pass"
    # Windows per forward (None: all at once). Smaller batches hold fewer activations; the one-pass
    # order runs them in lockstep (babelprune.prune.lockstep), so its result does not depend on it.
    calib_batch: int | None = Field(CALIB_BATCH, ge=1)
    per_row: bool = True  # compare scores within each output row (Wanda); False: whole layer
    damp: float = Field(0.01, gt=0)  # SparseGPT Hessian dampening
    block_size: int = Field(128, ge=1)  # SparseGPT column block
    ria_exponent: float = Field(RIA_EXPONENT, ge=0)  # RIA (and mwanda --score ria): power a of the input norm
    mwanda: MWandaConfig = Field(default_factory=MWandaConfig)
    # How calibration languages count in the statistics and Hessians (babelprune.prune.balance).
    balance: Balance = "languages"
    language_weights: dict[str, float] = Field(default_factory=dict)  # unnamed calibration languages weigh 1
    reconstruct: ReconstructConfig | None = None  # None: keep the mask method's weights
    seed: int = 0

    @field_validator("language_weights")
    @classmethod
    def _positive_weights(cls, value: dict[str, float]) -> dict[str, float]:
        from babelprune.prune.balance import check_language_weights

        return check_language_weights(value)

    @field_validator("sparsity")
    @classmethod
    def _sparsity_in_range(cls, value: float) -> float:
        return check_sparsity(value)

    @field_validator("pattern")
    @classmethod
    def _known_pattern(cls, value: str) -> str:
        if value == "unstructured":
            return value
        match = _NM.match(value)
        if not match:
            raise BabelpruneError(f"Unknown sparsity pattern '{value}'; use 'unstructured' or N:M such as 2:4 or 4:8.")
        check_nm(int(match.group(1)), int(match.group(2)))
        return value

    @model_validator(mode="after")
    def _method_exists(self) -> PruneConfig:
        from babelprune.prune.methods import METHODS

        if self.method not in METHODS:
            raise BabelpruneError(f"Unknown pruning method '{self.method}'; choose one of: {', '.join(METHODS)}.")
        return self

    @model_validator(mode="after")
    def _score_belongs_to_mwanda(self) -> PruneConfig:
        if self.mwanda.score != "wanda" and self.method != "mwanda":
            raise BabelpruneError(
                f"--score {self.mwanda.score} changes M-Wanda's score only, but the method is '{self.method}'; "
                f"use --method mwanda, or --method {self.mwanda.score} for the plain score."
            )
        return self

    @model_validator(mode="after")
    def _weights_need_balance(self) -> PruneConfig:
        if self.language_weights and self.balance == "tokens":
            raise BabelpruneError("--language-weights needs --balance languages: pooled statistics count every token once.")
        return self

    @model_validator(mode="after")
    def _reconstruct_needs_shared(self) -> PruneConfig:
        if self.reconstruct is not None and self.setting == "per-language":
            raise BabelpruneError(
                "--reconstruct refits the weights, but the per-language setting keeps one set of dense weights under "
                "every language's mask; use --setting shared with --reconstruct, or drop --reconstruct."
            )
        return self

    @property
    def nm(self) -> tuple[int, int] | None:
        """(N, M) for an N:M pattern, None for unstructured."""
        match = _NM.match(self.pattern)
        return (int(match.group(1)), int(match.group(2))) if match else None

    @property
    def effective_sparsity(self) -> float:
        """The share of weights an N:M pattern removes, or the unstructured target."""
        return 1 - self.nm[0] / self.nm[1] if self.nm else self.sparsity

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


class StructuredConfig(BaseModel):
    """Everything that decides a structured pruning run (babelprune.prune.structured; the calibration is separate)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    units: list[StructuredUnit]  # what is removed: heads, ffn (neurons), blocks
    importance: StructuredImportance = "gradient"  # how units are ranked
    sparsity: float = 0.5  # share of the blocks' attention and FFN parameters removed
    setting: Setting = "shared"  # per-language: one selection per calibration language over a dense model
    gqa: GqaMode = "query"  # grouped-query attention: remove query heads evenly within groups, or whole groups
    ranking: Ranking = "global"  # rank units over the whole model or within each layer

    @field_validator("units", mode="before")
    @classmethod
    def _units_list(cls, value: object) -> object:
        # "heads,ffn" (the CLI's form) or a list; kept sorted and unique so that equal sets compare equal.
        if isinstance(value, str):
            value = [unit.strip() for unit in value.split(",") if unit.strip()]
        if isinstance(value, (list, tuple, set)):
            unknown = sorted({str(unit) for unit in value} - set(get_args(StructuredUnit)))
            if unknown or not value:
                raise BabelpruneError(
                    f"Unknown structured unit {', '.join(repr(u) for u in unknown) or 'list (empty)'}; "
                    f"give a comma-separated subset of {', '.join(get_args(StructuredUnit))}, e.g. --structured heads,ffn."
                )
            return sorted(set(value))
        return value

    @field_validator("sparsity")
    @classmethod
    def _sparsity_in_range(cls, value: float) -> float:
        return check_sparsity(value)

    @model_validator(mode="after")
    def _magnitude_is_shared(self) -> StructuredConfig:
        if self.importance == "magnitude" and self.setting == "per-language":
            raise BabelpruneError(
                "Magnitude importance uses no data, so it cannot differ per language; use --setting shared or another importance."
            )
        return self

    @property
    def needs_calibration(self) -> bool:
        return self.importance != "magnitude"

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


class TrimConfig(BaseModel):
    """Everything that decides a vocabulary trim (babelprune.prune.vocab), besides any extra text files."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    languages: list[str] | None = None  # None: the 8 default calibration languages the corpus has
    corpus: str = "bible"  # whose text (its `split`) is tokenized to find the tokens to keep
    split: Split = "calib"
    min_count: int = 1  # keep a token only if the text uses it this often
    keep_reserved: bool = True  # keep the reserved placeholder tokens (<unusedN>) the text does not use

    @field_validator("min_count")
    @classmethod
    def _at_least_once(cls, value: int) -> int:
        if value < 1:
            raise BabelpruneError(f"--min-count must be at least 1 (got {value}); 1 keeps every token the text uses.")
        return value

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")
