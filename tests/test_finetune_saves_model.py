"""A fine-tuning run keeps its model: saved, reloaded by babelprune and by plain transformers, 70% sparse at GMP 0.7.

Also the two refusals that keep a run's folder honest: an --out folder that
is not babelprune's, and a length the model has no positions for; both
before anything is loaded or written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, BertModel, XLMRobertaConfig

from babelprune.errors import BabelpruneError
from babelprune.evaluate.retrieval import mean_pool
from babelprune.finetune import task_structured as pipeline
from babelprune.finetune import trainer
from babelprune.finetune.config import check_length_fits, position_limit
from babelprune.finetune.heads import encode, predict
from babelprune.finetune.prune_config import TaskDynamicRun, TaskPruneConfig, TaskStructuredRun
from babelprune.finetune.saved import load_finetuned_head
from babelprune.finetune.trainer import current_settings, finetune, finished_result, plan_runs, saved_models
from babelprune.formats.pruned import load_sparse
from babelprune.models.inspect import block_sparsity
from babelprune.formats.loading import load_model
from babelprune.prune.gradual import GMPConfig
from babelprune.finetune.dynamic import DynamicConfig
from tests.cli_runner import run_cli
from tests.test_finetune_cli import TASK
from tests.test_finetune_trainer import TinyGenreTask, tiny_config
from tests.test_task_structured import TinyGenre
from tests.tiny_models import tiny_config as tiny_model_config
from tests.tiny_tokenizer import char_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GMP70 = GMPConfig(final_sparsity=0.7, start_step=1, end_step=4, interval=1)
MODEL_FILES = {"config.json", "model.safetensors", "sparse/sparse.safetensors", "sparse/config.json",
               "babelprune_task_head.json", "task_head.safetensors", "babelprune_finetuned.json", "tokenizer_config.json"}


@pytest.fixture(scope="module")
def tiny128(tmp_path_factory) -> str:
    """A tiny random BERT with 128 positions, room for the CLI's default length."""
    folder = tmp_path_factory.mktemp("tiny-bert-128")
    config = tiny_model_config("bert")
    config.max_position_embeddings = 128
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return str(folder)


def _spy_final_logits(monkeypatch) -> dict:
    """Record, per run, the logits the in-memory model gives at the end of training (when it is scored) on en's test set."""
    seen: dict = {}
    real = trainer.evaluate_head

    def spy(head, tokenizer, task, langs, config):
        batch = encode(tokenizer, task.examples("en", "test"), head.kind, config.max_length, config.text_prefix)
        with torch.no_grad():
            seen.setdefault("logits", []).append(head(batch))
        seen["batch"] = batch
        return real(head, tokenizer, task, langs, config)

    monkeypatch.setattr(trainer, "evaluate_head", spy)
    return seen


def _never(step, loss):
    raise AssertionError("trained although the run was finished")


# ----------------------------------------------------------------------------- the saved model


