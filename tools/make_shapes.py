#!/usr/bin/env python3
"""Deterministic synthetic instance-segmentation data set ("shapes") in COCO format.

Classes (COCO category ids): 1 circle, 2 square, 3 triangle.

Each image (256-640 px on either side, JPEG quality 85-92) has a cluttered background (noise,
gradients, stripes, blobs of texture, distractor lines/strokes/arcs that are NOT shapes) and 0-12
filled shapes of random colour, size (12-200 px) and rotation, partly overlapping each other and cut
by the image border. Later shapes occlude earlier ones; every annotation describes the VISIBLE part:
occlusion and border cuts are limited so that every shape keeps at least 60% of its full area
visible (``MIN_VISIBLE_FRACTION``): a shape hidden beyond recognition would be a label no model (or
person) can check.
``segmentation`` is COCO RLE (counts as str), ``bbox`` the visible part's [x, y, w, h], ``area`` its
pixel count. Instances whose visible area is below 30 px are dropped.

Layout written by :func:`make_split`::

    OUT/<split>.json            COCO json; file_name is "<split>/000123.jpg" (relative to OUT)
    OUT/<split>/000123.jpg

so the image root for ``register_coco_instances`` is OUT (the json's folder).

CLI::

    python tools/make_shapes.py --out DIR --split test --num 200 --seed 3
    python tools/make_shapes.py --out DIR --all          # train/val/test with default sizes/seeds
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import time

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

CLASSES = ["circle", "square", "triangle"]
CATEGORIES = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASSES)]

MIN_SIDE, MAX_SIDE = 256, 640
MIN_SHAPE, MAX_SHAPE = 12, 200
MAX_INSTANCES = 12
MIN_VISIBLE_AREA = 30
MIN_VISIBLE_FRACTION = 0.6  # of a shape's full (unoccluded, uncut) area
GENERATOR_VERSION = "2"  # bump when the images a (seed, index) produces change
JPEG_QUALITY = (85, 92)

# default split sizes and seeds (different seeds per split)
DEFAULT_SPLITS = {"train": (4000, 1001), "val": (200, 2002), "test": (200, 3003)}

_SHIFT = 4  # sub-pixel precision bits for cv2.fillPoly
_SCALE = 1 << _SHIFT

__all__ = ["CLASSES", "CATEGORIES", "make_split", "make_image", "main"]


# --------------------------------------------------------------------------------------- background
def _rand_color(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=3).astype(np.float32)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    kind = rng.integers(0, 4)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:  # linear gradient between two colours
        a, b = _rand_color(rng), _rand_color(rng)
        ang = rng.uniform(0, 2 * math.pi)
        t = xx * math.cos(ang) + yy * math.sin(ang)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        img = a[None, None] * (1 - t[..., None]) + b[None, None] * t[..., None]
    elif kind == 1:  # stripes
        a, b = _rand_color(rng), _rand_color(rng)
        ang = rng.uniform(0, math.pi)
        period = rng.uniform(6, 60)
        t = xx * math.cos(ang) + yy * math.sin(ang)
        s = 0.5 + 0.5 * np.sin(2 * math.pi * t / period)
        if rng.random() < 0.5:
            s = (s > 0.5).astype(np.float32)
        img = a[None, None] * (1 - s[..., None]) + b[None, None] * s[..., None]
    elif kind == 2:  # smooth low-frequency colour noise
        small = rng.uniform(0, 255, size=(rng.integers(2, 9), rng.integers(2, 9), 3)).astype(np.float32)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    else:  # flat colour
        img = np.broadcast_to(_rand_color(rng), (h, w, 3)).copy()
    img = np.ascontiguousarray(img, dtype=np.float32)
    # texture blobs: smoothed noise patches
    if rng.random() < 0.5:
        sh, sw = max(h // rng.integers(4, 16), 2), max(w // rng.integers(4, 16), 2)
        tex = rng.normal(0, rng.uniform(10, 40), size=(sh, sw, 3)).astype(np.float32)
        img += cv2.resize(tex, (w, h), interpolation=cv2.INTER_LINEAR)
    return img


def _distractors(rng: np.random.Generator, img: np.ndarray) -> None:
    """Lines, open polylines, arcs and outlines that are not filled shapes."""
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(0, 9))):
        color = tuple(float(c) for c in _rand_color(rng))
        thick = int(rng.integers(1, 5))
        kind = rng.integers(0, 4)
        if kind == 0:  # straight line
            p1 = (int(rng.integers(-50, w + 50)), int(rng.integers(-50, h + 50)))
            p2 = (int(rng.integers(-50, w + 50)), int(rng.integers(-50, h + 50)))
            cv2.line(img, p1, p2, color, thick, cv2.LINE_AA)
        elif kind == 1:  # open polyline / scribble
            n = int(rng.integers(3, 8))
            pts = np.cumsum(rng.normal(0, 40, size=(n, 2)), axis=0) + [rng.uniform(0, w), rng.uniform(0, h)]
            cv2.polylines(img, [pts.astype(np.int32)], False, color, thick, cv2.LINE_AA)
        elif kind == 2:  # arc (partial ellipse outline)
            c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            ax = (int(rng.integers(8, 120)), int(rng.integers(8, 120)))
            start = float(rng.uniform(0, 360))
            cv2.ellipse(img, c, ax, float(rng.uniform(0, 180)), start, start + float(rng.uniform(40, 270)),
                        color, thick, cv2.LINE_AA)
        else:  # thin outline of a polygon with 4-7 corners (not filled)
            n = int(rng.integers(4, 8))
            c = np.array([rng.uniform(0, w), rng.uniform(0, h)])
            r = rng.uniform(10, 80)
            ang = np.sort(rng.uniform(0, 2 * math.pi, size=n))
            pts = c + np.stack([np.cos(ang), np.sin(ang)], 1) * r * rng.uniform(0.5, 1.0, size=(n, 1))
            cv2.polylines(img, [pts.astype(np.int32)], True, color, min(thick, 2), cv2.LINE_AA)


# ------------------------------------------------------------------------------------------- shapes
def _shape_polygon(rng: np.random.Generator, cls: int, cx: float, cy: float, size: float) -> np.ndarray:
    """Polygon (N, 2) float of a shape whose extent (diameter / side) is about ``size`` px."""
    rot = rng.uniform(0, 2 * math.pi)
    if cls == 0:  # circle, diameter = size
        n = max(24, int(size * 0.8))
        ang = np.linspace(0, 2 * math.pi, n, endpoint=False)
        r = size / 2.0
    elif cls == 1:  # square, side = 0.8 * size
        ang = rot + np.array([0.25, 0.75, 1.25, 1.75]) * math.pi
        r = size * 0.8 / math.sqrt(2.0)
    else:  # triangle: roughly equilateral, vertex jitter, circumradius ~ size / 2
        ang = rot + np.array([0.0, 2 / 3, 4 / 3]) * math.pi + rng.uniform(-0.25, 0.25, size=3)
        r = size / 2.0 * rng.uniform(0.85, 1.0, size=3)
    return np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], axis=1)


def _polygon_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _fill(canvas: np.ndarray, poly: np.ndarray, value, offset=(0, 0)) -> None:
    pts = np.round(poly * _SCALE).astype(np.int32) - np.array(offset, np.int32) * _SCALE
    cv2.fillPoly(canvas, [pts], value, lineType=cv2.LINE_8, shift=_SHIFT)


def make_image(rng: np.random.Generator):
    """One image: returns (uint8 HxWx3 RGB, list of (class_index, bool mask HxW)) of visible parts."""
    h, w = int(rng.integers(MIN_SIDE, MAX_SIDE + 1)), int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
    img = _background(rng, h, w)
    _distractors(rng, img)
    labels = np.zeros((h, w), np.int16)  # 0 = background, k = k-th placed shape
    visible = np.zeros(MAX_INSTANCES + 1, np.int64)  # visible pixel count per label
    full = np.zeros(MAX_INSTANCES + 1, np.float64)  # full (unoccluded, uncut) area per label
    placed: list[tuple[int, int, tuple[int, int, int, int]]] = []  # (label k, class, (y0, y1, x0, x1))
    n = int(rng.integers(0, MAX_INSTANCES + 1))
    for k in range(1, n + 1):
        cls = int(rng.integers(0, 3))
        # skewed towards small objects, but not as much as log-uniform
        size = MIN_SHAPE + (MAX_SHAPE - MIN_SHAPE) * float(rng.random()) ** 1.6
        color = _rand_color(rng)
        before = visible[1:k]
        for _attempt in range(8):
            margin = size * 0.25  # allow centres slightly outside the image: border cuts
            cx = rng.uniform(-margin, w + margin)
            cy = rng.uniform(-margin, h + margin)
            poly = _shape_polygon(rng, cls, cx, cy, size)
            # work in the shape's bounding box only (integer pixel offsets: same raster as full image)
            x0, y0 = max(int(math.floor(poly[:, 0].min())) - 2, 0), max(int(math.floor(poly[:, 1].min())) - 2, 0)
            x1, y1 = min(int(math.ceil(poly[:, 0].max())) + 3, w), min(int(math.ceil(poly[:, 1].max())) + 3, h)
            if x1 - x0 < 1 or y1 - y0 < 1:
                continue
            m = np.zeros((y1 - y0, x1 - x0), np.uint8)
            _fill(m, poly, 1, offset=(x0, y0))
            mb = m.astype(bool)
            area_full = _polygon_area(poly)
            if mb.sum() < max(MIN_VISIBLE_AREA, MIN_VISIBLE_FRACTION * area_full):  # border cut too deep
                continue
            lab = labels[y0:y1, x0:x1]
            # limit occlusion: every earlier shape keeps MIN_VISIBLE_FRACTION of its full area
            covered = np.bincount(lab[mb].ravel(), minlength=k)[1:k]
            if np.any((covered > 0) & (before - covered < MIN_VISIBLE_FRACTION * full[1:k])):
                continue
            break
        else:
            continue
        sub = img[y0:y1, x0:x1]
        # contrast with what lies underneath
        under = sub[mb].mean(axis=0)
        for _c in range(4):
            if np.abs(color - under).sum() >= 90:
                break
            color = _rand_color(rng)
        shade = rng.uniform(0.0, 25.0)  # slight internal shading/noise
        fill = color[None, :] + rng.normal(0, shade, size=(int(mb.sum()), 1)).astype(np.float32) * 0.3
        sub[mb] = fill
        visible[1:k] -= covered
        visible[k] = int(mb.sum())
        full[k] = area_full
        lab[mb] = k
        placed.append((k, cls, (y0, y1, x0, x1)))
    # global noise, optional blur
    img += rng.normal(0, rng.uniform(0, 12), size=img.shape).astype(np.float32)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (3, 3), 0)
    out = np.clip(img, 0, 255).astype(np.uint8)
    instances = []
    for k, cls, (y0, y1, x0, x1) in placed:
        if visible[k] >= MIN_VISIBLE_AREA:
            vis = np.zeros((h, w), bool)
            vis[y0:y1, x0:x1] = labels[y0:y1, x0:x1] == k
            instances.append((cls, vis))
    return out, instances


def _annotation(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    return {"segmentation": rle, "bbox": [x0, y0, x1 - x0, y1 - y0], "area": int(mask.sum())}


def save_jpeg(img: np.ndarray, out_dir: str, rel: str, quality: int) -> None:
    """Write ``img`` (RGB uint8) as a JPEG of ``quality`` to ``out_dir/rel``."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    with open(os.path.join(out_dir, rel), "wb") as f:
        f.write(buf.getvalue())


