"""Evaluation with sequential onloading: the same scores as the whole model, one block on the device at a time."""

from __future__ import annotations

import pytest
import torch

from babelprune.errors import BabelpruneError
from babelprune.evaluate import onloaded
from babelprune.evaluate.lm import score_windows
from babelprune.evaluate.onloaded import score_windows_onloaded
from babelprune.evaluate.windows import Window
from babelprune.models.adapters import adapter_for
from babelprune.models.blockwise import DeviceCopies
from tests.tiny_models import ENCODER_FAMILIES, TINY_FAMILIES, tiny_model

DECODERS = [family for family in TINY_FAMILIES if family not in ENCODER_FAMILIES]


def windows(lengths=(9, 12, 5, 7, 12), vocab: int = 128) -> list[Window]:
    generator = torch.Generator().manual_seed(0)
    return [Window(torch.randint(4, vocab, (n,), generator=generator).tolist(), n_bytes=3 * n) for n in lengths]


@pytest.mark.parametrize("family", DECODERS)
def test_onloaded_scores_equal_the_whole_models_on_every_decoder_family(family):
    model = tiny_model(family)
    if family == "opt" and getattr(adapter_for(model).base_model(model), "project_out", None) is not None:
        pytest.skip("this OPT config has projections around the blocks, which onloading refuses (tested below)")
    items = windows()
    plain = score_windows(model, items, pad_id=0, batch_size=2)
    streamed = score_windows_onloaded(model, items, pad_id=0, device="cpu", batch_size=2)
    # Right padding under causal attention: no padding mask changes nothing a real token sees (float rounding aside).
    assert streamed.window_nll == pytest.approx(plain.window_nll, rel=1e-5, abs=1e-5)
    assert (streamed.n_tokens, streamed.n_bytes, streamed.n_windows) == (plain.n_tokens, plain.n_bytes, plain.n_windows)


class CountingCopies(DeviceCopies):
    """The CPU standing in for an accelerator: every tensor "moved" is a fresh copy, counted while it is out."""

    out = 0
    most_out = 0

    def __init__(self, module, device, to_device=None):
        super().__init__(module, device, to_device=self.fresh_copy)
        CountingCopies.out += 1
        CountingCopies.most_out = max(CountingCopies.most_out, CountingCopies.out)

    @staticmethod
    def fresh_copy(tensor):
        return tensor.clone()

    def put_back(self):
        super().put_back()
        CountingCopies.out -= 1


def test_one_block_at_a_time_is_away_and_every_weight_comes_home(monkeypatch):
    model = tiny_model("llama")
    before = {name: p for name, p in model.named_parameters()}
    values = {name: p.detach().clone() for name, p in before.items()}
    monkeypatch.setattr(onloaded, "DeviceCopies", CountingCopies)
    CountingCopies.out = CountingCopies.most_out = 0
    seen: list[int] = []
    blocks = list(adapter_for(model).get_blocks(model))
    homes = [{n: p.data_ptr() for n, p in block.named_parameters()} for block in blocks]

    def away(module, args):  # before every block runs: how many blocks have a parameter away from home
        seen.append(sum(any(p.data_ptr() != home[n] for n, p in b.named_parameters()) for b, home in zip(blocks, homes)))

    handles = [block.register_forward_pre_hook(away) for block in blocks]
    try:
        streamed = score_windows_onloaded(model, windows(), pad_id=0, device="cpu", batch_size=2)
    finally:
        for handle in handles:
            handle.remove()
    assert seen and set(seen) == {1}  # the block that runs, and no other
    assert CountingCopies.out == 0 and CountingCopies.most_out == 2  # the final norm and the head go out together
    after = dict(model.named_parameters())
    assert all(after[name] is before[name] and torch.equal(after[name], values[name]) for name in before)
    assert streamed.window_nll == pytest.approx(score_windows(model, windows(), 0, 2).window_nll, rel=1e-5, abs=1e-5)


def test_a_model_with_more_than_blocks_and_a_norm_is_refused_in_one_sentence():
    model = tiny_model("bert")
    with pytest.raises(BabelpruneError, match="--onload sequential scores decoders") as error:
        score_windows_onloaded(model, windows(), pad_id=0, device="cpu")
    assert str(error.value).count(".") <= 2 and "drop --onload" in str(error.value)


def test_onloading_creates_no_tensor_off_the_devices_it_names():
    model, items = tiny_model("llama"), windows()
    plain = score_windows_onloaded(model, items, pad_id=0, device="cpu", batch_size=2)
    with torch.device("meta"):  # a tensor made without a device would be a meta tensor, and mixing it fails
        probed = score_windows_onloaded(model, items, pad_id=0, device="cpu", batch_size=2)
    assert probed == plain


# ----- the verb and the command ----------------------------------------------------------


def test_eval_onload_sequential_gives_the_whole_models_scores_and_says_so(tmp_path, monkeypatch, capsys):
    import json

    from babelprune.api import evaluate_model
    from tests.cli_runner import run_cli
    from tests.sweep_fixtures import write_tiny_corpus, write_tiny_model

    folder = write_tiny_model(tmp_path / "tiny")
    corpus = write_tiny_corpus(tmp_path / "corpus.jsonl")
    whole = evaluate_model(str(folder), str(corpus), max_tokens=48, seq_len=16, batch_size=2)
    code, _, err = run_cli(monkeypatch, capsys, "eval", "--model", str(folder), "--corpus", str(corpus), "--max-tokens", "48",
                           "--seq-len", "16", "--batch-size", "2", "--onload", "sequential", "--out", str(tmp_path / "r.json"))
    assert code == 0, err
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["settings"]["onload"] == "sequential" and saved["model"]["device"] == "cpu"
    assert "onload" not in whole.settings
    streamed = {score["language"]: score for score in saved["scores"]}
    for score in whole.scores:
        assert streamed[score.language]["window_nll"] == pytest.approx(score.window_nll, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("extra, says", [
    (["--onload", "sideways"], "sideways"),
    (["--onload", "sequential", "--runtime", "llama.cpp"], "--onload"),
])
def test_a_bad_onload_is_one_sentence_and_writes_nothing(tmp_path, monkeypatch, capsys, extra, says):
    from tests.cli_runner import run_cli

    code, out, err = run_cli(monkeypatch, capsys, "eval", "--out", str(tmp_path / "r.json"), *extra)
    assert code != 0 and says in out + err
    assert not (tmp_path / "r.json").exists()


def test_onloading_an_encoder_is_refused_in_one_sentence(tmp_path):
    from babelprune.api import evaluate
    from babelprune.formats.loading import load_model
    from tests.sweep_fixtures import write_tiny_corpus
    from tests.tiny_tokenizer import char_tokenizer

    folder = tmp_path / "bert"
    tiny_model("bert").save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    corpus = write_tiny_corpus(tmp_path / "corpus.jsonl")
    with pytest.raises(BabelpruneError, match="--onload sequential scores causal LMs.*drop --onload"):
        evaluate(load_model(str(folder)), str(corpus), max_tokens=8, onload="cpu", progress=False)


def test_windows_are_batched_shortest_first_as_both_scorers_batch_them():
    from babelprune.evaluate.lm import length_batches

    # lengths 9, 12, 5, 7, 12 -> order by length (ties in index order): 2 (5), 3 (7), 0 (9), 1 (12), 4 (12)
    assert length_batches(windows((9, 12, 5, 7, 12)), 2) == [[2, 3], [0, 1], [4]]
    assert length_batches(windows((4,)), 8) == [[0]] and length_batches([], 8) == []
