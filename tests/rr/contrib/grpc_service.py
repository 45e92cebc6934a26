"""The test service for tests/rr/contrib/test_grpc*.py: modules generated at test time, a servicer
whose behaviour the request's ``text`` selects, and a probe of what the server side saw."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import gevent
import gevent.event
import grpc

from rr.contrib.grpc import codegen

PROTO = Path(__file__).parent / "protos" / "rrtest.proto"
_modules: tuple[ModuleType, ModuleType] | None = None


def modules(out_dir: Path) -> tuple[ModuleType, ModuleType]:
    """rrtest_pb2 and rrtest_pb2_grpc, generated once per test process."""
    global _modules
    if _modules is None:
        _modules = codegen.generate(PROTO, out_dir)
    return _modules


class Probe:
    """What the servicer saw, with an event per observation so tests wait instead of sleeping."""

    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}
        self.events: dict[str, gevent.event.Event] = {}

    def put(self, key: str, value: Any) -> None:
        self.seen[key] = value
        self.event(key).set()

    def event(self, key: str) -> gevent.event.Event:
        return self.events.setdefault(key, gevent.event.Event())

    def wait(self, key: str, timeout: float = 10.0) -> Any:
        assert self.event(key).wait(timeout), f"the server never reported {key!r}"
        return self.seen[key]


def servicer(pb2: ModuleType, pb2_grpc: ModuleType, probe: Probe) -> Any:
    Msg = pb2.Msg

    class Echo(pb2_grpc.EchoServicer):
        def Unary(self, request, context):
            cmd = request.text
            if cmd == "abort":
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "nö: 100% denied")
            if cmd == "abort-with-status":
                context.abort_with_status(_Status(grpc.StatusCode.FAILED_PRECONDITION, "not yet",
                                                  (("x-why-bin", b"\x00\xff"),)))
            if cmd == "meta-then-abort":
                context.send_initial_metadata([("x-early", "1")])
                context.abort(grpc.StatusCode.UNAVAILABLE, "later")
            if cmd == "crash":
                raise RuntimeError("kaput")
            if cmd == "not-found":
                context.set_code(grpc.StatusCode.NOT_FOUND)
                context.set_details("no such thing")
                return Msg()
            if cmd == "meta":
                md = dict(context.invocation_metadata())
                context.send_initial_metadata([("x-initial", "hello"), ("x-initial-bin", b"\x00\x01\x02")])
                context.set_trailing_metadata([("x-echo", md["x-id"]), ("x-echo-bin", md["x-data-bin"])])
                return Msg(text=md.get("user-agent", ""))
            if cmd == "sleep":
                probe.put("remaining", context.time_remaining())
                try:
                    gevent.sleep(30)
                except BaseException as exc:
                    probe.put("sleep", (type(exc).__name__, context.is_active(), context.time_remaining()))
                    raise
            if cmd == "peer":
                return Msg(text=context.peer())
            if cmd == "big":
                return Msg(blob=b"x" * request.number)
            if cmd == "gzip":
                context.set_compression(grpc.Compression.Gzip)
            return Msg(text="echo:" + cmd, number=request.number, blob=request.blob)

        def ServerStream(self, request, context):
            if request.text in ("forever", "firehose"):
                # forever: pauses between messages (a cancel lands in its sleep);
                # firehose: never pauses (a cancel lands in rr's send, the servicer at a yield).
                context.add_callback(lambda: probe.put("callback", context.is_active()))
                i = 0
                try:
                    while True:
                        yield Msg(number=i, blob=request.blob)
                        i += 1
                        if request.text == "forever":
                            gevent.sleep(0.005)
                except BaseException as exc:
                    probe.put("stream", type(exc).__name__)
                    raise
            for i in range(request.number):
                if request.text == "fail-midway" and i == 2:
                    context.abort(grpc.StatusCode.DATA_LOSS, "lost it")
                if request.text == "server-cancel" and i == 2:
                    probe.put("active_before_cancel", context.is_active())
                    context.cancel()
                    probe.put("active_after_cancel", context.is_active())
                yield Msg(text=request.text, number=i, blob=request.blob)

        def ClientStream(self, request_iterator, context):
            total, texts = 0, []
            for r in request_iterator:
                total += r.number
                texts.append(r.text)
            return Msg(number=total, text=",".join(texts))

        def Bidi(self, request_iterator, context):
            try:
                for r in request_iterator:
                    if r.text == "stop":
                        context.abort(grpc.StatusCode.ABORTED, "stopped")
                    yield Msg(text="pong:" + r.text, number=r.number)
            except BaseException as exc:
                probe.put("bidi", type(exc).__name__)
                raise

    return Echo()


class _Status(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: Any) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata
