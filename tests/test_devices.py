"""Devices and precision: names resolved against the machine, models loaded in a dtype on a device,
pruning and evaluation that create every tensor where the model's weights are, bfloat16 statistics."""

from __future__ import annotations

import pytest
import torch

from babelprune import devices
from babelprune.devices import resolve_device, resolve_dtype
from babelprune.errors import BabelpruneError
from babelprune.evaluate.lm import score_windows
from babelprune.evaluate.windows import Window
from babelprune.formats.loading import load_model
from babelprune.models.adapters import adapter_for, weight_matrix
from babelprune.prune.config import PruneConfig
from babelprune.prune.engine import named_linears, prune
from babelprune.prune.stats import LanguageStats
from tests.cli_runner import run_cli
from tests.method_matrix import calibration, loaded, masks_of
from tests.sweep_fixtures import write_tiny_model


@pytest.fixture
def cpu_only(monkeypatch):
    """This machine as one without CUDA or MPS, whatever it really has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)


# ----- names -------------------------------------------------------------------------


def test_auto_is_the_cpu_where_there_is_nothing_else(cpu_only):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")


def test_auto_prefers_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "mps"])
def test_a_missing_device_is_one_sentence_naming_what_exists(cpu_only, name):
    with pytest.raises(BabelpruneError) as error:
        resolve_device(name)
    assert str(error.value) == f"Device {name!r} is not available; this machine has: cpu."


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "", " ", "cuda:", "cpu:0", "a\nb"])
def test_a_malformed_device_is_one_sentence(cpu_only, name):
    with pytest.raises(BabelpruneError, match=r"is not a device name .*this machine has: cpu\.$"):
        resolve_device(name)


def test_auto_dtype_follows_the_device(monkeypatch):
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16


def test_a_dtype_the_device_cannot_run_is_one_sentence(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    with pytest.raises(BabelpruneError, match=r"^cuda cannot run bfloat16 on this machine; give --dtype float32"):
        resolve_dtype("bfloat16", torch.device("cuda"))
    with pytest.raises(BabelpruneError, match="is not one of"):
        resolve_dtype("int8", torch.device("cpu"))


# ----- loading -----------------------------------------------------------------------


def test_load_model_casts_to_the_dtype_and_records_it(tmp_path):
    folder = write_tiny_model(tmp_path / "tiny")
    model = load_model(str(folder), dtype="bfloat16", device="cpu")
    assert {p.dtype for p in model.model.parameters()} == {torch.bfloat16}
    assert (model.device, model.dtype) == (torch.device("cpu"), torch.bfloat16)
    assert load_model(str(folder)).dtype == torch.float32  # the default stays float32


def test_a_pruned_folder_loads_in_bfloat16_with_its_mask_bank(tmp_path):
    from babelprune.api import prune as api_prune
    from babelprune.formats.pruned import save_pruned

    folder = write_tiny_model(tmp_path / "tiny")
    dense = load_model(str(folder))
    result = api_prune(dense, PruneConfig(method="wanda", sparsity=0.5, setting="per-language"), calibration(dense.model), progress=False)
    save_pruned(dense, result, tmp_path / "pruned")
    reloaded = load_model(str(tmp_path / "pruned"), dtype="bfloat16")
    assert reloaded.dtype == torch.bfloat16 and reloaded.pruning["dtype"] == "float32"
    for key, masks in result.mask_bank.items():
        assert all(torch.equal(reloaded.mask_bank[key][name], mask) for name, mask in masks.items())


def test_eval_and_prune_records_say_where_and_in_what_they_ran(tmp_path):
    from babelprune.api import evaluate_model, prune_to_folder
    from tests.sweep_fixtures import write_tiny_corpus

    folder = write_tiny_model(tmp_path / "tiny")
    corpus = write_tiny_corpus(tmp_path / "corpus.jsonl")
    result = evaluate_model(str(folder), str(corpus), max_tokens=32, seq_len=16, dtype="bfloat16")
    assert (result.model.device, result.model.dtype) == ("cpu", "bfloat16")
    pruned = prune_to_folder(str(folder), PruneConfig(method="magnitude", sparsity=0.5), tmp_path / "out", dtype="bfloat16")
    assert (pruned.metadata()["device"], pruned.metadata()["dtype"]) == ("cpu", "bfloat16")


# ----- every tensor where the weights are ---------------------------------------------
# With torch's default device set to "meta", a tensor created without `device=` has no data: mixing it
# with the model's CPU tensors raises, and reading it (.item(), .tolist()) raises too. A meta index into a
# CPU tensor does not raise but reads garbage, so each run's masks are also compared with a plain run's.

META_RUNS = {
    "wanda": dict(method="wanda"),
    "sparsegpt": dict(method="sparsegpt"),
    "mwanda+refit": dict(method="mwanda", reconstruct={}),
    "mwanda-activity-cwl": dict(method="mwanda", allocation="cwl", mwanda={"activation_prob": True}),
    "wanda-owl-weighted-exact-refit": dict(method="wanda", allocation="owl", language_weights={"sw": 2.0}, reconstruct={"solver": "exact"}),
    "wanda-two-pass-batched": dict(method="wanda", order="two-pass", calib_batch=2),
    "wanda-lockstep": dict(method="wanda", calib_batch=2),
    "ria-per-language": dict(method="ria", setting="per-language"),
}


@pytest.mark.parametrize("options", META_RUNS.values(), ids=META_RUNS.keys())
def test_pruning_creates_no_tensor_off_the_models_device(options):
    config = PruneConfig(sparsity=0.5, **options)
    plain, probed = loaded("llama"), loaded("llama")
    calib = calibration(plain.model)
    plain_result = prune(plain, config, calib, progress=False)
    with torch.device("meta"):
        probed_result = prune(probed, config, calib, progress=False)
    for name, mask in masks_of(plain.model).items():
        assert torch.equal(masks_of(probed.model)[name], mask), name
    assert probed_result.refit_errors == plain_result.refit_errors


def test_evaluation_creates_no_tensor_off_the_models_device():
    model = loaded("llama").model
    generator = torch.Generator().manual_seed(0)
    windows = [Window(torch.randint(4, 128, (n,), generator=generator).tolist(), n_bytes=3 * n) for n in (9, 12, 5)]
    plain = score_windows(model, windows, pad_id=0, batch_size=2)
    with torch.device("meta"):
        probed = score_windows(model, windows, pad_id=0, batch_size=2)
    assert probed == plain


# ----- bfloat16 ----------------------------------------------------------------------


def _bf16_and_fp32_copy():
    """A bfloat16 tiny llama and a float32 copy of the same (bf16-rounded) weights."""
    low = loaded("llama")
    low.model.to(torch.bfloat16)
    high = loaded("llama")
    high.model.load_state_dict({key: value.float() for key, value in low.model.state_dict().items()})
    return low, high


def _prune_recording_scores(model, method, calib) -> dict:
    """Prune with `method`, keeping each layer's float32 scores as the method saw them ("block.name" -> (out, in))."""
    from babelprune.prune.kernels import magnitude_scores, wanda_scores
    from babelprune.prune.methods import METHODS, Method

    by_weight, original = {}, METHODS[method]

    def recording(task):
        stats = task.stats
        by_weight[task.weight.data_ptr()] = magnitude_scores(task.weight) if stats is None else wanda_scores(task.weight, stats.pooled_norm())
        return original.fn(task)

    METHODS[method] = Method(method, recording, original.needs_calibration)
    try:
        prune(model, PruneConfig(method=method, sparsity=0.5), calib, progress=False)
    finally:
        METHODS[method] = original
    linears = named_linears(model.model, adapter_for(model.model))
    return {name: by_weight[weight_matrix(linear).data_ptr()] for name, linear in linears.items()}


