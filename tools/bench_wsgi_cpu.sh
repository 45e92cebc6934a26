#!/usr/bin/env bash
# Server CPU time per request of the Flask hello app (tools/bench_apps/flask_hello.py),
# under rr's CLI, gunicorn -k gevent, gevent.pywsgi or the WSGI floor (raw:
# tools/bench_apps/wsgi_floor.py), started as tools/bench.py's flask phase starts them.
#
#   [PYTHON=...] [RR=<rr checkout>] [APP=module:attr] [TARGET=/path] tools/bench_wsgi_cpu.sh rr|gunicorn|pywsgi|raw PORT [N]
#
# APP serves another WSGI app from tools/bench_apps instead (APP=wsgi_app:app TARGET=/: a plain
# three-line app, to tell a server's own cost from Flask's); pywsgi serves only flask_hello.
#
# The server is pinned to core 0, `h2load --h1 -c 50` to core 1: 5000 requests to warm
# up, then N (40000) measured. CPU is utime+stime from /proc of the server's processes
# (gunicorn's master and its worker), read before and after; WRK=SECONDS measures under
# tools/bench.py's load instead (wrk -t1 -c50 for that long). RR picks the rr checkout
# served (default: this one), for A/B runs of two branches. Loopback only.
set -euo pipefail
server=$1; port=$2; n=${3:-40000}
root="$(cd "$(dirname "$0")/.." && pwd)"
rr_root="$(cd "${RR:-$root}" && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"
apps="$root/tools/bench_apps"
app="${APP:-flask_hello:app}"
target="${TARGET:-/hello}"
case "$server" in
  rr) cmd=(env PYTHONPATH="$rr_root" "$py" -m rr --config "$apps/rr_flask.toml" --port "$port"
           --chdir "$apps" "$app") ;;
  gunicorn) cmd=("$(dirname "$py")/gunicorn" -k gevent --workers 1 --bind "127.0.0.1:$port"
                 --worker-connections 20000 --keep-alive 600 --log-level warning --chdir "$apps" "$app") ;;
  pywsgi) cmd=("$py" "$apps/flask_hello.py" "$port") ;;
  raw) cmd=("$py" "$apps/wsgi_floor.py" "$port" "$app") ;;
  *) echo "server: rr, gunicorn, pywsgi or raw" >&2; exit 2 ;;
esac
cd "$apps"
taskset -c 0 "${cmd[@]}" > "/tmp/bench_wsgi_cpu_$server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port$target" && break; sleep 0.1; done
taskset -c 1 h2load --h1 -n 5000 -c 50 "http://127.0.0.1:$port$target" > /dev/null
ticks() {  # the server process and its children (gunicorn's worker)
  local total=0 p
  for p in $pid $(pgrep -P "$pid" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
hz=$(getconf CLK_TCK)
t0=$(ticks)
if [ -n "${WRK:-}" ]; then  # tools/bench.py's load: wrk -t1 -c50 for WRK seconds
  out=$(taskset -c 1 wrk -t1 -c 50 -d "${WRK}s" "http://127.0.0.1:$port$target")
  t1=$(ticks)
  n=$(grep -oE "[0-9]+ requests in" <<< "$out" | grep -oE "^[0-9]+")
  ok="wrk: $(grep -E "Non-2xx|Socket errors" <<< "$out" || echo "no errors"),"
  rps="$(grep -oE "Requests/sec: +[0-9.]+" <<< "$out" | grep -oE "[0-9.]+$") req/s"
else
  out=$(taskset -c 1 h2load --h1 -n "$n" -c 50 "http://127.0.0.1:$port$target")
  t1=$(ticks)
  ok=$(grep -oE "[0-9]+ succeeded" <<< "$out")
  rps=$(grep -oE "finished in [0-9.]+m?s, [0-9.]+ req/s" <<< "$out" | grep -oE "[0-9.]+ req/s")
fi
echo "$server: $(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$n" 'BEGIN { printf "%.2f", t * 1000000 / hz / n }') us CPU/request ($ok of $n, $rps)"
