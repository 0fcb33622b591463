#!/usr/bin/env bash
# `make demo`: the main job on the embedded defaults (no servers needed).
set -euo pipefail
OUT=${1:-demo-out}
H=.venv/bin/heimdall
mkdir -p "$OUT"
echo "== 1. simulate the reference world on the default network (nw-italy)"
$H simulate --network nw-italy --sessions 400 --world-seed 0 --seed 1 --out "$OUT/sessions"
