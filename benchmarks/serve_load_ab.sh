#!/usr/bin/env bash
# Interleaved A/B of `recall serve` with one process and with --processes 2: this machine's speed
# drifts over an evening (the same code measured 305 and 407 req/s an hour apart), so the two
# settings alternate, RUNS times each. Results: benchmarks/results/serve_load_ab/.
# Usage: benchmarks/serve_load_ab.sh PROJECT_DIR [RUNS]
set -euo pipefail
project=${1:?usage: serve_load_ab.sh PROJECT_DIR [RUNS]}
runs=${2:-3}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-$here/../.venv/bin/python}
out=$here/results/serve_load_ab
mkdir -p "$out"
for run in $(seq 1 "$runs"); do
  for processes in 1 2; do
    "$python" "$here/serve_load.py" --project "$project" --processes "$processes" \
      --json "$out/processes_${processes}_run_${run}.json" > /dev/null
    "$python" - "$out/processes_${processes}_run_${run}.json" "$processes" "$run" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
one, many, batch = r["retrieve_1_client"], r["retrieve_8_clients"], r["batch_retrieve_64"]
print(f"processes {sys.argv[2]} run {sys.argv[3]}: 1 client p50 {one['p50_ms']} ms p99 "
      f"{one['p99_ms']} ms; 8 clients {many['qps']} req/s p99 {many['p99_ms']} ms; "
      f"batch {batch['users_per_s']} users/s; errors {r['errors']}; speed probe "
      f"{r['machine']['speed_probe_ms']['before']}/{r['machine']['speed_probe_ms']['after']} ms")
PY
  done
done
