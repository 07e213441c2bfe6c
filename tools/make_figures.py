"""Deterministic synthetic keypoint data set ("figures"): stick figures in COCO keypoint format.

One category, ``figure`` (COCO id 1), with seven keypoints (:data:`KEYPOINTS`)::

    head, neck, left_hand, right_hand, hip, left_foot, right_foot

Left and right are in the figure's own frame: every figure faces the viewer, so its left hand is
on the image's right (before its tilt of at most 25 degrees); a horizontal flip swaps them
(:data:`FLIP_MAP`). The skeleton is neck-head, neck-hands, neck-hip, hip-feet (:data:`SKELETON`).

Images are drawn over the cluttered backgrounds of ``make_shapes.py`` (gradients, stripes, noise,
texture blobs, distractor lines, scribbles, arcs, outlines): 0-6 figures of random colour, line
width, height (36-260 px) and pose, roughly upright, overlapping each other a little, cut by the
border, and partly hidden by 0-3 filled distractor shapes (circles, squares, triangles, not
annotated) drawn over them.

Annotations (COCO keypoint format): ``keypoints`` ``[x, y, v] * 7`` with x, y in COCO's pixel-index
convention (Detectron2 adds 0.5 when loading), ``v = 2`` drawn and visible, ``v = 1`` inside the
image but hidden under a later figure or shape, ``v = 0`` outside the image (x = y = 0);
``num_keypoints`` counts v > 0. ``bbox`` is the figure's drawn extent (occluded parts included)
clipped to the image; ``area`` is the bbox's area: a stick figure's own pixels are a thin outline,
and OKS needs the object's scale (COCO uses the person's silhouette area). Figures with fewer than
three keypoints inside the image are not drawn.

OKS sigmas for evaluation (:data:`OKS_SIGMAS`, also in the model's config as
``TEST.KEYPOINT_OKS_SIGMAS``): 0.05 for head, neck and hip (centres of a disc or a joint), 0.06
for hands and feet (line ends, whose exact end is less well defined at 1-5 px line width). At
``area`` = bbox area, a keypoint 0.12 x sqrt(area) away still scores OKS 0.5 (12 px for a 60 x 170
figure); OKS 0.95 needs about 0.03 x sqrt(area).

Layout as make_shapes.py: ``OUT/<split>.json`` and ``OUT/<split>/000123.jpg``.

CLI (from the repository's root)::

    python -m tools.make_figures --out DIR --split test --num 200
    python -m tools.make_figures --out DIR --all
"""

from __future__ import annotations

import math
import os
import sys

import cv2
import numpy as np

from . import synth

CLASSES = ["figure"]
KEYPOINTS = ["head", "neck", "left_hand", "right_hand", "hip", "left_foot", "right_foot"]
FLIP_MAP = [("left_hand", "right_hand"), ("left_foot", "right_foot")]
SKELETON = [
    ("head", "neck"),
    ("neck", "left_hand"),
    ("neck", "right_hand"),
    ("neck", "hip"),
    ("hip", "left_foot"),
    ("hip", "right_foot"),
]
OKS_SIGMAS = [0.05, 0.05, 0.06, 0.06, 0.05, 0.06, 0.06]
CATEGORIES = [
    {
        "id": 1,
        "name": "figure",
        "supercategory": "figure",
        "keypoints": KEYPOINTS,
        "skeleton": [[KEYPOINTS.index(a) + 1, KEYPOINTS.index(b) + 1] for a, b in SKELETON],
    }
]

MIN_SIDE, MAX_SIDE = 256, 640
MIN_HEIGHT, MAX_HEIGHT = 36, 260
MAX_FIGURES = 6
MAX_OCCLUDERS = 3
MAX_TILT = math.radians(25)
GENERATOR_VERSION = "1"
DEFAULT_SPLITS = {"train": (4000, 4101), "val": (200, 4202), "test": (200, 4303)}

