"""The one-shot pruning configuration: frozen, validated, serialisable to a dict."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_serializer, model_validator

from babelprune.choices import (
    CALIB_BATCH,
    Allocation,
    Balance,
    GqaMode,
    Order,
    Ranking,
    RefitDefaults,
    RefitSolver,
    Setting,
    Split,
    StructuredImportance,
    StructuredUnit,
)
from babelprune.errors import BabelpruneError
from babelprune.prune.kernels import RIA_EXPONENT, check_nm, check_sparsity
from babelprune.prune.mwanda import MWandaConfig  # M-Wanda's own options; configs name it from here too

_NM = re.compile(r"^(\d+):(\d+)$")
DEFAULT_SPARSITY = 0.5  # unstructured; an N:M pattern fixes the sparsity at 1 - N/M
# Validation context that keeps fields without effect (babelprune.flags and babelprune.sweep.runs
# first find them, to name them as the user wrote them, then validate again without it).
KEEP_FIELDS_WITHOUT_EFFECT = {"keep_fields_without_effect": True}


def _nm_of(pattern: object) -> tuple[int, int] | None:
    match = _NM.match(pattern) if isinstance(pattern, str) else None
    return (int(match.group(1)), int(match.group(2))) if match else None


def default_allocation(method: object, pattern: object) -> str:
    """The layer-wise allocation a config gets when it names none: M-Wanda's own CWL, except where N:M fixes the sparsity."""
    return "cwl" if method == "mwanda" and _nm_of(pattern) is None else "uniform"


_REFERENCE = re.compile(r"<([\w.]+)(?:=([^>]*))?>")


@dataclass(frozen=True)
class NoEffect:
    """A config field that cannot change this config's result, why, and what to do instead.

    `why` and `fix` refer to fields as <path> or <path=value>; `sentence` spells them as the
    user wrote them: flags on the command line (--method wanda), keys in config files and
    sweeps (method=wanda).
    """

    field: str  # dotted path, e.g. "mwanda.alpha"
    default: Any  # the value the field takes in this config when it is left out
    why: str
    fix: str
    runs: str  # the runs it has no effect on, as a sweep's plan says it: "wanda runs", "2:4 runs"

    def sentence(self, subject: str, name: Callable[[str, str | None], str]) -> str:
        """"<subject> <why>; <fix>.", each reference to a field spelled by `name(path, value)`."""
        text = f"{subject} {self.why}; {self.fix}."
        return _REFERENCE.sub(lambda match: name(match.group(1), match.group(2)), text)


def config_key_name(path: str, value: str | None) -> str:
    """A field as a config file or an experiment names it: method=wanda, mwanda.alpha.

    Other fields' values are glued to their names, so that the one value the sentence quotes
    alone, the refused field's own, is the one babelprune.configfile finds the line of.
    """
    return path if value is None else f"{path}={value}"


