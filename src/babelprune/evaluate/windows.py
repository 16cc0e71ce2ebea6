"""Cut a language's text into fixed token windows whose bytes are known exactly.

Segments (verses, paragraphs) are tokenized one by one and packed greedily,
in document order, into windows of at most `seq_len` tokens: a BOS token,
then the segments' tokens separated by the tokens of "\\n". The window's
text is therefore exactly "\\n".join(segments), and its UTF-8 byte count is
exact, which is what bits per byte needs. Windows stop once a language's
token budget is reached, so every language costs about the same compute.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from babelprune.errors import BabelpruneError

SEPARATOR = "\n"


@dataclass(frozen=True)
class Window:
    ids: list[int]  # BOS first; every later token is a prediction target
    n_bytes: int  # UTF-8 bytes of the text the targets spell

    @property
    def n_targets(self) -> int:
        return len(self.ids) - 1


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

    pieces: list[tuple[str, list[int]]] = []
    pieces_tokens = 0
    # Tokenize a chunk at a time, and only until the pieces hold max_tokens: packing never reads further (it
    # consumes pieces in order and stops once the tokens it took, separators included, reach max_tokens), so
    # the windows are the same as from the whole text, without tokenizing a whole corpus split for a small budget.
    for start in range(0, len(texts), ENCODE_CHUNK):
        if max_tokens is not None and pieces_tokens >= max_tokens:
            break
        chunk = list(texts[start:start + ENCODE_CHUNK])
        for text, ids in zip(chunk, tokenizer(chunk, add_special_tokens=False)["input_ids"]):
            split = _split_long(text, encode, room) if len(ids) > room else [(text, ids)]
            pieces.extend(split)
            pieces_tokens += sum(len(piece_ids) for _, piece_ids in split)

    windows: list[Window] = []
    total = 0
    current_ids: list[int] = []
    current_texts: list[str] = []

    def flush() -> None:
        nonlocal total, current_ids, current_texts
        if current_ids:
            text = SEPARATOR.join(current_texts)
            windows.append(Window([bos, *current_ids], len(text.encode("utf-8"))))
            total += len(current_ids)
        current_ids, current_texts = [], []

    for text, ids in pieces:
        if max_tokens is not None and total + len(current_ids) >= max_tokens:
            break
        extra = (sep_ids if current_ids else []) + ids
        if len(current_ids) + len(extra) > room:
            flush()
            extra = ids
        current_ids = current_ids + extra
        current_texts.append(text)
    flush()
    return windows
