"""Response compression middleware: gzip, deflate, brotli and zstd, negotiated by ``Accept-Encoding``.

``compress.middleware(**options)`` returns a middleware; put it in a route's or
the listener's ``middlewares``. It works on the response shapes, so h1, h2 and
h3 behave the same.

What it owns: choosing a content coding (RFC 9110 §12.5.3), encoding a
``Response`` body in one go and a ``Stream``/``Loop`` chunk by chunk with a
flush after each chunk (so Server-Sent Events and other live streams still
arrive as they are sent), and the header edits that go with it:
``content-encoding`` set, ``content-length`` dropped (the protocol frames the
new body), ``vary: accept-encoding`` merged into any ``vary`` the handler set,
a strong ``etag`` made weak (RFC 9110 §8.8.3: a strong validator changes with
the content coding; weak comparison still matches, so ``If-None-Match`` keeps
working).

What it must never do: decompress anything — request bodies are passed to
the handler exactly as they came, so there is no decompression bomb to guard
against here — or touch a response whose meaning compression would change:

- ``HEAD`` (nothing to encode), ``204``/``304``/``1xx`` (no content; a 304 gets
  the ``vary`` its 200 would have had);
- ``206`` or any ``content-range`` (a range is of the coded bytes, RFC 9110 §14.1.2);
- a response that already has a ``content-encoding``;
- ``cache-control: no-transform`` (RFC 9111 §5.2.2.6);
- a content type outside ``content_types``, a ``Response`` body smaller than
  ``min_size`` (unless the client refused ``identity``), ``Sendfile`` (serve
  precompressed siblings with ``rr.contrib.static``) and ``WebSocket``.

Negotiation: a coding's weight is its own ``q``, else the ``*`` entry's, else 0
(an unlisted coding is not acceptable once the header exists); ``identity``'s
is its own, else ``*``'s. The best-weighted available coding wins (ties go to
the order of ``encodings``) when its weight is above 0 and, if the client
weighed ``identity`` (or ``*``), not below identity's — ``gzip;q=0.8`` alone
still gets gzip, ``gzip;q=0.5, identity`` does not. With no acceptable coding the body is sent as it is, even
when ``identity;q=0`` refuses it: RFC 9110 §12.5.3 lets a server disregard the
header rather than answer 406, and every client can read identity.

A hostile ``Accept-Encoding`` costs bounded work: only its first
``MAX_CODINGS`` list members are read.

Brotli comes from ``brotli`` (or ``brotlicffi``) and zstd from ``zstandard``
(the ``brotli``/``zstd`` extras); when a package is absent its coding is
simply not offered (``available()`` says which are). gzip and deflate use
``zlib-ng`` (the ``speed`` extra) when it is installed — the same formats and
levels, about twice as fast as the C library behind the standard ``zlib``
module at level 6 — and the standard ``zlib`` module otherwise (``ZLIB`` names
the one in use).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from rr import response as resp
from rr.contrib import _fields

__all__ = ["DEFAULT_CONTENT_TYPES", "MAX_CODINGS", "ZLIB", "Compress", "available", "middleware", "negotiate"]


def _optional(*names: str) -> Any:
    """The first of ``names`` that imports, else ``None`` (an optional extra not installed)."""
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


# Google's binding first, then the CFFI one (PyPy); both are "br" on the wire.
_brotli = _optional("brotli", "brotlicffi")
_zstd = _optional("zstandard")
# zlib-ng's binding mirrors the standard module (compressobj, compress, Z_SYNC_FLUSH, wbits).
_zlib = _optional("zlib_ng.zlib_ng", "zlib")
ZLIB = "zlib-ng" if _zlib.__name__ != "zlib" else "zlib"

# A client lists a handful of codings; 32 leaves room for parameters and noise while a
# 100 KB header of commas costs no more than its first 32 members.
MAX_CODINGS = 32

DEFAULT_CONTENT_TYPES = (
    "text/*", "application/json", "application/*+json", "application/javascript",
    "application/xml", "application/*+xml", "application/x-ndjson", "image/svg+xml",
)  # fmt: skip

_ALL_CODINGS = ("br", "zstd", "gzip", "deflate")
_NO_BODY_STATUS = frozenset({204, 304})
_LENGTH_FIELDS = frozenset({"content-length"})


def available() -> tuple[str, ...]:
    """The codings this process can produce (gzip and deflate always; br and zstd with their package)."""
    return tuple(c for c in _ALL_CODINGS if (c != "br" or _brotli) and (c != "zstd" or _zstd))


# -- negotiation -----------------------------------------------------------------


def _weights(header: str) -> dict[str, float]:
    """``{coding: q}`` from the first MAX_CODINGS members; malformed members are skipped."""
    weights: dict[str, float] = {}
    for member in header.split(",", MAX_CODINGS)[:MAX_CODINGS]:
        coding, _, params = member.partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        q = 1.0
        if params:
            name, _, value = params.partition("=")
            if name.strip().lower() != "q":
                continue
            try:
                q = float(value.strip()[:5])  # RFC 9110 §12.4.2: qvalue is at most "1.000"
            except ValueError:
                continue
            if not 0.0 <= q <= 1.0:
                continue
        if coding == "x-gzip":  # RFC 9110 §8.4.1.3: a recipient SHOULD treat it as gzip
            coding = "gzip"
        weights.setdefault(coding, q)
    return weights


def negotiate(header: str | None, offered: Iterable[str]) -> tuple[str | None, bool]:
    """(the coding to use or ``None``, whether ``identity`` was refused) for an ``Accept-Encoding``.

    No header: ``(None, False)`` — RFC 9110 allows any coding then, but a client
    that sent none most likely decodes none.
    """
    if header is None:
        return None, False
    weights = _weights(header)
    star = weights.get("*")
    identity_q = weights.get("identity", star)  # None: not listed, so it does not compete
    best, best_q = None, 0.0
    for coding in offered:
        q = weights.get(coding, star if star is not None else 0.0)
        if q > best_q:
            best, best_q = coding, q
    refused = identity_q == 0.0
    if best is None or (identity_q is not None and best_q < identity_q):
        return None, refused
    return best, refused


# -- encoders --------------------------------------------------------------------


class _Encoder:
    """One coding's streaming encoder: ``chunk`` (compress + flush) and ``finish``."""

    __slots__ = ("_compress", "_flush", "_finish")

    def __init__(self, compress: Callable[[bytes], bytes], flush: Callable[[], bytes],
                 finish: Callable[[], bytes]) -> None:
        self._compress = compress
        self._flush = flush
        self._finish = finish

    def chunk(self, data: bytes) -> bytes:
        return self._compress(data) + self._flush()

    def finish(self, data: bytes = b"") -> bytes:
        return (self._compress(data) if data else b"") + self._finish()


