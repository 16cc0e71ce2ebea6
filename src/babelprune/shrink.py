"""The search behind `babelprune shrink`: the smallest model whose every language stays within a budget.

A candidate is a combination of three settings, each with its own short list:

- vocabulary trimming (`TrimConfig`: `min_count`, optionally `keep_script_rank` and `keep_common`), or none;
- structured widths (`StructuredConfig`: units such as ffn or heads at a sparsity), or none;
- a GGUF quantization type (llama.cpp), or none.

Each candidate is built, measured (bytes of the model as served: its weight files, or its GGUF
file) and scored per language on the "dev" half of the corpus's evaluation split
(`data.corpus.HeldOutHalf`: the evaluation split cut in two by a second stable hash of each group,
so a chapter lies whole in one half). The calibration split feeds trimming and importance; the
"test" half is read only once, to confirm the chosen candidate.

The budget rule: for every language, the relative increase of bits per byte over the dense model,
(candidate - dense) / dense, has a paired bootstrap interval over the scored segments (one window per
segment, so both models read exactly the same bytes item by item; `records.intervals`, the same
resampling `compare` uses). A candidate passes when the UPPER end of that interval is at most the
budget in every language; the point estimate alone never passes a candidate. The chosen one is the
passing candidate with the fewest bytes (`goal="size"`) or the lowest latency (`goal="speed"`).

The search is optuna's: a grid sampler over the whole space when the trial count covers it, else a
TPE sampler, both seeded. The results store is babelprune's own key-checked SQLite table
(`ScoreStore`), not the sweep's `ResultsStore` (that one sits above the verbs on the floor plan and
holds sweep runs), nor an optuna RDB study: a candidate's scores depend on the model, the candidate,
the languages, the held-out half, the windows and babelprune's version, not on the budget or the
sampler, so they are stored under a key of exactly those, with the key's fields kept beside the
record and compared on every read. The study itself lives in memory; a resumed search replays it
(the seeded sampler asks the same candidates in the same order, each found in the store), so an
interrupted search recomputes nothing it finished, and a search with another budget or more trials
reuses every score it can.

This module builds and scores nothing itself: the verb (`api.shrink_to_folder`) passes in how a
candidate is built and scored, so the search sits below the verbs.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from babelprune.errors import BabelpruneError
from babelprune.progress import progress_bar
from babelprune.records.eval import LMScore, now, paired_parts
from babelprune.records.intervals import percentile_interval, relative_change_replicates
from babelprune.version import __version__

STORE_FORMAT = "babelprune-shrink"
STORE_SCHEMA_VERSION = 1
SQLITE_HEADER = b"SQLite format 3\x00"


# ----- candidates ------------------------------------------------------------------------------------


class Candidate(BaseModel):
    """One point of the search: a trim (or none), structured widths (or none), a quantization (or none)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_count: int | None = None  # None: the vocabulary is not trimmed
    keep_script_rank: int | None = None
    keep_common: int | None = None
    units: tuple[str, ...] = ()  # () : no structured pruning
    sparsity: float = 0.0
    quant: str | None = None  # a GGUF quantization type; None: the HF folder is served

    @property
    def trimmed(self) -> bool:
        return self.min_count is not None

    @property
    def structured(self) -> bool:
        return bool(self.units)

    @property
    def is_dense(self) -> bool:
        return not (self.trimmed or self.structured or self.quant)

    def trim_label(self) -> str:
        if not self.trimmed:
            return "none"
        return (f"{self.min_count}" + (f":{self.keep_script_rank}" if self.keep_script_rank is not None else "")
                + (f":c{self.keep_common}" if self.keep_common is not None else ""))

    def width_label(self) -> str:
        return f"{'+'.join(self.units)}={self.sparsity:g}" if self.structured else "none"

    def label(self) -> str:
        parts = []
        if self.trimmed:
            parts.append(f"trim min_count {self.min_count}" + (f" rank {self.keep_script_rank}" if self.keep_script_rank is not None else "")
                         + (f" common {self.keep_common}" if self.keep_common is not None else ""))
        if self.structured:
            parts.append(f"{'+'.join(self.units)} {self.sparsity:.0%}")
        if self.quant:
            parts.append(self.quant)
        return ", ".join(parts) or "dense"


