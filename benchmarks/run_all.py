"""Rerun every benchmark with its documented default budget, cheapest first, and stop at the first failure.

    python benchmarks/run_all.py [--only a,b] [--skip a,b] [--max-minutes N] [--list]

A script in benchmarks/ is a benchmark when it defines, at module level, a
literal dict named BENCHMARK:

    BENCHMARK = {"minutes": 3}                    # estimated wall time on 2 shared cores
    BENCHMARK = {"minutes": 25, "args": ["--x", "1"]}   # extra arguments for this run
    BENCHMARK = {"minutes": 10, "needs": "cuda"}  # skipped, and said so, on a machine without CUDA

The dict is read without importing the script (so listing is instant). Each
benchmark runs as `python benchmarks/<name>.py [args]` from the repository
root, in order of its estimate, and writes its own table into
docs/results/<name>.md. Scripts without the marker (helpers, work in
progress) are listed and skipped.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO = BENCHMARKS_DIR.parent
MARKER = "BENCHMARK"


@dataclass(frozen=True)
class Benchmark:
    name: str
    path: Path
    minutes: float
    args: tuple[str, ...] = ()
    needs: str | None = None  # "cuda": run only where torch sees a CUDA device


def read_marker(path: Path) -> dict | None:
    """The literal BENCHMARK dict of a script, or None when it has none."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == MARKER for t in node.targets):
            marker = ast.literal_eval(node.value)
            if not isinstance(marker, dict) or "minutes" not in marker:
                raise SystemExit(f"{path.name}: {MARKER} must be a dict with at least 'minutes', got {marker!r}")
            return marker
    return None


def discover(directory: Path = BENCHMARKS_DIR) -> tuple[list[Benchmark], list[str]]:
    """(benchmarks in order of estimated minutes, names of the scripts without a marker)."""
    found, unmarked = [], []
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_") or path.resolve() == Path(__file__).resolve():
            continue
        marker = read_marker(path)
        if marker is None:
            unmarked.append(path.stem)
            continue
        found.append(Benchmark(path.stem, path, float(marker["minutes"]), tuple(marker.get("args", ())), marker.get("needs")))
    found.sort(key=lambda b: (b.minutes, b.name))
    return found, unmarked


def select(benchmarks: list[Benchmark], only: str, skip: str, max_minutes: float | None) -> list[Benchmark]:
    wanted = {n for n in only.split(",") if n}
    unwanted = {n for n in skip.split(",") if n}
    unknown = (wanted | unwanted) - {b.name for b in benchmarks}
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))}; see --list")
    chosen = [b for b in benchmarks if (not wanted or b.name in wanted) and b.name not in unwanted]
    if max_minutes is not None:
        chosen = [b for b in chosen if b.minutes <= max_minutes]
    return chosen


def cuda_available() -> bool:
    import torch  # here, not at the top: listing the benchmarks stays instant

    return torch.cuda.is_available()


def run(benchmark: Benchmark) -> float:
    """Run one benchmark; return its wall time in seconds, or exit with a clear message if it fails."""
    if benchmark.needs == "cuda" and not cuda_available():
        print(f"\n=== {benchmark.name}: skipped, it needs a CUDA device and this machine has none", flush=True)
        return 0.0
    command = [sys.executable, str(benchmark.path.relative_to(REPO)), *benchmark.args]
    print(f"\n=== {benchmark.name} (about {benchmark.minutes:g} min): {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    code = subprocess.run(command, cwd=REPO).returncode
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"\nbenchmark {benchmark.name} failed (exit code {code}) after {seconds:.0f} s; "
                         "the benchmarks after it were not run. Rerun it alone to see the error: "
                         f"python {benchmark.path.relative_to(REPO)}")
    print(f"=== {benchmark.name}: {seconds:.0f} s", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--skip", default="", help="comma-separated benchmark names")
    parser.add_argument("--max-minutes", type=float, help="only the benchmarks estimated at most this long")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and their estimates, run nothing")
    args = parser.parse_args()
    benchmarks, unmarked = discover()
    chosen = select(benchmarks, args.only, args.skip, args.max_minutes)
    if unmarked:
        print(f"not benchmarks (no {MARKER} marker): {', '.join(unmarked)}")
    if args.list:
        for b in benchmarks:
            print(f"{b.name:24s} about {b.minutes:5g} min  {' '.join(b.args)}")
        return
    print(f"running {len(chosen)} benchmarks, estimated {sum(b.minutes for b in chosen):g} min in all: "
          + ", ".join(b.name for b in chosen), flush=True)
    walls = {b.name: run(b) for b in chosen}
    print("\nwall times: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in walls.items()))


if __name__ == "__main__":
    main()
