#!/usr/bin/env bash
# HTTP/3 with http3.listeners = L UDP sockets on the port: server CPU per request and req/s.
#
#   [PYTHON=...] tools/bench_h3_listeners.sh L PORT [CLIENTS] [SECONDS]
#
# Starts tools/bench_apps/rr_h3_app.py (RR_H3_LISTENERS=L) pinned to core 0, then CLIENTS (4)
# h3_load.py clients pinned to core 1 at once, each one QUIC connection from its own source
# port with 5 GETs of / in flight, for SECONDS (5). Prints the requests counted, req/s, and
# the server's utime+stime (from /proc, over the clients' whole run, warm-up included)
# divided by the requests counted. Compare L=1 and L=2 interleaved. Loopback only.
set -euo pipefail
listeners=$1; port=$2; clients=${3:-4}; seconds=${4:-5}
root="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"
tmp=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
cd "$root"
"$py" -c "import sys; sys.path.insert(0, '.'); from pathlib import Path; from tests.rr.certs import make_cert; make_cert(Path('$tmp'))"
cd "$root/tools/bench_apps"
RR_H3_LISTENERS=$listeners taskset -c 0 "$py" rr_h3_app.py "$port" "$tmp/cert.pem" "$tmp/key.pem" > "$tmp/server.log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -sk -o /dev/null "https://127.0.0.1:$port/" && break; sleep 0.1; done
t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
loads=()
for i in $(seq "$clients"); do
  taskset -c 1 "$py" h3_load.py "https://127.0.0.1:$port/" --concurrency 5 --duration "$seconds" --warmup 0.5 \
    > "$tmp/client$i.json" &
  loads+=($!)
done
wait "${loads[@]}"
t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
"$py" - "$tmp" "$clients" "$((t1 - t0))" "$(getconf CLK_TCK)" "$listeners" <<'PY'
import json, sys
tmp, clients, ticks, hz, listeners = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
runs = [json.loads(open(f"{tmp}/client{i}.json").read().strip().splitlines()[-1]) for i in range(1, clients + 1)]
n = sum(r["requests"] for r in runs)
errors = sum(r["errors"] for r in runs)
seconds = max(r["seconds"] for r in runs)
print(f"listeners {listeners}: {n} requests ({errors} errors), {n / seconds:.0f} req/s, "
      f"server {ticks * 1e6 / hz / max(n, 1):.0f} us CPU/request")
PY
