"""rr.contrib.grpc on the wire: what grpcio's client hides (and rules of the pure wire module).

A raw HTTP/2 client (the ``h2`` library, tests/rr/http2/client.py) sends
exactly the bytes a case needs — a deadline the client does not enforce
itself, a length prefix promising more than the limit with the body left
open, a gzip bomb — and the assertions read the response head, DATA and
trailers as they went out.
"""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rr.contrib import grpc as rr_grpc
from rr.contrib.grpc import wire
from tests.rr.contrib.grpc_service import Probe, modules, servicer
from tests.rr.http2.client import H2Client, Result

GRPC = [("content-type", "application/grpc"), ("te", "trailers")]


@pytest.fixture(scope="module")
def pb(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    return modules(tmp_path_factory.mktemp("rrtest_gen"))


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def grpc_server(serve, pb, probe):
    pb2, pb2_grpc = pb
    server = rr_grpc.Server(max_receive_message_length=1024)
    pb2_grpc.add_EchoServicer_to_server(servicer(pb2, pb2_grpc, probe), server)
    return serve(server.routes(), protocols=["http2"], body_buffering="manual", not_found=server.not_found)


def msg(pb, **fields: Any) -> bytes:
    return wire.frame(pb[0].Msg(**fields).SerializeToString())


def call(srv, path: str, body: bytes, headers: list[tuple[str, str]] = GRPC, method: str = "POST") -> Result:
    client = H2Client(srv.port)
    try:
        sid = client.request(method, path, body, headers)
        return client.run([sid])[sid]
    finally:
        client.close()


def status_of(res: Result) -> tuple[str | None, str | None]:
    fields = dict(res.trailers or res.headers)
    return fields.get("grpc-status"), fields.get("grpc-message")


def test_ok_unary_is_head_one_message_and_status_trailers(grpc_server, pb):
    res = call(grpc_server, "/rrtest.Echo/Unary", msg(pb, text="hi"))
    assert res.status == 200 and res.header("content-type") == "application/grpc"
    assert res.header("grpc-accept-encoding") == wire.ACCEPT_ENCODING
    flag, length = wire.PREFIX.unpack_from(res.body)
    assert flag == 0 and res.body[5:] == pb[0].Msg(text="echo:hi").SerializeToString() and len(res.body) == 5 + length
    assert res.trailers == [("grpc-status", "0")]


def test_grpc_proto_content_type_is_echoed(grpc_server, pb):
    res = call(grpc_server, "/rrtest.Echo/Unary", msg(pb, text="p"),
               [("content-type", "application/grpc+proto"), ("te", "trailers")])
    assert res.header("content-type") == "application/grpc+proto" and status_of(res) == ("0", None)


def test_error_before_any_message_is_trailers_only_with_percent_encoded_message(grpc_server, pb):
    res = call(grpc_server, "/rrtest.Echo/Unary", msg(pb, text="abort"))
    assert res.status == 200 and res.body == b"" and res.trailers == []
    assert res.header("grpc-status") == "7"
    assert res.header("grpc-message") == "n%C3%B6: 100%25 denied"


def test_error_after_initial_metadata_is_head_then_trailers(grpc_server, pb):
    res = call(grpc_server, "/rrtest.Echo/Unary", msg(pb, text="meta-then-abort"))
    assert res.header("x-early") == "1" and res.header("grpc-status") is None and res.body == b""
    assert res.trailers == [("grpc-status", "14"), ("grpc-message", "later")]


def test_deadline_from_grpc_timeout_ends_the_call_and_tells_the_servicer(grpc_server, pb, probe):
    res = call(grpc_server, "/rrtest.Echo/Unary", msg(pb, text="sleep"), [*GRPC, ("grpc-timeout", "200m")])
    assert status_of(res) == ("4", "Deadline Exceeded")
    assert 0 < probe.wait("remaining") <= 0.2
    assert probe.wait("sleep") == ("DeadlineExceeded", False, 0.0)


def test_a_far_deadline_is_no_trouble(grpc_server, pb):
    res = call(grpc_server, "/rrtest.Echo/Unary", msg(pb, text="far"), [*GRPC, ("grpc-timeout", "99999999H")])
    assert status_of(res) == ("0", None)


def test_server_stream_deadline_after_messages_is_in_the_trailers(serve, pb, probe):
    pb2, pb2_grpc = pb
    server = rr_grpc.Server()
    pb2_grpc.add_EchoServicer_to_server(servicer(pb2, pb2_grpc, probe), server)
    srv = serve(server.routes(), protocols=["http2"], body_buffering="manual")
    res = call(srv, "/rrtest.Echo/ServerStream", msg(pb, text="forever"), [*GRPC, ("grpc-timeout", "100m")])
    assert res.body and res.trailers[0] == ("grpc-status", "4")
    assert probe.wait("stream") == "DeadlineExceeded"
    assert probe.wait("callback") is False


def test_length_prefix_over_the_limit_is_refused_before_the_payload_arrives(grpc_server):
    client = H2Client(grpc_server.port)
    try:
        sid = client.conn.get_next_available_stream_id()
        client.conn.send_headers(sid, [(":method", "POST"), (":path", "/rrtest.Echo/Unary"), (":scheme", "http"),
                                       (":authority", "x"), *GRPC])
        client.results[sid] = Result()
        # 100 MB promised, 3 bytes sent, the stream left open: nothing more will come.
        client.conn.send_data(sid, wire.PREFIX.pack(0, 100_000_000) + b"abc", end_stream=False)
        client.flush()
        res = client.run([sid], timeout=5)[sid]
    finally:
        client.close()
    code, details = status_of(res)
    assert code == "8" and "100000000 vs. 1024" in details


def test_gzip_bomb_stops_at_the_limit(grpc_server, pb):
    bomb = gzip.compress(b"\0" * 900_000)  # 900 KB inflated from under 1 KiB
    assert len(bomb) < 1024
    res = call(grpc_server, "/rrtest.Echo/Unary", wire.frame(bomb, compressed=True), [*GRPC, ("grpc-encoding", "gzip")])
    assert status_of(res)[0] == "8"


def test_decompression_is_bounded_by_the_limit_not_by_the_bomb():
    deflater = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\0" * (1 << 20)
    bomb = b"".join(deflater.compress(chunk) for _ in range(64)) + deflater.flush()  # 64 MiB inflated
    tracemalloc.start()
    try:
        with pytest.raises(wire.StatusError) as err:
            wire.decompress(bomb, "gzip", 1024)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.value.code == wire.RESOURCE_EXHAUSTED and peak < 1 << 20


def test_deflate_request_is_read(grpc_server, pb):
    payload = pb[0].Msg(text="deflated").SerializeToString()
    res = call(grpc_server, "/rrtest.Echo/Unary", wire.frame(zlib.compress(payload), compressed=True),
               [*GRPC, ("grpc-encoding", "deflate")])
    assert status_of(res) == ("0", None) and b"echo:deflated" in res.body


def test_unsupported_encoding_is_unimplemented_and_says_what_is(grpc_server, pb):
    res = call(grpc_server, "/rrtest.Echo/Unary", msg(pb, text="x"), [*GRPC, ("grpc-encoding", "snappy")])
    assert res.header("grpc-status") == "12" and res.header("grpc-accept-encoding") == "identity,deflate,gzip"


def test_compressed_flag_without_encoding_is_internal(grpc_server, pb):
    res = call(grpc_server, "/rrtest.Echo/Unary", wire.frame(gzip.compress(b"x"), compressed=True))
    assert status_of(res)[0] == "13"


@pytest.mark.parametrize("body, why", [
    (b"", "got none"),
    (wire.frame(b"") + wire.frame(b""), "got more"),
    (wire.PREFIX.pack(0, 10) + b"abc", "inside a message"),
    (b"\0\0", "inside a message prefix"),
    (wire.PREFIX.pack(2, 0), "compressed-flag"),
])
def test_malformed_unary_request_is_internal(grpc_server, body, why):
    code, details = status_of(call(grpc_server, "/rrtest.Echo/Unary", body))
    assert code == "13" and why in details


def test_malformed_grpc_timeout_is_internal(grpc_server, pb):
    res = call(grpc_server, "/rrtest.Echo/Unary", msg(pb, text="x"), [*GRPC, ("grpc-timeout", "123456789S")])
    assert status_of(res)[0] == "13"


def test_bad_binary_metadata_is_internal(grpc_server, pb):
    res = call(grpc_server, "/rrtest.Echo/Unary", msg(pb, text="x"), [*GRPC, ("x-bad-bin", "!!!")])
    assert status_of(res)[0] == "13"


def test_http_level_failures_get_http_statuses(grpc_server, pb):
    wrong_type = call(grpc_server, "/rrtest.Echo/Unary", msg(pb, text="x"), [("content-type", "application/json")])
    assert wrong_type.status == 415
    get = call(grpc_server, "/rrtest.Echo/Unary", b"", [*GRPC], method="GET")
    assert get.status == 405 and get.header("allow") == "POST"
    unknown = call(grpc_server, "/nope.Svc/Call", msg(pb, text="x"))
    assert unknown.status == 200 and unknown.header("grpc-status") == "12"
    not_grpc = call(grpc_server, "/index.html", b"", [], method="GET")
    assert not_grpc.status == 404


def test_grpc_over_http1_is_505(serve, pb, probe):
    pb2, pb2_grpc = pb
    server = rr_grpc.Server()
    pb2_grpc.add_EchoServicer_to_server(servicer(pb2, pb2_grpc, probe), server)
    srv = serve(server, protocols=["http1"])
    body = msg(pb, text="x")
    head = (b"POST /rrtest.Echo/Unary HTTP/1.1\r\nhost: x\r\ncontent-type: application/grpc\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
    assert srv.exchange(head + body).startswith(b"HTTP/1.1 505")


def test_bad_server_options_fail_at_construction():
    with pytest.raises(ValueError, match="max_receive_message_length"):
        rr_grpc.Server(max_receive_message_length=-1)
    with pytest.raises(ValueError, match="max_send_message_length"):
        rr_grpc.Server(max_send_message_length="big")
    with pytest.raises(ValueError, match="compression"):
        rr_grpc.Server(compression="brotli")


def test_registration_after_routes_is_refused(pb, probe):
    pb2, pb2_grpc = pb
    server = rr_grpc.Server()
    server.routes()
    with pytest.raises(RuntimeError, match="routes"):
        pb2_grpc.add_EchoServicer_to_server(servicer(pb2, pb2_grpc, probe), server)


# -- the pure wire module ------------------------------------------------------


@pytest.mark.parametrize("value, seconds", [("1S", 1.0), ("250m", 0.25), ("2M", 120.0), ("1H", 3600.0),
                                            ("99999999u", 99.999999), ("5n", 5e-9)])
def test_parse_timeout(value, seconds):
    assert wire.parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "S", "1", "123456789S", "1s", "-1S", "1.5S", "١S", " 1S"])
