#!/usr/bin/env bash
# The long fuzz run recorded in docs/reliability.md: each target for RUNS executions
# (default 1,000,000), one at a time, niced; logs and new corpus entries in .fuzz/.
#   tools/fuzz/long_run.sh [RUNS] [TARGET ...]
set -uo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-1000000}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(h2_hpack response_fields h2_machine h1_head h1_chunked proxy_header)
python=${PYTHON:-python}
mkdir -p .fuzz/logs
for t in "${targets[@]}"; do
    mkdir -p ".fuzz/$t"
    start=$(date +%s)
    PYTHONPATH=$PWD nice -n 15 "$python" tools/fuzz/run.py "$t" -runs="$runs" -max_total_time=3000 \
        -print_final_stats=1 -artifact_prefix=".fuzz/logs/$t-" ".fuzz/$t" "tests/fuzz/corpus/$t" \
        >".fuzz/logs/$t.log" 2>&1
    rc=$?
    echo "$t rc=$rc seconds=$(( $(date +%s) - start ))" | tee -a .fuzz/logs/summary.txt
done
