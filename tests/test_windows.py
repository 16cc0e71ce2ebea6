import sys

from babelprune.evaluate.windows import Part, Window, make_windows, segment_sums
from tests.tiny_tokenizer import char_tokenizer


def test_char_tokenizer_is_one_token_per_character():
    tok = char_tokenizer("abc\n")
    # specials take ids 0-3, then a=4, b=5, c=6, \n=7
    assert tok("abca\nb", add_special_tokens=False)["input_ids"] == [4, 5, 6, 4, 7, 5]


def test_segments_are_packed_greedily_with_exact_bytes():
    tok = char_tokenizer("abcdef\n")  # a=4 b=5 c=6 d=7 e=8 f=9 \n=10, bos=1
    windows = make_windows(tok, ["ab", "cde", "f"], seq_len=8)
    # Room for 7 tokens after BOS: "ab" (2) + "\n" + "cde" (3) = 6 fits; adding "\n" + "f" makes 8: new window.
    # Parts: "ab" is 2 targets; "cde" is 4 with the separator before it; "f" opens the next window alone.
    assert windows == [
        Window(ids=[1, 4, 5, 10, 6, 7, 8], n_bytes=len("ab\ncde"), parts=(Part(0, 2, 2), Part(1, 4, 3))),
        Window(ids=[1, 9], n_bytes=1, parts=(Part(2, 1, 1),)),
    ]
    assert [w.n_targets for w in windows] == [6, 1]


def test_segment_sums_add_each_segments_tokens_and_its_pieces():
    tok = char_tokenizer("abcdefgh\n")
    # "abcdefgh" (8 tokens) does not fit room 4: pieces "abcd" and "efgh" in two windows; "ab" joins the second.
    windows = make_windows(tok, ["abcdefgh", "ab"], seq_len=5)
    assert [w.parts for w in windows] == [(Part(0, 4, 4),), (Part(0, 4, 4),), (Part(1, 2, 2),)]
    token_nll = [[1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5], [7.0, 8.0]]
    # Segment 0: 10 + 2 over 8 bytes; segment 1: 15 over 2 bytes.
    assert segment_sums(windows, token_nll) == ([12.0, 15.0], [8, 2])


def test_segment_sums_are_empty_without_parts():
    assert segment_sums([Window([1, 4], 1)], [[0.3]]) == ([], [])


def test_two_tokenizers_cut_other_windows_but_the_same_segments():
    fine = char_tokenizer("abcdef\n")
    texts = ["abc", "def", "ab", "cd", "ef", "fa"]
    one_window = make_windows(fine, texts, seq_len=64)
    small_windows = make_windows(fine, texts, seq_len=8)
    assert [w.n_bytes for w in one_window] != [w.n_bytes for w in small_windows]
    ones = lambda windows: [[1.0] * w.n_targets for w in windows]  # noqa: E731
    # Every segment's bytes are the same whatever the windows; its tokens differ only by the separator before it.
    assert segment_sums(one_window, ones(one_window))[1] == segment_sums(small_windows, ones(small_windows))[1] == [3, 3, 2, 2, 2, 2]


def test_bytes_count_multibyte_characters():
    tok = char_tokenizer("éa")
    (window,) = make_windows(tok, ["éa"], seq_len=16)
    assert window.n_bytes == 3  # é is two bytes in UTF-8


def test_token_budget_stops_adding_windows():
    tok = char_tokenizer("abcd")
    windows = make_windows(tok, ["abcd"] * 10, seq_len=5, max_tokens=8)
    # Each window holds one 4-token segment; the budget of 8 targets is reached after two windows.
    assert len(windows) == 2
    assert sum(w.n_targets for w in windows) == 8


def test_segment_longer_than_a_window_is_split_by_characters():
    tok = char_tokenizer("abcdefgh")
    windows = make_windows(tok, ["abcdefgh"], seq_len=5)  # room 4: split into "abcd" and "efgh"
    assert [w.ids[1:] for w in windows] == [[4, 5, 6, 7], [8, 9, 10, 11]]
    assert sum(w.n_bytes for w in windows) == 8


def test_a_small_budget_tokenizes_only_the_texts_it_packs(monkeypatch):
    windows_module = sys.modules[make_windows.__module__]

    tok = char_tokenizer("abcdefgh")
    seen: list[int] = []

    class Counting:
        """The char tokenizer, counting the texts each batch call encodes."""

        def __getattr__(self, name):
            return getattr(tok, name)

        def __call__(self, text, **kwargs):
            if isinstance(text, list):
                seen.append(len(text))
            return tok(text, **kwargs)

    monkeypatch.setattr(windows_module, "ENCODE_CHUNK", 4)
    texts = ["abc", "defgh", "ab"] * 100  # 300 texts, 10 tokens per 3
    windows = make_windows(Counting(), texts, seq_len=8, max_tokens=12)
    assert sum(seen) == 4  # one chunk of 4 texts: 3 + 5 + 2 + 3 = 13 tokens already cover the budget of 12
    assert sum(w.n_targets for w in windows) >= 12


def test_windows_are_the_same_whether_the_text_is_tokenized_at_once_or_in_chunks(monkeypatch):
    windows_module = sys.modules[make_windows.__module__]

    tok = char_tokenizer("abcdefgh")
    texts = ["abc", "defgh", "ab", "abcdefgh" * 2, "h", "gfedcba"] * 20
    for max_tokens in (None, 1, 7, 12, 13, 50, 137, 10_000):
        for seq_len in (4, 8, 16):
            monkeypatch.setattr(windows_module, "ENCODE_CHUNK", 10**9)  # everything in one call, as before chunks
            at_once = make_windows(tok, texts, seq_len=seq_len, max_tokens=max_tokens)
            monkeypatch.setattr(windows_module, "ENCODE_CHUNK", 3)
            assert make_windows(tok, texts, seq_len=seq_len, max_tokens=max_tokens) == at_once, (max_tokens, seq_len)
