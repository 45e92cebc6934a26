"""``multipart/form-data`` bodies, parsed as a stream (RFC 7578 over RFC 2046 §5.1).

What it is: a sans-IO parser. ``MultipartParser(boundary).feed(chunk)`` takes
the body in whatever pieces the connection read and returns events —
``PartStart``, ``PartData``, ``PartEnd`` and a final ``Done`` — so a handler
can stream an upload to disk (or anywhere) without holding it. ``parse_form``
is the convenience on top: it drives a parser over an iterable of chunks and
collects text fields and (spooled) files into a ``FormData``.

What it owns: the body grammar of RFC 2046 §5.1.1, the part-header rules of
RFC 7578 §4, the Content-Disposition parameters (RFC 7578 §4.2, RFC 6266 for
``filename``, RFC 8187 for ``filename*``), and every bound on what a peer
can make it buffer.

What it must never do: read a socket, hold more than a bounded amount of a
body in memory (whatever the input), sanitise what it reports (``filename``
is exposed raw; ``safe_filename`` is offered beside it, never instead), or
return a partial form as if it were whole: an unterminated body raises.

Theory of operation. Every boundary in the body is a *delimiter*
``CRLF "--" boundary`` (RFC 2046 §5.1.1: the CRLF before it belongs to the
delimiter, not to the preceding part). The parser starts with a virtual
CRLF in its buffer, so the first ``--boundary`` at offset 0 is found the same
way as every later one, and runs four states:

- *preamble*: discard until the first delimiter (bounded, see below);
- *after a delimiter*: ``--`` means the close delimiter (→ ``Done``; the
  epilogue is discarded); otherwise optional transport padding (SP/HT) and a
  CRLF start the next part. Anything else after a boundary is malformed:
  RFC 2046 §5.1.1 lets a delimiter match as a line *prefix*, so
  ``--boundaryX`` is a broken delimiter, not data;
- *headers*: up to the empty line (CRLF CRLF), bounded by
  ``max_part_header_size``;
- *body*: search for the next delimiter; everything before it is data, and
  everything but the last ``len(boundary) + 3`` bytes (which might be the
  start of a delimiter split across two chunks) is emitted at once. That
  lookback is the only body data the parser ever holds. The scan resumes
  where it left off, so a body costs one pass however it is chunked.

The rules the parser enforces, with their citations:

- boundary: 1..70 ``bchars``, the last not a space (RFC 2046 §5.1.1);
  ``parse_boundary`` reads it from the Content-Type parameters
  (RFC 9110 §5.6.6, token or quoted-string; a duplicate parameter is
  ambiguous and refused);
- lines end with CRLF (RFC 2046 §5.1.1, RFC 7578 §4.1); a bare CR or LF,
  or a NUL, inside a part header is refused (RFC 9110 §5.5: the CR/LF
  injection class);
- header fields are ``token ":" OWS value OWS``; obs-fold (a line starting
  with SP/HT) is refused (RFC 9112 §5.2 deprecates it; RFC 7578 parts have
  no use for it);
- every part has ``Content-Disposition: form-data`` with a ``name``
  parameter (RFC 7578 §4.2); ``filename`` marks a file (present, even
  empty, as browsers send for an empty file input);
- ``filename*`` / ``name*`` (RFC 8187 §3.2, UTF-8 or ISO-8859-1) win over
  the plain parameter (RFC 6266 §4.3); an unknown charset leaves the plain
  one in force;
- quoted-strings: ``\\"`` and ``\\\\`` are unescaped (RFC 9110 §5.6.4);
  a backslash before any other character is kept, so a legacy
  ``"C:\\dir\\file.txt"`` from old browsers is not mangled;
- header values are read as UTF-8 with replacement (browsers send raw UTF-8,
  RFC 7578 §5.1.1, not RFC 2047 words);
- ``Content-Type`` defaults to ``text/plain`` (RFC 7578 §4.4);
  ``Content-Transfer-Encoding`` is ignored (§4.7 deprecates it); a nested
  ``multipart/mixed`` part (§4.3, deprecated) is delivered as raw bytes.

Limits (``MultipartError.status`` 413 unless said; every one fails as soon
as it is crossed, before more is buffered):

- ``max_parts`` (100): each part costs a header parse and, in
  ``parse_form``, an object; 100k empty parts are cheap bytes and dear work;
- ``max_part_header_size`` (8 KiB): a part's header block is a few hundred
  bytes; without a bound a header with no blank line buffers forever. The
  same bound caps the preamble and transport padding (400: a body whose
  boundary never shows is more likely the wrong boundary than a big one);
- ``max_total_size`` (64 MiB): the body as a whole, counted on arrival;
- ``max_field_size`` (1 MiB): a part without ``filename`` is a text field
  that ``parse_form`` keeps in memory; files are bounded only by the total;
- a body that ends before its close delimiter: ``finish()`` raises 400.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO
from urllib.parse import unquote_to_bytes

__all__ = [
    "Done",
    "Event",
    "FormData",
    "MultipartError",
    "MultipartParser",
    "PartData",
    "PartEnd",
    "PartStart",
    "UploadedFile",
    "parse_boundary",
    "parse_form",
    "safe_filename",
]

MAX_PARTS = 100
MAX_PART_HEADER_SIZE = 8192
MAX_TOTAL_SIZE = 64 * 1024 * 1024
MAX_FIELD_SIZE = 1024 * 1024
SPOOL_THRESHOLD = 1024 * 1024


class MultipartError(ValueError):
    """The body is malformed (``status`` 400), crosses a limit (413), or is not multipart (415)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True, slots=True)