def test_parse_timeout_rejects_what_the_grammar_does_not_allow(value):
    with pytest.raises(ValueError):
        wire.parse_timeout(value)


def test_metadata_encoding_rules():
    assert wire.encode_metadata([("a-bin", b"\xff\xfe\xfd\xfc"), ("k", "v v")]) == [("a-bin", "//79/A"), ("k", "v v")]
    for bad in [("Upper", "v"), ("grpc-status", "0"), (":path", "/"), ("k", "line\nbreak"), ("k", "ü"), ("k", b"x")]:
        with pytest.raises(ValueError):
            wire.encode_metadata([bad])


def test_binary_metadata_decodes_padded_unpadded_and_comma_joined():
    fields = [("a-bin", "//79/A"), ("b-bin", "//79/A=="), ("c-bin", "AA,AQ=="), ("te", "trailers"), ("k", "v")]
    assert wire.decode_metadata(fields) == (
        ("a-bin", b"\xff\xfe\xfd\xfc"), ("b-bin", b"\xff\xfe\xfd\xfc"), ("c-bin", b"\x00"), ("c-bin", b"\x01"),
        ("k", "v"))


@given(st.lists(st.binary(max_size=300), max_size=8), st.integers(min_value=1, max_value=50))
def test_reader_gives_the_same_messages_whatever_the_read_sizes(messages, step):
    body = b"".join(wire.frame(m) for m in messages)
    chunks = [body[i:i + step] for i in range(0, len(body), step)]

    def read(n: int) -> bytes:
        return chunks.pop(0) if chunks else b""

    reader = wire.MessageReader(read, 1024, None)
    out = []
    while (m := reader.next()) is not None:
        out.append(m)
    assert out == messages
