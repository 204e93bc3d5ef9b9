"""Detokenizer: UTF-8-safe deltas over byte-fallback tokens, stop strings, hold-back and flush."""

from __future__ import annotations

import pytest

from data.tokenizer_corpus import CORPUS
from lanner.text.detokenizer import Detokenizer
from reference_tokenizers import lanner_tokenizer


class PieceTok:
    """A vocabulary given as byte strings; ids >= 100 are special."""

    def __init__(self, pieces: list[bytes], add_space_prefix: bool = False):
        self.pieces = pieces
        self.add_space_prefix = add_space_prefix

    def token_bytes(self, i: int) -> bytes:
        return self.pieces[i % 100] if i >= 100 else self.pieces[i]

    def is_special(self, i: int) -> bool:
        return i >= 100


def run(tok, ids, stop=(), **kw) -> tuple[list[str], str, bool]:
    d = Detokenizer(tok, stop=list(stop), **kw)
    deltas = [d.push(i) for i in ids]
    return deltas, d.flush(), d.stopped


def encode_pieces(*pieces: str) -> tuple[PieceTok, list[int]]:
    tok = PieceTok([p.encode("utf-8") for p in pieces])
    return tok, list(range(len(pieces)))


# ---- UTF-8 across byte tokens ----------------------------------------------------------------

def test_emoji_split_across_gemma_byte_tokens():
    g = lanner_tokenizer("gemma3")
    ids = g.encode("🫩", add_special=False)
    assert [g.token_text(i) for i in ids] == ["<0xF0>", "<0x9F>", "<0xAB>", "<0xA9>"]
    deltas, tail, stopped = run(g, ids)
    assert deltas == ["", "", "", "🫩"] and tail == "" and not stopped


def test_cjk_split_across_gemma_byte_tokens():
    g = lanner_tokenizer("gemma3")
    text = "字\U00020000\U0002a6d6字"  # CJK extension B: not in the vocabulary -> byte fallback
    ids = g.encode(text, add_special=False)
    assert sum(g.token_text(i).startswith("<0x") for i in ids) == 8
    deltas, tail, _ = run(g, ids)
    assert "".join(deltas) + tail == text
    assert all("\ufffd" not in d for d in deltas)
    assert deltas[1:5] == ["", "", "", "\U00020000"]


def test_zwj_emoji_stream_equals_decode():
    g = lanner_tokenizer("gemma3")
    text = "family: 👨‍👩‍👧‍👦 and 🏳️‍🌈 ok"
    ids = g.encode(text, add_special=False)
    deltas, tail, _ = run(g, ids)
    assert "".join(deltas) + tail == text


@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_stream_concatenation_equals_decode_on_corpus(name):
    tok = lanner_tokenizer(name)
    for text in CORPUS:
        ids = tok.encode(text, add_special=False)
        deltas, tail, _ = run(tok, ids)
        assert "".join(deltas) + tail == tok.decode(ids), text
        assert all("\ufffd" not in d for d in deltas if "\ufffd" not in text)


def test_flush_incomplete_utf8_gives_replacement_char():
    tok = PieceTok([b"ok ", b"\xf0\x9f"])
    deltas, tail, _ = run(tok, [0, 1])
    assert deltas == ["ok ", ""] and tail == "\ufffd"


def test_invalid_byte_is_replaced_not_held():
    tok = PieceTok([b"a", b"\xff", b"b"])
    deltas, tail, _ = run(tok, [0, 1, 2])
    assert "".join(deltas) + tail == "a\ufffdb"


# ---- stop strings ----------------------------------------------------------------------------

def test_stop_spanning_token_boundaries():
    tok, ids = encode_pieces("Hel", "lo", " wor", "ld", "!")
    deltas, tail, stopped = run(tok, ids, stop=["lo wo"])
    # "l" may start "lo wo": held until "lo" proves it cannot (the second "l" starts it instead)
    assert deltas == ["He", "l", "", "", ""] and tail == "" and stopped


def test_stop_at_the_very_start():
    tok, ids = encode_pieces("STOP", "more")
    deltas, tail, stopped = run(tok, ids, stop=["STOP"])
    assert deltas == ["", ""] and tail == "" and stopped


def test_stop_at_start_split_over_tokens():
    tok, ids = encode_pieces("ST", "OP", "x")
    deltas, tail, stopped = run(tok, ids, stop=["STOP"])
    assert deltas == ["", "", ""] and tail == "" and stopped


def test_held_back_text_released_when_stop_cannot_match():
    tok, ids = encode_pieces("xa", "b", "d", "e")
    deltas, tail, stopped = run(tok, ids, stop=["abc"])
    assert deltas == ["x", "", "abd", "e"] and tail == "" and not stopped


def test_held_back_text_released_by_flush():
    tok, ids = encode_pieces("hello ab")
    deltas, tail, stopped = run(tok, ids, stop=["abc"])
    assert deltas == ["hello "] and tail == "ab" and not stopped


