"""Structured pruning: remove whole attention heads, FFN neurons or blocks (Li et al., ACL 2022 setting).

Unlike the one-shot methods, which zero single weights, this makes every
matrix physically smaller and the model faster:

    result = structured_prune(loaded, {"heads", "ffn"}, "gradient", 0.3, calibration)
    save_structured(loaded.model, loaded.tokenizer, "out/", result.metadata())  # babelprune.formats.structured
    again = load_structured("out/")

Importance: "magnitude" (no data), "activation" (Wanda), "gradient" (gate
gradients for heads and neurons, Taylor for blocks) and "l0" (hard-concrete
gates); see `importance.py` and `l0.py`. Each is one entry of the registry
in `methods.py` (`IMPORTANCES`), through which the functions below
dispatch. Sparsity is the share of the blocks' attention and FFN parameters
removed; see `selection.py` for how units are chosen.

Refit (`refit=True`, shared setting, heads and FFN neurons): the linears
that read the removed channels (attention output and FFN down projections)
are fitted again, block by block, on the calibration inputs; see `refit.py`.

Settings: "shared" pools every calibration language into one ranking and
prunes the model in place; "per-language" ranks units once per language and
returns each language's selection, leaving the model dense (`prune_copy`
makes the pruned model of one language).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from babelprune.choices import Setting
from babelprune.choices import StructuredImportance as ImportanceName
from babelprune.errors import BabelpruneError
from babelprune.devices import dtype_name
from babelprune.models.layouts import (
    GqaMode,
    check_head_removal,
    layer_layouts,
    model_params,
    structure_of,
    total_block_params,
)
from babelprune.progress import progress_bar
from babelprune.models.adapters import adapter_for
from babelprune.models.base import LoadedModel
from babelprune.prune.calibration import Calibration
from babelprune.prune.kernels import check_sparsity
from babelprune.prune.structured.importance import LossFn, check_units
from babelprune.prune.structured.l0 import L0Settings, L0Trace
from babelprune.prune.structured.methods import IMPORTANCES, ImportanceTask, check_importance_setting, importance_method
from babelprune.prune.structured.refit import apply_selection_with_refit
from babelprune.prune.structured.selection import (
    DEFAULT_TOLERANCE,
    Importance,
    LayerKeep,
    Ranking,
    Selection,
    apply_selection,
    select_units,
)

# The built-in importances, for code that imported this tuple; the live set is IMPORTANCES.
IMPORTANCE_METHODS = tuple(IMPORTANCES)

__all__ = [
    "IMPORTANCES", "IMPORTANCE_METHODS", "Importance", "ImportanceName", "L0Settings", "LayerKeep", "Selection",
    "StructuredResult",
    "apply_selection", "compute_importance", "prune_copy",
    "select_units", "structured_prune",
]


@dataclass
class StructuredResult:
    """What a structured pruning run did."""

    units: list[str]
    importance: str
    setting: str
    gqa: str
    ranking: str
    target_sparsity: float
    achieved_sparsity: float  # share of block parameters removed (mean over languages when per-language)
    params_before: int  # block (attention + FFN linear) parameters
    params_after: int  # per-language: the mean over the languages' pruned models (the model itself stays dense)
    model_params_before: int  # every parameter of the model
    model_params_after: int  # per-language: the mean, as params_after
    widths: list[dict[str, int]]  # per block after pruning: heads, kv_heads, ffn
    selection: Selection | None  # shared: what was kept
    per_language: dict[str, Selection] | None = None  # per-language: each language's selection
    calibration: dict | None = None
    seconds: float = 0.0
    l0_traces: dict[str, L0Trace] = field(default_factory=dict)
    device: str = "cpu"  # where the model was scored and pruned
    dtype: str = "float32"  # the type of its weights meanwhile
    refit: dict | None = None  # the refit's record (per refitted linear: errors before and after), None when off

    def metadata(self) -> dict:
        """A JSON-able summary (kept heads per block; neuron counts rather than indices)."""

        def kept(selection: Selection) -> dict:
            return {
                "blocks": selection.blocks,
                "query_heads": [keep.query_heads for keep in selection.layers],
                "kv_heads": [keep.kv_heads for keep in selection.layers],
                "neurons": [len(keep.neurons) for keep in selection.layers],
                "sparsity": round(selection.sparsity, 6),
            }

        refit = {"refit": self.refit} if self.refit is not None else {}  # left out when off: older records stay the same
        return refit | {
            "method": f"structured-{self.importance}",
            "units": self.units, "importance": self.importance, "setting": self.setting, "gqa": self.gqa,
            "ranking": self.ranking, "sparsity": self.target_sparsity, "achieved_sparsity": round(self.achieved_sparsity, 6),
            "params_before": self.params_before, "params_after": self.params_after,
            "model_params_before": self.model_params_before, "model_params_after": self.model_params_after,
            "widths": self.widths, "calibration": self.calibration, "seconds": self.seconds,
            "device": self.device, "dtype": self.dtype,
            "kept": kept(self.selection) if self.selection else None,
            "kept_per_language": {lang: kept(s) for lang, s in (self.per_language or {}).items()} or None,
        }


def _widths(loaded: LoadedModel) -> list[dict[str, int]]:
    layouts = layer_layouts(loaded.model, adapter_for(loaded.model))
    return [{"heads": lay.n_heads, "kv_heads": lay.n_kv_heads, "ffn": lay.ffn} for lay in layouts]


def check_refit(units: set[str] | list[str], setting: str, has_calibration: bool = True) -> None:
    """The refit needs calibration text, the shared setting, and heads or FFN neurons to remove."""
    if "blocks" in units:
        raise BabelpruneError("--refit refits the linears that read removed heads or FFN neurons, and removed blocks leave "
                              "none; drop --refit or remove heads or ffn instead.")
    if setting == "per-language":
        raise BabelpruneError("--refit changes the weights, but the per-language setting keeps one dense model under every "
                              "language's selection; use --setting shared with --refit, or drop --refit.")
    if not has_calibration:
        raise BabelpruneError("--refit fits the kept weights on calibration text; give --calib.")


def _check(loaded: LoadedModel, units: set[str], importance: str, sparsity: float, calibration: Calibration | None, setting: str,
           refit: bool = False) -> None:
    """Every check that can fail, before any work."""
    check_sparsity(sparsity)
    adapter = adapter_for(loaded.model)
    structure_of(adapter)
    if "heads" in units:
        check_head_removal(adapter)
    method = importance_method(importance)
    if setting not in ("shared", "per-language"):
        raise BabelpruneError(f"Unknown setting '{setting}'; use 'shared' or 'per-language'.")
    if method.uses_data and calibration is None:
        raise BabelpruneError(f"Importance '{importance}' needs calibration text; give --calib.")
    check_importance_setting(importance, setting, "--setting")
    if refit:
        check_refit(units, setting, calibration is not None)


def compute_importance(
    loaded: LoadedModel, units: set[str], importance: ImportanceName, calibration: Calibration | None = None,
    gqa: GqaMode = "query", loss_fn: LossFn | None = None, batch_size: int = 1, sparsity: float = 0.5,
    l0: L0Settings | None = None,
) -> tuple[dict[str, Importance], dict[str, L0Trace]]:
    """Importance per calibration language ({"all": ...} for one that uses no data); L0 is trained toward `sparsity`."""
    task = ImportanceTask(loaded, check_units(units), calibration, gqa, loss_fn, batch_size, sparsity, l0)
    return importance_method(importance).fn(task)


def _pooled(per_language: dict[str, Importance]) -> Importance:
    values = list(per_language.values())
    total = values[0]
    for value in values[1:]:
        total = total + value
    return total


def structured_prune(
    loaded: LoadedModel,
    units: set[str],
    importance: ImportanceName,
    sparsity: float,
    calibration: Calibration | None = None,
    setting: Setting = "shared",
    loss_fn: LossFn | None = None,
    progress: bool = True,
    gqa: GqaMode = "query",
    ranking: Ranking = "global",
    tolerance: float = DEFAULT_TOLERANCE,
    batch_size: int = 1,
    l0: L0Settings | None = None,
    refit: bool = False,
) -> StructuredResult:
    """Remove the least important heads / FFN neurons / blocks of `loaded.model` physically, in place (shared setting).

    gqa: for grouped-query attention, "query" removes query heads evenly within
    groups, "groups" removes whole key/value groups. L0 in the shared setting
    trains one set of gates on all languages together. refit: fit the output
    and down projections again on the calibration text after removal (`refit.py`).
    """
    started = time.perf_counter()
    units = check_units(units)
    _check(loaded, units, importance, sparsity, calibration, setting, refit)
    model, adapter = loaded.model, adapter_for(loaded.model)
    before, model_before = total_block_params(model, adapter), model_params(model)
    bar = progress_bar(progress, counted=False)
    refit_record = None
    with bar:
        task = bar.add_task(f"structured {importance}: scoring {', '.join(sorted(units))}")
        # Shared: an importance may score the languages together (L0 trains one set of gates on all of them).
        scoring = ImportanceTask(loaded, units, calibration, gqa, loss_fn, batch_size, sparsity, l0, pooled=setting == "shared")
        per_lang, traces = importance_method(importance).fn(scoring)
        bar.update(task, description=f"structured {importance}: removing units")
        if setting == "shared":
            selection = select_units(model, _pooled(per_lang), sparsity, ranking, tolerance)
            if refit:
                bar.update(task, description=f"structured {importance}: removing units and refitting, block by block")
                refit_record = apply_selection_with_refit(model, selection, calibration)
            else:
                with torch.no_grad():
                    apply_selection(model, selection)
            chosen, achieved = None, selection.sparsity
        else:
            chosen = {lang: select_units(model, imp, sparsity, ranking, tolerance) for lang, imp in per_lang.items()}
            selection, achieved = None, sum(s.sparsity for s in chosen.values()) / len(chosen)
    # Per-language, the model stays dense: report what the languages' pruned models keep on average.
    removed = 0 if chosen is None else round(sum(s.removed_params for s in chosen.values()) / len(chosen))
    return StructuredResult(
        units=sorted(units), importance=importance, setting=setting, gqa=gqa, ranking=ranking,
        target_sparsity=float(sparsity), achieved_sparsity=achieved,
        params_before=before, params_after=total_block_params(model, adapter) - removed,
        model_params_before=model_before, model_params_after=model_params(model) - removed,
        widths=_widths(loaded), selection=selection, per_language=chosen,
        calibration=calibration.describe() if calibration is not None else None,
        seconds=round(time.perf_counter() - started, 3), l0_traces=traces,
        device=str(loaded.device), dtype=dtype_name(loaded.dtype), refit=refit_record,
    )


def prune_copy(loaded: LoadedModel, selection: Selection) -> LoadedModel:
    """A pruned copy of `loaded` (e.g. one language's selection of a per-language run); `loaded` is untouched."""
    model = copy.deepcopy(loaded.model)
    with torch.no_grad():
        apply_selection(model, selection)
    return LoadedModel(model=model, tokenizer=loaded.tokenizer, spec=loaded.spec, path=None, kind=loaded.kind)