__all__ = ["CLASSES", "KEYPOINTS", "FLIP_MAP", "SKELETON", "OKS_SIGMAS", "CATEGORIES", "make_image", "make_split"]


def _pose(rng: np.random.Generator, height: float) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float]:
    """A figure of ``height`` px in its own frame (x right = the figure's LEFT, y down, origin at the
    hip): keypoints, the elbow/knee bend points, and the head radius."""
    head_r = height * rng.uniform(0.08, 0.12)
    body = height * rng.uniform(0.28, 0.36)
    leg = height - body - 2 * head_r
    arm = height * rng.uniform(0.3, 0.42)
    neck = np.array([rng.uniform(-0.05, 0.05) * height, -body])
    head = neck + np.array([rng.uniform(-0.2, 0.2) * head_r, -head_r * rng.uniform(1.0, 1.15)])
    hip = np.zeros(2)

    def limb(origin, length, lo, hi, side):
        # angle from straight down, opening to the figure's ``side`` (+1 = its left = +x here)
        a1 = math.radians(rng.uniform(lo, hi)) * side
        bend = math.radians(rng.uniform(-35, 35))
        mid = origin + 0.5 * length * np.array([math.sin(a1), math.cos(a1)])
        end = mid + 0.5 * length * np.array([math.sin(a1 + bend * side), math.cos(a1 + bend * side)])
        return mid, end

    points, bends = {"head": head, "neck": neck, "hip": hip}, {}
    for name, side in (("left", 1.0), ("right", -1.0)):
        bends[f"{name}_elbow"], points[f"{name}_hand"] = limb(neck, arm, 20, 150, side)
        bends[f"{name}_knee"], points[f"{name}_foot"] = limb(hip, leg, 8, 40, side)
    return points, bends, head_r


def _transform(p: np.ndarray, cx: float, cy: float, tilt: float) -> np.ndarray:
    c, s = math.cos(tilt), math.sin(tilt)
    return np.array([cx + c * p[0] - s * p[1], cy + s * p[0] + c * p[1]])


def _draw_figure(canvas: np.ndarray, pts: dict, bends: dict, head_r: float, value, thick: int, filled_head: bool):
    def line(a, b):
        cv2.line(canvas, tuple(int(round(v)) for v in a), tuple(int(round(v)) for v in b), value, thick, cv2.LINE_8)

    line(pts["neck"], pts["hip"])
    for side in ("left", "right"):
        line(pts["neck"], bends[f"{side}_elbow"])
        line(bends[f"{side}_elbow"], pts[f"{side}_hand"])
        line(pts["hip"], bends[f"{side}_knee"])
        line(bends[f"{side}_knee"], pts[f"{side}_foot"])
    line(pts["neck"], pts["head"])
    c = tuple(int(round(v)) for v in pts["head"])
    cv2.circle(canvas, c, max(int(round(head_r)), 2), value, -1 if filled_head else thick, cv2.LINE_8)


