"""Fuzz targets for rr's pure codecs: one function per target, bytes in, an
``AssertionError`` (or any unexpected exception) out when a property fails.

What it owns: the properties each codec must keep on arbitrary peer or
application input, stated once so three drivers share them — the atheris
runner (``tools/fuzz/run.py``, coverage-guided), the short run and corpus
replay in the test suite (``tests/fuzz/``), and the regression tests for any
input a long run found.

What it must never do: import atheris (the targets run without it), open a
socket or spawn a process, or keep state between calls that could hide a
failure (every call builds its own parser / machine / decoder; the codecs'
own bounded memo caches are part of what is tested).

Targets (``TARGETS`` maps the name to the function):

- ``h1_head``: ``rr.http1.codec.parse_head`` and the event ``Parser`` on the
  input as a request stream. Only ``ParseError`` escapes; a parsed head is
  consistent (lowercase token names, values without CR/LF/NUL, framing fields
  agree, ``consumed`` ends at the empty line); every proper prefix of a valid
  head is "need more" (nothing in it proves it bad); the same bytes fed in
  pieces give the same events or the same error status as fed at once.
- ``h1_chunked``: ``ChunkedDecoder`` on the input as a chunked body, at once
  and in pieces: only ``ParseError``; the same body, trailers, ``done`` and
  ``unused`` (or the same error status) either way; the decoded length never
  exceeds what the size lines declared.
- ``h2_machine``: ``rr.http2.machine.H2Machine.feed`` with the input after the
  client preface and an empty SETTINGS, in three pieces, with stream workers
  simulated (answer, stream, crash or stay silent). Only ``ConnectionEnded``
  escapes; every frame the machine writes parses (hyperframe, a parser rr did
  not write) and its header blocks decode (hpack); the machine's memory is
  bounded (streams, closed-stream memory, decode cache, reader buffer,
  header-block buffer) and its counters agree with its streams.
- ``h2_hpack``: HPACK decode (hpack, as the machine calls it) then
  ``rr.http2.codec.validate_request``: only hpack's errors / ``Malformed``;
  accepted requests have the pseudo-headers RFC 9113 §8.3.1 requires, a token
  ``:method`` and clean values (pseudo-headers included); a block ``table_neutral`` says leaves the table alone really
  does decode twice to the same list (the machine's decode cache relies on it).
- ``proxy_header``: ``rr.proxy_protocol.parse`` on the input as the start of
  a connection: only ``ProxyHeaderError``; a parsed header took ``consumed``
  bytes (at most 107 for v1, ``max_size`` for v2), parses the same from
  exactly those bytes (nothing after them counts), and every proper prefix of
  them is "need more" — the property ``rr.transport`` relies on to take the
  header off the socket without over-reading; addresses are well-formed
  (``client`` an ``(ip, port)`` pair of the header's family or None), and a
  CRC32C TLV it accepted is right.
- ``response_fields``: ``rr.exchange.response_fields`` on header lists built
  from the input (pairs of arbitrary str, and non-pairs): only
  ``InvalidResponse``; accepted fields are the handler's own (ASCII names,
  lowercased) minus framing fields, with latin-1 values free of CR/LF/NUL,
  plus a ``date``; the memo cache answers the same; and both wire encoders
  (h1 ``encode_head``, h2 ``encode_headers``) take them.
"""

from __future__ import annotations

import ipaddress
import struct
import time
from collections.abc import Callable
from typing import Any

import hpack
import hpack.exceptions
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import ContinuationFrame, Frame, HeadersFrame

from rr import config, exchange, proxy_protocol
from rr import response as resp
from rr import stream as sw
from rr.http1 import codec as h1
from rr.http2 import codec as h2
from rr.http2.machine import (
    BLOCK_CACHE,
    CLOSED_MEMORY,
    KILL,
    START,
    TELL,
    ConnectionEnded,
    H2Machine,
)
from rr.runtime import ListenerRuntime

# -- HTTP/1.1 ---------------------------------------------------------------------

