#!/usr/bin/env bash
# Server CPU time per request over TLS, for A/B comparisons of rr against itself.
#
#   [PYTHON=...] [RR=CHECKOUT] [SERVER=rr|uvicorn|granian] tools/bench_cpu_tls.sh LABEL PORT PATH h1|h2 [REQUESTS]
#
# Starts tools/bench_apps/rr_app.py --tls (HTTP/1.1 and HTTP/2 by ALPN, a P-256
# certificate made once under /tmp/bench_cpu_tls) pinned to core 0, importing rr
# from CHECKOUT (default: this checkout), warms it with 5000 requests, then sends
# REQUESTS (default 40000) with h2load pinned to core 1 — `--h1 -c 50` over https
# for h1, `-c 50 -m 10` (h2 by ALPN) for h2 — and reads the server's utime+stime
# from /proc before and after: CPU per request, which barely moves with other load
# on the machine, unlike req/s. Handshakes happen in the warm-up (h2load keeps its
# 50 connections), so the number is the per-request cost. Loopback only.
# SERVER=uvicorn or granian: that peer instead, started as tools/bench.py starts it
# for its tls rows (asgi_app.py, one worker), the CPU of its process tree summed.
set -euo pipefail
label=$1; port=$2; path=$3; proto=$4; n=${5:-40000}
root="$(cd "$(dirname "$0")/.." && pwd)"
rr="${RR:-$root}"
certs=/tmp/bench_cpu_tls
if [ ! -f "$certs/key.pem" ]; then
  mkdir -p "$certs"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
    -keyout "$certs/key.pem" -out "$certs/cert.pem" 2> /dev/null
fi
case $proto in
  h1) load=(h2load --h1 -c 50) ;;
  h2) load=(h2load -c 50 -m 10) ;;
  *) echo "protocol: h1 or h2" >&2; exit 2 ;;
esac
cd "$root/tools/bench_apps"
py=${PYTHON:-/work/main/.venv/bin/python}
bin=$(dirname "$py")
case ${SERVER:-rr} in
  rr) cmd=(env PYTHONPATH="$rr" "$py" rr_app.py --tls "$certs/cert.pem" "$certs/key.pem" "$port") ;;
  uvicorn) cmd=("$bin/uvicorn" --host 127.0.0.1 --port "$port" --workers 1 --loop uvloop --http httptools
                --ws websockets --no-access-log --log-level warning --timeout-keep-alive 600 --lifespan off
                --app-dir . asgi_app:app --ssl-certfile "$certs/cert.pem" --ssl-keyfile "$certs/key.pem") ;;
  granian) cmd=("$bin/granian" --interface asgi --host 127.0.0.1 --port "$port" --workers 1 --runtime-threads 1
                --blocking-threads 1 --backpressure 20000 --http auto --no-access-log --log-level warning
                --working-dir . asgi_app:app --ssl-certificate "$certs/cert.pem" --ssl-keyfile "$certs/key.pem") ;;
  *) echo "SERVER: rr, uvicorn or granian" >&2; exit 2 ;;
esac
taskset -c 0 "${cmd[@]}" > "/tmp/bench_cpu_tls_$label.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sk -o /dev/null "https://127.0.0.1:$port$path" && break; sleep 0.1; done
taskset -c 1 "${load[@]}" -n 5000 "https://127.0.0.1:$port$path" > /dev/null
# utime+stime of the server and its descendants (granian serves from a child process)
tree() { local p; echo "$1"; for p in $(cat /proc/"$1"/task/*/children 2> /dev/null); do tree "$p"; done; }
ticks() { local p t=0; for p in $(tree "$pid"); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2> /dev/null || echo 0))); done; echo "$t"; }
hz=$(getconf CLK_TCK)
t0=$(ticks)
out=$(taskset -c 1 "${load[@]}" -n "$n" "https://127.0.0.1:$port$path")
t1=$(ticks)
ok=$(grep -oE "[0-9]+ succeeded" <<< "$out")
rps=$(grep -oE "finished in [0-9.]+m?s, [0-9.]+ req/s" <<< "$out" | grep -oE "[0-9.]+ req/s")
echo "$label $proto $path: $(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$n" 'BEGIN { printf "%.2f", t * 1000000 / hz / n }') us CPU/request ($ok of $n, $rps)"
