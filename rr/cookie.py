"""HTTP cookies: reading ``Cookie`` and writing ``Set-Cookie`` (RFC 6265).

What it is: ``parse`` turns the request's ``Cookie`` field(s) into a dict;
``serialize`` builds one ``Set-Cookie`` field value from a name, a value and
the attributes, refusing anything a browser would misread.

What it owns: the cookie grammars of RFC 6265 §4.1.1 (with the ``Partitioned``
attribute and the ``__Secure-``/``__Host-`` prefixes of RFC 6265bis), and the
header-injection guard for every piece a caller supplies.

What it must never do: raise while parsing (a peer's header is data, not a
bug), emit a ``Set-Cookie`` that carries a CR, LF, NUL or an unplanned ``;``
(that is how a value becomes an injected attribute or a second header), or
guess at an encoding (values are not percent-decoded or encoded; a caller who
wants arbitrary text in a cookie encodes it, e.g. base64url or ``qs.quote``).

Parsing (``Cookie`` as a user agent sends it, RFC 6265 §4.2.1 and §5.4):

- the field is split on ``;``; optional whitespace around each pair is
  trimmed (senders write ``"; "``, §4.2.1; some send ``";"`` or extra OWS);
- the FIRST ``=`` splits name from value, so values may contain ``=``
  (base64 padding);
- a value wrapped in one pair of DQUOTEs is unquoted (§4.1.1 ``cookie-value``
  allows the quotes; they are not part of the value);
- a pair with no ``=`` or an empty name is skipped, never an error;
- the FIRST occurrence of a name wins. §5.4 has user agents list cookies
  with longer paths first, so the first is the most specific one; later
  duplicates (a parent path's cookie of the same name) are ignored;
- several ``Cookie`` fields (h2/h3 split them per RFC 9113 §8.2.3, and some
  h1 proxies do too) are read in order as if joined with ``"; "``: pass the
  list. Roadrunner read only the first field; that was a gap.

Serializing (``Set-Cookie``, RFC 6265 §4.1):

- name: a ``token`` (RFC 9110 §5.6.2), non-empty;
- value: ``*cookie-octet`` or the same inside DQUOTEs (§4.1.1):
  ``%x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E`` (no space, DQUOTE, comma,
  semicolon or backslash);
- every attribute value is first checked for CR, LF, NUL and ``;`` so the
  error names the field (the header-injection class), then against its own
  grammar:
  - ``Domain``: a hostname of RFC 1035 §2.3.1 as relaxed by RFC 1123 §2.1
    (labels of letters, digits and inner hyphens, 1..63 octets, 253 in all);
    one leading dot is tolerated and stripped (§4.1.2.3 says user agents
    ignore it); non-ASCII names must be passed as A-labels (punycode);
  - ``Path``: ``<any CHAR except CTLs or ";">`` (§4.1.1), and it must start
    with ``/``: §5.2.4 makes user agents ignore any other path, silently;
  - ``Max-Age``: an int (or ``timedelta``) of seconds, >= 0. §4.1.1 writes
    ``non-zero-digit *DIGIT`` but §5.2.2 defines 0 (delete now), and
    ``Max-Age=0`` is how cookies are deleted, so 0 is accepted; negatives
    are refused as caller bugs;
  - ``Expires``: an aware ``datetime`` or an IMF-fixdate string (RFC 9110
    §5.6.7, with the day name checked against the date), rendered as
    IMF-fixdate in GMT. Naive datetimes are refused: which zone they mean is
    a guess;
  - ``SameSite``: ``Strict``, ``Lax`` or ``None`` in any case, rendered
    canonically; ``None`` requires ``Secure`` (RFC 6265bis §4.1.2.7,
    browsers drop the cookie otherwise);
  - ``Partitioned`` (CHIPS) requires ``Secure`` (browsers drop it otherwise);
  - the prefixes (RFC 6265bis §4.1.3): a ``__Secure-`` name requires
    ``Secure``; a ``__Host-`` name requires ``Secure``, ``Path=/`` and no
    ``Domain``.
- attributes come out in a fixed order: Domain, Path, Max-Age, Expires,
  Secure, HttpOnly, SameSite, Partitioned; no ``Path`` unless given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

__all__ = ["InvalidCookie", "format_imf_fixdate", "parse", "parse_imf_fixdate", "serialize"]


class InvalidCookie(ValueError):
    """``serialize`` refused its input; ``field`` names the offending argument."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid cookie {field}: {reason}")
        self.field = field


