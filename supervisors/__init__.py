"""Erlang/OTP-style processes for gevent: the public API (filled in by the foundation work)."""
