#!/usr/bin/env bash
# Server CPU time per SSE event (the server_sent_events row), for A/B comparisons.
#
#   [PYTHON=...] [SECONDS_RUN=5] tools/bench_sse_cpu.sh LABEL PORT APP.py [APP ARGS...]
#
# Starts tools/bench_apps/APP.py (pinned to core 0; uvicorn_exec.py for uvicorn), warms it
# with 2 s of tools/bench.py's own SSE client (50 greenlets, each a new connection per
# GET /sse of 100 events, pinned to core 1), then runs the client SECONDS_RUN more and
# divides the server's utime+stime from /proc by the events the client counted. Like
# tools/bench_cpu.sh, CPU per event barely moves with other load, unlike events/s.
# Loopback only; the client's own run is bounded by its duration (+15 s).
set -euo pipefail
label=$1; port=$2; app=$3; shift 3
root="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"
cd "$root/tools/bench_apps"
taskset -c 0 "$py" "$app" "$port" "$@" > "/tmp/bench_sse_cpu_$label.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
run() { taskset -c 1 "$py" "$root/tools/bench.py" --client sse --port "$port" --path /sse --connections 50 \
          --duration "$1"; }
run 2 > /dev/null
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
t0=$(ticks)
w0=$(date +%s.%N)
out=$(run "${SECONDS_RUN:-5}")
t1=$(ticks)
w1=$(date +%s.%N)
n=$(grep -oE '"requests": [0-9]+' <<< "$out" | grep -oE '[0-9]+$')
errs=$(grep -oE '"errors": \{[^}]*\}' <<< "$out")
echo "$label: $(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$n" -v w="$(awk -v a="$w0" -v b="$w1" 'BEGIN { print b - a }')" \
  'BEGIN { printf "%.3f us CPU/event, %.0f%% CPU, %.0f events/s", t * 1000000 / hz / n, t * 100 / hz / w, n / w }') ($n events, $errs)"