# RFC 9110 §5.6.2: token = 1*tchar
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 6265 §4.1.1: cookie-value = *cookie-octet / ( DQUOTE *cookie-octet DQUOTE )
_COOKIE_VALUE = re.compile(
    r'[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*|"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*"'
)
# RFC 1123 §2.1 label: let-dig [ *61(let-dig-hyp) let-dig ]
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# RFC 6265 §4.1.1: path-value = <any CHAR except CTLs or ";">
_PATH = re.compile(r"/[\x20-\x3a\x3c-\x7e]*")
# RFC 9110 §5.6.7: IMF-fixdate = day-name "," SP date1 SP time-of-day SP GMT
_IMF_FIXDATE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{2}) "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([0-9]{4}) "
    r"([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT"
)
_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SAME_SITE = {"strict": "Strict", "lax": "Lax", "none": "None"}
_INJECTION = ("\r", "\n", "\x00", ";")
_OWS = " \t"


def _pairs(field: str) -> Iterable[tuple[str, str]]:
    for piece in field.split(";"):
        name, eq, value = piece.partition("=")
        name = name.strip(_OWS)
        if not eq or not name:
            continue
        value = value.strip(_OWS)
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            value = value[1:-1]
        yield name, value


def parse(header_value: str | bytes | Iterable[str | bytes]) -> dict[str, str]:
    """The cookies of one ``Cookie`` field value, or of several in order; first name wins.

    Bytes are read as Latin-1 (each octet one character, as the field arrived).
    Never raises on content.
    """
    fields: Iterable[str | bytes]
    fields = [header_value] if isinstance(header_value, str | bytes) else header_value
    cookies: dict[str, str] = {}
    for field in fields:
        text = field.decode("latin-1") if isinstance(field, bytes) else field
        for name, value in _pairs(text):
            cookies.setdefault(name, value)
    return cookies


def _check_no_injection(field: str, value: str) -> None:
    for bad in _INJECTION:
        if bad in value:
            raise InvalidCookie(field, f"contains {bad!r}")


def _domain(domain: str) -> str:
    _check_no_injection("domain", domain)
    host = domain[1:] if domain.startswith(".") else domain
    if not host or len(host) > 253:
        raise InvalidCookie("domain", f"{domain!r} is not a hostname of 1..253 octets")
    for label in host.split("."):
        if not _LABEL.fullmatch(label):
            raise InvalidCookie("domain", f"{domain!r} has an invalid label {label!r}")
    return host


def _path(path: str) -> str:
    _check_no_injection("path", path)
    if not _PATH.fullmatch(path):
        raise InvalidCookie("path", f"{path!r} must start with '/' and hold only visible ASCII")
    return path


def _max_age(max_age: int | timedelta) -> str:
    if isinstance(max_age, timedelta):
        max_age = int(max_age.total_seconds())
    if isinstance(max_age, bool) or not isinstance(max_age, int):
        raise InvalidCookie("max_age", f"{max_age!r} is not an int of seconds")
    if max_age < 0:
        raise InvalidCookie("max_age", f"{max_age} is negative")
    return str(max_age)


def format_imf_fixdate(moment: datetime) -> str:
    """``moment`` (an aware datetime) as an RFC 9110 §5.6.7 IMF-fixdate in GMT."""
    utc = moment.astimezone(UTC)
    return (
        f"{_DAY_NAMES[utc.weekday()]}, {utc.day:02d} {_MONTH_NAMES[utc.month - 1]} "
        f"{utc.year:04d} {utc.hour:02d}:{utc.minute:02d}:{utc.second:02d} GMT"
    )


