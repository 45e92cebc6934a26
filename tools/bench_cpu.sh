#!/usr/bin/env bash
# Server CPU time per request, for A/B comparisons of rr against itself.
#
#   [PYTHON=...] tools/bench_cpu.sh LABEL PORT PATH APP.py [APP ARGS...]
#
# Starts tools/bench_apps/APP.py (pinned to core 0), warms it with 5000
# requests, then sends 40000 with `h2load --h1 -c 50` (pinned to core 1) and
# reads the server's utime+stime from /proc before and after. CPU per request
# barely moves with other load on the machine, unlike req/s, so it is the
# number to compare between two variants run back to back. Loopback only.
# CLOSE=1: a new connection per request instead (wrk -c 50 for 3 s with
# "Connection: close", the connection_storm row): CPU per accepted connection.
# BODY=FILE: POST FILE as each request's body (h2load -d; echo, multi_request_body),
# sent as CTYPE (default application/octet-stream; post_4kb_form:
# CTYPE=application/x-www-form-urlencoded with the body bench_common.form_request_body()
# writes, see docs/bench_rr.md);
# N=COUNT: measured requests (default 40000).
set -euo pipefail
label=$1; port=$2; path=$3; app=$4; shift 4
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/tools/bench_apps"
# ARGS_FIRST=1: the app's arguments before PORT (`ARGS_FIRST=1 ... floor.py --raw`: the raw floor).
if [ -n "${ARGS_FIRST:-}" ]; then set -- "$@" "$port"; else set -- "$port" "$@"; fi
taskset -c 0 "${PYTHON:-$root/.venv/bin/python}" "$app" "$@" > "/tmp/bench_cpu_$label.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port$path" && break; sleep 0.1; done
post=()
if [ -n "${BODY:-}" ]; then post=(-d "$BODY" -H "content-type: ${CTYPE:-application/octet-stream}"); fi
n=${N:-40000}
taskset -c 1 h2load --h1 -n 5000 -c 50 "${post[@]}" "http://127.0.0.1:$port$path" > /dev/null
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
t0=$(ticks)
if [ -n "${CLOSE:-}" ]; then
  # connection_storm: a new connection per request (wrk reconnects after each close), 3 s
  out=$(taskset -c 1 wrk -t1 -c 50 -d 3s -H "Connection: close" "http://127.0.0.1:$port$path")
  t1=$(ticks)
  n=$(grep -oE "[0-9]+ requests in" <<< "$out" | grep -oE "^[0-9]+")
  bad=$(grep -E "Socket errors|Non-2xx" <<< "$out" || true)
  echo "$label: $(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$n" 'BEGIN { printf "%.2f", t * 1000000 / hz / n }') us CPU/request (connection per request, $n requests) $bad"
  exit 0
fi
out=$(taskset -c 1 h2load --h1 -n "$n" -c 50 "${post[@]}" "http://127.0.0.1:$port$path")
t1=$(ticks)
ok=$(grep -oE "[0-9]+ succeeded" <<< "$out")
echo "$label: $(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$n" 'BEGIN { printf "%.2f", t * 1000000 / hz / n }') us CPU/request ($ok of $n)"
