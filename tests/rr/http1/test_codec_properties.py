"""Properties of rr.http1.codec, checked with Hypothesis.

- Any bytes at all: ``Parser.feed`` raises nothing but ``ParseError``.
- Any valid request stream (CL and chunked bodies, extensions, trailers,
  pipelining): feeding it byte by byte, or in random pieces, yields the same
  events as feeding it whole (adjacent ``Data`` merged), and those events say
  what the generator wrote.
"""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rr.http1.codec import (
    ChunkedDecoder,
    Data,
    EndOfMessage,
    Limits,
    ParseError,
    Parser,
    RequestHead,
    encode_chunk,
    encode_last_chunk,
)

PROFILE = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TCHAR = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
PCHAR = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@%/"
VCHAR = "".join(chr(c) for c in range(0x21, 0x7F)) + "\xe9\xff"
FRAMING = {"host", "content-length", "transfer-encoding", "connection", "expect", "upgrade"}

tokens = st.text(TCHAR, min_size=1, max_size=12)
field_names = tokens.filter(lambda n: n.lower() not in FRAMING)
# RFC 9110 §5.5: a value starts and ends with a visible char, may hold SP/HTAB inside.
field_values = st.one_of(
    st.just(""),
    st.builds(
        lambda first, middle, last: first + middle + last,
        st.sampled_from(VCHAR),
        st.text(VCHAR + " \t", max_size=20),
        st.sampled_from(VCHAR),
    ),
)
ows = st.sampled_from(["", " ", "\t", "  "])


@st.composite
def field_lines(draw, names=field_names):
    """[(name as sent, value), ...] and their wire form with random OWS."""
    fields = draw(st.lists(st.tuples(names, field_values), max_size=6))
    wire = b"".join(
        f"{name}:{draw(ows)}{value}{draw(ows)}\r\n".encode("latin-1") for name, value in fields
    )
    return fields, wire


@st.composite
def chunked_bodies(draw):
    """(body, wire) with random chunk boundaries, extensions and trailers."""
    pieces = draw(st.lists(st.binary(min_size=1, max_size=40), max_size=5))
    extensions = st.sampled_from(["", ";a", ";a=b", ' ;x="y z"', ";q=1;r", "\t;t"])
    wire = b""
    for piece in pieces:
        size = f"{len(piece):x}"
        if draw(st.booleans()):
            size = size.upper()
        wire += f"{size}{draw(extensions)}\r\n".encode() + piece + b"\r\n"
    trailers, trailer_wire = draw(field_lines())
    wire += f"0{draw(extensions)}\r\n".encode() + trailer_wire + b"\r\n"
    return b"".join(pieces), [(n.lower(), v) for n, v in trailers], wire


@st.composite
def requests(draw):
    """One valid request: (expected head fields, body, trailers, wire bytes)."""
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]))
    # CONNECT takes an authority-form target (RFC 9112 §3.2.3), never an origin-form one.
    method = draw(st.one_of(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "BREW", "get"]),
                            tokens.filter(lambda m: m != "CONNECT")))
    path = "/" + draw(st.text(PCHAR, max_size=20))
    query = draw(st.one_of(st.none(), st.text(PCHAR + "?", max_size=15)))
    target = path if query is None else f"{path}?{query}"
    fields, wire_fields = draw(field_lines())
    if version == "HTTP/1.1" or draw(st.booleans()):
        host = draw(st.sampled_from(["example.com", "a.b:8080", "[::1]:1", "x"]))
        wire_fields = f"Host:{draw(ows)}{host}\r\n".encode() + wire_fields
        fields = [("Host", host), *fields]
    body = b""
    trailers: list[tuple[str, str]] = []
    kind = draw(st.sampled_from(["none", "length", "chunked"] if version == "HTTP/1.1" else ["none", "length"]))
    if kind == "length":
        body = draw(st.binary(max_size=60))
        wire_fields += f"Content-Length: {len(body)}\r\n".encode()
        fields.append(("Content-Length", str(len(body))))
        wire_body = body
    elif kind == "chunked":
        body, trailers, wire_body = draw(chunked_bodies())
        coding = draw(st.sampled_from(["chunked", "Chunked", "CHUNKED"]))
        wire_fields += f"Transfer-Encoding: {coding}\r\n".encode()
        fields.append(("Transfer-Encoding", coding))
    else:
        wire_body = b""
    lead = b"\r\n" if draw(st.integers(0, 9)) == 0 else b""
    wire = lead + f"{method} {target} {version}\r\n".encode() + wire_fields + b"\r\n" + wire_body
    expected = {
        "method": method,
        "target": target,
        "path": path,
        "query": query or "",
        "version": version,
        "headers": [(n.lower(), v) for n, v in fields],
    }
    return expected, body, trailers, wire