def test_a_gmp_run_saves_a_70_percent_sparse_model_that_gives_the_same_logits(tiny_bert_folder, tmp_path, monkeypatch):
    seen = _spy_final_logits(monkeypatch)
    out = tmp_path / "ft-70"
    result = finetune(tiny_bert_folder, TinyGenreTask(), tiny_config(gmp=GMP70, perturbations=[], languages=["en"]), out,
                      progress=False)
    folder = out / "runs" / "en" / "model"
    assert saved_models(out) == [folder]
    assert MODEL_FILES <= {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert not list(folder.parent.glob(".model.partial-*"))  # written whole, nothing left of the temporary
    expected = seen["logits"][0]

    # babelprune: load_model gives the encoder, with the run's record; the head comes back beside it.
    loaded = load_model(str(folder))
    assert type(loaded.model) is BertModel and loaded.kind == "encoder"
    assert (loaded.pruning["method"], loaded.pruning["sparsity"], loaded.pruning["run"]) == ("gmp", 0.7, "en")
    # 70% of each of the 12 block matrices, rounded to whole weights (717 of 1024, 1434 of 2048).
    assert block_sparsity(loaded.model) == pytest.approx(0.7, abs=1e-3)
    assert loaded.pruning["achieved_sparsity"] == pytest.approx(result.achieved_sparsity, abs=1e-6)
    finetuned = load_finetuned_head(folder)
    with torch.no_grad():
        torch.testing.assert_close(finetuned.head(seen["batch"]), expected, rtol=0, atol=1e-6)

    # Plain transformers: the encoder with AutoModel, the head as the JSON describes it.
    info = json.loads((folder / "babelprune_task_head.json").read_text())
    assert (info["kind"], info["pooling"], info["labels"]) == ("classification", "mean", ["abc", "xyz"])
    encoder = AutoModel.from_pretrained(folder).eval()
    classifier = load_file(str(folder / "task_head.safetensors"))
    with torch.no_grad():
        hidden = encoder(**seen["batch"].inputs).last_hidden_state
        logits = mean_pool(hidden, seen["batch"].inputs["attention_mask"]) @ classifier["weight"].T + classifier["bias"]
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)

    # The compact sparse copy holds the same weights, bit for bit.
    sparse = load_sparse(folder).state_dict()
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(sparse[name], tensor), name


def test_monolingual_mode_saves_one_model_per_language(tiny_bert_folder, tmp_path):
    config = tiny_config(mode="monolingual", languages=["en", "fr"], max_steps=2, perturbations=[])
    finetune(tiny_bert_folder, TinyGenreTask(), config, tmp_path / "mono", progress=False)
    folders = saved_models(tmp_path / "mono")
    assert folders == [tmp_path / "mono" / "runs" / lang / "model" for lang in ("en", "fr")]
    records = [json.loads((folder / "babelprune_finetuned.json").read_text()) for folder in folders]
    assert [(r["run"], r["train_examples"]) for r in records] == [("en", {"en": 16}), ("fr", {"fr": 16})]


def test_scores_only_saves_no_model_and_keys_the_same_result(tiny_bert_folder, tmp_path):
    out = tmp_path / "run"
    config = tiny_config(languages=["en"], perturbations=[], max_steps=2)
    scores_only = config.model_copy(update={"save_model": False})
    first = finetune(tiny_bert_folder, TinyGenreTask(), scores_only, out, progress=False)
    assert saved_models(out) == [] and not (out / "runs" / "en" / "model").exists()
    settings = (out / "settings.json").read_text()
    assert "save_model" not in settings and "save_model" not in first.config  # not a setting of the scores

    # The model asked for later: the finished run is trained again, says so, and gives the same scores.
    notices: list[str] = []
    again = finetune(tiny_bert_folder, TinyGenreTask(), config, out, progress=False, on_notice=notices.append)
    assert notices == ["run en was scored without saving its model (scores only); training it again to save the model"]
    assert again.scores == first.scores and (out / "settings.json").read_text() == settings
    assert saved_models(out) == [out / "runs" / "en" / "model"]
    # Now both are there: neither setting trains it again, and scores-only leaves the model alone.
    finetune(tiny_bert_folder, TinyGenreTask(), config, out, progress=False, on_step=_never)
    finetune(tiny_bert_folder, TinyGenreTask(), scores_only, out, progress=False, on_step=_never)
    assert saved_models(out) == [out / "runs" / "en" / "model"]


def test_a_sweep_run_made_with_scores_only_is_not_finished_when_its_model_is_asked_for(tiny_bert_folder, tmp_path):
    task, config = TinyGenreTask(), tiny_config(languages=["en"], perturbations=[], max_steps=2, save_model=False)
    finetune(tiny_bert_folder, task, config, tmp_path / "run", progress=False)
    runs = plan_runs(task, config)
    settings = current_settings(tiny_bert_folder, task, config, runs)
    assert finished_result(tmp_path / "run", settings) is not None
    assert finished_result(tmp_path / "run", settings, runs) is None


