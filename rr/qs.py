"""Query strings and ``application/x-www-form-urlencoded`` bodies.

What it is: the parser and serializer for ``name=value&name=value`` text, the
query component of a URI (RFC 3986 §3.4) read with the WHATWG URL Standard's
*application/x-www-form-urlencoded parser* rules, which is what every browser
sends for both ``?query`` and form bodies.

What it owns: splitting, ``+``-as-space, percent-decoding, UTF-8 decoding, the
DoS bounds on pair count and key length, and the reverse (encoding).

What it must never do: raise on a malformed query (only on a crossed limit),
allocate more than a small multiple of its input, or know where the text came
from (no Request, no sockets). It runs on every request that asks for its
query or form, so the common case (no ``%`` and no ``+`` anywhere) copies
nothing it does not have to, and no Python code runs per pair but the one
loop that builds the result.

How it runs: the whole text is decoded at once (``+``, escapes, UTF-8),
then split on ``&`` and each piece split on its first ``=`` by
``str.partition`` called from C; this gives what decoding each name and value
on its own gives because ``&`` and ``=`` are ASCII (no escape spans one, and
the UTF-8 decoder never takes an ASCII byte into a sequence). Where it would
not (an escape that decodes to a separator, ``%26`` or ``%3D``; a non-ASCII
``str`` with escapes; more ``&`` than ``max_pairs``) the text is split first
and each component decoded on its own, the rules' own order.

The parsing rules, each from the WHATWG urlencoded parser (§5.1) unless
cited otherwise:

- the input is split on ``&`` only (``;`` is not a separator: Python dropped
  it in 3.10 for the cache-poisoning it allowed, and WHATWG never had it);
- empty pieces (``a=1&&b=2``, a leading or trailing ``&``) are skipped;
- each piece splits on its FIRST ``=``; a piece without ``=`` is a name with
  the empty value (``?flag`` gives ``("flag", "")``; roadrunner gives
  ``true`` here, Python's idiom is a string);
- ``+`` becomes a space, then percent-escapes are decoded (RFC 3986 §2.1,
  hex digits in either case);
- an invalid escape (``%zz``, a trailing ``%`` or ``%4``) is kept literally,
  never an error;
- the decoded bytes are read as UTF-8; invalid sequences become U+FFFD (the
  WHATWG "UTF-8 decode without BOM" with replacement), so a hostile query
  cannot make ``parse`` raise.

``str`` input is taken as text (its non-ASCII characters are kept as they
are, percent-escapes inside it are UTF-8); pass ``bytes`` when you hold the
raw wire octets, and they are read as UTF-8 as above.

Limits (both raise :class:`LimitExceeded`, a ``ValueError`` whose ``limit``
names the bound; the glue maps it to 400 or 413):

- ``max_pairs`` (default 1000): a body of ``a&a&a…`` would otherwise become
  millions of tuples; the count is checked with one C-level ``count`` before
  anything is split, and the slow path stops at the first pair over.
- ``max_key_length`` (default 1024, measured on the raw, still-encoded key):
  names are identifiers, not payloads; values are bounded only by the body
  or request-line limit of the connection.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from itertools import repeat
from operator import itemgetter
from urllib.parse import quote as _quote
from urllib.parse import quote_plus as _quote_plus
from urllib.parse import unquote_to_bytes as _unquote_to_bytes

__all__ = [
    "MAX_KEY_LENGTH",
    "MAX_PAIRS",
    "LimitExceeded",
    "encode",
    "parse",
    "parse_dict",
    "quote",
    "unquote",
]

MAX_PAIRS = 1000
MAX_KEY_LENGTH = 1024

_PIECE_STR = re.compile(r"[^&]+")
_PIECE_BYTES = re.compile(rb"[^&]+")
# An escape that decodes to a separator: then only the per-component path is right.
_ESCAPED_SEPARATOR_STR = re.compile(r"%(?:26|3[Dd])")
_ESCAPED_SEPARATOR_BYTES = re.compile(rb"%(?:26|3[Dd])")
_value = itemgetter(2)


class LimitExceeded(ValueError):
    """A query string crossed a DoS bound; ``limit`` is the option's name."""

    def __init__(self, limit: str, value: int) -> None:
        super().__init__(f"query string exceeds {limit}={value}")
        self.limit = limit
        self.value = value


