"""What the three synthetic data sets share: cluttered backgrounds, distractors, shape polygons,
:func:`place_shapes` (the shapes' placement, colour, occlusion and border-cut rules), the final noise
and blur, and writing a split (JPEGs, COCO json, the command line).

Every function draws from the ``numpy.random.Generator`` it is given, in a fixed order: an image
depends only on the generator's seed, and changing the order of the draws changes every data set
(bump the generators' ``GENERATOR_VERSION`` then).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import time

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

MIN_SIDE, MAX_SIDE = 256, 640  # image sides, px
MIN_SHAPE, MAX_SHAPE = 12, 200  # shape extent (diameter / side), px
MAX_INSTANCES = 12
MIN_VISIBLE_AREA = 30  # px; a shape visible on fewer pixels is not annotated
MIN_VISIBLE_FRACTION = 0.6  # of a shape's full (unoccluded, uncut) area
JPEG_QUALITY = (85, 92)

_SHIFT = 4  # sub-pixel precision bits for cv2.fillPoly
_SCALE = 1 << _SHIFT


# --------------------------------------------------------------------------------------- background
def rand_color(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=3).astype(np.float32)


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Float32 (h, w, 3): a gradient, stripes, smooth colour noise or a flat colour, maybe with texture blobs."""
    kind = rng.integers(0, 4)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:  # linear gradient between two colours
        a, b = rand_color(rng), rand_color(rng)
        ang = rng.uniform(0, 2 * math.pi)
        t = xx * math.cos(ang) + yy * math.sin(ang)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        img = a[None, None] * (1 - t[..., None]) + b[None, None] * t[..., None]
    elif kind == 1:  # stripes
        a, b = rand_color(rng), rand_color(rng)
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
        img = np.broadcast_to(rand_color(rng), (h, w, 3)).copy()
    img = np.ascontiguousarray(img, dtype=np.float32)
    # texture blobs: smoothed noise patches
    if rng.random() < 0.5:
        sh, sw = max(h // rng.integers(4, 16), 2), max(w // rng.integers(4, 16), 2)
        tex = rng.normal(0, rng.uniform(10, 40), size=(sh, sw, 3)).astype(np.float32)
        img += cv2.resize(tex, (w, h), interpolation=cv2.INTER_LINEAR)
    return img


def distractors(rng: np.random.Generator, img: np.ndarray) -> None:
    """Lines, open polylines, arcs and outlines that are not filled shapes (drawn into ``img``)."""
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(0, 9))):
        color = tuple(float(c) for c in rand_color(rng))
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
            cv2.ellipse(
                img,
                c,
                ax,
                float(rng.uniform(0, 180)),
                start,
                start + float(rng.uniform(40, 270)),
                color,
                thick,
                cv2.LINE_AA,
            )
        else:  # thin outline of a polygon with 4-7 corners (not filled)
            n = int(rng.integers(4, 8))
            c = np.array([rng.uniform(0, w), rng.uniform(0, h)])
            r = rng.uniform(10, 80)
            ang = np.sort(rng.uniform(0, 2 * math.pi, size=n))
            pts = c + np.stack([np.cos(ang), np.sin(ang)], 1) * r * rng.uniform(0.5, 1.0, size=(n, 1))
            cv2.polylines(img, [pts.astype(np.int32)], True, color, min(thick, 2), cv2.LINE_AA)


# ------------------------------------------------------------------------------------------- shapes
def shape_polygon(rng: np.random.Generator, cls: int, cx: float, cy: float, size: float) -> np.ndarray:
    """Polygon (N, 2) float of a shape (0 circle, 1 square, 2 triangle) whose extent (diameter / side)
    is about ``size`` px."""
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


def polygon_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def fill(canvas: np.ndarray, poly: np.ndarray, value, offset=(0, 0)) -> None:
    pts = np.round(poly * _SCALE).astype(np.int32) - np.array(offset, np.int32) * _SCALE
    cv2.fillPoly(canvas, [pts], value, lineType=cv2.LINE_8, shift=_SHIFT)


