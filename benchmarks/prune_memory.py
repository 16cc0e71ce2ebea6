"""Peak memory of a whole pruning run, in memory and with --offload disk, as ratios measured in fresh processes.

    python benchmarks/prune_memory.py [--model gemma3-270m] [--samples 8] [--depths 1,2,4] [--only LABEL,...]

Each row runs in a fresh process that imports babelprune, notes its resident
memory, then loads the model (or opens it, with --offload disk), calibrates,
prunes at 50% and writes the output folder (HF weights and sparse copy),
sampling its resident memory all along. It reports, over the dense model's
bytes (its safetensors tensors), the peak while pruning and the peak of the
whole run (saving included), both minus what the process held before the
model was loaded; with --offload disk pruning and saving are one phase.

Rows: --model on 8 Bible languages x --samples windows x 256 tokens (wanda
with every window in one forward, wanda, sparsegpt and mwanda + refit with
the default 8 windows per forward, wanda with --offload disk), then a tiny
random Llama (hidden 512, FFN 2048, 4 blocks) made --depths times deeper,
in memory and with --offload disk, on random token windows.
Writes docs/results/prune_memory.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import write_result_table

BENCHMARK = {"minutes": 30}

# (label, method, windows per forward (0: all at once), --reconstruct, --offload disk)
MODEL_ROWS = [
    ("wanda, all windows at once", "wanda", 0, False, False),
    ("wanda", "wanda", 8, False, False),
    ("sparsegpt", "sparsegpt", 8, False, False),
    ("mwanda + refit", "mwanda", 8, True, False),
    ("wanda, --offload disk", "wanda", 8, False, True),
]
TINY = dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8, num_key_value_heads=8, vocab_size=1024,
            max_position_embeddings=512)
TINY_BLOCKS = 4


def tensor_bytes(folder: Path) -> int:
    """Bytes of every tensor in the folder's safetensors files (the dense model, tied tensors once)."""
    from safetensors import safe_open

    from babelprune.formats.hf import weight_files

    total = 0
    for file in weight_files(folder, "re-create it"):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                part = handle.get_slice(key)
                count = 1
                for size in part.get_shape():
                    count *= size
                total += count * {"F32": 4, "F16": 2, "BF16": 2}.get(part.get_dtype(), 8)
    return total


def measure(args) -> dict:
    """One row, in this process."""
    import torch

    from _common import PeakRSS, rss
    from babelprune.api import calibrate, load_model, open_offloaded, prune, prune_offloaded, save_pruned
    from babelprune.prune.calibration import Calibration
    from babelprune.prune.config import PruneConfig, ReconstructConfig

    folder = Path(args.folder)
    # uniform: the rows (and docs/results/prune_memory.md) are mwanda's scoring without its default CWL
    config = PruneConfig(method=args.method, calib_batch=args.calib_batch or None, allocation="uniform",
                         reconstruct=ReconstructConfig() if args.reconstruct else None)

    def calibration_for(loaded):
        if args.random_windows:  # the tiny model has no tokenizer: random ids, two "languages"
            ids = torch.randint(4, TINY["vocab_size"], (2 * args.samples, args.seq_len), generator=torch.Generator().manual_seed(0))
            return Calibration(ids, tuple(lang for lang in ("aa", "bb") for _ in range(args.samples)), "random-ids")
        return calibrate(loaded, "bible", args.langs.split(","), args.samples, args.seq_len)

    out = Path(tempfile.mkdtemp()) / "out"
    before = rss()
    try:
        with PeakRSS() as whole:
            if args.offload:  # pruning and writing are one phase
                offloaded = open_offloaded(str(folder))
                prune_offloaded(offloaded, config, calibration_for(offloaded.loaded), out, progress=False)
            else:
                loaded = load_model(str(folder))
                calibration = calibration_for(loaded)
                with PeakRSS() as during:
                    result = prune(loaded, config, calibration, progress=False)
                save_pruned(loaded, result, out)
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    pruning = whole.peak if args.offload else during.peak
    dense = tensor_bytes(folder)
    return {"prune_ratio": (pruning - before) / dense, "run_ratio": (whole.peak - before) / dense, "dense_mb": dense / 1e6}


