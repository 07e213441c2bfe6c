"""Quick checks of the synthetic shapes data set generator (tools/make_shapes.py)."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter

import cv2  # noqa: F401  (required: the generator draws with OpenCV)
import numpy as np
import pytest
from pycocotools import mask as mask_util

from tools import make_shapes

NUM = 12


def _digest(out_dir: str, js: str) -> dict:
    with open(js, "rb") as f:
        d = {"json": hashlib.sha256(f.read()).hexdigest()}
    for name in sorted(os.listdir(os.path.join(out_dir, "test"))):
        with open(os.path.join(out_dir, "test", name), "rb") as f:
            d[name] = hashlib.sha256(f.read()).hexdigest()
    return d


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("shapes_a"))
    js = make_shapes.make_split(out, "test", NUM, seed=7)
    with open(js) as f:
        return out, js, json.load(f)


def test_deterministic(split, tmp_path):
    out, js, _ = split
    js2 = make_shapes.make_split(str(tmp_path), "test", NUM, seed=7)
    assert _digest(out, js) == _digest(str(tmp_path), js2)


def test_other_seed_differs(split, tmp_path):
    out, js, _ = split
    js2 = make_shapes.make_split(str(tmp_path), "test", 3, seed=8)
    a, b = _digest(out, js), _digest(str(tmp_path), js2)
    assert a["000000.jpg"] != b["000000.jpg"]


def test_categories(split):
    _, _, d = split
    assert [(c["id"], c["name"]) for c in d["categories"]] == [(1, "circle"), (2, "square"), (3, "triangle")]
    assert {a["category_id"] for a in d["annotations"]} <= {1, 2, 3}


def test_images_and_counts(split):
    out, _, d = split
    from PIL import Image

    assert len(d["images"]) == NUM
    ids = {im["id"] for im in d["images"]}
    assert len(ids) == NUM
    per_image = Counter(a["image_id"] for a in d["annotations"])
    assert set(per_image) <= ids
    assert all(0 <= per_image.get(i, 0) <= 12 for i in ids)
    assert sum(per_image.values()) > 0
    for im in d["images"]:
        assert 256 <= im["width"] <= 640 and 256 <= im["height"] <= 640
        path = os.path.join(out, im["file_name"])
        with Image.open(path) as pil:
            assert pil.format == "JPEG"
            assert pil.size == (im["width"], im["height"])
            assert pil.mode == "RGB"
    assert len({a["id"] for a in d["annotations"]}) == len(d["annotations"])


def test_masks_match_area_and_bbox(split):
    _, _, d = split
    sizes = {im["id"]: (im["height"], im["width"]) for im in d["images"]}
    for a in d["annotations"]:
        rle = a["segmentation"]
        assert isinstance(rle["counts"], str)
        assert tuple(rle["size"]) == sizes[a["image_id"]]
        m = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
        assert m.shape == sizes[a["image_id"]]
        area = int(m.sum())
        assert area >= make_shapes.MIN_VISIBLE_AREA
        assert abs(area - a["area"]) <= 1
        ys, xs = np.nonzero(m)
        x, y, w, h = a["bbox"]
        assert abs(xs.min() - x) <= 1 and abs(ys.min() - y) <= 1
        assert abs(xs.max() + 1 - (x + w)) <= 1 and abs(ys.max() + 1 - (y + h)) <= 1
        assert a["iscrowd"] == 0
        # the visible part is never larger than the largest shape: a 200 px circle, or a square of side
        # 0.8 x 200 px rotated by 45 degrees (0.8 x 200 x sqrt(2) = 226.3 px across)
        assert w <= 228 and h <= 228


def test_visible_masks_do_not_overlap(split):
    _, _, d = split
    by_image: dict[int, np.ndarray] = {}
    for a in d["annotations"]:
        m = mask_util.decode({"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()})
        acc = by_image.setdefault(a["image_id"], np.zeros(m.shape, np.uint8))
        assert not np.any(acc & m), "visible parts of two instances overlap"
        acc |= m


def test_cli(tmp_path):
    assert make_shapes.main(["--out", str(tmp_path), "--split", "val", "--num", "2", "--seed", "1"]) == 0
    with open(tmp_path / "val.json") as f:
        d = json.load(f)
    assert len(d["images"]) == 2 and d["images"][0]["file_name"] == "val/000000.jpg"
