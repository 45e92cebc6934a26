"""The router and middleware chains, table-driven, plus Hypothesis round trips."""

from __future__ import annotations

import pytest
from gevent import subprocess
from hypothesis import given
from hypothesis import strategies as st

from rr import resp
from rr.request import Headers, Request
from rr.router import Router, compile_app


def make_req(method: str = "GET", path: str = "/") -> Request:
    return Request(method, path, path, "", "HTTP/1.1", Headers([]))


def tag(name):
    def handler(req):
        return resp.json(200, {"h": name, "b": req.bindings, "s": req.state})

    return handler


def call(router, method, path):
    req = make_req(method, path)
    r = router(req)
    return r


ROUTES = [
    ("/", tag("root")),
    ("/users", tag("users")),
    ("/users/me", tag("me")),
    ("/users/:id", tag("user"), {"kind": "user"}),
    ("/users/:id/posts/:post", tag("post")),
    {"path": "/items", "handler": tag("items_get"), "methods": ["GET"], "name": "items"},
    {"path": "/items", "handler": tag("items_post"), "methods": ["POST"]},
    {"path": "/only-put", "handler": tag("put"), "methods": ["PUT", "DELETE"]},
    ("/files/*rest", tag("files")),
    ("/a/:x", tag("a_param")),
    ("/a/literal", tag("a_literal_shadowed")),
]


@pytest.mark.parametrize(
    ("method", "path", "status", "handler", "bindings"),
    [
        ("GET", "/", 200, "root", {}),
        ("GET", "/users", 200, "users", {}),
        ("GET", "/users/me", 200, "me", {}),  # declared before :id: literal wins by order
        ("GET", "/users/42", 200, "user", {"id": "42"}),
        ("GET", "/users/a%20b", 200, "user", {"id": "a b"}),
        ("GET", "/users/a%2Fb", 200, "user", {"id": "a/b"}),  # encoded slash stays in its segment
        ("GET", "/users/1/posts/2", 200, "post", {"id": "1", "post": "2"}),
        ("GET", "/users/1/posts", 404, None, None),
        ("GET", "/users/", 404, None, None),
        ("GET", "/items", 200, "items_get", {}),
        ("HEAD", "/items", 200, "items_get", {}),
        ("POST", "/items", 200, "items_post", {}),
        ("PUT", "/only-put", 200, "put", {}),
        ("GET", "/files/", 200, "files", {"rest": ""}),
        ("GET", "/files/a/b/c.txt", 200, "files", {"rest": "a/b/c.txt"}),
        ("GET", "/files/a%20b/c%2Fd", 200, "files", {"rest": "a%20b/c%2Fd"}),  # *rest: as on the wire
        ("GET", "/a/literal", 200, "a_param", {"x": "literal"}),  # first declared wins
        ("GET", "/nope", 404, None, None),
    ],
)
def test_route_table(method, path, status, handler, bindings):
    router = Router(ROUTES)
    r = call(router, method, path)
    assert r.status == status
    if status == 200:
        import json

        body = json.loads(r.body)
        assert body["h"] == handler and body["b"] == bindings


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [("DELETE", "/items", "GET, HEAD, POST"), ("GET", "/only-put", "DELETE, PUT")],
)
def test_path_matching_with_a_refused_method_is_405_with_a_sorted_allow_header(method, path, allow):
    r = call(Router(ROUTES), method, path)
    assert r.status == 405 and resp.get_header(r, "allow") == allow


def test_route_state_is_set_on_the_request():
    import json

    r = call(Router(ROUTES), "GET", "/users/7")
    assert json.loads(r.body)["s"] == {"kind": "user"}


def test_custom_not_found_handler():
    router = Router(ROUTES, not_found=lambda req: resp.text(404, "custom " + req.path))
    assert call(router, "GET", "/zzz").body == b"custom /zzz"