@pytest.mark.parametrize("method", ["magnitude", "wanda"])
def test_a_bfloat16_model_gets_the_masks_of_its_float32_copy_up_to_ties(method):
    low, high = _bf16_and_fp32_copy()
    calib = calibration(low.model)
    prune(low, PruneConfig(method=method, sparsity=0.5), calib, progress=False)
    scores = _prune_recording_scores(high, method, calib)
    for name, mask in masks_of(high.model).items():
        differs = masks_of(low.model)[name] != mask  # (out, in)
        if not differs.any():
            continue
        # The two models compute activations in different precisions, so an input norm can differ by
        # bfloat16's rounding, 2^-8 relative, per layer the error passed through; two weights may swap
        # places only where their float32 scores lie that close to the row's cut.
        row_scores = scores[name]
        cut = row_scores.kthvalue(row_scores.shape[1] // 2, dim=1, keepdim=True).values  # (out, 1)
        near_cut = (row_scores - cut).abs() <= 2 * 2**-8 * cut.abs()
        assert bool(near_cut[differs].all()), f"{name}: masks differ away from the cut"
    if method == "magnitude":  # no activations at all: the same weights give the same masks exactly
        assert all(torch.equal(masks_of(low.model)[n], m) for n, m in masks_of(high.model).items())


def test_statistics_of_bfloat16_activations_are_float32_or_wider():
    stats = LanguageStats(4, ["en"], track_hessian=True)
    inputs = torch.randn(3, 5, 4).to(torch.bfloat16)
    stats.update(inputs, "en")
    assert stats.pooled_norm().dtype == torch.float64
    assert stats.hessian().dtype == torch.float64
    assert stats.per_language_norm().dtype == torch.float64
    expected = inputs.reshape(-1, 4).double().square().sum(dim=0).sqrt()
    torch.testing.assert_close(stats.pooled_norm(), expected, rtol=1e-6, atol=0)


def test_pruning_a_bfloat16_model_keeps_its_statistics_wide():
    low = loaded("llama")
    low.model.to(torch.bfloat16)
    seen = []
    from babelprune.prune.methods import METHODS, Method

    def record(task):
        seen.append((task.stats.pooled_norm().dtype, task.stats.hessian().dtype))
        return None, torch.zeros_like(task.weight, dtype=torch.bool)

    METHODS["probe"] = Method("probe", record, True, needs_hessian=True)
    try:
        prune(low, PruneConfig(method="probe", sparsity=0.5), calibration(low.model), progress=False)
    finally:
        del METHODS["probe"]
    assert seen and set(seen) == {(torch.float64, torch.float64)}


# ----- the command line --------------------------------------------------------------


@pytest.mark.parametrize("command", [["eval", "--out", "{tmp}/r.json"], ["prune", "--out", "{tmp}/p"], ["bench-speed", "gemma3-270m", "--json", "{tmp}/s.json"],
                                     ["slice", "{tmp}/dynamic", "--out", "{tmp}/sliced"], ["demo", "--out", "{tmp}/report"]])
def test_a_missing_device_on_the_command_line_is_one_sentence_and_writes_nothing(cpu_only, monkeypatch, capsys, tmp_path, command):
    args = [part.replace("{tmp}", str(tmp_path)) for part in command]
    code, out, err = run_cli(monkeypatch, capsys, *args, "--device", "cuda")
    assert code == 2
    assert "Device 'cuda' is not available; this machine has: cpu." in " ".join(err.split())
    assert list(tmp_path.iterdir()) == []


# ----- training: fine-tuning and dynamic training ---------------------------------------


@pytest.mark.parametrize("command", [["finetune", "--out", "{tmp}/f"], ["train-dynamic", "--out", "{tmp}/d"],
                                     ["finetune-sweep", "--out", "{tmp}/s"]])
def test_a_missing_device_for_training_is_one_sentence_and_writes_nothing(cpu_only, monkeypatch, capsys, tmp_path, command):
    args = [part.replace("{tmp}", str(tmp_path)) for part in command]
    code, out, err = run_cli(monkeypatch, capsys, *args, "--device", "cuda")
    assert code == 2
    assert "Device 'cuda' is not available; this machine has: cpu." in " ".join(err.split())
    assert list(tmp_path.iterdir()) == []


GMP_TWO_STEPS = {"final_sparsity": 0.5, "start_step": 1, "end_step": 2, "interval": 1}


def _tiny_finetune(folder, out, **placement):
    from babelprune.finetune.trainer import finetune
    from tests.test_finetune_trainer import TinyGenreTask, tiny_config

    config = tiny_config(languages=["en"], perturbations=[], max_steps=2, gmp=GMP_TWO_STEPS)
    return finetune(folder, TinyGenreTask(), config, out, progress=False, **placement)


def test_a_bfloat16_fine_tuning_run_trains_and_says_so(tiny_bert_folder, tmp_path):
    import json

    result = _tiny_finetune(tiny_bert_folder, tmp_path / "run", dtype="bfloat16")
    assert (result.device, result.dtype) == ("cpu", "bfloat16")
    assert result.achieved_sparsity == pytest.approx(0.5, abs=0.01)
    assert all(0.0 <= score.value <= 1.0 for score in result.scores)
    settings = json.loads((tmp_path / "run" / "settings.json").read_text())
    assert (settings["config"]["device"], settings["config"]["dtype"]) == ("cpu", "bfloat16")
    saved = load_model(str(tmp_path / "run" / "runs" / "en" / "model"))
    assert saved.pruning["parent"] == tiny_bert_folder


def test_the_default_placement_keeps_the_settings_of_older_runs_and_another_dtype_is_another_run(tiny_bert_folder, tmp_path):
    import json

    result = _tiny_finetune(tiny_bert_folder, tmp_path / "run")
    assert (result.device, result.dtype) == ("cpu", "float32")
    settings = json.loads((tmp_path / "run" / "settings.json").read_text())
    assert "device" not in settings["config"] and "dtype" not in settings["config"]  # the key of a run made before the choice
    with pytest.raises(BabelpruneError, match=r"other settings \(device, dtype\)"):
        _tiny_finetune(tiny_bert_folder, tmp_path / "run", dtype="bfloat16")


def test_dynamic_training_in_bfloat16_trains_and_records_its_placement():
    from babelprune.finetune.dynamic import DynamicConfig, train_dynamic

    model = loaded("llama")
    model.model.to(torch.bfloat16)
    config = DynamicConfig(levels=(0.5,), steps=2, batch_size=2, samples_per_step=0)
    result = train_dynamic(model, config, calibration=calibration(model.model), progress=False)
    assert (result.model.metadata["device"], result.model.metadata["dtype"]) == ("cpu", "bfloat16")
    assert {p.dtype for p in model.model.parameters()} == {torch.bfloat16}
    assert all(torch.isfinite(torch.tensor(loss)) for losses in result.history.values() for _, loss in losses)


# ----- structured pruning and a fine-tuning step under a meta default device ----------------


@pytest.mark.parametrize("importance", ["magnitude", "gradient", "activation", "l0"])
def test_structured_pruning_creates_no_tensor_off_the_models_device(importance):
    from babelprune.prune.structured import L0Settings, prune_copy, structured_prune

    plain, probed = loaded("llama"), loaded("llama")
    calib = calibration(plain.model)
    options = dict(setting="per-language", progress=False)
    if importance == "magnitude":
        options = dict(progress=False)  # reads no data, so one selection for every language
    if importance == "l0":
        options = dict(progress=False, l0=L0Settings(steps=2))  # L0 trains its gates on all languages together
    plain_result = structured_prune(plain, {"heads", "ffn"}, importance, 0.5, calib, **options)
    with torch.device("meta"):
        probed_result = structured_prune(probed, {"heads", "ffn"}, importance, 0.5, calib, **options)
        copies = {lang: prune_copy(probed, s) for lang, s in (probed_result.per_language or {}).items()}
    assert probed_result.metadata()["kept"] == plain_result.metadata()["kept"]
    assert probed_result.metadata()["kept_per_language"] == plain_result.metadata()["kept_per_language"]
    for lang, copy in copies.items():
        expected = prune_copy(plain, plain_result.per_language[lang])
        assert all(torch.equal(a, b) for a, b in zip(copy.model.parameters(), expected.model.parameters(), strict=True))


def test_a_fine_tuning_step_creates_no_tensor_off_the_models_device(tiny_bert_folder):
    from babelprune.finetune.heads import TaskHead, encode, init_head_by_probe, predict
    from tests.test_finetune_trainer import TinyGenreTask, tiny_config

    task, config = TinyGenreTask(), tiny_config()
    examples = task.examples("en", "train")[:4]

    def one_step(loaded):
        torch.manual_seed(0)
        head = TaskHead(loaded.model, task.kind, len(task.labels), config.pooling, config.dropout)
        init_head_by_probe(head, loaded.tokenizer, examples, 4, config.max_length, config.text_prefix)
        head.train()
        batch = encode(loaded.tokenizer, examples, head.kind, config.max_length, config.text_prefix, device=head.device)
        head.loss(head(batch), batch.labels).backward()
        return head, predict(head, loaded.tokenizer, examples, 2, config.max_length, config.text_prefix)

    plain, plain_predictions = one_step(load_model(tiny_bert_folder))
    probed_model = load_model(tiny_bert_folder)  # loading itself builds the model under torch's default device
    with torch.device("meta"):
        probed, probed_predictions = one_step(probed_model)
    assert probed_predictions == plain_predictions
    for (name, a), b in zip(plain.named_parameters(), probed.parameters(), strict=True):
        assert torch.equal(a, b) and (a.grad is None) == (b.grad is None), name
        assert a.grad is None or torch.equal(a.grad, b.grad), name


def test_a_structured_record_says_where_and_in_what_it_ran():
    from babelprune.prune.structured import structured_prune

    model = loaded("llama")
    model.model.to(torch.bfloat16)
    result = structured_prune(model, {"heads", "ffn"}, "activation", 0.5, calibration(model.model), progress=False)
    assert (result.metadata()["device"], result.metadata()["dtype"]) == ("cpu", "bfloat16")
    assert {p.dtype for p in model.model.parameters()} == {torch.bfloat16}


# ----- speed reports -----------------------------------------------------------------


def test_a_speed_report_says_where_and_in_what_it_ran():
    from babelprune.evaluate.speed import measure_speed

    model = loaded("llama")
    model.model.to(torch.bfloat16)
    report = measure_speed(model, seq_len=8, batch_size=2, runs=1, warmup=0, threads=1)
    assert (report.device, report.dtype) == ("cpu", "bfloat16")


def test_an_older_speed_report_without_device_and_dtype_is_still_one(tmp_path):
    import json

    from babelprune.evaluate.speed import measure_speed
    from babelprune.records.speed import SpeedReport, is_speed_reports_file

    report = measure_speed(loaded("llama"), seq_len=8, batch_size=2, runs=1, warmup=0, threads=1)
    older = {key: value for key, value in report.model_dump(mode="json").items() if key not in ("device", "dtype")}
    (tmp_path / "old.json").write_text(json.dumps([older]))
    assert is_speed_reports_file(tmp_path / "old.json")
    assert SpeedReport.model_validate(older).device is None


@pytest.mark.parametrize(("device", "waits"), [("mps", ["mps"]), ("cuda", ["cuda"]), ("cpu", [])])
def test_timing_waits_for_the_kernels_of_its_device(monkeypatch, device, waits):
    from babelprune.evaluate.probes import time_call

    waited = []
    monkeypatch.setattr(torch.mps, "synchronize", lambda: waited.append("mps"))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append("cuda"))
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert time_call(lambda: None, torch.device(device)) >= 0
    assert waited == waits


