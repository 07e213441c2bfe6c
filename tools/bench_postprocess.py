"""Timing of the postprocessing (numpy, and numba where installed) that follows Panoptic FPN and
Keypoint R-CNN graphs, on synthetic raw outputs of COCO size (no model, no OpenVINO):

    .venv/bin/python -m tools.bench_postprocess [--repeat 15] [--compare REV]

Inputs (fixed seeds, the same for every run and every revision):
  * panoptic: a 480x640 photo resized to 800x1067 (padded to 800x1088), 54 semantic classes at
    stride 4 (logits 54x200x272), 100 detections with 28x28 masks, scores spread over 0.05-1
    (about half at or above the merge's 0.5). Two kinds of semantic logits: ``regions`` (about 15
    stuff regions, like a photo's) and ``fragmented`` (the unit tests' smooth noise: a class change
    every few logit cells, a worst case for the argmax).
    Timed: ``postprocess()`` with the predictor's default threshold 0.5 (what ``d2ov predict`` does)
    and with 0.05 (every detection's mask pasted too), and its parts: ``sem_seg_postprocess`` alone
    and the merge (pasting the merged instances + ``combine_semantic_and_instance_outputs``); with
    numba installed, also ``postprocess(0.5)`` on the numpy paths the base install runs.
  * keypoints: 100 detections, 17 keypoints, 56x56 peaked heatmaps, boxes 20-600 px in the 800x1067
    input: ``heatmaps_to_keypoints`` (its compiled search when numba is installed), and with the
    numpy search the base install uses.
Reported: the median (and min) milliseconds over ``--repeat`` runs after one warm-up, the CPU model
(``lscpu``) and the load average. ``--compare REV`` also runs this same script on ``git archive
REV d2ov_core`` (e.g. the commit before the optimisation) in a subprocess and prints both.

It times whichever ``d2ov_core`` Python imports (printed with ``--json``): run from the repository's
root, this tree's. ``--compare`` runs the subprocess in the extracted archive's folder (so its
``d2ov_core`` comes first) with ``PYTHONPATH`` set to this repository (for ``tools``); to time another
checkout by hand, do the same: ``cd OTHER && PYTHONPATH=/path/to/this/repo python -m tools.bench_postprocess``.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

import numpy as np

import d2ov_core
from d2ov_core.runtime import panoptic as P
from d2ov_core.runtime import postprocess as PP
from d2ov_core.runtime.keypoints import heatmaps_to_keypoints
from d2ov_core.runtime.panoptic import PanopticParams
from d2ov_core.runtime.postprocess import postprocess
from d2ov_core.runtime.preprocess import Geometry

ROOT = Path(__file__).resolve().parent.parent

ORIGINAL, INPUT, PADDED, CLASSES, STRIDE = (480, 640), (800, 1067), (800, 1088), 54, 4


def _upsample(x: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(C, h, w)`` float32 maps (only to make smooth synthetic logits)."""
    wy = P.bilinear_matrix(x.shape[1], out_hw[0])
    wx = P.bilinear_matrix(x.shape[2], out_hw[1])
    return np.einsum("yh,chw,xw->cyx", wy, x, wx, optimize=True).astype(np.float32)


