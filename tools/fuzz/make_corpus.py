"""Write the fuzzers' seed corpora (``tests/fuzz/corpus/TARGET/``) from rr's test vectors.

    PYTHONPATH=$PWD python tools/fuzz/make_corpus.py

Sources: the hostile-request tables of ``tests/rr/http1/test_codec.py`` and
``tests/rr/http1/test_hostile_wire.py`` (heads, and their chunked bodies), the
frame shapes of ``tests/rr/http2/test_conformance.py`` (built here with the same
helpers, ``tests/rr/http2/frames.py``) and a few ordinary requests and header
lists. Files are named by the vector and hold raw bytes; inputs over 4 KiB (the
fuzzers' ``-max_len``) are left out. Re-running replaces the files it writes
and leaves others alone (inputs a fuzz run found and someone chose to keep).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "fuzz" / "corpus"
MAX_LEN = 4096


def _name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80]


def h1_vectors() -> dict[str, bytes]:
    from tests.rr.http1 import test_codec, test_hostile_wire

    out = {f"codec_{name}": raw for name, raw, _, _ in test_codec.HOSTILE}
    out.update({f"wire_{name}": raw for name, raw, _ in test_hostile_wire.VECTORS})
    H = b"Host: x\r\n"
    out.update({
        "ok_get": b"GET / HTTP/1.1\r\n" + H + b"\r\n",
        "ok_get_query_pipelined": b"GET /a?b=c HTTP/1.1\r\n" + H + b"\r\n" + b"GET /d HTTP/1.1\r\n" + H + b"\r\n",
        "ok_post_cl": b"POST /u HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello",
        "ok_post_chunked_trailers": b"POST /u HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
        b"5;a=b\r\nhello\r\n0\r\nx-t: 1\r\n\r\n",
        "ok_http10": b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        "ok_absolute_form": b"GET http://example.com:8080/p?q HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
        "ok_options_star": b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n",
        "ok_connect": b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        "ok_expect_upgrade": b"POST / HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nContent-Length: 0\r\n\r\n",
        "ok_leading_crlf_obs_text": b"\r\nGET / HTTP/1.1\r\n" + H + b"X-A: caf\xe9\t\r\n\r\n",
    })
    return out


def chunked_vectors(h1: dict[str, bytes]) -> dict[str, bytes]:
    """The bodies of the chunked vectors (what follows the head), plus a few of our own."""
    out = {}
    for name, raw in h1.items():
        if b"chunked" in raw.lower() and b"\r\n\r\n" in raw:
            body = raw.split(b"\r\n\r\n", 1)[1]
            if body:
                out[name] = body
    out.update({
        "ok_two_chunks": b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        "ok_extensions": b"3;name=value;q=\"a \\\"b\"\r\nabc\r\n0;last\r\n\r\n",
        "ok_trailers_then_next": b"1\r\nx\r\n0\r\nx-a: 1\r\nx-b:2\r\n\r\nGET / HTTP/1.1\r\n",
        "ok_uppercase_hex": b"A\r\n0123456789\r\n0\r\n\r\n",
    })
    return out


def h2_vectors() -> dict[str, bytes]:
    """Frame sequences sent after the client preface and SETTINGS (the target adds those)."""
    import hpack

    from tests.rr.http2 import frames as fr

    def encode(fields: list[tuple[str, str]]) -> bytes:
        return hpack.Encoder().encode(fields)  # a fresh table: each block stands alone

    get = encode([(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "x")])
    post = encode([(":method", "POST"), (":scheme", "http"), (":path", "/u"), (":authority", "x"),
                   ("content-length", "5")])
    head = encode([(":method", "HEAD"), (":scheme", "http"), (":path", "/h"), (":authority", "x")])
    big = encode([(":method", "GET"), (":scheme", "http"), (":path", "/"), ("x-big", "v" * 1200)])
    H, ES, EH = fr.HEADERS, fr.END_STREAM, fr.END_HEADERS

    def hdr(sid: int, block: bytes, flags: int = ES | EH) -> bytes:
        return fr.frame(H, flags, sid, block)

    return {
        "get": hdr(1, get),
        "get_three_streams": hdr(1, get) + hdr(3, get) + hdr(5, get),
        "post_body": hdr(1, post, EH) + fr.data(1, b"hello", end_stream=True),
        "post_padded_body": hdr(1, post, EH) + fr.data(1, b"hello", end_stream=True, pad=4),
        "continuation": fr.frame(H, ES, 1, get[:3]) + fr.frame(fr.CONTINUATION, EH, 1, get[3:]),
        "zero_window_then_update": fr.settings((fr.INITIAL_WINDOW_SIZE, 0)) + hdr(1, get)
        + fr.window_update(1, 100) + fr.window_update(0, 100),
        "settings_ack_ping": fr.settings(ack=True) + fr.ping() + fr.ping(ack=True),
        "rapid_reset": b"".join(hdr(s, get, EH) + fr.rst(s) for s in range(1, 40, 2)),
        "made_you_reset": b"".join(hdr(s, get, EH) + fr.window_update(s, 0) for s in range(1, 40, 2)),
        "priority_self": fr.priority(1, depends_on=1) + hdr(3, fr.priority_fields(3) + get, ES | EH | 0x20),
        "hpack_index_beyond": hdr(1, get + b"\xc6"),
        "hpack_index_zero": hdr(1, get + b"\x80"),
        "hpack_huffman_eos": hdr(1, get + b"\x00\x01x\x84\xff\xff\xff\xff"),
        "hpack_size_update_late": hdr(1, get + b"\x20"),
        "hpack_size_update_over": hdr(1, b"\x3f\xe2\x1f" + get),
        "data_idle_stream": fr.data(1, b"x"),
        "rst_idle": fr.rst(1),
        "even_stream": hdr(2, get),
        "decreasing_ids": hdr(5, get) + hdr(3, get),
        "unknown_frame": fr.frame(0x20, 0xFF, 0, b"abc") + hdr(1, get),
        "headers_in_block": fr.frame(H, 0, 1, get) + fr.ping(),
        "trailers": hdr(1, post, EH) + fr.data(1, b"hello") + hdr(1, encode([("x-t", "1")])),
        "goaway": fr.goaway(0, fr.NO_ERROR) + hdr(1, get),
        "push_promise": fr.frame(fr.PUSH_PROMISE, EH, 1, b"\x00\x00\x00\x02" + get),
        "settings_bad_window": fr.settings((fr.INITIAL_WINDOW_SIZE, 2**31)),
        "settings_max_frame": fr.settings((fr.MAX_FRAME_SIZE, 2**24 - 1)) + hdr(1, get),
        "empty_data_flood": hdr(1, post, EH) + fr.data(1, b"") * 30,
        "connect": hdr(1, encode([(":method", "CONNECT"), (":authority", "x:443")])),
        "head_request": hdr(1, head),
        "header_list_over_the_limit": hdr(1, big),
        "over_max_concurrent_requests": b"".join(hdr(s, get, EH) for s in range(1, 20, 2)),
        "split_preface_ping": fr.ping(b"abcdefgh"),
        "uppercase_field": hdr(1, hpack.Encoder().encode([(":method", "GET"), (":scheme", "http"),
                                                          (":path", "/"), ("X-Up", "1")])),
    }


def hpack_vectors() -> dict[str, bytes]:
    """First byte: how many of the following bytes prime the table; then the block."""
    import hpack

    fields = [(":method", "GET"), (":scheme", "https"), (":path", "/a?b"), (":authority", "x"),
              ("cookie", "a=1"), ("cookie", "b=2"), ("content-length", "0"), ("te", "trailers")]
    enc = hpack.Encoder()
    prime = enc.encode(fields)
    again = enc.encode(fields)  # indexed from the dynamic table
    never = hpack.Encoder().encode([(":method", "GET"), (":path", "/"), (":scheme", "http"),
                                    ("x-secret", "v")], huffman=False)
    return {
        "plain": bytes([0]) + prime,
        "dynamic_reference": bytes([len(prime) % 256]) + prime + again if len(prime) < 256 else b"",
        "no_huffman": bytes([0]) + never,
        "connect": bytes([0]) + hpack.Encoder().encode([(":method", "CONNECT"), (":authority", "h:1")]),
        "extended_connect": bytes([0]) + hpack.Encoder().encode([(":method", "CONNECT"), (":protocol", "websocket"),
                                                                 (":scheme", "https"), (":path", "/ws"),
                                                                 (":authority", "h")]),
        "bad_index": bytes([0]) + b"\xc6",
        "size_update_zero": bytes([0]) + b"\x20" + prime,
        "connection_field": bytes([0]) + hpack.Encoder().encode([(":method", "GET"), (":scheme", "http"),
                                                                 (":path", "/"), ("connection", "close")]),
    }


def response_vectors() -> dict[str, bytes]:
    """Each item: shape byte, name length, value length, name, value (see targets._headers_from)."""

    def item(name: bytes, value: bytes, shape: int = 0) -> bytes:
        return bytes([shape, len(name), len(value)]) + name + value

    return {
        "ordinary": item(b"Content-Type", b"text/plain") + item(b"x-a", b"1") + item(b"Set-Cookie", b"a=b"),
        "connection_close": item(b"Connection", b"close") + item(b"x", b"y"),
        "framing_dropped": item(b"Content-Length", b"5") + item(b"Transfer-Encoding", b"chunked"),
        "crlf_value": item(b"x-a", b"a\r\nb: c"),
        "nul_value": item(b"x-a", b"a\x00b"),
        "space_in_name": item(b"x a", b"1"),
        "utf8_value": item(b"x-a", "\u2603".encode(), 1),
        "kelvin_sign_name": item("\u212a".encode(), b"v", 1),
        "date_given": item(b"Date", b"Mon, 30 Nov 2026 00:00:00 GMT"),
        "list_pair": item(b"x-a", b"1", 1 << 2),
        "triple": item(b"x-a", b"1", 2 << 2),
        "bytes_name": item(b"x-a", b"1", 3 << 2),
    }


def proxy_vectors() -> dict[str, bytes]:
    from tests.rr import test_proxy_protocol as t

    out = {f"v1_{name}": raw for name, raw in t.V1_HOSTILE.items()}
    out.update({f"v2_{name}": raw for name, raw in t.V2_HOSTILE.items()})
    ssl_value = b"\x03" + bytes(4) + t.tlv(0x21, b"TLSv1.3") + t.tlv(0x22, b"cn") + t.tlv(0x23, b"TLS_AES_128_GCM_SHA256")
    out.update({
        "ok_v1_tcp4": b"PROXY TCP4 192.0.2.1 198.51.100.2 51000 443\r\nGET / HTTP/1.1\r\n",
        "ok_v1_tcp6": b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n",
        "ok_v1_unknown": b"PROXY UNKNOWN ffff::1 ::2 1 2\r\n",
        "ok_v2_inet": t.v2(body=t.inet()) + b"\x16\x03\x01",
        "ok_v2_inet6": t.v2(fam=0x21, body=bytes(31) + b"\x01" + bytes(4)),
        "ok_v2_unix": t.v2(fam=0x31, body=b"/a".ljust(108, b"\0") + b"/b".ljust(108, b"\0")),
        "ok_v2_local": t.v2(command=0, body=t.inet()),
        "ok_v2_unspec_tlv": t.v2(fam=0x00, body=t.tlv(0x02, b"example.com")),
        "ok_v2_tlvs": t.v2(body=t.inet() + t.tlv(0x01, b"h2") + t.tlv(0x02, b"a.example") + t.tlv(0x05, b"id")
                           + t.tlv(0x20, ssl_value) + t.tlv(0x30, b"ns") + t.tlv(0xEA, b"vpce")),
        "ok_v2_crc": t._with_crc(t.inet() + t.tlv(0x02, b"a")),
    })
    return out


def write(target: str, vectors: dict[str, bytes]) -> int:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for name, raw in vectors.items():
        if raw and len(raw) <= MAX_LEN:
            (folder / _name(name)).write_bytes(raw)
            n += 1
    return n


def main() -> None:
    sys.path.insert(0, str(ROOT))
    h1 = h1_vectors()
    counts = {
        "h1_head": write("h1_head", h1),
        "h1_chunked": write("h1_chunked", chunked_vectors(h1)),
        "h2_machine": write("h2_machine", h2_vectors()),
        "h2_hpack": write("h2_hpack", hpack_vectors()),
        "response_fields": write("response_fields", response_vectors()),
        "proxy_header": write("proxy_header", proxy_vectors()),
    }
    for target, n in counts.items():
        print(f"{target}: {n} seeds")


if __name__ == "__main__":
    main()