# ----- memory sizes and running out of memory ----------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [("2GB", 2 * 10**9), ("512MiB", 512 * 2**20), ("1.5 GiB", 3 * 2**29), ("4096", 4096), ("3kb", 3000), (" 10 B ", 10),
     ("0.5KiB", 512), (".5MB", 500_000), (2048, 2048)],
)
def test_sizes_are_read_in_decimal_and_binary_units(text, size):
    assert devices.parse_size(text) == size


@pytest.mark.parametrize("text", ["2 parsecs", "GB", "-1GB", "1e9", "2 G B", "", "1,5GB", "nanGB", True])
def test_a_text_that_is_not_a_size_is_one_sentence(text):
    with pytest.raises(BabelpruneError, match=r"^--activation-memory .* is not a size; give .* such as 2GB") as caught:
        devices.parse_size(text)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("text", ["0", "0GB", "0.1", 0, -5])
def test_a_size_of_nothing_is_refused(text):
    with pytest.raises(BabelpruneError, match=r"is no memory at all; give a positive size such as 2GB\.$"):
        devices.parse_size(text)


def test_sizes_are_written_in_binary_units():
    assert [devices.format_size(n) for n in (1023, 1024, 1536, 3 * 2**30, 5 * 2**40)] == ["1023 B", "1 KiB", "1.5 KiB", "3 GiB", "5 TiB"]


