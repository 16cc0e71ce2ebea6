"""The Ray backend: the same runs as Ray actors, every record written by the driver into the same store.

Each actor loads one model once, in one placement (a `ModelSession`), and
runs, one at a time, the runs the driver hands it; a model with many runs
gets several actors, as many as the cluster has room for (the experiment's
`resources`: CPUs and memory per actor, and `gpus` for an actor whose runs
are on a CUDA device; an actor of CPU or MPS runs asks for no GPU). Ray
gives a GPU actor its card as the only one it sees, so its runs are on
"cuda" whatever index the file named (`on_ray`). The driver gives an actor its next run when the last
one returns, so a slow run holds up no other actor, and writes each record
into the store as it arrives (one transaction each, as the local backend
does). When a model's runs are all handed out, its idle actors are freed
for the next model.

The driver claims each run in the store before it hands it out, as the
local backend does (babelprune.sweep.local.SweepClaims): the claim names the
driver's process, whose heartbeat thread keeps it fresh while an actor
runs it, and the actors die with the driver. A run another sweep holds is
waited for once nothing else is left, and taken over if that sweep dies.

`ray` is imported here only, on use: without it the sweep stops in one
sentence naming the extra to install. An address that cannot be reached is
one sentence too, before anything runs.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

from rich.console import Console

from babelprune.errors import BabelpruneError
from babelprune.sweep.display import SweepDisplay, SweepSummary
from babelprune.sweep.experiment import TASK_KINDS, Resources
from babelprune.sweep.local import WAIT_SECONDS, SweepClaims, by_model, pending_runs, workdir_for
from babelprune.sweep.runs import Plan, RunSpec
from babelprune.sweep.store import ResultsStore, RunRecord

INSTALL_HINT = "Ray is not installed; pip install 'babelprune[ray]' (or run with --backend local)."


def import_ray():
    try:
        import ray
    except ImportError:
        raise BabelpruneError(INSTALL_HINT) from None
    return ray


class SweepWorker:
    """What runs inside one Ray actor: a model loaded once in one placement, then its runs one by one (records come back as JSON)."""

    def __init__(self, model: str, workdir: str, device: str = "cpu", dtype: str = "float32") -> None:
        from babelprune.sweep.execute import environment

        self.model, self.workdir, self.session, self.load_error = model, Path(workdir), None, None
        self.device, self.dtype = device, dtype
        environment()  # the commit as the actor starts, like the local backend

    def run(self, spec: RunSpec) -> str:
        from babelprune.sweep.execute import ModelSession, execute, failed_record

        if spec.kind not in TASK_KINDS and self.session is None and self.load_error is None:
            try:
                self.session = ModelSession(self.model, self.device, self.dtype)
            except Exception as exc:  # noqa: BLE001 - every run of this actor fails with the same sentence
                self.load_error = exc
        if spec.kind not in TASK_KINDS and self.load_error is not None:
            return failed_record(spec, self.load_error).model_dump_json()
        return execute(self.session, spec, self.workdir).model_dump_json()


def connect(ray, address: str | None, cpus: int | None) -> None:
    """Start a local Ray with `cpus` CPUs, or join the cluster at `address`; an unreachable one is one sentence."""
    if address is None:
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        return
    if cpus is not None:
        raise BabelpruneError("--cpus sizes a local Ray; a cluster at --address has its own CPUs, so drop --cpus.")
    _probe(address)
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, OSError, RuntimeError, ValueError) as exc:
        first = " ".join(str(exc).split())[:200]
        raise BabelpruneError(
            f"Cannot reach a Ray cluster at {address} ({first}); check the address and that the cluster is up, "
            "or leave --address out to start a local Ray."
        ) from None


def _probe(address: str) -> None:
    """Fail fast on a ray://host:port nobody listens on (Ray's own client waits 30 s before it gives up)."""
    if not address.startswith("ray://"):
        return
    parsed = urlparse(address)
    if not parsed.hostname:
        raise BabelpruneError(f"--address {address} names no host; give ray://host:port, or auto.")
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 10001), timeout=5):
            pass
    except OSError as exc:
        raise BabelpruneError(
            f"Cannot reach a Ray cluster at {address} ({exc.strerror or exc}); check the address and that the cluster is "
            "up, or leave --address out to start a local Ray."
        ) from None


@contextlib.contextmanager
def ray_cluster(address: str | None = None, cpus: int | None = None):
    """`ray`, connected (a local Ray started with `cpus` CPUs, or the cluster at `address`); shut down on exit."""
    ray = import_ray()
    connect(ray, address, cpus)
    try:
        yield ray
    finally:
        ray.shutdown()


def run_ray(ray, plan: Plan, store: ResultsStore, progress: bool = True, console: Console | None = None,
            wait_seconds: float = WAIT_SECONDS) -> SweepSummary:
    """Run every pending run as Ray actor calls; the driver writes each record into the store as it returns."""
    todo = pending_runs(plan, store)
    with SweepDisplay(len(plan.runs), len(todo), progress, console) as display:
        if todo:
            _drive(ray, plan, todo, store, SweepClaims(store, display), display, wait_seconds)
    return display.summary


