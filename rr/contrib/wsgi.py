"""WSGI (PEP 3333) applications as rr handlers: Flask, Django, any ``app(environ, start_response)``.

``wsgi.handler(app, script_name="")`` returns an rr handler. It works on every
protocol rr serves, because it only speaks rr's protocol-neutral surface: it
reads the body through ``req.read_body(n)`` and answers with the response
shapes (``Response``, ``Stream``, ``Sendfile``).

What it owns: the translation both ways.

- In: the environ (PEP 3333 "environ Variables"). ``PATH_INFO`` and
  ``SCRIPT_NAME`` are the %-decoded path bytes as latin-1 text (PEP 3333
  "Unicode Issues": native strings hold bytes one to one); ``QUERY_STRING``
  stays raw. Header fields become ``HTTP_*`` keys; a field whose name holds
  ``_`` is dropped, since ``X_Forwarded_For`` and ``X-Forwarded-For`` would
  land on the same key and a client could spoof what a proxy set (nginx and
  gunicorn drop them too). Repeated fields join with ``,`` (``cookie`` with
  ``; ``: h2 clients split it into crumbs). ``HTTP_HOST`` comes from
  ``:authority`` on h2. ``REMOTE_ADDR``/``REMOTE_PORT`` are the real peer.
  Each request's environ is a new dict, copied from the handler's base of
  fixed keys: what an app does to it never reaches another request.
- ``wsgi.input`` streams the body: in ``manual`` body mode each read pulls
  from the connection (an upload is never held whole); in ``auto`` mode the
  body rr already buffered is wrapped as it is, without a copy; a request
  without a body (``Request.has_body``) gets one shared, stateless empty stream.
  ``wsgi.input_terminated`` is set, so chunked and h2 bodies without a
  ``content-length`` read to their end.
- Out: ``start_response`` (with ``exc_info`` semantics: replace the status
  while nothing is sent, re-raise once the head is out), the ``write()``
  callable, and the iterable. The head waits for the first non-empty chunk
  (PEP 3333 "Buffering and Streaming"). A body that is complete by then (an
  exhausted iterable, a one-element list, or a declared ``content-length``
  already met) is sent as one buffered ``Response``; anything else becomes a
  ``Stream`` that sends each chunk as the app yields it. ``wsgi.file_wrapper``
  over a regular file with a real descriptor becomes ``Sendfile``.
- ``close()`` of the iterable is called exactly once whatever happens: after
  the body is sent, when the client goes away mid-stream (rr's "client gone"
  exception, an h2 reset killing the stream worker), or when the app or its
  iterator raises.
- ``wsgi.errors`` text becomes ``error`` events of structlog's ``rr.wsgi``
  logger (one per write that ends a line), with the request's ``request_id``.

What it must never do: touch a socket or know the protocol, buffer a body a
``manual``-mode listener streams, or send more than a declared
``content-length`` (PEP 3333 "Handling the Content-Length Header": the
excess is cut).

Limits of the mapping, on purpose: the reason phrase of the status is not
kept (rr writes the standard one; h2 has none); header names are lowercased
here (HTTP field names are case-insensitive, and h2 requires lowercase);
``write()`` output given before the app returns is held until it returns,
since an rr handler answers by returning a shape.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from typing import Any
from urllib.parse import unquote_to_bytes

from rr import response as resp
from rr.log import get_logger
from rr.request import Request

__all__ = ["ErrorStream", "FileWrapper", "Input", "WSGIHandler", "handler"]

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_log = get_logger("rr.wsgi")

# Bytes pulled from the body per refill when a line or the whole rest is read.
READ_CHUNK = 65536
# wsgi.errors text held while waiting for the end of a line: past this it is logged anyway.
ERRORS_LINE_LIMIT = 65536
_NO_BODY_STATUS = frozenset({204, 304})
_SEQUENCES = (list, tuple)
_BYTES_LIKE = (bytes, bytearray, memoryview)
_DEFAULT_PORTS = {"http": "80", "https": "443"}
# Per-request string work done once per distinct value: field name -> environ key, and
# Host value -> (SERVER_NAME, port). Clients choose these strings, so each cache is
# emptied when it reaches _CACHE_MAX entries (a flood of new names costs what no cache would).
_CACHE_MAX = 1024
# The environ keys set for every request (WSGIHandler.environ), present in its base from the start.
_PER_REQUEST_KEYS = ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "RAW_URI", "REQUEST_URI", "SERVER_PROTOCOL",
                     "wsgi.url_scheme", "SERVER_NAME", "SERVER_PORT", "REMOTE_ADDR", "wsgi.input", "wsgi.errors",
                     "rr.request")
_SPECIAL_KEYS = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}
_ENVIRON_KEYS: dict[str, str] = dict(_SPECIAL_KEYS)
_HOSTS: dict[str, tuple[str, str | None]] = {}
# The app's side: status line -> code, and response field -> the field checked, name lowercased.
_STATUSES: dict[str, int] = {}
_FIELDS: dict[tuple[str, str], tuple[str, str]] = {}
_LENGTHS: dict[str, int] = {}  # content-length value -> its number (-1: not a number)
_FIELD_VALUE_MAX = 128


class Input:
    """``wsgi.input``: the request body read on demand, with file semantics.

    ``read(n)`` returns n bytes unless the body ends first (an app may call
    ``read(int(CONTENT_LENGTH))`` once and expect it all); ``read()`` returns
    the rest. Only what a ``readline`` looked past is held here.
    """

    __slots__ = ("_pull", "_buf", "_eof")

    def __init__(self, pull: Callable[[int], bytes]) -> None:
        self._pull = pull
        self._buf = b""
        self._eof = False

    def _fill(self, want: int) -> bool:
        if self._eof:
            return False
        chunk = self._pull(want)
        if not chunk:
            self._eof = True
            return False
        self._buf += chunk
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts = [self._buf]
            self._buf = b""
            while not self._eof:
                chunk = self._pull(READ_CHUNK)
                if not chunk:
                    self._eof = True
                parts.append(chunk)
            return b"".join(parts)
        if len(self._buf) < size:
            parts = [self._buf]
            have = len(self._buf)
            self._buf = b""
            while have < size and not self._eof:
                chunk = self._pull(size - have)
                if not chunk:
                    self._eof = True
                    break
                parts.append(chunk)
                have += len(chunk)
            self._buf = b"".join(parts)
        data, self._buf = self._buf[:size], self._buf[size:]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        limit = size if size is not None and size >= 0 else None
        start = 0
        while True:
            end = self._buf.find(b"\n", start)
            if end >= 0:
                end += 1
                break
            if limit is not None and len(self._buf) >= limit:
                end = limit
                break
            start = len(self._buf)
            if not self._fill(READ_CHUNK if limit is None else max(1, limit - len(self._buf))):
                end = len(self._buf)
                break
        if limit is not None:
            end = min(end, limit)
        line, self._buf = self._buf[:end], self._buf[end:]
        return line

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


class _EmptyInput:
    """``wsgi.input`` of a request without a body: every read is empty. Stateless, so one
    instance serves every such request (nothing an app does to it reaches the next one)."""

    __slots__ = ()

    def read(self, size: int | None = -1) -> bytes:
        return b""

    def readline(self, size: int | None = -1) -> bytes:
        return b""

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return []

    def __iter__(self) -> Iterator[bytes]:
        return iter(())

    def close(self) -> None:
        pass


_EMPTY_INPUT = _EmptyInput()


class ErrorStream:
    """``wsgi.errors``: text written here becomes ``error`` events of the ``rr.wsgi`` logger.

    Text is gathered until a write ends a line, then logged as one event: a
    traceback a framework writes in one call stays one event, and ``print``'s
    two writes (text, then newline) make one event too.
    """

    __slots__ = ("_req", "_pending")

    def __init__(self, req: Request) -> None:
        self._req = req  # its request_id is made only when something is logged
        self._pending: list[str] | None = None  # text since the last line end

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"wsgi.errors takes str, not {type(text).__name__}")
        pending = self._pending
        if pending is None:
            pending = self._pending = []
        pending.append(text)
        if text.endswith("\n") or sum(map(len, pending)) > ERRORS_LINE_LIMIT:
            self.flush()
        return len(text)

    def writelines(self, seq: Iterable[str]) -> None:
        for text in seq:
            self.write(text)

    def flush(self) -> None:
        if not self._pending:
            return
        text = "".join(self._pending).rstrip()
        self._pending = None
        if text:
            _log.error(text, source="wsgi.errors", request_id=self._req.request_id)


class FileWrapper:
    """``wsgi.file_wrapper``: iterates ``filelike`` in blocks; rr sends it with ``Sendfile`` when it can.

    rr uses ``Sendfile`` when ``filelike`` is a binary file with a real
    descriptor of a regular file whose ``name`` still names that same file
    (checked by device and inode), from its current position. Anything else
    (a ``BytesIO``, a pipe, an unlinked temporary file) is read in blocks.
    """

    __slots__ = ("filelike", "block_size")

    def __init__(self, filelike: Any, block_size: int = 8192) -> None:
        self.filelike = filelike
        self.block_size = block_size

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        while data := read(self.block_size):
            yield data

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


def _close(result: Any) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


def _split_host(host: str) -> tuple[str, str | None]:
    """``uri-host [":" port]`` → (host, port or None); IPv6 literals keep their brackets."""
    split = _HOSTS.get(host)
    if split is None:
        split = _split_host_uncached(host)
        if len(_HOSTS) >= _CACHE_MAX:
            _HOSTS.clear()
        _HOSTS[host] = split
    return split


def _split_host_uncached(host: str) -> tuple[str, str | None]:
    if host.startswith("["):
        end = host.find("]")
        if end > 0:
            rest = host[end + 1:]
            return host[:end + 1], rest[1:] if rest.startswith(":") and rest[1:] else None
        return host, None
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        return name, port
    return host, None


def _environ_key(name: str) -> str | None:
    """The environ key of request field ``name`` (a lowercase field name), remembered in
    ``_ENVIRON_KEYS``; None for a name holding ``_``, which is dropped (module docstring)."""
    if "_" in name:
        return None
    key = "HTTP_" + name.upper().replace("-", "_")
    if len(_ENVIRON_KEYS) >= _CACHE_MAX:
        _ENVIRON_KEYS.clear()
        _ENVIRON_KEYS.update(_SPECIAL_KEYS)
    _ENVIRON_KEYS[name] = key
    return key


def _listener_port(req: Request) -> str | None:
    import rr

    try:
        return str(rr.listener_port(req.listener))
    except KeyError:
        return None


def _status_code(status: Any) -> int:
    """The code of a WSGI status line (``"200 OK"`` -> 200), remembered in ``_STATUSES``."""
    if not isinstance(status, str) or len(status) < 3 or not status[:3].isdigit() \
            or status[3:4] not in ("", " ") or status[0] == "0":
        raise ValueError(f"WSGI status must look like '200 OK', got {status!r}")
    code = int(status[:3])
    if type(status) is str:
        if len(_STATUSES) >= _CACHE_MAX:
            _STATUSES.clear()
        _STATUSES[status] = code
    return code


def _content_length(value: str) -> int:
    """The app's ``content-length`` value as a number, -1 when it is not one; remembered in
    ``_LENGTHS`` (one entry per distinct value: bounded like the other caches)."""
    stripped = value.strip()
    length = int(stripped) if stripped.isascii() and stripped.isdigit() else -1
    if type(value) is str:
        if len(_LENGTHS) >= _CACHE_MAX:
            _LENGTHS.clear()
        _LENGTHS[value] = length
    return length


def _response_field(field: Any) -> tuple[str, str]:
    """A ``start_response`` header checked and its name lowercased; remembered in
    ``_FIELDS`` when its value is short (a long one is likely unique: a cookie, a token)."""
    if not (isinstance(field, tuple) and len(field) == 2
            and isinstance(field[0], str) and isinstance(field[1], str)):
        raise TypeError(f"WSGI response headers are (str, str) tuples, got {field!r}")
    name = field[0]
    lname = name.lower()
    checked = field if lname == name else (lname, field[1])
    if type(name) is str and type(field[1]) is str and len(field[1]) <= _FIELD_VALUE_MAX:
        if len(_FIELDS) >= _CACHE_MAX:
            _FIELDS.clear()
        _FIELDS[field] = checked
    return checked


class _Exchange:
    """One request's ``start_response``/``write`` state."""

    __slots__ = ("status", "headers", "declared", "written", "send", "head_sent")

    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.declared: int | None = None  # the app's content-length, when it gave a valid one
        self.written: list[bytes] | None = None  # write() output held until the app returns
        self.send: Callable[..., None] | None = None
        self.head_sent = False

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # PEP 3333: no reference cycle through the traceback
        elif self.status is not None:
            raise RuntimeError("start_response called a second time without exc_info")
        code = _STATUSES.get(status) if type(status) is str else None
        if code is None:
            code = _status_code(status)
        fields = []
        declared = None
        cache = _FIELDS
        for field in headers:
            try:
                checked = cache[field]
            except (KeyError, TypeError):  # not seen yet, or not hashable (then not a pair of str)
                checked = _response_field(field)
            fields.append(checked)
            if checked[0] == "content-length" and declared is None:
                declared = _LENGTHS.get(checked[1])
                if declared is None:
                    declared = _content_length(checked[1])
        self.status = code
        self.headers = fields
        self.declared = declared if declared is None or declared >= 0 else None
        return self.write

    def write(self, data: bytes) -> None:
        if not isinstance(data, _BYTES_LIKE):
            raise TypeError(f"write() takes bytes, not {type(data).__name__}")
        if self.status is None:
            raise RuntimeError("write() before start_response")
        if not data:
            return
        self.head_sent = True
        if self.send is not None:
            self.send(bytes(data))
        elif self.written is not None:
            self.written.append(bytes(data))
        else:
            self.written = [bytes(data)]


