# Sourced by tools/test and tools/run: make a fresh machine ready.
#
# - creates .venv with the machine's python3 (3.11+) if it is missing;
# - installs the project (editable) with the extras named in RR_EXTRAS
#   (default "test"; empty: the package alone, what serving needs), again only
#   when pyproject.toml or the extras changed;
# - unless RR_APT=0, installs the Debian tools the suite drives
#   (tools/apt-packages), each guarded by `dpkg -s` so apt runs at most once
#   per missing package;
# - installs tools/bench_ws's locked node packages (`npm ci`) if they are missing.
set -euo pipefail

RR_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RR_EXTRAS="${RR_EXTRAS-test}"
RR_APT="${RR_APT:-1}"
VENV="$RR_ROOT/.venv"

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
fi

stamp="$VENV/.rr-installed-$(cat "$RR_ROOT/pyproject.toml" | sha1sum | cut -c1-12)-${RR_EXTRAS//,/_}"
if [ ! -f "$stamp" ]; then
    if [ -n "$RR_EXTRAS" ]; then
        "$VENV/bin/pip" install --quiet -e "$RR_ROOT[$RR_EXTRAS]"
    else
        "$VENV/bin/pip" install --quiet -e "$RR_ROOT"
    fi
    rm -f "$VENV"/.rr-installed-*
    touch "$stamp"
fi

missing=()
[ "$RR_APT" = 0 ] || while read -r pkg; do
    case "$pkg" in ''|'#'*) continue ;; esac
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done < "$RR_ROOT/tools/apt-packages"
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "tools/setup.sh: missing Debian packages: ${missing[*]} (install them as root)" >&2
        exit 1
    fi
fi

# node's `ws` package for tools/bench.py's WebSocket row and its test (locked in
# tools/bench_ws/package-lock.json): installed once, when npm is there.
if [ ! -f "$RR_ROOT/tools/bench_ws/node_modules/ws/package.json" ] && command -v npm >/dev/null; then
    (cd "$RR_ROOT/tools/bench_ws" && npm ci --no-audit --no-fund --silent) \
        || echo "tools/setup.sh: npm ci in tools/bench_ws failed" >&2
fi

export PATH="$VENV/bin:$PATH"