def _zlib_encoder(level: int, wbits: int) -> _Encoder:
    obj = _zlib.compressobj(level, _zlib.DEFLATED, wbits)
    return _Encoder(obj.compress, lambda: obj.flush(_zlib.Z_SYNC_FLUSH), obj.flush)


def _brotli_encoder(quality: int) -> _Encoder:
    assert _brotli is not None
    obj = _brotli.Compressor(quality=quality)
    process = getattr(obj, "process", None) or obj.compress
    return _Encoder(process, obj.flush, obj.finish)


def _zstd_encoder(level: int) -> _Encoder:
    assert _zstd is not None
    obj = _zstd.ZstdCompressor(level=level).compressobj()
    return _Encoder(obj.compress, lambda: obj.flush(_zstd.COMPRESSOBJ_FLUSH_BLOCK), obj.flush)


# -- content types ---------------------------------------------------------------


def _media_type(value: str | None) -> str | None:
    if value is None:
        return None
    return value.partition(";")[0].strip().lower() or None


def _check_pattern(pattern: object) -> tuple[str, str]:
    if not isinstance(pattern, str):
        raise ValueError(f"invalid option 'content_types': {pattern!r} is not a str")
    kind, slash, sub = pattern.lower().partition("/")
    if not slash or not kind or not sub or (kind == "*" and sub != "*"):
        raise ValueError(f"invalid option 'content_types': {pattern!r} is not type/subtype, type/* or type/*+suffix")
    for part in (kind, sub.replace("*+", "", 1) if sub.startswith("*+") else sub):
        if part != "*":
            _fields.check_token("content_types", part)
    return kind, sub