def write_coco(out_dir: str, split: str, description: str, version: str, images: list, annotations: list,
               categories: list) -> str:
    """Write ``out_dir/<split>.json`` (COCO: info, licenses, images, annotations, categories); returns its path."""
    data = {
        "info": {"description": description, "version": version},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    path = os.path.join(out_dir, f"{split}.json")
    with open(path, "w") as f:
        json.dump(data, f, separators=(",", ":"))
    return path


def make_split(out_dir: str, split: str, num: int, seed: int) -> str:
    """Write ``num`` images of ``split`` under ``out_dir``; returns the path of ``<split>.json``.

    Deterministic: image i depends only on (seed, i)."""
    os.makedirs(os.path.join(out_dir, split), exist_ok=True)
    images, annotations = [], []
    ann_id = 1
    for i in range(num):
        rng = np.random.default_rng([seed, i])
        img, inst = make_image(rng)
        quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
        rel = f"{split}/{i:06d}.jpg"
        save_jpeg(img, out_dir, rel, quality)
        h, w = img.shape[:2]
        images.append({"id": i + 1, "file_name": rel, "height": h, "width": w})
        for cls, m in inst:
            a = _annotation(m)
            a.update({"id": ann_id, "image_id": i + 1, "category_id": cls + 1, "iscrowd": 0})
            annotations.append(a)
            ann_id += 1
    return write_coco(out_dir, split, f"d2ov synthetic shapes, split {split}, seed {seed}", GENERATOR_VERSION,
                      images, annotations, CATEGORIES)


def split_cli(make, splits: dict, doc: str | None, argv=None, **extra) -> int:
    """The generators' command line: ``--out DIR`` with ``--split NAME [--num N] [--seed S]`` or
    ``--all`` (every split of ``splits`` with its default size and seed); ``make(out, split, num, seed,
    **extra)`` writes one split."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--split", default="test", help="split name (train/val/test)")
    ap.add_argument("--num", type=int, default=None, help="number of images (default per split)")
    ap.add_argument("--seed", type=int, default=None, help="seed (default per split)")
    ap.add_argument("--all", action="store_true", help="make train, val and test with default sizes/seeds")
    a = ap.parse_args(argv)
    if a.all:
        todo = [(s, n, sd) for s, (n, sd) in splits.items()]
    else:
        n, sd = splits.get(a.split, (200, 0))
        todo = [(a.split, a.num if a.num is not None else n, a.seed if a.seed is not None else sd)]
    for split, num, seed in todo:
        t = time.time()
        p = make(a.out, split, num, seed, **extra)
        print(f"{split}: {num} images, seed {seed} -> {p} ({(time.time() - t) / max(num, 1) * 1000:.1f} ms/image)")
    return 0


def main(argv=None) -> int:
    return split_cli(make_split, DEFAULT_SPLITS, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
