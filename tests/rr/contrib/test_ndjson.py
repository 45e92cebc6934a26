"""rr.contrib.ndjson: one compact JSON document per line, never a raw newline inside."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rr.contrib import ndjson

FRAME_CASES: list[tuple[Any, bytes]] = [
    ({"a": 1, "b": [1, 2]}, b'{"a":1,"b":[1,2]}\n'),
    ([], b"[]\n"),
    ("line\nbreak\r", b'"line\\nbreak\\r"\n'),
    ("é\u2028", '"é\u2028"\n'.encode()),
    (None, b"null\n"),
    (1.5, b"1.5\n"),
]


@pytest.mark.parametrize(("obj", "line"), FRAME_CASES)
def test_frame_is_compact_json_and_one_lf(obj: Any, line: bytes) -> None:
    assert ndjson.frame(obj) == line


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_non_json_numbers_are_refused(number: float) -> None:
    with pytest.raises(ValueError):
        ndjson.frame({"x": number})


def test_unserialisable_objects_raise_type_error_without_a_default() -> None:
    with pytest.raises(TypeError):
        ndjson.frame({"d": date(2024, 1, 2)})


def test_default_hook_serialises_other_objects() -> None:
    assert ndjson.frame({"d": date(2024, 1, 2)}, default=str) == b'{"d":"2024-01-02"}\n'


def test_lone_surrogates_raise_value_error() -> None:
    with pytest.raises(ValueError):
        ndjson.frame("\ud800")


def test_frames_is_lazy_and_frames_each_item() -> None:
    produced: list[int] = []

    def items() -> Iterator[int]:
        for i in range(3):
            produced.append(i)
            yield i

    stream = ndjson.frames(items())
    assert produced == []
    assert next(stream) == b"0\n"
    assert list(stream) == [b"1\n", b"2\n"]


def test_content_type() -> None:
    assert ndjson.CONTENT_TYPE == "application/x-ndjson"


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"])),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(st.characters(exclude_categories=["Cs"])), children, max_size=4)
    ),
    max_leaves=20,
)


@given(_json)
def test_a_frame_holds_no_raw_newline_and_decodes_back(obj: Any) -> None:
    line = ndjson.frame(obj)
    assert line.endswith(b"\n")
    assert b"\n" not in line[:-1] and b"\r" not in line
    assert json.loads(line) == obj


@given(st.lists(_json, max_size=8))
def test_a_stream_splits_on_lf_into_the_same_documents(objs: list[Any]) -> None:
    body = b"".join(ndjson.frames(objs))
    assert [json.loads(line) for line in body.split(b"\n")[:-1]] == objs