def deeper_tiny_folder(root: Path, depth: int) -> Path:
    """A tiny random Llama of TINY_BLOCKS * depth blocks, saved as a safetensors folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    folder = root / f"tiny-x{depth}"
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(num_hidden_layers=TINY_BLOCKS * depth, **TINY)).save_pretrained(folder)
    # Loading wants a tokenizer; the windows are random ids, so a four-word one does.
    words = Tokenizer(models.WordLevel(vocab={"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3}, unk_token="<unk>"))
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="<unk>", pad_token="<pad>").save_pretrained(folder)
    return folder


def run_row(args, folder: Path, method: str, batch: int, refit: bool, offload: bool, random_windows: bool) -> dict:
    command = [sys.executable, __file__, "--folder", str(folder), "--method", method, "--calib-batch", str(batch),
               "--samples", str(args.samples), "--seq-len", str(args.seq_len), "--langs", args.langs]
    command += ["--reconstruct"] * refit + ["--offload"] * offload + ["--random-windows"] * random_windows
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{method} ({folder.name}) failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def result_markdown(args, model_rows: list[tuple[str, dict]], depth_rows: list[tuple[int, dict, dict]]) -> str:
    lines = [
        f"Each row in a fresh process: load (or open, with --offload disk), calibrate, prune at 50%, write the output "
        f"folder (HF weights and sparse copy). Ratios: peak resident memory minus what the process held before the "
        f"model was loaded, over the dense model's tensor bytes; with --offload disk pruning and writing are one phase.",
        "",
    ]
    if model_rows:
        first = model_rows[0][1]
        lines += [
            f"### {args.model}, {len(args.langs.split(','))} Bible languages x {args.samples} windows x {args.seq_len} tokens",
            "",
            f"Dense model: {first['dense_mb']:.0f} MB.",
            "",
            "| configuration | peak while pruning | peak of the whole run |",
            "|---|---|---|",
            *(f"| {label} | {row['prune_ratio']:.2f} | {row['run_ratio']:.2f} |" for label, row in model_rows),
            "",
        ]
    if depth_rows:
        lines += [
            f"### A tiny random Llama made deeper ({TINY_BLOCKS} blocks x depth), wanda, 8 windows per forward",
            "",
            f"Random token windows: 2 x {args.samples} of {args.seq_len} tokens.",
            "",
            "| depth | blocks | dense MB | in memory: peak of the run | --offload disk: peak of the run |",
            "|---|---|---|---|---|",
            *(f"| x{depth} | {TINY_BLOCKS * depth} | {memory['dense_mb']:.0f} | {memory['run_ratio']:.2f} "
              f"({memory['run_ratio'] * memory['dense_mb']:.0f} MB) | {disk['run_ratio']:.2f} "
              f"({disk['run_ratio'] * disk['dense_mb']:.0f} MB) |" for depth, memory, disk in depth_rows),
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--langs", default="en,es,fr,zh,ru,ar,hi,sw")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--depths", default="1,2,4", help="how many times deeper the tiny model is made")
    parser.add_argument("--only", help="comma-separated labels of the model rows to run, or 'depth' for the tiny rows only")
    parser.add_argument("--folder", help="(internal) measure this folder only and print JSON")
    parser.add_argument("--method", default="wanda")
    parser.add_argument("--calib-batch", type=int, default=8)
    parser.add_argument("--reconstruct", action="store_true")
    parser.add_argument("--offload", action="store_true")
    parser.add_argument("--random-windows", action="store_true")
    args = parser.parse_args()
    if args.folder:  # child process: one measurement, as JSON
        print(json.dumps(measure(args)))
        return
    from babelprune.formats.loading import resolve_spec

    only = args.only.split(",") if args.only else None
    model_rows = []
    for label, method, batch, refit, offload in MODEL_ROWS:
        if only and label not in only:
            continue
        row = run_row(args, Path(resolve_spec(args.model)), method, batch, refit, offload, False)
        model_rows.append((label, row))
        print(f"{label:28s} pruning {row['prune_ratio']:.2f}  whole run {row['run_ratio']:.2f}", flush=True)
    depth_rows = []
    if not only or "depth" in only:
        with tempfile.TemporaryDirectory() as root:
            for depth in (int(d) for d in args.depths.split(",")):
                folder = deeper_tiny_folder(Path(root), depth)
                memory, disk = (run_row(args, folder, "wanda", 8, False, offload, True) for offload in (False, True))
                depth_rows.append((depth, memory, disk))
                print(f"tiny x{depth}: in memory {memory['run_ratio']:.2f} ({memory['run_ratio'] * memory['dense_mb']:.0f} MB), "
                      f"offload {disk['run_ratio']:.2f} ({disk['run_ratio'] * disk['dense_mb']:.0f} MB)", flush=True)
    write_result_table("prune_memory", "Pruning: peak memory in memory and with --offload disk",
                       result_markdown(args, model_rows, depth_rows))


if __name__ == "__main__":
    main()