class PartStart:
    """A part's headers are complete. ``headers`` are (lowercase name, value) in wire order."""

    name: str
    filename: str | None
    content_type: str
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class PartData:
    """The next bytes of the current part's body (never empty)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class PartEnd:
    """The current part's body is complete."""


@dataclass(frozen=True, slots=True)
class Done:
    """The close delimiter was read; anything after it (the epilogue) is ignored."""


Event = PartStart | PartData | PartEnd | Done

# RFC 2046 §5.1.1: bchars := bcharsnospace / " "
_BOUNDARY = re.compile(rb"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
# RFC 9110 §5.6.2 token
_TOKEN_CHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_TOKEN = re.compile(_TOKEN_CHARS)
_MEDIA_TYPE = re.compile(rf"({_TOKEN_CHARS})/({_TOKEN_CHARS})[ \t]*")
# RFC 9110 §5.6.6: parameters = *( OWS ";" OWS [ parameter ] ), value = token / quoted-string
# (OWS around "=" is tolerated: old clients write it and it is unambiguous.)
_PARAMETER = re.compile(
    rf'[ \t]*;[ \t]*(?:({_TOKEN_CHARS})[ \t]*=[ \t]*(?:({_TOKEN_CHARS})|"((?:[^"\\]|\\.)*)"))?'
)
_QUOTED_PAIR = re.compile(r'\\(["\\])')
# RFC 8187 §3.2.1: ext-value = charset "'" [ language ] "'" value-chars
_EXT_VALUE = re.compile(r"([!#$%&+\-^_`{}~0-9A-Za-z]+)'[0-9A-Za-z\-]*'(.*)", re.DOTALL)
_EXT_CHARSETS = {"utf-8": "utf-8", "iso-8859-1": "latin-1"}
_LWSP = b" \t"
_PADDING = re.compile(rb"[ \t]*")

_PREAMBLE, _AFTER_DELIMITER, _HEADERS, _BODY, _DONE, _FAILED = range(6)


def _parameters(text: str, start: int) -> dict[str, str]:
    """The ``; name=value`` parameters of ``text`` from ``start``, names lowercased.

    Values are unquoted; ``name*`` extended values are kept raw for the caller.
    """
    params: dict[str, str] = {}
    pos, end = start, len(text.rstrip(" \t"))
    while pos < end:
        match = _PARAMETER.match(text, pos)
        if match is None or match.end() == pos:
            raise MultipartError(400, f"malformed parameters in {text!r}")
        pos = match.end()
        name, token, quoted = match.groups()
        if name is None:
            continue
        name = name.lower()
        if name in params:
            raise MultipartError(400, f"duplicate parameter {name!r} in {text!r}")
        params[name] = token if token is not None else _QUOTED_PAIR.sub(r"\1", quoted)
    if pos != end:
        raise MultipartError(400, f"malformed parameters in {text!r}")
    return params


def _ext_value(value: str) -> str | None:
    # RFC 8187 §3.2.1; None for a charset we do not decode (the plain parameter stays in force).
    match = _EXT_VALUE.fullmatch(value)
    if match is None:
        raise MultipartError(400, f"malformed extended parameter value {value!r}")
    codec = _EXT_CHARSETS.get(match.group(1).lower())
    if codec is None:
        return None
    return unquote_to_bytes(match.group(2)).decode(codec, "replace")


def parse_boundary(content_type: str) -> bytes:
    """The boundary of a ``multipart/*`` Content-Type value, validated (RFC 2046 §5.1.1).

    415 if the media type is not multipart; 400 if the boundary is missing or invalid.
    """
    match = _MEDIA_TYPE.match(content_type.strip(" \t"))
    if match is None or match.group(1).lower() != "multipart":
        raise MultipartError(415, f"not a multipart media type: {content_type!r}")
    params = _parameters(content_type.strip(" \t"), match.end())
    boundary = params.get("boundary")
    if boundary is None:
        raise MultipartError(400, "multipart Content-Type without a boundary parameter")
    raw = boundary.encode("utf-8", "replace")
    _check_boundary(raw)
    return raw


def _check_boundary(boundary: bytes) -> None:
    if not _BOUNDARY.fullmatch(boundary):
        raise MultipartError(
            400, f"invalid boundary {boundary!r}: 1..70 bchars, not ending in a space"
        )


def _part_start(block: bytes) -> PartStart:
    headers: list[tuple[str, str]] = []
    for line in block.split(b"\r\n"):
        # (find, not ``in``: CPython's bytes ``in`` first tries the needle as an int)
        if line.find(b"\r") >= 0 or line.find(b"\n") >= 0 or line.find(b"\x00") >= 0:
            raise MultipartError(400, "bare CR, LF or NUL in a part header")
        if line[:1] in (b" ", b"\t"):
            raise MultipartError(400, "obs-fold in a part header")
        field, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(field.decode("latin-1")):
            raise MultipartError(400, f"malformed part header line {line[:80]!r}")
        headers.append(
            (field.decode("ascii").lower(), value.strip(_LWSP).decode("utf-8", "replace"))
        )
    disposition = next((v for n, v in headers if n == "content-disposition"), None)
    if disposition is None:
        raise MultipartError(400, "a part without Content-Disposition (RFC 7578 §4.2)")
    name, filename = _disposition(disposition)
    content_type = next((v for n, v in headers if n == "content-type"), "text/plain")
    return PartStart(name, filename, content_type, tuple(headers))


def _disposition(value: str) -> tuple[str, str | None]:
    match = _TOKEN.match(value)
    if match is None or match.group().lower() != "form-data":
        raise MultipartError(400, f"Content-Disposition is not form-data: {value!r}")
    params = _parameters(value, match.end())
    for key in ("name", "filename"):
        extended = params.pop(key + "*", None)
        if extended is not None:
            decoded = _ext_value(extended)
            if decoded is not None:
                params[key] = decoded
    name, filename = params.get("name"), params.get("filename")
    if name is None:
        raise MultipartError(400, "Content-Disposition without a name (RFC 7578 §4.2)")
    for text in (name, filename or ""):
        if "\r" in text or "\n" in text:
            raise MultipartError(400, "CR or LF in a Content-Disposition parameter")
    return name, filename


class MultipartParser:
    """A streaming ``multipart/form-data`` parser: ``feed`` chunks, get events, ``finish``.

    After a ``MultipartError`` the parser is spent and every call raises again.
    """

    def __init__(
        self,
        boundary: bytes | str,
        *,
        max_parts: int = MAX_PARTS,
        max_part_header_size: int = MAX_PART_HEADER_SIZE,
        max_total_size: int = MAX_TOTAL_SIZE,
        max_field_size: int = MAX_FIELD_SIZE,
    ) -> None:
        raw = boundary.encode("utf-8") if isinstance(boundary, str) else boundary
        _check_boundary(raw)
        self.max_parts = max_parts
        self.max_part_header_size = max_part_header_size
        self.max_total_size = max_total_size
        self.max_field_size = max_field_size
        self._delimiter = b"\r\n--" + raw
        self._lookback = len(self._delimiter) - 1
        self._buffer = bytearray(b"\r\n")
        self._state = _PREAMBLE
        self._scan_from = 0
        self._total = 0
        self._parts = 0
        self._skipped = 0
        self._part_size = 0
        self._part_is_field = False
        self._error: MultipartError | None = None
        self._steps: dict[int, Callable[[list[Event]], bool]] = {
            _PREAMBLE: self._preamble,
            _AFTER_DELIMITER: self._after_delimiter,
            _HEADERS: self._headers,
            _BODY: self._body,
        }

    @property
    def done(self) -> bool:
        """True once the close delimiter has been read."""
        return self._state == _DONE

    def feed(self, data: bytes) -> list[Event]:
        """Parse the next chunk of the body; the events it completes, in order."""
        if self._error is not None:
            raise self._error
        try:
            return self._feed(data)
        except MultipartError as exc:
            self._state, self._error = _FAILED, exc
            self._buffer.clear()
            raise

    def finish(self) -> list[Event]:
        """The body has ended: raise 400 unless the close delimiter was read."""
        if self._error is not None:
            raise self._error
        if self._state != _DONE:
            self._error = MultipartError(400, "body ended before the closing boundary")
            self._state = _FAILED
            raise self._error
        return []

    def _feed(self, data: bytes) -> list[Event]:
        self._total += len(data)
        if self._total > self.max_total_size:
            raise MultipartError(413, f"body exceeds max_total_size={self.max_total_size}")
        if self._state == _DONE:
            return []
        self._buffer += data
        events: list[Event] = []
        steps = self._steps
        while self._state in steps and steps[self._state](events):
            pass
        return events

    def _skip(self, count: int, what: str) -> None:
        self._skipped += count
        del self._buffer[:count]
        if self._skipped > self.max_part_header_size:
            raise MultipartError(
                400, f"{what} longer than max_part_header_size={self.max_part_header_size}"
            )

    def _preamble(self, events: list[Event]) -> bool:
        buffer = self._buffer
        found = buffer.find(self._delimiter, self._scan_from)
        if found < 0:
            keep_from = max(0, len(buffer) - self._lookback)
            self._skip(keep_from, "preamble (no opening boundary)")
            return False
        self._skip(found, "preamble (no opening boundary)")
        del buffer[: len(self._delimiter)]
        self._state, self._skipped = _AFTER_DELIMITER, 0
        return True

    def _after_delimiter(self, events: list[Event]) -> bool:
        buffer = self._buffer
        if buffer[:2] == b"--":
            events.append(Done())
            buffer.clear()
            self._state = _DONE
            return False
        padding = _PADDING.match(buffer).end()  # type: ignore[union-attr]
        rest = buffer[padding : padding + 2]
        if rest == b"\r\n":
            del buffer[: padding + 2]
            self._start_part()
            return True
        if rest in (b"", b"\r") or buffer == b"-":
            self._skip(padding, "transport padding")
            return False
        raise MultipartError(400, "a boundary is followed by something other than CRLF or '--'")

    def _start_part(self) -> None:
        self._parts += 1
        if self._parts > self.max_parts:
            raise MultipartError(413, f"more than max_parts={self.max_parts} parts")
        self._state, self._skipped, self._scan_from = _HEADERS, 0, 0

    def _headers(self, events: list[Event]) -> bool:
        buffer = self._buffer
        if buffer[:2] == b"\r\n":
            raise MultipartError(
                400, "a part without headers (RFC 7578 §4.2 needs Content-Disposition)"
            )
        end = buffer.find(b"\r\n\r\n", self._scan_from)
        if end < 0:
            if len(buffer) > self.max_part_header_size:
                raise MultipartError(
                    413, f"part header exceeds max_part_header_size={self.max_part_header_size}"
                )
            self._scan_from = max(0, len(buffer) - 3)
            return False
        if end + 4 > self.max_part_header_size:
            raise MultipartError(
                413, f"part header exceeds max_part_header_size={self.max_part_header_size}"
            )
        start = _part_start(bytes(buffer[:end]))
        del buffer[: end + 4]
        events.append(start)
        self._state, self._scan_from = _BODY, 0
        self._part_size, self._part_is_field = 0, start.filename is None
        return True

    def _body(self, events: list[Event]) -> bool:
        buffer = self._buffer
        found = buffer.find(self._delimiter, self._scan_from)
        if found >= 0:
            self._emit(events, found)
            del buffer[: len(self._delimiter)]
            events.append(PartEnd())
            self._state, self._scan_from = _AFTER_DELIMITER, 0
            return True
        # Hold back only a tail that could still begin a delimiter: it starts with CR.
        tail = buffer.find(b"\r", max(0, len(buffer) - self._lookback))
        self._emit(events, tail if tail >= 0 else len(buffer))
        self._scan_from = 0
        return False

    def _emit(self, events: list[Event], count: int) -> None:
        if count == 0:
            return
        self._part_size += count
        if self._part_is_field and self._part_size > self.max_field_size:
            raise MultipartError(413, f"a field exceeds max_field_size={self.max_field_size}")
        events.append(PartData(bytes(self._buffer[:count])))
        del self._buffer[:count]


def safe_filename(filename: str) -> str:
    """The last path segment of ``filename`` (``/`` or ``\\\\`` separated), NULs removed.

    ``"."`` and ``".."`` become ``""``; the result may be empty and is still
    untrusted text (any other character, any length): it is safe only to
    join under a directory, not to trust.
    """
    base = re.split(r"[/\\]", filename)[-1].replace("\x00", "")
    return "" if base in (".", "..") else base


def _remove(file: IO[bytes], path: str | None) -> None:
    file.close()
    if path is not None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


class UploadedFile:
    """A file part: metadata plus its bytes, in memory or spooled to a temporary file.

    ``path`` is the temporary file once the upload passed the spool threshold
    (``None`` while in memory); ``close()`` (or ``FormData.close()``, or
    garbage collection as a last resort) removes it.
    """

    def __init__(
        self,
        start: PartStart,
        *,
        spool_threshold: int = SPOOL_THRESHOLD,
        tmpdir: str | None = None,
    ) -> None:
        self.name = start.name
        self.filename: str = start.filename or ""
        self.content_type = start.content_type
        self.headers = start.headers
        self.size = 0
        self.path: str | None = None
        self._spool_threshold = spool_threshold
        self._tmpdir = tmpdir
        self._file: IO[bytes] = io.BytesIO()
        self._finalizer = weakref.finalize(self, _remove, self._file, None)

    @property
    def safe_filename(self) -> str:
        """``filename`` reduced by :func:`safe_filename`."""
        return safe_filename(self.filename)

    @property
    def file(self) -> IO[bytes]:
        """The underlying binary file object (positioned at 0 after parsing)."""
        return self._file

    def write(self, data: bytes) -> None:
        """Append ``data``; moves to a named temporary file past the spool threshold."""
        if self.path is None and self.size + len(data) > self._spool_threshold:
            self._spool()
        self._file.write(data)
        self.size += len(data)

    def _spool(self) -> None:
        in_memory = self._file.getvalue() if isinstance(self._file, io.BytesIO) else b""
        # Not a context manager: the file outlives this call; the finalizer owns it.
        disk = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="rr-upload-", dir=self._tmpdir, delete=False
        )
        self._finalizer()
        self._file, self.path = disk, disk.name
        self._finalizer = weakref.finalize(self, _remove, disk, disk.name)
        disk.write(in_memory)

    def read(self, size: int = -1) -> bytes:
        """Read from the current position (the start, after parsing)."""
        return self._file.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def close(self) -> None:
        """Close the file and remove the temporary file, if any. Idempotent."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def __enter__(self) -> UploadedFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"UploadedFile(name={self.name!r}, filename={self.filename!r}, "
            f"content_type={self.content_type!r}, size={self.size}, path={self.path!r})"
        )


@dataclass
class FormData:
    """A parsed form: text fields and uploaded files by field name, values in wire order.

    What ``Request.read_form()`` returns for urlencoded and multipart bodies alike.
    """

    fields: dict[str, list[str]]
    files: dict[str, list[UploadedFile]]

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of text field ``name``, or ``default``."""
        values = self.fields.get(name)
        return values[0] if values else default

    def close(self) -> None:
        """Close every file (removing spooled temporary files)."""
        for uploads in self.files.values():
            for upload in uploads:
                upload.close()

    def __enter__(self) -> FormData:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def parse_form(
    chunks: Iterable[bytes],
    boundary: bytes | str,
    *,
    spool_threshold: int = SPOOL_THRESHOLD,
    tmpdir: str | None = None,
    max_parts: int = MAX_PARTS,
    max_part_header_size: int = MAX_PART_HEADER_SIZE,
    max_total_size: int = MAX_TOTAL_SIZE,
    max_field_size: int = MAX_FIELD_SIZE,
) -> FormData:
    """Parse a whole ``multipart/form-data`` body given as chunks into a ``FormData``.

    Fields are decoded as UTF-8 with replacement (the ``_charset_`` field of
    RFC 7578 §4.6 is not honoured). Files larger than ``spool_threshold`` go
    to a named temporary file in ``tmpdir``. On any error every file created
    so far is removed before the ``MultipartError`` propagates.
    """
    parser = MultipartParser(
        boundary,
        max_parts=max_parts,
        max_part_header_size=max_part_header_size,
        max_total_size=max_total_size,
        max_field_size=max_field_size,
    )
    form = FormData({}, {})
    current: UploadedFile | list[bytes] | None = None
    name = ""
    try:
        for chunk in chunks:
            for event in parser.feed(chunk):
                if isinstance(event, PartData):
                    if isinstance(current, UploadedFile):
                        current.write(event.data)
                    elif current is not None:
                        current.append(event.data)
                elif isinstance(event, PartStart):
                    name = event.name
                    if event.filename is None:
                        current = []
                    else:
                        current = UploadedFile(
                            event, spool_threshold=spool_threshold, tmpdir=tmpdir
                        )
                        form.files.setdefault(name, []).append(current)
                elif isinstance(event, PartEnd):
                    if isinstance(current, UploadedFile):
                        current.seek(0)
                    elif current is not None:
                        text = b"".join(current).decode("utf-8", "replace")
                        form.fields.setdefault(name, []).append(text)
                    current = None
        parser.finish()
    except BaseException:
        form.close()
        raise
    return form
