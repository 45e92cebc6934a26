"""rr.http2.codec: framing, header encoding, and the table-neutral test behind the decode cache."""

from __future__ import annotations

import hpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rr.http2 import codec

names = st.sampled_from([b":path", b":authority", b"accept", b"user-agent", b"x-custom", b"cookie",
                         b"content-type", b"x-a-much-longer-name-than-usual"])
values = st.binary(min_size=0, max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
fields = st.lists(st.tuples(names, values, st.booleans()), min_size=0, max_size=12)


def _snapshot(decoder: hpack.Decoder) -> tuple:
    table = decoder.header_table
    return tuple(table.dynamic_entries), table.maxsize


@given(st.lists(fields, min_size=1, max_size=4), st.booleans())
def test_table_neutral_blocks_never_change_the_decoders_table(requests, huffman):
    enc, dec = hpack.Encoder(), hpack.Decoder()
    for request in requests:
        # sensitive=True encodes "never indexed"; the rest is whatever hpack's encoder chooses
        block = enc.encode([hpack.HeaderTuple(n, v) if not s else hpack.NeverIndexedHeaderTuple(n, v)
                            for n, v, s in request], huffman=huffman)
        before = _snapshot(dec)
        first = dec.decode(block, raw=True)
        if codec.table_neutral(block):
            assert _snapshot(dec) == before
            assert dec.decode(block, raw=True) == first  # the cache's premise: same bytes, same list


def test_table_neutral_by_representation():
    assert codec.table_neutral(b"\x82\x86\x84")  # indexed static fields
    assert codec.table_neutral(b"\x82" + b"\x04\x05/json")  # :path literal without indexing
    assert codec.table_neutral(b"\x10\x01a\x01b")  # never indexed, new name
    assert not codec.table_neutral(b"\x44\x05/json")  # incremental indexing
    assert not codec.table_neutral(b"\x20\x82")  # table size update first
    assert not codec.table_neutral(b"\x04\x05/js")  # truncated string
    assert not codec.table_neutral(b"\xff\xff\xff\xff\xff\xff\x7f")  # an absurd index
    assert codec.table_neutral(b"")


def test_frame_reader_cuts_frames_and_enforces_the_size_limit():
    data = codec.frame(codec.PING, 0, 0, b"12345678") + codec.frame(codec.DATA, 1, 3, b"abc")
    reader = codec.FrameReader()
    got = []
    for i in range(len(data)):  # byte by byte == whole
        got += reader.feed(data[i:i + 1])
    assert got == [(codec.PING, 0, 0, b"12345678"), (codec.DATA, 1, 3, b"abc")]
    with pytest.raises(codec.FrameError) as err:
        codec.FrameReader(16384).feed(codec.frame_head(codec.DATA, 0, 1, 16385))
    assert err.value.code == codec.FRAME_SIZE_ERROR


def test_encoded_response_headers_decode_back_and_never_touch_the_table():
    headers = [("content-type", "text/plain"), ("date", "Fri, 27 Nov 2026 03:00:00 GMT"),
               ("x-custom", "v" * 200), ("content-length", "5"), ("vary", "")]
    block = codec.encode_status(200) + codec.encode_status(299)[:0] + codec.encode_headers(headers)
    dec = hpack.Decoder()
    assert dec.decode(block) == [(":status", "200"), *headers]
    assert codec.table_neutral(block) and not dec.header_table.dynamic_entries
    assert hpack.Decoder().decode(codec.encode_status(299)) == [(":status", "299")]
