"""Static files from a directory, served with ``Sendfile``.

``static.handler(root, **options)`` returns a handler for a wildcard route
(``("/assets/*path", static.handler("public"))``); the file is the ``path``
binding (or the request path when there is no binding) under ``root``.

What it does, by RFC:

- validators (RFC 9110 §8.8): a strong ``ETag`` from the file's inode, size
  and mtime, and ``Last-Modified``; ``If-None-Match`` (weak comparison, §13.1.2)
  and, only without it, ``If-Modified-Since`` (§13.1.3) → 304, which carries
  only ``ETag``, ``Vary`` and ``Cache-Control`` (§15.4.5: no representation
  metadata such as ``Content-Type``/``Content-Encoding``; ``Last-Modified`` is
  redundant beside an ``ETag``);
- ranges (RFC 9110 §14): a single ``Range`` → 206 with ``Content-Range``;
  several → 206 ``multipart/byteranges`` (``Content-Range`` in each part, none
  in the header section, §15.3.7.2); unsatisfiable (including an open-ended
  ``bytes=N-`` with N past the end, §14.1.1) → 416 with
  ``Content-Range: bytes */size``; ``If-Range`` (§13.1.5) with an ETag or a date;
  too many or overlapping-heavy range sets are served whole (RFC 9110 §14.2
  lets a server ignore Range);
- ``HEAD`` answers the same headers without a body (the conn layer);
- content types from the extension, ``index.html`` for directories,
  ``cache_control`` as an option;
- precompressed siblings (``file.br``, ``file.gz``) chosen by
  ``Accept-Encoding`` q-values (RFC 9110 §12.5.3), with ``vary: accept-encoding``
  on every response of a file that has them.

What it must never do: serve anything outside ``root``. The path is decoded
once, then refused when it contains NUL, a backslash, a ``..`` or ``.``
segment, or is absolute; the resolved real path (symlinks followed) must stay
inside the real root, so a symlink pointing out is refused too.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import stat
from collections.abc import Callable
from email.utils import formatdate, parsedate_to_datetime
from typing import Any
from urllib.parse import unquote

from rr import response as resp

MAX_RANGES = 16
# RFC 9110 §15.4.5: a 304 sends the fields a 200 would have for cache update
# (ETag, Vary, Cache-Control; Date comes from the conn layer) and SHOULD NOT
# send other representation metadata (Content-Type, Content-Encoding, and
# Last-Modified when an ETag is present).
_304_FIELDS = frozenset(("etag", "vary", "cache-control"))
_ENCODINGS = (("br", ".br"), ("gzip", ".gz"))


def _forbidden() -> resp.Response:
    return resp.text(403, "Forbidden")


def _not_found() -> resp.Response:
    return resp.text(404, "Not Found")


def safe_join(root: str, rel: str) -> str | None:
    """The real path of ``rel`` under the real ``root``, or None if it escapes or is unsafe."""
    if "\0" in rel or "\\" in rel or rel.startswith("/"):
        return None
    parts = rel.split("/")
    if any(p in ("..", ".") for p in parts):
        return None
    real_root = os.path.realpath(root)
    candidate = os.path.realpath(os.path.join(real_root, *[p for p in parts if p]))
    if candidate != real_root and not candidate.startswith(real_root + os.sep):
        return None
    return candidate


def _etag(st: os.stat_result) -> str:
    digest = hashlib.blake2b(f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}".encode(), digest_size=8)
    return f'"{digest.hexdigest()}"'


def _accepted_encodings(header: str | None) -> list[str]:
    """Content codings the client accepts, best first (q=0 excluded)."""
    if not header:
        return []
    ranked = []
    for i, item in enumerate(header.split(",")):
        token, _, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0 and token:
            ranked.append((-q, i, token.strip().lower()))
    ranked.sort()
    return [t for _, _, t in ranked]


def _etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    weak_self = etag.removeprefix("W/")
    return any(candidate.strip().removeprefix("W/") == weak_self for candidate in header.split(","))


def _not_modified_since(header: str, mtime: float) -> bool:
    try:
        since = parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
    return int(mtime) <= since


def parse_range(header: str, size: int) -> list[tuple[int, int]] | None:
    """Byte ranges as (start, end-inclusive) for a ``bytes=`` header.

    Returns None when the header is not a valid bytes range set (ignore it),
    and [] when it is valid but nothing is satisfiable (416).
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not spec.strip():
        return None
    ranges = []
    for part in spec.split(","):
        part = part.strip()
        first, dash, last = part.partition("-")
        if not dash:
            return None
        if first == "":
            if not last.isdigit():
                return None
            n = int(last)
            if n == 0:
                continue
            ranges.append((max(0, size - n), size - 1))
        else:
            if not first.isdigit() or (last and not last.isdigit()):
                return None
            start = int(first)
            # RFC 9110 §14.1.1: invalid only if last-pos is present and below first-pos;
            # an open-ended ``N-`` with N >= size is valid but unsatisfiable (416).
            if last and int(last) < start:
                return None
            end = int(last) if last else size - 1
            if start >= size:
                continue
            ranges.append((start, min(end, size - 1)))
    return ranges


