"""Bad requests that the library refuses with one sentence naming the fix."""

import pytest

from babelprune.data.files import FilesCorpus
from babelprune.errors import BabelpruneError
from babelprune.prune.calibration import build_calibration
from babelprune.prune.config import PruneConfig
from babelprune.prune.methods import METHODS
from tests.tiny_tokenizer import char_tokenizer


def _one_sentence(error: BabelpruneError) -> str:
    text = str(error)
    assert "\n" not in text and text.endswith(".")
    return text


def test_too_little_calibration_text_names_the_shortfall_and_the_fix(tmp_path):
    (tmp_path / "en.txt").write_text("a short text", encoding="utf-8")
    corpus = FilesCorpus(tmp_path)
    corpus.eval_share = 0.0  # all of it is calibration text
    with pytest.raises(BabelpruneError) as info:
        build_calibration(char_tokenizer(), corpus, ["en"], samples_per_language=4, seq_len=32)
    text = _one_sentence(info.value)
    # 4 windows of 31 tokens after BOS: 124 tokens are needed; the text has about a dozen.
    assert "'en'" in text and "124 are needed" in text and "lower --samples or --seq-len" in text


def test_an_empty_split_names_the_language_and_the_split(tmp_path):
    (tmp_path / "en.txt").write_text("one paragraph only", encoding="utf-8")
    corpus = FilesCorpus(tmp_path)
    corpus.eval_share = 0.0  # everything is calibration text: the eval split is empty
    with pytest.raises(BabelpruneError) as info:
        corpus.texts("en", "eval")
    text = _one_sentence(info.value)
    assert "'en'" in text and "'eval' split" in text


@pytest.mark.parametrize("method", ["wandaa", "WANDA", ""])
def test_an_unknown_method_lists_the_known_ones(method):
    with pytest.raises(BabelpruneError) as info:
        PruneConfig(method=method)
    text = _one_sentence(info.value)
    assert f"'{method}'" in text and all(name in text.split("choose one of:")[1] for name in METHODS)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [("2-4", "Unknown sparsity pattern '2-4'"), ("2:", "Unknown sparsity pattern '2:'"), ("0:4", "fewer than one"),
     ("4:4", "N >= M"), ("structured", "Unknown sparsity pattern")],
)
def test_a_malformed_pattern_is_refused(pattern, expected):
    with pytest.raises(BabelpruneError) as info:
        PruneConfig(pattern=pattern)
    assert expected in _one_sentence(info.value)


def test_a_pattern_that_does_not_divide_the_width_is_refused_before_pruning():
    from babelprune.models.base import LoadedModel
    from babelprune.prune.engine import prune
    from tests.tiny_models import tiny_model

    model = tiny_model("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    width = model.config.hidden_size
    m = next(m for m in range(3, 64) if width % m)
    with pytest.raises(BabelpruneError) as info:
        prune(LoadedModel(model, None, "tiny", None, "causal-lm"), PruneConfig(method="magnitude", pattern=f"1:{m}"), progress=False)
    assert f"divisible by {m}" in _one_sentence(info.value)
    assert all((before[k] == v).all() for k, v in model.state_dict().items())
