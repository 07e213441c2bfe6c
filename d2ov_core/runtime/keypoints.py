"""Keypoint heatmaps -> keypoints, in numpy: Detectron2's ``heatmaps_to_keypoints``.

Keypoint R-CNN's graph ends at the keypoint head's logits ``(N, K, S, S)`` (S = 56) over each
detection's box; this turns them into ``(N, K, 3)`` ``[x, y, score]`` in the boxes' frame, as
Detectron2 does after the graph (its per-box loop with a per-box output size does not convert):

  1. each box's K maps are resized to ``ceil(box height) x ceil(box width)`` (box sides clamped to
     >= 1 px) with PyTorch's bicubic interpolation (``align_corners=False``, A = -0.75, border
     pixels repeated): a separable resampling, along x as a matrix product, along y with the four
     taps of each output row;
  2. the keypoint lies at the centre of the resized map's largest pixel (the first in row-major
     order on ties), scaled back by ``box side / ceil(box side)`` and offset by the box's corner;
  3. its score is ``1 / sum(exp(map - max))`` over the S x S logits, ``max`` being the resized map's
     maximum: Detectron2's softmax normalised at the pool resolution, taken at the maximum.

Nothing here imports torch, detectron2 or openvino.
"""

from __future__ import annotations

import numpy as np

__all__ = ["heatmaps_to_keypoints", "bicubic_matrix", "bicubic_taps"]

_A = np.float32(-0.75)


def bicubic_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's 1-D bicubic resize (``align_corners=False``) as four taps per output: indices
    ``(n_out, 4)`` into the input (clamped to the border) and float32 weights ``(n_out, 4)``. Output
    ``j`` samples ``(j + 0.5) * n_in / n_out - 0.5`` with the cubic-convolution kernel (A = -0.75)."""
    scale = np.float32(n_in) / np.float32(n_out)
    # one float32 rounding of scale * (j + 0.5) - 0.5, as PyTorch's fused multiply-add (the float64
    # product and difference are exact)
    real = (np.float64(scale) * (np.arange(n_out) + 0.5) - 0.5).astype(np.float32)
    base = np.floor(real)
    t = (real - base).astype(np.float32)

    def near(x):  # |x| <= 1
        return ((_A + 2) * x - (_A + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((_A * x - 5 * _A) * x + 8 * _A) * x - 4 * _A

    weights = np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=1).astype(np.float32)
    index = np.clip(base.astype(np.int64)[:, None] - 1 + np.arange(4), 0, n_in - 1)
    return index, weights


def bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """The same resize as a dense ``(n_out, n_in)`` float32 matrix (``out = M @ x``)."""
    index, weights = bicubic_taps(n_in, n_out)
    out = np.zeros((n_out, n_in), np.float32)
    np.add.at(out, (np.repeat(np.arange(n_out), 4), index.reshape(-1)), weights.reshape(-1))
    return out


def heatmaps_to_keypoints(maps: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """``maps`` ``(N, K, S, S)`` logits over ``boxes`` ``(N, 4)`` xyxy -> ``(N, K, 3)`` float32
    ``[x, y, score]`` in the boxes' frame (Detectron2's ``pred_keypoints`` before rescaling)."""
    maps = np.asarray(maps, np.float32)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n, k = maps.shape[:2] if maps.ndim == 4 else (len(boxes), 0)
    out = np.zeros((n, k, 3), np.float32)
    if n == 0 or k == 0:
        return out
    s_h, s_w = maps.shape[2:]
    widths = np.maximum(boxes[:, 2] - boxes[:, 0], np.float32(1))
    heights = np.maximum(boxes[:, 3] - boxes[:, 1], np.float32(1))
    widths_ceil, heights_ceil = np.ceil(widths), np.ceil(heights)
    for i in range(n):
        oh, ow = int(heights_ceil[i]), int(widths_ceil[i])
        # x first, as one BLAS product over all keypoints; then y, four taps per output row
        cols = (maps[i].reshape(k * s_h, s_w) @ bicubic_matrix(s_w, ow).T).reshape(k, s_h, ow)
        index, weights = bicubic_taps(s_h, oh)
        pos = np.empty(k, np.int64)
        peak = np.empty(k, np.float32)
        for j in range(k):
            pos[j], peak[j] = _peak(cols[j], index, weights)
        norm = np.exp(maps[i] - peak[:, None, None]).sum(axis=(1, 2))
        x_int, y_int = pos % ow, pos // ow  # pos: row-major index into the (oh, ow) map
        out[i, :, 0] = (x_int.astype(np.float32) + np.float32(0.5)) * (widths[i] / widths_ceil[i]) + boxes[i, 0]
        out[i, :, 1] = (y_int.astype(np.float32) + np.float32(0.5)) * (heights[i] / heights_ceil[i]) + boxes[i, 1]
        out[i, :, 2] = 1.0 / norm
    return out


def _rows(cols: np.ndarray, index: np.ndarray, weights: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Output ``rows`` of the y-resize of ``cols`` ``(S, ow)``: ``sum_t w_t * cols[index_t]``, in tap
    order (every row is computed the same way, whichever rows are asked for)."""
    out = cols[index[rows, 0]] * weights[rows, 0, None]
    for t in range(1, 4):
        out += cols[index[rows, t]] * weights[rows, t, None]
    return out


def _peak(cols: np.ndarray, index: np.ndarray, weights: np.ndarray, chunk: int = 16) -> tuple[int, float]:
    """Row-major position and value of the largest pixel of the y-resized ``cols`` (the first one on
    ties), computing only the rows that can hold it: each output row's maximum is bounded by its taps
    applied to the rows' maxima (positive weights) and minima (negative ones), and rows are computed
    in order of that bound until the bound falls below the best value found. Peaked heatmaps need a
    few rows of hundreds; flat ones fall back to all of them. Exact: the same values as resizing the
    whole map."""
    top, bottom = cols.max(axis=1).astype(np.float64), cols.min(axis=1).astype(np.float64)
    w = weights.astype(np.float64)
    bound = np.where(w >= 0, w * top[index], w * bottom[index]).sum(axis=1)
    bound += np.abs(w).sum(axis=1) * np.abs(cols).max() * 1e-6 + 1e-30  # float32 rounding of the rows
    order = np.argsort(-bound, kind="stable")
    best, best_pos = -np.inf, 0
    ow = cols.shape[1]
    for start in range(0, len(order), chunk):
        rows = order[start:start + chunk]
        if bound[rows[0]] < best:
            break
        vals = _rows(cols, index, weights, rows)
        x = vals.argmax(axis=1)
        v = vals[np.arange(len(rows)), x]
        for r, xi, vi in zip(rows, x, v):
            p = int(r) * ow + int(xi)
            if vi > best or (vi == best and p < best_pos):
                best, best_pos = float(vi), p
    return best_pos, best