def place_shapes(rng: np.random.Generator, img: np.ndarray) -> tuple[np.ndarray, list, np.ndarray]:
    """Draw 0-12 filled shapes of random class, colour (contrasting with what lies underneath), size
    and rotation into ``img`` (float32 (h, w, 3), in place). Later shapes occlude earlier ones; border
    cuts and occlusion are limited so that every shape keeps ``MIN_VISIBLE_FRACTION`` of its full area
    visible. Returns (labels (h, w) int16: k = the k-th placed shape, 0 = none; placed [(k, class
    index, (y0, y1, x0, x1) bounding box)]; visible pixel count per k) -- :func:`shape_masks` turns
    them into the visible parts' masks."""
    h, w = img.shape[:2]
    labels = np.zeros((h, w), np.int16)
    visible = np.zeros(MAX_INSTANCES + 1, np.int64)  # visible pixel count per label
    full = np.zeros(MAX_INSTANCES + 1, np.float64)  # full (unoccluded, uncut) area per label
    placed: list[tuple[int, int, tuple[int, int, int, int]]] = []
    n = int(rng.integers(0, MAX_INSTANCES + 1))
    for k in range(1, n + 1):
        cls = int(rng.integers(0, 3))
        # skewed towards small objects, but not as much as log-uniform
        size = MIN_SHAPE + (MAX_SHAPE - MIN_SHAPE) * float(rng.random()) ** 1.6
        color = rand_color(rng)
        before = visible[1:k]
        for _attempt in range(8):
            margin = size * 0.25  # allow centres slightly outside the image: border cuts
            cx = rng.uniform(-margin, w + margin)
            cy = rng.uniform(-margin, h + margin)
            poly = shape_polygon(rng, cls, cx, cy, size)
            # work in the shape's bounding box only (integer pixel offsets: same raster as full image)
            x0, y0 = max(int(math.floor(poly[:, 0].min())) - 2, 0), max(int(math.floor(poly[:, 1].min())) - 2, 0)
            x1, y1 = min(int(math.ceil(poly[:, 0].max())) + 3, w), min(int(math.ceil(poly[:, 1].max())) + 3, h)
            if x1 - x0 < 1 or y1 - y0 < 1:
                continue
            m = np.zeros((y1 - y0, x1 - x0), np.uint8)
            fill(m, poly, 1, offset=(x0, y0))
            mb = m.astype(bool)
            area_full = polygon_area(poly)
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
        under = sub[mb].mean(axis=0)
        for _c in range(4):
            if np.abs(color - under).sum() >= 90:
                break
            color = rand_color(rng)
        shade = rng.uniform(0.0, 25.0)  # slight internal shading/noise
        sub[mb] = color[None, :] + rng.normal(0, shade, size=(int(mb.sum()), 1)).astype(np.float32) * 0.3
        visible[1:k] -= covered
        visible[k] = int(mb.sum())
        full[k] = area_full
        lab[mb] = k
        placed.append((k, cls, (y0, y1, x0, x1)))
    return labels, placed, visible


def shape_masks(labels: np.ndarray, placed: list, visible: np.ndarray):
    """Yields (class index, bool mask of its visible part) of every shape :func:`place_shapes` placed
    that kept ``MIN_VISIBLE_AREA`` px visible, in placing order."""
    for k, cls, (y0, y1, x0, x1) in placed:
        if visible[k] >= MIN_VISIBLE_AREA:
            m = np.zeros(labels.shape, bool)
            m[y0:y1, x0:x1] = labels[y0:y1, x0:x1] == k
            yield cls, m


def finish(rng: np.random.Generator, img: np.ndarray, max_noise: float = 12.0) -> np.ndarray:
    """Global noise (std up to ``max_noise``), a 3x3 blur on 30% of the images; uint8 RGB."""
    img += rng.normal(0, rng.uniform(0, max_noise), size=img.shape).astype(np.float32)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (3, 3), 0)
    return np.clip(img, 0, 255).astype(np.uint8)


# -------------------------------------------------------------------------------------------- split
def bbox(mask: np.ndarray) -> list[int]:
    """[x, y, w, h] of a non-empty bool mask."""
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    return [x0, y0, x1 - x0, y1 - y0]


def annotation(mask: np.ndarray) -> dict:
    """COCO segmentation (RLE, counts as str), bbox and area of a non-empty bool mask."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return {"segmentation": rle, "bbox": bbox(mask), "area": int(mask.sum())}


def save_image(rng: np.random.Generator, img: np.ndarray, out_dir: str, split: str, i: int) -> dict:
    """Write ``img`` (RGB uint8) as ``out_dir/<split>/<i:06d>.jpg`` at a JPEG quality drawn from ``rng``
    (``JPEG_QUALITY``); returns its COCO image record (id ``i + 1``)."""
    quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
    rel = f"{split}/{i:06d}.jpg"
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    with open(os.path.join(out_dir, rel), "wb") as f:
        f.write(buf.getvalue())
    h, w = img.shape[:2]
    return {"id": i + 1, "file_name": rel, "height": h, "width": w}


def write_split(
    out_dir: str, name: str, description: str, version: str, images: list, annotations: list, categories: list
) -> str:
    """Write ``out_dir/<name>.json`` (COCO: info, licenses, images, annotations, categories); returns its path."""
    data = {
        "info": {"description": description, "version": version},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    path = os.path.join(out_dir, f"{name}.json")
    with open(path, "w") as f:
        json.dump(data, f, separators=(",", ":"))
    return path


def split_cli(make, splits: dict, doc: str | None, argv=None, procs: bool = False) -> int:
    """The generators' command line: ``--out DIR`` with ``--split NAME [--num N] [--seed S]`` or
    ``--all`` (every split of ``splits`` with its default size and seed); ``make(out, split, num, seed)``
    writes one split (``procs=True``: also ``--procs N``, passed on as ``make(..., procs=N)``)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--split", default="test", help="split name (train/val/test)")
    ap.add_argument("--num", type=int, default=None, help="number of images (default per split)")
    ap.add_argument("--seed", type=int, default=None, help="seed (default per split)")
    ap.add_argument("--all", action="store_true", help="make train, val and test with default sizes/seeds")
    if procs:
        ap.add_argument("--procs", type=int, default=os.cpu_count() or 1, help="worker processes")
    a = ap.parse_args(argv)
    extra = {"procs": a.procs} if procs else {}
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
