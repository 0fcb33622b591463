#!/usr/bin/env bash
# `make demo`: the main job on the embedded defaults (no servers needed).
set -euo pipefail
OUT=${1:-demo-out}
H=.venv/bin/heimdall
mkdir -p "$OUT"
echo "== 1. simulate the reference world on the default network (nw-italy)"
$H simulate --network nw-italy --sessions 400 --world-seed 0 --seed 1 --out "$OUT/sessions"
$H data info "$OUT/sessions"
echo "== 2. train the quick config (a few minutes on 2 CPU cores; validation: the sessions above; MLflow: mlruns.db)"
$H train --config configs/quick.yaml --val "$OUT/sessions" --out-dir "$OUT/runs" --summary "$OUT/train.json"
echo "== 3. evaluate it beside the baselines, the oracle and the Cramér-Rao bound ($OUT/evaluation/report.html)"
$H simulate --network nw-italy --sessions 300 --world-seed 0 --seed 2 --out "$OUT/test" > /dev/null
field() { .venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$OUT/train.json" "$1"; }
$H evaluate --model "$(field best_checkpoint)" --data "$OUT/test" --out "$OUT/evaluation" --mlflow-run "$(field run_id)"
# -- keep last: export, register, locate (docs/SERVING.md)
echo "== 4. export to ONNX in the object store ($OUT/models), register in MLflow, locate a held-out test session"
$H export --run "$(field run_id)" --evaluation "$OUT/evaluation/report.json" --out "$OUT/models/heimdall" \
  --register heimdall --alias production > "$OUT/export.json"
$H locate "$OUT/test#0" --model models:/heimdall@production --geojson "$OUT/located.geojson"
