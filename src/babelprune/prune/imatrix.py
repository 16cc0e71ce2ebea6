"""Per-language input statistics of every linear layer, turned into llama.cpp importance-matrix values.

llama.cpp's quantizer weighs each input column j of a weight by the mean
over calibration tokens of x_j^2 (its "imatrix"). `LanguageStats` already
keeps, per language l, the sum of x_j^2 and the token count T_l, so its
`per_language_norm()`^2 is that mean for one language, m_l,j. From it:

* "balanced": (1/L) sum_l m_l,j, every language weighted equally whatever
  its token count (the mean of the per-language means);
* a language code: m_l,j of that language alone.

Unlike pruning, which runs block by block, the model runs whole here: every
linear, the LM head included, sees the inputs of the unquantized model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from babelprune.errors import BabelpruneError
from babelprune.prune.calibration import Calibration
from babelprune.prune.stats import LanguageStats

BALANCED = "balanced"


@torch.no_grad()
def linear_input_stats(model: nn.Module, calibration: Calibration, batch: int = 8,
                       skip: Sequence[str] = ()) -> dict[str, LanguageStats]:
    """Module name -> per-language statistics of the inputs of each nn.Linear of `model` (those in `skip` left out).

    The windows of one language run together, `batch` at a time (ids (n, T)); every position of
    a linear's input (n, T, in) is one token of that language.
    """
    languages = calibration.language_set
    stats: dict[str, LanguageStats] = {}
    current = {"lang": languages[0]}
    handles = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or name in skip:
            continue

        def hook(linear, args, name=name):
            x = args[0]  # (n, T, in)
            if name not in stats:
                stats[name] = LanguageStats(x.shape[-1], languages, track_activity=False, device=x.device)
            stats[name].update(x, current["lang"])

        handles.append(module.register_forward_pre_hook(hook))
    try:
        device = next(model.parameters()).device
        for lang, rows in calibration.rows().items():
            current["lang"] = lang
            for start in range(0, len(rows), batch):
                ids = calibration.ids[rows[start : start + batch]].to(device)
                model(input_ids=ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return stats


def importance_values(stats: dict[str, LanguageStats], kind: str) -> dict[str, np.ndarray]:
    """Module name -> (in,) float32 importance: the mean of x_j^2, balanced over languages or of one language."""
    out = {}
    for name, one in stats.items():
        means = one.per_language_norm().square()  # (L, in): sum_t x_j^2 / T_l per language
        if kind == BALANCED:
            values = means.mean(dim=0)  # each language counts 1/L
        elif kind in one.languages:
            values = means[one.languages.index(kind)]
        else:
            raise BabelpruneError(f"--imatrix {kind} names no calibration language ({', '.join(one.languages)}); "
                                  "add it to --calib-langs or use balanced.")
        out[name] = values.float().cpu().numpy()
    return out
