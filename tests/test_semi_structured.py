"""--sparse-kernels 2:4: the 2:4 detector, which linears the kernels take, the refusals, and the conversion's record.

The real kernels need a CUDA card. On the CPU the conversion runs with a stand-in for
torch.sparse.to_sparse_semi_structured that wraps the weight in a marked tensor, so every
step but the sparse product itself (which linears are converted, what the record counts,
the weights coming back dense) is checked here; the `cuda`-marked test runs the real kernels.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig
from transformers.pytorch_utils import Conv1D

from babelprune import api
from babelprune.errors import BabelpruneError
from babelprune.evaluate import semi_structured
from babelprune.evaluate.semi_structured import (
    NOT_TWO_FOUR, check_sparse_kernels, convertible, is_two_four, min_tile, semi_structured_linears,
)
from babelprune.evaluate.speed import measure_speeds
from babelprune.models.adapters import adapter_for, named_linears
from babelprune.models.base import LoadedModel
from babelprune.records.eval import EvalResult
from babelprune.records.kernels import SparseKernelRecord
from tests.cli_runner import run_cli
from tests.sweep_fixtures import write_tiny_corpus
from tests.tiny_tokenizer import char_tokenizer

CUDA = torch.device("cuda")  # constructing a device needs no card; nothing is placed on it here


def two_four(weight: torch.Tensor) -> torch.Tensor:
    """`weight` (out, in) with the 2 smallest magnitudes of every 4 consecutive inputs zeroed."""
    groups = weight.reshape(weight.shape[0], -1, 4)  # (out, in/4, 4)
    smallest = groups.abs().argsort(dim=-1)[..., :2]
    return groups.scatter(-1, smallest, 0).reshape(weight.shape)


def eligible_llama(seed: int = 0, dtype: torch.dtype = torch.float16) -> nn.Module:
    """A 2-block Llama whose block linears all fit both backends' tiles (dims multiples of 32 x 64), every one 2:4."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=128)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for linear in named_linears(model, adapter_for(model)).values():
            linear.weight.copy_(two_four(linear.weight))
    return model.to(dtype)


class Marked(torch.Tensor):
    """What the stand-in conversion returns: the same values, a type that says the linear was converted."""

    BACKEND = "stand-in"

    def to_dense(self):
        return self.as_subclass(torch.Tensor).clone()


@pytest.fixture
def fake_kernels(monkeypatch):
    """torch.sparse.to_sparse_semi_structured replaced by a wrapper, and the CUDA check let through: the CPU path."""
    seen = []

    def convert(weight):
        seen.append(tuple(weight.shape))
        return weight.clone().as_subclass(Marked)

    monkeypatch.setattr(torch.sparse, "to_sparse_semi_structured", convert, raising=False)
    monkeypatch.setattr(semi_structured, "check_sparse_kernels", lambda *args: None)
    monkeypatch.setattr(api, "check_sparse_kernels", lambda *args: None)
    return seen


# ----- the 2:4 detector ----------------------------------------------------------------


def test_a_two_four_matrix_is_recognised():
    weight = two_four(torch.randn(8, 16))
    assert is_two_four(weight)
    assert is_two_four(torch.zeros(4, 8))  # more zeros than needed is still 2:4
    row = torch.tensor([[1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0]])  # groups of 2 and 1 non-zeros
    assert is_two_four(row)


def test_one_group_of_three_non_zeros_is_not_two_four():
    weight = two_four(torch.randn(8, 16))
    weight[5, 8:12] = torch.tensor([1.0, 2.0, 0.0, 3.0])  # inputs 8-11 of row 5: three non-zeros
    assert not is_two_four(weight)
    assert not is_two_four(torch.ones(2, 4))


def test_two_four_counts_along_the_inputs_not_the_outputs():
    rows = torch.tensor([[1.0, 2.0, 0.0, 0.0, 3.0, 4.0, 0.0, 0.0]]).repeat(4, 1)  # (out 4, in 8): 2:4 along every row
    assert is_two_four(rows)
    # Its transpose (out 8, in 4): row 0 is input 0 of every old row, four non-zeros in one group.
    assert not is_two_four(rows.t())
    assert not is_two_four(rows.t().contiguous())
    columns = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0] * 4, [0.0] * 4, [5.0, 6.0, 7.0, 8.0]])  # 2:4 down each column only
    assert not is_two_four(columns) and is_two_four(columns.t())


