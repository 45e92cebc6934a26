"""rr.contrib.qs: the WHATWG urlencoded rules, read as a specification."""

from __future__ import annotations

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
