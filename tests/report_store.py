"""A results store filled by hand for the report's tests: made-up numbers whose changes are known in advance.

Four languages over two resource levels, six windows each. The dense run's
window NLLs are fixed; each pruned run multiplies every window's NLL by a
factor per language, so its relative change of bits per byte is that factor
minus 1 (e.g. +30.0% for Swahili under wanda at 50%). English alternates
+10% and -10% over its windows under every method: its change is small and
its interval contains 0 (marked n.s.).
"""

from __future__ import annotations

import math
from pathlib import Path

from babelprune.report.finetune_records import FinetuneResult, TaskScore
from babelprune.report.records import EvalResult, LMScore, ModelInfo, PruningInfo
from babelprune.sweep.store import ResultsStore, RunRecord

LANGUAGES = [("en", "English", "high"), ("fr", "French", "high"), ("sw", "Swahili", "low"), ("yo", "Yoruba", "low")]
WINDOW_BYTES = [100, 120, 90, 110, 80, 100]
DENSE_NLL = {
    "en": [50.0, 62.0, 44.0, 57.0, 41.0, 49.0],
    "fr": [55.0, 64.0, 47.0, 60.0, 43.0, 52.0],
    "sw": [70.0, 85.0, 61.0, 79.0, 55.0, 72.0],
    "yo": [80.0, 97.0, 70.0, 88.0, 63.0, 81.0],
}
EN_ALTERNATING = [1.1, 0.9, 1.1, 0.9, 1.1, 0.9]
# (method, sparsity) -> factor per language (English: the alternating factors instead)
FACTORS = {
    ("wanda", 0.5): {"fr": 1.10, "sw": 1.30, "yo": 1.40},
    ("mwanda", 0.5): {"fr": 1.08, "sw": 1.20, "yo": 1.25},
    ("wanda", 0.7): {"fr": 1.50, "sw": 2.00, "yo": 2.20},
    ("mwanda", 0.7): {"fr": 1.45, "sw": 1.70, "yo": 1.80},
}
PER_LANGUAGE_FACTORS = {"fr": 1.05, "sw": 1.15, "yo": 1.20}  # wanda, per-language masks, 50%
OVERLAP = {"en": {"en": 1.0, "fr": 0.81, "sw": 0.62}, "fr": {"en": 0.81, "fr": 1.0, "sw": 0.6}, "sw": {"en": 0.62, "fr": 0.6, "sw": 1.0}}
EVIL_LABEL = '<script>alert("pwned")</script> sparsegpt 90%'
FAILED_ERROR = "Out of memory while pruning block 3 <b>&</b> friends"
ENVIRONMENT = {"commit": "abc1234", "torch": "2.13.0", "threads": 1}
MODEL = "tiny-lm"
SETTINGS = {"seq_len": 16, "max_tokens": 96, "batch_size": 2}


def bits_per_byte(nll: list[float]) -> float:
    return sum(nll) / math.log(2) / sum(WINDOW_BYTES)


def pruned_nll(lang: str, factors: dict[str, float]) -> list[float]:
    scale = EN_ALTERNATING if lang == "en" else [factors[lang]] * len(WINDOW_BYTES)
    return [nll * f for nll, f in zip(DENSE_NLL[lang], scale)]


def eval_result(nll_of, pruning: PruningInfo | None = None, spec: str = MODEL) -> EvalResult:
    scores = [
        LMScore(language=lang, name=name, script="Latn", resource=resource, n_windows=len(WINDOW_BYTES),
                n_tokens=10 * len(WINDOW_BYTES), n_bytes=sum(WINDOW_BYTES), nll_nats=sum(nll_of(lang)),
                window_nll=nll_of(lang), window_bytes=WINDOW_BYTES)
        for lang, name, resource in LANGUAGES
    ]
    return EvalResult(model=ModelInfo(spec=spec, architecture="Gemma3ForCausalLM", n_parameters=1000, block_sparsity=0.0),
                      pruning=pruning or PruningInfo(), corpus="bible", split="eval", settings=SETTINGS, scores=scores)


def dense_record() -> RunRecord:
    return RunRecord(key="dense0001", sweep="demo & co", kind="dense", label="dense", config={"model": MODEL},
                     state="done", evaluations={"bible": eval_result(lambda lang: DENSE_NLL[lang])},
                     measurements={"parameters": 1000, "bytes": 4000, "tokens_per_second": 500.0},
                     environment=ENVIRONMENT, finished="2026-01-01T00:00:00+00:00", seconds=3.0)


