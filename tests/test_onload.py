"""Sequential onloading and the activation budget (babelprune.prune.onload): each block moved to the execution
device while it is pruned, hidden states beyond --activation-memory kept in CPU memory and streamed in by
micro-batch, and in every case the masks of pruning in place."""

from __future__ import annotations

import importlib
import json
import weakref
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from babelprune import api
from babelprune.api import CalibrationSpec, DynamicConfig, FinetuneConfig, onload_device, prune_to_folder
from babelprune.errors import BabelpruneError
from babelprune.formats.loading import load_model
from babelprune.formats.pruned import METADATA_FILE, save_pruned
from babelprune.models.adapters import adapter_for, weight_matrix
from babelprune.prune import engine
from babelprune.prune.config import PruneConfig
from babelprune.prune.engine import named_linears, prune
from babelprune.prune.offload import open_offloaded, prune_offloaded
from babelprune.prune.onload import OnloadedBlocks
from tests.cli_runner import run_cli
from tests.sweep_fixtures import write_tiny_corpus
from tests.test_offload import assert_same_state, source_folder, state_of
from tests.test_prune_engine import calibration, loaded, masks_of
from tests.test_prune_lockstep import assert_same_pruning, weights_of

RUNS = {
    "wanda": dict(method="wanda"),
    "mwanda+refit": dict(method="mwanda", reconstruct={}),
    "sparsegpt": dict(method="sparsegpt"),
}


def window_bytes(model, calib) -> int:
    """Bytes of one calibration window's hidden states (T x H in the model's float32)."""
    return calib.ids.shape[1] * model.config.get_text_config().hidden_size * 4


# ----- the onloading path on the CPU ---------------------------------------------------


@pytest.mark.parametrize("options", RUNS.values(), ids=RUNS.keys())
@pytest.mark.parametrize("family", ["llama", "gemma3", "bert"])
def test_onloading_to_the_cpu_prunes_exactly_as_in_place(family, options):
    config = PruneConfig(sparsity=0.5, **options)
    plain, onloaded = loaded(family), loaded(family)
    calib = calibration(plain.model)
    plain_result = prune(plain, config, calib, progress=False)
    result = prune(onloaded, config, calib, progress=False, onload="cpu")
    # Nothing moves on the CPU: the same code gives the same weights, not only the same masks.
    plain_weights = weights_of(plain.model)
    for name, weight in weights_of(onloaded.model).items():
        assert torch.equal(weight, plain_weights[name]), name
    assert any(bool(mask.any()) for mask in masks_of(onloaded.model).values())
    assert result.refit_errors == plain_result.refit_errors
    assert (result.onload, result.device, result.activation_windows) == ("sequential", "cpu", None)
    assert (plain_result.onload, plain_result.activation_memory) == ("none", None)
    assert result.metadata()["onload"] == "sequential"


class SpyDevice(OnloadedBlocks):
    """The CPU standing in for an accelerator: every tensor moved to the "device" is a fresh copy.

    A parameter whose storage is not the one it started with is on the device, so
    the test can count the blocks there, and a copy-back that went missing leaves
    the CPU weights dense.
    """

    moved = 0

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        SpyDevice.moved += 1
        return tensor.clone()


def watch_blocks(model) -> tuple[list[int], list]:
    """Before every linear runs, the number of blocks with a parameter away from its starting storage."""
    adapter = adapter_for(model)
    blocks = list(adapter.get_blocks(model))
    home = [{name: p.data_ptr() for name, p in block.named_parameters()} for block in blocks]
    on_device_counts: list[int] = []

    def count(module, args):
        away = [i for i, block in enumerate(blocks) if any(p.data_ptr() != home[i][n] for n, p in block.named_parameters())]
        on_device_counts.append(len(away))

    handles = [linear.register_forward_pre_hook(count) for linear in named_linears(model, adapter).values()]
    return on_device_counts, handles