@pytest.mark.parametrize("scores_only", [False, True], ids=["model", "scores-only"])
def test_the_cli_saves_the_model_unless_scores_only(monkeypatch, capsys, tmp_path, tiny128, scores_only):
    out = tmp_path / "ft-70"
    flags = ["--scores-only"] if scores_only else []
    code, stdout, err = run_cli(monkeypatch, capsys, "finetune", "--model", tiny128, *TASK, "--batch-size", "4",
                                "--max-steps", "4", "--gmp-final", "0.7", *flags, "--out", str(out))
    assert code == 0, err
    folders = saved_models(out)
    if scores_only:
        assert folders == [] and not list(out.glob("runs/*/model")) and "Model saved" not in stdout
    else:
        (folder,) = folders
        assert f"Model saved to {folder}" in stdout
        assert block_sparsity(load_model(str(folder)).model) == pytest.approx(0.7, abs=1e-3)


# ----------------------------------------------------------------------------- structured and dynamic task runs


@pytest.fixture
def tiny_genre(monkeypatch) -> TinyGenre:
    monkeypatch.setattr(pipeline, "get_task", lambda name, **options: TinyGenre())
    return TinyGenre()


def _task_config(**options):
    return tiny_config(mode="multilingual", max_steps=2, max_length=32, dropout=0.0, eval_batch_size=8, **options)


def test_a_task_structured_run_saves_the_model_it_scored(tiny_genre, tiny_bert_folder, tmp_path):
    run = TaskStructuredRun(task="tiny-genre", finetune=_task_config(),
                            prune=TaskPruneConfig(units=["heads"], importance="magnitude", sparsity=0.25, refinetune_steps=0,
                                                  tolerance=0.05))
    result = pipeline.run_task_structured(tiny_bert_folder, run, tmp_path / "cache", models_out=tmp_path / "models")
    saved = load_finetuned_head(tmp_path / "models" / "shared")
    assert saved.loaded.pruning["method"] == "task-structured-magnitude"
    (scored,) = result.models
    for item in scored.languages:  # the saved model predicts what the scored one did, item by item
        examples = [e for e in tiny_genre.examples(item.language, "test") if e.key in item.keys]
        predicted = predict(saved.head, saved.loaded.tokenizer, examples, 8, 32, "")
        assert [int(p == e.label) for p, e in zip(predicted, examples, strict=True)] == item.outcomes


def test_a_task_dynamic_run_saves_its_dynamic_model_and_refuses_a_taken_folder_first(tiny_genre, tiny_bert_folder, tmp_path, monkeypatch):
    dynamic = DynamicConfig(levels=(0.5,), steps=2, batch_size=4, max_length=32, text_prefix="", dropout=0.0)
    run = TaskDynamicRun(task="tiny-genre", finetune=_task_config(), dynamic=dynamic)
    pipeline.run_task_dynamic(tiny_bert_folder, run, tmp_path / "cache", models_out=tmp_path / "models")
    saved = load_finetuned_head(tmp_path / "models" / "dynamic")
    assert (tmp_path / "models" / "dynamic" / "babelprune_dynamic.json").is_file()
    assert saved.info["labels"] == ["abc", "xyz"] and saved.head.classifier.out_features == 2
    monkeypatch.setattr(pipeline, "load_model", lambda *a: (_ for _ in ()).throw(AssertionError("loaded")))
    with pytest.raises(BabelpruneError, match="exists; choose another --out"):
        pipeline.run_task_dynamic(tiny_bert_folder, run, tmp_path / "cache", models_out=tmp_path / "models")


# ----------------------------------------------------------------------------- --out that is not babelprune's


def _no_model(*args, **kwargs):
    raise AssertionError("a model was loaded")


