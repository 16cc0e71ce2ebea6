"""Streaming per-language statistics of a linear layer's inputs.

Feed calibration inputs batch by batch with `LanguageStats.update(x, lang)`;
read the statistics the pruning kernels need:

* `pooled_norm()` (in,): ||X_j||_2 over all tokens of all languages (Wanda).
* `per_language_norm()` (L, in): n_j^l = ||X_j^l||_2 / sqrt(T_l); dividing by
  the token count keeps languages with more calibration tokens from
  dominating (M-Wanda).
* `activation_probability()` (L, in): share of language l's tokens on which
  input j is active (M-Wanda).
* `hessian()` (in, in): X X^T pooled over all tokens (SparseGPT), only if
  asked for at construction, since it costs in^2 memory.

Language balance. `token_scale` (one factor per language, optional) weights
every token of language l by s_l in the pooled norm and in the Hessian:
||X_j||^2 becomes sum_l s_l ||X_j^l||^2 and X X^T becomes sum_l s_l X_l X_l^T.
`babelprune.prune.balance` chooses s_l = w_l / T_l (rescaled), so each
language counts by its weight w_l whatever its token count T_l. Without it
every token counts once (pooled).

"Active" means |x_j| > tau by default (rule "abs"). The default tau = 0.01
suits inputs that come out of a normalisation layer (values of order 1),
where |x| <= 0.01 is effectively silent. For inputs taken after an
activation function (e.g. an MLP's down-projection input) use the rule
"positive" with tau = 0: active means x_j > 0, an open gate.
`post_activation_stats` builds such statistics; the engine uses them for
every block's FFN down-projection.

Sums are kept in float64; each batch's products are computed in float32
(fast matmul) and then added to the float64 totals, so accumulating many
batches does not lose precision. Inputs in bfloat16 or float16 are
converted to float32 first: the statistics' precision never follows the
model's. Every total lives on the device given at construction, the
layer's own, so a model on a GPU keeps its statistics there.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Literal

import torch
from torch import Tensor

from babelprune.errors import BabelpruneError

ActiveRule = Literal["abs", "positive"]
DEFAULT_TAU = 1e-2


def gram(tokens: Tensor, pieces: int = 4) -> Tensor:
    """X^T X (in, in) of tokens X (T, in), computing only the blocks on and above the diagonal.

    The input dimension is cut into `pieces` bands; band a is multiplied with
    bands a..end and mirrored below the diagonal, so (pieces + 1) / (2 pieces)
    of the full product's work is done (5/8 for 4 bands); how much faster that
    is than tokens.T @ tokens on a given machine: benchmarks/gram_speed.py.
    """
    width = tokens.shape[1]
    edges = [round(i * width / pieces) for i in range(pieces + 1)]
    out = torch.empty(width, width, dtype=tokens.dtype, device=tokens.device)
    for start, end in zip(edges[:-1], edges[1:]):
        if start == end:
            continue
        band = tokens[:, start:end].T @ tokens[:, start:]  # (end - start, width - start)
        out[start:end, start:] = band
        out[start:, start:end] = band.T
    return out


class LanguageStats:
    """Accumulates, per language, the input statistics of one linear layer."""

    def __init__(
        self,
        in_features: int,
        languages: Sequence[str],
        track_hessian: bool = False,
        tau: float = DEFAULT_TAU,
        track_activity: bool = True,
        active_rule: ActiveRule = "abs",
        token_scale: Tensor | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if in_features < 1:
            raise BabelpruneError(f"A linear layer needs at least one input feature, got {in_features}.")
        if len(languages) == 0 or len(set(languages)) != len(languages):
            raise BabelpruneError("Give a non-empty list of distinct language codes for the statistics.")
        if active_rule not in ("abs", "positive"):
            raise BabelpruneError(f"Unknown activity rule {active_rule!r}; use 'abs' or 'positive'.")
        if tau < 0:
            raise BabelpruneError(f"The activity threshold tau={tau} must be non-negative.")
        if token_scale is not None and (token_scale.shape != (len(languages),) or bool((token_scale <= 0).any())):
            raise BabelpruneError("The token scale needs one positive factor per language.")
        self.in_features = in_features
        self.languages = list(languages)
        self.device = torch.device(device)  # the layer's: every total lives beside the inputs it sums
        self.token_scale = None if token_scale is None else token_scale.double().to(self.device)  # (L,) or None: pooled
        self.tau = float(tau)
        self.active_rule = active_rule
        self._index = {lang: i for i, lang in enumerate(self.languages)}
        n_lang = len(self.languages)
        self._sum_squares = self._zeros(n_lang, in_features, dtype=torch.float64)  # (L, in)
        # Activity counts cost a comparison per input; only M-Wanda reads them.
        self._active = self._zeros(n_lang, in_features, dtype=torch.int64) if track_activity else None  # (L, in)
        self._tokens = self._zeros(n_lang, dtype=torch.int64)  # (L,)
        self._hessian = self._zeros(in_features, in_features, dtype=torch.float64) if track_hessian else None
        # update() adds to the Hessian only when asked here; a caller that feeds it whole batches
        # through add_hessian() (babelprune.prune.sequential) must not have each batch counted twice.
        self._hessian_by_update = track_hessian
        # Values derived from the statistics (e.g. a damped float32 Hessian shared by q, k and v), dropped on every new batch.
        self._derived: dict = {}

    def _zeros(self, *shape: int, dtype: torch.dtype) -> Tensor:
        return torch.zeros(*shape, dtype=dtype, device=self.device)

    @property
    def token_counts(self) -> dict[str, int]:
        """Calibration tokens seen so far, per language."""
        return {lang: int(self._tokens[i]) for i, lang in enumerate(self.languages)}

    def update(self, x: Tensor, lang: str) -> None:
        """Add a batch of inputs x (..., in) — every leading position is one token — for `lang`."""
        if lang not in self._index:
            raise BabelpruneError(f"Language {lang!r} was not declared for these statistics; declare it first.")
        if x.shape[-1] != self.in_features:
            raise BabelpruneError(
                f"Inputs have {x.shape[-1]} features but the layer has {self.in_features}; "
                "feed this layer's own inputs."
            )
        tokens = x.detach().reshape(-1, self.in_features).float()  # (T, in)
        if tokens.shape[0] == 0:
            return
        self._derived.clear()
        i = self._index[lang]
        self._sum_squares[i] += tokens.square().sum(dim=0).double()  # float32 per batch, float64 across batches
        if self._active is not None:
            magnitude = tokens.abs() if self.active_rule == "abs" else tokens
            self._active[i] += (magnitude > self.tau).sum(dim=0)
        self._tokens[i] += tokens.shape[0]
        if self._hessian_by_update:
            scale = 1.0 if self.token_scale is None else float(self.token_scale[i])
            self._hessian += scale * gram(tokens).double()  # (in, in)

    def add_hessian(self, tokens: Tensor, scale: float = 1.0) -> None:
        """Add scale * X^T X of a batch of tokens (T, in) of any languages: one matrix product for all of them."""
        product = gram(tokens)  # (in, in) float32
        if self._hessian is None:
            self._hessian = self._zeros(self.in_features, self.in_features, dtype=torch.float64)
        self._hessian.add_(product, alpha=scale)  # into the float64 total
        self._derived.clear()

    def derived(self, key: Hashable, compute: Callable[[], object]):
        """`compute()`, made once and kept until the next batch changes these statistics."""
        if key not in self._derived:
            self._derived[key] = compute()
        return self._derived[key]

    def _require_tokens(self) -> None:
        missing = [lang for i, lang in enumerate(self.languages) if int(self._tokens[i]) == 0]
        if missing:
            raise BabelpruneError(
                f"No calibration tokens were seen for {', '.join(missing)}; add calibration text for it or drop it."
            )

    def pooled_norm(self) -> Tensor:
        """(in,) float64: ||X_j||_2 over every token of every language (Wanda's input norm), scaled per language."""
        if int(self._tokens.sum()) == 0:
            raise BabelpruneError("No calibration tokens were seen; run calibration before pruning.")
        if self.token_scale is None:
            return self._sum_squares.sum(dim=0).sqrt()
        return (self.token_scale.unsqueeze(1) * self._sum_squares).sum(dim=0).sqrt()

    def language_weights(self) -> Tensor | None:
        """(L,) float64 summing to 1: each language's share under the token scale (None when pooled)."""
        if self.token_scale is None:
            return None
        mass = self.token_scale * self._tokens.double()
        return mass / mass.sum()

    def per_language_norm(self) -> Tensor:
        """(L, in) float64: ||X_j^l||_2 / sqrt(T_l), rows in the order of `languages`."""
        self._require_tokens()
        return (self._sum_squares / self._tokens.double().unsqueeze(1)).sqrt()

    def activation_probability(self) -> Tensor:
        """(L, in) float64: share of language l's tokens on which input j is active."""
        if self._active is None:
            raise BabelpruneError("These statistics were collected without activity counts; create them with track_activity=True.")
        self._require_tokens()
        return self._active.double() / self._tokens.double().unsqueeze(1)

    def hessian(self) -> Tensor:
        """(in, in) float64: X X^T summed over all tokens of all languages."""
        if self._hessian is None:
            raise BabelpruneError("These statistics were collected without the Hessian; create them with track_hessian=True.")
        return self._hessian.clone()


def post_activation_stats(
    in_features: int, languages: Sequence[str], track_activity: bool = True, token_scale: Tensor | None = None,
    device: torch.device | str = "cpu",
) -> LanguageStats:
    """Statistics for an input that follows the FFN's activation function: active means x_j > 0."""
    return LanguageStats(
        in_features, languages, tau=0.0, track_activity=track_activity, active_rule="positive", token_scale=token_scale,
        device=device,
    )