@pytest.mark.parametrize("options", RUNS.values(), ids=RUNS.keys())
def test_one_block_at_a_time_is_on_the_device_and_every_weight_comes_home(monkeypatch, options):
    monkeypatch.setattr(engine, "OnloadedBlocks", SpyDevice)
    SpyDevice.moved = 0
    config = PruneConfig(sparsity=0.5, allocation="owl", **options)  # OWL's pre-pass opens every block too
    plain, onloaded = loaded("llama"), loaded("llama")
    calib = calibration(plain.model)
    prune(plain, config, calib, progress=False)
    parameters = {name: p for name, p in onloaded.model.named_parameters()}
    storages = {name: p.data_ptr() for name, p in parameters.items()}
    counts, handles = watch_blocks(onloaded.model)
    try:
        prune(onloaded, config, calib, progress=False, onload="cpu")
    finally:
        for handle in handles:
            handle.remove()
    assert SpyDevice.moved > 0 and counts and max(counts) == 1  # every linear ran on the device, alone there
    for name, p in onloaded.model.named_parameters():
        assert p is parameters[name] and p.data_ptr() == storages[name], name  # the same tensors, where they started
    assert_same_pruning(plain, onloaded)  # the pruned values were copied into them


def test_onloading_composes_with_disk_offload(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "OnloadedBlocks", SpyDevice)
    SpyDevice.moved = 0
    source = source_folder(tmp_path, "llama")
    config = PruneConfig(method="sparsegpt", calib_batch=2)
    reference = load_model(str(source))
    calib = calibration(reference.model)
    save_pruned(reference, prune(reference, config, calib, progress=False), tmp_path / "in-memory")
    result = prune_offloaded(open_offloaded(str(source)), config, calib, tmp_path / "offloaded", progress=False, onload="cpu",
                             activation_memory=2 * window_bytes(reference.model, calib))
    assert SpyDevice.moved > 0 and result.activation_windows == 2
    # Each block went disk -> CPU -> "device", and its pruned copy came back before it was written out.
    assert_same_state(state_of(tmp_path / "offloaded"), state_of(tmp_path / "in-memory"))


@pytest.mark.parametrize("budget_windows", [None, 2])
def test_onloading_creates_no_tensor_off_the_execution_device(budget_windows):
    # Under a meta default device, a tensor made without `device=` has no data and mixing it with the
    # CPU's raises (see tests/test_devices.py): placing, streaming and moving blocks name their device.
    config = PruneConfig(method="mwanda", allocation="cwl", reconstruct={}, sparsity=0.5)
    plain, probed = loaded("llama"), loaded("llama")
    calib = calibration(plain.model)
    budget = None if budget_windows is None else budget_windows * window_bytes(plain.model, calib)
    prune(plain, config, calib, progress=False)
    with torch.device("meta"):
        result = prune(probed, config, calib, progress=False, onload="cpu", activation_memory=budget)
    assert result.activation_windows == budget_windows
    assert_same_pruning(plain, probed, atol=1e-5)


# ----- the activation budget -----------------------------------------------------------

BUDGET_RUNS = {
    **RUNS,
    "mwanda-activity-cwl": dict(method="mwanda", allocation="cwl", mwanda={"activation_prob": True}),
    "wanda-two-pass": dict(method="wanda", order="two-pass"),
    "wanda-2:4": dict(method="wanda", pattern="2:4"),
}


@pytest.mark.parametrize("options", BUDGET_RUNS.values(), ids=BUDGET_RUNS.keys())
@pytest.mark.parametrize("family", ["llama", "gemma3", "opt", "gpt2"])
def test_a_budget_gives_the_masks_of_no_budget(family, options):
    config = PruneConfig(**options)
    free, bounded = loaded(family), loaded(family)
    calib = calibration(free.model)  # 6 windows
    free_result = prune(free, config, calib, progress=False)
    result = prune(bounded, config, calib, progress=False, activation_memory=2 * window_bytes(free.model, calib) + 7)
    assert result.activation_windows == 2 and result.activation_memory == 2 * window_bytes(free.model, calib) + 7
    assert_same_pruning(free, bounded, atol=1e-5)
    assert result.block_sparsity_targets == free_result.block_sparsity_targets