def _type_matches(media_type: str, patterns: tuple[tuple[str, str], ...]) -> bool:
    kind, _, sub = media_type.partition("/")
    for p_kind, p_sub in patterns:
        if p_kind != "*" and p_kind != kind:
            continue
        if p_sub == "*" or p_sub == sub or (p_sub.startswith("*+") and sub.endswith(p_sub[1:])):
            return True
    return False


# -- the middleware --------------------------------------------------------------


def _check_level(option: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"invalid option {option!r}: an int from {low} to {high}, got {value!r}")
    return value


class Compress:
    """The middleware ``compress.middleware`` builds; call it as ``mw(req, next, state)``."""

    def __init__(
        self,
        *,
        encodings: Iterable[str] = _ALL_CODINGS,
        min_size: int = 500,
        content_types: Iterable[str] = DEFAULT_CONTENT_TYPES,
        gzip_level: int = 6,
        deflate_level: int = 6,
        brotli_quality: int = 4,
        zstd_level: int = 3,
    ) -> None:
        wanted = _fields.check_tokens("encodings", encodings)
        for coding in wanted:
            if coding not in _ALL_CODINGS:
                raise ValueError(f"invalid option 'encodings': {coding!r} is not one of {_ALL_CODINGS}")
        have = available()
        self.encodings = tuple(c for c in dict.fromkeys(wanted) if c in have)
        if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0:
            raise ValueError(f"invalid option 'min_size': a non-negative int of bytes, got {min_size!r}")
        self.min_size = min_size
        if isinstance(content_types, str):
            raise ValueError("invalid option 'content_types': a list of media-type patterns, got a str")
        self.content_types = tuple(_check_pattern(p) for p in content_types)
        gzip_level = _check_level("gzip_level", gzip_level, 1, 9)
        deflate_level = _check_level("deflate_level", deflate_level, 1, 9)
        brotli_quality = _check_level("brotli_quality", brotli_quality, 0, 11)
        zstd_level = _check_level("zstd_level", zstd_level, 1, 22)
        self._encoders: dict[str, Callable[[], _Encoder]] = {
            "gzip": lambda: _zlib_encoder(gzip_level, 31),  # wbits 16+15: the gzip wrapper, mtime 0
            "deflate": lambda: _zlib_encoder(deflate_level, 15),  # RFC 9110 §8.4.1.2: zlib-wrapped
            "br": lambda: _brotli_encoder(brotli_quality),
            "zstd": lambda: _zstd_encoder(zstd_level),
        }
        # A buffered body is coded in one call. The zstd context is reused: making one costs
        # more than coding a small body, and a call never yields, so no two greenlets share it.
        zstd_context = _zstd.ZstdCompressor(level=zstd_level) if _zstd is not None else None
        self._one_shot: dict[str, Callable[[bytes], bytes]] = {
            "gzip": lambda body: _zlib.compress(body, gzip_level, 31),
            "deflate": lambda body: _zlib.compress(body, deflate_level, 15),
            "br": lambda body: _brotli.compress(body, quality=brotli_quality),
            "zstd": lambda body: zstd_context.compress(body),  # type: ignore[union-attr]
        }

    def __call__(self, req: Any, nxt: Callable[[Any], Any], state: Any = None) -> Any:
        result = nxt(req)
        if not isinstance(result, (resp.Response, resp.Stream, resp.Loop)):
            return result
        headers = _fields.headers_of(result)
        if result.status == 304:
            return self._not_modified(result, headers)
        if not self._eligible(result, headers):
            return result
        headers = _fields.merge_vary(headers, "accept-encoding")
        coding, identity_refused = negotiate(req.headers.get("accept-encoding"), self.encodings)
        too_small = isinstance(result, resp.Response) and len(result.body) < self.min_size
        if coding is None or req.method == "HEAD" or (too_small and not identity_refused):
            return replace(result, headers=headers)
        headers = _coded_headers(headers, coding)
        if isinstance(result, resp.Response):
            return resp.Response(result.status, headers, self._one_shot[coding](result.body))
        make = self._encoders[coding]
        if isinstance(result, resp.Stream):
            return resp.Stream(result.status, headers, _CodedStream(result.fn, make))
        return resp.Loop(result.status, headers, (None, result.state), _CodedLoop(result.on_info, make))

    def _not_modified(self, result: Any, headers: list[tuple[str, str]]) -> Any:
        """A 304 repeats the ``vary`` its 200 would carry (RFC 9110 §15.4.5); that 200 is not
        here to ask, so ``accept-encoding`` is merged unless the 304 names a type never coded."""
        media_type = _media_type(resp.get_header(result, "content-type"))
        if media_type is not None and not _type_matches(media_type, self.content_types):
            return result
        merged = _fields.merge_vary(headers, "accept-encoding")
        return result if merged is headers else replace(result, headers=merged)

    def _eligible(self, result: resp.Response | resp.Stream | resp.Loop, headers: list[tuple[str, str]]) -> bool:
        """Whether the response may be coded at all (the answer does not depend on the request)."""
        status = result.status
        if status < 200 or status in _NO_BODY_STATUS or status == 206:
            return False
        if isinstance(result, resp.Response) and not result.body:
            return False
        content_type = None
        for name, value in headers:
            if name in ("content-encoding", "content-range"):
                return False
            if name == "cache-control" and "no-transform" in _fields.list_members(value):
                return False
            if name == "content-type":
                content_type = value
        media_type = _media_type(content_type)
        if media_type is None or not _type_matches(media_type, self.content_types):
            return False
        if isinstance(result, resp.Response):
            return True
        declared = resp.get_header(result, "content-length")
        return not (declared is not None and declared.isdigit() and int(declared) < self.min_size)