def test_a_matrix_whose_inputs_are_not_a_multiple_of_four_is_not_two_four():
    assert not is_two_four(torch.zeros(4, 6))
    assert not is_two_four(torch.zeros(8))  # a vector is no linear's weight
    assert not is_two_four(torch.zeros(0, 8))


# ----- what the kernels take -------------------------------------------------------------


def _linear(out_features: int, in_features: int, dtype=torch.float16, sparse: bool = True) -> nn.Linear:
    linear = nn.Linear(in_features, out_features, bias=False)
    with torch.no_grad():
        if sparse:
            linear.weight.copy_(two_four(linear.weight))
    return linear.to(dtype)


def test_a_half_precision_two_four_linear_of_whole_tiles_is_convertible():
    assert convertible(_linear(64, 128)) == (True, "")
    assert convertible(_linear(128, 64, torch.bfloat16)) == (True, "")


def test_float32_weights_are_left_dense_with_their_type_named():
    ok, why = convertible(_linear(64, 128, torch.float32))
    assert not ok and "float32" in why and "float16 or bfloat16" in why


@pytest.mark.parametrize("shape", [(40, 64), (64, 72), (8, 64)])
def test_shapes_off_the_tile_are_left_dense(shape):
    # 40 and 72 are no multiple of 16 (cuSPARSELt) nor of 32 / 64 (CUTLASS); 8 rows are below either minimum.
    ok, why = convertible(_linear(*shape))
    assert not ok and why.startswith("shape not a multiple of")


def test_a_dense_weight_and_a_conv1d_are_left_dense():
    assert convertible(_linear(64, 128, sparse=False)) == (False, NOT_TWO_FOUR)
    ok, why = convertible(Conv1D(64, 128).half())
    assert not ok and "nn.Linear" in why


def test_the_tile_is_the_backends_documented_minimum(monkeypatch):
    monkeypatch.setattr(semi_structured, "backend", lambda: "cutlass")
    assert min_tile(torch.float16) == min_tile(torch.bfloat16) == (32, 64)
    monkeypatch.setattr(semi_structured, "backend", lambda: "cusparselt")
    assert min_tile(torch.float16) == (16, 16)
    assert convertible(_linear(48, 80)) == (True, "")  # 16-multiples: cuSPARSELt takes them
    monkeypatch.setattr(semi_structured, "backend", lambda: "cutlass")
    assert convertible(_linear(48, 80))[0] is False


# ----- refusals -----------------------------------------------------------------------


