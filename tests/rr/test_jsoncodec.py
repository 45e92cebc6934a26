"""resp.json / req.json: the same bytes with and without orjson (rr.jsoncodec)."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import subprocess
import sys

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rr import jsoncodec, resp
from tests.rr.conftest import in_thread


class Colour(enum.IntEnum):
    RED = 1


class Word(enum.StrEnum):
    HI = "hi"


class MyDict(dict):  # type: ignore[type-arg]
    pass


@dataclasses.dataclass
class Point:
    x: int


# Values whose encoding both paths must agree on byte for byte (Python literals, so the
# stdlib-only subprocess can rebuild them).
CORPUS = [
    {"a": [1, "é", None, True, False], "b": {"c": 1.5, "d": -0.0}},
    "line\nbreak \"quoted\" \\ tab\t \u2028 \U0001f600 <>&",
    [0, -1, 2**63 - 1, -(2**63), 2**64, 10**30, 3.141592653589793, 0.1, 1e16, 1e300],
    {"": [], "x": {}, "nested": [[[{"k": "v"}]]]},
    {1: "int key", 2.5: "float key", False: "bool key", None: "none key"},
    (1, 2, 3),
    "\x00\x1f\x7f",
]

_STDLIB_ONLY = """
import sys
sys.modules["orjson"] = None  # hide orjson: the stdlib path
from rr import jsoncodec
assert not jsoncodec.FAST
from tests.rr.test_jsoncodec import CORPUS
for value in CORPUS:
    sys.stdout.write(jsoncodec.encode(value).hex() + "\\n")
"""


def test_orjson_is_the_fast_path_here():
    pytest.importorskip("orjson")
    assert jsoncodec.FAST and jsoncodec.encode is not jsoncodec.encode_stdlib


def test_corpus_bytes_equal_with_and_without_orjson():
    out = subprocess.run([sys.executable, "-c", _STDLIB_ONLY], capture_output=True, text=True, check=True)
    without = [bytes.fromhex(line) for line in out.stdout.split()]
    assert without == [jsoncodec.encode(value) for value in CORPUS]
    assert without == [jsoncodec.encode_stdlib(value) for value in CORPUS]
    assert without[0] == '{"a":[1,"é",null,true,false],"b":{"c":1.5,"d":-0.0}}'.encode()


@pytest.mark.parametrize("value", [Colour.RED, {"w": Word.HI}, MyDict(a=1), [Colour.RED, MyDict()]])
def test_subclasses_encode_as_the_stdlib_does(value):
    assert jsoncodec.encode(value) == jsoncodec.encode_stdlib(value)


@pytest.mark.parametrize("value", [float("nan"), [float("inf")], {"x": -float("inf")}])
def test_nan_and_infinity_are_refused(value):
    with pytest.raises(ValueError):
        jsoncodec.encode(value)
    with pytest.raises(ValueError):
        resp.json(200, value)


@pytest.mark.parametrize("value", [Point(1), datetime.date(2026, 1, 1), object(), {"s": {1, 2}}])
def test_values_the_stdlib_refuses_are_refused(value):
    with pytest.raises(TypeError):
        jsoncodec.encode(value)


def test_a_lone_surrogate_is_refused_like_the_stdlib():
    with pytest.raises(UnicodeEncodeError):
        jsoncodec.encode("\ud800")


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: "e" not in repr(f)),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(_json_values)
def test_generated_documents_encode_identically(value):
    assert jsoncodec.encode(value) == jsoncodec.encode_stdlib(value)


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_decode_to_the_same_value(value):
    # orjson spells some exponents differently (1e-7 vs 1e-07): same number, valid JSON.
    assert json.loads(jsoncodec.encode(value)) == json.loads(jsoncodec.encode_stdlib(value)) == value


@pytest.mark.parametrize("body", [b'{"a": [1, 2.5, "\\u00e9"]}', b"NaN", b"123456789012345678901234567890",
                                  b"-9223372036854775809", b"[18446744073709551616]", b"1E400",
                                  b'"\\ud800"', b"\xef\xbb\xbf[1]", '{"x": 1}'.encode("utf-16")])
def test_loads_matches_the_stdlib(body):
    got, want = jsoncodec.loads(body), json.loads(body)
    assert got == want or (got != got and want != want)  # NaN


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False),
                    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children,
                                                                                     max_size=5),
                    max_leaves=30))
def test_generated_bodies_parse_identically(value):
    body = json.dumps(value).encode()
    assert jsoncodec.loads(body) == json.loads(body)


@pytest.mark.parametrize("body", [b"", b"{", b"[1,]", b"\xff"])
def test_loads_refuses_what_the_stdlib_refuses(body):
    with pytest.raises(ValueError):
        json.loads(body)
    with pytest.raises(ValueError):
        jsoncodec.loads(body)


def test_over_the_wire_with_httpx(serve):
    srv = serve([("/out", lambda req: resp.json(200, CORPUS[0])),
                 ("/echo", lambda req: resp.json(200, req.json()))])
    out = in_thread(httpx.get, srv.url + "/out")
    assert out.content == jsoncodec.encode_stdlib(CORPUS[0])
    assert out.headers["content-type"] == "application/json"
    body = json.dumps(CORPUS[1]).encode()
    echoed = in_thread(httpx.post, srv.url + "/echo", content=body, headers={"content-type": "application/json"})
    assert echoed.content == jsoncodec.encode_stdlib(CORPUS[1])
