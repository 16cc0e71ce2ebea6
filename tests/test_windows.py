from babelprune.evaluate.windows import Window, make_windows
from tests.tiny_tokenizer import char_tokenizer


def test_char_tokenizer_is_one_token_per_character():
    tok = char_tokenizer("abc\n")
    # specials take ids 0-3, then a=4, b=5, c=6, \n=7
    assert tok("abca\nb", add_special_tokens=False)["input_ids"] == [4, 5, 6, 4, 7, 5]


def test_segments_are_packed_greedily_with_exact_bytes():
    tok = char_tokenizer("abcdef\n")  # a=4 b=5 c=6 d=7 e=8 f=9 \n=10, bos=1
    windows = make_windows(tok, ["ab", "cde", "f"], seq_len=8)
    # Room for 7 tokens after BOS: "ab" (2) + "\n" + "cde" (3) = 6 fits; adding "\n" + "f" makes 8: new window.
    assert windows == [
        Window(ids=[1, 4, 5, 10, 6, 7, 8], n_bytes=len("ab\ncde")),
        Window(ids=[1, 9], n_bytes=1),
    ]
    assert [w.n_targets for w in windows] == [6, 1]


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
