"""Keypoint heatmaps -> keypoints, in numpy: Detectron2's ``heatmaps_to_keypoints``.

Keypoint R-CNN's graph ends at the keypoint head's logits ``(N, K, S, S)`` (S = 56) over each
detection's box; this turns them into ``(N, K, 3)`` ``[x, y, score]`` in the boxes' frame, as
Detectron2 does after the graph (its per-box loop with a per-box output size does not convert):

  1. each box's K maps are resized to ``ceil(box height) x ceil(box width)`` (box sides clamped to
     >= 1 px) with PyTorch's bicubic interpolation (``align_corners=False``, A = -0.75, border
     pixels repeated): a separable resampling, so ``Wy @ map @ Wx.T`` per keypoint;
  2. the keypoint lies at the centre of the resized map's largest pixel (the first in row-major
     order on ties), scaled back by ``box side / ceil(box side)`` and offset by the box's corner;
  3. its score is ``1 / sum(exp(map - max))`` over the S x S logits, ``max`` being the resized map's
     maximum: Detectron2's softmax normalised at the pool resolution, taken at the maximum.

Nothing here imports torch, detectron2 or openvino.
"""

from __future__ import annotations

import numpy as np

__all__ = ["heatmaps_to_keypoints", "bicubic_matrix"]

_A = np.float32(-0.75)


def bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` float32 weights of PyTorch's 1-D bicubic resize (``align_corners=False``):
    output ``j`` samples ``(j + 0.5) * n_in / n_out - 0.5`` with the cubic-convolution kernel
    (A = -0.75) over four neighbours, indices clamped to the border."""
    scale = np.float32(n_in) / np.float32(n_out)
    real = scale * (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
    base = np.floor(real)
    t = (real - base).astype(np.float32)

    def near(x):  # |x| <= 1
        return ((_A + 2) * x - (_A + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((_A * x - 5 * _A) * x + 8 * _A) * x - 4 * _A

    coeffs = (far(t + 1), near(t), near(1 - t), far(2 - t))
    out = np.zeros((n_out, n_in), np.float32)
    rows = np.arange(n_out)
    for k, c in enumerate(coeffs):
        idx = np.clip(base.astype(np.int64) - 1 + k, 0, n_in - 1)
        np.add.at(out, (rows, idx), c.astype(np.float32))
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
    kidx = np.arange(k)
    for i in range(n):
        oh, ow = int(heights_ceil[i]), int(widths_ceil[i])
        wy, wx = bicubic_matrix(s_h, oh), bicubic_matrix(s_w, ow)
        roi = np.matmul(np.matmul(wy[None], maps[i]), wx.T[None])  # (K, oh, ow)
        flat = roi.reshape(k, -1)
        pos = flat.argmax(axis=1)
        peak = flat[kidx, pos]
        norm = np.exp(maps[i] - peak[:, None, None]).sum(axis=(1, 2))
        x_int, y_int = pos % ow, pos // ow
        out[i, :, 0] = (x_int.astype(np.float32) + np.float32(0.5)) * (widths[i] / widths_ceil[i]) + boxes[i, 0]
        out[i, :, 1] = (y_int.astype(np.float32) + np.float32(0.5)) * (heights[i] / heights_ceil[i]) + boxes[i, 1]
        out[i, :, 2] = 1.0 / norm
    return out
