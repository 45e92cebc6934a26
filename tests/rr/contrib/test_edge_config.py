"""Header injection through configuration: every string a deployer can give an edge middleware
that ends up in a response header (or decides one) is refused at construction when it carries
CR, LF or NUL, with a ValueError naming the option."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from rr.contrib import compress, cors, security_headers

APP = "https://app.example"

# (builder, option, a valid value with {} where the hostile bytes go, wrap: value -> option value)
OPTIONS: list[tuple[Callable[..., Any], str, str, Callable[[str], Any], dict[str, Any]]] = [
    (compress.middleware, "encodings", "gzip{}", lambda v: [v], {}),
    (compress.middleware, "content_types", "text/html{}", lambda v: [v], {}),
    (cors.middleware, "origins", APP + "{}", lambda v: [v], {}),
    (cors.middleware, "allow_methods", "PUT{}", lambda v: [v], {"origins": [APP]}),
    (cors.middleware, "allow_headers", "x-token{}", lambda v: [v], {"origins": [APP]}),
    (cors.middleware, "expose_headers", "x-request-id{}", lambda v: [v], {"origins": [APP]}),
    (security_headers.middleware, "content_type_options", "nosniff{}", str, {}),
    (security_headers.middleware, "frame_options", "DENY{}", str, {}),
    (security_headers.middleware, "referrer_policy", "no-referrer{}", str, {}),
    (security_headers.middleware, "hsts", "max-age=60{}", str, {}),
    (security_headers.middleware, "csp", "default-src 'self'{}", str, {}),
    (security_headers.middleware, "csp_report_only", "default-src 'self'{}", str, {}),
]
HOSTILE = ["\r\nset-cookie: stolen=1", "\nx-evil: 1", "\r", "\0", "\x7f", "\x0b"]


@pytest.mark.parametrize("build, option, template, wrap, base", OPTIONS, ids=[o[1] for o in OPTIONS])
def test_the_valid_value_is_accepted(build, option, template, wrap, base):
    build(**base, **{option: wrap(template.format(""))})


@pytest.mark.parametrize("hostile", HOSTILE, ids=repr)
@pytest.mark.parametrize("build, option, template, wrap, base", OPTIONS, ids=[o[1] for o in OPTIONS])
def test_hostile_bytes_in_any_option_are_refused_naming_it(build, option, template, wrap, base, hostile):
    for where in (template.format(hostile), hostile + template.format("")):
        with pytest.raises(ValueError, match=repr(option)):
            build(**base, **{option: wrap(where)})