def test_micro_batches_fit_the_budget_and_are_inside_a_block_one_at_a_time():
    model = loaded("llama")
    calib = calibration(model.model)  # 6 windows of 8 tokens
    budget = 2 * window_bytes(model.model, calib) + 100  # room for 2 windows, not 3
    block = adapter_for(model.model).get_blocks(model.model)[0]
    inside: list[weakref.ref] = []  # the hidden states of every micro-batch that entered the block
    sizes: list[int] = []  # windows in each linear's input
    alive: list[int] = []  # micro-batches alive inside the block when a linear runs

    def entered(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]  # (n, T, H): the micro-batch moved in
        assert hidden.numel() * hidden.element_size() <= budget
        inside.append(weakref.ref(hidden))

    def before_linear(module, args):
        sizes.append(args[0].shape[0])
        alive.append(sum(ref() is not None for ref in inside))

    handles = [block.register_forward_pre_hook(entered, with_kwargs=True)]
    handles += [linear.register_forward_pre_hook(before_linear) for linear in adapter_for(model.model).block_linears(block).values()]
    try:
        result = prune(model, PruneConfig(method="wanda", calib_batch=8), calib, progress=False, activation_memory=budget)
    finally:
        for handle in handles:
            handle.remove()
    # Micro-batches of 2 windows, each stopped and freed before the next enters (lockstep would hold all 3).
    assert result.activation_windows == 2 and set(sizes) == {2} and max(alive) == 1


def test_lockstep_keeps_every_micro_batch_inside_the_block():
    # The counterpart of the test above, on its own: lockstep's micro-batches wait inside the block together.
    model = loaded("llama")
    calib = calibration(model.model)
    block = adapter_for(model.model).get_blocks(model.model)[0]
    inside: list[weakref.ref] = []
    alive: list[int] = []
    handles = [
        block.register_forward_pre_hook(lambda m, args, kwargs: inside.append(weakref.ref(args[0])), with_kwargs=True),
        adapter_for(model.model).block_linears(block)["down"].register_forward_pre_hook(
            lambda m, args: alive.append(sum(ref() is not None for ref in inside))),
    ]
    try:
        prune(model, PruneConfig(method="wanda", calib_batch=2), calib, progress=False)
    finally:
        for handle in handles:
            handle.remove()
    assert max(alive) == 3


def test_the_budget_is_never_larger_than_calib_batch():
    model = loaded("llama")
    calib = calibration(model.model)
    seen: list[int] = []
    linear = next(iter(named_linears(model.model, adapter_for(model.model)).values()))
    handle = linear.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    try:
        result = prune(model, PruneConfig(method="wanda", calib_batch=1), calib, progress=False,
                       activation_memory=4 * window_bytes(model.model, calib))
    finally:
        handle.remove()
    # Streamed, in micro-batches of --calib-batch: the first linear runs once per stage for each of the 6 windows.
    assert result.activation_windows == 1 and set(seen) == {1} and len(seen) % 6 == 0


def test_hidden_states_that_fit_the_budget_are_not_streamed():
    model = loaded("llama")
    calib = calibration(model.model)
    result = prune(model, PruneConfig(method="wanda"), calib, progress=False, activation_memory=6 * window_bytes(model.model, calib))
    assert result.activation_windows is None and result.activation_memory == 6 * window_bytes(model.model, calib)