def unquote(s: str | bytes, plus: bool = True) -> str:
    """Decode one component: ``+`` → space (when ``plus``), ``%XX`` → byte, UTF-8 → text.

    Invalid escapes stay literal and invalid UTF-8 becomes U+FFFD; never raises.
    """
    if isinstance(s, str):
        if "%" not in s:
            return s.replace("+", " ") if plus else s
        raw = s.encode("utf-8", "surrogatepass")
    else:
        raw = s
    if plus:
        raw = raw.replace(b"+", b" ")
    return _unquote_to_bytes(raw).decode("utf-8", "replace")


def quote(s: str) -> str:
    """Percent-encode everything but RFC 3986 §2.3 unreserved characters (space → ``%20``)."""
    return _quote(s, safe="")


def _split_pieces(qs: str | bytes, max_pairs: int) -> Iterable[str | bytes]:
    separators = qs.count("&") if isinstance(qs, str) else qs.count(b"&")
    if separators < max_pairs:
        # At most max_pairs pieces: split eagerly, the common and fast case.
        return qs.split("&") if isinstance(qs, str) else qs.split(b"&")
    return _bounded_pieces(qs, max_pairs)


def _bounded_pieces(qs: str | bytes, max_pairs: int) -> Iterator[str | bytes]:
    # Lazily, so a million-pair body raises at pair max_pairs + 1 without
    # first materialising a million strings.
    pieces: Iterator[str | bytes]
    if isinstance(qs, str):
        pieces = (match.group() for match in _PIECE_STR.finditer(qs))
    else:
        pieces = (match.group() for match in _PIECE_BYTES.finditer(qs))
    for count, piece in enumerate(pieces, 1):
        if count > max_pairs:
            raise LimitExceeded("max_pairs", max_pairs)
        yield piece


def _check_names(pieces: list[str] | list[bytes], max_key_length: int) -> None:
    # One C-level pass over the lengths; names are looked at only when a piece is long.
    if max(map(len, pieces), default=0) > max_key_length:
        for piece in pieces:
            name = piece.partition("=")[0] if isinstance(piece, str) else piece.partition(b"=")[0]
            if len(name) > max_key_length:
                raise LimitExceeded("max_key_length", max_key_length)


def _whole_text(qs: str | bytes, max_pairs: int, max_key_length: int) -> tuple[str, bool] | None:
    """``qs`` decoded in one go (``+``, escapes, UTF-8) and whether its names still need the
    key-length check; None when only the per-component path decodes it the same.

    Decoding the whole text at once equals decoding each name and value on its own because
    ``&`` and ``=`` are ASCII: no escape spans one (``%`` takes two hex digits) and the UTF-8
    decoder never takes an ASCII byte into a sequence (an invalid sequence ends before it).
    It does not hold when an escape decodes TO a separator (``%26``, ``%3D``), nor for a
    non-ASCII ``str`` with escapes (a lone surrogate outside any escaped component is kept
    by the per-component path). The key bound is on the raw name, so it is checked here
    whenever decoding changes lengths, and left to the caller (on the decoded pieces, the
    same lengths) when it does not.
    """
    if isinstance(qs, bytes):
        if qs.count(b"&") >= max_pairs:
            return None
        if qs.find(b"%") < 0:  # (find: bytes ``in`` first tries the needle as an int)
            if qs.isascii():
                text = qs.decode("ascii")
                return (text.replace("+", " ") if "+" in text else text), True
            _check_names(qs.split(b"&"), max_key_length)
            text = qs.decode("utf-8", "replace")
            return (text.replace("+", " ") if "+" in text else text), False
        if _ESCAPED_SEPARATOR_BYTES.search(qs):
            return None
        _check_names(qs.split(b"&"), max_key_length)
        return _unquote_to_bytes(qs.replace(b"+", b" ")).decode("utf-8", "replace"), False
    if qs.count("&") >= max_pairs:
        return None
    if "%" not in qs:
        return (qs.replace("+", " ") if "+" in qs else qs), True
    if not qs.isascii() or _ESCAPED_SEPARATOR_STR.search(qs):
        return None
    _check_names(qs.split("&"), max_key_length)
    return _unquote_to_bytes(qs.replace("+", " ")).decode("utf-8", "replace"), False


