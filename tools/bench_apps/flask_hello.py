"""The Flask "hello" app for issue 14's bench row: rr vs gunicorn -k gevent vs gevent.pywsgi.

The same Flask app under each server (run from this directory):

    rr flask_hello:app --port PORT --protocols http1                # rr, through rr.contrib.wsgi
    gunicorn -k gevent --workers 1 --bind 127.0.0.1:PORT flask_hello:app
    python flask_hello.py PORT                                      # gevent.pywsgi.WSGIServer

then ``wrk -t1 -c50 http://127.0.0.1:PORT/hello``. Not wired into
tools/bench.py yet; the numbers are still to be measured on a quiet machine.
"""

from __future__ import annotations

import sys

from flask import Flask, Response

app = Flask(__name__)


@app.get("/hello")
def hello() -> Response:
    return Response(b"Hello, World!", mimetype="text/plain")


if __name__ == "__main__":
    from gevent.pywsgi import WSGIServer

    WSGIServer(("127.0.0.1", int(sys.argv[1])), app, log=None).serve_forever()