def on_ray(spec: RunSpec) -> RunSpec:
    """The run as a Ray actor runs it: a CUDA run on "cuda", the one card Ray lets its actor see (its key unchanged)."""
    return replace(spec, device="cuda") if spec.device.startswith("cuda") else spec


def uses_gpu(device: str) -> bool:
    """Whether an actor of runs on `device` asks Ray for GPUs: CUDA only (MPS is no Ray resource; the CPU needs none)."""
    return device.startswith("cuda")


def actor_options(resources: Resources, device: str) -> dict:
    """What one actor of runs on `device` asks Ray for: `num_cpus`, `num_gpus` (`resources.gpus` on CUDA, else 0), `memory`."""
    options = {"num_cpus": resources.cpus, "num_gpus": resources.gpus if uses_gpu(device) else 0}
    if resources.memory_gb is not None:
        options["memory"] = int(resources.memory_gb * 2**30)
    return options


def check_gpus(ray, resources: Resources, runs: list[RunSpec]) -> int:
    """How many GPU actors fit in the cluster at once; refused in one sentence when CUDA runs have not room for one.

    Ray would keep an actor that asks for more GPUs than the cluster has pending for ever, so the
    sweep says so before it claims anything.
    """
    cuda = [run for run in runs if uses_gpu(run.device)]
    if not cuda:
        return 0
    have = float(ray.cluster_resources().get("GPU", 0))
    room = int(have // resources.gpus)
    if room < 1:
        raise BabelpruneError(
            f"{len(cuda)} run(s) are on {cuda[0].device} and each Ray actor of them asks for {resources.gpus:g} GPU(s) "
            f"(resources.gpus), but the cluster has {have:g}; run them on a cluster with GPUs, lower resources.gpus, "
            "or set the runs' device to cpu."
        )
    return room


def _drive(ray, plan: Plan, todo: list[RunSpec], store: ResultsStore, claims: SweepClaims, display: SweepDisplay,
           wait_seconds: float) -> None:
    resources = plan.experiment.resources
    todo = [on_ray(spec) for spec in todo]
    gpu_slots = check_gpus(ray, resources, todo)
    actor_class = ray.remote(SweepWorker)  # each actor's resources are given as it is made: they depend on its device
    slots = max(1, int(ray.cluster_resources().get("CPU", 1) // resources.cpus))
    # (model, device, dtype) -> its runs: an actor loads one model in one placement
    queues = {where: deque(runs) for where, runs in by_model(todo).items()}
    workdir = str(workdir_for(store.path).resolve())
    inflight: dict = {}  # object ref -> (actor, session key, spec)
    actors: dict[tuple[str, str, str], list] = {where: [] for where in queues}

    def next_claimed(where: tuple[str, str, str]) -> RunSpec | None:
        """The session's next run this driver could claim (those another sweep holds wait in `claims`)."""
        while queues[where]:
            spec = queues[where].popleft()
            if claims.take(spec):
                return spec
        return None

    def hand_out(actor, where: tuple[str, str, str], spec: RunSpec) -> None:
        display.started(spec)
        inflight[actor.run.remote(spec)] = (actor, where, spec)

    def has_room(where: tuple[str, str, str]) -> bool:
        """Room for one more actor: a CPU slot, and a GPU slot too for an actor of CUDA runs."""
        if not uses_gpu(where[1]):
            return True
        return sum(len(group) for key, group in actors.items() if uses_gpu(key[1])) < gpu_slots

    def fill() -> None:
        # Give idle room to the sessions with the most runs left, one actor at a time (and only for a claimed run).
        while sum(len(group) for group in actors.values()) < slots:
            waiting = [where for where, queue in queues.items() if queue and has_room(where)]
            if not waiting:
                return
            where = max(waiting, key=lambda key: len(queues[key]))
            spec = next_claimed(where)
            if spec is None:
                continue
            model, device, dtype = where
            actor = actor_class.options(**actor_options(resources, device)).remote(model, workdir, device, dtype)
            actors[where].append(actor)
            hand_out(actor, where, spec)

    fill()
    while inflight or claims.waiting:
        if not inflight:  # only runs another sweep holds are left: look again, then wait for them
            for spec in list(claims.waiting.values()):
                queues.setdefault(spec.session, deque()).append(spec)
                actors.setdefault(spec.session, [])
            fill()
            if not inflight and claims.waiting:
                claims.announce()
                time.sleep(wait_seconds)
            continue
        ready, _ = ray.wait(list(inflight), num_returns=1)
        actor, where, spec = inflight.pop(ready[0])
        try:
            record = RunRecord.model_validate_json(ray.get(ready[0]))
        except Exception as exc:  # noqa: BLE001 - the actor died (out of memory, killed): this run failed
            from babelprune.sweep.execute import failed_record

            record = failed_record(spec, f"the Ray worker running it died ({_first_line(exc)})")
            actors[where].remove(actor)
            ray.kill(actor)
            actor = None
        store.put(record)  # drops the claim in the same transaction
        display.finished(record)
        spec = next_claimed(where) if actor is not None else None
        if spec is not None:
            hand_out(actor, where, spec)
        elif actor is not None:
            actors[where].remove(actor)
            ray.kill(actor)  # its session has no run left: free its CPUs, GPUs and memory
        fill()


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:300]
