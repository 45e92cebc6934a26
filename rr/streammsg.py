"""The tags of the messages between a multiplexed conn process and its stream workers.

What it is: names only (the first element of each message tuple) and the
largest body chunk a message carries (``CHUNK``), imported by
``rr.stream`` (the worker and its sink), the conn processes (h2, h3) and
``rr.webtransport``; the protocol they make up is written in ``rr.stream``'s
docstring. Kept apart so a module the stream worker runs (a WebTransport
session) can speak the protocol without importing the worker.

What it must never do: import anything.
"""

# Body chunks sent to the conn process are at most this big.
CHUNK = 16384

# worker → conn
RESPONSE = "stream.response"
HEAD = "stream.head"
INTERIM = "stream.interim"
DATA = "stream.data"
TRAILERS = "stream.trailers"
CREDIT = "stream.credit"
LOOP = "stream.loop"
WANT = "stream.want"
# conn → worker
BODY = "stream.body"
BODY_END = "stream.body_end"
SENT = "stream.sent"
