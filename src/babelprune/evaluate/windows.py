"""Cut a language's text into fixed token windows whose bytes are known exactly.

Segments (verses, paragraphs) are tokenized one by one and packed greedily,
in document order, into windows of at most `seq_len` tokens: a BOS token,
then the segments' tokens separated by the tokens of "\\n". The window's
text is therefore exactly "\\n".join(segments), and its UTF-8 byte count is
exact, which is what bits per byte needs. Windows stop once a language's
token budget is reached, so every language costs about the same compute.

Each window also records its parts: which segment each stretch of its
targets spells. Two tokenizers pack the same text into different windows,
but the segments are the same, so a model with a trimmed vocabulary can be
compared with the dense one segment by segment (`segment_sums`).
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from babelprune.errors import BabelpruneError

SEPARATOR = "\n"


@dataclass(frozen=True)
class Part:
    """A stretch of a window's targets that spells (part of) one segment."""

    segment: int  # index of the segment among the language's texts, in order
    n_targets: int  # its tokens, with the separator before it when it is not first in the window
    text_bytes: int  # UTF-8 bytes of its text, the separator left out


@dataclass(frozen=True)
class Window:
    ids: list[int]  # BOS first; every later token is a prediction target
    n_bytes: int  # UTF-8 bytes of the text the targets spell
    parts: tuple[Part, ...] = ()  # in order; their n_targets sum to the window's (empty: not recorded)

    @property
    def n_targets(self) -> int:
        return len(self.ids) - 1


def segment_sums(windows: list[Window], token_nll: list[list[float]]) -> tuple[list[float], list[int]]:
    """Per segment, in order: (NLL of its tokens, UTF-8 bytes of its text).

    `token_nll[w]` holds window w's per-target NLLs. A segment split across
    windows sums its pieces; the separator before a piece counts with it.
    Both lists are empty when a window has no parts recorded.
    """
    if any(not window.parts for window in windows):
        return [], []
    nll: dict[int, float] = {}
    size: dict[int, int] = {}
    for window, values in zip(windows, token_nll):
        start = 0
        for part in window.parts:
            nll[part.segment] = nll.get(part.segment, 0.0) + float(sum(values[start : start + part.n_targets]))
            size[part.segment] = size.get(part.segment, 0) + part.text_bytes
            start += part.n_targets
    order = sorted(nll)
    return [nll[i] for i in order], [size[i] for i in order]


def start_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The token a window starts with: BOS, else EOS (GPT-2 style), else CLS."""
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.cls_token_id):
        if token_id is not None:
            return int(token_id)
    raise BabelpruneError("The tokenizer has no BOS, EOS or CLS token to start a window with; set one in its config.")


ENCODE_CHUNK = 64  # texts tokenized per call while windows are packed


def _split_long(text: str, encode, max_tokens: int) -> list[tuple[str, list[int]]]:
    """Split a segment longer than a window in halves (by characters) until each piece fits."""
    ids = encode(text)
    if len(ids) <= max_tokens or len(text) < 2:
        return [(text, ids[:max_tokens])] if len(ids) > max_tokens else [(text, ids)]
    middle = len(text) // 2
    return _split_long(text[:middle], encode, max_tokens) + _split_long(text[middle:], encode, max_tokens)


def make_windows(
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    seq_len: int,
    max_tokens: int | None = None,
) -> list[Window]:
    """Pack `texts` into windows of at most `seq_len` tokens, up to `max_tokens` targets in all."""
    if seq_len < 2:
        raise BabelpruneError(f"A window of {seq_len} tokens is too short; use --seq-len 2 or more (256 is usual).")
    bos = start_token_id(tokenizer)
    sep_ids = tokenizer(SEPARATOR, add_special_tokens=False)["input_ids"]
    room = seq_len - 1  # tokens after BOS

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    pieces: list[tuple[int, str, list[int]]] = []  # (segment index, text, ids)
    pieces_tokens = 0
    # Tokenize a chunk at a time, and only until the pieces hold max_tokens: packing never reads further (it
    # consumes pieces in order and stops once the tokens it took, separators included, reach max_tokens), so
    # the windows are the same as from the whole text, without tokenizing a whole corpus split for a small budget.
    for start in range(0, len(texts), ENCODE_CHUNK):
        if max_tokens is not None and pieces_tokens >= max_tokens:
            break
        chunk = list(texts[start:start + ENCODE_CHUNK])
        for offset, (text, ids) in enumerate(zip(chunk, tokenizer(chunk, add_special_tokens=False)["input_ids"])):
            split = _split_long(text, encode, room) if len(ids) > room else [(text, ids)]
            pieces.extend((start + offset, piece_text, piece_ids) for piece_text, piece_ids in split)
            pieces_tokens += sum(len(piece_ids) for _, piece_ids in split)

    windows: list[Window] = []
    total = 0
    current_ids: list[int] = []
    current_texts: list[str] = []
    current_parts: list[Part] = []

    def flush() -> None:
        nonlocal total, current_ids, current_texts, current_parts
        if current_ids:
            text = SEPARATOR.join(current_texts)
            windows.append(Window([bos, *current_ids], len(text.encode("utf-8")), tuple(current_parts)))
            total += len(current_ids)
        current_ids, current_texts, current_parts = [], [], []

    for segment, text, ids in pieces:
        if max_tokens is not None and total + len(current_ids) >= max_tokens:
            break
        extra = (sep_ids if current_ids else []) + ids
        if len(current_ids) + len(extra) > room:
            flush()
            extra = ids
        current_ids = current_ids + extra
        current_texts.append(text)
        current_parts.append(Part(segment, len(extra), len(text.encode("utf-8"))))
    flush()
    return windows