_LOWER_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")
_SMALL = h1.Limits(max_request_line=64, max_header_line=64, max_header_block=256, max_header_count=6,
                   max_content_length=300)
_LIMITS = (h1.Limits(), _SMALL)


def _check_head(head: h1.RequestHead, used: int, buf: bytes, limits: h1.Limits) -> None:
    assert 0 < used <= len(buf) and buf[used - 4:used] == b"\r\n\r\n", used
    assert head.version in ("HTTP/1.0", "HTTP/1.1"), head.version
    assert head.method and _TOKEN_STR(head.method), head.method
    assert len(head.headers) <= limits.max_header_count
    for name, value in head.headers:
        assert name and _LOWER_TOKEN.issuperset(name), name
        assert not any(c in value for c in "\r\n\x00"), value
        assert value == value.strip(" \t"), value
    assert not (head.chunked and head.content_length is not None), "chunked with a content-length"
    if head.content_length is not None:
        assert 0 <= head.content_length <= limits.max_content_length
    if head.version == "HTTP/1.1":
        assert head.host is not None, "HTTP/1.1 without a host"
    names = [n for n, _ in head.headers]
    assert names.count("host") <= 1
    assert not (head.chunked and head.version == "HTTP/1.0")
    assert head.path.startswith("/") or head.method in ("CONNECT", "OPTIONS") or "://" in head.target, \
        head.target


def _TOKEN_STR(s: str) -> bool:
    return bool(s) and set(s) <= _TCHAR_ANY


_TCHAR_ANY = _LOWER_TOKEN | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _parse(buf: bytes, limits: h1.Limits) -> tuple[str, Any]:
    try:
        got = h1.parse_head(buf, limits)
    except h1.ParseError as exc:
        assert 400 <= exc.status <= 505, exc.status
        return "error", exc.status
    if got is None:
        return "more", None
    return "head", got


def _events(chunks: list[bytes], limits: h1.Limits) -> tuple[list[Any], int | None]:
    parser = h1.Parser(limits)
    events: list[Any] = []
    for chunk in chunks:
        try:
            events.extend(parser.feed(chunk))
        except h1.ParseError as exc:
            return _squash(events), exc.status
    return _squash(events), None


def _squash(events: list[Any]) -> list[Any]:
    """Adjacent Data events joined: how the body is cut depends on how bytes arrived."""
    out: list[Any] = []
    for ev in events:
        if isinstance(ev, h1.Data) and out and isinstance(out[-1], h1.Data):
            out[-1] = h1.Data(out[-1].data + ev.data)
        elif isinstance(ev, h1.Data) and not ev.data:
            continue
        else:
            out.append(ev)
    return out


def _pieces(data: bytes) -> list[bytes]:
    """The input cut byte by byte for its first 48 bytes, then in 37-byte pieces."""
    head = [data[i:i + 1] for i in range(min(len(data), 48))]
    return head + [data[i:i + 37] for i in range(48, len(data), 37)]


