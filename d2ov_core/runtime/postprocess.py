"""Postprocessing of the raw IR outputs; pure numpy, the same maths as Detectron2's
``detector_postprocess`` + ``paste_masks_in_image`` (CPU path).

Input: the named raw outputs (see :mod:`d2ov_core.runtime`), boxes in the RESIZED input frame,
and the image's :class:`~d2ov_core.runtime.preprocess.Geometry` (``original_size``, ``input_size``).
Output: :class:`~d2ov_core.detections.Detections` in ORIGINAL-image pixels:
  1. boxes scaled by (W / w, H / h) and clipped to the image; boxes with zero width or height dropped;
  2. detections below ``threshold`` dropped (only the kept ones get masks pasted);
  3. masks: each ``M x M`` probability map is bilinearly resampled onto its box (grid_sample with
     ``align_corners=False`` and zero padding, as Detectron2 does) and thresholded ``>= mask_threshold``
     (:func:`paste_box_masks`: inside its box, when first needed; full-image for the listed ones);
  4. keypoints: each box's heatmaps are decoded on its box in the resized frame
     (:func:`~d2ov_core.runtime.keypoints.heatmaps_to_keypoints`, as Detectron2 before its
     postprocessing), then x, y scaled by (W / w, H / h) like the boxes (not clipped, as Detectron2).
  5. ``combine`` (given by a task whose answer also covers the whole image, e.g. a map of segments):
     it reads every detection with a valid box, whatever ``threshold`` is, and the raw outputs,
     and returns more :class:`~d2ov_core.detections.Detections` fields (the masks it reads are
     pasted once, shared with step 3).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .detections import Detections
from .keypoints import heatmaps_to_keypoints
from .preprocess import Geometry

__all__ = ["postprocess", "paste_masks", "paste_box_masks", "BoxMasks", "Combine"]


class BoxMasks:
    """``N`` boolean instance masks over an ``(H, W)`` image, each kept inside its box (all False
    outside it), made on first use: masks for a step that reads many of them (``combine``), without
    ``N`` full-image arrays.

    Args:
        image_size: ``(H, W)``.
        bounds: ``(N, 4)`` int ``[y0, y1, x0, x1]`` per mask, within the image (``y0 <= y1``,
            ``x0 <= x1``; an empty box is an empty mask).
        make: ``make(i)`` -> ``(y1 - y0, x1 - x0)`` bool, mask ``i`` inside its box; called at most
            once per mask.
    """

    def __init__(self, image_size: Sequence[int], bounds: np.ndarray, make: Callable[[int], np.ndarray]):
        self.image_size = tuple(int(s) for s in image_size)
        self.bounds = np.asarray(bounds, np.int64).reshape(-1, 4)
        self._make = make
        self._crops: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.bounds)

    @classmethod
    def from_dense(cls, masks: np.ndarray) -> BoxMasks:
        """``(N, H, W)`` bool masks, each kept inside its tight bounding box."""
        masks = np.asarray(masks, bool)
        rows, cols = np.any(masks, axis=2), np.any(masks, axis=1)  # (N, H), (N, W)
        bounds = np.zeros((len(masks), 4), np.int64)
        for i in np.flatnonzero(rows.any(axis=1)).tolist():
            ys, xs = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
            bounds[i] = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
        return cls(
            masks.shape[1:], bounds, lambda i: masks[i, bounds[i, 0] : bounds[i, 1], bounds[i, 2] : bounds[i, 3]]
        )

    def subset(self, index: Sequence[int] | np.ndarray) -> BoxMasks:
        """Masks ``index`` (in that order), sharing the masks already made."""
        index = np.asarray(index, np.int64).reshape(-1)
        return BoxMasks(self.image_size, self.bounds[index], lambda j: self.crop(int(index[j])))

    def crop(self, i: int) -> np.ndarray:
        """Mask ``i`` inside its box: ``(y1 - y0, x1 - x0)`` bool."""
        if i not in self._crops:
            y0, y1, x0, x1 = self.bounds[i].tolist()
            crop = np.asarray(self._make(i), bool)
            if crop.shape != (y1 - y0, x1 - x0):
                raise ValueError(f"BoxMasks: mask {i} is {crop.shape} for a box of {(y1 - y0, x1 - x0)}")
            self._crops[i] = crop
        return self._crops[i]

    def dense(self, index: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Full-image masks ``(n, H, W)`` bool of ``index`` (default: all)."""
        index = np.arange(len(self)) if index is None else np.asarray(index, np.int64).reshape(-1)
        out = np.zeros((len(index), *self.image_size), bool)
        for k, i in enumerate(index.tolist()):
            y0, y1, x0, x1 = self.bounds[i].tolist()
            out[k, y0:y1, x0:x1] = self.crop(i)
        return out


