#!/usr/bin/env bash
# `make demo`: the main job on the embedded defaults (no servers needed).
set -euo pipefail
OUT=${1:-demo-out}
H=.venv/bin/heimdall
mkdir -p "$OUT"
echo "== 1. pretrain the production model (grid posterior) on world and network families: world seeds"
echo "      1000-1999, networks of piemonte-liguria (configs/gridnet.yaml simulates its sets; MLflow: mlruns.db)"
# the sets are named by the config's sizes and seeds, so a demo rerun after a config change simulates new ones
SETS=$(.venv/bin/python -c 'import yaml; d = yaml.safe_load(open("configs/gridnet.yaml"))["data"]
print("{train_sessions}-s{train_seed} {val_sessions}-s{val_seed}".format(**d))')
read -r TRAIN_TAG VAL_TAG <<< "$SETS"
$H train --config configs/gridnet.yaml --data "$OUT/gridnet-train-$TRAIN_TAG" --val "$OUT/gridnet-val-$VAL_TAG" \
  --out-dir "$OUT/runs" --summary "$OUT/train.json"
field() { .venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$OUT/train.json" "$1"; }
CKPT=$(field checkpoint)
echo "== 2. evaluate it on a world it never saw (the reference world, seed 0, on nw-italy) beside the baselines,"
echo "      the oracle and the Cramér-Rao figure ($OUT/evaluation/report.html)"
$H simulate --network nw-italy --sessions 300 --world-seed 0 --seed 2 --out "$OUT/test" > /dev/null
$H data info "$OUT/test"
$H evaluate --model "$CKPT" --data "$OUT/test" --out "$OUT/evaluation" --mlflow-run "$(field run_id)"
echo "== 3. export to ONNX in the object store ($OUT/models), register in MLflow as @production, locate"
$H export --checkpoint "$CKPT" --evaluation "$OUT/evaluation/report.json" --out "$OUT/models/heimdall" \
  --register heimdall --alias production > "$OUT/export.json"
$H locate "$OUT/test#0" --model models:/heimdall@production --geojson "$OUT/located.geojson"
echo "== 4. learn the terrain of a world the production model never saw (nw-italy, world seed 105) from APRS"
echo "      beacons: simulated APRS traffic -> data label (Dire Wolf) -> map fit -> the production model with"
echo "      the fitted fields (export --map) -> locate a voice session: MAP, modes and 90 % region beside the truth"
$H simulate --network nw-italy --mode aprs --positions clustered --sessions 300 --world-seed 105 --seed 31 \
  --out "$OUT/aprs" > /dev/null
$H data label "$OUT/aprs" --out "$OUT/aprs-labelled" --json
$H map fit "$OUT/aprs-labelled" --model "$CKPT" --out "$OUT/maps/w105" > /dev/null
$H export --checkpoint "$CKPT" --map "$OUT/maps/w105" --out "$OUT/models/heimdall-w105" \
  --register heimdall-w105 --alias production > "$OUT/export-w105.json"
$H simulate --network nw-italy --mode nbfm --sessions 1 --world-seed 105 --seed 32 --out "$OUT/w105-voice" > /dev/null
$H locate "$OUT/w105-voice#0" --model models:/heimdall-w105@production --geojson "$OUT/w105-located.geojson"
