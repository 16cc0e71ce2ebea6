"""Sweeps say where their runs run: `device` and `dtype` in experiment files, in run keys and records, on Ray.

The CPU in float32 is what every run computed in before runs could say where, so a file that
says nothing, or says it in so many words, keeps the keys of the stores made then; any other
placement is another run, with another key and a label that says so.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from babelprune import devices
from babelprune.errors import BabelpruneError
from babelprune.sweep.local import run_local
from babelprune.sweep.runs import plan_experiment
from babelprune.sweep.store import ResultsStore
from tests.cli_runner import run_cli
from tests.sweep_fixtures import experiment, write_experiment, write_tiny_corpus, write_tiny_model

RUNS = [
    {"kind": "dense"},
    {"kind": "oneshot", "prune": {"method": "wanda", "sparsity": 0.5}},
    {"kind": "structured", "structured": {"units": ["ffn"], "importance": "activation", "sparsity": 0.25}},
]
WIKIANN = {"source": str(Path(__file__).parent / "fixtures" / "tasks" / "wikiann")}
TINY_FINETUNE = {"max_steps": 2, "batch_size": 4, "max_train_examples": 8, "max_eval_examples": 2, "languages": ["en", "sw"],
                 "perturbations": [], "max_length": 48}


@pytest.fixture
def cpu_only(monkeypatch):
    """This machine as one without CUDA or MPS, whatever it really has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep-devices")
    return write_tiny_model(root / "model"), write_tiny_corpus(root / "tiny.jsonl")


def _plan(tmp_path, assets, runs=RUNS, **extra):
    model, corpus = assets
    return plan_experiment(write_experiment(tmp_path / "exp.yaml", experiment(model, corpus, runs, **extra)))


# ----- keys and labels ----------------------------------------------------------------


def test_the_cpu_in_float32_keeps_the_keys_of_files_that_say_nothing(tmp_path, assets, cpu_only):
    silent = _plan(tmp_path, assets)
    for said in ({"device": "cpu"}, {"dtype": "float32"}, {"device": "CPU", "dtype": "auto"}, {"device": "auto"}):
        plan = _plan(tmp_path, assets, **said)
        assert [(run.key, run.label) for run in plan.runs] == [(run.key, run.label) for run in silent.runs], said
        assert all("placement" not in run.config for run in plan.runs)
        assert {(run.device, run.dtype) for run in plan.runs} == {("cpu", "float32")}


def test_another_dtype_is_another_run_with_its_own_key_and_label(tmp_path, assets):
    plain = _plan(tmp_path, assets)
    both = _plan(tmp_path, assets, dtype=["float32", "bfloat16"])
    assert len(both.runs) == 2 * len(plain.runs)
    low = [run for run in both.runs if run.dtype == "bfloat16"]
    assert {run.key for run in both.runs} - {run.key for run in low} == {run.key for run in plain.runs}
    assert [run.label for run in low] == [f"{run.label} bfloat16" for run in plain.runs]
    assert all(run.config["placement"] == {"device": "cpu", "dtype": "bfloat16"} for run in low)


def test_an_entry_replaces_the_experiment_s_placement(tmp_path, assets):
    runs = [{"kind": "dense"}, {"kind": "oneshot", "prune": {"method": "magnitude", "sparsity": 0.5}, "dtype": "float32"}]
    plan = _plan(tmp_path, assets, runs, dtype="float16")
    assert [(run.label, run.dtype) for run in plan.runs] == [("dense float16", "float16"), ("magnitude 50%", "float32")]


def test_a_cuda_run_is_planned_without_a_card_here_and_keyed_by_the_device_type(tmp_path, assets, cpu_only):
    # A Ray cluster's machines may have the GPUs the planning machine lacks: naming one is not refused when planning.
    first = _plan(tmp_path, assets, device="cuda:0")
    second = _plan(tmp_path, assets, device="cuda:1")
    assert [run.key for run in first.runs] == [run.key for run in second.runs]
    assert {(run.device, run.dtype) for run in second.runs} == {("cuda:1", "bfloat16")}  # auto on CUDA, no card to ask
    assert all(run.config["placement"] == {"device": "cuda", "dtype": "bfloat16"} for run in first.runs)
    assert all(run.label.endswith(" cuda bfloat16") for run in first.runs)
    float32 = _plan(tmp_path, assets, device="cuda", dtype="float32")
    assert not {run.key for run in float32.runs} & {run.key for run in first.runs}