def test_overlapping_partial_matches():
    # "aab" must hold "aa" then find "aab"; "aaab" contains it after a false start
    tok, ids = encode_pieces("a", "a", "a", "b", "z")
    deltas, tail, stopped = run(tok, ids, stop=["aab"])
    assert "".join(deltas) == "a" and stopped and tail == ""


def test_earliest_of_several_stops_wins():
    tok, ids = encode_pieces("one two three")
    deltas, _, stopped = run(tok, ids, stop=["three", "two"])
    assert deltas == ["one "] and stopped


def test_stop_inside_one_token_releases_text_before_it():
    tok, ids = encode_pieces("abc", "deSTOPfg", "h")
    deltas, tail, stopped = run(tok, ids, stop=["STOP"])
    assert deltas == ["abc", "de", ""] and tail == "" and stopped


def test_stop_string_made_of_byte_tokens():
    g = lanner_tokenizer("gemma3")
    ids = g.encode("ok 🫩 more", add_special=False)
    deltas, tail, stopped = run(g, ids, stop=["🫩"])
    assert "".join(deltas) == "ok " and stopped and tail == ""


def test_stop_with_multibyte_chars_across_tokens():
    tok = PieceTok([b"x \xe6\x97", b"\xa5\xe6", b"\x9c\xac", b" y"])  # "x 日本 y" cut mid-character
    deltas, tail, stopped = run(tok, [0, 1, 2, 3], stop=["日本"])
    assert "".join(deltas) == "x " and stopped


def test_empty_and_duplicate_stops_are_ignored():
    tok, ids = encode_pieces("abc")
    deltas, tail, stopped = run(tok, ids, stop=["", "zz", "zz"])
    assert deltas == ["abc"] and not stopped


def test_held_text_stays_bounded():
    """O(new bytes) per push: the held tail never exceeds the longest stop string."""
    tok = PieceTok([b"a"])
    d = Detokenizer(tok, stop=["aaaaab"])
    for _ in range(1000):
        d.push(0)
        assert len(d._held) <= 5
    assert d.flush() == "aaaaa"


def test_long_stop_strings_cost_no_extra_memory():
    """A 1 MB stop string used to build the set of all its prefixes (memory quadratic in its
    length: ~24 GB). Now nothing is built: a few MB at most, and matching still works."""
    import tracemalloc

    long_stop = "x" * 1_000_000 + "END"
    tok, ids = encode_pieces("abc ", "xx", "xxx", "END", "more")
    tracemalloc.start()
    deltas, tail, stopped = run(tok, ids, stop=[long_stop, "zq" * 50_000])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert deltas == ["abc ", "", "", "xxxxxEND", "more"] and not stopped
    assert peak < 16 * 2 ** 20, peak
    deltas, _, stopped = run(*encode_pieces("ab", "c" * 3000, "cS", "TOP"), stop=["c" * 3000 + "cSTOP"])
    assert "".join(deltas) == "ab" and stopped


def test_partial_stop_is_the_longest_suffix_that_may_grow():
    from lanner.text.detokenizer import _partial_stop

    assert _partial_stop("hello ab", "abc") == 2
    assert _partial_stop("xaa", "aab") == 2 and _partial_stop("xa", "aab") == 1
    assert _partial_stop("abab", "ababc") == 4 and _partial_stop("zzz", "abc") == 0


# ---- special tokens and spaces ---------------------------------------------------------------

def test_special_tokens_skipped_or_kept():
    tok = PieceTok([b"a", b"<eot>"])
    assert run(tok, [0, 101, 0])[0] == ["a", "", "a"]
    assert run(tok, [0, 101, 0], skip_special=False)[0] == ["a", "<eot>", "a"]


def test_real_special_token_text_with_skip_special_false():
    g = lanner_tokenizer("gemma3")
    eot = g.token_id("<end_of_turn>")
    assert run(g, [eot])[0] == [""]
    assert run(g, [eot], skip_special=False)[0] == ["<end_of_turn>"]


def test_push_after_stop_returns_nothing():
    tok, ids = encode_pieces("a", "STOP", "b")
    d = Detokenizer(tok, stop=["STOP"])
    assert d.push(0) == "a"
    assert d.push(1) == "" and d.stopped
    assert d.push(2) == "" and d.flush() == ""


def test_leading_space_of_generation_is_kept():
    """A generation continues its prompt: the first token's '▁' is a space the model produced."""
    g = lanner_tokenizer("gemma3")
    ids = g.encode(" Paris", add_special=False)
    assert g.token_text(ids[0]).startswith("▁")
    assert "".join(run(g, ids)[0]) == " Paris"


def test_at_text_start_drops_the_dummy_prefix_only_with_add_space_prefix():
    with_prefix = PieceTok([b" Hello", b" world"], add_space_prefix=True)
    assert run(with_prefix, [0, 1], at_text_start=True)[0] == ["Hello", " world"]
    assert run(with_prefix, [0, 1])[0] == [" Hello", " world"]
    no_prefix = PieceTok([b" Hello"], add_space_prefix=False)
    assert run(no_prefix, [0], at_text_start=True)[0] == [" Hello"]