def parse_trim(text: str) -> dict:
    """'none', 'N' (min_count N), 'N:R' (and keep_script_rank R), 'N:cK' (and keep_common K) or 'N:R:cK' as Candidate fields."""
    text = text.strip()
    if text == "none":
        return {}
    count, *rules = text.split(":")
    fields: dict = {}
    try:
        fields["min_count"] = int(count)
        for rule in rules:
            key = "keep_common" if rule.startswith("c") else "keep_script_rank"
            if key in fields:
                raise ValueError(rule)
            fields[key] = int(rule.removeprefix("c"))
    except ValueError:
        raise BabelpruneError(f"--trims entry {text!r} is not none, N (a min_count), N:R (and keep_script_rank R), "
                              "N:cK (and keep_common K) or N:R:cK.") from None
    if min(fields.values()) < 1:
        raise BabelpruneError(f"--trims entry {text!r} needs a min_count, keep_script_rank and keep_common of at least 1.")
    return fields


def parse_width(text: str, units_known: Sequence[str]) -> dict:
    """'none' or 'UNITS=S' (units such as ffn or heads+ffn at sparsity S in (0, 1)) as Candidate fields."""
    text = text.strip()
    if text == "none":
        return {}
    units, _, value = text.partition("=")
    try:
        sparsity = float(value)
    except ValueError:
        raise BabelpruneError(f"--widths entry {text!r} is not none or UNITS=SPARSITY, such as ffn=0.1 or heads+ffn=0.2.") from None
    names = tuple(sorted({unit.strip() for unit in units.replace("+", ",").split(",") if unit.strip()}))
    unknown = [unit for unit in names if unit not in units_known]
    if not names or unknown:
        raise BabelpruneError(f"--widths entry {text!r} names no structured unit of: {', '.join(units_known)}.")
    if not 0 < sparsity < 1:
        raise BabelpruneError(f"--widths entry {text!r} needs a sparsity between 0 and 1 (exclusive).")
    return {"units": names, "sparsity": sparsity}


class SearchSpace(BaseModel):
    """The lists the search combines: every trim with every width with every quantization."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    trims: tuple[str, ...] = ("none", "1", "2")
    widths: tuple[str, ...] = ("none", "ffn=0.1", "ffn=0.2", "heads=0.25")
    quants: tuple[str, ...] = ("none",)

    def parsed(self, units_known: Sequence[str]) -> tuple[list[dict], list[dict], list[str | None]]:
        for name, values in (("--trims", self.trims), ("--widths", self.widths), ("--quants", self.quants)):
            if not values or len(set(values)) != len(values):
                raise BabelpruneError(f"{name} needs at least one entry, each given once.")
        trims = [parse_trim(text) for text in self.trims]
        widths = [parse_width(text, units_known) for text in self.widths]
        return trims, widths, [None if quant == "none" else quant for quant in self.quants]

    def candidates(self, units_known: Sequence[str]) -> list[Candidate]:
        """Every combination except the dense model itself (the reference every candidate is judged against)."""
        trims, widths, quants = self.parsed(units_known)
        found = [Candidate(**trim, **width, quant=quant) for trim in trims for width in widths for quant in quants]
        found = [candidate for candidate in found if not candidate.is_dense]
        if not found:
            raise BabelpruneError("The search space holds only the dense model; give --trims, --widths or --quants with something to try.")
        return found


# ----- the budget rule -------------------------------------------------------------------------------


class LanguageCheck(BaseModel):
    """One language of one candidate against the dense model on the same segments."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    language: str
    dense_bits_per_byte: float
    bits_per_byte: float
    relative: float  # (candidate - dense) / dense: the point estimate
    interval: tuple[float, float] | None  # 95% paired bootstrap interval of `relative`
    passed: bool  # the interval's upper end is within the budget


