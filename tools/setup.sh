#!/usr/bin/env bash
# Create .venv with everything d2ov needs; idempotent (a second run takes seconds).
#
#   tools/setup.sh            # python deps + detectron2
#   D2OV_BROWSER=1 tools/setup.sh   # also Debian's chromium for the browser tests
#
# Detectron2 has no official PyPI release. We build the pb1-detectron2==0.6 sdist (byte-identical
# .py files to the official v0.6 tag) without its C++ extension, after checking its sha256.
# If a detectron2 is already importable in .venv (e.g. a user's own build), it is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${D2OV_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3.11}

LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
# pip, quiet on success, its whole log on failure
pipq() { "$VPY" -m pip "$@" >"$LOG" 2>&1 || { grep -v "is ignored: it is neither" "$LOG" | tail -40; echo "[setup] pip $* failed" >&2; return 1; }; }

stamp_of() { cat requirements.txt pyproject.toml tools/setup.sh tools/install_detectron2.py | sha256sum | cut -d' ' -f1; }
STAMP="$VENV/.d2ov-setup-stamp"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_of)" ] && "$VPY" -c "import detectron2, d2ov_core" 2>/dev/null; then
  echo "[setup] .venv is up to date"
else
  want=$(stamp_of)  # taken before installing: an edit made meanwhile is installed by the next run
  echo "[setup] installing python packages (first run: a few minutes)"
  pipq install --upgrade "pip>=24" "setuptools>=70,<81" wheel
  pipq install -r requirements.txt
  # ByteTrack for --track; its dependencies are in requirements.txt (opencv-python left out: the
  # headless build there provides cv2)
  pipq install --no-deps "trackers==2.6.1"

  "$VPY" -m tools.install_detectron2
  pipq install --no-deps --no-build-isolation -e .
  "$VPY" -W ignore -c "
import d2ov_core.export.compat as c; c.apply()
from detectron2 import model_zoo
p = model_zoo.get_config_file('COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml')
print('[setup] detectron2 ok, model-zoo configs at', p.rsplit('/', 2)[0])
"
  echo "$want" > "$STAMP"
fi

# The KServe predictor's own venv (kserve conflicts with .venv's psutil/pandas: requirements-serve.txt);
# made for the tests (make test sets D2OV_SERVE=1) or when asked, not for `make app`
SERVE_VENV=${D2OV_SERVE_VENV:-$ROOT/.venv-serve}
SERVE_STAMP="$SERVE_VENV/.d2ov-setup-stamp"
serve_stamp() { cat requirements-serve.txt pyproject.toml | sha256sum | cut -d' ' -f1; }
if [ "${D2OV_SERVE:-0}" != "1" ]; then
  :
elif [ -f "$SERVE_STAMP" ] && [ "$(cat "$SERVE_STAMP")" = "$(serve_stamp)" ] \
   && "$SERVE_VENV/bin/python" -c "import kserve, d2ov_core" 2>/dev/null; then
  echo "[setup] .venv-serve is up to date"
else
  echo "[setup] creating $SERVE_VENV (kserve, OpenVINO: about a minute)"
  [ -x "$SERVE_VENV/bin/python" ] || "$PY" -m venv "$SERVE_VENV"
  VPY="$SERVE_VENV/bin/python" pipq install -r requirements-serve.txt
  VPY="$SERVE_VENV/bin/python" pipq install --no-deps -e .
  serve_stamp > "$SERVE_STAMP"
fi

if [ "${D2OV_BROWSER:-0}" = "1" ] && ! command -v chromium >/dev/null 2>&1; then
  echo "[setup] installing Debian's chromium for the browser tests"
  if [ "$(id -u)" = "0" ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
echo "[setup] done: $VENV"
