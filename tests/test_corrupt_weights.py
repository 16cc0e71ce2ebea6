"""A folder whose weights file is truncated or corrupt loads into one sentence naming the file.

Every kind of folder `load_model` reads is covered: a plain Hugging Face
folder, a one-shot pruned folder (HF weights, the sparse copy, the mask
bank) and a structured folder. Each file is damaged in two ways: cut to half
its size, and a few bytes of its header overwritten.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from babelprune.errors import BabelpruneError
from babelprune.formats.pruned import MASKS_FILE, save_pruned
from babelprune.formats.structured import save_structured
from babelprune.models.adapters import adapter_for
from babelprune.models.base import LoadedModel
from babelprune.models.layouts import remove_neurons
from babelprune.formats.loading import load_model
from babelprune.prune.calibration import Calibration
from babelprune.prune.config import PruneConfig
from babelprune.prune.engine import prune
from tests.tiny_models import tiny_model
from tests.tiny_tokenizer import char_tokenizer


def truncate_to_half(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def overwrite_header_bytes(file: Path) -> None:
    # Bytes 0-7 give the header length; the JSON header starts at byte 8.
    data = bytearray(file.read_bytes())
    data[8:14] = b"\xff\x00\xff\x00\xff\x00"
    file.write_bytes(bytes(data))


DAMAGES = {"truncated": truncate_to_half, "header": overwrite_header_bytes}


def loaded_tiny(family: str = "llama") -> LoadedModel:
    model = tiny_model(family)
    return LoadedModel(model=model, tokenizer=char_tokenizer(), spec=f"tiny-{family}", path=None, kind=adapter_for(model).kind)


def random_calibration(model) -> Calibration:
    ids = torch.randint(4, model.config.vocab_size, (4, 8), generator=torch.Generator().manual_seed(0))
    return Calibration(ids, ("en", "en", "fr", "fr"), "random-ids")


def plain_folder(out: Path) -> Path:
    loaded = loaded_tiny()
    loaded.model.save_pretrained(out)
    loaded.tokenizer.save_pretrained(out)
    return out


def pruned_folder(out: Path, format: str) -> Path:
    loaded = loaded_tiny()
    result = prune(loaded, PruneConfig(method="magnitude", sparsity=0.5), None, progress=False)
    return save_pruned(loaded, result, out, format=format)


def per_language_folder(out: Path) -> Path:
    loaded = loaded_tiny()
    config = PruneConfig(method="wanda", sparsity=0.5, setting="per-language")
    result = prune(loaded, config, random_calibration(loaded.model), progress=False)
    return save_pruned(loaded, result, out)


def structured_folder(out: Path) -> Path:
    loaded = loaded_tiny()
    remove_neurons(loaded.model, adapter_for(loaded.model), 0, list(range(16)))
    return save_structured(loaded.model, loaded.tokenizer, out, {"method": "test"})


# folder kind -> (how to write it, the file to damage inside it)
FOLDERS = {
    "plain HF": (plain_folder, "model.safetensors"),
    "pruned HF": (lambda out: pruned_folder(out, "both"), "model.safetensors"),
    "pruned sparse": (lambda out: pruned_folder(out, "sparse"), "sparse/sparse.safetensors"),
    "mask bank": (per_language_folder, MASKS_FILE),
    "structured": (structured_folder, "model.safetensors"),
}


def assert_one_sentence_naming(message: str, file: Path) -> None:
    assert str(file) in message
    rest = message.replace(str(file), "FILE")
    assert "\n" not in rest and rest.endswith(".") and ". " not in rest[:-1], message


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("kind", FOLDERS)
def test_damaged_weights_file_loads_into_one_sentence_naming_it(tmp_path, kind, damage):
    write, inner = FOLDERS[kind]
    folder = write(tmp_path / "model")
    assert load_model(str(folder)).model is not None  # intact, it loads
    file = folder / inner
    DAMAGES[damage](file)
    with pytest.raises(BabelpruneError) as caught:
        load_model(str(folder))
    assert_one_sentence_naming(str(caught.value), file)
