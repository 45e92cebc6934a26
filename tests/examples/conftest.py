"""Examples use the rr fixtures (listener on an ephemeral port, rr's root supervisor)."""

from tests.rr.conftest import rr_root_supervisor, serve  # noqa: F401