def h1_head(data: bytes) -> None:
    for limits in _LIMITS:
        kind, got = _parse(data, limits)
        if kind == "head":
            head, used = got
            _check_head(head, used, data, limits)
            again = h1.parse_head(data[:used], limits)  # the memo cache must give the same answer
            assert again is not None and again[1] == used and again[0] == head
            start = 2 if data[:2] == b"\r\n" else 0
            for cut in {start, used // 2, used - 3, used - 1}:
                if start <= cut < used:
                    assert _parse(data[:cut], limits)[0] == "more", (cut, _parse(data[:cut], limits))
        whole = _events([data], limits)
        split = _events(_pieces(data), limits)
        if whole[1] is None and split[1] is None:
            # Fed whole, the parser may stop at an incomplete head; fed in pieces, the same.
            assert whole[0] == split[0], (whole, split)
        else:
            # Whether the bytes are rejected, and with which status, must not depend on how
            # they arrived: the shortest bad prefix decides (a bare LF early in a request
            # line that is also too long is 400 whole as in pieces, not 414).
            assert whole[1] == split[1], (whole[1], split[1])
        if kind == "error":
            assert whole[1] is not None, (whole, got)


def _decode_chunked(chunks: list[bytes], limits: h1.Limits) -> tuple[Any, ...]:
    dec = h1.ChunkedDecoder(limits)
    body = []
    for chunk in chunks:
        try:
            body.extend(dec.feed(chunk))
        except h1.ParseError as exc:
            assert exc.status in (400, 413, 431), exc.status
            # after an error, every feed raises it again
            try:
                dec.feed(b"0\r\n\r\n")
            except h1.ParseError as again:
                assert again is exc
            else:
                raise AssertionError("a failed decoder accepted more input") from None
            return ("error", exc.status)
    joined = b"".join(body)
    assert len(joined) <= dec.declared, (len(joined), dec.declared)
    assert dec.declared <= limits.max_content_length
    if dec.done:
        assert len(joined) == dec.declared
        for name, value in dec.trailers:
            assert name and _LOWER_TOKEN.issuperset(name), name
            assert not any(c in value for c in "\r\n\x00"), value
        return ("done", joined, dec.trailers, dec.unused)
    return ("more", joined)


def h1_chunked(data: bytes) -> None:
    for limits in _LIMITS:
        whole = _decode_chunked([data], limits)
        split = _decode_chunked(_pieces(data), limits)
        # The same outcome either way, the error's status included (the shortest bad
        # prefix decides: a bare CR before a trailer line's excess length is 400, not 431).
        assert whole == split, (whole, split)


# -- HTTP/2 -----------------------------------------------------------------------

# Small limits, so the fuzzer reaches every guard: streams, requests, header list, floods.
_H2_CONFIG = config.load({"port": 0, "max_concurrent_requests": 6,
                          "protocols": [("http2", {"max_concurrent_streams": 8, "max_resets": 30,
                                                   "max_pings": 20, "max_settings": 20,
                                                   "max_header_list_size": 1024,
                                                   "window_refill_threshold": 1024})]})
_CLIENT_START = h2.PREFACE + h2.settings_frame({})
# What one connection's machine may hold, whatever the peer sends (see H2Machine's limits).
_MAX_READER_BUF = h2.DEFAULT_MAX_FRAME + 9


def _check_output(raw: bytes, decoder: hpack.Decoder, state: dict[str, Any]) -> None:
    """Every frame the machine wrote parses, and its header blocks decode."""
    try:
        _parse_output(raw, decoder, state)
    except (HyperframeError, hpack.exceptions.HPACKError, ValueError) as exc:
        raise AssertionError(f"the machine wrote bytes a peer cannot parse: {exc!r}") from exc


def _parse_output(raw: bytes, decoder: hpack.Decoder, state: dict[str, Any]) -> None:
    pos = 0
    view = memoryview(raw)
    while pos < len(raw):
        assert len(raw) - pos >= 9, "a truncated frame header"
        f, length = Frame.parse_frame_header(view[pos:pos + 9])
        assert length <= h2.DEFAULT_MAX_FRAME, length  # the client never raised our limit
        assert len(raw) - pos - 9 >= length, "a truncated frame"
        f.parse_body(view[pos + 9:pos + 9 + length])
        pos += 9 + length
        if isinstance(f, HeadersFrame | ContinuationFrame):
            state["block"] += f.data
            if "END_HEADERS" in f.flags:
                fields = decoder.decode(state["block"])
                state["block"] = b""
                if f.stream_id in state["heads"]:  # trailers: no pseudo-header
                    assert fields and not any(n.startswith(":") for n, _ in fields), fields
                else:
                    state["heads"].add(f.stream_id)
                    assert fields and fields[0][0] == ":status", fields
                    assert all(n == n.lower() for n, _ in fields), fields
        else:
            assert not state["block"], "a frame inside a header block"


def _simulate_workers(m: H2Machine, alive: dict[int, int]) -> None:
    """What the stream workers would do: answer, stream, crash or stay; consume bodies."""
    for event in m.take_events():
        if event[0] == START:
            sid = event[1]
            kind = (sid >> 1) % 5
            if kind == 0:
                m.on_response(sid, 200, [("content-type", "text/plain")], 2, b"ok")
                m.worker_down(sid, "normal")
            elif kind == 1:
                m.on_worker_headers(sid, 200, [], None, False)
                m.on_worker_data(sid, b"x" * 1000, False)
                m.on_worker_data(sid, b"", True)
                m.worker_down(sid, "normal")
            elif kind == 2:
                m.worker_down(sid, "crash")
            elif kind == 3:
                m.on_worker_headers(sid, 200, [], None, False)
                m.on_trailers_from_worker(sid, [("grpc-status", "0")])
                m.worker_down(sid, "normal")
            else:
                # stays, consumes its body as it comes; told the client is gone, half of
                # these end at once, the others are killed after the grace (``tick``)
                alive[sid] = (sid >> 1) % 2
        elif event[0] == TELL:
            sid, message = event[1], event[2]
            if message[0] == sw.BODY:
                m.credit(sid, len(message[1]))
            elif message[0] == resp.CLOSED and alive.get(sid) == 0:
                del alive[sid]
                m.worker_down(sid, "normal")
        elif event[0] == KILL:
            alive.pop(event[1], None)


def _check_machine(m: H2Machine, runtime: ListenerRuntime) -> None:
    opts = m.opts
    assert len(m.closed) <= CLOSED_MEMORY
    assert len(m.block_cache) <= BLOCK_CACHE
    assert len(m.frames.buf) < _MAX_READER_BUF, len(m.frames.buf)
    assert m.hb_size <= opts.max_header_block + h2.DEFAULT_MAX_FRAME
    assert m.open == sum(1 for st in m.streams.values() if not st.closed), "open count drifted"
    assert m.open <= opts.max_concurrent_streams
    assert len(m.streams) <= 2 * opts.max_concurrent_streams + len(m.dying)
    assert runtime.live_streams == sum(1 for st in m.streams.values() if st.alive), "live_streams drifted"
    # the outbound budget: credit given and not yet framed, per stream and in all
    assert 0 <= m.credited <= opts.send_budget, m.credited
    assert m.credited == sum(st.credit_out for st in m.streams.values()), "credited drifted"
    for st in m.streams.values():
        assert st.send_window <= h2.MAX_WINDOW and st.recv_window >= 0 - h2.MAX_WINDOW
        assert st.outstanding >= 0
        assert st.credit_out >= 0


def h2_machine(data: bytes) -> None:
    runtime = ListenerRuntime("fuzz", _H2_CONFIG, lambda req: resp.text(200, "x"))
    m = H2Machine(("127.0.0.1", 1), runtime, "http")
    m.start()
    decoder = hpack.Decoder()
    state: dict[str, Any] = {"block": b"", "heads": set()}
    alive: dict[int, int] = {}
    _check_output(m.data_to_send(), decoder, state)
    third = max(1, len(data) // 3)
    pieces = [_CLIENT_START + data[:third], data[third:2 * third], data[2 * third:]]
    if len(data) % 2:  # the preface itself split too, now and then
        pieces = [_CLIENT_START[:11], pieces[0][11:], *pieces[1:]]
    written = 0
    try:
        for piece in pieces:
            m.feed(piece)
            _simulate_workers(m, alive)
            out = m.data_to_send()
            written += len(out)
            _check_output(out, decoder, state)
            _check_machine(m, runtime)
        # time passes: stalled streams are cancelled, told workers killed
        m.tick(time.monotonic() + 3600)
        _simulate_workers(m, alive)
        _check_output(m.data_to_send(), decoder, state)
        _check_machine(m, runtime)
        for sid in list(alive):
            m.worker_down(sid, "normal")
        m.drain(0.0)
        _simulate_workers(m, alive)
        _check_output(m.data_to_send(), decoder, state)
    except ConnectionEnded:
        _check_output(m.data_to_send(), decoder, state)
    m.end_workers()
    assert runtime.live_streams == 0
    # amplification: what a peer's bytes make rr write is bounded by a small multiple
    assert written <= 200 * (len(data) + 1) + 4096, (written, len(data))


_HPACK_ERRORS = (hpack.exceptions.HPACKError, IndexError, ValueError)


def h2_hpack(data: bytes) -> None:
    decoder = hpack.Decoder(max_header_list_size=65536)
    # the first byte picks how many leading bytes are a table-priming block
    split = data[0] % (len(data)) if data else 0
    prime, block = data[1:split + 1], data[split + 1:]
    try:
        decoder.decode(prime, raw=True)
    except _HPACK_ERRORS:
        return
    neutral = h2.table_neutral(block)
    try:
        decoded = list(decoder.decode(block, raw=True))
    except _HPACK_ERRORS:
        return
    if neutral:
        try:
            twice = list(decoder.decode(block, raw=True))
        except _HPACK_ERRORS as exc:
            raise AssertionError(f"a table-neutral block decoded once, then failed: {exc!r}") from None
        assert twice == decoded, "a table-neutral block decoded differently the second time"
    for connect_protocol in (False, True):
        try:
            pseudo, fields, length = h2.validate_request(decoded, connect_protocol)
        except h2.Malformed:
            continue
        method = pseudo[":method"]
        assert method
        if method == "CONNECT" and ":protocol" not in pseudo:
            assert pseudo.get(":authority") and ":path" not in pseudo
        else:
            assert pseudo[":path"][0] == "/" or pseudo[":path"] == "*"
            assert ":scheme" in pseudo
        assert set(pseudo) <= {":method", ":scheme", ":authority", ":path", ":protocol"}
        for name, value in pseudo.items():  # §8.2.1 holds for pseudo-headers too
            assert not any(c in value for c in "\r\n\x00"), (name, value)
        assert _TOKEN_STR(method), method
        for name, value in fields:
            assert name and h2.TOKEN.issuperset(name), name
            assert not any(c in value for c in "\r\n\x00"), value
            assert name not in ("connection", "transfer-encoding", "upgrade", "keep-alive")
        if length is not None:
            assert [int(v) for n, v in fields if n == "content-length"][0] == length
        assert sum(1 for n, _ in fields if n == "cookie") <= 1


# -- response fields ----------------------------------------------------------------


def _headers_from(data: bytes) -> list[Any]:
    """A header list from bytes: each item is led by one byte saying its shape."""
    out: list[Any] = []
    pos = 0
    n = len(data)
    while pos < n and len(out) < 64:
        shape = data[pos]
        pos += 1
        lengths = data[pos:pos + 2]
        pos += 2
        a = (lengths[0] if lengths else 0) % 24
        b = (lengths[1] if len(lengths) > 1 else 0) % 40
        raw_name, raw_value = data[pos:pos + a], data[pos + a:pos + a + b]
        pos += a + b
        if shape & 0x3 == 0:  # latin-1 text: every octet a character
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        elif shape & 0x3 == 1:  # UTF-8 text (non-latin-1 characters, case-folding surprises)
            name, value = raw_name.decode("utf-8", "replace"), raw_value.decode("utf-8", "replace")
        elif shape & 0x3 == 2:  # UTF-16: any code point, lone surrogates included
            name = raw_name.decode("utf-16-le", "surrogatepass") if len(raw_name) % 2 == 0 else "x"
            value = raw_value.decode("utf-16-le", "surrogatepass") if len(raw_value) % 2 == 0 else "y"
        else:  # a known name with an arbitrary value
            known = ["Connection", "content-length", "Date", "Set-Cookie", "TRANSFER-ENCODING",
                     "Keep-Alive", "x-a", "Upgrade"]
            name, value = known[a % len(known)], raw_value.decode("latin-1")
        wrap = shape >> 2 & 0x7
        if wrap == 0:
            out.append((name, value))
        elif wrap == 1:
            out.append([name, value])
        elif wrap == 2:
            out.append((name, value, value))
        elif wrap == 3:
            out.append((raw_name, value))
        elif wrap == 4:
            out.append((name, None))
        elif wrap == 5:
            out.append(name)
        else:
            out.append((name, value))
    return out


_FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
                      "proxy-connection"})