@pytest.mark.parametrize(
    ("error", "where"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "cuda"),
        (RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"), "mps"),
        (RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried"), "cpu"),
    ],
)
def test_running_out_of_memory_is_one_sentence_naming_what_to_lower(error, where):
    asked = []

    def advice(device_type):
        asked.append(device_type)
        return "lower --calib-batch"

    with pytest.raises(BabelpruneError) as caught:
        with devices.out_of_memory("pruning tiny", advice):
            raise error
    place = "the CPU" if where == "cpu" else where
    assert str(caught.value) == f"Out of memory on {place} while pruning tiny; lower --calib-batch."
    assert asked == [where] and caught.value.__suppress_context__


def test_other_errors_pass_through_the_out_of_memory_guard():
    with pytest.raises(RuntimeError, match="shape mismatch"):
        with devices.out_of_memory("pruning", lambda where: "never"):
            raise RuntimeError("shape mismatch")
    with devices.out_of_memory("pruning", lambda where: "never"):
        pass  # and nothing at all happens without an error


def test_pruning_on_a_device_without_float64_is_refused_before_loading(monkeypatch, tmp_path):
    # MPS has no float64; pruning's sums and solvers need it. Pretend the machine resolved to MPS.
    import babelprune.api as api
    from babelprune.prune.config import PruneConfig

    monkeypatch.setattr(api, "resolve", lambda device, dtype: (torch.device("mps"), torch.float32))
    monkeypatch.setattr(api, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(BabelpruneError, match="float64, which MPS does not have; run it with --device cpu"):
        api.prune_to_folder("gemma3-270m", PruneConfig(method="magnitude"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_float64_is_a_property_of_the_device_type():
    from babelprune.devices import has_float64, require_float64

    assert has_float64(torch.device("cpu")) and has_float64(torch.device("cuda", 0))
    assert not has_float64(torch.device("mps"))
    require_float64(torch.device("cpu"), "Pruning")  # the CPU passes; the refusal is tested above
