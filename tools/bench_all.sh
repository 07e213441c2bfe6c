#!/usr/bin/env bash
# Re-measure the tables of docs/performance.md with `d2ov bench`: the two seed Model Zoo architectures
# with random weights (no checkpoint is reachable offline; same graph and FLOPs, 100 detections per
# photo), the seed-size Panoptic FPN (R50 3x) and Keypoint R-CNN (R50-FPN 1x) with random weights, and the two bundled demo models on
# their own test images. Writes docs/bench/<model>/bench.{md,json,png}, from which `make docs` builds
# the page. Run it on an otherwise idle machine: about 40 minutes on 2 cores.
#
#   bash tools/bench_all.sh            # everything
#   bash tools/bench_all.sh seed       # only the seed models (or: panoptic, keypoints, demo, peers)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
RUNS=${RUNS:-5}
which=${1:-all}

# Real photos that ship inside installed packages: two to time, six others to calibrate INT8 on.
photos=.cache/bench/photos
calib=.cache/bench/calibration
mkdir -p "$photos" "$calib"
$PY - "$photos" "$calib" <<'PYEOF'
import shutil, sys
from pathlib import Path
import gradio, matplotlib, sklearn
photos, calib = map(Path, sys.argv[1:])
mpl = Path(matplotlib.get_data_path()) / "sample_data"
skl = Path(sklearn.__file__).parent / "datasets" / "images"
gr = Path(gradio.__file__).parent / "media_assets" / "images"
for src in (mpl / "grace_hopper.jpg", skl / "china.jpg"):
    shutil.copyfile(src, photos / src.name)
for src in (skl / "flower.jpg", gr / "cheetah.jpg", gr / "cheetah1.jpg", gr / "lion.jpg", gr / "tower.jpg", gr / "bus.png"):
    shutil.copyfile(src, calib / src.name)
PYEOF

if [[ $which == all || $which == seed ]]; then
  for m in COCO-Detection/faster_rcnn_R_50_FPN_1x COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x; do
    $PY -m d2ov_core bench "$m" --weights random --images "$photos/grace_hopper.jpg" "$photos/china.jpg" \
      --runs "$RUNS" --calibration "$calib" --out "docs/bench/${m#*/}"
  done
fi
if [[ $which == all || $which == demo ]]; then
  for m in demo/mask_rcnn_shapes demo/faster_rcnn_shapes; do
    $PY -m d2ov_core bench "$m" --images d2ov_core/data/samples/shapes_*.jpg --runs "$RUNS" --out "docs/bench/${m#*/}"
  done
fi
if [[ $which == all || $which == panoptic ]]; then
  m=COCO-PanopticSegmentation/panoptic_fpn_R_50_3x
  $PY -m d2ov_core bench "$m" --weights random --images "$photos/grace_hopper.jpg" "$photos/china.jpg" \
    --runs "$RUNS" --calibration "$calib" --variants detectron2 ov-fp32 ov-bf16 ov-int8 --out "docs/bench/${m#*/}"
fi
if [[ $which == all || $which == keypoints ]]; then
  m=COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x
  $PY -m d2ov_core bench "$m" --weights random --images "$photos/grace_hopper.jpg" "$photos/china.jpg" \
    --runs "$RUNS" --calibration "$calib" --variants detectron2 ov-fp32 ov-int8 --out "docs/bench/${m#*/}"
fi
if [[ $which == all || $which == peers ]]; then
  # d2ov side by side with what a user would run instead (the peers, `d2ov[bench]`): TorchScript and
  # onnxruntime FP32/INT8, calibrated on the same images as d2ov's INT8 (the demo: its generator's train split)
  v="detectron2 ov-fp32 ov-bf16 ov-int8 torchscript ort-fp32 ort-int8"
  for m in COCO-Detection/faster_rcnn_R_50_FPN_1x COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x; do
    $PY -m d2ov_core bench "$m" --weights random --images "$photos/grace_hopper.jpg" "$photos/china.jpg" \
      --runs "${PEER_RUNS:-3}" --calibration "$calib" --variants $v --out "docs/bench/peers_${m#*/}"
  done
  $PY -m tools.make_shapes --out .cache/shapes --split train --num 64
  for m in demo/faster_rcnn_shapes demo/mask_rcnn_shapes; do
    $PY -m d2ov_core bench "$m" --images d2ov_core/data/samples/shapes_*.jpg --runs "${PEER_RUNS:-3}" \
      --calibration .cache/shapes/train --variants $v --out "docs/bench/peers_${m#*/}"
  done
  # keypoints and panoptic: the peers' rows say why they cannot run these (d2ov decodes the raw outputs)
  $PY -m tools.make_figures --out .cache/figures --split train --num 16
  $PY -m d2ov_core bench demo/keypoint_rcnn_figures --images d2ov_core/data/samples/figures_*.jpg \
    --runs "${PEER_RUNS:-3}" --calibration .cache/figures/train --variants $v --out docs/bench/peers_keypoint_rcnn_figures
  $PY -m tools.make_panoptic --out .cache/panoptic --split train --num 16
  $PY -m d2ov_core bench demo/panoptic_fpn_shapes --images d2ov_core/data/samples/panoptic_*.jpg \
    --runs "${PEER_RUNS:-3}" --calibration .cache/panoptic/train --variants $v --out docs/bench/peers_panoptic_fpn_shapes
fi