def panoptic_inputs(kind: str = "regions", seed: int = 0, n: int = 100) -> tuple[dict, dict]:
    """Raw outputs of a Panoptic FPN graph for one COCO-sized image, and the preprocessing's meta."""
    rng = np.random.default_rng(seed)
    hs, ws = PADDED[0] // STRIDE, PADDED[1] // STRIDE
    if kind == "regions":  # ~15 stuff regions (Voronoi cells of a few classes), confident inside
        low = (hs // 4, ws // 4)
        seeds = rng.uniform(0, 1, (15, 2)) * low
        labels = rng.choice(CLASSES, 15, replace=False)
        yy, xx = np.mgrid[0 : low[0], 0 : low[1]]
        cell = np.argmin((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2, axis=-1)
        onehot = np.zeros((CLASSES, *low), np.float32)
        onehot[labels[cell], yy, xx] = 1
        logits = _upsample(6 * onehot + rng.normal(0, 1, onehot.shape).astype(np.float32), (hs, ws))
        logits += rng.normal(0, 0.3, logits.shape).astype(np.float32)
    elif kind == "fragmented":  # tests/unit/test_panoptic.py's _smooth_logits at the stride-4 size
        low = rng.normal(0, 3, (CLASSES, hs // 4 + 1, ws // 4 + 1)).astype(np.float32)
        logits = _upsample(low, (hs, ws)) + rng.normal(0, 0.05, (CLASSES, hs, ws)).astype(np.float32)
    else:
        raise ValueError(kind)
    h, w = INPUT
    bw = np.exp(rng.uniform(np.log(20), np.log(600), n))
    bh = bw * np.exp(rng.normal(0, 0.4, n))
    x0, y0 = rng.uniform(-20, w - 10, n), rng.uniform(-20, h - 10, n)
    boxes = np.stack([x0, y0, x0 + bw, y0 + bh], 1).astype(np.float32)
    scores = np.sort(rng.uniform(0.05, 1, n)).astype(np.float32)[::-1].copy()
    # masks: a blurred ellipse of probability ~0.9 inside, ~0.05 outside, noisy
    yy, xx = (np.mgrid[0:28, 0:28] + 0.5) / 28
    cy, cx = rng.uniform(0.35, 0.65, (2, n, 1, 1))
    ry, rx = rng.uniform(0.2, 0.5, (2, n, 1, 1))
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
    masks = 1 / (1 + np.exp(6 * (inside - 1))) + rng.normal(0, 0.05, inside.shape)
    raw = {
        "boxes": boxes,
        "scores": scores,
        "classes": rng.integers(0, 80, n),
        "masks": np.clip(masks, 0, 1).astype(np.float32)[:, None],
        "sem_seg": logits.astype(np.float32),
        "image_size": np.array(INPUT),
    }
    meta = Geometry(ORIGINAL, INPUT, PADDED)
    return raw, meta


def keypoint_inputs(seed: int = 0, n: int = 100, k: int = 17, s: int = 56) -> tuple[np.ndarray, np.ndarray]:
    """``(N, K, S, S)`` peaked heatmaps (noise plus a Gaussian per keypoint) and ``(N, 4)`` boxes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:s, 0:s]
    cy, cx = rng.uniform(0, s, (2, n, k, 1, 1))
    sigma = rng.uniform(1, 4, (n, k, 1, 1))
    maps = rng.normal(0, 2, (n, k, s, s)) + 12 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    bw = np.exp(rng.uniform(np.log(20), np.log(600), n))
    bh = bw * np.exp(rng.normal(0.5, 0.4, n))  # people: taller than wide
    x0, y0 = rng.uniform(-20, INPUT[1] - 10, n), rng.uniform(-20, INPUT[0] - 10, n)
    return maps.astype(np.float32), np.stack([x0, y0, x0 + bw, y0 + bh], 1).astype(np.float32)


def _merge(raw: dict, semantic: np.ndarray, params: PanopticParams):
    """What :func:`postprocess` does for the merge after the semantic labels: paste the masks of the
    instances at or above the merge's threshold, combine (boxes scaled and clipped as it does)."""
    boxes = raw["boxes"] * np.float32([ORIGINAL[1] / INPUT[1], ORIGINAL[0] / INPUT[0]] * 2)
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, ORIGINAL[1])
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, ORIGINAL[0])
    use = np.flatnonzero(raw["scores"] >= params.score_threshold)
    if hasattr(PP, "paste_box_masks"):  # this branch's lazily pasted masks
        masks = PP.paste_box_masks(raw["masks"][:, 0], boxes, ORIGINAL).subset(use)
    else:
        masks = PP.paste_masks(raw["masks"][use, 0], boxes[use], ORIGINAL)
    return P.combine_semantic_and_instance_outputs(
        raw["scores"][use],
        raw["classes"][use],
        masks,
        semantic,
        params.overlap_threshold,
        params.stuff_area_threshold,
        params.score_threshold,
    )


def _time(fn, repeat: int) -> dict[str, float]:
    """Median and minimum wall milliseconds, and the median CPU milliseconds of the process (all its
    threads), over ``repeat`` runs after a warm-up."""
    fn()
    wall, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    return {
        "median_ms": round(statistics.median(wall), 2),
        "min_ms": round(min(wall), 2),
        "cpu_median_ms": round(statistics.median(cpu), 2),
    }


@contextlib.contextmanager
def _numpy_only():
    """The semantic postprocessing as the base install runs it (no numba): its numpy paths."""
    kernels = P._kernels
    P._kernels = lambda: None
    try:
        yield
    finally:
        P._kernels = kernels


def run(repeat: int) -> dict[str, dict[str, float]]:
    params = PanopticParams(tuple(f"stuff_{i}" for i in range(CLASSES)), stride=STRIDE)
    labels = [f"thing_{i}" for i in range(80)]
    out = {}
    for kind in ("regions", "fragmented"):
        raw, meta = panoptic_inputs(kind)
        logits = raw["sem_seg"]
        out[f"panoptic {kind}: postprocess(threshold=0.5)"] = _time(
            lambda: postprocess(raw, meta, labels, threshold=0.5, combine=params), repeat
        )
        out[f"panoptic {kind}: postprocess(threshold=0.05)"] = _time(
            lambda: postprocess(raw, meta, labels, threshold=0.05, combine=params), repeat
        )
        out[f"panoptic {kind}: sem_seg_postprocess"] = _time(
            lambda: P.sem_seg_postprocess(logits, INPUT, ORIGINAL, stride=STRIDE), repeat
        )
        semantic = P.sem_seg_postprocess(logits, INPUT, ORIGINAL, stride=STRIDE)
        out[f"panoptic {kind}: merge (paste merged + combine)"] = _time(lambda: _merge(raw, semantic, params), repeat)
        if getattr(P, "_kernels", lambda: None)() is not None:  # d2ov with the compiled loop: also without it
            with _numpy_only():
                out[f"panoptic {kind}: postprocess(threshold=0.5), numpy only"] = _time(
                    lambda: postprocess(raw, meta, labels, threshold=0.5, combine=params), repeat
                )
    maps, boxes = keypoint_inputs()
    out["keypoints: heatmaps_to_keypoints, 100 detections"] = _time(lambda: heatmaps_to_keypoints(maps, boxes), repeat)
    if "compiled" in inspect.signature(heatmaps_to_keypoints).parameters:  # d2ov with both searches
        out["keypoints: the same, numpy search (no numba)"] = _time(
            lambda: heatmaps_to_keypoints(maps, boxes, compiled=False), repeat
        )
    return out


def _cpu() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _other_revision(rev: str, repeat: int) -> dict:
    """This script's :func:`run` on ``git archive REV d2ov_core``, in a subprocess started in the
    archive's folder (its ``d2ov_core`` first on sys.path) with PYTHONPATH = this repository (``tools``)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "d2ov_core"], capture_output=True, check=True)
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
            tar.extractall(tmp, filter="data")
        res = subprocess.run(
            [sys.executable, "-m", "tools.bench_postprocess", "--repeat", str(repeat), "--json"],
            capture_output=True,
            text=True,
            cwd=tmp,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=True,
        )
        out = json.loads(res.stdout)
        if not Path(out["code"]).resolve().is_relative_to(Path(tmp).resolve()):
            raise RuntimeError(f"--compare {rev}: the subprocess imported {out['code']}, not the archive's d2ov_core")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=15, help="timed runs per case (after one warm-up)")
    ap.add_argument("--compare", metavar="REV", help="also time the d2ov_core of this git revision")
    ap.add_argument("--json", action="store_true", help="print the raw results as JSON")
    args = ap.parse_args()
    if args.json:
        print(json.dumps({"code": str(Path(d2ov_core.__file__).parent), "results": run(args.repeat)}))
        return
    before = _other_revision(args.compare, args.repeat)["results"] if args.compare else None
    load = os.getloadavg()[0]
    after = run(args.repeat)
    print(
        f"CPU: {_cpu()}, {os.cpu_count()} cores; load average {load:.2f} before, {os.getloadavg()[0]:.2f} after; "
        f"numpy {np.__version__}; {args.repeat} runs per case: wall median (min) ms / CPU median ms"
    )
    width = max(map(len, after))

    def cell(r):
        return f"{r['median_ms']:7.1f} ({r['min_ms']:.1f}) / {r['cpu_median_ms']:.1f}" if r else "-"

    if before is not None:
        print(f"{'case':{width}}  {args.compare[:10]:>26}  {'this tree':>26}")
    for case, r in after.items():
        print(
            f"{case:{width}}  " + (f"{cell(before.get(case)):>26}  " if before is not None else "") + f"{cell(r):>26}"
        )


if __name__ == "__main__":
    main()
