#!/usr/bin/env bash
# The zoo check: every Model Zoo entry of the catalog converted with calibrated random weights (FP32 IR),
# checked stage by stage and verified on two real photos, one model at a time; writes docs/zoo.md.
# Results per model are kept in .cache/zoo/ and reused: rerun to go on after an interruption,
# --force to recheck, --only NAME for one model, --render-only to rewrite the table.
# Expect 2-5 minutes per model on 2 cores; entries that differ only in their training schedule (1x/3x) are the
# same model with random weights and share one check (27 entries, 19 checks: about 1-1.5 hours).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
exec env PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m d2ov_core.measure.zoo "$@"
