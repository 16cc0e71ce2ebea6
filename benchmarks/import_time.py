"""How long the front door takes: `import babelprune`, `import babelprune.api` and `babelprune --help`.

Each command runs in a fresh Python process (what a user pays at every
start), once untimed to warm the file cache, then `--repeats` times; the
table gives the median wall time and, for the imports, whether torch was
loaded. `import babelprune` should stay far below `import babelprune.api`,
which brings torch and transformers.

    python benchmarks/import_time.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from _common import repeats_arg, timed_median, write_result_table

BENCHMARK = {"minutes": 2}

TORCH_CHECK = "import sys; print('torch' in sys.modules)"


def commands() -> dict[str, list[str]]:
    """Label -> the command line timed, each in a new process."""
    cli = shutil.which("babelprune") or str(Path(sys.executable).with_name("babelprune"))
    return {
        "import babelprune": [sys.executable, "-c", "import babelprune"],
        "import babelprune.api": [sys.executable, "-c", "import babelprune.api"],
        "babelprune --help": [cli, "--help"],
    }


def run(command: list[str]) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def loads_torch(module: str) -> bool:
    return run([sys.executable, "-c", f"import {module}; {TORCH_CHECK}"]).strip() == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=repeats_arg, default=5, help="timed runs per command (median)")
    args = parser.parse_args()
    rows = []
    for label, command in commands().items():
        seconds = timed_median(lambda command=command: run(command), repeats=args.repeats, warmup=1)
        module = label.removeprefix("import ") if label.startswith("import ") else None
        torch_loaded = ("yes" if loads_torch(module) else "no") if module else "-"
        rows.append(f"| `{label}` | {seconds * 1000:.0f} | {torch_loaded} |")
        print(f"{label:<24} {seconds * 1000:8.0f} ms   torch loaded: {torch_loaded}", flush=True)
    body = "\n".join([
        f"Median wall time of {args.repeats} runs, each in a new process, after one warm-up run.",
        "",
        "| command | median ms | loads torch |",
        "|---|---:|---|",
        *rows,
    ])
    write_result_table("import_time", "Start-up time of the front door", body)


if __name__ == "__main__":
    main()
