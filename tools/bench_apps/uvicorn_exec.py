"""``tools/bench_cpu.sh`` shim: ``python uvicorn_exec.py PORT`` execs uvicorn (httptools + uvloop) with
``tools/bench.py``'s command line on PORT, in the same process, so bench_cpu.sh reads uvicorn's CPU
from ``/proc`` as it reads rr's (run from tools/bench_apps, as bench_cpu.sh does)."""

import os
import sys

uvicorn = os.path.join(os.path.dirname(sys.executable), "uvicorn")
os.execv(uvicorn, [uvicorn, "--host", "127.0.0.1", "--port", sys.argv[1], "--workers", "1", "--loop", "uvloop",
                   "--http", "httptools", "--ws", "websockets", "--no-access-log", "--log-level", "warning",
                   "--timeout-keep-alive", "600", "--lifespan", "off", "--app-dir", os.getcwd(), "asgi_app:app"])