def test_a_budget_below_one_window_is_one_sentence_before_any_weight_changes():
    model = loaded("llama")
    calib = calibration(model.model)
    before = weights_of(model.model)
    with pytest.raises(BabelpruneError) as caught:
        prune(model, PruneConfig(method="wanda"), calib, progress=False, activation_memory=window_bytes(model.model, calib) - 1)
    message = str(caught.value)
    assert message.startswith("--activation-memory 1023 B is less than the hidden states of one calibration window (8 x 32")
    assert "give at least 1 KiB or a shorter --seq-len." in message and "\n" not in message
    for name, weight in weights_of(model.model).items():
        assert torch.equal(weight, before[name]), name


def test_the_per_language_setting_onloads_and_streams_too():
    config = PruneConfig(method="wanda", setting="per-language")
    plain, onloaded = loaded("qwen2"), loaded("qwen2")
    calib = calibration(plain.model)
    plain_result = prune(plain, config, calib, progress=False)
    result = prune(onloaded, config, calib, progress=False, onload="cpu", activation_memory=window_bytes(plain.model, calib))
    assert result.mask_bank.keys() == plain_result.mask_bank.keys()
    for key, masks in plain_result.mask_bank.items():
        for name, mask in masks.items():
            assert torch.equal(result.mask_bank[key][name], mask), (key, name)
    assert all(not bool((weight_matrix(m) == 0).any()) for m in named_linears(onloaded.model, adapter_for(onloaded.model)).values())


# ----- the verbs and the command -------------------------------------------------------

TINY_CORPUS = str(Path(__file__).parent / "fixtures" / "tiny.jsonl")
SPEC = CalibrationSpec(corpus=TINY_CORPUS, languages=["en", "fr"], samples=2, seq_len=16)  # 4 windows of 16 tokens
WINDOW = 16 * 32 * 4  # one window's hidden states in the tiny llama (H = 32), float32
CALIB_ARGS = ("--calib", TINY_CORPUS, "--calib-langs", "en,fr", "--samples", "1", "--seq-len", "16")


def folder_masks(folder: Path) -> dict[str, torch.Tensor]:
    return masks_of(load_model(str(folder)).model)


def assert_same_masks(a: Path, b: Path) -> None:
    first, second = folder_masks(a), folder_masks(b)
    assert first.keys() == second.keys()
    for name, mask in first.items():
        assert torch.equal(mask, second[name]), name


@pytest.mark.parametrize("offload", ["none", "disk"])
def test_prune_to_folder_onloads_streams_and_records_it(tmp_path, offload):
    source = source_folder(tmp_path, "llama")
    plain = prune_to_folder(str(source), PruneConfig(method="sparsegpt"), tmp_path / "plain", SPEC)
    result = prune_to_folder(str(source), PruneConfig(method="sparsegpt"), tmp_path / "onloaded", SPEC, offload=offload,
                             onload="sequential", activation_memory="2KiB")
    assert_same_masks(tmp_path / "plain", tmp_path / "onloaded")
    record = json.loads((tmp_path / "onloaded" / METADATA_FILE).read_text())
    assert (record["onload"], record["activation_memory"], record["activation_windows"]) == ("sequential", 2048, 1)
    assert (record["device"], plain.onload, plain.activation_windows) == ("cpu", "none", None)
    assert result.activation_windows == 1


@pytest.mark.parametrize(
    ("place", "onload", "expected"),
    [("cpu", "auto", None), ("cuda", "auto", "cuda"), ("cpu", "sequential", "cpu"), ("cuda", "sequential", "cuda"),
     ("cuda", "none", None), ("mps", "auto", "mps")],
)
def test_an_accelerator_onloads_unless_told_not_to(place, onload, expected):
    target = onload_device(torch.device(place), onload)
    assert (None if target is None else str(target)) == expected


def test_an_unknown_onload_is_one_sentence():
    with pytest.raises(BabelpruneError, match=r"^--onload 'lazy' is not one of: auto, sequential, none\.$"):
        onload_device(torch.device("cpu"), "lazy")