def check_language(dense: LMScore, scored: LMScore, budget: float) -> LanguageCheck:
    """The relative increase of bits per byte with its paired interval; passed only when the upper end <= budget."""
    if dense.language != scored.language:
        raise BabelpruneError(f"A score of {scored.language!r} was compared with the dense score of {dense.language!r}.")
    before, after = paired_parts(dense, scored)
    interval = None
    if before is not None and after is not None:
        interval = percentile_interval(relative_change_replicates(before, after, dense.language))
    relative = (scored.bits_per_byte - dense.bits_per_byte) / dense.bits_per_byte
    passed = interval is not None and math.isfinite(interval[1]) and interval[1] <= budget
    return LanguageCheck(language=dense.language, dense_bits_per_byte=dense.bits_per_byte,
                         bits_per_byte=scored.bits_per_byte, relative=relative, interval=interval, passed=passed)


def check_languages(dense: Sequence[LMScore], scored: Sequence[LMScore], budget: float) -> list[LanguageCheck]:
    by_language = {score.language: score for score in scored}
    missing = [score.language for score in dense if score.language not in by_language]
    if missing:
        raise BabelpruneError(f"The candidate was not scored on {', '.join(map(repr, missing))}.")
    return [check_language(score, by_language[score.language], budget) for score in dense]


def excess(check: LanguageCheck, budget: float) -> float:
    """How far a language's upper interval end lies beyond the budget (inf without an interval)."""
    return (check.interval[1] - budget) if check.interval is not None else math.inf


# ----- scored candidates -----------------------------------------------------------------------------


class CandidateScores(BaseModel):
    """What the store keeps for one candidate: its size, latency and per-language scores on one half."""

    model_config = ConfigDict(extra="forbid")
    bytes: int
    latency_ms: float | None = None
    scores: list[LMScore]
    error: str | None = None  # a candidate the model cannot take (one sentence); no scores then


class ScoredCandidate(BaseModel):
    """One candidate of the search, judged: its bytes, each language's check, pass or fail and why."""

    model_config = ConfigDict(extra="forbid")
    number: int
    label: str
    candidate: Candidate
    bytes: int
    latency_ms: float | None = None
    languages: list[LanguageCheck] = []
    passed: bool
    failed_languages: list[str] = []
    error: str | None = None

    def worst_excess(self, budget: float) -> float:
        return max((excess(check, budget) for check in self.languages), default=math.inf)


def judge(number: int, candidate: Candidate, scores: CandidateScores, dense: Sequence[LMScore], budget: float) -> ScoredCandidate:
    if scores.error is not None:
        return ScoredCandidate(number=number, label=candidate.label(), candidate=candidate, bytes=scores.bytes,
                               passed=False, error=scores.error)
    checks = check_languages(dense, scores.scores, budget)
    failed = [check.language for check in checks if not check.passed]
    return ScoredCandidate(number=number, label=candidate.label(), candidate=candidate, bytes=scores.bytes,
                           latency_ms=scores.latency_ms, languages=checks, passed=not failed, failed_languages=failed)


def goal_value(scored: ScoredCandidate, goal: str) -> float:
    """What the goal minimises: bytes as served, or the measured latency."""
    if goal == "speed":
        return scored.latency_ms if scored.latency_ms is not None else math.inf
    return float(scored.bytes)


def choose(candidates: Sequence[ScoredCandidate], goal: str) -> ScoredCandidate | None:
    """The passing candidate with the lowest goal value (ties: fewer bytes, then the earlier one); None if none passed."""
    passing = [c for c in candidates if c.passed]
    return min(passing, key=lambda c: (goal_value(c, goal), c.bytes, c.number)) if passing else None