def parse_imf_fixdate(text: str) -> datetime:
    """An RFC 9110 §5.6.7 IMF-fixdate as an aware UTC datetime; ``ValueError`` if it is not one."""
    match = _IMF_FIXDATE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not an IMF-fixdate")
    day_name, day, month, year, hour, minute, second = match.groups()
    moment = datetime(
        int(year),
        _MONTH_NAMES.index(month) + 1,
        int(day),
        int(hour),
        int(minute),
        int(second),
        tzinfo=UTC,
    )
    if _DAY_NAMES[moment.weekday()] != day_name:
        raise ValueError(f"{text!r} names the wrong day of the week")
    return moment


def _expires(expires: datetime | str) -> str:
    if isinstance(expires, str):
        _check_no_injection("expires", expires)
        try:
            return format_imf_fixdate(parse_imf_fixdate(expires))
        except ValueError as exc:
            raise InvalidCookie("expires", str(exc))
    if not isinstance(expires, datetime):
        raise InvalidCookie("expires", f"{expires!r} is neither a datetime nor an IMF-fixdate")
    if expires.tzinfo is None or expires.utcoffset() is None:
        raise InvalidCookie("expires", "a naive datetime is ambiguous; give it a tzinfo")
    return format_imf_fixdate(expires)


def _same_site(same_site: str) -> str:
    _check_no_injection("same_site", same_site)
    canonical = _SAME_SITE.get(same_site.lower())
    if canonical is None:
        raise InvalidCookie("same_site", f"{same_site!r} is not one of Strict, Lax, None")
    return canonical


def serialize(
    name: str,
    value: str,
    *,
    max_age: int | timedelta | None = None,
    expires: datetime | str | None = None,
    domain: str | None = None,
    path: str | None = None,
    secure: bool = False,
    http_only: bool = False,
    same_site: str | None = None,
    partitioned: bool = False,
) -> str:
    """One ``Set-Cookie`` field value; ``InvalidCookie`` naming the field if any part is unsafe."""
    for field, text in (("name", name), ("value", value)):
        if not isinstance(text, str):
            raise InvalidCookie(field, f"{text!r} is not a str")
    _check_no_injection("name", name)
    if not _TOKEN.fullmatch(name):
        raise InvalidCookie("name", f"{name!r} is not a token (RFC 9110 §5.6.2)")
    _check_no_injection("value", value)
    if not _COOKIE_VALUE.fullmatch(value):
        raise InvalidCookie("value", f"{value!r} has octets outside cookie-octet (RFC 6265 §4.1.1)")
    parts = [f"{name}={value}"]
    if domain is not None:
        parts.append(f"Domain={_domain(domain)}")
    if path is not None:
        parts.append(f"Path={_path(path)}")
    if max_age is not None:
        parts.append(f"Max-Age={_max_age(max_age)}")
    if expires is not None:
        parts.append(f"Expires={_expires(expires)}")
    if secure:
        parts.append("Secure")
    if http_only:
        parts.append("HttpOnly")
    if same_site is not None:
        canonical = _same_site(same_site)
        if canonical == "None" and not secure:
            raise InvalidCookie("same_site", "SameSite=None requires secure=True")
        parts.append(f"SameSite={canonical}")
    if partitioned:
        if not secure:
            raise InvalidCookie("partitioned", "Partitioned requires secure=True")
        parts.append("Partitioned")
    _check_prefix(name, secure=secure, domain=domain, path=path)
    return "; ".join(parts)


def _check_prefix(name: str, *, secure: bool, domain: str | None, path: str | None) -> None:
    # RFC 6265bis §4.1.3: prefixes are matched case-sensitively by the spec,
    # case-insensitively by browsers since 2024; enforce the stricter reading.
    lowered = name.lower()
    if lowered.startswith("__secure-") and not secure:
        raise InvalidCookie("name", "a __Secure- cookie requires secure=True")
    if lowered.startswith("__host-") and (not secure or domain is not None or path != "/"):
        raise InvalidCookie("name", "a __Host- cookie requires secure=True, path='/' and no domain")
