"""rr.contrib.qs: the WHATWG urlencoded rules, read as a specification."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote_to_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rr.contrib import qs

PARSE_CASES = [
    # (query, pairs, rule)
    ("", [], "the empty query has no pairs"),
    ("a=1", [("a", "1")], "one pair"),
    ("a=1&b=2&a=3", [("a", "1"), ("b", "2"), ("a", "3")], "wire order, repeats kept"),
    ("a=1&&b=2", [("a", "1"), ("b", "2")], "empty pieces are skipped"),
    ("&a=1&", [("a", "1")], "leading and trailing & are skipped"),
    ("flag", [("flag", "")], "a bare name has the empty value"),
    ("a=", [("a", "")], "an explicit empty value"),
    ("=", [("", "")], "an empty name is still a pair"),
    ("=v", [("", "v")], "an empty name with a value"),
    ("a=b=c", [("a", "b=c")], "only the first = splits"),
    ("a+b=c+d", [("a b", "c d")], "+ is a space in names and values"),
    ("a=%2B", [("a", "+")], "an escaped + is a plus"),
    ("a=%41%62", [("a", "Ab")], "escapes decode"),
    ("a=%e2%82%ac", [("a", "€")], "hex digits in lowercase decode"),
    ("a=%zz", [("a", "%zz")], "an invalid escape is kept literally"),
    ("a=%", [("a", "%")], "a trailing % is kept literally"),
    ("a=%4", [("a", "%4")], "a truncated escape is kept literally"),
    ("a=%%41", [("a", "%A")], "a stray % before a valid escape"),
    ("a=%ff", [("a", "\ufffd")], "invalid UTF-8 becomes U+FFFD"),
    ("a=%C3", [("a", "\ufffd")], "a truncated UTF-8 sequence becomes U+FFFD"),
    ("a=1;b=2", [("a", "1;b=2")], "; is not a separator"),
    ("a=é", [("a", "é")], "non-ASCII text in a str is kept"),
    ("%26=%3D", [("&", "=")], "escaped separators are data"),
    ("a=%00", [("a", "\x00")], "NUL decodes (the caller decides what it means)"),
]


@pytest.mark.parametrize(("query", "pairs", "rule"), PARSE_CASES, ids=[c[2] for c in PARSE_CASES])
def test_parse_follows_the_urlencoded_rules(
    query: str, pairs: list[tuple[str, str]], rule: str
) -> None:
    assert qs.parse(query) == pairs
    assert qs.parse(query.encode("utf-8")) == pairs


def test_bytes_input_with_raw_invalid_utf8_is_replaced_not_raised() -> None:
    assert qs.parse(b"a=\xff\xfe&b=%41") == [("a", "\ufffd\ufffd"), ("b", "A")]


def test_bytes_input_with_raw_utf8_decodes() -> None:
    assert qs.parse("k=ü&ü=v".encode()) == [("k", "ü"), ("ü", "v")]


def test_keep_blank_false_drops_pairs_with_empty_values() -> None:
    assert qs.parse("a=&b&c=1", keep_blank=False) == [("c", "1")]


def test_parse_dict_groups_values_in_wire_order() -> None:
    assert qs.parse_dict("a=1&b=2&a=3") == {"a": ["1", "3"], "b": ["2"]}


def test_pairs_over_max_pairs_raise_limit_exceeded_naming_the_limit() -> None:
    with pytest.raises(qs.LimitExceeded, match="max_pairs=3") as info:
        qs.parse("a&b&c&d", max_pairs=3)
    assert info.value.limit == "max_pairs"
    assert isinstance(info.value, ValueError)


def test_exactly_max_pairs_is_allowed() -> None:
    assert len(qs.parse("a&b&c", max_pairs=3)) == 3


def test_empty_pieces_do_not_count_towards_max_pairs() -> None:
    assert qs.parse("&" * 10_000 + "a=1", max_pairs=2) == [("a", "1")]
    assert qs.parse(b"&&a&&b&&", max_pairs=2) == [("a", ""), ("b", "")]


def test_a_million_pairs_fail_at_the_limit() -> None:
    with pytest.raises(qs.LimitExceeded):
        qs.parse("a=1&" * 1_000_000)
    with pytest.raises(qs.LimitExceeded):
        qs.parse(b"a&" * 1_000_000)


def test_a_key_over_max_key_length_raises() -> None:
    with pytest.raises(qs.LimitExceeded, match="max_key_length") as info:
        qs.parse("k" * 11 + "=v", max_key_length=10)
    assert info.value.limit == "max_key_length"
    with pytest.raises(qs.LimitExceeded):
        qs.parse(b"k" * 11 + b"=\xff", max_key_length=10)


def test_long_values_are_not_limited_by_the_key_bound() -> None:
    assert qs.parse("k=" + "v" * 100_000, max_key_length=1) == [("k", "v" * 100_000)]


# The one-pass path (rr.qs decodes the whole text, then splits) against the cases where a
# shortcut would go wrong: the feature sits in the LAST pair of a long body only.
_LONG = "&".join(f"k{i:03d}=abcdefghijklmnopqrstuvwxyz0" for i in range(128))
_LONG_PAIRS = [(f"k{i:03d}", "abcdefghijklmnopqrstuvwxyz0") for i in range(128)]

ONE_PASS_CASES = [
    ("", _LONG_PAIRS, "no + and no % anywhere"),
    ("&z=a+b", [*_LONG_PAIRS, ("z", "a b")], "a + in the last value only"),
    ("&a+b=z", [*_LONG_PAIRS, ("a b", "z")], "a + in the last name only"),
    ("&z=%41%e2%82%ac", [*_LONG_PAIRS, ("z", "A€")], "an escape in the last pair only"),
    ("&z=%2B+", [*_LONG_PAIRS, ("z", "+ ")], "an escaped + stays a plus next to a real space"),
    ("&z=%26%3d", [*_LONG_PAIRS, ("z", "&=")], "escaped separators in the last pair only"),
    ("&z=%zz%4", [*_LONG_PAIRS, ("z", "%zz%4")], "invalid escapes in the last pair only"),
    ("&z=%C3&y=%A9", [*_LONG_PAIRS, ("z", "\ufffd"), ("y", "\ufffd")], "a UTF-8 sequence never spans a &"),
    ("&z=%C3=%A9", [*_LONG_PAIRS, ("z", "\ufffd=\ufffd")], "nor a ="),
    ("&&", _LONG_PAIRS, "empty pieces at the end"),
    ("&flag", [*_LONG_PAIRS, ("flag", "")], "a piece without = at the end"),
    ("&=", [*_LONG_PAIRS, ("", "")], "an empty name at the end"),
]


@pytest.mark.parametrize(("tail", "pairs", "rule"), ONE_PASS_CASES, ids=[c[2] for c in ONE_PASS_CASES])
def test_the_one_pass_path_keeps_the_rules_in_the_last_pair(
    tail: str, pairs: list[tuple[str, str]], rule: str
) -> None:
    assert qs.parse(_LONG + tail) == pairs
    assert qs.parse((_LONG + tail).encode()) == pairs
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    assert qs.parse_dict((_LONG + tail).encode()) == grouped


def test_an_empty_piece_and_a_bare_name_in_the_middle() -> None:
    assert qs.parse("a=1&&b&c=%41&&") == [("a", "1"), ("b", ""), ("c", "A")]
    assert qs.parse_dict(b"a=1&&b&a=%41+") == {"a": ["1", "A "], "b": [""]}


def test_keep_blank_false_on_the_escaped_path() -> None:
    assert qs.parse("a=%41&b=&c", keep_blank=False) == [("a", "A")]
    assert qs.parse_dict(b"a=%41&b=&c&a=", keep_blank=False) == {"a": ["A"]}


def test_the_key_bound_is_on_the_raw_key_on_every_path() -> None:
    # The last pair's key only, past a body longer than the bound.
    with pytest.raises(qs.LimitExceeded, match="max_key_length"):
        qs.parse(_LONG + "&" + "k" * 1025 + "=v")
    with pytest.raises(qs.LimitExceeded, match="max_key_length"):
        qs.parse_dict((_LONG + "&" + "k" * 1025).encode())
    # Escaped: 12 raw characters decode to 4, still over a bound of 10.
    with pytest.raises(qs.LimitExceeded, match="max_key_length"):
        qs.parse("a=1&" + "%41" * 4 + "=v", max_key_length=10)
    with pytest.raises(qs.LimitExceeded, match="max_key_length"):
        qs.parse_dict(b"a=1&" + b"%41" * 4 + b"=v", max_key_length=10)
    # Raw UTF-8 bytes: 12 bytes, 6 characters.
    with pytest.raises(qs.LimitExceeded, match="max_key_length"):
        qs.parse("a=1&éééééé=v".encode(), max_key_length=10)
    # A long value is no long key, on either path.
    assert qs.parse("k=%41" + "v" * 2000, max_key_length=10) == [("k", "A" + "v" * 2000)]
    assert qs.parse(_LONG + "&k=" + "v" * 2000) == [*_LONG_PAIRS, ("k", "v" * 2000)]


def test_a_str_with_a_lone_surrogate_keeps_it_outside_escaped_components() -> None:
    # Such a str (surrogateescape'd bytes, say) is text: only components with escapes are re-read as UTF-8.
    assert qs.parse("a=\udcff&b=%41") == [("a", "\udcff"), ("b", "A")]


ENCODE_CASES = [
    ([("a", "1")], "a=1"),
    ([("a b", "c d")], "a+b=c+d"),
    ([("a", "1+2")], "a=1%2B2"),
    ([("a", "&=?#%")], "a=%26%3D%3F%23%25"),
    ([("a", "é")], "a=%C3%A9"),
    ([("a", "-._~")], "a=-._~"),
    ([("", "")], "="),
    ([], ""),
]


@pytest.mark.parametrize(("pairs", "wire"), ENCODE_CASES)
def test_encode_escapes_all_but_unreserved_and_writes_space_as_plus(
    pairs: list[tuple[str, str]], wire: str
) -> None:
    assert qs.encode(pairs) == wire


def test_encode_accepts_a_mapping_of_values_or_value_lists() -> None:
    assert qs.encode({"a": "1", "b": ["2", "3"]}) == "a=1&b=2&b=3"


@pytest.mark.parametrize(
    ("text", "plus", "decoded"),
    [
        ("a+b", True, "a b"),
        ("a+b", False, "a+b"),
        ("%2B+", True, "+ "),
        ("%zz", True, "%zz"),
        (b"%ff", True, "\ufffd"),
        (b"a+%41", False, "a+A"),
    ],
)
def test_unquote(text: str | bytes, plus: bool, decoded: str) -> None:
    assert qs.unquote(text, plus=plus) == decoded


def test_quote_writes_space_as_percent_20_and_keeps_unreserved() -> None:
    assert qs.quote("a b/c+~") == "a%20b%2Fc%2B~"


# Keys stay under max_key_length once encoded (a code point is at most 12 encoded bytes).
_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=80)


@given(st.lists(st.tuples(_text, _text), max_size=20))
def test_parse_of_encode_gives_back_the_pairs(pairs: list[tuple[str, str]]) -> None:
    assert qs.parse(qs.encode(pairs)) == pairs


@given(st.binary(max_size=200))
def test_parse_never_raises_below_the_limits(raw: bytes) -> None:
    for name, value in qs.parse(raw):
        assert isinstance(name, str) and isinstance(value, str)


@given(_text)
def test_unquote_of_quote_is_identity(text: str) -> None:
    assert qs.unquote(qs.quote(text)) == text


def _reference(raw: bytes) -> list[tuple[str, str]]:
    """The WHATWG parser step by step, one component at a time (no shortcuts)."""
    pairs = []
    for piece in raw.split(b"&"):
        if piece:
            name, _, value = piece.partition(b"=")
            pairs.append(tuple(
                unquote_to_bytes(part.replace(b"+", b" ")).decode("utf-8", "replace") for part in (name, value)))
    return pairs  # type: ignore[return-value]


# Inputs made of the pieces the shortcuts hinge on: separators, +, escapes (valid, invalid, of a
# separator), raw non-ASCII and invalid UTF-8 bytes.
_atoms = st.sampled_from([b"&", b"=", b"+", b"%", b"a", b"2", b"6", b"D", b"%26", b"%3D", b"%3d", b"%2B",
                          b"%41", b"%C3", b"%A9", b"%zz", b"\xc3", b"\xa9", b"\xff", "é€".encode()])


@given(st.lists(_atoms, max_size=40).map(b"".join))
def test_parse_of_bytes_equals_the_step_by_step_rules(raw: bytes) -> None:
    expected = _reference(raw)
    assert qs.parse(raw) == expected
    grouped: dict[str, list[str]] = {}
    for name, value in expected:
        grouped.setdefault(name, []).append(value)
    assert qs.parse_dict(raw) == grouped


@given(st.lists(_atoms, max_size=40).map(b"".join))
def test_parse_of_ascii_text_equals_parse_qsl(raw: bytes) -> None:
    text = raw.decode("ascii", "ignore")
    assert qs.parse(text) == parse_qsl(text, keep_blank_values=True)


@given(st.text(st.sampled_from("&=+%26Da\u00e9\u20ac"), max_size=40))
def test_parse_of_text_equals_parse_of_its_utf8(text: str) -> None:
    assert qs.parse(text) == qs.parse(text.encode())
