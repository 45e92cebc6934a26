"""rr.contrib.sse: frames that a WHATWG-following client reads back exactly."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rr.contrib import sse


@dataclass
class Dispatched:
    type: str
    data: str
    last_event_id: str


@dataclass
class Client:
    """The event-stream interpretation of WHATWG HTML §9.2.6, line by line."""

    events: list[Dispatched] = field(default_factory=list)
    retry: int | None = None
    last_event_id: str = ""
    comments: list[str] = field(default_factory=list)
    _data: str = ""
    _type: str = ""

    def feed(self, stream: bytes) -> None:
        text = stream.decode("utf-8")
        assert text.endswith(("\n", "\r")), "a frame ends with a line break"
        for line in re.split(r"\r\n|\r|\n", text)[:-1]:
            self._line(line)

    def _line(self, line: str) -> None:
        if line == "":
            self._dispatch()
        elif line.startswith(":"):
            self.comments.append(line[1:])
        else:
            name, colon, value = line.partition(":")
            if colon and value.startswith(" "):
                value = value[1:]
            self._field(name, value)

    def _field(self, name: str, value: str) -> None:
        if name == "event":
            self._type = value
        elif name == "data":
            self._data += value + "\n"
        elif name == "id" and "\x00" not in value:
            self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)

    def _dispatch(self) -> None:
        if self._data == "":
            self._type = ""
            return
        data = self._data[:-1] if self._data.endswith("\n") else self._data
        self.events.append(Dispatched(self._type or "message", data, self.last_event_id))
        self._data = self._type = ""


def read(*frames: bytes) -> Client:
    client = Client()
    for frame in frames:
        client.feed(frame)
    return client


FRAME_CASES: list[tuple[dict[str, Any], bytes]] = [
    ({"data": "hello"}, b"data: hello\n\n"),
    ({"data": b"raw"}, b"data: raw\n\n"),
    ({"data": ""}, b"data: \n\n"),
    ({"data": "a\nb"}, b"data: a\ndata: b\n\n"),
    ({"data": "a\r\nb\rc"}, b"data: a\ndata: b\ndata: c\n\n"),
    ({"data": "end\n"}, b"data: end\ndata: \n\n"),
    ({"data": "x", "event": "update"}, b"event: update\ndata: x\n\n"),
    ({"data": "x", "id": "42"}, b"id: 42\ndata: x\n\n"),
    ({"data": "x", "id": 42}, b"id: 42\ndata: x\n\n"),
    ({"retry": 1500}, b"retry: 1500\n\n"),
    ({"retry": 0}, b"retry: 0\n\n"),
    ({"comment": "ping"}, b":ping\n\n"),
    ({"comment": "two\nlines"}, b":two\n:lines\n\n"),
    (
        {"data": "d", "event": "e", "id": "i", "retry": 1, "comment": "c"},
        b":c\nevent: e\nid: i\nretry: 1\ndata: d\n\n",
    ),
]


@pytest.mark.parametrize(("kwargs", "frame"), FRAME_CASES)
def test_event_frames_follow_the_event_stream_grammar(kwargs: dict[str, Any], frame: bytes) -> None:
    assert sse.event(**kwargs) == frame
    assert frame.endswith(b"\n\n")


def test_a_client_reads_type_data_and_id_back() -> None:
    client = read(sse.event("a\nb", event="tick", id="7"), sse.event("c"))
    assert client.events == [Dispatched("tick", "a\nb", "7"), Dispatched("message", "c", "7")]


def test_leading_spaces_in_values_survive_the_one_space_the_client_strips() -> None:
    client = read(sse.event("  indented", event=" spaced"))
    assert client.events == [Dispatched(" spaced", "  indented", "")]


def test_an_empty_id_resets_the_last_event_id() -> None:
    client = read(sse.event("a", id="1"), sse.event("b", id=""))
    assert [e.last_event_id for e in client.events] == ["1", ""]


def test_retry_and_comments_reach_the_client_without_dispatching() -> None:
    client = read(sse.event(retry=3000), sse.keepalive(), sse.event(comment="x\ny"))
    assert client.events == []
    assert client.retry == 3000
    assert client.comments == ["", "x", "y"]


INJECTION_CASES: list[tuple[dict[str, Any], str]] = [
    ({"data": "x", "event": "a\ndata: forged"}, "event"),
    ({"data": "x", "event": "a\rretry: 1"}, "event"),
    ({"data": "x", "event": "a\r\n\r\ndata: forged"}, "event"),
    ({"data": "x", "event": b"a\nb"}, "event"),
    ({"data": "x", "id": "1\nevent: forged"}, "id"),
    ({"data": "x", "id": "1\r"}, "id"),
    ({"data": "x", "id": "1\x00"}, "id"),
    ({"data": "x", "id": True}, "id"),
    ({"retry": -1}, "retry"),
    ({"retry": "10"}, "retry"),
    ({"retry": 1.5}, "retry"),
    ({"retry": True}, "retry"),
    ({"data": "\ud800"}, "data"),
    ({"data": 3}, "data"),
    ({}, "event"),
]


@pytest.mark.parametrize(("kwargs", "field_name"), INJECTION_CASES)
def test_fields_that_could_inject_lines_are_rejected(
    kwargs: dict[str, Any], field_name: str
) -> None:
    with pytest.raises(sse.InvalidEvent) as info:
        sse.event(**kwargs)
    assert info.value.field == field_name
    assert isinstance(info.value, ValueError)


def test_newlines_in_data_and_comments_cannot_forge_fields() -> None:
    client = read(
        sse.event("x\n\nevent: forged\nid: 666\n\n", comment="c\n\ndata: forged\n"),
    )
    assert client.events == [Dispatched("message", "x\n\nevent: forged\nid: 666\n\n", "")]


def test_headers_and_keepalive() -> None:
    assert sse.CONTENT_TYPE == "text/event-stream"
    assert dict(sse.HEADERS) == {"content-type": "text/event-stream", "cache-control": "no-cache"}
    assert sse.keepalive() == b":\n\n"


_any_text = st.text(st.characters(exclude_categories=["Cs"]))
_line_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"))


@given(_any_text, _line_text, _line_text.filter(lambda s: "\x00" not in s))
def test_data_with_arbitrary_line_breaks_reparses_to_the_same_data(
    data: str, name: str, event_id: str
) -> None:
    client = read(sse.event(data, event=name, id=event_id))
    expected = re.sub(r"\r\n|\r", "\n", data)
    assert client.events == [Dispatched(name or "message", expected, event_id)]


@given(st.lists(_any_text, min_size=1, max_size=5))
def test_a_stream_of_frames_reparses_event_by_event(datas: list[str]) -> None:
    client = read(b"".join(sse.event(d) for d in datas))
    assert [e.data for e in client.events] == [re.sub(r"\r\n|\r", "\n", d) for d in datas]
