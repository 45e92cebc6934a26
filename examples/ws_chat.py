"""A WebSocket chat: rooms are `supervisors` processes, each browser tab a session.

    python examples/ws_chat.py
    open http://localhost:8080/          # a tiny page; or any WebSocket client:
    python -m websockets ws://localhost:8080/ws/lobby?nick=ann

A room is a gen_server started on first use under the "chat.rooms"
supervisor (simple_one_for_one) and registered as "chat.room.<name>". A
session joins its room in ``init`` (the room monitors it, so a session that
ends is dropped with no cleanup code), casts what its client says to the
room, and the room broadcasts ``("chat", line)`` to every member's process;
``handle_info`` turns that into a text frame. On drain (SIGTERM, or
``rr.drain``) rr closes every session with 1001 by itself.
"""

from __future__ import annotations

import os
from typing import Any

import rr
import supervisors
from rr import resp

PAGE = """<!doctype html><meta charset="utf-8"><title>rr chat</title><link rel="icon" href="data:,">
<pre id="log"></pre><input id="say" placeholder="say something" autofocus>
<script>
const ws = new WebSocket(`ws://${location.host}/ws/lobby?nick=guest${Math.floor(Math.random() * 1000)}`);
ws.onmessage = (e) => { document.getElementById("log").textContent += e.data + "\\n"; };
ws.onclose = (e) => { document.getElementById("log").textContent += `[closed ${e.code}]\\n`; };
document.getElementById("say").onkeydown = (e) => {
  if (e.key === "Enter") { ws.send(e.target.value); e.target.value = ""; }
};
</script>"""


class Room(supervisors.Server):
    def init(self, name: str) -> None:
        self.name = name
        self.members: dict[Any, tuple[Any, str]] = {}  # monitor ref -> (session pid, nick)

    def broadcast(self, line: str) -> None:
        for pid, _ in self.members.values():
            supervisors.send(pid, ("chat", line))

    def handle_call(self, msg: Any, from_: Any) -> Any:
        kind, pid, nick = msg
        if kind != "join":
            raise ValueError(f"unknown call {msg!r}")
        self.members[supervisors.monitor(pid)] = (pid, nick)
        self.broadcast(f"* {nick} joined #{self.name} ({len(self.members)} here)")
        return len(self.members)

    def handle_cast(self, msg: Any) -> None:
        _, nick, text = msg
        self.broadcast(f"<{nick}> {text}")

    def handle_info(self, msg: Any) -> None:
        if isinstance(msg, tuple) and msg[0] == "DOWN":
            member = self.members.pop(msg[1], None)
            if member is not None:
                self.broadcast(f"* {member[1]} left")


def _start_room(name: str) -> supervisors.Pid:
    return supervisors.start_server(Room, name, name=f"chat.room.{name}", link=True)


def room(name: str) -> supervisors.Pid:
    """The room's process, started on first use."""
    pid = supervisors.whereis(f"chat.room.{name}")
    if pid is None:
        try:
            pid = supervisors.start_child("chat.rooms", name)
        except Exception:  # started by another session just now: use that one
            pid = supervisors.whereis(f"chat.room.{name}")
    assert pid is not None
    return pid


class ChatSession:
    """The WebSocket handler: one session per client, its state a small dict."""

    @staticmethod
    def init(req: rr.Request, state: Any) -> dict[str, Any]:
        nick = (req.query().get("nick") or ["anon"])[0][:32]
        pid = room(req.bindings["room"])
        supervisors.call(pid, ("join", supervisors.self(), nick))
        return {"room": pid, "nick": nick}

    @staticmethod
    def handle_frame(frame: tuple[str, Any], state: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        kind, data = frame
        if kind == "text" and data.strip():
            supervisors.cast(state["room"], ("say", state["nick"], data[:1000]))
        return [], state

    @staticmethod
    def handle_info(msg: Any, state: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        if isinstance(msg, tuple) and msg[0] == "chat":
            return [("text", msg[1])], state
        return [], state


def page(req: rr.Request) -> resp.Response:
    return resp.html(200, PAGE)


ROUTES = [("/", page), ("/ws/:room", lambda req: resp.WebSocket(ChatSession))]


def start(port: int = 0) -> supervisors.Pid:
    """The app's tree: the rooms' supervisor, then the listener (rest_for_one)."""
    return supervisors.start_supervisor(
        [
            supervisors.ChildSpec("rooms", _start_rooms, type="supervisor"),
            rr.child_spec("ws_chat", {"port": port, "ip": "127.0.0.1", "routes": ROUTES}),
        ],
        strategy="rest_for_one",
        name="chat.sup",
    )


def _start_rooms() -> supervisors.Pid:
    spec = supervisors.ChildSpec("room", _start_room, restart="temporary")
    return supervisors.start_supervisor([spec], strategy="simple_one_for_one", name="chat.rooms", link=True)


def main() -> None:
    start(int(os.environ.get("RR_PORT", "8080")))
    print(f"rr: serving examples/ws_chat.py on http://127.0.0.1:{rr.listener_port('ws_chat')}/", flush=True)
    rr.wait()


if __name__ == "__main__":
    main()