def _coded_headers(headers: list[tuple[str, str]], coding: str) -> list[tuple[str, str]]:
    out = []
    for name, value in headers:
        if name in _LENGTH_FIELDS:
            continue
        if name == "etag" and not value.startswith("W/"):
            value = "W/" + value
        out.append((name, value))
    out.append(("content-encoding", coding))
    return out


class _CodedStream:
    """A ``Stream`` fn that codes each ``send`` and flushes it, so every chunk leaves at once."""

    __slots__ = ("fn", "make")

    def __init__(self, fn: Callable[[Callable[..., None]], None], make: Callable[[], _Encoder]) -> None:
        self.fn = fn
        self.make = make

    def __call__(self, send: Callable[..., None]) -> None:
        encoder = self.make()
        done = False

        def coded_send(data: bytes = b"", fin: bool = False, trailers: Any = None) -> None:
            nonlocal done
            if done:
                raise RuntimeError("send() after fin")
            if fin:
                done = True
                send(encoder.finish(data), True, trailers)
            elif data:
                send(encoder.chunk(data))
            else:
                send(b"")  # the handler asks for the head to go out now

        self.fn(coded_send)
        if not done:
            send(encoder.finish(), True)


class _CodedLoop:
    """A ``Loop`` on_info that codes each push; the end of the coded stream goes out on ``STOP``.

    The loop's state is ``(encoder, handler_state)``: the encoder is made on the
    first message, inside the process that runs the loop.
    """

    __slots__ = ("on_info", "make")

    def __init__(self, on_info: Callable[[Any, Callable[[bytes], None], Any], Any],
                 make: Callable[[], _Encoder]) -> None:
        self.on_info = on_info
        self.make = make

    def __call__(self, msg: Any, push: Callable[[bytes], None], state: tuple[Any, Any]) -> Any:
        encoder, inner = state
        if encoder is None:
            encoder = self.make()

        def coded_push(chunk: bytes) -> None:
            if chunk:
                push(encoder.chunk(chunk))

        inner = self.on_info(msg, coded_push, inner)
        if inner is resp.STOP:
            if not (isinstance(msg, tuple) and msg[:1] == (resp.CLOSED,)):
                push(encoder.finish())
            return resp.STOP
        return (encoder, inner)


def middleware(**options: Any) -> Compress:
    """A compression middleware; every option is checked now (``ValueError`` names a bad one).

    Options: ``encodings`` (server preference, default br, zstd, gzip, deflate —
    those whose package is missing are dropped), ``min_size`` (bytes, default
    500), ``content_types`` (patterns ``type/sub``, ``type/*``, ``type/*+suffix``),
    ``gzip_level``/``deflate_level`` (1-9, default 6), ``brotli_quality`` (0-11,
    default 4), ``zstd_level`` (1-22, default 3).
    """
    return Compress(**options)