def make_image(rng: np.random.Generator):
    """One image: ``(uint8 HxWx3 RGB, [annotation dict without ids]...)``."""
    h, w = int(rng.integers(MIN_SIDE, MAX_SIDE + 1)), int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
    img = synth.background(rng, h, w)
    synth.distractors(rng, img)
    owner = np.zeros((h, w), np.int16)  # which figure (1..) drew each pixel last; -1 = an occluder
    figures = []  # (k, keypoints (7, 2) float, bbox x0 y0 x1 y1)
    boxes: list[np.ndarray] = []
    n = int(rng.integers(0, MAX_FIGURES + 1))
    for k in range(1, n + 1):
        height = MIN_HEIGHT + (MAX_HEIGHT - MIN_HEIGHT) * float(rng.random()) ** 1.4
        thick = int(np.clip(round(height / rng.uniform(25, 60)), 1, 6))
        filled = bool(rng.random() < 0.6)
        for _attempt in range(10):
            pts0, bends0, head_r = _pose(rng, height)
            tilt = rng.uniform(-MAX_TILT, MAX_TILT)
            cx, cy = rng.uniform(-0.1 * w, 1.1 * w), rng.uniform(0, h + 0.3 * height)
            pts = {kk: _transform(v, cx, cy, tilt) for kk, v in pts0.items()}
            bends = {kk: _transform(v, cx, cy, tilt) for kk, v in bends0.items()}
            kp = np.array([pts[name] for name in KEYPOINTS])
            inside = (kp[:, 0] >= 0) & (kp[:, 0] <= w - 1) & (kp[:, 1] >= 0) & (kp[:, 1] <= h - 1)
            if inside.sum() < 3:
                continue
            allp = np.concatenate([kp, np.array(list(bends.values()))])
            pad = head_r + thick
            box = np.array(
                [allp[:, 0].min() - pad, allp[:, 1].min() - pad, allp[:, 0].max() + pad, allp[:, 1].max() + pad]
            )
            box = np.clip(box, [0, 0, 0, 0], [w, h, w, h])
            if box[2] - box[0] < 4 or box[3] - box[1] < 8:
                continue
            if boxes and max(_iou(box, b) for b in boxes) > 0.25:
                continue
            break
        else:
            continue
        m = np.zeros((h, w), np.uint8)
        _draw_figure(m, pts, bends, head_r, 1, thick, filled)
        mb = m.astype(bool)
        under = img[mb].mean(axis=0) if mb.any() else np.zeros(3, np.float32)
        color = synth.rand_color(rng)
        for _c in range(6):
            if np.abs(color - under).sum() >= 120:
                break
            color = synth.rand_color(rng)
        img[mb] = color
        owner[mb] = k
        figures.append((k, kp, box))
        boxes.append(box)
    # occluders: filled shapes over everything
    for _ in range(int(rng.integers(0, MAX_OCCLUDERS + 1))):
        size = rng.uniform(12, 70)
        poly = synth.shape_polygon(rng, int(rng.integers(0, 3)), rng.uniform(0, w), rng.uniform(0, h), size)
        m = np.zeros((h, w), np.uint8)
        synth.fill(m, poly, 1)
        mb = m.astype(bool)
        img[mb] = synth.rand_color(rng)
        owner[mb] = -1
    out = synth.finish(rng, img, max_noise=10)
    anns = []
    for k, kp, box in figures:
        flat = []
        for x, y in kp:
            if 0 <= x <= w - 1 and 0 <= y <= h - 1:
                xi, yi = int(round(x)), int(round(y))
                v = 2 if owner[yi, xi] == k else 1
                flat += [round(float(x), 2), round(float(y), 2), v]
            else:
                flat += [0, 0, 0]
        x0, y0, x1, y1 = (float(v) for v in box)
        anns.append(
            {
                "keypoints": flat,
                "num_keypoints": sum(1 for v in flat[2::3] if v > 0),
                "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                "area": round((x1 - x0) * (y1 - y0), 2),
            }
        )
    return out, anns


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def make_split(out_dir: str, split: str, num: int, seed: int) -> str:
    """Write ``num`` images of ``split`` under ``out_dir``; returns the path of ``<split>.json``.
    Deterministic: image i depends only on (seed, i)."""
    os.makedirs(os.path.join(out_dir, split), exist_ok=True)
    images, annotations = [], []
    for i in range(num):
        rng = np.random.default_rng([seed, i, 7])
        img, anns = make_image(rng)
        images.append(synth.save_image(rng, img, out_dir, split, i))
        for a in anns:
            a.update({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0})
            annotations.append(a)
    return synth.write_split(
        out_dir,
        split,
        f"d2ov synthetic stick figures, split {split}, seed {seed}",
        GENERATOR_VERSION,
        images,
        annotations,
        CATEGORIES,
    )


def main(argv=None) -> int:
    return synth.split_cli(make_split, DEFAULT_SPLITS, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