def test_url_for_reverses_named_routes_with_encoding():
    router = Router([
        {"path": "/users/:id/posts/:post", "handler": tag("p"), "name": "post"},
        {"path": "/static/*file", "handler": tag("s"), "name": "static"},
    ])
    assert router.url_for("post", id="a b", post=3) == "/users/a%20b/posts/3"
    assert router.url_for("static", file="css/site.css") == "/static/css/site.css"
    with pytest.raises(KeyError):
        router.url_for("post", id=1)
    with pytest.raises(KeyError):
        router.url_for("missing")


def test_url_for_takes_a_query_string():
    router = Router([{"path": "/users/:id", "handler": tag("u"), "name": "user"}])
    assert router.url_for("user", id=7, _query={"tab": "a b", "q": ["1", "2"]}) == "/users/7?tab=a+b&q=1&q=2"
    assert router.url_for("user", _query=[("x", "&=")], id=7) == "/users/7?x=%26%3D"
    assert router.url_for("user", id=7, _query={}) == "/users/7"


def test_a_middleware_that_cannot_take_req_next_state_fails_when_routes_compile():
    def two_args(req, nxt):
        return nxt(req)

    with pytest.raises(TypeError, match=r"must accept \(req, next, state\)"):
        Router([{"path": "/", "handler": tag("x"), "middlewares": [two_args]}])
    Router([{"path": "/", "handler": tag("x"), "middlewares": [lambda req, nxt, state: nxt(req),
                                                                lambda *a: a[1](a[0])]}])


def test_groups_flatten_prefix_and_middlewares_outermost_first():
    order = []

    def mw(label):
        def m(req, nxt, state):
            order.append(label)
            return nxt(req)

        return m

    router = Router(
        [{"prefix": "/api", "middlewares": [mw("group")], "routes": [
            {"path": "/users/:id", "handler": tag("u"), "middlewares": [mw("route")]},
            {"prefix": "/v2", "middlewares": [mw("inner")], "routes": [("/ping", tag("ping"))]},
        ]}],
        [mw("listener")],
    )
    assert call(router, "GET", "/api/users/1").status == 200
    assert order == ["listener", "group", "route"]
    order.clear()
    assert call(router, "GET", "/api/v2/ping").status == 200
    assert order == ["listener", "group", "inner"]
    order.clear()
    assert call(router, "GET", "/users/1").status == 404
    assert order == ["listener"]  # 404s still pass the listener-wide middlewares


@pytest.mark.parametrize(
    "routes",
    [
        [("no-slash", tag("x"))],
        [("/a/*rest/b", tag("x"))],
        [("/a/:", tag("x"))],
        [("/a/:x/:x", tag("x"))],
        [{"path": "/a", "handler": tag("x"), "bogus": 1}],
        [{"path": "/a", "handler": "not callable"}],
        [{"path": "/a", "handler": tag("x"), "methods": "GET"}],
        [{"path": "/a", "handler": tag("x"), "name": "n"}, {"path": "/b", "handler": tag("y"), "name": "n"}],
        [{"prefix": "api", "routes": []}],
        [42],
    ],
)
def test_bad_route_tables_are_refused_at_compile(routes):
    with pytest.raises(ValueError):
        Router(routes)


def test_middleware_short_circuit_and_rewrite():
    def auth(req, nxt, state):
        if req.path == "/secret":
            return resp.text(401, "no")
        req.private["seen"] = state
        return nxt(req)

    app = compile_app([("/secret", tag("s")), ("/open", lambda req: resp.text(200, req.private["seen"]))],
                      [(auth, "cfg")])
    assert app(make_req("GET", "/secret")).status == 401
    assert app(make_req("GET", "/open")).body == b"cfg"


def test_middleware_init_runs_once_at_compile():
    calls = []

    class Counter:
        @staticmethod
        def init(config):
            calls.append(config)
            return {"n": config}

        def __call__(self, req, nxt, state):
            return resp.text(200, str(state["n"]))

    app = compile_app(lambda req: resp.text(200, "x"), [(Counter(), 5)])
    assert calls == [5]
    assert app(make_req()).body == b"5" and app(make_req()).body == b"5"
    assert calls == [5]