def response_fields(data: bytes) -> None:
    headers = _headers_from(data)
    for add_date in (True, False):
        try:
            fields, close = exchange.response_fields(headers, add_date)
        except exchange.InvalidResponse:
            continue
        # what went in is what comes out, lowercased: a name is ASCII before it is lowered
        # (U+212A KELVIN SIGN lowers to "k": such a name is not a token, RFC 9110 §5.1)
        kept = [(p[0].lower(), p[1]) for p in headers if p[0].lower() not in _FRAMING]
        assert fields[:len(kept)] == kept, (fields, kept)
        assert all(p[0].isascii() for p in headers), headers
        # the memo cache gives the same answer the second time (bar the date: a second
        # may tick between the two calls)
        again = exchange.response_fields(headers, add_date)[0]
        assert [f for f in again if f[0] != "date"] == [f for f in fields if f[0] != "date"]
        assert len(fields) <= len(headers) + 1
        for name, value in fields:
            assert isinstance(name, str) and isinstance(value, str)
            assert name and _LOWER_TOKEN.issuperset(name), name
            assert name not in _FRAMING, name
            assert not any(c in value for c in "\r\n\x00"), value
            value.encode("latin-1")
        dates = sum(1 for n, _ in fields if n == "date")
        assert dates >= (1 if add_date else 0)
        wants_close = any(isinstance(p, tuple) and p[0].lower() == "connection" and "close" in p[1].lower()
                          for p in headers)
        assert close == wants_close, (close, headers)
        # the two encoders take what the exchange accepted (they must never see worse)
        h1.encode_head(200, fields)
        h1.field_lines(fields)
        h2.encode_headers(fields)


