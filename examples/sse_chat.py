"""An SSE chat: a `supervisors` pub/sub process and `Loop` handlers, one per listener.

    python examples/sse_chat.py
    curl -N localhost:8080/events &          # subscribe
    curl -d 'hi there' localhost:8080/say    # publish

The hub is a gen_server registered as "chat.hub". Each `/events` request
subscribes its own process (the connection process running the `Loop`) and
the hub monitors subscribers, so one that goes away is dropped without any
cleanup code in the handler.
"""

from __future__ import annotations

import os
from typing import Any

import rr
import supervisors
from rr import resp
from rr.contrib import sse


class Hub(supervisors.Server):
    def init(self) -> None:
        self.subscribers: dict[Any, Any] = {}  # monitor ref -> pid

    def handle_call(self, msg: Any, from_: Any) -> Any:
        kind, arg = msg
        if kind == "subscribe":
            self.subscribers[supervisors.monitor(arg)] = arg
            return len(self.subscribers)
        if kind == "publish":
            for pid in self.subscribers.values():
                supervisors.send(pid, ("chat", arg))
            return len(self.subscribers)
        raise ValueError(f"unknown call {msg!r}")

    def handle_info(self, msg: Any) -> None:
        if isinstance(msg, tuple) and msg[0] == "DOWN":
            self.subscribers.pop(msg[1], None)


def on_info(msg: Any, push: Any, count: int) -> Any:
    if isinstance(msg, tuple) and msg[0] == "chat":
        push(sse.event(msg[1], event="message", id=str(count)))
        return count + 1
    if isinstance(msg, tuple) and msg[0] == resp.DRAIN:
        push(sse.event("server going away", event="bye"))
        return resp.STOP
    return count


def events(req: rr.Request) -> resp.Loop:
    supervisors.call("chat.hub", ("subscribe", supervisors.self()))
    return resp.Loop(200, list(sse.HEADERS), 1, on_info)


def say(req: rr.Request) -> resp.Response:
    text = req.read_body().decode("utf-8", "replace")
    listeners = supervisors.call("chat.hub", ("publish", text))
    return resp.json(200, {"delivered_to": listeners})


ROUTES = [("/events", events), {"path": "/say", "handler": say, "methods": ["POST"]}]


def start(port: int = 0) -> supervisors.Pid:
    """The app's own supervision tree: the hub, then the listener (rest_for_one)."""
    return supervisors.start_supervisor(
        [
            supervisors.ChildSpec("hub", _start_hub),
            rr.child_spec("chat", {"port": port, "ip": "127.0.0.1", "routes": ROUTES}),
        ],
        strategy="rest_for_one",
        name="chat.sup",
    )


def _start_hub() -> supervisors.Pid:
    return supervisors.start_server(Hub, name="chat.hub", link=True)


def main() -> None:
    start(int(os.environ.get("RR_PORT", "8080")))
    print(f"rr: serving examples/sse_chat.py on http://127.0.0.1:{rr.listener_port('chat')}/events",
          flush=True)
    rr.wait()


if __name__ == "__main__":
    main()
