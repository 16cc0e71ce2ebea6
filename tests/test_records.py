import json
import math

import pytest

from babelprune.errors import BabelpruneError
from babelprune.report.records import EvalResult, LMScore, ModelInfo, RetrievalScore


def result() -> EvalResult:
    return EvalResult(
        model=ModelInfo(spec="tiny", architecture="LlamaForCausalLM", n_parameters=10, block_sparsity=0.0),
        corpus="bible", split="eval",
        scores=[
            LMScore(language="en", name="English", script="Latn", resource="high", n_windows=1, n_tokens=2, n_bytes=4, nll_nats=2 * math.log(8)),
            LMScore(language="sw", name="Swahili", script="Latn", resource="low", n_windows=1, n_tokens=3, n_bytes=6, nll_nats=3 * math.log(2)),
        ],
    )


def test_records_flatten_every_metric_of_every_language():
    rows = result().records()
    assert {(r.language, r.metric) for r in rows} == {("en", "bits_per_byte"), ("en", "perplexity"), ("sw", "bits_per_byte"), ("sw", "perplexity")}
    en_bpb = next(r for r in rows if r.language == "en" and r.metric == "bits_per_byte")
    assert en_bpb.value == pytest.approx(2 * 3 / 4)  # 2 tokens x 3 bits over 4 bytes
    assert en_bpb.count == 4 and en_bpb.method == "dense"


def test_json_round_trip_keeps_everything(tmp_path):
    path = tmp_path / "r.json"
    result().save(path)
    assert EvalResult.load(path) == result()
    assert json.loads(path.read_text())["scores"][1]["metrics"]["perplexity"] == pytest.approx(2.0)


def test_retrieval_score_top1():
    score = RetrievalScore(language="fr", name="French", script="Latn", resource="high", source_language="en", n_queries=4, n_correct=3)
    assert score.top1 == 0.75


def test_a_file_that_is_not_a_result_is_refused(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"model": 3}')
    with pytest.raises(BabelpruneError, match="not a babelprune evaluation result"):
        EvalResult.load(path)
    with pytest.raises(BabelpruneError, match="No result file"):
        EvalResult.load(tmp_path / "missing.json")