def _per_component(qs: str | bytes, max_pairs: int, max_key_length: int) -> Iterator[tuple[str, str, str]]:
    # The reference path: split first, then decode each name and value on its own.
    if isinstance(qs, bytes) and qs.isascii():
        qs = qs.decode("ascii")  # the str branch skips the components without % or +
    for piece in _split_pieces(qs, max_pairs):
        if not piece:
            continue
        if isinstance(piece, bytes):
            name_b, _, value_b = piece.partition(b"=")
            if len(name_b) > max_key_length:
                raise LimitExceeded("max_key_length", max_key_length)
            yield unquote(name_b), "=", unquote(value_b)
        else:
            name, _, value = piece.partition("=")
            if len(name) > max_key_length:
                raise LimitExceeded("max_key_length", max_key_length)
            if "%" in name or "+" in name:
                name = unquote(name)
            if "%" in value or "+" in value:
                value = unquote(value)
            yield name, "=", value


def _triples(
    qs: str | bytes, max_pairs: int, max_key_length: int, keep_blank: bool
) -> Iterable[tuple[str, str, str]]:
    """``(name, "=", value)`` for every pair in wire order (the shape of ``str.partition``)."""
    whole = _whole_text(qs, max_pairs, max_key_length)
    triples: Iterable[tuple[str, str, str]]
    if whole is None:
        triples = _per_component(qs, max_pairs, max_key_length)
    else:
        text, check_names = whole
        pieces = text.split("&")
        if "" in pieces:
            pieces = list(filter(None, pieces))
        if check_names and len(text) > max_key_length:
            _check_names(pieces, max_key_length)
        # str.partition called from C for each piece: no Python frame per pair.
        triples = map(str.partition, pieces, repeat("="))
    return triples if keep_blank else filter(_value, triples)


def parse(
    qs: str | bytes,
    *,
    max_pairs: int = MAX_PAIRS,
    max_key_length: int = MAX_KEY_LENGTH,
    keep_blank: bool = True,
) -> list[tuple[str, str]]:
    """The ``(name, value)`` pairs of ``qs`` in wire order, repeated names kept.

    ``keep_blank=False`` drops pairs whose decoded value is empty (``a=`` and ``a``).
    A leading ``?`` is NOT stripped: pass the query component only.
    """
    return [(name, value) for name, _, value in _triples(qs, max_pairs, max_key_length, keep_blank)]


def parse_dict(
    qs: str | bytes,
    *,
    max_pairs: int = MAX_PAIRS,
    max_key_length: int = MAX_KEY_LENGTH,
    keep_blank: bool = True,
) -> dict[str, list[str]]:
    """``parse`` grouped by name: each name maps to its values in wire order."""
    grouped: dict[str, list[str]] = {}
    for name, _, value in _triples(qs, max_pairs, max_key_length, keep_blank):
        if name in grouped:
            grouped[name].append(value)
        else:
            grouped[name] = [value]
    return grouped


def _flatten(
    pairs: Mapping[str, str | Iterable[str]] | Iterable[tuple[str, str]],
) -> Iterator[tuple[str, str]]:
    if isinstance(pairs, Mapping):
        for name, values in pairs.items():
            if isinstance(values, str):
                yield name, values
            else:
                for value in values:
                    yield name, value
    else:
        yield from pairs


def encode(pairs: Mapping[str, str | Iterable[str]] | Iterable[tuple[str, str]]) -> str:
    """Serialize pairs (or a mapping of name → value or values) as ``a=1&b=2``.

    Space becomes ``+`` and everything outside RFC 3986 §2.3 unreserved
    (``A-Z a-z 0-9 - . _ ~``) is percent-encoded as UTF-8 with uppercase hex,
    so ``+`` itself goes out as ``%2B`` and ``parse(encode(p)) == p``.
    """
    return "&".join(
        f"{_quote_plus(name, safe='')}={_quote_plus(value, safe='')}"
        for name, value in _flatten(pairs)
    )
