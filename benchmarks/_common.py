"""Shared pieces of the benchmarks: dense-weight snapshots and a peak-memory sampler."""

from __future__ import annotations

import threading
import time

import psutil

from babelprune.prune.engine import restore_linears, snapshot_linears


# The dense weights are saved and put back between methods by the engine's own helpers.
snapshot = snapshot_linears
restore = restore_linears


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
