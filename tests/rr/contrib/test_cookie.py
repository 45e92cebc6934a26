"""rr.contrib.cookie: RFC 6265 parsing and a Set-Cookie serializer that cannot be injected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rr.contrib import cookie

PARSE_CASES = [
    # (field, cookies, rule)
    ("", {}, "an empty field has no cookies"),
    ("a=1", {"a": "1"}, "one pair"),
    ("a=1; b=2", {"a": "1", "b": "2"}, "pairs are separated by '; '"),
    ("a=1;b=2", {"a": "1", "b": "2"}, "a bare ';' also separates"),
    ("  a = 1 ;\tb=2\t", {"a": "1", "b": "2"}, "OWS around names and values is trimmed"),
    ("a=b=c==", {"a": "b=c=="}, "the first '=' splits, so base64 padding survives"),
    ('a="quoted"', {"a": "quoted"}, "a DQUOTE-wrapped value is unquoted"),
    ('a="', {"a": '"'}, "a lone DQUOTE is kept"),
    ('a=""', {"a": ""}, "an empty quoted value"),
    ("a=", {"a": ""}, "an empty value"),
    ("a=1; a=2", {"a": "1"}, "the first occurrence of a name wins"),
    ("novalue; b=2", {"b": "2"}, "a pair without '=' is skipped"),
    ("=1; b=2", {"b": "2"}, "a pair with an empty name is skipped"),
    (";;; ;b=2;;", {"b": "2"}, "empty pieces are skipped"),
    ("a=%41", {"a": "%41"}, "values are not percent-decoded"),
    ("a=x y", {"a": "x y"}, "inner spaces are kept (lenient on input)"),
]


@pytest.mark.parametrize(("field", "cookies", "rule"), PARSE_CASES, ids=[c[2] for c in PARSE_CASES])
def test_parse_follows_rfc_6265(field: str, cookies: dict[str, str], rule: str) -> None:
    assert cookie.parse(field) == cookies
    assert cookie.parse(field.encode("latin-1")) == cookies


def test_several_cookie_fields_are_read_in_order_and_the_first_name_wins() -> None:
    assert cookie.parse(["a=1; b=2", "b=3; c=4", b"a=5"]) == {"a": "1", "b": "2", "c": "4"}


def test_no_fields_give_no_cookies() -> None:
    assert cookie.parse([]) == {}


@given(st.text(max_size=200))
def test_parse_never_raises(field: str) -> None:
    assert isinstance(cookie.parse(field), dict)


SERIALIZE_CASES: list[tuple[dict[str, Any], str]] = [
    ({}, "sid=abc"),
    ({"path": "/"}, "sid=abc; Path=/"),
    ({"domain": "example.com"}, "sid=abc; Domain=example.com"),
    ({"domain": ".Example.com"}, "sid=abc; Domain=Example.com"),
    ({"max_age": 3600}, "sid=abc; Max-Age=3600"),
    ({"max_age": 0}, "sid=abc; Max-Age=0"),
    ({"max_age": timedelta(hours=1)}, "sid=abc; Max-Age=3600"),
    (
        {"expires": datetime(2015, 10, 21, 7, 28, tzinfo=UTC)},
        "sid=abc; Expires=Wed, 21 Oct 2015 07:28:00 GMT",
    ),
    (
        {"expires": datetime(2015, 10, 21, 9, 28, tzinfo=timezone(timedelta(hours=2)))},
        "sid=abc; Expires=Wed, 21 Oct 2015 07:28:00 GMT",
    ),
    (
        {"expires": "Wed, 21 Oct 2015 07:28:00 GMT"},
        "sid=abc; Expires=Wed, 21 Oct 2015 07:28:00 GMT",
    ),
    ({"secure": True}, "sid=abc; Secure"),
    ({"http_only": True}, "sid=abc; HttpOnly"),
    ({"same_site": "lax"}, "sid=abc; SameSite=Lax"),
    ({"same_site": "STRICT"}, "sid=abc; SameSite=Strict"),
    ({"same_site": "None", "secure": True}, "sid=abc; Secure; SameSite=None"),
    ({"partitioned": True, "secure": True}, "sid=abc; Secure; Partitioned"),
    (
        {
            "partitioned": True,
            "same_site": "none",
            "http_only": True,
            "secure": True,
            "expires": "Thu, 01 Jan 1970 00:00:00 GMT",
            "max_age": 0,
            "path": "/app",
            "domain": "a.example",
        },
        "sid=abc; Domain=a.example; Path=/app; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT;"
        " Secure; HttpOnly; SameSite=None; Partitioned",
    ),
]


@pytest.mark.parametrize(("attrs", "header"), SERIALIZE_CASES)
def test_serialize_renders_attributes_in_a_fixed_order(attrs: dict[str, Any], header: str) -> None:
    assert cookie.serialize("sid", "abc", **attrs) == header


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("a", ""),
        ("a", '""'),
        ("a", '"x=y"'),
        ("a", "!#$%&'()*+-./:<=>?@[]^_`{|}~"),
        ("!#$%&'*+-.^_`|~", "v"),
    ],
)
def test_serialize_accepts_the_full_token_and_cookie_octet_alphabets(name: str, value: str) -> None:
    assert cookie.serialize(name, value) == f"{name}={value}"


INVALID_CASES: list[tuple[str, str, dict[str, Any], str]] = [
    # (name, value, attrs, field) — each injection or grammar break names its field
    ("", "v", {}, "name"),
    ("a b", "v", {}, "name"),
    ("a=b", "v", {}, "name"),
    ("a;b", "v", {}, "name"),
    ("a\r\nSet-Cookie: x", "v", {}, "name"),
    ("a\x00", "v", {}, "name"),
    ("é", "v", {}, "name"),
    ("a", "v;Domain=evil.com", {}, "value"),
    ("a", "v\r\nSet-Cookie: x=1", {}, "value"),
    ("a", "v\n", {}, "value"),
    ("a", "v\x00", {}, "value"),
    ("a", "a b", {}, "value"),
    ("a", "a,b", {}, "value"),
    ("a", "a\\b", {}, "value"),
    ("a", 'a"b', {}, "value"),
    ("a", '"unbalanced', {}, "value"),
    ("a", "é", {}, "value"),
    ("a", "v", {"domain": "evil.com; Secure"}, "domain"),
    ("a", "v", {"domain": "evil.com\r\nX: y"}, "domain"),
    ("a", "v", {"domain": "evil.com\x00"}, "domain"),
    ("a", "v", {"domain": ""}, "domain"),
    ("a", "v", {"domain": "."}, "domain"),
    ("a", "v", {"domain": "example.com."}, "domain"),
    ("a", "v", {"domain": "-bad.com"}, "domain"),
    ("a", "v", {"domain": "bad-.com"}, "domain"),
    ("a", "v", {"domain": "a..com"}, "domain"),
    ("a", "v", {"domain": "under_score.com"}, "domain"),
    ("a", "v", {"domain": "x" * 64 + ".com"}, "domain"),
    ("a", "v", {"domain": ".".join(["abcdefghi"] * 26)}, "domain"),
    ("a", "v", {"domain": "bücher.de"}, "domain"),
    ("a", "v", {"domain": "[::1]"}, "domain"),
    ("a", "v", {"path": "/a;HttpOnly"}, "path"),
    ("a", "v", {"path": "/a\r\nX: y"}, "path"),
    ("a", "v", {"path": "/a\n"}, "path"),
    ("a", "v", {"path": "/a\x00"}, "path"),
    ("a", "v", {"path": "/a\x7f"}, "path"),
    ("a", "v", {"path": "relative"}, "path"),
    ("a", "v", {"path": ""}, "path"),
    ("a", "v", {"path": "/ü"}, "path"),
    ("a", "v", {"max_age": -1}, "max_age"),
    ("a", "v", {"max_age": "3600"}, "max_age"),
    ("a", "v", {"max_age": 1.5}, "max_age"),
    ("a", "v", {"max_age": True}, "max_age"),
    ("a", "v", {"expires": "Wed, 21 Oct 2015 07:28:00 GMT; Domain=evil"}, "expires"),
    ("a", "v", {"expires": "Wed, 21 Oct 2015 07:28:00 GMT\r\nX: y"}, "expires"),
    ("a", "v", {"expires": "Thu, 21 Oct 2015 07:28:00 GMT"}, "expires"),
    ("a", "v", {"expires": "Wed, 31 Feb 2015 07:28:00 GMT"}, "expires"),
    ("a", "v", {"expires": "Wed, 21 Oct 2015 25:28:00 GMT"}, "expires"),
    ("a", "v", {"expires": "Wednesday, 21-Oct-15 07:28:00 GMT"}, "expires"),
    ("a", "v", {"expires": "Wed Oct 21 07:28:00 2015"}, "expires"),
    ("a", "v", {"expires": "Wed, 21 Oct 2015 07:28:00 UTC"}, "expires"),
    ("a", "v", {"expires": datetime(2015, 10, 21)}, "expires"),
    ("a", "v", {"expires": 1445412480}, "expires"),
    ("a", "v", {"same_site": "Lax; Domain=evil"}, "same_site"),
    ("a", "v", {"same_site": "Lax\r\n"}, "same_site"),
    ("a", "v", {"same_site": "Relaxed"}, "same_site"),
    ("a", "v", {"same_site": "None"}, "same_site"),
    ("a", "v", {"partitioned": True}, "partitioned"),
    ("__Secure-a", "v", {}, "name"),
    ("__Host-a", "v", {"secure": True}, "name"),
    ("__Host-a", "v", {"secure": True, "path": "/x"}, "name"),
    ("__Host-a", "v", {"secure": True, "path": "/", "domain": "example.com"}, "name"),
]


@pytest.mark.parametrize(("name", "value", "attrs", "field"), INVALID_CASES)
def test_serialize_rejects_unsafe_input_naming_the_field(
    name: str, value: str, attrs: dict[str, Any], field: str
) -> None:
    with pytest.raises(cookie.InvalidCookie) as info:
        cookie.serialize(name, value, **attrs)
    assert info.value.field == field
    assert field in str(info.value)
    assert isinstance(info.value, ValueError)


def test_prefixed_cookies_with_their_requirements_serialize() -> None:
    assert cookie.serialize("__Secure-a", "v", secure=True) == "__Secure-a=v; Secure"
    assert cookie.serialize("__Host-a", "v", secure=True, path="/") == "__Host-a=v; Path=/; Secure"


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
    )
)
def test_imf_fixdate_round_trips(moment: datetime) -> None:
    text = cookie.format_imf_fixdate(moment)
    assert cookie.parse_imf_fixdate(text) == moment.replace(microsecond=0)
    assert cookie.serialize("a", "v", expires=text) == f"a=v; Expires={text}"


_TCHAR = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_COOKIE_OCTETS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '",;\\')


# Names with the __Secure-/__Host- prefixes carry attribute rules of their own (tested above).
_PLAIN_NAMES = st.text(_TCHAR, min_size=1).filter(
    lambda n: not n.lower().startswith(("__secure-", "__host-"))
)


@given(_PLAIN_NAMES, st.text(_COOKIE_OCTETS))
def test_parse_of_serialize_gives_back_the_value(name: str, value: str) -> None:
    assert cookie.parse(cookie.serialize(name, value).split(";")[0]) == {name: value}


@given(_PLAIN_NAMES, st.text(_COOKIE_OCTETS))
def test_quoted_values_parse_back_unquoted(name: str, value: str) -> None:
    assert cookie.parse(cookie.serialize(name, f'"{value}"')) == {name: value}