def test_disk_offload_prunes_in_bfloat16_as_in_memory(tmp_path):
    source = source_folder(tmp_path, "llama")
    config = PruneConfig(method="wanda")
    prune_to_folder(str(source), config, tmp_path / "in-memory", SPEC, dtype="bfloat16")
    prune_to_folder(str(source), config, tmp_path / "offloaded", SPEC, dtype="bfloat16", offload="disk")
    stored, offloaded = load_file(tmp_path / "in-memory" / "model.safetensors"), load_file(tmp_path / "offloaded" / "model.safetensors")
    assert stored.keys() == offloaded.keys() and {t.dtype for t in stored.values()} == {torch.bfloat16}
    for key, tensor in stored.items():
        assert torch.equal(tensor, offloaded[key]), key


def out_of_memory_on_call(number: int):
    """An engine._prune_linear that runs out of CUDA memory on its `number`-th call (after some layers were pruned)."""
    calls = []
    original = engine._prune_linear

    def prune_linear(*args, **kwargs):
        calls.append(1)
        if len(calls) == number:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(*args, **kwargs)

    return prune_linear


def no_memory(*args, **kwargs):
    """A stand-in for any step that runs a CUDA device out of memory."""
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.mark.parametrize(
    ("options", "advice"),
    [
        (dict(onload="sequential"), "lower --calib-batch, or give --activation-memory (such as 2GB) to keep the calibration "
                                    "activations beyond it in CPU memory"),
        (dict(onload="sequential", activation_memory="1MiB", offload="disk"), "lower --calib-batch, or lower --activation-memory (now 1 MiB)"),
        (dict(onload="none"), "let the weights stay on the CPU with --onload sequential (one block on the device at a time), "
                              "or lower --calib-batch"),
    ],
    ids=["onloaded", "offloaded-with-budget", "whole-model-on-the-device"],
)
def test_running_out_of_memory_is_one_sentence_and_leaves_nothing(tmp_path, monkeypatch, options, advice):
    source = source_folder(tmp_path, "llama")
    monkeypatch.setattr(engine, "_prune_linear", out_of_memory_on_call(9))  # block 1: block 0 is already pruned
    with pytest.raises(BabelpruneError) as caught:
        prune_to_folder(str(source), PruneConfig(method="wanda"), tmp_path / "out", SPEC, **options)
    assert str(caught.value) == f"Out of memory on cuda while pruning {source}; {advice}."
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name]  # no folder, no partial one beside it


def test_the_command_says_it_in_one_line(tmp_path, monkeypatch, capsys):
    source = source_folder(tmp_path, "llama")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(engine, "_prune_linear", out_of_memory_on_call(3))
    code, out, err = run_cli(monkeypatch, capsys, "prune", "--model", str(source), "--method", "wanda", "--calib", TINY_CORPUS,
                             "--calib-langs", "en,fr", "--samples", "2", "--seq-len", "16", "--offload", "disk", "--out", "out")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Out of memory on cuda while pruning" in lines[0] and "--calib-batch" in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name]


def test_evaluation_running_out_of_memory_is_one_sentence(tmp_path, monkeypatch):
    from babelprune.evaluate import onloaded

    source = source_folder(tmp_path, "llama")

    monkeypatch.setattr(api, "score_windows", no_memory)
    corpus = write_tiny_corpus(tmp_path / "corpus.jsonl")
    with pytest.raises(BabelpruneError, match=r"^Out of memory on cuda while evaluating .*; lower --batch-size or --seq-len, or "
                                              r"add --onload sequential\.$"):
        api.evaluate_model(str(source), str(corpus), max_tokens=8, seq_len=8)
    monkeypatch.setattr(onloaded, "score_windows_onloaded", no_memory)
    with pytest.raises(BabelpruneError, match=r"^Out of memory on cuda while evaluating .*; lower --batch-size or --seq-len\.$"):
        api.evaluate_model(str(source), str(corpus), max_tokens=8, seq_len=8, onload="sequential")


