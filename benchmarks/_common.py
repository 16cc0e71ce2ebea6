"""Shared pieces of the benchmarks: dense-weight snapshots and a peak-memory sampler."""

from __future__ import annotations

import threading
import time

import psutil
import torch

from babelprune.models.adapters import adapter_for, weight_matrix
from babelprune.prune.engine import named_linears


def snapshot(model) -> dict[str, torch.Tensor]:
    """A copy of every block linear's (out, in) weight."""
    return {name: weight_matrix(m).clone() for name, m in named_linears(model, adapter_for(model)).items()}


def restore(model, weights: dict[str, torch.Tensor]) -> None:
    for name, module in named_linears(model, adapter_for(model)).items():
        weight_matrix(module).copy_(weights[name])


def rss() -> int:
    return psutil.Process().memory_info().rss


class PeakRSS:
    """Samples the process's resident memory every few milliseconds while active."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRSS:
        self.peak = rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())
