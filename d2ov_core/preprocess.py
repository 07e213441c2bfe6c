"""Preprocessing, as Detectron2's ``DefaultPredictor`` does it; pure numpy + PIL.

Input: RGB uint8 ``(H, W, 3)`` (from :func:`d2ov_core.images.load_image`).
Output: float32 ``(3, h, w)`` in the model's channel order (``input_format``), pixel values 0-255,
resized by ``ResizeShortestEdge(min_size, max_size)`` with PIL bilinear on uint8 (Detectron2's
``ResizeTransform.apply_image``), plus a ``meta`` dict that :mod:`d2ov_core.postprocess` uses to map
results back: ``original_size=(H, W)``, ``input_size=(h, w)``.
Normalisation (pixel mean/std) and padding to ``size_divisibility`` happen inside the graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

__all__ = ["resized_shape", "preprocess"]


def resized_shape(h: int, w: int, min_size: int, max_size: int) -> tuple[int, int]:
    """``ResizeShortestEdge.get_output_shape`` of Detectron2: returns ``(new_h, new_w)``."""
    if min_size <= 0:
        return h, w
    size = float(min_size)
    scale = size / min(h, w)
    if h < w:
        newh, neww = size, scale * w
    else:
        newh, neww = scale * h, size
    if max(newh, neww) > max_size:
        scale = max_size * 1.0 / max(newh, neww)
        newh = newh * scale
        neww = neww * scale
    return int(newh + 0.5), int(neww + 0.5)


def preprocess(image_rgb: np.ndarray, meta: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """RGB uint8 ``(H, W, 3)`` -> (float32 ``(3, h, w)``, meta with sizes).

    ``meta`` needs ``min_size``, ``max_size`` and ``input_format`` (the IR's metadata).
    """
    h, w = image_rgb.shape[:2]
    newh, neww = resized_shape(h, w, int(meta["min_size"]), int(meta["max_size"]))
    img = image_rgb if meta["input_format"] == "RGB" else image_rgb[:, :, ::-1]
    if (newh, neww) != (h, w):
        img = np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((neww, newh), Image.BILINEAR))
    chw = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)
    return chw, {"original_size": (h, w), "input_size": (newh, neww)}
