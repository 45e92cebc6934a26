"""``rr.contrib.cookie`` is ``rr.cookie``: the parser lives in the core, which ``Request`` uses; this
name stays for applications that imported it from contrib."""

from rr.cookie import (  # noqa: F401 - re-exported
    InvalidCookie,
    format_imf_fixdate,
    parse,
    parse_imf_fixdate,
    serialize,
)