def closest(candidates: Sequence[ScoredCandidate], budget: float) -> ScoredCandidate | None:
    """The failed candidate whose worst language misses the budget by least (None when none was scored)."""
    scored = [c for c in candidates if c.error is None and c.languages]
    return min(scored, key=lambda c: (c.worst_excess(budget), c.bytes, c.number)) if scored else None


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates (lower or equal in both coordinates, lower in one), by x."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((a <= x and b <= y) and (a < x or b < y) for j, (a, b) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], points[i][1], i))


def front_numbers(candidates: Sequence[ScoredCandidate]) -> list[int]:
    """Numbers of the scored candidates on the Pareto front of bytes and the worst language's upper interval end."""
    scored = [c for c in candidates if c.error is None and c.languages]
    points = [(float(c.bytes), max(check.interval[1] if check.interval else math.inf for check in c.languages)) for c in scored]
    return [scored[i].number for i in pareto_front(points)]


class NoCandidatePassed(BabelpruneError):
    """A search that found nothing within the budget; `candidates` holds every judged candidate, for a table."""

    def __init__(self, message: str, candidates: Sequence[ScoredCandidate]) -> None:
        super().__init__(message)
        self.candidates = list(candidates)


def no_candidate_passed(candidates: Sequence[ScoredCandidate], budget: float, store: Path) -> NoCandidatePassed:
    """The sentence for a search that found nothing within the budget: the closest candidate and what it missed by."""
    near = closest(candidates, budget)
    if near is None:
        first = next((c.error for c in candidates if c.error), "no scores")
        return NoCandidatePassed(f"No candidate could be built and scored (the first said: {first}); change --trims or --widths.",
                                 candidates)
    misses = ", ".join(f"{check.language} by {excess(check, budget):+.2%}" for check in near.languages if not check.passed)
    return NoCandidatePassed(
        f"No candidate keeps every language within {budget:.2%}: the closest, {near.label} ({near.bytes:,} bytes), "
        f"misses in {misses} (upper interval end beyond the budget); raise --budget or try milder --trims and --widths. "
        f"No model was written; the scores are in {store}.", candidates,
    )


# ----- the store -------------------------------------------------------------------------------------


def candidate_key(fields: dict) -> str:
    """The store key of everything that decides a candidate's scores (canonical JSON, hashed)."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=True).encode("ascii")).hexdigest()


class ScoreStore:
    """Candidate scores in one SQLite file, one row per candidate and half, one transaction per row.

    A row holds the key's fields beside the scores, and a read compares them with the fields asked
    for, so a row is never taken for another candidate. A file that is not a shrink store is refused.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if self.path.exists():
            with open(self.path, "rb") as handle:
                if handle.read(16) != SQLITE_HEADER:
                    raise BabelpruneError(f"--store {self.path} is not a babelprune shrink store; choose another --store.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        try:
            tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and "meta" in tables:
                meta = dict(self._db.execute("SELECT name, value FROM meta").fetchall())
            else:
                meta = {}
            if tables and meta.get("format") != STORE_FORMAT:
                raise BabelpruneError(f"--store {self.path} is not a babelprune shrink store; choose another --store.")
            if meta and int(meta.get("schema", "0")) > STORE_SCHEMA_VERSION:
                raise BabelpruneError(f"--store {self.path} was written by a newer babelprune; use that version or another --store.")
            with self._db:
                self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
                self._db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, fields TEXT NOT NULL, "
                                 "record TEXT NOT NULL, finished TEXT NOT NULL)")
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (STORE_FORMAT,))
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(STORE_SCHEMA_VERSION),))
        except BaseException:
            self._db.close()
            raise

    def get(self, fields: dict) -> CandidateScores | None:
        row = self._db.execute("SELECT fields, record FROM scores WHERE key = ?", (candidate_key(fields),)).fetchone()
        if row is None or json.loads(row[0]) != json.loads(json.dumps(fields, sort_keys=True)):
            return None
        return CandidateScores.model_validate_json(row[1])

    def put(self, fields: dict, scores: CandidateScores) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?)",
                             (candidate_key(fields), json.dumps(fields, sort_keys=True), scores.model_dump_json(), now()))

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM scores").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ScoreStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----- the search ------------------------------------------------------------------------------------

