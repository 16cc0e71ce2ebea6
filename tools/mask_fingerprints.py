"""Fingerprints of pruned weights, to show that a change of the code left the pruning bit-identical.

For each configuration below, gemma3-270m is pruned at 50% on the default
calibration (8 Bible windows of 256 tokens in each of the 8 default
languages), and the sha256 of every tensor of its state dict (its zero
pattern and its values, in name order) is printed and written as JSON.
Run it before and after a refactoring and compare the two files:

    python tools/mask_fingerprints.py --out before.json
    ... change the code ...
    python tools/mask_fingerprints.py --out after.json --compare before.json

With --compare, the exit status is 1 when any fingerprint differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import babelprune

CONFIGS = {
    "wanda": {"method": "wanda", "sparsity": 0.5},
    "mwanda+cwl+refit": {"method": "mwanda", "sparsity": 0.5, "allocation": "cwl", "reconstruct": {}},
    "sparsegpt": {"method": "sparsegpt", "sparsity": 0.5},
}


def fingerprint(fields: dict) -> str:
    """sha256 over (name, zero pattern, values) of every tensor of gemma3-270m pruned as `fields` say."""
    model = babelprune.load_model("gemma3-270m")
    calibration = babelprune.calibrate(model, "bible")
    babelprune.prune(model, babelprune.PruneConfig(**fields), calibration, progress=False)
    digest = hashlib.sha256()
    for name, tensor in sorted(model.model.state_dict().items()):
        digest.update(name.encode())
        digest.update((tensor == 0).numpy().tobytes())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the fingerprints")
    parser.add_argument("--compare", type=Path, help="fingerprints written earlier; exit 1 when any differs")
    args = parser.parse_args()
    found = {}
    for name, fields in CONFIGS.items():
        found[name] = fingerprint(fields)
        print(f"{name:18s} {found[name]}", flush=True)
    args.out.write_text(json.dumps(found, indent=1) + "\n", encoding="utf-8")
    if args.compare is None:
        return 0
    earlier = json.loads(args.compare.read_text(encoding="utf-8"))
    differing = [name for name in CONFIGS if earlier.get(name) != found[name]]
    print("identical" if not differing else f"different: {', '.join(differing)}")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