def test_a_foreign_non_empty_out_folder_is_refused_before_any_model_is_loaded(tiny_bert_folder, tmp_path, monkeypatch):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "cat.jpg").write_bytes(b"\xff\xd8")
    monkeypatch.setattr(trainer, "load_model", _no_model)
    with pytest.raises(BabelpruneError) as error:
        finetune(tiny_bert_folder, TinyGenreTask(), tiny_config(), out, progress=False)
    assert str(error.value) == (
        f"Output folder {out} is not empty and is not a babelprune fine-tuning folder (it has no settings.json); "
        "choose a new --out or an empty folder."
    )
    assert [p.name for p in out.iterdir()] == ["cat.jpg"]
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(BabelpruneError, match="is a file, but a fine-tuning run writes a folder"):
        finetune(tiny_bert_folder, TinyGenreTask(), tiny_config(), tmp_path / "notes.txt", progress=False)


def test_an_empty_out_folder_is_used(tiny_bert_folder, tmp_path):
    (tmp_path / "empty").mkdir()
    finetune(tiny_bert_folder, TinyGenreTask(), tiny_config(languages=["en"], perturbations=[], max_steps=1,
                                                            save_model=False), tmp_path / "empty", progress=False)
    assert (tmp_path / "empty" / "result.json").is_file()


def test_the_cli_refuses_a_foreign_out_folder_in_one_line(monkeypatch, capsys, tmp_path, tiny128):
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "chapter1.tex").write_text("...")
    code, _, err = run_cli(monkeypatch, capsys, "finetune", "--model", tiny128, *TASK, "--out", str(tmp_path / "thesis"))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "not a babelprune fine-tuning folder" in lines[0]
    assert [p.name for p in (tmp_path / "thesis").iterdir()] == ["chapter1.tex"]


# ----------------------------------------------------------------------------- position limit


def test_a_length_beyond_the_models_positions_is_refused_before_anything_is_written(tiny_bert_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer, "train_run", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    with pytest.raises(BabelpruneError) as error:
        finetune(tiny_bert_folder, TinyGenreTask(), tiny_config(max_length=128), tmp_path / "out", progress=False)
    assert str(error.value) == (
        f"Model '{tiny_bert_folder}' has positions for 64 tokens (max_position_embeddings) but the fine-tuning length "
        "max_length is 128; set max_length (--max-length) to 64 or less."
    )
    assert not (tmp_path / "out").exists()


def test_the_cli_refuses_the_default_length_for_a_64_position_model_and_takes_a_lower_one(monkeypatch, capsys, tmp_path, tiny_bert_folder):
    out = tmp_path / "ft"
    code, _, err = run_cli(monkeypatch, capsys, "finetune", "--model", tiny_bert_folder, *TASK, "--max-steps", "1",
                           "--out", str(out))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "positions for 64 tokens" in lines[0] and "--max-length" in lines[0]
    assert not out.exists()
    code, _, err = run_cli(monkeypatch, capsys, "finetune", "--model", tiny_bert_folder, *TASK, "--max-steps", "1",
                           "--batch-size", "4", "--max-length", "64", "--scores-only", "--out", str(out))
    assert code == 0, err
    assert json.loads((out / "result.json").read_text())["config"]["max_length"] == 64


def test_roberta_style_positions_start_after_the_padding_index():
    assert position_limit(XLMRobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512
    check_length_fits(XLMRobertaConfig(max_position_embeddings=514, pad_token_id=1), 512, "xlmr")
    with pytest.raises(BabelpruneError, match="positions for 512 tokens"):
        check_length_fits(XLMRobertaConfig(max_position_embeddings=514, pad_token_id=1), 513, "xlmr")


def test_saved_model_folders_are_found_only_when_complete(tmp_path):
    # A model folder without its record (a write cut short elsewhere) is not listed as saved.
    (tmp_path / "runs" / "en" / "model").mkdir(parents=True)
    assert saved_models(tmp_path) == []
    (tmp_path / "runs" / "en" / "model" / "babelprune_finetuned.json").write_text("{}")
    assert saved_models(tmp_path) == [Path(tmp_path / "runs" / "en" / "model")]
