"""Outbound flow control for one h2 connection: per-stream queues drained as windows allow.

What it is: the scheduler the connection state machine (``rr.http2.machine``)
uses for response bodies. Each stream queues what its worker sent
(``("data", bytes, end, ack)`` or ``("trailers", fields, True, False)``);
``pump`` frames as much of one stream's queue as the smaller of the
connection's and the stream's send windows allow, in DATA frames of at most
the peer's ``MAX_FRAME_SIZE``. A stream that finds no window is marked
stalled (``stalled_since``); ``overdue`` names the streams stalled longer than
a limit (the machine resets them with ``CANCEL``).

What it owns: the connection's send window, the peer's frame size, and the
count of DATA frames sent in the current flood window (the WINDOW_UPDATE
budget allows two updates per DATA frame sent).

What it must never do: decide anything about a stream's life. It reports
what it finished (body bytes framed, which the machine credits back to the
worker; whether the stream's end went out) and the machine acts on it. Pure: no sockets, no processes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from rr.http2 import codec


class Scheduler:
    __slots__ = ("window", "max_frame", "stalled", "data_frames")

    def __init__(self) -> None:
        self.window = codec.DEFAULT_WINDOW  # the connection's send window
        self.max_frame = codec.DEFAULT_MAX_FRAME  # the peer's SETTINGS_MAX_FRAME_SIZE
        self.stalled = False  # some stream waits for window
        self.data_frames = 0  # DATA frames sent in the current flood window

    def pump(self, st: Any, out: list[bytes]) -> tuple[int, bool]:
        """Frame what the windows allow from ``st.pending`` into ``out``.

        Returns (body bytes framed, whether the stream's end went out).
        """
        pending = st.pending
        sid = st.sid
        framed = 0
        while pending:
            kind, payload, end, ack = pending[0]
            if kind == "trailers":
                self.header_frames(out, sid, codec.encode_headers(payload), True)
            elif payload:
                window = min(self.window, st.send_window)
                if window <= 0:
                    if st.stalled_since is None:
                        st.stalled_since = time.monotonic()
                        self.stalled = True
                    return framed, False
                n = min(len(payload), window, self.max_frame)
                rest = payload[n:] if n < len(payload) else b""
                chunk = payload[:n] if rest else payload
                out.append(codec.frame_head(codec.DATA, codec.END_STREAM if end and not rest else 0, sid, n))
                out.append(chunk)
                self.data_frames += 1
                self.window -= n
                framed += n
                st.send_window -= n
                st.stalled_since = None
                if rest:
                    pending[0] = (kind, rest, end, ack)
                    continue
            elif end:
                out.append(codec.frame(codec.DATA, codec.END_STREAM, sid))
            pending.popleft()
            if end:
                return framed, True
        st.stalled_since = None
        return framed, False

    def header_frames(self, out: list[bytes], sid: int, block: bytes, end: bool) -> None:
        """HEADERS (+ CONTINUATIONs) for ``block``, split at the peer's frame size."""
        limit = self.max_frame
        flags = codec.END_STREAM if end else 0
        if len(block) <= limit:
            out.append(codec.frame(codec.HEADERS, flags | codec.END_HEADERS, sid, block))
            return
        out.append(codec.frame(codec.HEADERS, flags, sid, block[:limit]))
        for i in range(limit, len(block), limit):
            last = i + limit >= len(block)
            out.append(codec.frame(codec.CONTINUATION, codec.END_HEADERS if last else 0, sid,
                                   block[i:i + limit]))

    def overdue(self, streams: Iterable[Any], now: float, limit: float) -> list[Any]:
        """Streams stalled on window for longer than ``limit`` (updates ``stalled``)."""
        late = []
        stalled = False
        for st in streams:
            since = st.stalled_since
            if since is None or st.closed:
                continue
            if now - since > limit:
                late.append(st)
            else:
                stalled = True
        self.stalled = stalled
        return late