def same_value(value: Any, default: Any) -> bool:
    """Whether a field holds its default (floats up to rounding: 1 - 3/8 written as 0.625)."""
    if isinstance(value, float) and isinstance(default, (int, float)) and not isinstance(default, bool):
        return math.isclose(value, default, rel_tol=1e-9, abs_tol=1e-12)
    return value == default


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
    # Target share of zeros in the blocks' linear weights. None: 0.5, or the 1 - N/M an N:M pattern fixes
    # (an N:M config may name only that value): the validated config always holds the sparsity it prunes to.
    sparsity: float | None = None
    pattern: str = "unstructured"  # or "N:M", e.g. "2:4"
    # Layer-wise sparsity. None: the method's own, cwl for mwanda (M-Wanda's cross-lingual allocation is part
    # of the method) and uniform otherwise, and uniform under N:M, which fixes every block's sparsity. The
    # validated config holds the allocation it runs, so run keys and records name it.
    allocation: Allocation | None = None
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

    @model_validator(mode="before")
    @classmethod
    def _resolve_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        nm = _nm_of(data.get("pattern", "unstructured"))
        if data.get("sparsity") is None:
            # (a pattern N:M that is not 0 < N < M is refused by its own validator, not here)
            data["sparsity"] = 1 - nm[0] / nm[1] if nm and 0 < nm[0] < nm[1] else DEFAULT_SPARSITY
        if data.get("allocation") is None:
            data["allocation"] = default_allocation(data.get("method", "wanda"), data.get("pattern", "unstructured"))
        return data

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

    @model_validator(mode="after")
    def _every_field_has_an_effect(self, info: ValidationInfo) -> PruneConfig:
        # A field that cannot change the result but differs from its default says one thing and does
        # another (`pattern: 2:4, sparsity: 0.3` prunes 50%): refused, rather than kept in the record.
        if info.context and info.context.get("keep_fields_without_effect"):
            return self
        for item in self.fields_without_effect():
            value = self.value_at(item.field)
            if not same_value(value, item.default):
                raise BabelpruneError(item.sentence(f"{item.field} {value}", config_key_name))
        return self

    def value_at(self, path: str) -> Any:
        """The value of a dotted field ("mwanda.alpha"); None inside a section that is off (reconstruct)."""
        value: Any = self
        for part in path.split("."):
            value = getattr(value, part, None) if value is not None else None
        return value

    def fields_without_effect(self) -> list[NoEffect]:
        """Every field that cannot change this config's result, with the value it takes when left out.

        The rules follow the engine: which method reads which field, what an N:M pattern fixes, what
        a uniform allocation or a method that reads no calibration leaves unused.
        """
        from babelprune.prune.methods import METHODS

        method, found = self.method, []
        mwanda_defaults = MWandaConfig()
        if method != "mwanda":
            for name in MWandaConfig.model_fields:
                fix = "drop it, or use <method=mwanda> (or <method=ria> for RIA's own score)" if name == "score" else \
                    "drop it or use <method=mwanda>"
                found.append(NoEffect(f"mwanda.{name}", getattr(mwanda_defaults, name),
                                      f"is M-Wanda's and has no effect with <method={method}>", fix, f"{method} runs"))
        else:
            if not self.mwanda.language_aware:
                found.append(NoEffect("mwanda.alpha", mwanda_defaults.alpha, "weighs the cross-language spread of "
                                      "M-Wanda's language-aware statistics, which are off",
                                      "drop it or turn <mwanda.language_aware> on", "mwanda runs without language-aware statistics"))
            if not self.mwanda.activation_prob:
                for name in ("beta", "tau"):
                    found.append(NoEffect(f"mwanda.{name}", getattr(mwanda_defaults, name), "sets M-Wanda's "
                                          "activation-probability term, which is off", "drop it or turn <mwanda.activation_prob> on",
                                          "mwanda runs without the activation-probability term"))
        if method != "ria" and not (method == "mwanda" and self.mwanda.score == "ria"):
            with_what = "<method=mwanda> and <mwanda.score=wanda>" if method == "mwanda" else f"<method={method}>"
            found.append(NoEffect("ria_exponent", RIA_EXPONENT, f"is RIA's exponent and has no effect with {with_what}",
                                  "drop it, or use <method=ria> or <method=mwanda> with <mwanda.score=ria>",
                                  "mwanda runs with the wanda score" if method == "mwanda" else f"{method} runs"))
        if method != "sparsegpt":
            for name in ("damp", "block_size"):
                found.append(NoEffect(name, PruneConfig.model_fields[name].default, f"is SparseGPT's and has no effect with "
                                      f"<method={method}>", "drop it or use <method=sparsegpt>", f"{method} runs"))
        if self.nm:
            n, m = self.nm
            share = 1 - n / m
            fixes = f"which keeps {n} of every {m} weights and so fixes every block's sparsity at {share:.0%}"
            found.append(NoEffect("sparsity", share, f"has no effect with <pattern={self.pattern}>, {fixes}",
                                  "drop it", f"{self.pattern} runs"))
            found.append(NoEffect("allocation", "uniform", f"has no effect with <pattern={self.pattern}>, {fixes}",
                                  "drop it or use unstructured sparsity", f"{self.pattern} runs"))
            found.append(NoEffect("per_row", True, f"chooses rows or whole layers for unstructured masks, and "
                                  f"<pattern={self.pattern}> prunes in groups of {m}", "drop it", f"{self.pattern} runs"))
        elif method == "sparsegpt":
            found.append(NoEffect("per_row", True, "chooses rows or whole layers for the masks of score methods, and "
                                  "<method=sparsegpt> chooses its own", "drop it", "sparsegpt runs"))
        allocation = self.allocation
        if allocation == "uniform":
            for name, what in (("lam", "spreads"), ("allocation_samples", "sizes the pre-pass of")):
                found.append(NoEffect(name, PruneConfig.model_fields[name].default, f"{what} a layer-wise allocation, and "
                                      "the allocation is uniform", "drop it or use <allocation=owl> or <allocation=cwl>",
                                      "uniform-allocation runs"))
        if allocation != "owl":
            found.append(NoEffect("owl_m", PruneConfig.model_fields["owl_m"].default, f"is OWL's outlier threshold and has "
                                  f"no effect with <allocation={allocation}>", "drop it or use <allocation=owl>",
                                  f"{allocation}-allocation runs"))
        if not METHODS[method].needs_calibration and self.reconstruct is None:
            for name in ("order", "calib_batch", "balance", "language_weights"):
                found.append(NoEffect(name, PruneConfig.model_fields[name].get_default(call_default_factory=True),
                                      f"shapes the calibration statistics, which <method={method}> without <reconstruct> "
                                      "does not read", "drop it, or add <reconstruct>", f"{method} runs without reconstruct"))
            if allocation == "uniform":
                found.append(NoEffect("seed", 0, f"chooses the calibration windows, which <method={method}> with a uniform "
                                      "allocation does not read", "drop it", f"{method} runs"))
        if self.reconstruct is not None and self.reconstruct.solver == "exact":
            found.append(NoEffect("reconstruct.iterations", RefitDefaults.iterations, "caps the conjugate-gradient steps, "
                                  "which <reconstruct.solver=exact> does not take", "drop it or use <reconstruct.solver=pcg>",
                                  "exact-refit runs"))
        return found

    def mwanda_parts(self) -> dict[str, Any] | None:
        """Which parts of M-Wanda this config runs (None for other methods): the record and the CLI say it."""
        if self.method != "mwanda":
            return None
        return {
            "language_aware": self.mwanda.language_aware,  # mu_j + alpha * sigma_j over languages
            "activation_prob": self.mwanda.activation_prob,
            "cwl": self.allocation == "cwl",  # cross-lingual layer-wise sparsity
            "score": self.mwanda.score,
        }

    def mwanda_parts_line(self) -> str | None:
        """One line saying which parts of M-Wanda were on, or None for other methods."""
        parts = self.mwanda_parts()
        if parts is None:
            return None

        def on(flag: bool, extra: str = "") -> str:
            return f"on{extra}" if flag else "off"

        return (
            f"M-Wanda parts: language-aware statistics {on(parts['language_aware'], f' (alpha {self.mwanda.alpha:g})')}, "
            f"activation-probability term {on(parts['activation_prob'], f' (beta {self.mwanda.beta:g})')}, "
            f"CWL layer-wise sparsity {on(parts['cwl'], f' (lam {self.lam:g})')}, {parts['score']} score."
        )

    @property
    def nm(self) -> tuple[int, int] | None:
        """(N, M) for an N:M pattern, None for unstructured."""
        return _nm_of(self.pattern)

    @property
    def needs_calibration(self) -> bool:
        """Whether pruning reads calibration text: the method's statistics, the refit, or a layer-wise allocation
        (which compares blocks on the text; under N:M the pattern fixes each block's sparsity, so it reads none)."""
        from babelprune.prune.methods import METHODS

        uses_statistics = METHODS[self.method].needs_calibration or self.reconstruct is not None
        return uses_statistics or (self.allocation != "uniform" and self.nm is None)

    @property
    def effective_sparsity(self) -> float:
        """The share of weights an N:M pattern removes, or the unstructured target."""
        return 1 - self.nm[0] / self.nm[1] if self.nm else self.sparsity

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