Scorer = Callable[[Candidate, str], CandidateScores]  # (candidate, half) -> scores; the dense model is Candidate()


class ShrinkSettings(BaseModel):
    """Everything that decides a search besides the space: what the JSON record repeats."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str
    model_identity: str
    corpus: str
    languages: list[str]
    budget: float
    goal: str
    segments: int
    seq_len: int
    trials: int | None
    seed: int
    importance: str
    calibration: dict


class ShrinkRecord(BaseModel):
    """The JSON record of a search: settings, the dense model, every candidate, the chosen one and its test check."""

    model_config = ConfigDict(extra="forbid")
    format: str = "babelprune-shrink-result"
    babelprune_version: str = __version__
    settings: ShrinkSettings
    space: SearchSpace
    sampler: str
    dense_bytes: int
    dense_latency_ms: float | None = None
    dense_dev: list[LMScore]
    candidates: list[ScoredCandidate]
    front: list[int]  # numbers of the candidates on the Pareto front of bytes and worst upper relative increase
    chosen: int | None  # number of the chosen candidate
    test: list[LanguageCheck] = []  # the chosen candidate on the test half
    test_passed: bool | None = None
    closest: int | None = None  # when none passed: the candidate that missed by least
    finished: str = ""


def search(space_candidates: Sequence[Candidate], score: Scorer, dense_dev: Sequence[LMScore], budget: float,
           goal: str, trials: int | None, seed: int, progress: bool = True) -> tuple[list[ScoredCandidate], str]:
    """Run the optuna study over the candidates; returns every distinct candidate judged, in the order tried, and the sampler's name."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    by_label = {}
    for candidate in space_candidates:
        by_label[_choice(candidate)] = candidate
    choices = list(by_label)
    total = len(choices)
    exhaustive = trials is None or trials >= total
    if exhaustive:
        sampler = optuna.samplers.GridSampler({"candidate": choices}, seed=seed)
        name, count = "grid", total
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, trials))
        name, count = "tpe", trials
    study = optuna.create_study(direction="minimize", sampler=sampler)
    judged: dict[str, ScoredCandidate] = {}
    with progress_bar(progress) as bar:
        task = bar.add_task("shrink: candidates", total=count)

        def objective(trial) -> float:
            choice = trial.suggest_categorical("candidate", choices)
            candidate = by_label[choice]
            if choice not in judged:  # a sampler may ask for a candidate twice: it is judged once
                bar.update(task, description=f"shrink: {candidate.label()}")
                judged[choice] = judge(len(judged) + 1, candidate, score(candidate, "dev"), dense_dev, budget)
            bar.advance(task)
            return _objective(judged[choice], goal, budget)

        # Errors are not caught by optuna here: a refusal or an interruption ends the search (the store keeps what was scored).
        study.optimize(objective, n_trials=count, catch=())
    return list(judged.values()), name


def _choice(candidate: Candidate) -> str:
    return f"trim={candidate.trim_label()}|width={candidate.width_label()}|quant={candidate.quant or 'none'}"


FAILED = 1e18  # above any size in bytes or latency in ms: a failing candidate ranks behind every passing one


def _objective(scored: ScoredCandidate, goal: str, budget: float) -> float:
    """What optuna minimises: the goal value of a passing candidate; a failing one, by how far it missed."""
    if scored.passed:
        return goal_value(scored, goal)
    miss = scored.worst_excess(budget)
    return FAILED * (1 + min(miss, 10.0)) if math.isfinite(miss) else FAILED * 12
