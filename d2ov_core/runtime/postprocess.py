"""Postprocessing of the raw IR outputs; pure numpy, the same maths as Detectron2's
``detector_postprocess`` + ``paste_masks_in_image`` (CPU path).

Input: the named raw outputs (see :mod:`d2ov_core.runtime`), boxes in the RESIZED input frame,
and ``meta`` from :mod:`d2ov_core.preprocess` (``original_size``, ``input_size``).
Output: :class:`~d2ov_core.detections.Detections` in ORIGINAL-image pixels:
  1. boxes scaled by (W / w, H / h) and clipped to the image; boxes with zero width or height dropped;
  2. detections below ``threshold`` dropped (only the kept ones get masks pasted);
  3. masks: each ``M x M`` probability map is bilinearly resampled onto its box (grid_sample with
     ``align_corners=False`` and zero padding, as Detectron2 does) and thresholded ``>= mask_threshold``
     (:func:`paste_box_masks`: inside its box, when first needed; full-image for the listed ones);
  4. keypoints: each box's heatmaps are decoded on its box in the resized frame
     (:func:`~d2ov_core.runtime.keypoints.heatmaps_to_keypoints`, as Detectron2 before its
     postprocessing), then x, y scaled by (W / w, H / h) like the boxes (not clipped, as Detectron2).
  5. panoptic (Panoptic FPN, ``sem_seg`` among the outputs): the semantic logits (stride 4) are
     upsampled as the semantic head does, resized to the image and reduced to labels (:func:`~d2ov_core.runtime.panoptic.sem_seg_postprocess`), and
     merged with the instances at or above ``panoptic.score_threshold`` (whatever ``threshold`` is:
     the map is the model's answer, the threshold only selects the instances listed) by
     :func:`~d2ov_core.runtime.panoptic.combine_semantic_and_instance_outputs`, as Detectron2's
     ``PanopticFPN.inference`` does after ``detector_postprocess``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ..errors import IRError
from .detections import Detections
from .keypoints import heatmaps_to_keypoints
from .panoptic import BoxMasks, combine_semantic_and_instance_outputs, describe_segments, sem_seg_postprocess

__all__ = ["postprocess", "paste_masks", "paste_box_masks", "PanopticParams"]


class PanopticParams(NamedTuple):
    """What the panoptic merge needs from the IR's metadata (``stuff_classes``, ``panoptic_*``; read by
    the task, :mod:`d2ov_core.runtime.tasks.panoptic_segmentation`)."""

    stuff_classes: Sequence[str]
    stride: int = 4
    size_divisibility: int = 32
    overlap_threshold: float = 0.5
    stuff_area_threshold: int = 4096
    score_threshold: float = 0.5


def postprocess(
    raw: dict[str, np.ndarray],
    meta: dict[str, Any],
    labels: Sequence[str],
    threshold: float = 0.0,
    mask_threshold: float = 0.5,
    keypoint_names: Sequence[str] = (),
    keypoint_skeleton: Sequence[Sequence[str]] = (),
    panoptic: PanopticParams | None = None,
) -> Detections:
    H, W = meta["original_size"]
    h, w = meta["input_size"]
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
    # 2. threshold (the panoptic merge takes the instances at or above its own threshold)
    shown = keep & (scores >= threshold)
    merged = keep & (scores >= panoptic.score_threshold) if panoptic is not None and "sem_seg" in raw else None
    idx = np.flatnonzero(shown)
    all_boxes, all_scores, all_classes = boxes, scores, classes
    boxes, scores, classes = boxes[idx], scores[idx], classes[idx]
    names = np.asarray(labels, dtype=str)
    if len(classes) and (classes.min() < 0 or classes.max() >= len(names)):
        label_arr = np.array([names[c] if 0 <= c < len(names) else f"class_{c}" for c in classes], dtype=str)
    else:
        label_arr = names[classes] if len(classes) else np.zeros((0,), dtype=str)
    full_masks = None
    if masks is not None:
        probs = np.asarray(masks, dtype=np.float32)
        probs = probs[:, 0] if probs.ndim == 4 else probs
        instance_masks = paste_box_masks(probs, all_boxes, (H, W), mask_threshold)  # made when used
    panoptic_seg: np.ndarray | None = None
    segments: tuple[dict[str, Any], ...] = ()
    if merged is not None:
        if masks is None or panoptic is None:
            raise ValueError("postprocess: a panoptic model's outputs need masks and panoptic parameters")
        sem_seg = np.asarray(raw["sem_seg"], np.float32)
        logits: np.ndarray = sem_seg.reshape(sem_seg.shape[-3:])
        div = panoptic.size_divisibility
        padded_size: tuple[int, ...] = tuple(meta.get("padded_size", (h, w)))
        padded = tuple(-(-int(n) // div) * div for n in padded_size)  # what the graph pads to
        stride = panoptic.stride
        if (int(logits.shape[1]) * stride, int(logits.shape[2]) * stride) != padded:
            raise IRError(
                f"the IR's sem_seg output {tuple(logits.shape)} at stride {panoptic.stride} does not cover "
                f"the {h}x{w} input padded to {padded[0]}x{padded[1]}: its metadata does not describe its "
                "graph (convert it again)"
            )
        semantic = sem_seg_postprocess(logits, (h, w), (H, W), stride=panoptic.stride)
        use = np.flatnonzero(merged)
        panoptic_seg, info = combine_semantic_and_instance_outputs(
            all_scores[use],
            all_classes[use],
            instance_masks.subset(use),
            semantic,
            panoptic.overlap_threshold,
            panoptic.stuff_area_threshold,
            panoptic.score_threshold,
        )
        segments = describe_segments(panoptic_seg, info, names, panoptic.stuff_classes)
    if masks is not None:
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
        panoptic_seg=panoptic_seg,
        segments=segments,
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
    boolean masks as :class:`~d2ov_core.runtime.panoptic.BoxMasks`, each pasted when first used.

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
