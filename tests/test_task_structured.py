"""Structured pruning on a task (Li et al. 2022) on a tiny BERT: task-loss importance, joint L0, re-fine-tuning, settings."""

from __future__ import annotations

import copy

import pytest
import torch

from babelprune.data.tasks import Example, Task
from babelprune.errors import BabelpruneError
from babelprune.finetune import task_structured as pipeline
from babelprune.finetune.config import FinetuneConfig
from babelprune.finetune.heads import TaskHead
from babelprune.finetune.prune_config import TaskPruneConfig, TaskStructuredRun
from babelprune.finetune.task_importance import JointL0, allocation_selection, fold_gates, task_gradient_importance, train_joint_l0
from babelprune.models.adapters import adapter_for
from babelprune.models.layouts import layer_layouts, total_block_params
from tests.tiny_models import HEADS, INTERMEDIATE, LAYERS, tiny_model
from tests.tiny_tokenizer import char_tokenizer


class TinyGenre(Task):
    """Two labels told apart by their words, in English, French and Swahili (all in the char alphabet)."""

    name = "tiny-genre"
    kind = "classification"
    labels = ("abc", "xyz")

    def languages(self) -> list[str]:
        return ["en", "fr", "sw"]

    def _examples(self, lang: str, split: str) -> list[Example]:
        filler = {"en": "the", "fr": "le", "sw": "na"}[lang]
        count = {"train": 8, "dev": 4, "test": 6}[split]
        return [Example(f"{split}:{i}", lang, text=f"{('abc', 'xyz')[i % 2]} {filler} {('abc', 'xyz')[i % 2]}{'e' * (i % 3)}",
                        label=i % 2) for i in range(count)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def task(monkeypatch) -> TinyGenre:
    monkeypatch.setattr(pipeline, "get_task", lambda name, **options: TinyGenre())
    return TinyGenre()


def config(**options) -> FinetuneConfig:
    defaults = dict(mode="multilingual", max_steps=3, batch_size=4, max_length=32, text_prefix="", lr=1e-3, eval_batch_size=8,
                    dropout=0.0)
    return FinetuneConfig(**{**defaults, **options})


def head_of(seed: int = 0) -> TaskHead:
    torch.manual_seed(seed)
    return TaskHead(tiny_model("bert", seed=seed), "classification", 2, dropout=0.0)


def examples(lang: str = "en", split: str = "train") -> list[Example]:
    return TinyGenre().examples(lang, split)


# ----------------------------------------------------------------------------- importance from the task loss


def test_when_the_task_loss_depends_on_one_head_that_head_alone_has_importance():
    head = head_of()
    with torch.no_grad():
        for block in adapter_for(head.encoder).get_blocks(head.encoder):
            output = adapter_for(head.encoder).attention_linears(block)["o"]
            d = output.weight.shape[1] // HEADS
            keep = output.weight[:, 2 * d : 3 * d].clone()
            output.weight.zero_()
            output.weight[:, 2 * d : 3 * d] = keep  # only head 2 reaches the residual stream
    importance = task_gradient_importance(head, char_tokenizer(), examples(), {"heads"}, config())
    for scores in importance.heads:  # each block's scores divided by their norm: head 2 has all of it
        assert scores.tolist() == pytest.approx([0.0, 0.0, 1.0, 0.0], abs=1e-12)
    assert importance.neurons is None


def test_a_classifier_that_ignores_the_encoder_gives_no_importance():
    head = head_of()
    with torch.no_grad():
        head.classifier.weight.zero_()  # logits = bias whatever the encoder says: dL/dgate = 0 for every unit
    importance = task_gradient_importance(head, char_tokenizer(), examples(), {"heads", "ffn"}, config())
    assert all(float(s.abs().sum()) == 0.0 for s in importance.heads + importance.neurons)


def test_importance_changes_with_the_weights_it_is_computed_on():
    one, other = head_of(0), head_of(0)
    with torch.no_grad():
        other.classifier.weight.mul_(-3.0)
    first = task_gradient_importance(one, char_tokenizer(), examples(), {"ffn"}, config())
    second = task_gradient_importance(other, char_tokenizer(), examples(), {"ffn"}, config())
    assert not torch.allclose(first.neurons[0], second.neurons[0])


# ----------------------------------------------------------------------------- L0 jointly with the weights


def test_joint_l0_moves_weights_and_gates_toward_the_target():
    head = head_of()
    before = {name: p.detach().clone() for name, p in head.named_parameters() if p.requires_grad}
    gates = train_joint_l0(head, char_tokenizer(), examples() + examples("fr"), {"ffn"}, 0.4, config(lr=1e-3),
                           steps=40, lr=0.1, lambda_lr=1.0, warmup=0.5)
    changed = [name for name, p in head.named_parameters() if p.requires_grad and not torch.equal(p, before[name])]
    assert any("intermediate" in name for name in changed) and any("classifier" in name for name in changed)
    assert all(not torch.equal(a, torch.zeros_like(a)) for a in gates.log_alpha["ffn"])  # gates left log_alpha = 0
    assert len(gates.expected_sparsity) == 40 and abs(gates.expected_sparsity[-1] - 0.4) < 0.1
    selection, summary = allocation_selection(head.encoder, gates, 0.4, tolerance=0.02)
    assert abs(selection.sparsity - 0.4) <= 0.02 and summary["removed_units"] == selection.removed["neurons"]


def _gates(closed: dict[int, list[int]], probs_open: float = 10.0) -> JointL0:
    """FFN log_alphas: +10 (open) except the `closed` neurons at -10 (deterministic gate 0)."""
    alphas = []
    for block in range(LAYERS):
        alpha = torch.full((INTERMEDIATE,), probs_open)
        alpha[closed.get(block, [])] = -10.0
        alphas.append(alpha)
    return JointL0({"heads": [], "ffn": alphas})


def _neuron_share(model, count: int) -> float:
    """The share of block parameters `count` FFN neurons hold (each: a row and bias of up, a column of down)."""
    hidden = model.config.hidden_size
    return count * (2 * hidden + 1) / total_block_params(model, adapter_for(model))


def test_the_allocation_the_gates_learned_is_kept_exactly_when_it_meets_the_target():
    model = tiny_model("bert")
    closed = {0: [1, 5, 9], 1: [0, 2, 4, 6, 8]}  # uneven across blocks: a per-layer ranking would not give this
    selection, summary = allocation_selection(model, _gates(closed), _neuron_share(model, 8), tolerance=1e-6)
    for block, keep in enumerate(selection.layers):
        assert sorted(set(range(INTERMEDIATE)) - set(keep.neurons)) == closed.get(block, [])
    assert (summary["closed_units"], summary["closed_kept"], summary["open_removed"]) == (8, 0, 0)


def test_too_few_closed_gates_are_filled_by_the_lowest_probabilities():
    model = tiny_model("bert")
    gates = _gates({0: [3]})
    gates.log_alpha["ffn"][1][7] = 1.0  # the least confidently open neuron: removed next
    selection, summary = allocation_selection(model, gates, _neuron_share(model, 2), tolerance=1e-6)
    assert 3 not in selection.layers[0].neurons and 7 not in selection.layers[1].neurons
    assert (summary["closed_kept"], summary["open_removed"]) == (0, 1)


def test_folding_scales_open_units_by_their_gate_and_leaves_closed_ones():
    model = tiny_model("bert")
    gates = _gates({0: [0]})
    gates.log_alpha["ffn"][0][1] = 0.0  # deterministic gate: sigmoid(0) * 1.2 - 0.1 = 0.5
    down = adapter_for(model).ffn_linears(adapter_for(model).get_blocks(model)[0])["down"]
    before = down.weight.detach().clone()
    fold_gates(model, gates)
    assert torch.allclose(down.weight[:, 1], before[:, 1] * 0.5)
    assert torch.equal(down.weight[:, 0], before[:, 0]) and torch.equal(down.weight[:, 2], before[:, 2])


# ----------------------------------------------------------------------------- the pipeline


def _run(folder, cfg, **prune) -> TaskStructuredRun:
    return TaskStructuredRun(task="tiny-genre", finetune=cfg, prune=TaskPruneConfig(**{"tolerance": 0.05, **prune}))


def test_shared_run_prunes_the_finetuned_model_refinetunes_and_scores_every_language(task, tiny_bert_folder, tmp_path, monkeypatch):
    seen, trained = [], []
    real_importance, real_train = pipeline.task_gradient_importance, pipeline.train_run

    def spy_importance(head, *args):
        seen.append({name: p.detach().clone() for name, p in head.encoder.named_parameters()})
        return real_importance(head, *args)

    def spy_train(head, tokenizer, run, cfg, *args):
        trained.append((run.name, cfg.max_steps, sorted({e.lang for e in run.train})))
        return real_train(head, tokenizer, run, cfg, *args)

    monkeypatch.setattr(pipeline, "task_gradient_importance", spy_importance)
    monkeypatch.setattr(pipeline, "train_run", spy_train)
    result = pipeline.run_task_structured(tiny_bert_folder, _run(tiny_bert_folder, config(), units=["ffn"], sparsity=0.25,
                                                            refinetune_steps=2), tmp_path)
    pretrained = dict(tiny_model("bert").named_parameters())
    dense_folder = next(tmp_path.glob("dense-*"))
    finetuned = dict(pipeline.load_model(str(dense_folder / "encoder")).model.named_parameters())
    # ranked on the fine-tuned weights, not the pretrained ones
    assert all(torch.equal(seen[0][name], finetuned[name]) for name in seen[0])
    assert any(not torch.equal(seen[0][name], pretrained[name]) for name in seen[0])
    assert trained == [("multilingual", 3, ["en", "fr", "sw"]), ("refinetune", 2, ["en", "fr", "sw"])]
    (model,) = result.models
    assert model.name == "shared" and [item.language for item in model.languages] == ["en", "fr", "sw"]
    assert all(len(item.outcomes) == 6 and set(item.outcomes) <= {0, 1} for item in model.languages)
    assert abs(model.sparsity - 0.25) <= 0.05 and model.parameters < result.dense.parameters
    assert model.items_per_second > 0 and result.steps == {"finetune": 3, "refinetune": 2}
    assert sum(w["ffn"] for w in model.widths) < INTERMEDIATE * LAYERS and all(w["heads"] == HEADS for w in model.widths)


def test_the_dense_finetuned_model_is_trained_once_and_reused(task, tiny_bert_folder, tmp_path, monkeypatch):
    first = pipeline.run_task_structured(tiny_bert_folder, _run(tiny_bert_folder, config(), units=["heads"], importance="magnitude",
                                                           sparsity=0.25, refinetune_steps=0), tmp_path)
    monkeypatch.setattr(pipeline, "build_head", lambda *a: (_ for _ in ()).throw(AssertionError("trained twice")))
    second = pipeline.run_task_structured(tiny_bert_folder, _run(tiny_bert_folder, config(), units=["heads"], importance="magnitude",
                                                            sparsity=0.25, refinetune_steps=0), tmp_path)
    assert first.dense == second.dense and first.models[0].languages == second.models[0].languages


def test_per_language_runs_rank_refinetune_and_score_each_language_alone(task, tiny_bert_folder, tmp_path, monkeypatch):
    ranked, trained = [], []
    real_l0, real_train = pipeline.train_joint_l0, pipeline.train_run

    def spy_l0(head, tokenizer, examples, *args, **kwargs):
        ranked.append(sorted({e.lang for e in examples}))
        return real_l0(head, tokenizer, examples, *args, **kwargs)

    def spy_train(head, tokenizer, run, cfg, *args):
        trained.append((run.name, sorted({e.lang for e in run.train}), run.eval_languages))
        return real_train(head, tokenizer, run, cfg, *args)

    monkeypatch.setattr(pipeline, "train_joint_l0", spy_l0)
    monkeypatch.setattr(pipeline, "train_run", spy_train)
    result = pipeline.run_task_structured(tiny_bert_folder, _run(tiny_bert_folder, config(), units=["ffn"], importance="l0",
                                                            setting="per-language", sparsity=0.25, l0_steps=4,
                                                            refinetune_steps=1), tmp_path)
    assert ranked == [["en"], ["fr"], ["sw"]]
    assert trained[1:] == [("refinetune", ["en"], ("en",)), ("refinetune", ["fr"], ("fr",)), ("refinetune", ["sw"], ("sw",))]
    assert [m.name for m in result.models] == ["en", "fr", "sw"]
    assert [[item.language for item in m.languages] for m in result.models] == [["en"], ["fr"], ["sw"]]
    assert set(result.l0) == {"en", "fr", "sw"} and all(abs(m.sparsity - 0.25) <= 0.05 for m in result.models)


def test_bad_task_pruning_configs_are_one_sentence():
    with pytest.raises(BabelpruneError, match="Magnitude importance uses no data"):
        TaskPruneConfig(importance="magnitude", setting="per-language")
    with pytest.raises(BabelpruneError, match="Unknown task-pruning unit 'blocks'"):
        TaskPruneConfig(units="blocks")
    with pytest.raises(BabelpruneError, match="mode multilingual"):
        TaskStructuredRun(finetune={"mode": "zero-shot"})


def test_a_token_task_is_refused_before_any_training(tiny_bert_folder, tmp_path, monkeypatch):
    class Tokens(TinyGenre):
        kind = "token-classification"

    monkeypatch.setattr(pipeline, "get_task", lambda name, **options: Tokens())
    with pytest.raises(BabelpruneError, match="classification tasks item by item"):
        pipeline.run_task_structured(tiny_bert_folder, _run(tiny_bert_folder, config()), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_layouts_of_a_copy_are_left_alone():
    head = head_of()
    copied = copy.deepcopy(head)
    gates = _gates({0: [0, 1]})
    selection, _ = allocation_selection(copied.encoder, gates, _neuron_share(copied.encoder, 2), tolerance=1e-6)
    pipeline.apply_selection(copied.encoder, selection)
    widths = [lay.ffn for lay in layer_layouts(head.encoder, adapter_for(head.encoder))]
    assert widths == [INTERMEDIATE] * LAYERS
    assert [lay.ffn for lay in layer_layouts(copied.encoder, adapter_for(copied.encoder))] == [INTERMEDIATE - 2] + [INTERMEDIATE] * (LAYERS - 1)
