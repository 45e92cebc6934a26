"""The Flask "hello" app for issue 14's bench row ``flask_hello``: rr vs gunicorn -k gevent vs gevent.pywsgi.

The same Flask app under each server (run from this directory); ``tools/bench.py
--scenarios flask`` starts them as below:

    rr --config rr_flask.toml --port PORT flask_hello:app          # rr's CLI, through rr.contrib.wsgi
    gunicorn -k gevent --workers 1 --bind 127.0.0.1:PORT flask_hello:app
    python flask_hello.py PORT                                     # gevent.pywsgi.WSGIServer

``rr_flask.toml`` gives rr the keep-alive settings the other servers have
(no per-connection request cap, long idle timeout), as ``rr_app.py`` does.
"""

from __future__ import annotations

import socket
import sys

from flask import Flask, Response

app = Flask(__name__)


@app.get("/hello")
def hello() -> Response:
    return Response(b"Hello, World!", mimetype="text/plain")


if __name__ == "__main__":
    from gevent.pywsgi import WSGIHandler, WSGIServer

    class NoDelayHandler(WSGIHandler):
        """TCP_NODELAY on each accepted socket, as wsgi_app.py's pywsgi has."""

        def __init__(self, sock, address, server, rfile=None):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().__init__(sock, address, server, rfile)

    WSGIServer(("127.0.0.1", int(sys.argv[1])), app, log=None, handler_class=NoDelayHandler).serve_forever()