def test_auto_is_planned_as_what_this_machine_has(tmp_path, assets, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    plan = _plan(tmp_path, assets, device="auto")
    assert {(run.device, run.dtype) for run in plan.runs} == {("cuda", "float16")}


@pytest.mark.parametrize(("where", "value", "line", "message"), [
    ("top", "gpu", 22, "device: device 'gpu' is not a device name (give auto, cpu, cuda, cuda:N or mps)"),
    ("entry", "cuda:x", 22, "runs[0].device: device 'cuda:x' is not a device name"),
    ("top", [], 22, "device: an empty list gives no runs; give at least one device"),
])
def test_a_bad_device_is_one_sentence_with_its_line(tmp_path, assets, where, value, line, message):
    model, corpus = assets
    runs = [{"kind": "dense", "device": value}] if where == "entry" else [{"kind": "dense"}]
    data = experiment(model, corpus, runs) | ({"device": value} if where == "top" else {})
    path = write_experiment(tmp_path / "exp.yaml", data)
    with pytest.raises(BabelpruneError) as raised:
        plan_experiment(path)
    assert str(raised.value).startswith(f"exp.yaml line {line}: {message}"), str(raised.value)


# ----- running ------------------------------------------------------------------------


def test_runs_execute_in_their_dtype_and_their_records_say_so(tmp_path, assets):
    plan = _plan(tmp_path, assets, RUNS[:2], dtype=["float32", "bfloat16"])
    with ResultsStore(tmp_path / "runs.sqlite") as store:
        summary = run_local(plan, store, progress=False)
        records = {record.label: record for record in store.records()}
    assert summary.ok and len(records) == 4
    for label in ("dense", "wanda 50%"):
        high, low = records[label], records[f"{label} bfloat16"]
        assert (high.device, high.dtype, low.device, low.dtype) == ("cpu", "float32", "cpu", "bfloat16")
        # Each ran in its own type: the bfloat16 model scores differently, and its evaluation record says where it ran.
        assert low.evaluations["tiny"].model.dtype == "bfloat16" and high.evaluations["tiny"].model.dtype == "float32"
        nll = [[score.nll_nats for score in record.evaluations["tiny"].scores] for record in (high, low)]
        assert nll[0] != nll[1]
        assert nll[1] == pytest.approx(nll[0], rel=0.05)
    # The report compares each pruned run with the dense run of its own dtype: the change pruning made, not bfloat16's too.
    from babelprune.report.runs import eval_set_view

    with ResultsStore(tmp_path / "runs.sqlite", create=False) as store:
        view = eval_set_view("tiny", store.records())
    assert not view.unmatched
    pairs = {(group.dense.label, run.comparison.label) for group in view.groups for run in group.runs}
    assert pairs == {("dense", "wanda 50%"), ("dense bfloat16", "wanda 50% bfloat16")}


def test_a_fine_tuning_run_of_a_sweep_trains_in_its_dtype(tmp_path, tiny_bert_folder, one_torch_thread):
    data = {"name": "ft", "models": [tiny_bert_folder], "dtype": "bfloat16",
            "runs": [{"kind": "finetune", "finetune": {"task": "wikiann", "task_options": WIKIANN, "config": TINY_FINETUNE}}]}
    plan = plan_experiment(write_experiment(tmp_path / "exp.yaml", data))
    with ResultsStore(tmp_path / "runs.sqlite") as store:
        assert run_local(plan, store, progress=False).ok, [r.error for r in store.records()]
        (record,) = store.records()
    assert (record.device, record.dtype) == ("cpu", "bfloat16")
    assert (record.finetune.device, record.finetune.dtype) == ("cpu", "bfloat16")
    assert record.label.endswith(" bfloat16")


def test_the_local_backend_refuses_a_device_this_machine_lacks_before_any_run(tmp_path, assets, cpu_only, monkeypatch, capsys):
    model, corpus = assets
    path = write_experiment(tmp_path / "exp.yaml", experiment(model, corpus, RUNS[:1]) | {"device": "cuda"})
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "sweep", str(path), "--store", str(tmp_path / "runs.sqlite"))
    assert code == 2
    assert "Device 'cuda' is not available; this machine has: cpu." in " ".join(err.split())
    assert not (tmp_path / "runs.sqlite").exists()


def test_sweep_device_and_dtype_flags_replace_the_file_s_own(tmp_path, assets, monkeypatch, capsys):
    model, corpus = assets
    runs = [{"kind": "dense"}, {"kind": "oneshot", "prune": {"method": "magnitude", "sparsity": 0.5}, "dtype": "float16"}]
    path = write_experiment(tmp_path / "exp.yaml", experiment(model, corpus, runs))
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, "sweep", str(path), "--dry-run", "--dtype", "bfloat16")
    assert code == 0, err
    assert "dense bfloat16" in out and "magnitude 50% float16" in out  # the entry keeps its own
    code, _, err = run_cli(monkeypatch, capsys, "sweep", str(path), "--dry-run", "--device", "gpu")
    assert code == 2 and "device 'gpu' is not a device name" in " ".join(err.split())


def test_a_record_made_before_runs_said_where_still_loads():
    from babelprune.records.run import RunRecord

    record = RunRecord(key="k", sweep="s", kind="dense", label="dense", config={}, state="done")
    older = record.model_dump(mode="json")
    del older["device"], older["dtype"]
    assert RunRecord.model_validate(older).device is None


