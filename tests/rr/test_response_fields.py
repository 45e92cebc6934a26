"""rr.exchange's check of a handler's headers, and its cache of whole sections.

A handler usually answers with the same headers request after request, so the
checked section is kept by value (the headers as a tuple); these tests hold the
cache to never answering for headers other than the ones it checked.
"""

from __future__ import annotations

import pytest

from rr import exchange, httpdate
from rr.exchange import InvalidResponse, response_fields


@pytest.fixture(autouse=True)
def _fresh_caches(monkeypatch):
    monkeypatch.setattr(exchange, "_checked", {})
    monkeypatch.setattr(exchange, "_sections", {})


def test_a_header_list_changed_after_it_was_cached_is_checked_again():
    headers = [("Content-Type", "text/plain")]
    assert response_fields(headers, add_date=False) == ([("content-type", "text/plain")], False)
    headers.append(("x-bad", "a\r\nb"))
    with pytest.raises(InvalidResponse, match="CR, LF or NUL"):
        response_fields(headers)
    headers[1] = ("Connection", "close")
    assert response_fields(headers, add_date=False) == ([("content-type", "text/plain")], True)


def test_each_answer_is_a_list_of_its_own_with_todays_date():
    headers = (("content-type", "text/plain"), ("x-a", "1"))
    first, _ = response_fields(headers)
    first.append(("x-added", "by the caller"))
    second, _ = response_fields(list(headers))
    assert second == [("content-type", "text/plain"), ("x-a", "1"), httpdate.date_field()]
    assert response_fields(headers + (("date", "Tue, 14 Nov 2023 22:13:20 GMT"),))[0][-1] == (
        "date", "Tue, 14 Nov 2023 22:13:20 GMT")  # the handler's own date, not a second one


def test_the_section_size_is_counted_as_rfc_9113_counts_it():
    headers = [("Content-Type", "text/plain"), ("Connection", "keep-alive"), ("x-long-name", "v" * 40)]
    for _ in range(2):  # checked, then from the cache
        fields, close, has_date, size = exchange._section(headers)
        assert fields == (("content-type", "text/plain"), ("x-long-name", "v" * 40)) and not close and not has_date
        assert size == sum(32 + len(n) + len(v) for n, v in fields)


def test_long_values_and_long_sections_are_not_cached_and_the_cache_is_bounded(monkeypatch):
    long_value = [("x-token", "t" * (exchange._CHECKED_VALUE_MAX + 1))]
    response_fields(long_value)
    many = [(f"x-{i}", "1") for i in range(exchange._SECTION_PAIRS_MAX + 1)]
    response_fields(many)
    assert exchange._sections == {}
    monkeypatch.setattr(exchange, "_SECTIONS_MAX", 8)
    for i in range(20):
        response_fields([("x-n", str(i))])
        assert len(exchange._sections) <= 8
    assert exchange._sections[(("x-n", "19"),)][0] == (("x-n", "19"),)


@pytest.mark.parametrize("headers", [[("a", ["list"])], [["content-type", "text/plain"]], [("a",)], ["ab"]])
def test_pairs_that_are_not_pairs_of_str_are_refused_every_time(headers):
    for _ in range(2):
        with pytest.raises(InvalidResponse):
            response_fields(headers)
    assert exchange._sections == {}