class WSGIHandler:
    """An rr handler that runs one WSGI application (see the module docstring)."""

    __slots__ = ("app", "script_name", "_base")

    def __init__(self, app: WSGIApp, script_name: str = "") -> None:
        if not callable(app):
            raise ValueError(f"invalid wsgi.handler option 'app': a WSGI callable, got {app!r}")
        if not isinstance(script_name, str) or (script_name and (
                not script_name.startswith("/") or script_name.endswith("/"))):
            raise ValueError(f"invalid wsgi.handler option 'script_name': '' or a path like '/app' "
                             f"(leading '/', no trailing '/'), got {script_name!r}")
        self.app = app
        self.script_name = script_name
        self._base: dict[str, Any] = {
            "SCRIPT_NAME": script_name,
            "SERVER_SOFTWARE": "rr",
            "wsgi.version": (1, 0),
            "wsgi.multithread": True,  # requests run concurrently (greenlets) in one process
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
        }
        # Every key environ() always sets, so the copy it starts from has its final size
        # (no resize while it fills in) — each is assigned for every request.
        self._base.update(dict.fromkeys(_PER_REQUEST_KEYS))

    def __repr__(self) -> str:
        return f"<rr.contrib.wsgi handler for {self.app!r}>"

    def environ(self, req: Request) -> dict[str, Any] | None:
        """The request's PEP 3333 environ; None when the path is outside ``script_name``."""
        path = req.path
        if "%" in path or not path.isascii():  # else unquoting is the identity
            path = unquote_to_bytes(path.encode("latin-1")).decode("latin-1")
        script_name = self.script_name
        if script_name:
            if path != script_name and not path.startswith(script_name + "/"):
                return None
            path = path[len(script_name):]
        scheme = req.scheme
        env = self._base.copy()  # the per-request keys are all assigned below
        env["REQUEST_METHOD"] = req.method
        env["PATH_INFO"] = path
        env["QUERY_STRING"] = req.query_string
        env["RAW_URI"] = env["REQUEST_URI"] = req.target
        env["SERVER_PROTOCOL"] = req.version
        env["wsgi.url_scheme"] = scheme
        keys = _ENVIRON_KEYS
        for name, value in req.headers.items():
            key = keys.get(name)
            if key is None:
                key = _environ_key(name)
                if key is None:
                    continue
            if key in env and key[0] == "H":  # CONTENT_TYPE/_LENGTH: the last field wins
                value = env[key] + ("; " if key == "HTTP_COOKIE" else ",") + value
            env[key] = value
        host = req.host or env.get("HTTP_HOST")
        if host:
            env["HTTP_HOST"] = host
            env["SERVER_NAME"], port = _split_host(host)
            env["SERVER_PORT"] = port or _DEFAULT_PORTS.get(scheme, "80")
        else:
            env["SERVER_NAME"] = "localhost"
            env["SERVER_PORT"] = _listener_port(req) or _DEFAULT_PORTS.get(scheme, "80")
        peer = req.peer
        if peer is not None:
            env["REMOTE_ADDR"] = peer[0]
            env["REMOTE_PORT"] = str(peer[1])
        else:
            env["REMOTE_ADDR"] = ""
        # The body rr already holds in ``auto`` mode is handed over as a BytesIO; in
        # ``manual`` mode wsgi.input reads the connection on demand; a request without
        # a body gets the shared empty stream.
        if not req.has_body:
            env["wsgi.input"] = _EMPTY_INPUT
        elif req.body_buffered:
            body = req.read_body()  # already in memory: handed over, not copied
            env["wsgi.input"] = io.BytesIO(body)
            if body and "CONTENT_LENGTH" not in env:
                env["CONTENT_LENGTH"] = str(len(body))
        else:
            env["wsgi.input"] = Input(req.read_body)
        env["wsgi.errors"] = ErrorStream(req)
        env["rr.request"] = req
        return env

    def __call__(self, req: Request) -> resp.Shape:
        environ = self.environ(req)
        if environ is None:
            return resp.not_found()
        errors = environ["wsgi.errors"]  # ours, whatever the app puts in its place
        exchange = _Exchange()
        try:
            result = self.app(environ, exchange.start_response)
        except BaseException:
            errors.flush()
            raise
        handed_to_stream = False
        try:
            shape = self._shape(req, exchange, result, errors)
            handed_to_stream = type(shape) is resp.Stream
            return shape
        finally:
            if not handed_to_stream:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
                errors.flush()

    def _shape(self, req: Request, exchange: _Exchange, result: Iterable[bytes],
               errors: ErrorStream) -> resp.Shape:
        if isinstance(result, FileWrapper) and exchange.status is not None and not exchange.written:
            sendfile = _sendfile(result, exchange.status, exchange.headers, exchange.declared)
            if sendfile is not None:
                return sendfile
        if isinstance(result, _SEQUENCES) and len(result) <= 1:  # complete: one Response, no join
            if exchange.status is None:
                raise RuntimeError("the WSGI application returned without calling start_response")
            if exchange.written:
                return self._buffered(req, exchange, b"".join([*exchange.written, *map(_bytes, result)]))
            return self._buffered(req, exchange, _bytes(result[0]) if result else b"")
        chunks = iter(result)
        first = b""
        for chunk in chunks:  # the head waits for the first non-empty chunk (PEP 3333)
            first = _bytes(chunk)
            if first:
                break
        else:
            return self._buffered(req, exchange, b"".join(exchange.written) if exchange.written else b"")
        if exchange.status is None:
            raise RuntimeError("the WSGI application sent a body without calling start_response")
        if exchange.written:
            first = b"".join([*exchange.written, first])
        declared = exchange.declared
        if declared is not None and len(first) >= declared:
            # The declared length is met: the body is complete, whatever else the iterator holds.
            return self._buffered(req, exchange, first)
        return resp.Stream(exchange.status, exchange.headers,
                           self._streamer(exchange, result, chain((first,), chunks), declared, errors))

    def _buffered(self, req: Request, exchange: _Exchange, body: bytes) -> resp.Response:
        status = exchange.status
        if status is None:
            raise RuntimeError("the WSGI application returned without calling start_response")
        declared = exchange.declared
        if declared is not None and len(body) != declared and req.method != "HEAD" \
                and status not in _NO_BODY_STATUS:
            if len(body) < declared:
                _log.warning("WSGI body shorter than its content-length; the real length is sent",
                             declared=declared, sent=len(body), request_id=req.request_id)
            body = body[:declared]
        return resp.Response(status, exchange.headers, body)

    def _streamer(self, exchange: _Exchange, result: Any, chunks: Iterator[bytes],
                  declared: int | None, errors: ErrorStream) -> Callable[[Callable[..., None]], None]:
        def stream(send: Callable[..., None]) -> None:
            exchange.send = send
            left = declared
            try:
                for chunk in chunks:
                    data = _bytes(chunk)
                    if not data:
                        continue
                    if left is not None:
                        data = data[:left]
                        left -= len(data)
                    exchange.head_sent = True
                    send(data)
                    if left == 0:
                        break
            finally:
                exchange.send = None
                try:
                    _close(result)
                finally:
                    errors.flush()

        return stream