def test_middleware_can_wrap_a_stream_chunk_by_chunk():
    def upper(req, nxt, state):
        r = nxt(req)
        inner = r.fn

        def fn(send):
            inner(lambda data, fin=False, trailers=None: send(data.upper(), fin, trailers))

        return resp.Stream(r.status, r.headers, fn)

    app = compile_app(lambda req: resp.Stream(200, [], lambda send: send(b"abc", fin=True)), [upper])
    out = []
    app(make_req()).fn(lambda data, fin=False, trailers=None: out.append(data))
    assert out == [b"ABC"]


def test_a_hundred_routes_still_match_the_last_one():
    routes = [(f"/r{i}/:id", tag(f"r{i}")) for i in range(100)]
    router = Router(routes)
    route, bindings, _ = router.match("GET", "/r99/x")
    assert route is not None and route.path == "/r99/:id" and bindings == {"id": "x"}


segment = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=12)


@given(values=st.lists(segment, min_size=1, max_size=4))
def test_bindings_round_trip_through_url_for(values):
    names = [f"p{i}" for i in range(len(values))]
    path = "/x/" + "/".join(f":{n}" for n in names)
    router = Router([{"path": path, "handler": tag("x"), "name": "r"}])
    url = router.url_for("r", **dict(zip(names, values, strict=True)))
    route, bindings, _ = router.match("GET", url)
    assert route is not None and bindings == dict(zip(names, values, strict=True))


def _reference_match(routes, method, path):
    """The specification, naively: the first declared route whose pattern matches
    and whose methods allow the method; else 405 with the union, else 404."""
    segments = path[1:].split("/")
    refused: set[str] = set()
    for pattern, methods in routes:
        pats = pattern[1:].split("/")
        if pats[-1].startswith("*"):
            ok = len(segments) >= len(pats) - 1 and all(
                p.startswith(":") and s or p == s for p, s in zip(pats[:-1], segments, strict=False)
            )
        else:
            ok = len(segments) == len(pats) and all(
                (p.startswith(":") and s) or p == s for p, s in zip(pats, segments, strict=True)
            )
        if not ok:
            continue
        if methods is None or method in methods or (method == "HEAD" and "GET" in methods):
            return pattern, []
        refused |= set(methods) | ({"HEAD"} if "GET" in methods else set())
    return None, sorted(refused)


_seg = st.sampled_from(["a", "b", "c", ":x", ":y"])
_route = st.tuples(
    st.builds(lambda segs, wild: "/" + "/".join(segs + (["*rest"] if wild else [])),
              st.lists(_seg, min_size=0, max_size=3), st.booleans()),
    st.one_of(st.none(), st.sampled_from([("GET",), ("POST",), ("GET", "PUT")])),
)