def test_none_is_accepted_anywhere():
    check_sparse_kernels("none", torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("device", ["cpu", "mps"])
def test_a_device_other_than_cuda_is_refused(device):
    with pytest.raises(BabelpruneError, match=r"need CUDA, not .*give --device cuda"):
        check_sparse_kernels("2:4", torch.device(device), torch.float16)


def test_float32_is_refused_naming_dtype():
    with pytest.raises(BabelpruneError, match=r"float16 or bfloat16 .* no float32\); give --dtype float16"):
        check_sparse_kernels("2:4", CUDA, torch.float32)


def test_a_torch_without_semi_structured_tensors_is_refused(monkeypatch):
    monkeypatch.delattr(torch.sparse, "to_sparse_semi_structured")
    with pytest.raises(BabelpruneError, match="has no torch.sparse.to_sparse_semi_structured"):
        check_sparse_kernels("2:4", CUDA, torch.bfloat16)


def test_the_verbs_refuse_before_loading(monkeypatch):
    # A model name that does not exist: had the verb tried to load it, the sentence would be about the name.
    with pytest.raises(BabelpruneError, match="need CUDA"):
        api.evaluate_model("no/such-model-here", sparse_kernels="2:4")
    with pytest.raises(BabelpruneError, match="need CUDA"):
        api.measure_model_speeds(["no/such-model-here"], sparse_kernels="2:4", memory=False)
    monkeypatch.setattr(api, "resolve", lambda device, dtype: (CUDA, torch.float32))  # as on a machine with a card
    with pytest.raises(BabelpruneError, match="--dtype"):
        api.evaluate_model("no/such-model-here", device="cuda", dtype="float32", sparse_kernels="2:4")
    with pytest.raises(BabelpruneError, match="--dtype"):
        api.measure_model_speeds(["no/such-model-here"], device="cuda", dtype="float32", sparse_kernels="2:4", memory=False)


@pytest.mark.parametrize("command", [["eval", "--out", "{tmp}/r.json"], ["bench-speed", "gemma3-270m", "--json", "{tmp}/s.json"]])
def test_the_command_line_refuses_on_the_cpu_in_one_sentence_and_writes_nothing(monkeypatch, capsys, tmp_path, command):
    args = [part.replace("{tmp}", str(tmp_path)) for part in command]
    code, out, err = run_cli(monkeypatch, capsys, *args, "--sparse-kernels", "2:4")
    text = " ".join(err.split())
    assert code == 2 and "need CUDA, not cpu; give --device cuda" in text
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_kernel_name_is_refused_by_the_command_line(monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "eval", "--sparse-kernels", "1:4")
    assert code == 2 and "1:4" in err


def test_a_mask_bank_is_refused(fake_kernels):
    model = eligible_llama()
    bank = {"en": {name: torch.zeros_like(linear.weight, dtype=torch.bool)
                   for name, linear in named_linears(model, adapter_for(model)).items()}}
    banked = LoadedModel(model, char_tokenizer(), "banked", None, "causal-lm", mask_bank=bank)
    with pytest.raises(BabelpruneError, match="needs fixed weights"):
        measure_speeds([banked], seq_len=8, batch_size=1, runs=1, warmup=0, sparse_kernels="2:4")


# ----- the conversion, with a stand-in for torch's ----------------------------------------


def test_every_eligible_linear_is_converted_and_the_others_are_named(fake_kernels):
    model = eligible_llama()
    linears = named_linears(model, adapter_for(model))
    with torch.no_grad():
        linears["0.down"].weight[0, :4] = torch.tensor([1.0, 2.0, 3.0, 0.0])  # one group of three: not 2:4
    before = {name: linear.weight.detach().clone() for name, linear in linears.items()}
    ids = torch.randint(4, 128, (2, 8))
    with torch.no_grad():
        dense_logits = model(ids).logits
    with semi_structured_linears(model) as record:
        assert (record.total, record.converted) == (14, 13)
        assert record.left_dense == {NOT_TWO_FOUR: ["0.down"]} and record.backend == "stand-in"
        assert not record.complete
        for name, linear in linears.items():
            assert isinstance(linear.weight, Marked) == (name != "0.down"), name
        assert len(fake_kernels) == 13
        assert all(len(linear._forward_pre_hooks) == (name != "0.down") for name, linear in linears.items())
        with torch.no_grad():
            assert torch.equal(model(ids).logits, dense_logits)  # the same values: the same logits
    for name, linear in linears.items():  # dense again, with the same values, and no hook left behind
        assert not linear._forward_pre_hooks, name
        assert type(linear.weight) is nn.Parameter and not isinstance(linear.weight.data, Marked), name
        assert torch.equal(linear.weight, before[name]), name


def test_a_converted_linear_gets_its_input_contiguous(fake_kernels):
    # torch's sparse linear reshapes its input with .view, which a permuted (strided) input cannot take.
    seen = []
    model = eligible_llama()
    linear = named_linears(model, adapter_for(model))["0.q"]
    with semi_structured_linears(model):
        linear.register_forward_hook(lambda module, args, out: seen.append(args[0].is_contiguous()))
        linear(torch.randn(64, 2, 3, dtype=torch.float16).permute(1, 2, 0))  # (2, 3, 64), strided
    assert seen == [True]


def test_a_model_with_no_two_four_linear_is_said_to_run_dense(fake_kernels):
    model = eligible_llama()
    with torch.no_grad():
        for linear in named_linears(model, adapter_for(model)).values():
            linear.weight.fill_(1.0)
    with semi_structured_linears(model) as record:
        assert record.converted == 0 and record.n_dense == 14
    assert fake_kernels == []
    sentence = record.summary("tiny")
    assert sentence.startswith("--sparse-kernels 2:4: none of the 14 block linears of tiny could be converted, so it ran dense")
    assert "14 not 2:4 along the input (0.q, 0.k, 0.v, ...)" in sentence


def test_the_speed_report_records_what_was_converted(fake_kernels):
    model = eligible_llama()
    with torch.no_grad():
        named_linears(model, adapter_for(model))["1.up"].weight[3, 4:8] = 1.0
    loaded = LoadedModel(model, None, "tiny", None, "causal-lm")
    report = measure_speeds([loaded], seq_len=8, batch_size=1, runs=1, warmup=0, sparse_kernels="2:4")[0]
    assert report.sparse_kernels == SparseKernelRecord(kernels="2:4", backend="stand-in", total=14, converted=13,
                                                       left_dense={NOT_TWO_FOUR: ["1.up"]})
    assert report.n_nonzero_parameters > 0  # counted on the dense weights, restored after the timing
    plain = measure_speeds([loaded], seq_len=8, batch_size=1, runs=1, warmup=0)[0]
    assert plain.sparse_kernels is None


def _tiny_folder(tmp_path):
    folder = tmp_path / "tiny24"
    eligible_llama(dtype=torch.float32).save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder


def test_eval_on_the_command_line_records_and_shows_the_conversion(fake_kernels, monkeypatch, capsys, tmp_path):
    folder = _tiny_folder(tmp_path)
    corpus = write_tiny_corpus(tmp_path / "corpus.jsonl")
    out = tmp_path / "result.json"
    code, stdout, err = run_cli(monkeypatch, capsys, "eval", "--model", str(folder), "--corpus", str(corpus), "--langs", "en",
                                "--seq-len", "16", "--max-tokens", "16", "--dtype", "float16", "--sparse-kernels", "2:4",
                                "--out", str(out))
    assert code == 0, err
    shown = " ".join(stdout.split())  # the console wraps long lines
    assert f"--sparse-kernels 2:4: all 14 block linears of {folder} ran as semi-structured weights (stand-in)." in shown
    result = EvalResult.load(out)
    assert result.model.sparse_kernels.converted == 14 and result.model.sparse_kernels.complete
    assert json.loads(out.read_text())["model"]["sparse_kernels"]["kernels"] == "2:4"
    assert len(fake_kernels) == 14


def test_eval_scores_match_dense_and_a_partial_conversion_is_a_note(fake_kernels, tmp_path):
    from babelprune.data.files import FilesCorpus

    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "en.txt").write_text("\n\n".join(["the cat sat on the mat"] * 40), encoding="utf-8")
    corpus = FilesCorpus(tmp_path / "text")
    model = eligible_llama()
    with torch.no_grad():
        named_linears(model, adapter_for(model))["1.o"].weight[0, :4] = 1.0
    loaded = LoadedModel(model, char_tokenizer(), "tiny", None, "causal-lm")
    dense = api.evaluate(loaded, corpus, ["en"], "all", seq_len=32, max_tokens=32, progress=False)
    sparse = api.evaluate(loaded, corpus, ["en"], "all", seq_len=32, max_tokens=32, progress=False, sparse_kernels="2:4")
    assert dense.model.sparse_kernels is None
    assert sparse.model.sparse_kernels.left_dense == {NOT_TWO_FOUR: ["1.o"]}
    assert sparse.scores[0].nll_nats == dense.scores[0].nll_nats
    assert sparse.model.block_sparsity == dense.model.block_sparsity  # read from the dense weights
    assert "13 of 14 block linears" in sparse.model.sparse_kernels.summary()
    assert "1 stayed dense: 1 not 2:4 along the input (1.o)" in sparse.model.sparse_kernels.summary()


# ----- the real kernels ---------------------------------------------------------------------


@pytest.mark.cuda
def test_a_two_four_model_on_the_card_gives_the_dense_logits():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine (torch.cuda.is_available() is False)")
    major, _ = torch.cuda.get_device_capability()
    if major < 8:
        pytest.skip("semi-structured sparse kernels need an Ampere or newer card (compute capability 8.0)")
    config = LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=128)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for linear in named_linears(model, adapter_for(model)).values():
            linear.weight.copy_(two_four(linear.weight))
    model = model.to("cuda", torch.float16)
    ids = torch.randint(4, 256, (4, 64), device="cuda")
    with torch.no_grad():
        dense = model(ids).logits.float()
        with semi_structured_linears(model) as record:
            assert record.complete and record.converted == 14, record.summary()
            sparse = model(ids).logits.float()
    assert torch.allclose(sparse, dense, atol=2e-2, rtol=2e-2), (sparse - dense).abs().max()
