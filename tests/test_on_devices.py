"""The same work on each device the machine has: pruning, evaluation, structured pruning and a fine-tuning step.

Every test takes the `device` fixture (tests/conftest.py): the CPU always, CUDA and MPS where
present (marks `cuda` and `mps`, skipped with the reason elsewhere). Each runs the work on that
device in float32 and compares it with the same work on the CPU. On the CPU the two are the
same code on the same machine, so they must agree exactly; on an accelerator, within the
rounding of a different order of float32 sums: a pruning mask may differ only where two scores
lie that close to their row's cut (benchmarks/gpu_check.py measures the same at scale).
"""

from __future__ import annotations

import pytest
import torch

from babelprune.formats.loading import load_model, place_model
from babelprune.models.adapters import adapter_for, weight_matrix
from babelprune.prune.config import PruneConfig
from babelprune.prune.engine import named_linears, prune
from tests.method_matrix import calibration, loaded, masks_of

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TIE_RTOL = 1e-4  # a mask entry this close (relative) to its row's cut may flip between devices: a tie, not a disagreement
WEIGHT_RTOL = 1e-2  # relative Frobenius error allowed between devices for weights SparseGPT updated


def _on(device: str, family: str = "llama"):
    """The tiny model of `family` (seed 0) on `device`, in float32."""
    model = loaded(family)
    return place_model(model, torch.device(device), torch.float32)


def _block_weights(model) -> dict[str, torch.Tensor]:
    return {name: weight_matrix(linear).detach().cpu() for name, linear in named_linears(model, adapter_for(model)).items()}


def _wanda_scores_on_the_cpu(model, calib) -> dict[str, torch.Tensor]:
    """Prune `model` (on the CPU) with wanda, keeping each layer's scores as the method saw them."""
    from babelprune.prune.kernels import wanda_scores
    from babelprune.prune.methods import METHODS, Method

    by_weight, original = {}, METHODS["wanda"]

    def recording(task):
        by_weight[task.weight.data_ptr()] = wanda_scores(task.weight, task.stats.pooled_norm())
        return original.fn(task)

    METHODS["wanda"] = Method("wanda", recording, original.needs_calibration)
    try:
        prune(model, PruneConfig(method="wanda", sparsity=0.5), calib, progress=False)
    finally:
        METHODS["wanda"] = original
    linears = named_linears(model.model, adapter_for(model.model))
    return {name: by_weight[weight_matrix(linear).data_ptr()].float().cpu() for name, linear in linears.items()}


