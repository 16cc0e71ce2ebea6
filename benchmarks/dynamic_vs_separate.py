"""Dynamic Sparsification vs pruning each size separately: e5-small on bible-genre, per language.

    python benchmarks/dynamic_vs_separate.py [--levels 0.3,0.5,0.7] [--steps 100] [--threads 1]
        [--langs en,es,fr,zh,ru,ar,hi,sw] [--importance gradient] [--out runs/dynamic-vs-separate]
        [--lm-steps 0]

Zero-shot from English: every model is fine-tuned on English verses only and
scored on the test verses of every language of --langs.

* dynamic: ONE e5-small is ranked (gradient importance on Bible calibration
  windows of all --langs), reordered and trained with the sandwich rule
  (full width + the smallest + one random level per step, in-place
  distillation from the full width); each level is then sliced from it
  without any further training.
* separate: for each level, a fresh e5-small is pruned with the same
  importance and the same per-layer widths (`structured_prune`, ranking
  "per-layer"), then fine-tuned alone for the same number of optimizer steps
  with the same recipe (one width, no distillation).

Each stage's scores are written to --out as they finish and reused when the
command runs again with the same settings: a stage is keyed on a hash of
everything that decides it (the arguments that reach it, the model spec and
the code under src/), and a stage whose key differs is run again (the script
says so). The tables go to docs/results/dynamic_vs_separate.md. With --lm-steps N, a short causal-LM run is added:
gemma3-270m distilled from its dense copy on Bible calibration windows, with
the held-out loss of each width before and after.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from _common import cached_stage, source_fingerprint, write_result_table
from babelprune.api import calibrate
from babelprune.data.tasks import get_task
from babelprune.evaluate.task_metrics import task_score
from babelprune.finetune.heads import TaskHead, predict
from babelprune.models.adapters import adapter_for
from babelprune.formats.loading import load_model
from babelprune.prune.structured import structured_prune
from babelprune.finetune.dynamic import (
    DynamicConfig,
    DynamicModel,
    level_selection,
    permute_units,
    rank_units,
    train_dynamic,
    unit_orders,
    width_masks,
)
from babelprune.prune.structured.selection import apply_selection
from babelprune.prune.structured.units import layer_layouts

UNITS = ("heads", "ffn")

BENCHMARK = {"minutes": 25}


def _floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def _accuracies(head: TaskHead, tokenizer, task, langs: list[str], config: DynamicConfig) -> dict[str, float]:
    scores = {}
    for lang in langs:
        examples = task.examples(lang, "test")
        predicted = predict(head, tokenizer, examples, 64, config.max_length, config.text_prefix)
        scores[lang] = task_score("accuracy", predicted, [e.label for e in examples])
    return scores


def _sliced_head(dynamic: DynamicModel, level: float) -> TaskHead:
    """The dynamic model cut to `level` in memory (the same cut `slice_width` saves)."""
    encoder = copy.deepcopy(dynamic.loaded.model)
    with torch.no_grad():
        apply_selection(encoder, dynamic.selection(level))
    source = dynamic.head
    head = TaskHead(encoder, source.kind, source.classifier.out_features, source.pooling)
    head.classifier.load_state_dict(source.classifier.state_dict())
    return head.eval()


def encoder_stage_fields(args, code: str) -> dict:
    """What decides an encoder stage (dynamic or separate): every argument that reaches it, the model, the code."""
    return {
        "model": args.model, "langs": args.langs, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
        "max_length": args.max_length, "max_per_label": args.max_per_label, "max_eval": args.max_eval,
        "importance": args.importance, "calib_samples": args.calib_samples, "threads": args.threads, "code": code,
    }


def lm_stage_fields(args, code: str) -> dict:
    return {
        "model": "gemma3-270m", "langs": args.langs, "lm_steps": args.lm_steps, "lm_levels": args.lm_levels,
        "lm_windows": args.lm_windows, "lm_importance": args.lm_importance, "threads": args.threads, "code": code,
    }


def _dynamic(args, task, train, calibration_of, langs) -> dict:
    loaded = load_model(args.model)
    config = _config(args, args.levels)
    result = train_dynamic(loaded, config, task, train, calibration_of(loaded), progress=False)
    scores = {str(level): _accuracies(_sliced_head(result.model, level), loaded.tokenizer, task, langs, config)
              for level in config.levels}
    achieved = {str(level): value for level, value in result.achieved.items()}
    return {"scores": scores, "achieved": achieved, "train_seconds": result.seconds}


def _separate(args, task, train, calibration_of, langs, level: float) -> dict:
    loaded = load_model(args.model)
    pruned = structured_prune(loaded, set(UNITS), args.importance, level, calibration_of(loaded), progress=False,
                              gqa="query", ranking="per-layer")
    config = _config(args, []).model_copy(update={"importance": "magnitude", "distill": False})  # one width: plain fine-tuning
    result = train_dynamic(loaded, config, task, train, progress=False)
    return {"scores": _accuracies(result.model.head, loaded.tokenizer, task, langs, config),
            "achieved": pruned.achieved_sparsity, "train_seconds": result.seconds}


def _config(args, levels: list[float]) -> DynamicConfig:
    return DynamicConfig(levels=levels, samples_per_step=1, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         importance=args.importance, units=UNITS, max_length=args.max_length, distill=True, temperature=2.0)


def _table(dynamic: dict, separate: dict[float, dict], levels: list[float]) -> str:
    rows = ["| sparsity | achieved | dynamic mean | separate mean | dynamic - separate | dynamic worst | separate worst |",
            "|---|---|---|---|---|---|---|"]
    for level in [0.0, *levels]:
        dyn = dynamic["scores"][str(level)]
        sep = separate[level]["scores"] if level in separate else None
        mean = sum(dyn.values()) / len(dyn)
        worst = min(dyn, key=dyn.get)
        if sep is None:
            rows.append(f"| {level:.1f} | {dynamic['achieved'][str(level)]:.3f} | {mean:.3f} | | | {worst} {dyn[worst]:.3f} | |")
            continue
        sep_mean, sep_worst = sum(sep.values()) / len(sep), min(sep, key=sep.get)
        rows.append(f"| {level:.1f} | {dynamic['achieved'][str(level)]:.3f} | {mean:.3f} | {sep_mean:.3f} | {mean - sep_mean:+.3f} "
                    f"| {worst} {dyn[worst]:.3f} | {sep_worst} {sep[sep_worst]:.3f} |")
    return "\n".join(rows)


def _per_language(dynamic: dict, separate: dict[float, dict], levels: list[float], langs: list[str]) -> str:
    rows = ["| language | " + " | ".join(f"{lv:.1f} dyn / sep" for lv in levels) + " |", "|---|" + "---|" * len(levels)]
    for lang in langs:
        cells = [f"{dynamic['scores'][str(lv)][lang]:.3f} / {separate[lv]['scores'][lang]:.3f}" for lv in levels]
        rows.append(f"| {lang} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _lm_demo(args, langs: list[str]) -> dict:
    """gemma3-270m: held-out next-token loss of each width, before and after a short distillation run."""
    loaded = load_model("gemma3-270m")
    windows = calibrate(loaded, "bible", langs, samples_per_language=args.lm_windows + 1, seq_len=64, seed=1)
    rows = windows.rows()
    train_rows = torch.cat([r[:-1] for r in rows.values()])
    held_rows = torch.stack([r[-1] for r in rows.values()])
    train = type(windows)(windows.ids[train_rows], tuple(windows.languages[i] for i in train_rows.tolist()), windows.corpus)
    held = windows.ids[held_rows]  # (L, 64): one window per language
    config = DynamicConfig(levels=args.lm_levels, steps=args.lm_steps, batch_size=2, lr=1e-4, importance=args.lm_importance,
                           samples_per_step=1, distill=True, distill_weight=0.5, teacher="dense", warmup=0.0)

    def losses(model) -> dict[str, float]:
        out = {}
        for level in config.levels:
            with torch.no_grad(), width_masks(model, level_selection(model, level, UNITS)):
                logits = model(input_ids=held, use_cache=False).logits[:, :-1]
                out[str(level)] = float(torch.nn.functional.cross_entropy(logits.transpose(1, 2), held[:, 1:]))
        return out

    model = loaded.model
    importance = rank_units(loaded, UNITS, config.importance, train)
    permute_units(model, unit_orders(importance, layer_layouts(model, adapter_for(model))))
    before = losses(model)  # reordered, untrained: what cutting the dense model at once gives
    # Ranking again finds the units already in order (the same importance, now sorted): nothing moves.
    result = train_dynamic(loaded, config, calibration=train, progress=False)
    return {"before": before, "after": losses(loaded.model), "train_seconds": result.seconds, "steps": config.steps,
            "train_windows": int(train.ids.shape[0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="e5-small")
    parser.add_argument("--levels", type=_floats, default=[0.3, 0.5, 0.7])
    parser.add_argument("--langs", default="en,es,fr,zh,ru,ar,hi,sw")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--max-per-label", type=int, default=100, help="English training verses per genre")
    parser.add_argument("--max-eval", type=int, default=70, help="test verses per language (balanced over genres)")
    parser.add_argument("--importance", default="gradient", choices=["magnitude", "gradient", "activation"])
    parser.add_argument("--calib-samples", type=int, default=4, help="calibration windows of 64 tokens per language")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)")
    parser.add_argument("--out", type=Path, default=Path("runs/dynamic-vs-separate"))
    parser.add_argument("--lm-steps", type=int, default=0, help="also run the gemma3-270m demo for this many steps")
    parser.add_argument("--lm-levels", type=_floats, default=[0.25, 0.5])
    parser.add_argument("--lm-windows", type=int, default=4, help="training windows per language for the LM demo")
    parser.add_argument("--lm-importance", default="activation", choices=["magnitude", "gradient", "activation"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    langs = [lang for lang in args.langs.split(",") if lang]
    started = time.perf_counter()
    task = get_task("bible-genre", languages=langs, max_per_label=args.max_per_label, max_eval=args.max_eval)
    train = task.examples("en", "train")
    calibration = {}

    def calibration_of(loaded):  # the same windows for every model (same tokenizer)
        if "windows" not in calibration:
            calibration["windows"] = calibrate(loaded, "bible", langs, samples_per_language=args.calib_samples, seq_len=64)
        return calibration["windows"]

    def log(name: str, stage: dict) -> None:
        print(f"{time.perf_counter() - started:6.0f}s  {name} done ({stage['seconds']:.0f}s)", flush=True)

    code = source_fingerprint()
    encoder_fields = encoder_stage_fields(args, code)
    dynamic = cached_stage(args.out / "dynamic.json", encoder_fields | {"levels": args.levels},
                           lambda: _dynamic(args, task, train, calibration_of, langs), "dynamic")
    log("dynamic", dynamic)
    separate = {}
    for level in args.levels:
        separate[level] = cached_stage(args.out / f"separate-{level}.json", encoder_fields | {"level": level},
                                       lambda level=level: _separate(args, task, train, calibration_of, langs, level),
                                       f"separate {level}")
        log(f"separate {level}", separate[level])
    n_test = len(task.examples("en", "test"))
    setup = (f"{args.model} on bible-genre, zero-shot from English: trained on {len(train)} English verses "
             f"({args.steps} optimizer steps of {args.batch_size}, lr {args.lr}, {args.importance} importance, "
             f"{args.threads} torch thread(s)); accuracy on {n_test} test verses in each of {len(langs)} languages "
             f"({', '.join(langs)}). Training time: dynamic {dynamic['train_seconds']:.0f} s; separate "
             + " + ".join(f"{separate[level]['train_seconds']:.0f}" for level in args.levels) + " s.")
    summary = _table(dynamic, separate, args.levels) + "\n\n" + _per_language(dynamic, separate, args.levels, langs)
    if args.lm_steps:
        lm = cached_stage(args.out / f"lm-{args.lm_steps}.json", lm_stage_fields(args, code),
                          lambda: _lm_demo(args, langs), "lm demo")
        log("lm demo", lm)
        summary += (f"\n\ngemma3-270m, {lm['steps']} distillation steps on {lm['train_windows']} Bible windows "
                    f"({lm['train_seconds']:.0f} s):\n\n| gemma3-270m width | held-out loss before | after |\n|---|---|---|\n")
        summary += "\n".join(f"| {level} | {lm['before'][level]:.3f} | {lm['after'][level]:.3f} |" for level in lm["before"])
    print(summary)
    print(f"total {time.perf_counter() - started:.0f}s")
    write_result_table("dynamic_vs_separate", "Dynamic Sparsification against separately pruned models",
                       setup + "\n\n" + summary, threads=args.threads)


if __name__ == "__main__":
    main()