def merged(events):
    """Events with adjacent Data pieces joined (how pieces split is not a property)."""
    out = []
    for event in events:
        if isinstance(event, Data) and out and isinstance(out[-1], Data):
            out[-1] = Data(out[-1].data + event.data)
        else:
            out.append(event)
    return out


def feed_in_pieces(stream: bytes, cuts: list[int]) -> list[object]:
    parser = Parser()
    events: list[object] = []
    last = 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        events += parser.feed(stream[last:cut])
        last = cut
    return events


@PROFILE
@given(st.binary(max_size=300))
def test_random_bytes_raise_nothing_but_parse_error(data):
    try:
        Parser().feed(data)
    except ParseError as error:
        assert error.status in {400, 413, 414, 417, 431, 501, 505}
        assert error.reason.isidentifier()


@PROFILE
@given(requests(), st.data())
def test_mutated_valid_requests_raise_nothing_but_parse_error(request, data):
    wire = bytearray(request[3])
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(wire)))
        action = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        byte = data.draw(st.sampled_from(b"\r\n\t :;,\x00\x7f\x80\xff0aZ/?"))
        if action == "insert":
            wire[at:at] = bytes([byte])
        elif at < len(wire):
            if action == "flip":
                wire[at] = byte
            else:
                del wire[at]
    parser = Parser(Limits(max_content_length=100))
    try:
        parser.feed(bytes(wire))
        parser.feed(b"\r\n\r\n0\r\n\r\n")
    except ParseError:
        pass


@PROFILE
@given(st.lists(requests(), min_size=1, max_size=4))
def test_byte_by_byte_equals_whole_for_valid_pipelined_streams(reqs):
    stream = b"".join(r[3] for r in reqs)
    whole = merged(Parser().feed(stream))
    parser = Parser()
    bytewise: list[object] = []
    for i in range(len(stream)):
        bytewise += parser.feed(stream[i : i + 1])
    assert merged(bytewise) == whole


@PROFILE
@given(st.lists(requests(), min_size=1, max_size=4), st.data())
def test_random_pieces_equal_whole_and_match_what_was_sent(reqs, data):
    stream = b"".join(r[3] for r in reqs)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    events = merged(feed_in_pieces(stream, cuts))
    assert events == merged(Parser().feed(stream))
    expected_events = []
    for expected, body, trailers, _ in reqs:
        expected_events.append(expected)
        if body:
            expected_events.append(Data(body))
        expected_events.append(EndOfMessage(trailers))
    assert len(events) == len(expected_events)
    for got, want in zip(events, expected_events, strict=True):
        if isinstance(want, dict):
            assert isinstance(got, RequestHead)
            assert {key: getattr(got, key) for key in want} == want
        else:
            assert got == want


@PROFILE
@given(st.lists(st.binary(max_size=50), max_size=6), st.data())
def test_encoded_chunks_round_trip_through_the_decoder_in_any_pieces(pieces, data):
    wire = b"".join(encode_chunk(p) for p in pieces) + encode_last_chunk([("x-t", "v")]) + b"NEXT"
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(wire)), max_size=8))))
    decoder = ChunkedDecoder(Limits())
    out = []
    last = 0
    for cut in [*cuts, len(wire)]:
        out += decoder.feed(wire[last:cut])
        last = cut
    assert b"".join(out) == b"".join(pieces)
    assert all(out)
    assert decoder.done and decoder.trailers == [("x-t", "v")]
    assert decoder.unused == b"NEXT"
