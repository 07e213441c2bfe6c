"""Panoptic FPN's postprocessing, in numpy: Detectron2's ``sem_seg_postprocess`` + argmax and
``combine_semantic_and_instance_outputs``.

Panoptic FPN's graph ends at the semantic head's logits ``(C, Hp / 4, Wp / 4)`` over the padded
input, before the head's own upsampling by ``COMMON_STRIDE`` (4), and the detector's instances;
Detectron2's ``PanopticFPN.inference`` then does, per image:

  0. (the head's upsampling, here part of step 1) the logits are resized by 4 with PyTorch's
     bilinear interpolation; only the rows and columns that step 1 reads are computed, which keeps
     a 54-class COCO model's logits 16 times smaller than at the input's size;
  1. :func:`sem_seg_postprocess`: the logits are cropped to the input size ``(h, w)`` (the padding
     dropped), resized to the output size ``(H, W)`` with PyTorch's bilinear interpolation
     (``align_corners=False``: output ``j`` samples ``max((j + 0.5) * n_in / n_out - 0.5, 0)``,
     rounded once to float32 as PyTorch's fused multiply-add does, between its two neighbours,
     the upper one clamped to the border), and reduced to class ids by an argmax over C (the
     first class on ties). The resize is separable, ``Wy @ logits[c] @ Wx.T`` with
     :func:`bilinear_matrix`; each row of these matrices has two taps, so it is done as two
     gathers (x first, then y, as PyTorch orders the sums), a block of output rows at a time, in
     float32.
  2. :func:`combine_semantic_and_instance_outputs`: instances, by descending score, stop at the
     first score below ``instances_score_thresh``; an instance is skipped when its mask is empty or
     when more than ``overlap_threshold`` of it is already taken, otherwise its not-yet-taken pixels
     become segment ``1, 2, ...``. Then each semantic label in ascending order, except 0 ("things"),
     takes its still-free pixels as a segment unless there are fewer than ``stuff_area_thresh``
     of them. Segment ids, the map and ``segments_info`` (same keys, same order) are Detectron2's.
     Tie order: Detectron2 sorts with ``torch.argsort(-scores)``, which is not stable, so equal
     scores come in an unspecified order there; here they come in index order (a stable sort).

Nothing here imports torch, detectron2 or openvino.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["sem_seg_postprocess", "combine_semantic_and_instance_outputs", "bilinear_matrix", "describe_segments"]

#: float32 elements of one block of resized logits (C x rows x W); bounds the working memory
_BLOCK_ELEMENTS = 1 << 22


def _taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch's 1-D bilinear taps (``align_corners=False``): for each output index, the two input
    indices and their float32 weights ``(lo, hi, w_lo, w_hi)``."""
    scale = np.float32(n_in) / np.float32(n_out)
    # PyTorch's build contracts ``scale * (j + 0.5f) - 0.5f`` into one fused multiply-add (a single
    # float32 rounding); the float64 product and difference are exact, so this is that rounding.
    real = (np.float64(scale) * (np.arange(n_out) + 0.5) - 0.5).astype(np.float32)
    real = np.maximum(real, np.float32(0))
    lo = np.minimum(np.floor(real).astype(np.int64), n_in - 1)
    lam = np.clip(real - lo.astype(np.float32), np.float32(0), np.float32(1)).astype(np.float32)
    hi = lo + (lo < n_in - 1)
    return lo, hi, (np.float32(1) - lam).astype(np.float32), lam


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` float32 weights of PyTorch's 1-D bilinear resize (``align_corners=False``):
    output ``j`` samples ``max((j + 0.5) * n_in / n_out - 0.5, 0)`` between its two neighbours,
    indices clamped to the border."""
    lo, hi, w_lo, w_hi = _taps(n_in, n_out)
    out = np.zeros((n_out, n_in), np.float32)
    rows = np.arange(n_out)
    np.add.at(out, (rows, lo), w_lo)
    np.add.at(out, (rows, hi), w_hi)
    return out


def _rows_at(logits: np.ndarray, ty: tuple, tx: tuple) -> np.ndarray:
    """The bilinear resize of ``logits`` ``(C, h, w)`` at the output rows whose y taps are ``ty``
    (already selected) and every output column of ``tx``: ``(C, rows, W)`` float32, x first, then y
    (PyTorch's order of the sums)."""
    y_lo, y_hi, wy_lo, wy_hi = ty
    x_lo, x_hi, wx_lo, wx_hi = tx
    rows = np.unique(np.concatenate([y_lo, y_hi]))
    src = logits[:, rows]  # (C, k, w): only the input rows these output rows read
    along_x = np.take(src, x_lo, axis=2) * wx_lo + np.take(src, x_hi, axis=2) * wx_hi  # (C, k, W)
    a, b = np.searchsorted(rows, y_lo), np.searchsorted(rows, y_hi)
    return along_x[:, a] * wy_lo[:, None] + along_x[:, b] * wy_hi[:, None]


def _resize_rows(logits: np.ndarray, ty: tuple, tx: tuple, start: int, stop: int) -> np.ndarray:
    """Output rows ``start:stop`` of the bilinear resize of ``logits`` ``(C, h, w)``: ``(C, rows, W)``
    float32, ``Wy[start:stop] @ logits[c] @ Wx.T`` computed from the taps."""
    return _rows_at(logits, tuple(t[start:stop] for t in ty), tx)


def _upsampled_rows(logits: np.ndarray, t1y: tuple, t1x: tuple, ty: tuple, tx: tuple, start: int, stop: int
                    ) -> np.ndarray:
    """Output rows ``start:stop`` of two bilinear resizes in a row (``t1``: the semantic head's
    upsampling, ``t``: to the image), computing only the rows of the first that the second reads."""
    y_lo, y_hi, wy_lo, wy_hi = (t[start:stop] for t in ty)
    rows = np.unique(np.concatenate([y_lo, y_hi]))
    first = _rows_at(logits, tuple(t[rows] for t in t1y), t1x)  # (C, k, w)
    x_lo, x_hi, wx_lo, wx_hi = tx
    along_x = np.take(first, x_lo, axis=2) * wx_lo + np.take(first, x_hi, axis=2) * wx_hi
    a, b = np.searchsorted(rows, y_lo), np.searchsorted(rows, y_hi)
    return along_x[:, a] * wy_lo[:, None] + along_x[:, b] * wy_hi[:, None]


def sem_seg_postprocess(logits: np.ndarray, input_size: Sequence[int], output_size: Sequence[int],
                        stride: int = 1) -> np.ndarray:
    """Semantic logits ``(C, Hp, Wp)`` over the padded input -> ``(H, W)`` int64 class ids.

    Args:
        logits: float ``(C, Hp / stride, Wp / stride)``: the semantic head's output over the padded
            input, before its upsampling by ``stride`` when ``stride > 1``.
        input_size: ``(h, w)``, the resized image inside the padding (cropped to, as slicing does).
        output_size: ``(H, W)``, the resolution of the result (the original image's).
        stride: the semantic head's upsampling factor (``SEM_SEG_HEAD.COMMON_STRIDE``) still to be
            done: Detectron2's ``F.interpolate(scale_factor=stride, mode="bilinear")``. Only the
            rows and columns of it that the resize to ``(H, W)`` reads are computed.

    Returns:
        ``(H, W)`` int64: ``argmax`` over C of Detectron2's ``sem_seg_postprocess(logits, input_size,
        H, W)`` (after the head's upsampling).
    """
    logits = np.asarray(logits, np.float32)
    if logits.ndim != 3:
        raise ValueError(f"sem_seg_postprocess: expected logits of shape (C, H, W), found {logits.shape}")
    h, w = (int(s) for s in input_size)
    H, W = (int(s) for s in output_size)
    c = logits.shape[0]
    if stride > 1:
        hs, ws = logits.shape[1:]
        if min(c, hs, ws, h, w, H, W) <= 0 or h > hs * stride or w > ws * stride:
            raise ValueError(f"sem_seg_postprocess: logits {logits.shape} at stride {stride} do not cover the "
                             f"input {(h, w)}, or the output size {(H, W)} is empty")
        t1y = tuple(t[:h] for t in _taps(hs, hs * stride))  # the upsampled rows, cropped to the input
        t1x = tuple(t[:w] for t in _taps(ws, ws * stride))
        ty, tx = _taps(h, H), _taps(w, W)
        out = np.empty((H, W), np.int64)
        step = max(1, _BLOCK_ELEMENTS // (c * max(W, w)))
        for start in range(0, H, step):
            stop = min(start + step, H)
            out[start:stop] = _upsampled_rows(logits, t1y, t1x, ty, tx, start, stop).argmax(axis=0)
        return out
    logits = logits[:, :h, :w]
    c, h, w = logits.shape
    if min(c, h, w, H, W) <= 0:
        raise ValueError(f"sem_seg_postprocess: empty input {logits.shape} or output size {(H, W)}")
    ty, tx = _taps(h, H), _taps(w, W)
    out = np.empty((H, W), np.int64)
    step = max(1, _BLOCK_ELEMENTS // (c * W))
    for start in range(0, H, step):
        stop = min(start + step, H)
        out[start:stop] = _resize_rows(logits, ty, tx, start, stop).argmax(axis=0)
    return out


def combine_semantic_and_instance_outputs(
    scores: np.ndarray,
    classes: np.ndarray,
    masks: np.ndarray,
    semantic: np.ndarray,
    overlap_threshold: float,
    stuff_area_thresh: float,
    instances_score_thresh: float,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Instances and a semantic map -> Detectron2's panoptic segmentation.

    Args:
        scores: ``(N,)`` instance scores.
        classes: ``(N,)`` int instance class ids.
        masks: ``(N, H, W)`` bool full-image instance masks (as ``detector_postprocess`` gives).
        semantic: ``(H, W)`` int contiguous semantic ids, 0 meaning "things".
        overlap_threshold: an instance more than this fraction of which is taken is skipped.
        stuff_area_thresh: a stuff segment of fewer free pixels than this is skipped.
        instances_score_thresh: instances below this score are not used.

    Returns:
        ``panoptic_seg`` ``(H, W)`` int32 segment ids (0: none) and ``segments_info``, one dict per
        segment in id order: ``{"id", "isthing": True, "score", "category_id", "instance_id"}`` for
        things (``instance_id`` indexes the inputs), ``{"id", "isthing": False, "category_id",
        "area"}`` for stuff (``category_id`` is the semantic id); plain Python types.
    """
    semantic = np.asarray(semantic)
    scores = np.asarray(scores).reshape(-1)
    classes = np.asarray(classes).reshape(-1)
    n = len(scores)
    masks = np.asarray(masks, bool).reshape((n, *semantic.shape)) if n == 0 else np.asarray(masks, bool)
    if semantic.ndim != 2 or masks.shape != (n, *semantic.shape) or len(classes) != n:
        raise ValueError(f"combine_semantic_and_instance_outputs: expected scores (N,), classes (N,), masks "
                         f"(N, H, W) and semantic (H, W) with the same N, H, W; found {scores.shape}, "
                         f"{classes.shape}, {masks.shape} and {semantic.shape}")
    panoptic = np.zeros(semantic.shape, np.int32)
    segments: list[dict[str, Any]] = []
    segment_id = 0

    for i in np.argsort(-scores, kind="stable").tolist():
        score = float(scores[i])
        if score < instances_score_thresh:
            break
        mask = masks[i]
        mask_area = int(np.count_nonzero(mask))
        if mask_area == 0:
            continue
        taken = panoptic > 0
        intersect_area = int(np.count_nonzero(mask & taken))
        if intersect_area * 1.0 / mask_area > overlap_threshold:
            continue
        if intersect_area > 0:
            mask = mask & ~taken
        segment_id += 1
        panoptic[mask] = segment_id
        segments.append({"id": segment_id, "isthing": True, "score": score, "category_id": int(classes[i]),
                         "instance_id": i})

    # Stuff: each label's free pixels; labels are disjoint, so their free areas do not depend on
    # the order in which they are assigned and can be counted at once.
    free = panoptic == 0
    free_labels, inverse, counts = np.unique(semantic[free], return_inverse=True, return_counts=True)
    area_of = dict(zip(free_labels.tolist(), counts.tolist()))
    position = {label: k for k, label in enumerate(free_labels.tolist())}
    segment_of = np.zeros(len(free_labels), np.int32)
    for label in np.unique(semantic).tolist():
        if label == 0:
            continue
        area = area_of.get(label, 0)
        if area < stuff_area_thresh:
            continue
        segment_id += 1
        if label in position:
            segment_of[position[label]] = segment_id
        segments.append({"id": segment_id, "isthing": False, "category_id": int(label), "area": int(area)})
    panoptic[free] = segment_of[inverse.reshape(-1)]
    return panoptic, segments


def describe_segments(panoptic_seg: np.ndarray, info: list[dict[str, Any]], labels: Sequence[str],
                      stuff_classes: Sequence[str]) -> tuple[dict[str, Any], ...]:
    """Detectron2's ``segments_info`` as :class:`~d2ov_core.runtime.detections.Detections` carries it:
    ``{"id", "label", "category_id", "isthing", "score", "area"}`` per segment, the class name from
    ``labels`` (things) or ``stuff_classes`` (stuff), the area counted on ``panoptic_seg``."""
    areas = np.bincount(np.asarray(panoptic_seg).reshape(-1), minlength=len(info) + 1)
    out = []
    for seg in info:
        cat = int(seg["category_id"])
        names = labels if seg["isthing"] else stuff_classes
        out.append({"id": int(seg["id"]), "label": str(names[cat]) if 0 <= cat < len(names) else f"class_{cat}",
                    "category_id": cat, "isthing": bool(seg["isthing"]),
                    "score": float(seg["score"]) if seg["isthing"] else None, "area": int(areas[seg["id"]])})
    return tuple(out)