#: Step 5 of :func:`postprocess`: ``(raw, geometry, scores, classes, valid, masks, names)`` -> more
#: :class:`~d2ov_core.detections.Detections` fields. ``scores``/``classes``: every detection of the
#: graph; ``valid``: bool, those whose box is not empty in the image; ``masks``: their masks
#: (:class:`BoxMasks`, pasted when used) or ``None``; ``names``: the class names.
Combine = Callable[
    [dict[str, np.ndarray], Geometry, np.ndarray, np.ndarray, np.ndarray, "BoxMasks | None", np.ndarray],
    dict[str, Any],
]


def postprocess(
    raw: dict[str, np.ndarray],
    geometry: Geometry,
    labels: Sequence[str],
    threshold: float = 0.0,
    mask_threshold: float = 0.5,
    keypoint_names: Sequence[str] = (),
    keypoint_skeleton: Sequence[Sequence[str]] = (),
    combine: Combine | None = None,
) -> Detections:
    H, W = geometry.original_size
    h, w = geometry.input_size
    boxes = np.asarray(raw["boxes"], dtype=np.float32).reshape(-1, 4).copy()
    scores = np.asarray(raw["scores"], dtype=np.float32).reshape(-1)
    classes = np.asarray(raw["classes"]).astype(np.int64).reshape(-1)
    masks = raw.get("masks")
    heatmaps = raw.get("keypoint_heatmaps")
    input_boxes = boxes.copy()

    # 1. rescale (as Boxes.scale, in float32) and clip (as Boxes.clip)
    scale_x, scale_y = np.float32(W / w), np.float32(H / h)
    boxes[:, 0::2] *= scale_x
    boxes[:, 1::2] *= scale_y
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, W)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, H)
    keep = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
    # 2. threshold (``combine`` reads every valid detection)
    shown = keep & (scores >= threshold)
    idx = np.flatnonzero(shown)
    all_boxes, all_scores, all_classes = boxes, scores, classes
    boxes, scores, classes = boxes[idx], scores[idx], classes[idx]
    names = np.asarray(labels, dtype=str)
    if len(classes) and (classes.min() < 0 or classes.max() >= len(names)):
        label_arr = np.array([names[c] if 0 <= c < len(names) else f"class_{c}" for c in classes], dtype=str)
    else:
        label_arr = names[classes] if len(classes) else np.zeros((0,), dtype=str)
    full_masks = None
    instance_masks = None
    if masks is not None:
        probs = np.asarray(masks, dtype=np.float32)
        probs = probs[:, 0] if probs.ndim == 4 else probs
        instance_masks = paste_box_masks(probs, all_boxes, (H, W), mask_threshold)  # made when used
    extra = combine(raw, geometry, all_scores, all_classes, keep, instance_masks, names) if combine is not None else {}
    if instance_masks is not None:
        full_masks = instance_masks.dense(idx)
    keypoints = None
    if heatmaps is not None:
        keypoints = heatmaps_to_keypoints(np.asarray(heatmaps, np.float32)[idx], input_boxes[idx])
        keypoints[:, :, 0] *= scale_x
        keypoints[:, :, 1] *= scale_y
        if not keypoint_names:
            keypoint_names = [f"keypoint_{i + 1}" for i in range(keypoints.shape[1])]
    return Detections(
        boxes=boxes,
        scores=scores,
        class_ids=classes,
        labels=label_arr,
        image_size=(H, W),
        masks=full_masks,
        keypoints=keypoints,
        keypoint_names=tuple(keypoint_names) if heatmaps is not None else (),
        keypoint_skeleton=tuple((str(a), str(b)) for a, b in keypoint_skeleton) if heatmaps is not None else (),
        **extra,
    )


