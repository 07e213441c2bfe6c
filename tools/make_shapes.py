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
pixel count. Instances whose visible area is below 30 px are dropped. The drawing rules are
:mod:`tools.synth`'s (:func:`~tools.synth.place_shapes`), shared with make_panoptic.py.

Layout written by :func:`make_split`::

    OUT/<split>.json            COCO json; file_name is "<split>/000123.jpg" (relative to OUT)
    OUT/<split>/000123.jpg

so the image root for ``register_coco_instances`` is OUT (the json's folder).

CLI (from the repository's root)::

    python -m tools.make_shapes --out DIR --split test --num 200 --seed 3
    python -m tools.make_shapes --out DIR --all          # train/val/test with default sizes/seeds
"""

from __future__ import annotations

import os
import sys

import numpy as np

from . import synth
from .synth import MIN_VISIBLE_AREA, MIN_VISIBLE_FRACTION  # noqa: F401  (the rules the docstring describes)

CLASSES = ["circle", "square", "triangle"]
CATEGORIES = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASSES)]
GENERATOR_VERSION = "2"  # bump when the images a (seed, index) produces change

# default split sizes and seeds (different seeds per split)
DEFAULT_SPLITS = {"train": (4000, 1001), "val": (200, 2002), "test": (200, 3003)}

__all__ = ["CLASSES", "CATEGORIES", "make_split", "make_image", "main"]


def make_image(rng: np.random.Generator):
    """One image: returns (uint8 HxWx3 RGB, list of (class_index, bool mask HxW)) of visible parts."""
    h = int(rng.integers(synth.MIN_SIDE, synth.MAX_SIDE + 1))
    w = int(rng.integers(synth.MIN_SIDE, synth.MAX_SIDE + 1))
    img = synth.background(rng, h, w)
    synth.distractors(rng, img)
    labels, placed, visible = synth.place_shapes(rng, img)
    return synth.finish(rng, img), list(synth.shape_masks(labels, placed, visible))


def make_split(out_dir: str, split: str, num: int, seed: int) -> str:
    """Write ``num`` images of ``split`` under ``out_dir``; returns the path of ``<split>.json``.

    Deterministic: image i depends only on (seed, i)."""
    os.makedirs(os.path.join(out_dir, split), exist_ok=True)
    images, annotations = [], []
    for i in range(num):
        rng = np.random.default_rng([seed, i])
        img, inst = make_image(rng)
        images.append(synth.save_image(rng, img, out_dir, split, i))
        for cls, m in inst:
            a = synth.annotation(m)
            a.update({"id": len(annotations) + 1, "image_id": i + 1, "category_id": cls + 1, "iscrowd": 0})
            annotations.append(a)
    return synth.write_split(
        out_dir,
        split,
        f"d2ov synthetic shapes, split {split}, seed {seed}",
        GENERATOR_VERSION,
        images,
        annotations,
        CATEGORIES,
    )


def main(argv=None) -> int:
    return synth.split_cli(make_split, DEFAULT_SPLITS, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
