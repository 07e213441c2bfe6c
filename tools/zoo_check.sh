#!/usr/bin/env bash
# The zoo check: every Model Zoo entry of the catalog converted with calibrated random weights (FP32 IR),
# checked stage by stage and verified on two real photos, one model at a time; writes docs/zoo.md.
# Results per model are kept in .cache/zoo/ and reused: rerun to go on after an interruption,
# --force to recheck, --only NAME for one model, --render-only to rewrite the table.
# Expect 3-6 minutes per model on 2 cores (23 models: about 1.5-2 hours).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
exec env PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m d2ov_core.measure.zoo "$@"