def pruned_record(method: str, sparsity: float, factors: dict[str, float], index: int, setting: str = "shared",
                  label: str | None = None, pruning_extra: dict | None = None) -> RunRecord:
    prune = {"method": method, "sparsity": sparsity, "pattern": "unstructured", "setting": setting, "model": MODEL}
    pruning = {"method": method, "sparsity": sparsity, "setting": setting, "config": prune, **(pruning_extra or {})}
    info = PruningInfo(method=method, sparsity=sparsity, setting=setting, config=prune)
    return RunRecord(
        key=f"run{index:04d}", sweep="demo & co", kind="oneshot", label=label or f"{method} {sparsity:.0%}",
        config={"model": MODEL, "prune": prune}, state="done",
        evaluations={"bible": eval_result(lambda lang: pruned_nll(lang, factors), info, spec=f"pruned-{index}")},
        pruning=pruning, environment=ENVIRONMENT, finished=f"2026-01-01T00:{index:02d}:00+00:00", seconds=5.0,
        measurements={"prune_seconds": 1.5 + index, "parameters": 1000, "bytes": int(4000 * (1 - sparsity / 2)),
                      "tokens_per_second": 500.0 * (1 + sparsity)},
    )


def failed_record() -> RunRecord:
    return RunRecord(key="fail0001", sweep="demo & co", kind="oneshot", label=EVIL_LABEL,
                     config={"model": MODEL, "prune": {"method": "sparsegpt", "sparsity": 0.9}}, state="failed",
                     error=FAILED_ERROR, environment=ENVIRONMENT, finished="2026-01-01T01:00:00+00:00", seconds=1.0)


def core_records() -> list[RunRecord]:
    """Dense, two methods at two sparsities, and a failed run."""
    runs = [pruned_record(method, sparsity, factors, index) for index, ((method, sparsity), factors) in enumerate(FACTORS.items(), 1)]
    return [dense_record(), *runs, failed_record()]


def per_language_record() -> RunRecord:
    return pruned_record("wanda", 0.5, PER_LANGUAGE_FACTORS, 9, setting="per-language", label="wanda per-language 50%",
                         pruning_extra={"mask_bank_languages": list(OVERLAP), "mask_overlap": OVERLAP})


FINETUNE_VALUES = {0.0: {"en": 0.80, "fr": 0.70, "sw": 0.50, "yo": 0.45}, 0.5: {"en": 0.78, "fr": 0.66, "sw": 0.40, "yo": 0.30}}


def finetune_record(sparsity: float, seed: int) -> RunRecord:
    scores = [TaskScore(language=lang, name=name, script="Latn", resource=resource, metric="accuracy",
                        value=FINETUNE_VALUES[sparsity][lang] + 0.01 * seed, n_examples=50)
              for lang, name, resource in LANGUAGES]
    result = FinetuneResult(model="e5-small", task="bible-genre", mode="zero-shot", train_languages=["en"], seed=seed,
                            sparsity=sparsity, achieved_sparsity=sparsity, steps=10, seconds=2.0, scores=scores)
    return RunRecord(key=f"ft{int(100 * sparsity):02d}s{seed}", sweep="finetune", kind="finetune",
                     label=f"finetune {sparsity:.0%} seed {seed}", config={"model": "e5-small", "sparsity": sparsity},
                     state="done", finetune=result, environment=ENVIRONMENT, finished=f"2026-01-02T00:0{seed}:{int(10 * sparsity)}0+00:00")


def full_records() -> list[RunRecord]:
    """The core runs, a per-language run with mask overlap, and fine-tuning results at 0 and 50% over two seeds."""
    return [*core_records(), per_language_record(), *(finetune_record(s, seed) for s in FINETUNE_VALUES for seed in (0, 1))]


def write_store(path: Path, records: list[RunRecord]) -> Path:
    with ResultsStore(path) as store:
        for record in records:
            store.put(record)
    return path


FINETUNE_TITLE = "e5-small on bible-genre (zero-shot)"


def expected_rows() -> dict[str, int]:
    """Body rows of each table of the report on `full_records()`, by the table's data-name."""
    languages = len(LANGUAGES)
    compared = len(FACTORS) + 1  # the four shared runs and the per-language one
    return {
        "kinds": 3,  # dense, oneshot, finetune
        "sweeps": 2,
        "environment": len(ENVIRONMENT),
        "runs": 1 + len(FACTORS) + 1 + 1 + 2 * len(FINETUNE_VALUES),  # dense, pruned, failed, per-language, fine-tuning
        "dense bible": languages,
        "change bible 50%": languages,
        "change bible 70%": languages,
        "summary bible": compared,
        "curves bible": compared,
        "resource bible": compared,
        "contest bible": 3,  # at 50%: mwanda and the per-language run against wanda; at 70%: mwanda against wanda
        "overlap wanda per-language 50%": len(OVERLAP),
        "measurements": 1 + compared,
        f"finetune {FINETUNE_TITLE}": len(FINETUNE_VALUES),
        f"finetune languages {FINETUNE_TITLE}": languages,
        f"finetune resources {FINETUNE_TITLE}": 1,  # one pruned sparsity: 50% (the records have no perturbed sets)
        f"findings {FINETUNE_TITLE}": 1,  # one pruned condition: 50%
        f"findings languages {FINETUNE_TITLE}": languages,
        "failed": 1,
    }
