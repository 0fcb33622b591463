#!/usr/bin/env bash
# `make demo`: the main job on the embedded defaults (no servers needed).
set -euo pipefail
OUT=${1:-demo-out}
H=.venv/bin/heimdall
mkdir -p "$OUT"
echo "== 1. simulate validation sessions from the training family: world seeds 1000-1999, networks of piemonte-liguria"
$H simulate --network family:piemonte-liguria --world-seed 1000-1999 --sessions-per-world 32 \
  --sessions 400 --seed 1 --out "$OUT/sessions"
$H data info "$OUT/sessions"
echo "== 2. train the family config (a few minutes on 2 CPU cores; validation: the sessions above; MLflow: mlruns.db)"
$H train --config configs/family.yaml --val "$OUT/sessions" --out-dir "$OUT/runs" --summary "$OUT/train.json"
echo "== 3. evaluate it on a world it never saw (the reference world, seed 0, on nw-italy) beside the baselines,"
echo "      the oracle and the Cramér-Rao figure ($OUT/evaluation/report.html)"
$H simulate --network nw-italy --sessions 300 --world-seed 0 --seed 2 --out "$OUT/test" > /dev/null
field() { .venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$OUT/train.json" "$1"; }
$H evaluate --model "$(field best_checkpoint)" --data "$OUT/test" --out "$OUT/evaluation" --mlflow-run "$(field run_id)"
# -- keep last: export, register, locate (docs/SERVING.md)
echo "== 4. export to ONNX in the object store ($OUT/models), register in MLflow, locate a held-out test session"
$H export --run "$(field run_id)" --evaluation "$OUT/evaluation/report.json" --out "$OUT/models/heimdall" \
  --register heimdall --alias production > "$OUT/export.json"
$H locate "$OUT/test#0" --model models:/heimdall@production --geojson "$OUT/located.geojson"
echo "== 5. learn the terrain of a world the production model never saw (nw-italy, world seed 105) from APRS"
echo "      beacons: simulated APRS traffic -> data label (Dire Wolf) -> map fit -> map locate of a voice session"
$H simulate --network nw-italy --mode aprs --positions clustered --sessions 300 --world-seed 105 --seed 31 \
  --out "$OUT/aprs" > /dev/null
$H data label "$OUT/aprs" --out "$OUT/aprs-labelled" --json
$H map fit "$OUT/aprs-labelled" --out "$OUT/maps/w105" > /dev/null
$H simulate --network nw-italy --mode nbfm --sessions 1 --world-seed 105 --seed 32 --out "$OUT/w105-voice" > /dev/null
$H map locate "$OUT/w105-voice#0" --map "$OUT/maps/w105" --geojson "$OUT/w105-located.geojson"