def _bytes(chunk: Any) -> bytes:
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, (bytearray, memoryview)):
        return bytes(chunk)
    raise TypeError(f"a WSGI body yields bytes, not {type(chunk).__name__}")


def _sendfile(wrapper: FileWrapper, status: int, headers: list[tuple[str, str]],
              declared: int | None) -> resp.Sendfile | None:
    """``Sendfile`` for a wrapped regular file still reachable by its name, else None."""
    filelike = wrapper.filelike
    if isinstance(filelike, io.TextIOBase):
        return None
    try:
        fd = filelike.fileno()
        st = os.fstat(fd)
        name = filelike.name
        if not isinstance(name, str | bytes) or not stat.S_ISREG(st.st_mode):
            return None
        path = os.path.abspath(os.fsdecode(name))
        named = os.stat(path)
        offset = filelike.tell()
    except (AttributeError, OSError, ValueError, TypeError):
        return None
    if (named.st_dev, named.st_ino) != (st.st_dev, st.st_ino) or offset > st.st_size:
        return None
    length = st.st_size - offset
    if declared is not None:
        if declared > length:
            return None  # the iterating path reports the short body
        length = declared
    return resp.Sendfile(status, headers, path, offset, length)


def handler(app: WSGIApp, *, script_name: str = "") -> WSGIHandler:
    """An rr handler serving the WSGI application ``app``.

    ``script_name`` mounts it under a path prefix (``"/blog"``): requests for
    paths outside it get 404, and the app sees the prefix in ``SCRIPT_NAME``
    and the rest in ``PATH_INFO``.
    """
    return WSGIHandler(app, script_name)

