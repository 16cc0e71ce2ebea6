"""GGUF files measured in llama.cpp (llama-cpp-python, the `babelprune[llama]` extra): bits per byte and speed.

Scoring: the windows and token ids are those the torch evaluation makes with
the source model's tokenizer (babelprune.evaluate.windows); llama.cpp only
computes the logits. Each window is fed alone (the context is reset between
windows), with logits at every position; position t's logits give the
log-probability of token t + 1, taken as a log-softmax in float64. The
per-window sums go into the same `NLLTotals` the torch path fills, so the
result record and its intervals are the torch path's. The key/value cache
is float32 (llama.cpp's default is float16), so that an f32 file differs
from the torch model only in the order of its arithmetic.

Speed, at batch 1: prompt processing is one `seq_len`-token prompt decoded
at once; generation is `new_tokens` tokens decoded one at a time, greedily,
after a `prompt_tokens`-token prompt (the prompt is not timed). Both are
medians over `runs` timed runs after `warmup` untimed ones, models taken
round-robin, on seeded random token ids.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from babelprune.errors import BabelpruneError
from babelprune.evaluate.lm import NLLTotals, window_totals
from babelprune.evaluate.windows import Window
from babelprune.formats.gguf import GgufFacts
from babelprune.formats.gguf_quant import llama_cpp_bindings

LOGIT_ROWS = 64  # positions turned into float64 log-probabilities at once: (64, V) float64
KV_CACHE = "f32"


def bindings(purpose: str = "Measuring a GGUF file runs llama.cpp"):
    """llama-cpp-python, or one sentence naming the extra that installs it."""
    return llama_cpp_bindings(purpose)


def versions() -> tuple[str, str | None]:
    """(llama-cpp-python's version, the llama.cpp build it wraps when it says)."""
    llama_cpp = bindings()
    build = None
    reader = getattr(llama_cpp, "llama_version", None)
    if reader is not None:
        try:
            value = reader()
            build = value.decode() if isinstance(value, bytes) else str(value)
        except (AttributeError, OSError, TypeError):
            build = None
    return str(getattr(llama_cpp, "__version__", "unknown")), build


class LlamaCppRuntime:
    """One GGUF file open in llama.cpp, on the CPU: the logits of a token sequence, from an empty context."""

    def __init__(self, path: Path | str, n_ctx: int, *, logits_all: bool = True, threads: int | None = None) -> None:
        llama_cpp = bindings()
        f32 = llama_cpp.GGML_TYPE_F32
        self.path = Path(path)
        self.threads = threads
        try:
            self.engine = llama_cpp.Llama(str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=logits_all,
                                          n_threads=threads, n_threads_batch=threads, type_k=f32, type_v=f32,
                                          n_gpu_layers=0, verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise BabelpruneError(f"llama.cpp could not load {self.path.name} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                                  "check that this llama-cpp-python reads its architecture.") from None
        self.n_vocab = int(self.engine.n_vocab())

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits (len(ids), V) of `ids` fed from an empty context: a view of llama-cpp-python's buffer, valid until
        the next call (no copy: with a 262k-token vocabulary a window's logits are hundreds of megabytes)."""
        self.engine.reset()
        self.engine.eval(list(ids))
        return self.engine.scores[: len(ids)]

    def decode(self, ids: Sequence[int]) -> None:
        """Feed `ids` after what the context holds (no logits copied)."""
        self.engine.eval(list(ids))

    def reset(self) -> None:
        self.engine.reset()

    def last_logits(self) -> np.ndarray:
        """The logits of the last token fed: (V,)."""
        llama_cpp = bindings()
        pointer = llama_cpp.llama_get_logits_ith(self.engine.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))

    def close(self) -> None:
        self.engine.close()


def window_nll(logits: np.ndarray, ids: Sequence[int]) -> float:
    """Summed negative log-likelihood (nats) of ids[1:], each given the logits of the position before it, in float64."""
    return float(sum(target_nll(logits, ids)))


def target_nll(logits: np.ndarray, ids: Sequence[int]) -> list[float]:
    """Negative log-likelihood (nats) of each of ids[1:], given the logits (T, V) of the position before it, in float64."""
    targets = np.asarray(ids[1:], dtype=np.int64)
    values: list[float] = []
    for start in range(0, len(targets), LOGIT_ROWS):
        rows = np.asarray(logits[start : start + LOGIT_ROWS][: len(targets) - start], dtype=np.float64)  # (n, V)
        peak = rows.max(axis=1)
        log_norm = np.log(np.exp(rows - peak[:, None]).sum(axis=1)) + peak
        picked = rows[np.arange(rows.shape[0]), targets[start : start + rows.shape[0]]]
        values.extend((log_norm - picked).tolist())
    return values


def score_windows_with(runtime, windows: list[Window], on_window: Callable[[int], None] | None = None) -> NLLTotals:
    """NLL of every window, one at a time, from `runtime.logits(ids)` (a LlamaCppRuntime, or anything with that method)."""
    per_target = []
    for window in windows:
        logits = runtime.logits(window.ids)
        if logits.shape[0] < len(window.ids):
            raise BabelpruneError(f"The runtime returned logits for {logits.shape[0]} of a window's {len(window.ids)} tokens.")
        per_target.append(target_nll(logits, window.ids))
        if on_window is not None:
            on_window(1)
    return window_totals(windows, per_target)


# ----- speed ---------------------------------------------------------------------------


def _median_rate(tokens: int, seconds: list[float]) -> float:
    return tokens / statistics.median(seconds)


def measure_llama_cpp_speeds(files: Sequence[GgufFacts], *, seq_len: int = 128, runs: int = 5, warmup: int = 2,
                             threads: int | None = None, new_tokens: int = 64, prompt_tokens: int = 16,
                             seed: int = 0) -> list[dict]:
    """Prompt processing and generation speed of each file at batch 1, round-robin; one dict of figures each.

    Each dict: prompt_tokens_per_s (a `seq_len`-token prompt), generate_tokens_per_s (None when
    `new_tokens` is 0) and the timed samples in milliseconds.
    """
    if min(seq_len, runs, prompt_tokens) < 1 or min(warmup, new_tokens) < 0:
        raise BabelpruneError(f"Sequence length, runs and prompt tokens must be at least 1, warm-up and new tokens at least 0 "
                              f"(got {seq_len}, {runs}, {prompt_tokens}, {warmup}, {new_tokens}); fix the options.")
    n_ctx = max(seq_len, prompt_tokens + new_tokens)
    for facts in files:
        if facts.context_length is not None and n_ctx > facts.context_length:
            raise BabelpruneError(f"{facts.path.name} was built for {facts.context_length} positions, fewer than the {n_ctx} "
                                  "that --seq-len (or --prompt-tokens plus --new-tokens) asks for; lower them.")
    runtimes = [LlamaCppRuntime(facts.path, n_ctx, logits_all=False, threads=threads) for facts in files]
    try:
        rng = np.random.default_rng(seed)
        prompts = [rng.integers(0, runtime.n_vocab, size=seq_len).tolist() for runtime in runtimes]
        starts = [rng.integers(0, runtime.n_vocab, size=prompt_tokens).tolist() for runtime in runtimes]
        samples: list[dict[str, list[float]]] = [{"prompt": [], "generate": []} for _ in runtimes]
        for round_ in range(warmup + runs):
            for offset in range(len(runtimes)):
                index = (round_ + offset) % len(runtimes)
                runtime, timed = runtimes[index], round_ >= warmup
                runtime.reset()
                started = time.perf_counter()
                runtime.decode(prompts[index])
                if timed:
                    samples[index]["prompt"].append(time.perf_counter() - started)
                if new_tokens:
                    runtime.reset()
                    runtime.decode(starts[index])
                    started = time.perf_counter()
                    for _ in range(new_tokens):
                        runtime.decode([int(np.argmax(runtime.last_logits()))])
                    if timed:
                        samples[index]["generate"].append(time.perf_counter() - started)
    finally:
        for runtime in runtimes:
            runtime.close()
    return [
        {
            "prompt_tokens_per_s": _median_rate(seq_len, figures["prompt"]),
            "generate_tokens_per_s": _median_rate(new_tokens, figures["generate"]) if new_tokens else None,
            "samples_ms": {name: [round(1000 * s, 4) for s in values] for name, values in figures.items() if values},
        }
        for figures in samples
    ]
