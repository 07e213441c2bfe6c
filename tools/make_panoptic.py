"""Deterministic synthetic panoptic-segmentation data set ("panoptic shapes").

Categories (dataset ids; :data:`PANOPTIC_CATEGORIES`):

    things (isthing 1): 1 circle, 2 square, 3 triangle      -- the shapes of make_shapes.py
    stuff  (isthing 0): 4 stripes, 5 checker, 6 noise, 7 gradient

Each image (256-640 px on either side, JPEG quality 85-92) is split into 2-4 stuff REGIONS: the
cells of a Voronoi diagram of 2-4 random seed points whose distances are perturbed by a smooth
random field (so the borders are wavy curves, not straight lines); every cell covers at least
``MIN_REGION_FRACTION`` of the image. Each region is filled with the texture of its own stuff
class (the classes are distinct within an image, so one stuff class = one segment per image):

* stripes:  two contrasting colours, random angle and period (6-48 px), hard or sine-shaped;
* checker:  a rotated checkerboard of two contrasting colours, cells of 8-40 px;
* noise:    a base colour with strong per-pixel noise (std 30-60; grains of 1-3 px, grey or coloured);
* gradient: a smooth linear gradient between two colours plus low-frequency colour variation.

Then make_shapes.py's distractors (lines, scribbles, arcs, outlines; part of the stuff under them)
and 0-12 shapes (things), drawn with make_shapes.py's rules (:func:`tools.synth.place_shapes`):
random colour (contrasting with what lies underneath), size 12-200 px, rotation, border cuts and
occlusion limited so that every shape keeps at least 60% of its full area visible; shapes whose
visible area is below 30 px are dropped (their pixels become "unlabeled" in the panoptic and
semantic labels). Finally global noise and an optional blur, as in make_shapes.py. A stuff class whose visible area (after the shapes) is below
``MIN_STUFF_AREA`` px is left unlabeled (0 / 255) rather than annotated as a sliver.

Layout written by :func:`make_split`::

    OUT/<split>.json                 COCO instances json (things only, categories 1-3; RLE
                                     segmentation, bbox, area, iscrowd 0), file_name "<split>/000123.jpg"
    OUT/<split>/000123.jpg
    OUT/<split>_panoptic.json        COCO panoptic json: images (as above), annotations
                                     [{image_id, file_name "000123.png", segments_info:
                                     [{id, category_id, iscrowd 0, area, bbox}]}], categories (all 7,
                                     with isthing and color)
    OUT/<split>_panoptic/000123.png  RGB; segment id = R + 256 G + 65536 B; 0 = unlabeled
    OUT/<split>_sem/000123.png       Detectron2's "separated" semantic labels for PanopticFPN's
                                     semantic head (uint8, one channel): 0 = any thing, 1..4 = stuff
                                     classes in :data:`STUFF_CLASSES` order (dataset id - 3),
                                     255 = ignore (unlabeled)

CLI (from the repository's root)::

    python -m tools.make_panoptic --out DIR --split test --num 200 --seed 3003
    python -m tools.make_panoptic --out DIR --all          # train/val/test with default sizes/seeds
    python -m tools.make_panoptic --out DIR --all --procs 2
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys

import cv2
import numpy as np
from PIL import Image

from . import make_shapes, synth

THING_CLASSES = list(make_shapes.CLASSES)  # dataset ids 1..3
STUFF_CLASSES = ["stripes", "checker", "noise", "gradient"]  # dataset ids 4..7, semantic labels 1..4
THING_CATEGORIES = list(make_shapes.CATEGORIES)
_COLORS = [
    (220, 20, 60),
    (0, 130, 230),
    (250, 170, 30),
    (120, 120, 120),
    (60, 180, 75),
    (200, 120, 230),
    (150, 100, 50),
]
PANOPTIC_CATEGORIES = [
    {"id": i + 1, "name": n, "supercategory": "shape", "isthing": 1, "color": list(_COLORS[i])}
    for i, n in enumerate(THING_CLASSES)
] + [
    {
        "id": len(THING_CLASSES) + i + 1,
        "name": n,
        "supercategory": "texture",
        "isthing": 0,
        "color": list(_COLORS[len(THING_CLASSES) + i]),
    }
    for i, n in enumerate(STUFF_CLASSES)
]

MIN_REGIONS, MAX_REGIONS = 2, 4
MIN_REGION_FRACTION = 0.08  # of the image area, per stuff region (before shapes are drawn over it)
MIN_STUFF_AREA = 1024  # px; a stuff class visible on fewer pixels is left unlabeled
IGNORE = 255
GENERATOR_VERSION = "1"  # bump when the images a (seed, index) produces change

# default split sizes and seeds (different seeds per split, and different from make_shapes.py's)
DEFAULT_SPLITS = {"train": (4000, 1101), "val": (200, 2202), "test": (200, 3303)}

__all__ = ["THING_CLASSES", "STUFF_CLASSES", "PANOPTIC_CATEGORIES", "make_split", "make_image", "main"]


# ------------------------------------------------------------------------------------------- stuff
def _contrasting_pair(rng: np.random.Generator, min_diff: float = 120.0) -> tuple[np.ndarray, np.ndarray]:
    a = synth.rand_color(rng)
    b = synth.rand_color(rng)
    for _ in range(8):
        if np.abs(a - b).sum() >= min_diff:
            break
        b = synth.rand_color(rng)
    return a, b


def _texture(rng: np.random.Generator, kind: int, h: int, w: int) -> np.ndarray:
    """Full-image float32 (h, w, 3) texture of stuff class ``kind`` (index into STUFF_CLASSES)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:  # stripes
        a, b = _contrasting_pair(rng)
        ang = rng.uniform(0, math.pi)
        period = rng.uniform(6, 48)
        t = xx * math.cos(ang) + yy * math.sin(ang) + rng.uniform(0, period)
        s = 0.5 + 0.5 * np.sin(2 * math.pi * t / period)
        if rng.random() < 0.6:
            s = (s > 0.5).astype(np.float32)
        return a[None, None] * (1 - s[..., None]) + b[None, None] * s[..., None]
    if kind == 1:  # checker
        a, b = _contrasting_pair(rng)
        ang = rng.uniform(0, math.pi / 2)
        cell = rng.uniform(8, 40)
        u = xx * math.cos(ang) + yy * math.sin(ang)
        v = -xx * math.sin(ang) + yy * math.cos(ang)
        s = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
        return a[None, None] * (1 - s[..., None]) + b[None, None] * s[..., None]
    if kind == 2:  # noise
        base = synth.rand_color(rng)
        grain = int(rng.integers(1, 4))
        sh, sw = -(-h // grain), -(-w // grain)
        std = rng.uniform(30, 60)
        if rng.random() < 0.5:
            n = rng.normal(0, std, size=(sh, sw, 1)).astype(np.float32).repeat(3, axis=2)
        else:
            n = rng.normal(0, std, size=(sh, sw, 3)).astype(np.float32)
        if grain > 1:
            n = n.repeat(grain, axis=0).repeat(grain, axis=1)[:h, :w]
        return base[None, None] + n
    # gradient: linear blend of two colours plus smooth low-frequency variation
    a, b = synth.rand_color(rng), synth.rand_color(rng)
    ang = rng.uniform(0, 2 * math.pi)
    t = xx * math.cos(ang) + yy * math.sin(ang)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    img = a[None, None] * (1 - t[..., None]) + b[None, None] * t[..., None]
    small = rng.normal(0, rng.uniform(0, 30), size=(int(rng.integers(2, 5)), int(rng.integers(2, 5)), 3))
    return img + cv2.resize(small.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)


def _regions(rng: np.random.Generator, h: int, w: int, n: int) -> np.ndarray:
    """(h, w) int array of region indices 0..n-1: a Voronoi diagram of ``n`` random seeds whose
    distances carry a smooth random perturbation (wavy borders). Every region covers at least
    MIN_REGION_FRACTION of the image (re-drawn up to 20 times, else the last draw is kept)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    diag = math.hypot(h, w)
    lab = np.zeros((h, w), np.int64)
    for _attempt in range(20):
        seeds = np.stack([rng.uniform(0, w, n), rng.uniform(0, h, n)], axis=1)
        dist = np.empty((n, h, w), np.float32)
        for r in range(n):
            d = np.hypot(xx - seeds[r, 0], yy - seeds[r, 1])
            small = rng.normal(0, 0.08 * diag, size=(int(rng.integers(2, 6)), int(rng.integers(2, 6))))
            dist[r] = d + cv2.resize(small.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        lab = dist.argmin(axis=0)
        if np.bincount(lab.ravel(), minlength=n).min() >= MIN_REGION_FRACTION * h * w:
            break
    return lab


# ------------------------------------------------------------------------------------------- image
def make_image(rng: np.random.Generator):
    """One image. Returns (uint8 HxWx3 RGB, panoptic segment-id map (H, W) int32 (0 = unlabeled),
    segments [(segment id, dataset category id, bool mask HxW)], semantic uint8 (H, W))."""
    h = int(rng.integers(synth.MIN_SIDE, synth.MAX_SIDE + 1))
    w = int(rng.integers(synth.MIN_SIDE, synth.MAX_SIDE + 1))
    n_regions = int(rng.integers(MIN_REGIONS, MAX_REGIONS + 1))
    kinds = rng.permutation(len(STUFF_CLASSES))[:n_regions]
    region = _regions(rng, h, w, n_regions)
    img = np.zeros((h, w, 3), np.float32)
    for r, kind in enumerate(kinds):
        m = region == r
        img[m] = _texture(rng, int(kind), h, w)[m]
    synth.distractors(rng, img)
    labels, placed, visible = synth.place_shapes(rng, img)
    out = synth.finish(rng, img)

    pan = np.zeros((h, w), np.int32)
    sem = np.full((h, w), IGNORE, np.uint8)
    segments = []
    sid = 1
    free = labels == 0  # pixels showing stuff
    for r, kind in enumerate(kinds):
        m = free & (region == r)
        if m.sum() >= MIN_STUFF_AREA:
            pan[m] = sid
            sem[m] = int(kind) + 1
            segments.append((sid, len(THING_CLASSES) + int(kind) + 1, m))
            sid += 1
    for cls, m in synth.shape_masks(labels, placed, visible):
        pan[m] = sid
        sem[m] = 0
        segments.append((sid, cls + 1, m))
        sid += 1
    return out, pan, segments, sem


def _write_one(job: tuple[str, str, int, int]) -> tuple[dict, list, dict]:
    """Make and write image ``i`` of a split; returns (image record, thing annotations without ids,
    panoptic annotation)."""
    out_dir, split, seed, i = job
    rng = np.random.default_rng([seed, i])
    img, pan, segments, sem = make_image(rng)
    image = synth.save_image(rng, img, out_dir, split, i)
    stem = f"{i:06d}"
    rgb = np.stack([pan % 256, (pan // 256) % 256, pan // 65536], axis=2).astype(np.uint8)
    Image.fromarray(rgb).save(os.path.join(out_dir, f"{split}_panoptic", stem + ".png"))
    Image.fromarray(sem).save(os.path.join(out_dir, f"{split}_sem", stem + ".png"))
    things, infos = [], []
    for sid, cat, m in segments:
        infos.append({"id": sid, "category_id": cat, "iscrowd": 0, "area": int(m.sum()), "bbox": synth.bbox(m)})
        if cat <= len(THING_CLASSES):
            a = synth.annotation(m)
            a.update({"image_id": i + 1, "category_id": cat, "iscrowd": 0})
            things.append(a)
    return image, things, {"image_id": i + 1, "file_name": stem + ".png", "segments_info": infos}


def make_split(out_dir: str, split: str, num: int, seed: int, procs: int = 1) -> str:
    """Write ``num`` images of ``split`` (all four outputs, see the module docstring) under
    ``out_dir`` with ``procs`` worker processes; returns the path of ``<split>.json``.

    Deterministic: image i depends only on (seed, i), whatever ``procs``."""
    for sub in (split, f"{split}_panoptic", f"{split}_sem"):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    jobs = [(out_dir, split, seed, i) for i in range(num)]
    if procs > 1:
        with multiprocessing.get_context("fork").Pool(procs) as pool:
            results = pool.map(_write_one, jobs, chunksize=16)
    else:
        results = [_write_one(j) for j in jobs]
    images, annotations, pan_anns = [], [], []
    for image, things, pan_ann in results:
        images.append(image)
        for a in things:
            a["id"] = len(annotations) + 1
            annotations.append(a)
        pan_anns.append(pan_ann)
    description = f"d2ov synthetic panoptic shapes, split {split}, seed {seed}"
    synth.write_split(
        out_dir, f"{split}_panoptic", description, GENERATOR_VERSION, images, pan_anns, PANOPTIC_CATEGORIES
    )
    # written last: its presence means the split is complete
    return synth.write_split(out_dir, split, description, GENERATOR_VERSION, images, annotations, THING_CATEGORIES)


def main(argv=None) -> int:
    return synth.split_cli(make_split, DEFAULT_SPLITS, __doc__, argv, procs=True)


if __name__ == "__main__":
    sys.exit(main())