def handler(
    root: str,
    *,
    index: str = "index.html",
    cache_control: str | None = None,
    precompressed: bool = True,
    binding: str = "path",
) -> Callable[[Any], resp.Shape]:
    """A handler serving files under ``root`` (see the module docstring)."""
    if not os.path.isdir(root):
        raise ValueError(f"static root {root!r} is not a directory")

    def serve(req: Any) -> resp.Shape:
        if req.method not in ("GET", "HEAD"):
            return resp.text(405, "Method Not Allowed", [("allow", "GET, HEAD")])
        raw = req.bindings.get(binding) if req.bindings else None
        rel = unquote(raw if raw is not None else req.path.lstrip("/"), errors="replace")
        path = safe_join(root, rel)
        if path is None:
            return _forbidden()
        try:
            st = os.stat(path)
        except OSError:
            return _not_found()
        if stat.S_ISDIR(st.st_mode):
            path = os.path.join(path, index)
            try:
                st = os.stat(path)
            except OSError:
                return _not_found()
        if not stat.S_ISREG(st.st_mode):
            return _not_found()
        return _serve_file(req, path, st, cache_control, precompressed)

    return serve


def _serve_file(req: Any, path: str, st: os.stat_result, cache_control: str | None,
                precompressed: bool) -> resp.Shape:
    ctype = mimetypes.guess_type(path)[0] or "application/octet-stream"
    if ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
        ctype += "; charset=utf-8"
    headers: list[tuple[str, str]] = [("content-type", ctype)]
    variants = [(coding, path + ext) for coding, ext in _ENCODINGS if precompressed and os.path.isfile(path + ext)]
    if variants:
        headers.append(("vary", "accept-encoding"))
        accepted = _accepted_encodings(req.header("accept-encoding"))
        available = dict(variants)
        for coding in accepted:
            if coding in available:
                path = available[coding]
                st = os.stat(path)
                headers.append(("content-encoding", coding))
                break
    etag = _etag(st)
    headers += [("etag", etag), ("last-modified", formatdate(st.st_mtime, usegmt=True)),
                ("accept-ranges", "bytes")]
    if cache_control:
        headers.append(("cache-control", cache_control))

    inm = req.header("if-none-match")
    if inm is not None:
        if _etag_matches(inm, etag):
            return _not_modified(headers)
    else:
        ims = req.header("if-modified-since")
        if ims is not None and _not_modified_since(ims, st.st_mtime):
            return _not_modified(headers)

    size = st.st_size
    range_header = req.header("range")
    if range_header is not None and _if_range_allows(req.header("if-range"), etag, st.st_mtime):
        ranges = parse_range(range_header, size)
        if ranges is not None and len(ranges) <= MAX_RANGES:
            if not ranges:
                return resp.Response(416, [*headers, ("content-range", f"bytes */{size}")], b"")
            if len(ranges) == 1:
                start, end = ranges[0]
                return resp.Sendfile(206, [*headers, ("content-range", f"bytes {start}-{end}/{size}")],
                                     path, start, end - start + 1)
            return _multipart_ranges(path, ranges, size, headers)
    return resp.Sendfile(200, headers, path, 0, size)


def _not_modified(headers: list[tuple[str, str]]) -> resp.Response:
    """304 with only the cache-update fields (RFC 9110 §15.4.5, see ``_304_FIELDS``)."""
    return resp.Response(304, [h for h in headers if h[0] in _304_FIELDS], b"")


def _if_range_allows(if_range: str | None, etag: str, mtime: float) -> bool:
    """RFC 9110 §13.1.5: serve the range only if the validator still matches."""
    if if_range is None:
        return True
    if_range = if_range.strip()
    if if_range.startswith('"'):
        return if_range == etag  # strong comparison
    if if_range.startswith("W/"):
        return False
    try:
        return parsedate_to_datetime(if_range).timestamp() == int(mtime)
    except (TypeError, ValueError, IndexError, OverflowError):
        return False


def _multipart_ranges(path: str, ranges: list[tuple[int, int]], size: int,
                      headers: list[tuple[str, str]]) -> resp.Shape:
    boundary = hashlib.blake2b(os.urandom(16), digest_size=12).hexdigest()
    ctype = dict(headers)["content-type"]
    part_heads = [
        (f"--{boundary}\r\ncontent-type: {ctype}\r\ncontent-range: bytes {s}-{e}/{size}\r\n\r\n").encode()
        for s, e in ranges
    ]
    tail = f"--{boundary}--\r\n".encode()
    length = sum(len(h) + (e - s + 1) + 2 for h, (s, e) in zip(part_heads, ranges, strict=True)) + len(tail)
    out_headers = [(k, v) for k, v in headers if k != "content-type"]
    out_headers += [("content-type", f"multipart/byteranges; boundary={boundary}"),
                    ("content-length", str(length))]

    def produce(send: Callable[..., None]) -> None:
        with open(path, "rb") as f:
            for head, (start, end) in zip(part_heads, ranges, strict=True):
                send(head)
                f.seek(start)
                left = end - start + 1
                while left > 0:
                    chunk = f.read(min(65536, left))
                    if not chunk:
                        raise OSError("file shrank while serving ranges")
                    send(chunk)
                    left -= len(chunk)
                send(b"\r\n")
        send(tail, fin=True)

    return resp.Stream(206, out_headers, produce)