# ----- Ray: GPUs per actor ---------------------------------------------------------------


class FakeRay:
    """Enough of `ray` for the backend's driver, in this process: actors run their calls at once; what each asked for is kept."""

    def __init__(self, cpus: float = 4, gpus: float = 1) -> None:
        self.resources = {"CPU": cpus, "GPU": gpus}
        self.actors: list[tuple[dict, tuple]] = []  # (the options it was made with, its constructor's arguments)

    def remote(self, cls):
        fake = self

        class Maker:
            def options(self, **options):
                class Made:
                    @staticmethod
                    def remote(*args):
                        fake.actors.append((options, args))
                        return FakeActor(cls(*args))

                return Made()

        return Maker()

    def cluster_resources(self) -> dict:
        return dict(self.resources)

    def wait(self, refs, num_returns=1):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        return ref.value

    def kill(self, actor) -> None:
        pass


class FakeActor:
    def __init__(self, worker) -> None:
        self.run = type("Method", (), {"remote": staticmethod(lambda spec: FakeRef(worker.run(spec)))})()


class FakeRef:
    def __init__(self, value) -> None:
        self.value = value


def test_ray_actors_of_cuda_runs_ask_for_gpus_and_the_others_for_none(tmp_path, assets, cpu_only):
    from babelprune.sweep.ray_backend import run_ray

    runs = [{"kind": "dense"}, {"kind": "dense", "device": "cuda:1", "dtype": "float32"}]
    plan = _plan(tmp_path, assets, runs, resources={"cpus": 1, "gpus": 0.5})
    ray = FakeRay(gpus=1)
    with ResultsStore(tmp_path / "runs.sqlite") as store:
        run_ray(ray, plan, store, progress=False)
        records = {record.label: record for record in store.records()}
    asked = {args[2]: options for options, args in ray.actors}  # device -> options
    assert asked == {"cpu": {"num_cpus": 1.0, "num_gpus": 0}, "cuda": {"num_cpus": 1.0, "num_gpus": 0.5}}
    assert records["dense"].state == "done" and records["dense"].device == "cpu"
    # Ray shows an actor its card as the only one: the run is on "cuda" there, whatever index the file named.
    # This machine has no card, so the run fails alone, in one sentence, and says where it was to run.
    cuda = records["dense cuda"]
    assert (cuda.state, cuda.device, cuda.dtype) == ("failed", "cuda", "float32")
    assert cuda.error.startswith("Device 'cuda' is not available")


def test_ray_refuses_cuda_runs_on_a_cluster_without_room_for_one_before_claiming_any(tmp_path, assets):
    from babelprune.sweep.ray_backend import run_ray

    plan = _plan(tmp_path, assets, [{"kind": "dense"}], device="cuda", resources={"gpus": 2})
    with ResultsStore(tmp_path / "runs.sqlite") as store:
        with pytest.raises(BabelpruneError, match=r"each Ray actor of them asks for 2 GPU\(s\) \(resources.gpus\), but the cluster has 1"):
            run_ray(FakeRay(gpus=1), plan, store, progress=False)
        assert store.records() == [] and store.keys("done") == set()


def test_ray_takes_the_options_the_backend_asks_for():
    ray = pytest.importorskip("ray")
    from babelprune.sweep.experiment import Resources
    from babelprune.sweep.ray_backend import SweepWorker, actor_options

    resources = Resources(cpus=2, memory_gb=1.5, gpus=0.25)
    assert actor_options(resources, "cpu") == {"num_cpus": 2.0, "num_gpus": 0, "memory": int(1.5 * 2**30)}
    assert actor_options(resources, "mps")["num_gpus"] == 0  # MPS is no Ray resource
    assert actor_options(resources, "cuda")["num_gpus"] == 0.25
    actor_class = ray.remote(SweepWorker)
    for device in ("cpu", "cuda"):
        actor_class.options(**actor_options(resources, device))  # Ray checks the options as they are given, no cluster needed
    with pytest.raises(ValueError):
        actor_class.options(num_gpus=-1)  # and would refuse a wrong one: the check above means something


def test_the_documented_precision_grid_plans_the_runs_the_docs_name(tmp_path, cpu_only, monkeypatch):
    from tests.doc_commands import REPO, code_block_after

    monkeypatch.chdir(tmp_path)  # no local folder named like the model or corpus
    path = tmp_path / "precision.yaml"
    path.write_text(code_block_after(REPO / "docs" / "sweeps.md", "## Devices and precision", "yaml"), encoding="utf-8")
    plan = plan_experiment(path, check_data=False)
    assert [run.label for run in plan.runs] == ["dense", "dense bfloat16", "wanda 50%", "wanda 50% bfloat16", "sparsegpt 2:4"]
