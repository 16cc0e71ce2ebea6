"""Peak resident memory (RSS) of one model, measured in a fresh process.

A process's peak resident memory only grows, and models loaded earlier stay
resident, so measuring several models in one process tells nothing after
the first. Each model is therefore measured by a child process of its own:

    python -m babelprune.evaluate.memory SOURCE --seq-len 128 --batch 8 --new-tokens 64 ...

It imports babelprune, loads SOURCE with `load_model` (the model's folder,
or its hub id), runs each probe of `bench-speed` once (evaluate/probes.py:
one sequence, one batch, the body alone, greedy generation) and prints one
JSON line:

* "base": resident bytes after the imports, before loading (the interpreter,
  torch, transformers: the same for every model);
* "loaded": resident bytes right after loading;
* "peak": the process's peak resident bytes at the end, loading and running
  included, for the whole process: Linux's VmHWM (/proc/self/status), the
  high-water mark of the process since it started the interpreter. Not
  getrusage's ru_maxrss: a child's ru_maxrss starts from its parent's
  resident size at the fork, so a child of a large benchmark process would
  report the parent's size. Elsewhere ru_maxrss is the only figure there is.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

from babelprune.errors import BabelpruneError
from babelprune.models.base import LoadedModel
from babelprune.records.speed import PeakMemory  # noqa: F401 - re-exported: the record lives below

# ru_maxrss is in kilobytes on Linux and in bytes on macOS.
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024


def current_rss() -> int:
    """Resident bytes of this process now (Linux: /proc; elsewhere the peak so far, an upper bound)."""
    statm = Path("/proc/self/statm")
    if statm.is_file():
        return int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return peak_rss()


def peak_rss() -> int:
    """The peak resident bytes of this process so far (VmHWM on Linux, see the module docstring)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # reported in kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _MAXRSS_UNIT


def memory_source(loaded: LoadedModel, stored: bool) -> str:
    """What the child process loads: the model's folder when its stored weights match it, else its hub id.

    stored: whether the folder's weights match the model in memory (see evaluate/sizes.py).
    """
    if loaded.path is not None and stored:
        return str(loaded.path)
    if loaded.path is None and not Path(loaded.spec).expanduser().exists():
        return loaded.spec  # a hub id: the child loads it from the same cache
    raise BabelpruneError(
        f"The peak memory of {loaded.spec} is measured by loading it again in a fresh process, but it changed "
        "after it was loaded from its folder; save it to a folder first, or measure without memory."
    )


def measure_peak_memory(source: str, seq_len: int, batch_size: int, new_tokens: int, prompt_tokens: int,
                        threads: int | None = None, seed: int = 0, dtype: str = "float32") -> PeakMemory:
    """Load `source` in `dtype` on the CPU in a child process, run every probe once, and return its resident memory."""
    command = [sys.executable, "-m", "babelprune.evaluate.memory", source, "--seq-len", str(seq_len),
               "--batch", str(batch_size), "--new-tokens", str(new_tokens), "--prompt-tokens", str(prompt_tokens),
               "--seed", str(seed), "--dtype", dtype] + (["--threads", str(threads)] if threads is not None else [])
    # The child imports the same babelprune as this process, whatever its working folder.
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path})
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        reason = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise BabelpruneError(f"Measuring the peak memory of {source} in a fresh process failed ({reason}); measure without memory.")
    return PeakMemory.model_validate_json(lines[-1])


def _child(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Peak resident memory of one model (run by bench-speed).")
    parser.add_argument("source")
    parser.add_argument("--seq-len", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--new-tokens", type=int, required=True)
    parser.add_argument("--prompt-tokens", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args(argv)

    import torch

    from babelprune.evaluate.probes import all_probes
    from babelprune.formats.loading import load_model

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    base = current_rss()
    loaded = load_model(args.source, dtype=args.dtype)
    after_load = current_rss()
    with torch.inference_mode():
        for call in all_probes(loaded, args.seq_len, args.batch, args.new_tokens, args.prompt_tokens, [], args.seed).values():
            call()
    print(json.dumps(PeakMemory(base=base, loaded=after_load, peak=peak_rss()).model_dump()), flush=True)


if __name__ == "__main__":
    try:
        _child()
    except BabelpruneError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
