"""Helpers for the edge-middleware unit tests: a Request without a socket, and a stub handler."""

from __future__ import annotations

from typing import Any

from rr import resp
from rr.request import Headers, Request


def request(method: str = "GET", path: str = "/", headers: list[tuple[str, str]] | None = None, *,
            scheme: str = "http", peer: tuple[str, int] | None = ("192.0.2.1", 40000)) -> Request:
    return Request(method, path, path, "", "HTTP/1.1", Headers(list(headers or [])), scheme=scheme, peer=peer)


def call(mw: Any, req: Request, result: Any) -> tuple[Any, bool]:
    """``mw`` around a handler that returns ``result``: (its answer, whether the handler ran)."""
    calls: list[Request] = []

    def handler(r: Request) -> Any:
        calls.append(r)
        return result

    return mw(req, handler, None), bool(calls)


def run(mw: Any, req: Request, result: Any) -> Any:
    return call(mw, req, result)[0]


def headers(result: resp.Shape) -> dict[str, str]:
    assert not isinstance(result, resp.WebSocket)
    return dict(result.headers)


def collect_stream(stream: resp.Stream) -> list[tuple[bytes, bool, Any]]:
    sent: list[tuple[bytes, bool, Any]] = []

    def send(data: bytes = b"", fin: bool = False, trailers: Any = None) -> None:
        sent.append((data, fin, trailers))

    stream.fn(send)
    return sent
