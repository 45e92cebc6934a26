"""rr.request: the two-step construction the protocols use stays the same object as Request(...)."""

from __future__ import annotations

from rr.request import NO_BODY, Headers, Request, init_request, new_request


def test_request_has_no_own_new_or_metaclass():
    # new_request (object.__new__) skips whatever a __new__ or a metaclass's __call__ would do.
    assert "__new__" not in Request.__dict__
    assert type(Request) is type


def test_two_steps_build_what_the_class_call_builds():
    headers = Headers([("host", "a.example"), ("x-one", "1")])
    kwargs = {"scheme": "https", "host": "a.example", "peer": ("127.0.0.1", 5), "listener": "l",
              "source": NO_BODY, "proxy": None, "peer_cert": {"subject": ()}}
    called = Request("GET", "/p?q=1", "/p", "q=1", "HTTP/1.1", headers, **kwargs)
    built = new_request(Request)
    init_request(built, "GET", "/p?q=1", "/p", "q=1", "HTTP/1.1", headers, **kwargs)
    assert type(built) is Request
    for name in Request.__slots__:
        assert getattr(built, name) == getattr(called, name), name
    assert built.private is not called.private  # per-request scratch is never shared