# -- PROXY protocol -------------------------------------------------------------------

_PP_MAX = 512  # a small max_size, so the fuzzer reaches the size limit too


def _check_proxy_header(header: proxy_protocol.ProxyHeader, used: int, data: bytes) -> None:
    assert 0 < used <= len(data), used
    assert used <= (proxy_protocol.V1_MAX if header.version == 1 else _PP_MAX), used
    client = header.client
    if client is not None:
        ip, port = client
        assert isinstance(port, int) and 0 <= port <= 65535, client
        version = ipaddress.ip_address(ip).version
        assert header.family in (("TCP4", "INET") if version == 4 else ("TCP6", "INET6")), (header.family, ip)
    if header.family in ("UNKNOWN", "UNSPEC") or header.command == "LOCAL":
        assert client is None, header
    if header.tlv(proxy_protocol.PP2_TYPE_CRC32C) is not None:
        # Walk the TLVs again here (after the family's address block) to find the checksum's
        # place, and recompute it with the value zeroed.
        at = 16 + {"INET": 12, "INET6": 36, "UNIX": 216}.get(header.family, 0)
        while data[at] != proxy_protocol.PP2_TYPE_CRC32C:
            at += 3 + struct.unpack_from("!H", data, at + 1)[0]
        zeroed = data[:at + 3] + bytes(4) + data[at + 7:used]
        assert struct.pack("!I", proxy_protocol.crc32c(zeroed)) == data[at + 3:at + 7], "a wrong CRC32C accepted"


def proxy_header(data: bytes) -> None:
    try:
        got = proxy_protocol.parse(data, _PP_MAX)
    except proxy_protocol.ProxyHeaderError:
        return
    if got is None:
        limit = proxy_protocol.V1_MAX if data[:1] == b"P" else _PP_MAX
        assert len(data) < limit, "need more past the size limit"
        return
    header, used = got
    _check_proxy_header(header, used, data)
    assert proxy_protocol.parse(data[:used], _PP_MAX) == got, "the bytes after the header changed it"
    for end in range(used):
        assert proxy_protocol.parse(data[:end], _PP_MAX) is None, f"prefix of {end} bytes is not need-more"


TARGETS: dict[str, Callable[[bytes], None]] = {
    "h1_head": h1_head,
    "h1_chunked": h1_chunked,
    "h2_machine": h2_machine,
    "h2_hpack": h2_hpack,
    "response_fields": response_fields,
    "proxy_header": proxy_header,
}