def _flips_beyond_ties(reference_masks, masks, scores) -> dict[str, int]:
    """Per layer, the mask entries that differ from the reference where the reference's score is not at its row's cut."""
    found = {}
    for name, mask in reference_masks.items():
        differs = masks[name].cpu() != mask.cpu()
        row_scores = scores[name]
        cut = row_scores.kthvalue(row_scores.shape[1] // 2, dim=1, keepdim=True).values  # (out, 1)
        near_cut = (row_scores - cut).abs() <= TIE_RTOL * cut.abs()
        found[name] = int((differs & ~near_cut).sum())
    return found


def test_wanda_on_the_device_gives_the_masks_of_the_cpu(device):
    reference, there = loaded("llama"), _on(device)
    calib = calibration(reference.model)
    scores = _wanda_scores_on_the_cpu(reference, calib)
    result = prune(there, PruneConfig(method="wanda", sparsity=0.5), calib, progress=False)
    assert result.metadata()["device"].split(":")[0] == device and result.metadata()["dtype"] == "float32"
    assert str(there.device).split(":")[0] == device  # pruning left the model where it was
    masks, expected = masks_of(there.model), masks_of(reference.model)
    assert _flips_beyond_ties(expected, masks, scores) == dict.fromkeys(expected, 0)
    if device == "cpu":
        assert all(torch.equal(masks[name], mask) for name, mask in expected.items())


def test_sparsegpt_on_the_device_gives_the_weights_of_the_cpu(device):
    reference, there = loaded("llama"), _on(device)
    calib = calibration(reference.model)
    config = PruneConfig(method="sparsegpt", sparsity=0.5)
    expected_result = prune(reference, config, calib, progress=False)
    result = prune(there, config, calib, progress=False)
    assert result.achieved_sparsity == pytest.approx(expected_result.achieved_sparsity, abs=1e-3)
    expected, got = _block_weights(reference.model), _block_weights(there.model)
    for name, weight in expected.items():
        error = float(torch.linalg.norm(got[name] - weight) / torch.linalg.norm(weight))
        assert error <= (0.0 if device == "cpu" else WEIGHT_RTOL), (name, error)


def test_evaluation_on_the_device_gives_the_scores_of_the_cpu(device, tmp_path):
    from babelprune.api import evaluate_model
    from tests.sweep_fixtures import write_tiny_corpus, write_tiny_model

    folder = write_tiny_model(tmp_path / "tiny")
    corpus = write_tiny_corpus(tmp_path / "corpus.jsonl")
    options = dict(languages=["en", "fr"], seq_len=16, max_tokens=48, batch_size=2)
    expected = evaluate_model(str(folder), str(corpus), **options, device="cpu", dtype="float32")
    result = evaluate_model(str(folder), str(corpus), **options, device=device, dtype="float32")
    assert result.model.device.split(":")[0] == device and result.model.dtype == "float32"
    for mine, theirs in zip(result.scores, expected.scores, strict=True):
        assert (mine.language, mine.n_tokens) == (theirs.language, theirs.n_tokens)
        assert mine.nll_nats == pytest.approx(theirs.nll_nats, rel=0 if device == "cpu" else 1e-4)


def test_a_pruned_folder_written_on_the_device_matches_the_cpu_s(device, tmp_path):
    from babelprune.api import prune_to_folder
    from babelprune.prune.calibration import CalibrationSpec
    from tests.sweep_fixtures import write_tiny_corpus, write_tiny_model

    folder = write_tiny_model(tmp_path / "tiny")
    corpus = write_tiny_corpus(tmp_path / "corpus.jsonl")
    spec = CalibrationSpec(corpus=str(corpus), languages=["en", "fr"], samples=2, seq_len=16)
    config = PruneConfig(method="wanda", sparsity=0.5)
    prune_to_folder(str(folder), config, tmp_path / "cpu", spec, device="cpu", dtype="float32", save_format="hf")
    result = prune_to_folder(str(folder), config, tmp_path / "there", spec, device=device, dtype="float32", save_format="hf")
    assert result.metadata()["device"].split(":")[0] == device
    # Saved from the device, read back on the CPU: the same share of zeros in every layer (ties aside, the same masks).
    expected, got = load_model(str(tmp_path / "cpu")), load_model(str(tmp_path / "there"))
    assert got.pruning["device"].split(":")[0] == device
    for name, mask in masks_of(expected.model).items():
        flipped = int((masks_of(got.model)[name] != mask).sum())
        assert flipped <= (0 if device == "cpu" else 0.01 * mask.numel()), (name, flipped)


def test_structured_pruning_on_the_device_removes_the_units_the_cpu_removes(device):
    from babelprune.prune.structured import structured_prune

    reference, there = loaded("llama"), _on(device)
    calib = calibration(reference.model)
    expected = structured_prune(reference, {"heads", "ffn"}, "activation", 0.5, calib, progress=False)
    result = structured_prune(there, {"heads", "ffn"}, "activation", 0.5, calib, progress=False)
    assert result.metadata()["kept"] == expected.metadata()["kept"]
    assert result.metadata()["device"].split(":")[0] == device
    # The model is cut where it is, and the cut model computes what the CPU's does.
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(4, reference.model.config.vocab_size, (2, 8), generator=generator)
    with torch.no_grad():
        want = reference.model(ids).logits
        got = there.model(ids.to(there.device)).logits.cpu()
    torch.testing.assert_close(got, want, rtol=0 if device == "cpu" else 1e-4, atol=0 if device == "cpu" else 1e-5)


def test_a_fine_tuning_step_on_the_device_gives_the_cpu_s_loss_and_gradients(device, tiny_bert_folder):
    from babelprune.finetune.heads import TaskHead, encode, init_head_by_probe, predict
    from tests.test_finetune_trainer import TinyGenreTask, tiny_config

    task, config = TinyGenreTask(), tiny_config()
    examples = task.examples("en", "train")[:4]

    def one_step(where: str):
        encoder = load_model(tiny_bert_folder, dtype="float32", device=where)
        torch.manual_seed(0)
        head = TaskHead(encoder.model, task.kind, len(task.labels), config.pooling, dropout=0.0)
        init_head_by_probe(head, encoder.tokenizer, examples, 4, config.max_length, config.text_prefix)
        head.train()
        batch = encode(encoder.tokenizer, examples, head.kind, config.max_length, config.text_prefix, device=head.device)
        loss = head.loss(head(batch), batch.labels)
        loss.backward()
        grads = {name: p.grad.detach().cpu() for name, p in head.named_parameters() if p.grad is not None}
        return loss.item(), grads, predict(head.eval(), encoder.tokenizer, examples, 2, config.max_length, config.text_prefix)

    loss, grads, predictions = one_step(device)
    want_loss, want_grads, want_predictions = one_step("cpu")
    tolerance = dict(rtol=0, atol=0) if device == "cpu" else dict(rtol=1e-3, atol=1e-5)
    assert loss == pytest.approx(want_loss, rel=tolerance["rtol"], abs=tolerance["atol"])
    assert grads.keys() == want_grads.keys() and grads
    for name, grad in want_grads.items():
        torch.testing.assert_close(grads[name], grad, **tolerance, msg=name)
    assert predictions == want_predictions


def test_a_fine_tuning_run_on_the_device_records_it(device, tiny_bert_folder, tmp_path):
    from babelprune.finetune.trainer import finetune
    from tests.test_finetune_trainer import TinyGenreTask, tiny_config

    config = tiny_config(languages=["en"], perturbations=[], max_steps=2,
                         gmp={"final_sparsity": 0.5, "start_step": 1, "end_step": 2, "interval": 1})
    result = finetune(tiny_bert_folder, TinyGenreTask(), config, tmp_path / "run", progress=False, device=device, dtype="float32")
    assert result.device.split(":")[0] == device and result.dtype == "float32"
    assert result.achieved_sparsity == pytest.approx(0.5, abs=0.01)
    assert all(0.0 <= score.value <= 1.0 for score in result.scores)
