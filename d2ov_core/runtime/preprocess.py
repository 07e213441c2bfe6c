"""Preprocessing, as Detectron2's ``DefaultPredictor`` does it; pure numpy + PIL.

Input: RGB uint8 ``(H, W, 3)`` (from :func:`d2ov_core.images.load_image`).
Output: float32 ``(3, h, w)`` in the model's channel order (``input_format``), pixel values 0-255,
resized by ``ResizeShortestEdge(min_size, max_size)`` with PIL bilinear on uint8 (Detectron2's
``ResizeTransform.apply_image``), plus the image's :class:`Geometry` that
:mod:`d2ov_core.runtime.postprocess` uses to map results back.
Normalisation (pixel mean/std) and padding to ``size_divisibility`` happen inside the graph.

Static input shape (``static_size=(S_h, S_w)``, for IRs reshaped to a fixed input): the image is
resized by the same rule, scaled down further (aspect kept) if it does not fit ``S_h x S_w``, and
padded at the bottom and right with the model's pixel mean (``pixel_mean``), which the graph's
normalisation turns into 0, exactly what Detectron2's own padding holds. Padding at the bottom/right
does not move the origin, so boxes map back with the same ``input_size`` scale factors.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from .settings import IRMetadata

__all__ = ["Geometry", "resized_shape", "letterbox_shape", "preprocess"]


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Where an image went on its way into the graph: ``original_size`` ``(H, W)`` (the image's),
    ``input_size`` ``(h, w)`` (resized, what the graph's boxes are in) and ``padded_size`` (the
    array given to the graph: ``input_size`` plus any static-shape padding at the bottom/right;
    default ``input_size``)."""

    original_size: tuple[int, int]
    input_size: tuple[int, int]
    padded_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        for name in ("original_size", "input_size", "padded_size"):
            value = getattr(self, name)
            if value is None:
                continue
            size = tuple(int(v) for v in value)
            if len(size) != 2 or min(size) <= 0:
                raise ValueError(f"Geometry.{name}: expected (height, width) > 0, found {value}")
            object.__setattr__(self, name, size)
        if self.padded_size is None:
            object.__setattr__(self, "padded_size", self.input_size)


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


def letterbox_shape(h: int, w: int, min_size: int, max_size: int, static_size: tuple[int, int]) -> tuple[int, int]:
    """The resized ``(h', w')`` of an ``h x w`` image inside a fixed ``static_size`` canvas: Detectron2's
    rule, then scaled down (aspect kept, never up) until it fits."""
    newh, neww = resized_shape(h, w, min_size, max_size)
    sh, sw = static_size
    if newh <= sh and neww <= sw:
        return newh, neww
    scale = min(sh / newh, sw / neww)
    return max(1, min(sh, int(newh * scale + 0.5))), max(1, min(sw, int(neww * scale + 0.5)))


def preprocess(
    image_rgb: np.ndarray, meta: IRMetadata, static_size: tuple[int, int] | None = None
) -> tuple[np.ndarray, Geometry]:
    """RGB uint8 ``(H, W, 3)`` -> (float32 ``(3, h, w)``, its :class:`Geometry`).

    ``meta`` needs ``min_size``, ``max_size`` and ``input_format`` (the IR's metadata), and
    ``pixel_mean`` when ``static_size`` is given; the returned array is then ``(3, *static_size)``
    and ``input_size`` is the unpadded part (``padded_size``: the array's own height and width).
    """
    h, w = image_rgb.shape[:2]
    if static_size is None:
        newh, neww = resized_shape(h, w, int(meta.min_size), int(meta.max_size))
    else:
        newh, neww = letterbox_shape(h, w, int(meta.min_size), int(meta.max_size), static_size)
    img = image_rgb
    if (newh, neww) != (h, w):  # each channel is resized alone: resized, then reordered, as Detectron2's
        img = np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((neww, newh), Image.Resampling.BILINEAR))
    if meta.input_format != "RGB":  # BGR, on the resized image (a 12 MP copy less)
        img = img[:, :, ::-1]
    if static_size is None:
        chw = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)
    else:
        chw = np.empty((3, *static_size), dtype=np.float32)
        chw[:] = np.asarray(meta.pixel_mean, dtype=np.float32)[:, None, None]
        chw[:, :newh, :neww] = img.transpose(2, 0, 1)
    return chw, Geometry((h, w), (newh, neww), (chw.shape[1], chw.shape[2]))
