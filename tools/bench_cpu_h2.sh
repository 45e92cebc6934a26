#!/usr/bin/env bash
# Server CPU time per HTTP/2 (h2c) request, for A/B comparisons of rr against itself.
#
#   [PYTHON=...] [C=50] [M=10] [N=40000] [BODY=FILE] tools/bench_cpu_h2.sh LABEL PORT PATH
#
# Starts tools/bench_apps/rr_app.py --h2 (pinned to core 0; PYTHONPATH picks the
# checkout), warms it with 5000 requests, then sends N with
# `h2load -c C -m M` (pinned to core 1; BODY: POST that file's bytes) and reads
# the server's utime+stime from /proc before and after: CPU per request, the
# number to compare between variants run back to back (tools/bench_cpu.sh is
# the HTTP/1.1 twin). Loopback only.
set -euo pipefail
label=$1; port=$2; path=$3
root="$(cd "$(dirname "$0")/.." && pwd)"
c=${C:-50}; m=${M:-10}; n=${N:-40000}
data=()
if [ -n "${BODY:-}" ]; then data=(-d "$BODY"); fi
cd "$root/tools/bench_apps"
taskset -c 0 "${PYTHON:-$root/.venv/bin/python}" rr_app.py --h2 "$port" > "/tmp/bench_cpu_h2_$label.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -s --http2-prior-knowledge -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
kill -0 $pid 2>/dev/null || { echo "$label: the server did not start (/tmp/bench_cpu_h2_$label.log)"; exit 1; }
taskset -c 1 h2load -n 5000 -c "$c" -m "$m" "${data[@]}" "http://127.0.0.1:$port$path" > /dev/null
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
t0=$(ticks)
out=$(taskset -c 1 h2load -n "$n" -c "$c" -m "$m" "${data[@]}" "http://127.0.0.1:$port$path")
t1=$(ticks)
ok=$(grep -oE "[0-9]+ succeeded" <<< "$out")
rps=$(grep -oE "finished in [0-9.]+m?s, [0-9.]+ req/s" <<< "$out" | grep -oE "[0-9.]+ req/s")
echo "$label: $(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$n" 'BEGIN { printf "%.2f", t * 1000000 / hz / n }') us CPU/request ($ok of $n, $rps)"
