#!/usr/bin/env bash
# Server CPU time per WebSocket message (websocket_msg_throughput), for A/B comparisons.
#
#   [PYTHON=...] [SECONDS=5] tools/bench_ws_cpu.sh LABEL PORT [APP.py [APP ARGS...]]
#
# Starts tools/bench_apps/APP.py (default rr_app.py PORT; pinned to core 0),
# warms it with 2 s of tools/bench_ws/client.js (50 connections, 1 KiB text
# echo, pinned to core 1), then runs the client SECONDS more and divides the
# server's utime+stime from /proc by the messages echoed. Like
# tools/bench_cpu.sh, CPU per message barely moves with other load, unlike
# msg/s. Other servers: APP.py may be any command line whose last word is the
# port (e.g. `uvicorn` via UVICORN=1). Loopback only.
set -euo pipefail
label=$1; port=$2; shift 2
root="$(cd "$(dirname "$0")/.." && pwd)"
node_modules="${NODE_MODULES:-$root/tools/bench_ws/node_modules}"
client="$root/tools/bench_ws/client.js"
cd "$root/tools/bench_apps"
if [ -n "${UVICORN:-}" ]; then
  taskset -c 0 "${PYTHON:-$root/.venv/bin/python}" -m uvicorn asgi_app:app --port "$port" --log-level warning \
    --ws "${UVICORN}" > "/tmp/bench_ws_cpu_$label.log" 2>&1 &
else
  app=${1:-rr_app.py}; [ $# -gt 0 ] && shift
  taskset -c 0 "${PYTHON:-$root/.venv/bin/python}" "$app" "$port" "$@" > "/tmp/bench_ws_cpu_$label.log" 2>&1 &
fi
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
run() { NODE_PATH="$node_modules" taskset -c 1 node "$client" --url "ws://127.0.0.1:$port/ws" --connections 50 --duration "$1"; }
run 2 > /dev/null
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
t0=$(ticks)
out=$(run "${SECONDS_RUN:-5}")
t1=$(ticks)
n=$(grep -oE '"requests":[0-9]+' <<< "$out" | grep -oE '[0-9]+')
errs=$(grep -oE '"errors":\{[^}]*\}' <<< "$out")
rate=$(grep -oE '^msg/s [0-9]+' <<< "$out")
echo "$label: $(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$n" 'BEGIN { printf "%.2f", t * 1000000 / hz / n }') us CPU/message ($n messages, $rate, $errs)"
