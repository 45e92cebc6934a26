#!/usr/bin/env bash
# Server instructions per request (callgrind), for A/B comparisons of rr against itself.
#
#   [PYTHON=...] [N=2000] [BODY=FILE] [SCHEME=https] tools/bench_instructions.sh LABEL PORT PATH APP.py [APP ARGS...]
#
# Starts tools/bench_apps/APP.py under `valgrind --tool=callgrind` with counting
# off, warms it with 500 requests (`h2load --h1 -c 10`), switches counting on
# (callgrind_control -i on), sends N requests, dumps, and prints the instructions
# the whole server process executed divided by N. Unlike CPU time, the count does
# not move with other load on the machine, so two variants can be compared on a
# busy host; it does not see cache misses or the kernel's work (system calls
# count as one instruction), so a change that adds a system call must be judged
# with tools/bench_cpu.sh too. Loopback only. The dump stays in
# /tmp/callgrind.LABEL.out for callgrind_annotate.
# SCHEME=https: over TLS (e.g. `SCHEME=https ARGS_FIRST=1 ... / rr_app.py --tls CERT KEY`);
# the measured run's 10 handshakes are counted too (the same in both variants of an A/B).
# ARGS_FIRST=1: the app's arguments go before PORT instead of after it.
set -euo pipefail
label=$1; port=$2; path=$3; app=$4; shift 4
root="$(cd "$(dirname "$0")/.." && pwd)"
for tool in valgrind callgrind_control h2load curl; do
  command -v "$tool" > /dev/null || { echo "$tool is missing (tools/apt-packages)" >&2; exit 1; }
done
cd "$root/tools/bench_apps"
out="/tmp/callgrind.$label.out"
rm -f "$out"
if [ -n "${ARGS_FIRST:-}" ]; then set -- "$@" "$port"; else set -- "$port" "$@"; fi
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
  "${PYTHON:-$root/.venv/bin/python}" "$app" "$@" > "/tmp/bench_instructions_$label.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 600); do curl -s -k -m 5 -o /dev/null "${SCHEME:-http}://127.0.0.1:$port$path" && break; sleep 0.2; done
post=()
if [ -n "${BODY:-}" ]; then post=(-d "$BODY" -H "content-type: ${CTYPE:-application/octet-stream}"); fi
n=${N:-2000}
h2load --h1 -n 500 -c 10 "${post[@]}" "${SCHEME:-http}://127.0.0.1:$port$path" > /dev/null
callgrind_control -i on "$pid" > /dev/null
res=$(h2load --h1 -n "$n" -c 10 "${post[@]}" "${SCHEME:-http}://127.0.0.1:$port$path")
callgrind_control -i off "$pid" > /dev/null
callgrind_control -d "$pid" > /dev/null
ok=$(grep -oE "[0-9]+ succeeded" <<< "$res")
# The dump written by -d is OUT.1 (the file named OUT gets the totals at exit).
total=$(awk '/^(summary|totals):/ {print $2}' "$out".* | sort -n | tail -1)
echo "$label: $(awk -v t="$total" -v n="$n" 'BEGIN { printf "%.1f", t / n / 1000 }')k instructions/request ($ok of $n)"