@given(table=st.lists(_route, min_size=1, max_size=12),
       path=st.builds(lambda segs: "/" + "/".join(segs), st.lists(st.sampled_from(["a", "b", "c", "d", ""]), max_size=4)),
       method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE"]))
def test_trie_matching_equals_first_declared_reference(table, path, method):
    seen: set[str] = set()
    routes = []
    for pattern, methods in table:
        names = [s for s in pattern.split("/") if s.startswith(":")]
        if len(names) != len(set(names)):
            continue  # duplicate binding names are refused at compile: not a valid table
        routes.append((pattern, methods))
        seen.add(pattern)
    if not routes:
        return
    router = Router([{"path": p, "handler": tag(p), **({"methods": list(m)} if m else {})} for p, m in routes])
    route, _, allowed = router.match(method, path)
    expected, expected_allowed = _reference_match(routes, method, path)
    assert (route.path if route else None) == expected
    if expected is None:
        assert allowed == expected_allowed


def test_the_request_names_the_matched_route_pattern_and_name():
    router = Router([
        {"prefix": "/api", "routes": [
            ("/users/:id", tag("user")),
            {"path": "/files/*rest", "handler": tag("files"), "name": "files"},
        ]},
        ("/users", tag("users")),  # a literal route (the fast path)
    ])
    seen = []
    for path in ("/api/users/7", "/api/files/a/b", "/users", "/nope"):
        req = make_req("GET", path)
        router(req)
        seen.append((req.route, req.route_name))
    assert seen == [("/api/users/:id", None), ("/api/files/*rest", "files"), ("/users", None), (None, None)]


def test_a_route_can_stream_its_body_while_the_listener_buffers(serve):
    """``body_buffering`` per route: the manual route reads in pieces (no buffered body), the
    other route of the same listener gets the body read before it runs."""
    import rr as _rr
    from rr import resp as _resp

    seen = {}

    def streaming(req):
        seen["streaming_buffered"] = req.body_buffered
        parts = []
        while piece := req.read_body(1000):
            parts.append(piece)
        return _resp.text(200, f"{len(parts)} pieces")

    def buffered(req):
        seen["buffered_buffered"] = req.body_buffered
        return _resp.text(200, f"{len(req.read_body())} bytes")

    srv = serve([{"path": "/stream", "handler": streaming, "body_buffering": "manual"},
                 ("/buffered", buffered)])
    import httpx

    from tests.rr.conftest import in_thread

    def client():
        with httpx.Client() as c:
            return (c.post(f"http://127.0.0.1:{srv.port}/stream", content=b"x" * 5000).text,
                    c.post(f"http://127.0.0.1:{srv.port}/buffered", content=b"x" * 5000).text)

    assert in_thread(client) == ("5 pieces", "5000 bytes")
    assert seen == {"streaming_buffered": False, "buffered_buffered": True}
    assert _rr.listener_info(srv.name)["requests_served"] == 2


def test_a_bad_route_body_buffering_names_it():
    import pytest as _pytest

    from rr import router

    with _pytest.raises(ValueError, match="body_buffering"):
        router.Router([{"path": "/x", "handler": lambda r: None, "body_buffering": "sometimes"}])


def test_each_middleware_entry_inits_once_however_many_routes_it_wraps():
    calls = []

    def counting(label):
        def mw(req, nxt, state):
            state["hits"] += 1
            return resp.text(200, f"{label} {state['hits']}")

        mw.init = lambda config: calls.append(label) or {"hits": 0}
        return mw

    router = Router(
        [("/a", tag("a")), ("/b", tag("b")),
         {"prefix": "/g", "middlewares": [(counting("group"), None)], "routes": [("/x", tag("x")), ("/y", tag("y"))]},
         {"path": "/own", "handler": tag("own"), "middlewares": [(counting("route"), None)]}],
        [(counting("listener"), None)],
    )
    assert sorted(calls) == ["group", "listener", "route"]
    answers = [call(router, "GET", path).body for path in ("/a", "/b", "/g/x", "/nope")]
    assert answers == [b"listener 1", b"listener 2", b"listener 3", b"listener 4"]  # one state for all


def _curl(*args: str) -> str:
    out = subprocess.run(["curl", "-s", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                          *args], capture_output=True, timeout=20)
    return out.stdout.decode()


@pytest.mark.peers("curl")
def test_redirect_slashes_sends_308_to_the_other_spelling_keeping_query_and_method(serve):
    routes = [("/books", tag("books")), ("/shelf/", tag("shelf")), ("/", tag("root")),
              {"path": "/post-only", "handler": tag("post"), "methods": ["POST"]}]
    on = serve(routes, redirect_slashes=True)
    assert _curl(f"{on.url}/books/?q=1") == f"308 {on.url}/books?q=1"
    assert _curl(f"{on.url}/shelf") == f"308 {on.url}/shelf/"
    assert _curl("-L", "-X", "POST", "-w", "%{http_code} %{method}", f"{on.url}/books/") == "200 POST"
    assert _curl(f"{on.url}/post-only/") == "404 "  # the other spelling refuses GET: no redirect
    assert _curl(f"{on.url}/nothing/") == "404 "
    off = serve(routes)
    assert _curl(f"{off.url}/books/") == "404 "


def test_redirect_slashes_never_makes_a_scheme_relative_location():
    router = Router([("//evil.example", tag("x")), ("/", tag("root"))], redirect_slashes=True)
    assert call(router, "GET", "//evil.example/").status == 404