def without_unset(data: dict, defaults: dict[str, Any]) -> dict:
    """`data` without the fields that hold the default they had before they existed.

    A field added to a config after runs were keyed on it is left out of the dumped
    config while it keeps that default, so the sweep keys of earlier runs stay what they were.
    """
    for name, default in defaults.items():
        if name in data and data[name] is default:  # None, False: identity, so 0 is not taken for False
            del data[name]
    return data


class StructuredConfig(BaseModel):
    """Everything that decides a structured pruning run (babelprune.prune.structured; the calibration is separate)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    units: list[StructuredUnit]  # what is removed: heads, ffn (neurons), blocks
    importance: StructuredImportance = "gradient"  # how units are ranked
    sparsity: float = 0.5  # share of the blocks' attention and FFN parameters removed
    setting: Setting = "shared"  # per-language: one selection per calibration language over a dense model
    gqa: GqaMode = "query"  # grouped-query attention: remove query heads evenly within groups, or whole groups
    ranking: Ranking = "global"  # rank units over the whole model or within each layer
    # Refit the output / down projections that read removed heads / neurons on the calibration text, block by block.
    refit: bool = False

    @model_serializer(mode="wrap")
    def _without_default_refit(self, handler):
        return without_unset(handler(self), {"refit": False})

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
    def _per_language_only_with_data(self) -> StructuredConfig:
        # Imported here: the registry's package loads the models' code, which a one-shot config never needs.
        from babelprune.prune.structured.methods import check_importance_setting

        check_importance_setting(self.importance, self.setting, "--setting")
        return self

    @model_validator(mode="after")
    def _refit_where_it_applies(self) -> StructuredConfig:
        if self.refit:
            from babelprune.prune.structured import check_refit

            check_refit(self.units, self.setting)
        return self

    @property
    def needs_calibration(self) -> bool:
        """Whether the run reads calibration text: the importance's statistics, or the refit."""
        from babelprune.prune.structured.methods import importance_method

        return importance_method(self.importance).uses_data or self.refit

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
    # Also keep the pieces of the kept languages' scripts among the tokenizer's N best-ranked pieces
    # (babelprune.prune.vocab.script_rank_ids); None keeps only what the text uses.
    keep_script_rank: int | None = None
    # Also keep the N pieces the kept languages' most common words use most (word lists of the wordfreq
    # package, languages weighted equally; babelprune.prune.vocab.common_word_ids); None: off.
    keep_common: int | None = None

    @model_serializer(mode="wrap")
    def _without_unset_rank(self, handler):
        return without_unset(handler(self), {"keep_script_rank": None, "keep_common": None})

    @field_validator("keep_common")
    @classmethod
    def _positive_common(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise BabelpruneError(f"--keep-common must be at least 1 (got {value}); it is how many pieces of common words to keep.")
        return value

    @field_validator("keep_script_rank")
    @classmethod
    def _positive_rank(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise BabelpruneError(f"--keep-script-rank must be at least 1 (got {value}); it is how many of the tokenizer's best-ranked pieces are considered.")
        return value

    @field_validator("min_count")
    @classmethod
    def _at_least_once(cls, value: int) -> int:
        if value < 1:
            raise BabelpruneError(f"--min-count must be at least 1 (got {value}); 1 keeps every token the text uses.")
        return value

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")