def test_the_command_streams_activations_and_says_so(tmp_path, monkeypatch, capsys):
    source = source_folder(tmp_path, "llama")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, "prune", "--model", str(source), "--method", "wanda", "--calib", TINY_CORPUS,
                             "--calib-langs", "en,fr", "--samples", "2", "--seq-len", "16", "--activation-memory", f"{2 * WINDOW}",
                             "--onload", "sequential", "--out", "out")
    assert code == 0, err
    assert "activations streamed 2 windows at a time" in out and "moved to" not in out  # on the CPU nothing moves
    record = json.loads((tmp_path / "out" / METADATA_FILE).read_text())
    assert (record["onload"], record["activation_memory"], record["activation_windows"]) == ("sequential", 2 * WINDOW, 2)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([*CALIB_ARGS, "--activation-memory", "lots"], "--activation-memory 'lots' is not a size"),
        ([*CALIB_ARGS, "--activation-memory", "0MB"], "is no memory at all"),
        (["--method", "magnitude", "--activation-memory", "1GB"], "--activation-memory bounds the calibration activations, "
                                                                  "which --method magnitude"),
        (["--structured", "heads", "--activation-memory", "1GB"], "--activation-memory has no effect on structured pruning"),
        (["--structured", "heads", "--onload", "sequential"], "--onload moves one block at a time to the device"),
        (["--onload", "later"], "Invalid value for '--onload'"),
    ],
)
def test_the_command_refuses_memory_options_in_one_sentence(tmp_path, monkeypatch, capsys, args, expected):
    source = source_folder(tmp_path, "llama")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, "prune", "--model", str(source), "--out", "out", *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and expected in err and (len(lines) == 1 or "Usage" in err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name]


def test_fine_tuning_out_of_memory_is_one_sentence(tmp_path, monkeypatch):
    import babelprune.finetune.trainer as trainer

    monkeypatch.setattr(trainer, "finetune", no_memory)
    monkeypatch.setattr(trainer, "plan_runs", lambda task, config: None)  # no task data is read
    monkeypatch.setattr(api, "check_sources", lambda **kwargs: None)
    import babelprune.data.tasks as tasks

    monkeypatch.setattr(tasks, "get_task", lambda name, **options: object())
    with pytest.raises(BabelpruneError) as caught:
        api.finetune_to_folder("some-encoder", "bible-genre", {}, FinetuneConfig(), tmp_path / "run")
    assert str(caught.value) == "Out of memory on cuda while fine-tuning some-encoder; lower --batch-size or --max-length."


def test_dynamic_training_out_of_memory_is_one_sentence_and_writes_nothing(tmp_path, monkeypatch):
    source = source_folder(tmp_path, "llama")
    import babelprune.finetune.dynamic as dynamic

    monkeypatch.setattr(dynamic, "train_dynamic", no_memory)
    corpus = write_tiny_corpus(tmp_path / "corpus.jsonl")
    spec = CalibrationSpec(corpus=str(corpus), languages=["en", "fr"], samples=1, seq_len=8)
    with pytest.raises(BabelpruneError) as caught:
        api.train_dynamic_to_folder(str(source), DynamicConfig(steps=1), tmp_path / "dynamic", calibration=spec)
    assert str(caught.value) == (f"Out of memory on cuda while training {source} across widths; "
                                 "lower batch_size or max_length in a --config file (a language model: --seq-len).")
    assert not (tmp_path / "dynamic").exists()


def test_timing_out_of_memory_is_one_sentence(tmp_path, monkeypatch):
    source = source_folder(tmp_path, "llama")
    speed = importlib.import_module("babelprune.evaluate.speed")

    monkeypatch.setattr(speed, "measure_speeds", no_memory)
    with pytest.raises(BabelpruneError) as caught:
        api.measure_model_speeds([str(source)], memory=False)
    assert str(caught.value) == (f"Out of memory on cuda while timing {source}; "
                                 "lower --batch or --seq-len, or time fewer models at once.")
