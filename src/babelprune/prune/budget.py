"""A language budget for one-shot pruning: raise the weight of the languages that lose most.

`--language-budget minimax` runs a few rounds. Each round prunes the dense
model with the current language weights (statistics and Hessians, see
`babelprune.prune.balance`), then measures every calibration language's loss
on held-out calibration windows (text the pruning never saw):

    delta_l = bits per byte of the pruned model - bits per byte of the dense model

and multiplies each weight by exp(step * delta_l / max_k |delta_k|) (the
multiplicative-weights rule, normalised to a mean weight of 1), so the next
round gives the languages that lost most a larger say. The round with the
lowest worst-language loss is kept (the mean breaks ties); round 1 has
equal weights, so the result is never worse than equal weights on the
held-out windows. Every round's weights and losses are kept in the record.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from babelprune.errors import BabelpruneError
from babelprune.evaluate.lm import score_windows
from babelprune.evaluate.windows import Window
from babelprune.models.base import LoadedModel
from babelprune.prune.calibration import Calibration
from babelprune.prune.config import PruneConfig
from babelprune.prune.engine import PruneResult, prune, restore_linears, snapshot_linears

DEFAULT_ROUNDS = 3
DEFAULT_STEP = 1.0
DEFAULT_HOLDOUT = 2  # held-out calibration windows per language


@dataclass(frozen=True)
class BudgetRound:
    weights: dict[str, float]  # language weights this round pruned with
    losses: dict[str, float]  # increase of held-out bits per byte (or per token) per language

    @property
    def worst(self) -> float:
        return max(self.losses.values())

    @property
    def mean(self) -> float:
        return sum(self.losses.values()) / len(self.losses)


def check_budget_inputs(calibration: Calibration | None, holdout: Calibration | None, rounds: int) -> None:
    """Everything that can be wrong with a budget run, before any weight changes."""
    if calibration is None or len(calibration.language_set) < 2:
        raise BabelpruneError("--language-budget weighs calibration languages against each other; give at least two in --calib-langs.")
    if holdout is None or set(holdout.language_set) != set(calibration.language_set):
        raise BabelpruneError("--language-budget needs held-out calibration windows in every calibration language; raise --holdout-samples.")
    if rounds < 1:
        raise BabelpruneError(f"--budget-rounds must be at least 1, got {rounds}.")


def holdout_windows(holdout: Calibration, tokenizer) -> tuple[dict[str, list[Window]], str]:
    """Each language's held-out windows with their byte counts; the unit is bits per byte, or per token without a tokenizer."""
    windows: dict[str, list[Window]] = {}
    for lang, rows in holdout.rows().items():
        ids = [holdout.ids[int(row)].tolist() for row in rows]
        # Decoding the targets (BOS dropped) gives their text, hence their UTF-8 bytes.
        sizes = [len(tokenizer.decode(row[1:]).encode("utf-8")) if tokenizer is not None else len(row) - 1 for row in ids]
        windows[lang] = [Window(row, size) for row, size in zip(ids, sizes)]
    return windows, "bits per byte" if tokenizer is not None else "bits per token"


def bits_per_unit(loaded: LoadedModel, windows: dict[str, list[Window]]) -> dict[str, float]:
    pad = getattr(loaded.tokenizer, "pad_token_id", None) or 0
    totals = {lang: score_windows(loaded.model, items, pad) for lang, items in windows.items()}
    return {lang: t.nll_nats / math.log(2) / t.n_bytes for lang, t in totals.items()}


def next_weights(weights: dict[str, float], losses: dict[str, float], step: float) -> dict[str, float]:
    """w_l * exp(step * delta_l / max |delta|), rescaled to a mean of 1 (so each factor lies in [e^-step, e^step])."""
    top = max(max(abs(loss) for loss in losses.values()), 1e-12)
    raised = {lang: weight * math.exp(step * losses[lang] / top) for lang, weight in weights.items()}
    mean = sum(raised.values()) / len(raised)
    return {lang: value / mean for lang, value in raised.items()}


def prune_with_language_budget(
    loaded: LoadedModel,
    config: PruneConfig,
    calibration: Calibration,
    holdout: Calibration,
    rounds: int = DEFAULT_ROUNDS,
    step: float = DEFAULT_STEP,
    progress: bool = True,
    on_round: Callable[[int, BudgetRound], None] | None = None,
    onload: torch.device | None = None,
    activation_memory: int | None = None,
) -> PruneResult:
    """Prune `loaded` in place with the best of `rounds` language weightings; the result records every round.

    `onload` and `activation_memory` go to every round's pruning (babelprune.prune.engine); the
    held-out windows are scored where the model's weights are.
    """
    check_budget_inputs(calibration, holdout, rounds)
    if config.setting != "shared":
        raise BabelpruneError("--language-budget weighs languages in one shared model; use --setting shared.")
    if config.method == "magnitude" and config.reconstruct is None:
        raise BabelpruneError(
            "--language-budget changes how much each language counts in the calibration statistics, which magnitude "
            "pruning does not read; choose another --method or add --reconstruct."
        )
    started = time.perf_counter()
    windows, unit = holdout_windows(holdout, loaded.tokenizer)
    dense = snapshot_linears(loaded.model)
    dense_bits = bits_per_unit(loaded, windows)
    weights = {lang: config.language_weights.get(lang, 1.0) for lang in calibration.language_set}
    history: list[BudgetRound] = []
    best: tuple[int, dict[str, torch.Tensor], PruneResult] | None = None
    for index in range(rounds):
        restore_linears(loaded.model, dense)
        weighted = config.model_copy(update={"language_weights": weights})
        result = prune(loaded, weighted, calibration, progress, onload=onload, activation_memory=activation_memory)
        pruned_bits = bits_per_unit(loaded, windows)
        entry = BudgetRound(
            weights={lang: round(w, 6) for lang, w in weights.items()},
            losses={lang: round(pruned_bits[lang] - dense_bits[lang], 6) for lang in weights},
        )
        history.append(entry)
        if on_round is not None:
            on_round(index + 1, entry)
        if best is None or (entry.worst, entry.mean) < (history[best[0]].worst, history[best[0]].mean):
            best = (index, snapshot_linears(loaded.model), result)
        weights = next_weights(weights, entry.losses, step)
    chosen, weights_of_best, result = best
    restore_linears(loaded.model, weights_of_best)
    result.seconds = round(time.perf_counter() - started, 3)  # every round, not only the kept one
    result.language_budget = {
        "rule": "minimax", "rounds": [{"weights": r.weights, "losses": r.losses} for r in history],
        "chosen_round": chosen + 1, "unit": unit, "step": step, "holdout": holdout.describe(),
    }
    return result