def _all_taps(lo: np.ndarray, hi: np.ndarray, start: np.ndarray, stop: np.ndarray, m: int) -> tuple[np.ndarray, ...]:
    """The two taps that resample an ``m``-long axis onto the pixels of many boxes (grid_sample,
    bilinear, align_corners=False, zero padding): box ``i`` spans ``[lo[i], hi[i])`` (float32) and
    gets pixels ``start[i]..stop[i]-1``, box after box. Indices ``(n,)`` int64 (clamped) and float32
    weights ``(n,)`` each, ``(i0, i1, w0, w1)``; a tap outside the axis weighs 0. float32 element by
    element, as one box at a time (a box of zero side, never pasted, gets meaningless taps)."""
    count = stop - start
    box = np.repeat(np.arange(len(count)), count)
    pixel = np.arange(len(box)) - np.repeat(np.cumsum(count) - count, count) + np.repeat(start, count)
    lo32 = np.asarray(lo, np.float32)
    side = (hi.astype(np.float64) - lo.astype(np.float64)).astype(np.float32)  # np.float32(hi - lo) of floats
    centers = pixel.astype(np.float32) + np.float32(0.5)
    with np.errstate(divide="ignore", invalid="ignore"):  # boxes of zero side
        g = (centers - lo32[box]) / side[box] * 2 - 1  # normalised [-1, 1]
        src = ((g + 1) * m - 1) / 2  # source pixel coordinate
        i0 = np.floor(src).astype(np.int64)
    frac = (src - i0).astype(np.float32)
    zero = np.float32(0)
    w0 = np.where((i0 >= 0) & (i0 < m), 1 - frac, zero)
    w1 = np.where((i0 >= -1) & (i0 < m - 1), frac, zero)
    return np.minimum(np.maximum(i0, 0), m - 1), np.minimum(np.maximum(i0 + 1, 0), m - 1), w0, w1


def paste_masks(
    probs: np.ndarray, boxes: np.ndarray, image_size: tuple[int, int], threshold: float = 0.5
) -> np.ndarray:
    """Paste ``(N, M, M)`` mask probabilities into ``(N, H, W)`` boolean full-image masks
    (:func:`paste_box_masks`, every mask made)."""
    return paste_box_masks(probs, boxes, image_size, threshold).dense()


def paste_box_masks(
    probs: np.ndarray, boxes: np.ndarray, image_size: tuple[int, int], threshold: float = 0.5
) -> BoxMasks:
    """``(N, M, M)`` mask probabilities on ``(N, 4)`` xyxy boxes (image pixels) -> the ``(H, W)``
    boolean masks as :class:`BoxMasks`, each pasted when first used.

    Only the box's neighbourhood (box +- 1 px, as Detectron2's ``skip_empty``) is computed; outside
    it a mask is False, as in Detectron2. The bilinear resampling is separable, so each mask is
    ``Wy @ P @ Wx.T``, thresholded ``>= threshold``, done as two taps along y then two along x
    (no BLAS: its threads stall when other work shares the cores).
    """
    H, W = image_size
    probs = np.asarray(probs, np.float32)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    m = probs.shape[-1]
    x0, y0, x1, y1 = boxes.T
    xs = np.maximum(np.floor(x0).astype(np.int64) - 1, 0)
    ys = np.maximum(np.floor(y0).astype(np.int64) - 1, 0)
    xe = np.maximum(np.minimum(np.ceil(x1).astype(np.int64) + 1, W), xs)  # xe == xs: an empty box
    ye = np.maximum(np.minimum(np.ceil(y1).astype(np.int64) + 1, H), ys)

    # every mask's taps at once: each box's rows ys..ye and columns xs..xe, one after the other
    rows, cols = _all_taps(y0, y1, ys, ye, m), _all_taps(x0, x1, xs, xe, m)
    row_at, col_at = np.cumsum(ye - ys) - (ye - ys), np.cumsum(xe - xs) - (xe - xs)

    def make(i: int) -> np.ndarray:
        if xe[i] == xs[i] or ye[i] == ys[i]:
            return np.zeros((ye[i] - ys[i], xe[i] - xs[i]), bool)
        r, c = slice(row_at[i], row_at[i] + ye[i] - ys[i]), slice(col_at[i], col_at[i] + xe[i] - xs[i])
        ya, yb, wya, wyb = (t[r] for t in rows)
        xa, xb, wxa, wxb = (t[c] for t in cols)
        # y then x, each sum as the matrix products ``Wy @ P @ Wx.T`` did it, a fused multiply-add:
        # the first product rounded, the second added exactly (float64 holds a float32 product)
        # and the sum rounded once
        p = probs[i]
        along_y = ((p[ya] * wya[:, None]).astype(np.float64) + p[yb].astype(np.float64) * wyb[:, None]).astype(
            np.float32
        )
        region = ((along_y[:, xa] * wxa).astype(np.float64) + along_y[:, xb].astype(np.float64) * wxb).astype(
            np.float32
        )
        return region >= threshold

    return BoxMasks((H, W), np.stack([ys, ye, xs, xe], axis=1), make)
