"""``rr.contrib.qs`` is ``rr.qs``: the parser lives in the core, which ``Request`` uses; this
name stays for applications that imported it from contrib."""

from rr.qs import (  # noqa: F401 - re-exported
    MAX_KEY_LENGTH,
    MAX_PAIRS,
    LimitExceeded,
    encode,
    parse,
    parse_dict,
    quote,
    unquote,
)
