"""Dynamic Sparsification on tiny models: ranking, reordering, width masks, sandwich training, slicing and reloading."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from babelprune.data.tasks import Example, Task
from babelprune.errors import BabelpruneError
from babelprune.finetune.heads import TaskHead, encode
from babelprune.formats.dynamic import DYNAMIC_FILE, HEAD_FILE
from babelprune.formats.structured import STRUCTURE_FILE
from babelprune.models.adapters import adapter_for
from babelprune.models.base import LoadedModel
from babelprune.models.layouts import LayerLayout, layer_layouts
from babelprune.formats.loading import load_model
from babelprune.prune.calibration import Calibration
from babelprune.finetune.dynamic import (
    DynamicConfig,
    distillation_loss,
    level_selection,
    load_dynamic,
    load_task_head,
    permute_units,
    sandwich_levels,
    save_dynamic,
    slice_width,
    train_dynamic,
    unit_orders,
    width_masks,
)
from babelprune.prune.structured.selection import Importance, apply_selection
from tests.tiny_models import TINY_FAMILIES, model_output, tiny_inputs, tiny_model
from tests.tiny_tokenizer import char_tokenizer


class ToyTask(Task):
    """Two labels told apart by one word, in English and French (all in the char alphabet)."""

    name = "toy-genre"
    kind = "classification"
    labels = ("abc", "xyz")

    def languages(self) -> list[str]:
        return ["en", "fr"]

    def _examples(self, lang: str, split: str) -> list[Example]:
        filler = {"en": "the", "fr": "le"}[lang]
        return [
            Example(f"{split}:{i}", lang, text=f"{('abc', 'xyz')[i % 2] * 2} {filler}{'e' * (i % 3)}", label=i % 2)
            for i in range(16)
        ]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _encoder() -> LoadedModel:
    return LoadedModel(model=tiny_model("bert"), tokenizer=char_tokenizer(), spec="tiny-bert", path=None, kind="encoder")


def _lm() -> LoadedModel:
    return LoadedModel(model=tiny_model("llama"), tokenizer=char_tokenizer(), spec="tiny-llama", path=None, kind="causal-lm")


def _calibration() -> Calibration:
    """8 windows of 16 tokens repeating a 4-token cycle (easy to learn), two 'languages'."""
    rows = [[1] + [5 + (start + t) % 4 for t in range(15)] for start in range(8)]
    return Calibration(torch.tensor(rows), ("en",) * 4 + ("fr",) * 4, "toy")


def _task_config(**options) -> DynamicConfig:
    defaults = {"levels": (0.25, 0.5), "steps": 3, "batch_size": 4, "lr": 1e-3, "max_length": 32, "text_prefix": "", "dropout": 0.0}
    return DynamicConfig(**{**defaults, **options})


def _random_importance(model, units: set[str], seed: int = 1) -> Importance:
    generator = torch.Generator().manual_seed(seed)
    layouts = layer_layouts(model, adapter_for(model))
    return Importance(
        heads=[torch.rand(lay.n_heads, generator=generator) for lay in layouts] if "heads" in units else None,
        neurons=[torch.rand(lay.ffn, generator=generator) for lay in layouts] if "ffn" in units else None,
        gqa="query",
    )


# ----------------------------------------------------------------------------- config and pure parts


def test_config_sorts_levels_adds_the_full_model_and_refuses_bad_values():
    assert DynamicConfig(levels=[0.5, 0.25, 0.5]).levels == (0.0, 0.25, 0.5)
    assert DynamicConfig(units=["ffn"]).units == ("ffn",)
    for options, words in [
        ({"levels": [1.0]}, r"outside \[0, 1\)"),
        ({"units": ["blocks"]}, "Unknown dynamic units"),
        ({"steps": 0}, "steps is 0"),
        ({"samples_per_step": -1}, "samples_per_step"),
        ({"distill_weight": 1.5}, "distill_weight"),
        ({"warmup": 1.0}, "warmup"),
    ]:
        with pytest.raises(BabelpruneError, match=words):
            DynamicConfig(**options)


def test_unit_orders_by_hand():
    grouped = LayerLayout(n_heads=4, n_kv_heads=2, head_dim=8, ffn=3)
    plain = LayerLayout(n_heads=4, n_kv_heads=4, head_dim=8, ffn=3)
    importance = Importance(
        heads=[torch.tensor([1.0, 3.0, 5.0, 2.0]), torch.tensor([0.1, 0.9, 0.5, 0.3])],
        neurons=[torch.tensor([0.2, 0.7, 0.7]), torch.tensor([3.0, 2.0, 1.0])],
    )
    orders = unit_orders(importance, [grouped, plain])
    # Grouped: heads 0,1 share a key/value head, 2,3 the other; each group is sorted on its own.
    assert orders[0] == {"heads": [1, 0, 2, 3], "neurons": [1, 2, 0]}  # a tie keeps the earlier neuron first
    assert orders[1] == {"heads": [1, 2, 3, 0], "neurons": [0, 1, 2]}
    ffn_only = unit_orders(Importance(neurons=[torch.tensor([0.0, 1.0, 2.0])]), [plain])
    assert ffn_only[0] == {"heads": [0, 1, 2, 3], "neurons": [2, 1, 0]}


def test_sandwich_always_has_the_full_and_the_smallest_width():
    levels = (0.0, 0.1, 0.2, 0.3)
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(20):
        step = sandwich_levels(levels, 1, generator)
        assert step[:2] == [0.0, 0.3] and len(step) == 3 and step[2] in (0.1, 0.2)
        seen.add(step[2])
    assert seen == {0.1, 0.2}
    assert sandwich_levels(levels, 0, generator) == [0.0, 0.3]
    assert sorted(sandwich_levels(levels, 5, generator)) == list(levels)
    assert sandwich_levels((0.0,), 2, generator) == [0.0]


def test_distillation_loss_by_hand():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])  # softmax: 3/4, 1/4
    expected_t1 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert distillation_loss(student, teacher, 1.0).item() == pytest.approx(expected_t1, rel=1e-6)
    p = math.sqrt(3.0) / (math.sqrt(3.0) + 1.0)  # softmax of (ln 3 / 2, 0)
    expected_t2 = 4.0 * (p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p)))
    assert distillation_loss(student, teacher, 2.0).item() == pytest.approx(expected_t2, rel=1e-6)
    # An invalid position (here a very different one) is left out of the mean.
    both_s = torch.tensor([[0.0, 0.0], [9.0, -9.0]])
    both_t = torch.tensor([[math.log(3.0), 0.0], [-9.0, 9.0]])
    valid = torch.tensor([True, False])
    assert distillation_loss(both_s, both_t, 1.0, valid).item() == pytest.approx(expected_t1, rel=1e-6)
    assert distillation_loss(teacher, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-7)


# ----------------------------------------------------------------------------- reordering, widths and masks


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_reordering_changes_no_output(family):
    model = tiny_model(family)
    units = {"ffn"} if family == "bloom" else {"heads", "ffn"}  # BLOOM's ALiBi biases pin its heads
    inputs = tiny_inputs(model)
    before = model_output(model, inputs)
    orders = unit_orders(_random_importance(model, units), layer_layouts(model, adapter_for(model)))
    assert any(order["neurons"] != sorted(order["neurons"]) for order in orders)
    if "heads" in units:
        assert any(order["heads"] != sorted(order["heads"]) for order in orders)
    permute_units(model, orders)
    torch.testing.assert_close(model_output(model, inputs), before, atol=1e-5, rtol=1e-5)


def test_reordering_moves_rows_and_columns_of_the_ranked_units():
    model = tiny_model("bert")
    adapter = adapter_for(model)
    block = adapter.get_blocks(model)[0]
    query, down = block.attention.self.query.weight.detach().clone(), block.output.dense.weight.detach().clone()
    orders = [{"heads": [2, 0, 1, 3], "neurons": list(range(63, -1, -1))}, {"heads": [0, 1, 2, 3], "neurons": list(range(64))}]
    permute_units(model, orders)
    block = adapter.get_blocks(model)[0]
    # Head dim 8: new head 0 holds old head 2 (rows 16-23 of the query projection).
    assert torch.equal(block.attention.self.query.weight[0:8], query[16:24])
    assert torch.equal(block.output.dense.weight[:, 0], down[:, 63])


def test_level_selection_keeps_prefixes_by_hand():
    # Tiny BERT block: a head owns 3*8*33 + 8*32 = 1048 parameters of 4224 in attention, a neuron 65 of 4192 in the FFN.
    # 0.25: heads get 1056 -> 1 head; the FFN gets 2104 - 1048 = 1056 -> 16 neurons. 0.5: 2 heads, then 32 neurons.
    bert = tiny_model("bert")
    for sparsity, heads, neurons in [(0.25, 3, 48), (0.5, 2, 32)]:
        for keep in level_selection(bert, sparsity, ("heads", "ffn")).layers:
            assert keep.query_heads == list(range(heads)) and keep.neurons == list(range(neurons))
    # Tiny Llama: 2 groups of 2 query heads; a query head owns 8*32 q rows + 8*32 o columns = 512 of 3072.
    # 0.5 gives heads 1536: one slice of two heads (the last of each group), 1024.
    keep = level_selection(tiny_model("llama"), 0.5, ("heads", "ffn")).layers[0]
    assert keep.query_heads == [0, 2] and keep.kv_heads == [0, 1]
    assert level_selection(bert, 0.0, ("heads", "ffn")).removed_params == 0


@pytest.mark.parametrize("family", ["bert", "llama", "gemma3", "gpt2", "opt"])
def test_masks_equal_physical_slicing(family):
    model = tiny_model(family)
    inputs = tiny_inputs(model)
    dense = model_output(model, inputs)
    for sparsity in (0.25, 0.5):
        selection = level_selection(model, sparsity, ("heads", "ffn"))
        with width_masks(model, selection):
            masked = model_output(model, inputs)
        sliced = copy.deepcopy(model)
        apply_selection(sliced, selection)
        torch.testing.assert_close(model_output(sliced, inputs), masked, atol=1e-5, rtol=1e-5)
        assert (masked - dense).abs().max() > 1e-3  # the masks did something
    torch.testing.assert_close(model_output(model, inputs), dense)  # and were removed on the way out


# ----------------------------------------------------------------------------- training


def _ce(head: TaskHead, tokenizer, examples, level: float) -> float:
    batch = encode(tokenizer, examples, "classification", 32, "")
    with torch.no_grad(), width_masks(head.encoder, level_selection(head.encoder, level, ("heads", "ffn"))):
        return float(TaskHead.loss(head(batch), batch.labels))


def test_task_training_lowers_the_loss_at_the_full_and_smallest_widths():
    loaded, task = _encoder(), ToyTask()
    config = _task_config(steps=20, distill=False, samples_per_step=1, lr=1e-2, head_lr=1e-2)
    seen: list[dict] = []
    result = train_dynamic(loaded, config, task, progress=False, on_step=lambda step, losses: seen.append(losses))
    assert len(seen) == 20 and all(set(losses) >= {0.0, 0.5} for losses in seen)
    assert [step for step, _ in result.history[0.5]] == list(range(1, 21))
    examples = task.examples("en", "train")
    head = result.model.head
    for level in (0.0, 0.5):
        first = result.history[level][0][1]  # loss of step 1, before any update
        assert first > 0.4
        assert _ce(head, loaded.tokenizer, examples, level) < 0.5 * first
    assert result.achieved[0.5] == pytest.approx(4176 / 8416)  # 2 heads (2096) + 32 neurons (2080) of 8416 per block
    assert result.model.metadata["widths"]["0.5"] == {"heads": [2, 2], "ffn": [32, 32]}


def test_lm_training_lowers_the_loss_and_distils_from_the_dense_model():
    loaded = _lm()
    config = DynamicConfig(levels=(0.5,), steps=30, batch_size=4, lr=3e-3, distill=False, max_length=16)
    result = train_dynamic(loaded, config, calibration=_calibration(), progress=False)
    for level in (0.0, 0.5):
        first, last = result.history[level][0][1], result.history[level][-1][1]
        assert last < 0.5 * first
    # Pure distillation from a dense copy: at step 1 the full width is that copy, so its loss is exactly 0.
    distilled = train_dynamic(_lm(), config.model_copy(update={"distill": True, "distill_weight": 1.0, "steps": 2}),
                              calibration=_calibration(), progress=False)
    assert distilled.history[0.0][0][1] == pytest.approx(0.0, abs=1e-6)
    assert distilled.history[0.5][0][1] > 1e-4
    assert distilled.model.metadata["teacher"] == "dense"


# ----------------------------------------------------------------------------- saving, slicing, reloading


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    loaded = _encoder()
    result = train_dynamic(loaded, _task_config(steps=3), ToyTask(), progress=False)
    folder = save_dynamic(result.model, tmp_path_factory.mktemp("dyn") / "dynamic")
    return result, folder


def _logits(head: TaskHead, tokenizer, level: float | None = None) -> torch.Tensor:
    batch = encode(tokenizer, ToyTask().examples("fr", "test"), "classification", 32, "")
    masks = width_masks(head.encoder, level_selection(head.encoder, level, ("heads", "ffn"))) if level else torch.no_grad()
    with torch.no_grad(), masks:
        return head.eval()(batch)


def test_a_saved_dynamic_model_reloads_with_its_order_and_head(trained):
    result, folder = trained
    assert {DYNAMIC_FILE, HEAD_FILE, "config.json"} <= {p.name for p in folder.iterdir()}
    metadata = json.loads((folder / DYNAMIC_FILE).read_text())
    assert metadata["levels"] == [0.0, 0.25, 0.5] and metadata["units"] == ["ffn", "heads"]
    assert metadata["teacher"] == "full-width" and metadata["task"]["labels"] == ["abc", "xyz"]
    assert len(metadata["order"]) == 2 and sorted(metadata["order"][0]["neurons"]) == list(range(64))
    again = load_dynamic(folder)
    tokenizer = again.loaded.tokenizer
    torch.testing.assert_close(_logits(again.head, tokenizer), _logits(result.model.head, tokenizer))
    plain = load_model(str(folder))  # a normal HF folder, full width
    assert [lay.n_heads for lay in layer_layouts(plain.model, adapter_for(plain.model))] == [4, 4]


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.4])
def test_slice_and_reload_equals_the_masked_model(trained, tmp_path, sparsity):
    result, folder = trained
    out = slice_width(folder, sparsity, tmp_path / "sliced")
    assert (out / STRUCTURE_FILE).is_file() and (out / HEAD_FILE).is_file()
    sliced = load_model(str(out))
    head = load_task_head(out, sliced.model)
    tokenizer = sliced.tokenizer
    torch.testing.assert_close(_logits(head, tokenizer), _logits(result.model.head, tokenizer, sparsity), atol=1e-5, rtol=1e-5)
    widths = layer_layouts(sliced.model, adapter_for(sliced.model))
    expected = {0.25: (3, 48), 0.5: (2, 32)}.get(sparsity)
    if expected:
        assert {(lay.n_heads, lay.ffn) for lay in widths} == {expected}
    assert sliced.pruning["method"] == "dynamic" and sliced.pruning["sparsity"] == sparsity


def test_slicing_in_memory_leaves_the_model_whole(trained, tmp_path):
    result, _ = trained
    slice_width(result.model, 0.5, tmp_path / "half")
    model = result.model.loaded.model
    assert {(lay.n_heads, lay.ffn) for lay in layer_layouts(model, adapter_for(model))} == {(4, 64)}


def test_slicing_on_the_device_cuts_the_same_weights_as_on_the_cpu(trained, tmp_path, device):
    from babelprune.devices import placement
    from safetensors.torch import load_file

    _, folder = trained
    on_cpu = slice_width(folder, 0.5, tmp_path / "reference")
    there = slice_width(folder, 0.5, tmp_path / "there", placement(device, "float32"))
    # Slicing only selects rows and columns: wherever it happens, the saved weights are the same numbers.
    expected, got = load_file(on_cpu / "model.safetensors"), load_file(there / "model.safetensors")
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    recorded = load_model(str(there)).pruning
    assert recorded["device"].split(":")[0] == device and recorded["dtype"] == "float32"


def test_slice_saves_the_model_in_the_dtype_it_is_given(trained, tmp_path, monkeypatch, capsys):
    from tests.cli_runner import run_cli

    _, folder = trained
    code, out, err = run_cli(monkeypatch, capsys, "slice", str(folder), "--out", str(tmp_path / "half"), "--sparsity", "0.5",
                             "--dtype", "bfloat16")
    assert code == 0, err
    sliced = load_model(str(tmp_path / "half"), dtype="bfloat16")
    assert (sliced.pruning["device"], sliced.pruning["dtype"]) == ("cpu", "bfloat16")
    from safetensors.torch import load_file

    assert {tensor.dtype for tensor in load_file(tmp_path / "half" / "model.safetensors").values()
            if tensor.is_floating_point()} == {torch.bfloat16}
    # The default keeps what slicing always did: float32 weights.
    default = slice_width(folder, 0.5, tmp_path / "default")
    assert load_model(str(default)).pruning["dtype"] == "float32"


def test_lm_slice_and_reload_equals_the_masked_model(tmp_path):
    result = train_dynamic(_lm(), DynamicConfig(levels=(0.5,), steps=2, batch_size=4), calibration=_calibration(), progress=False)
    out = slice_width(save_dynamic(result.model, tmp_path / "dyn"), 0.5, tmp_path / "half")
    model, inputs = result.model.loaded.model, tiny_inputs(result.model.loaded.model)
    with width_masks(model, level_selection(model, 0.5, ("heads", "ffn"))):
        masked = model_output(model, inputs)
    torch.testing.assert_close(model_output(load_model(str(out)).model, inputs), masked, atol=1e-5, rtol=1e-5)
    assert load_task_head(out, model) is None


# ----------------------------------------------------------------------------- errors


def test_slicing_errors(trained, tmp_path):
    _, folder = trained
    plain = tmp_path / "plain"
    tiny_model("bert").save_pretrained(plain)
    with pytest.raises(BabelpruneError, match="was not trained dynamically"):
        slice_width(plain, 0.5, tmp_path / "a")
    with pytest.raises(BabelpruneError, match=r"outside \[0, 1\)"):
        slice_width(folder, 1.0, tmp_path / "b")
    with pytest.raises(BabelpruneError, match="trained down to sparsity 0.5"):
        slice_width(folder, 0.6, tmp_path / "c")
    with pytest.raises(BabelpruneError, match="exists"):
        slice_width(folder, 0.5, folder)
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_training_input_errors_come_before_any_work():
    cases = [
        (_encoder(), {}, "is trained dynamically on a task"),
        (_lm(), {}, "calibration windows"),
        (_lm(), {"task": ToyTask()}, "Task heads go on encoders"),
        (_encoder(), {"task": ToyTask(), "config": _task_config(teacher="dense")}, "dense teacher"),
        (_encoder(), {"task": ToyTask(), "config": _task_config(levels=(0.97,))}, "cannot be reached"),
    ]
    for loaded, options, words in cases:
        config = options.pop("config", _task_config())
        with pytest.raises(BabelpruneError, match=words):
            train_dynamic(loaded, config, progress=False, **options)
    bloom = LoadedModel(model=tiny_model("bloom"), tokenizer=char_tokenizer(), spec="bloom", path=None, kind="causal-lm")
    with pytest.raises(BabelpruneError, match="cannot be removed"):
        train_dynamic(bloom, _task_config(), calibration=_calibration(), progress=False)


def test_a_corrupt_task_head_is_reported(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / HEAD_FILE).write_text("{not json")
    with pytest.raises(BabelpruneError, match="task head"):
        load_task_head(broken, tiny_model("bert"))


def test_a_task_head_that_does_not_fit_its_encoder_is_reported(tmp_path):
    # The files read fine (formats.dynamic); building the head around the encoder fails: the same sentence.
    from safetensors.torch import save_file

    from babelprune.formats.dynamic import HEAD_WEIGHTS

    (tmp_path / HEAD_FILE).write_text(json.dumps({"kind": "classification", "labels": ["a", "b"], "pooling": "mean", "dropout": 0.0}))
    save_file({"weight": torch.zeros(2, 3), "bias": torch.zeros(2)}, str(tmp_path / HEAD_WEIGHTS))
    with pytest.raises(BabelpruneError, match=f"The task head in {tmp_path} is corrupt or missing; re-run the dynamic training"):
        load_task_head(tmp_path, tiny_model("bert"))
    (tmp_path / HEAD_FILE).write_text(json.dumps({"kind": "classification"}))
    with pytest.raises(BabelpruneError, match="is corrupt or missing"):
        load_task_head(tmp_path, tiny_model("bert"))


# ----------------------------------------------------------------------------- the real encoder


@pytest.mark.real
def test_e5_small_on_bible_genre_slices_to_a_smaller_model_that_reloads(tmp_path):
    from babelprune.data.tasks import get_task

    loaded = load_model("e5-small")
    task = get_task("bible-genre", languages=["en", "fr"], max_per_label=2, max_eval=7)
    result = train_dynamic(loaded, DynamicConfig(levels=(0.5,), steps=2, batch_size=4, max_length=24), task, progress=False)
    out = slice_width(result.model, 0.5, tmp_path / "half")
    sliced = load_model(str(out))
    # A block: 12 heads of 32 dims, each 3*32*385 + 32*384 = 49248 of 591360 attention parameters; 1536 neurons of
    # 769. Half: heads get 295680 -> 6 heads (295488); the FFN gets 886464 - 295488 = 590976 -> 768 neurons.
    assert {(lay.n_heads, lay.ffn) for lay in layer_layouts(sliced.model, adapter_for(sliced.model))} == {(6, 768)}
    batch = encode(sliced.tokenizer, task.examples("fr", "test"), "classification", 24, "query: ")
    head, model = load_task_head(out, sliced.model), result.model.loaded.model
    with torch.no_grad():
        with width_masks(model, level_selection(model, 0.5, ("heads", "ffn"))):
            masked = result.model.head(batch)
        torch.testing.assert_close(head(batch), masked, atol=1e-4, rtol=1e-4)
