"""A JSON REST resource: routes with methods (405 + allow), bindings, url_for.

    python examples/rest.py    # then: curl -X POST -d '{"title":"x"}' localhost:8080/todos
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import rr
from rr import resp

_ids = itertools.count(1)
todos: dict[str, dict[str, Any]] = {}


def list_todos(req: rr.Request) -> resp.Response:
    return resp.json(200, sorted(todos.values(), key=lambda t: t["id"]))


def create_todo(req: rr.Request) -> resp.Response:
    try:
        data = req.json()
    except ValueError:
        return resp.json(400, {"error": "body is not JSON"})
    if not isinstance(data, dict) or not isinstance(data.get("title"), str):
        return resp.json(422, {"error": "a todo needs a string 'title'"})
    todo = {"id": next(_ids), "title": data["title"], "done": False}
    todos[str(todo["id"])] = todo
    location = rr.url_for(req.listener, "todo", id=todo["id"])
    return resp.json(201, todo, {"location": location})


def show_todo(req: rr.Request) -> resp.Response:
    todo = todos.get(req.bindings["id"])
    return resp.json(200, todo) if todo else resp.json(404, {"error": "no such todo"})


def delete_todo(req: rr.Request) -> resp.Response:
    return resp.no_content() if todos.pop(req.bindings["id"], None) else resp.json(404, {"error": "no such todo"})


ROUTES = [
    {"path": "/todos", "handler": list_todos, "methods": ["GET"]},
    {"path": "/todos", "handler": create_todo, "methods": ["POST"]},
    {"path": "/todos/:id", "handler": show_todo, "methods": ["GET"], "name": "todo"},
    {"path": "/todos/:id", "handler": delete_todo, "methods": ["DELETE"]},
]


def main() -> None:
    rr.start_listener("rest", {"port": int(os.environ.get("RR_PORT", "8080")), "ip": "127.0.0.1",
                               "routes": ROUTES})
    print(f"rr: serving examples/rest.py on http://127.0.0.1:{rr.listener_port('rest')}/todos", flush=True)
    rr.wait()


if __name__ == "__main__":
    main()
