"""rr.contrib.multipart: a streaming RFC 7578 parser with bounded memory, read as a specification."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rr.contrib import multipart
from rr.contrib.multipart import Done, MultipartError, MultipartParser, PartData, PartEnd, PartStart

B = b"boundary42"


def part(name: str, body: bytes, *, filename: str | None = None, extra: bytes = b"") -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    return (
        b"--"
        + B
        + b"\r\nContent-Disposition: "
        + disposition.encode()
        + b"\r\n"
        + extra
        + b"\r\n"
        + body
        + b"\r\n"
    )


def form(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--" + B + b"--\r\n"


SIMPLE = form(
    part("a", b"1"),
    part("f", b"line1\r\nline2", filename="x.txt", extra=b"Content-Type: text/csv\r\n"),
)


def merged(events: list[multipart.Event]) -> list[object]:
    """Events with adjacent PartData joined: chunking must not change this."""
    out: list[object] = []
    for event in events:
        if isinstance(event, PartData) and out and isinstance(out[-1], PartData):
            out[-1] = PartData(out[-1].data + event.data)
        else:
            out.append(event)
    return out


def feed_all(body: bytes, *cuts: int, **limits: int) -> list[object]:
    parser = MultipartParser(B, **limits)
    events: list[multipart.Event] = []
    bounds = [0, *cuts, len(body)]
    for start, end in zip(bounds, bounds[1:], strict=False):
        events += parser.feed(body[start:end])
    events += parser.finish()
    return merged(events)


def failure(body: bytes | Iterator[bytes], **limits: int) -> MultipartError:
    parser = MultipartParser(B, **limits)
    chunks = [body] if isinstance(body, bytes) else body
    with pytest.raises(MultipartError) as info:
        for chunk in chunks:
            parser.feed(chunk)
        parser.finish()
    return info.value


# --- parse_boundary -------------------------------------------------------------------

BOUNDARY_CASES = [
    ("multipart/form-data; boundary=abc", b"abc"),
    ('multipart/form-data; boundary="abc"', b"abc"),
    ("Multipart/Form-Data; BOUNDARY=abc", b"abc"),
    ("multipart/form-data;boundary=abc", b"abc"),
    ("multipart/form-data; charset=utf-8; boundary=abc  ", b"abc"),
    ('multipart/form-data; boundary="has space"', b"has space"),
    (
        "multipart/mixed; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW",
        b"----WebKitFormBoundary7MA4YWxkTrZu0gW",
    ),
    ("multipart/form-data; boundary=" + "x" * 70, b"x" * 70),
    ('multipart/form-data; boundary="\'()+_,-./:=?"', b"'()+_,-./:=?"),
]


@pytest.mark.parametrize(("content_type", "boundary"), BOUNDARY_CASES)
def test_parse_boundary_reads_token_or_quoted_boundaries(
    content_type: str, boundary: bytes
) -> None:
    assert multipart.parse_boundary(content_type) == boundary


BAD_BOUNDARY_CASES = [
    ("application/json", 415),
    ("text/plain; boundary=abc", 415),
    ("multipart", 415),
    ("multipart/form-data", 400),
    ("multipart/form-data; boundary=", 400),
    ('multipart/form-data; boundary=""', 400),
    ("multipart/form-data; boundary=" + "x" * 71, 400),
    ('multipart/form-data; boundary="ends with space "', 400),
    ('multipart/form-data; boundary="semi;colon"', 400),
    ('multipart/form-data; boundary="quote\\"d"', 400),
    ("multipart/form-data; boundary=a; boundary=b", 400),
    ("multipart/form-data; boundary=abc garbage", 400),
    ("multipart/form-data; boundary=a/b", 400),
    ('multipart/form-data; boundary="unterminated', 400),
    ('multipart/form-data; boundary="é"', 400),
]


@pytest.mark.parametrize(("content_type", "status"), BAD_BOUNDARY_CASES)
def test_parse_boundary_rejects_missing_invalid_or_ambiguous_boundaries(
    content_type: str, status: int
) -> None:
    with pytest.raises(MultipartError) as info:
        multipart.parse_boundary(content_type)
    assert info.value.status == status


@pytest.mark.parametrize("boundary", [b"bad\r\nboundary", b"", "é", "x" * 71, b"space "])
def test_the_parser_validates_its_boundary_too(boundary: bytes | str) -> None:
    with pytest.raises(MultipartError) as info:
        MultipartParser(boundary)
    assert info.value.status == 400


# --- the event stream -----------------------------------------------------------------


def test_a_form_parses_into_start_data_end_events_and_done() -> None:
    assert feed_all(SIMPLE) == [
        PartStart("a", None, "text/plain", (("content-disposition", 'form-data; name="a"'),)),
        PartData(b"1"),
        PartEnd(),
        PartStart(
            "f",
            "x.txt",
            "text/csv",
            (
                ("content-disposition", 'form-data; name="f"; filename="x.txt"'),
                ("content-type", "text/csv"),
            ),
        ),
        PartData(b"line1\r\nline2"),
        PartEnd(),
        Done(),
    ]


def test_a_boundary_split_at_every_feed_point_gives_the_same_events() -> None:
    expected = feed_all(SIMPLE)
    for cut in range(len(SIMPLE) + 1):
        assert feed_all(SIMPLE, cut) == expected, cut


def test_a_body_fed_one_byte_at_a_time_gives_the_same_events() -> None:
    assert feed_all(SIMPLE, *range(1, len(SIMPLE))) == feed_all(SIMPLE)


def test_an_empty_part_body_has_no_data_event() -> None:
    assert feed_all(form(part("a", b""))) == [
        PartStart("a", None, "text/plain", (("content-disposition", 'form-data; name="a"'),)),
        PartEnd(),
        Done(),
    ]


def test_a_form_with_no_parts_is_just_the_close_delimiter() -> None:
    assert feed_all(b"--" + B + b"--\r\n") == [Done()]


def test_preamble_transport_padding_and_epilogue_are_ignored() -> None:
    body = (
        b"This is the preamble.\r\n--"
        + B
        + b" \t\r\nContent-Disposition: form-data; name=a\r\n\r\n"
        b"v\r\n--" + B + b"--  \r\nThis is the epilogue, --" + B + b"\r\nstill epilogue"
    )
    events = feed_all(body)
    assert [type(e) for e in events] == [PartStart, PartData, PartEnd, Done]
    assert events[1] == PartData(b"v")


def test_data_that_resembles_a_boundary_without_the_crlf_is_data() -> None:
    body = form(part("a", b"--" + B + b" not at line start \r--" + B + b"\n--" + B))
    assert feed_all(body)[1] == PartData(b"--" + B + b" not at line start \r--" + B + b"\n--" + B)


def test_data_is_emitted_before_the_delimiter_arrives() -> None:
    parser = MultipartParser(B)
    parser.feed(b"--" + B + b"\r\nContent-Disposition: form-data; name=f; filename=a\r\n\r\n")
    events = parser.feed(b"x" * 1000)
    assert events == [PartData(b"x" * 1000)]


def test_the_parser_holds_at_most_the_boundary_lookback() -> None:
    parser = MultipartParser(B)
    parser.feed(b"--" + B + b"\r\nContent-Disposition: form-data; name=f; filename=a\r\n\r\n")
    for _ in range(100):
        parser.feed(b"\r\n--" + B[:-1])  # always looks like the start of a delimiter
        assert len(parser._buffer) <= len(B) + 4


def test_nested_multipart_mixed_is_delivered_as_raw_bytes() -> None:
    inner = b"--inner\r\nContent-Type: text/plain\r\n\r\nfile\r\n--inner--"
    body = form(part("files", inner, extra=b"Content-Type: multipart/mixed; boundary=inner\r\n"))
    events = feed_all(body)
    assert isinstance(events[0], PartStart) and events[0].content_type.startswith("multipart/mixed")
    assert events[1] == PartData(inner)


DISPOSITION_CASES = [
    # (Content-Disposition value, name, filename)
    ('form-data; name="a"', "a", None),
    ("form-data; name=a", "a", None),
    ("FORM-DATA; NAME=a", "a", None),
    ('form-data; name="a"; filename=""', "a", ""),
    ('form-data; name="a\\"b\\\\c"', 'a"b\\c', None),
    ('form-data; name="a"; filename="C:\\dir\\file.txt"', "a", "C:\\dir\\file.txt"),
    ('form-data; name="a"; filename="a;b=c.txt"', "a", "a;b=c.txt"),
    ('form-data; name="a"; filename="résumé.pdf"', "a", "résumé.pdf"),
    ("form-data; name=a; filename*=UTF-8''%E2%82%AC%20rates.txt", "a", "€ rates.txt"),
    ("form-data; name=a; filename=fallback.txt; filename*=utf-8'en'%C3%A9.txt", "a", "é.txt"),
    ("form-data; name=a; filename*=ISO-8859-1''%E9.txt", "a", "é.txt"),
    ("form-data; name=a; filename=fallback.txt; filename*=koi8-r''%C1", "a", "fallback.txt"),
    ("form-data; name*=UTF-8''%C3%BC; filename=x", "ü", "x"),
    ("form-data ; name = a ;", "a", None),
]


@pytest.mark.parametrize(("disposition", "name", "filename"), DISPOSITION_CASES)
def test_content_disposition_parameters(disposition: str, name: str, filename: str | None) -> None:
    body = (
        b"--"
        + B
        + b"\r\nContent-Disposition: "
        + disposition.encode()
        + b"\r\n\r\nx\r\n--"
        + B
        + b"--"
    )
    start = feed_all(body)[0]
    assert isinstance(start, PartStart)
    assert (start.name, start.filename) == (name, filename)


MALFORMED_CASES = [
    # (body, rule) — every one is a 400
    (b"no boundary anywhere", "a body without an opening boundary"),
    (b"--" + B + b"X\r\n\r\n", "a boundary followed by other bytes"),
    (b"--" + B + b" x\r\n", "padding followed by other bytes"),
    (b"--" + B + b"\nContent-Disposition: form-data; name=a\n\nv\n--" + B + b"--", "LF-only lines"),
    (b"--" + B + b"\r\n\r\nv\r\n--" + B + b"--", "a part without headers"),
    (
        b"--" + B + b"\r\nContent-Type: text/plain\r\n\r\nv\r\n--" + B + b"--",
        "no Content-Disposition",
    ),
    (b"--" + B + b"\r\nContent-Disposition: attachment; name=a\r\n\r\n", "not form-data"),
    (b"--" + B + b"\r\nContent-Disposition: form-data\r\n\r\n", "no name"),
    (
        b"--" + B + b"\r\nContent-Disposition: form-data; filename=a\r\n\r\n",
        "a filename but no name",
    ),
    (b"--" + B + b"\r\nContent-Disposition: form-data; name=a; name=b\r\n\r\n", "duplicate name"),
    (
        b"--" + B + b'\r\nContent-Disposition: form-data; name="a\r\n\r\n',
        "unterminated quoted-string",
    ),
    (b"--" + B + b"\r\nContent-Disposition: form-data; name=a b\r\n\r\n", "junk after a parameter"),
    (b"--" + B + b"\r\nContent-Disposition: form-data;\r\n name=a\r\n\r\n", "obs-fold"),
    (
        b"--" + B + b"\r\nContent-Disposition: form-data; name=a\r\nX-Bad\r\n\r\n",
        "a line without a colon",
    ),
    (
        b"--" + B + b"\r\nContent-Disposition: form-data; name=a\r\nBad Name: v\r\n\r\n",
        "a space in a header name",
    ),
    (
        b"--" + B + b"\r\nContent-Disposition: form-data; name=a\nX: v\r\n\r\n",
        "a bare LF in a header",
    ),
    (
        b"--" + B + b"\r\nContent-Disposition: form-data; name=a\rX: v\r\n\r\n",
        "a bare CR in a header",
    ),
    (b"--" + B + b'\r\nContent-Disposition: form-data; name="a\x00"\r\n\r\n', "a NUL in a header"),
    (
        b"--"
        + B
        + b"\r\nContent-Disposition: form-data; name=a; filename*=UTF-8''a%0D%0AX\r\n\r\n",
        "CR/LF smuggled through filename*",
    ),
    (
        b"--" + B + b"\r\nContent-Disposition: form-data; name=a; filename*=garbage\r\n\r\n",
        "a malformed extended value",
    ),
    (
        b"--" + B + b"\r\nContent-Disposition: form-data; name=a\r\n\r\nunterminated",
        "no close delimiter",
    ),
    (
        b"--" + B + b"\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--" + B,
        "a delimiter, then EOF",
    ),
    (b"--" + B + b"\r\nContent-Disposition: form-data; name=a\r\n", "EOF inside the headers"),
    (b"", "an empty body"),
]


@pytest.mark.parametrize(("body", "rule"), MALFORMED_CASES, ids=[c[1] for c in MALFORMED_CASES])
def test_malformed_bodies_are_rejected_400(body: bytes, rule: str) -> None:
    assert failure(body).status == 400


def test_a_failed_parser_keeps_failing() -> None:
    parser = MultipartParser(B)
    with pytest.raises(MultipartError):
        parser.feed(b"--" + B + b"X")
    with pytest.raises(MultipartError):
        parser.feed(b"more")
    with pytest.raises(MultipartError):
        parser.finish()


# --- limits and bombs -----------------------------------------------------------------


def test_many_tiny_parts_fail_at_max_parts_413() -> None:
    bomb = part("a", b"") * 100_000
    consumed = 0

    def chunks() -> Iterator[bytes]:
        nonlocal consumed
        for offset in range(0, len(bomb), 4096):
            consumed += 4096
            yield bomb[offset : offset + 4096]

    error = failure(chunks(), max_parts=100)
    assert error.status == 413 and "max_parts=100" in str(error)
    assert consumed < 101 * len(part("a", b"")) + 4096


def test_exactly_max_parts_is_allowed() -> None:
    assert feed_all(form(*[part("a", b"")] * 3), max_parts=3)[-1] == Done()


def test_a_gigabyte_header_fails_after_max_part_header_size() -> None:
    consumed = 0

    def chunks() -> Iterator[bytes]:
        nonlocal consumed
        yield b"--" + B + b'\r\nContent-Disposition: form-data; name=a; x="'
        for _ in range(16384):  # 16384 * 64 KiB = 1 GiB
            consumed += 65536
            yield b"x" * 65536

    error = failure(chunks())
    assert error.status == 413 and "max_part_header_size" in str(error)
    assert consumed == 65536


def test_a_header_block_just_over_the_limit_fails_even_when_complete() -> None:
    line = b"X-Pad: " + b"p" * 100 + b"\r\n"
    body = form(part("a", b"v", extra=line * 10))
    assert failure(body, max_part_header_size=512).status == 413
    assert feed_all(body, max_part_header_size=4096)[-1] == Done()


def test_an_endless_preamble_fails_fast_400() -> None:
    def chunks() -> Iterator[bytes]:
        while True:
            yield b"\r\n--not-the-boundary " * 100

    assert failure(chunks(), max_part_header_size=8192).status == 400


def test_endless_transport_padding_fails_fast_400() -> None:
    def chunks() -> Iterator[bytes]:
        yield b"--" + B
        while True:
            yield b" " * 4096

    assert failure(chunks()).status == 400


def test_an_unterminated_body_fails_at_finish_400() -> None:
    parser = MultipartParser(B)
    parser.feed(b"--" + B + b"\r\nContent-Disposition: form-data; name=f; filename=a\r\n\r\n")
    for _ in range(100):
        parser.feed(b"z" * 1000)
    with pytest.raises(MultipartError) as info:
        parser.finish()
    assert info.value.status == 400


def test_a_body_over_max_total_size_fails_413_on_arrival() -> None:
    error = failure(iter([b"--" + B + b"\r\n", b"x" * 2000]), max_total_size=1000)
    assert error.status == 413 and "max_total_size=1000" in str(error)


def test_the_epilogue_counts_towards_max_total_size() -> None:
    parser = MultipartParser(B, max_total_size=100)
    parser.feed(b"--" + B + b"--\r\n")
    with pytest.raises(MultipartError):
        parser.feed(b"e" * 100)


def test_a_field_over_max_field_size_fails_413_but_a_file_does_not() -> None:
    big = b"v" * 2000
    assert failure(form(part("a", big)), max_field_size=1000).status == 413
    events = feed_all(form(part("a", big, filename="f")), max_field_size=1000)
    assert events[1] == PartData(big)


# --- parse_form -----------------------------------------------------------------------


def test_parse_form_collects_fields_and_files() -> None:
    body = form(part("a", "é".encode()), part("a", b"2"), part("f", b"data", filename="../x.txt"))
    with multipart.parse_form([body], B) as result:
        assert result.fields == {"a": ["é", "2"]}
        (upload,) = result.files["f"]
        assert (upload.name, upload.filename, upload.safe_filename) == ("f", "../x.txt", "x.txt")
        assert (upload.content_type, upload.size, upload.path) == ("text/plain", 4, None)
        assert upload.read() == b"data"


def test_invalid_utf8_in_a_field_is_replaced() -> None:
    result = multipart.parse_form([form(part("a", b"\xff"))], B)
    assert result.fields == {"a": ["\ufffd"]}


def test_a_file_past_the_spool_threshold_goes_to_a_temporary_file_removed_on_close(
    tmp_path: Path,
) -> None:
    body = form(part("f", b"x" * 5000, filename="big.bin"), part("g", b"small", filename="s"))
    chunks = [body[i : i + 700] for i in range(0, len(body), 700)]
    result = multipart.parse_form(chunks, B, spool_threshold=1000, tmpdir=str(tmp_path))
    big, small = result.files["f"][0], result.files["g"][0]
    assert big.path is not None and Path(big.path).parent == tmp_path
    assert Path(big.path).read_bytes() == b"x" * 5000
    assert big.read() == b"x" * 5000 and big.size == 5000
    assert small.path is None and small.read() == b"small"
    result.close()
    assert not os.path.exists(big.path)
    assert big.closed and small.closed
    assert list(tmp_path.iterdir()) == []


def test_parse_form_removes_spooled_files_when_the_body_is_bad(tmp_path: Path) -> None:
    body = part("f", b"x" * 5000, filename="big.bin")  # no close delimiter
    with pytest.raises(MultipartError):
        multipart.parse_form([body], B, spool_threshold=10, tmpdir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_parse_form_passes_limits_to_the_parser() -> None:
    with pytest.raises(MultipartError) as info:
        multipart.parse_form([form(part("a", b"x" * 10))], B, max_field_size=5)
    assert info.value.status == 413


SAFE_FILENAME_CASES = [
    ("report.pdf", "report.pdf"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\me\\photo.jpg", "photo.jpg"),
    ("dir/", ""),
    ("..", ""),
    (".", ""),
    ("a\x00b.txt", "ab.txt"),
    ("/abs/..", ""),
    ("  spaced  ", "  spaced  "),
]


@pytest.mark.parametrize(("raw", "safe"), SAFE_FILENAME_CASES)
def test_safe_filename_is_a_basename_without_separators_or_nul(raw: str, safe: str) -> None:
    assert multipart.safe_filename(raw) == safe


# --- round trips ----------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratedPart:
    name: str
    filename: str | None
    content_type: str | None
    body: bytes


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def encode(parts: list[GeneratedPart], boundary: bytes) -> bytes:
    out = []
    for p in parts:
        disposition = f"form-data; name={_quote(p.name)}"
        if p.filename is not None:
            disposition += f"; filename={_quote(p.filename)}"
        headers = f"Content-Disposition: {disposition}\r\n"
        if p.content_type is not None:
            headers += f"Content-Type: {p.content_type}\r\n"
        out.append(b"--" + boundary + b"\r\n" + headers.encode() + b"\r\n" + p.body + b"\r\n")
    return b"".join(out) + b"--" + boundary + b"--\r\n"


_header_text = st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=12)
_parts = st.lists(
    st.builds(
        GeneratedPart,
        name=_header_text,
        filename=st.none() | _header_text,
        content_type=st.none() | st.sampled_from(["text/plain", "image/png", "application/json"]),
        body=st.binary(max_size=300) | st.sampled_from([b"\r\n", b"\r\n--", b"--\r\n", b"\r"]),
    ),
    max_size=6,
)
_boundaries = st.text("0123456789abcdefXYZ'()+_,-./:=? ", min_size=1, max_size=70).filter(
    lambda b: not b.endswith(" ")
)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200)
@given(_parts, _boundaries, st.data())
def test_a_generated_form_fed_in_random_splits_parses_back(
    parts: list[GeneratedPart], boundary_text: str, data: st.DataObject
) -> None:
    boundary = boundary_text.encode()
    assume(all(b"\r\n--" + boundary not in b"\r\n" + p.body + b"\r\n" for p in parts))
    body = encode(parts, boundary)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=8)))
    parser = MultipartParser(boundary)
    events: list[multipart.Event] = []
    for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True):
        events += parser.feed(body[start:end])
    parser.finish()
    parsed: list[GeneratedPart] = []
    for event in merged(events):
        if isinstance(event, PartStart):
            content_type = dict(event.headers).get("content-type")
            parsed.append(GeneratedPart(event.name, event.filename, content_type, b""))
        elif isinstance(event, PartData):
            last = parsed[-1]
            parsed[-1] = GeneratedPart(last.name, last.filename, last.content_type, event.data)
    assert parsed == parts
    assert isinstance(events[-1], Done)


@settings(
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    max_examples=50,
)
@given(_parts, st.integers(1, 64), st.integers(0, 200))
def test_parse_form_round_trips_fields_and_files(
    tmp_path: Path, parts: list[GeneratedPart], chunk: int, threshold: int
) -> None:
    boundary = b"----rr-round-trip-7f3a"
    body = encode(parts, boundary)
    with multipart.parse_form(
        [body[i : i + chunk] for i in range(0, len(body), chunk)],
        boundary,
        spool_threshold=threshold,
        tmpdir=str(tmp_path),
    ) as result:
        fields: dict[str, list[str]] = {}
        files: dict[str, list[tuple[str, bytes]]] = {}
        for p in parts:
            if p.filename is None:
                fields.setdefault(p.name, []).append(p.body.decode("utf-8", "replace"))
            else:
                files.setdefault(p.name, []).append((p.filename, p.body))
        assert result.fields == fields
        assert {
            name: [(u.filename, u.read()) for u in uploads]
            for name, uploads in result.files.items()
        } == files
    assert list(tmp_path.iterdir()) == []


@given(st.binary(max_size=500), st.lists(st.integers(0, 500), max_size=5))
def test_arbitrary_bytes_raise_only_multipart_error(body: bytes, cuts: list[int]) -> None:
    parser = MultipartParser(B)
    try:
        for start, end in zip([0, *sorted(cuts)], [*sorted(cuts), len(body)], strict=True):
            parser.feed(body[start:end])
        parser.finish()
    except MultipartError as exc:
        assert exc.status in (400, 413)
