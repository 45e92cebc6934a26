#!/usr/bin/env bash
# Server CPU time per WebSocket message (websocket_msg_throughput), for A/B comparisons.
#
#   [PYTHON=...] [SECONDS=5] tools/bench_ws_cpu.sh LABEL PORT [APP.py [APP ARGS...]]
#
# Starts tools/bench_apps/APP.py (default rr_app.py PORT; pinned to core 0),
# warms it with 2 s of the client (50 connections, 1 KiB text echo, pinned to
# core 1), then runs the client SECONDS more and divides the server's
# utime+stime from /proc by the messages echoed, and the client's own
# utime+stime (bash's `times`) likewise. Like tools/bench_cpu.sh, server CPU
# per message barely moves with other load, unlike msg/s. CLIENT=node (default:
# tools/bench_ws/client.js, node's ws) or CLIENT=wsbench (tools/bench_ws/wsbench.c,
# built here with cc -O2 as tools/bench.py builds it). UVICORN=websockets (or
# wsproto): uvicorn as tools/bench.py runs it instead of an rr app. Loopback only.
set -euo pipefail
label=$1; port=$2; shift 2
root="$(cd "$(dirname "$0")/.." && pwd)"
node_modules="${NODE_MODULES:-$root/tools/bench_ws/node_modules}"
case "${CLIENT:-node}" in
  node) client=(env NODE_PATH="$node_modules" node "$root/tools/bench_ws/client.js") ;;
  wsbench)
    exe="$root/tools/bench_ws/build/wsbench"
    if [ ! -x "$exe" ] || [ "$root/tools/bench_ws/wsbench.c" -nt "$exe" ]; then
      mkdir -p "$(dirname "$exe")" && "${CC:-cc}" -O2 -o "$exe" "$root/tools/bench_ws/wsbench.c"
    fi
    client=("$exe") ;;
  *) echo "CLIENT must be node or wsbench" >&2; exit 2 ;;
esac
cd "$root/tools/bench_apps"
if [ -n "${UVICORN:-}" ]; then
  # tools/bench.py's uvicorn row: uvloop + httptools, UVICORN names the WebSocket library
  taskset -c 0 "${PYTHON:-$root/.venv/bin/python}" -m uvicorn --host 127.0.0.1 --port "$port" --workers 1 \
    --loop uvloop --http httptools --ws "${UVICORN}" --no-access-log --log-level warning \
    --timeout-keep-alive 600 --lifespan off asgi_app:app > "/tmp/bench_ws_cpu_$label.log" 2>&1 &
else
  app=${1:-rr_app.py}; [ $# -gt 0 ] && shift
  taskset -c 0 "${PYTHON:-$root/.venv/bin/python}" "$app" "$port" "$@" > "/tmp/bench_ws_cpu_$label.log" 2>&1 &
fi
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
run() { taskset -c 1 "${client[@]}" --url "ws://127.0.0.1:$port/ws" --connections 50 --duration "$1"; }
run 2 > /dev/null
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
t0=$(ticks)
w0=$(date +%s.%N)
out=$(run "${SECONDS_RUN:-5}"; times)  # times' second line: the client's user and system time
t1=$(ticks)
w1=$(date +%s.%N)
n=$(grep -oE '"requests":[0-9]+' <<< "$out" | grep -oE '[0-9]+')
errs=$(grep -oE '"errors":\{[^}]*\}' <<< "$out")
rate=$(grep -oE '^msg/s [0-9]+' <<< "$out")
client_s=$(tail -1 <<< "$out" | awk '{ s = 0; for (i = 1; i <= 2; i++) { split($i, p, /[ms]/); s += p[1] * 60 + p[2] } print s }')
echo "$label: $(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$n" -v w=$(awk -v a="$w0" -v b="$w1" 'BEGIN { print b - a }') \
  'BEGIN { printf "%.2f us CPU/message, %.0f%% CPU", t * 1000000 / hz / n, t * 100 / hz / w }') ($n messages, $rate, $errs);" \
  "client ${CLIENT:-node}: $(awk -v c="$client_s" -v n="$n" 'BEGIN { printf "%.2f", c * 1000000 / n }') us CPU/message"
