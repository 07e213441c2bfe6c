"""Keypoint heatmaps -> keypoints: Detectron2's ``heatmaps_to_keypoints``, in numpy and (the peak
search) numba-compiled code.

Keypoint R-CNN's graph ends at the keypoint head's logits ``(N, K, S, S)`` (S = 56) over each
detection's box; this turns them into ``(N, K, 3)`` ``[x, y, score]`` in the boxes' frame, as
Detectron2 does after the graph (its per-box loop with a per-box output size does not convert):

  1. each box's K maps are resized to ``ceil(box height) x ceil(box width)`` (box sides clamped to
     >= 1 px) with PyTorch's bicubic interpolation (``align_corners=False``, A = -0.75, border
     pixels repeated): a separable resampling, along x then along y, each output a sum of four taps
     in float32. Only the rows and columns that can hold the peak are computed: by compiled code
     when numba is installed (:mod:`~d2ov_core.runtime.kernels`, about 14 ms per 100
     people), else by numpy box by box (:func:`_peaks`, about 150 ms); the same pixels, bit for bit.
     No BLAS: its threads stall when other work shares the cores;
  2. the keypoint lies at the centre of the resized map's largest pixel (the first in row-major
     order on ties), scaled back by ``box side / ceil(box side)`` and offset by the box's corner;
  3. its score is ``1 / sum(exp(map - max))`` over the S x S logits, ``max`` being the resized map's
     maximum: Detectron2's softmax normalised at the pool resolution, taken at the maximum.

Nothing here imports torch, detectron2 or openvino.
"""

from __future__ import annotations

import numpy as np

from . import native

__all__ = ["heatmaps_to_keypoints", "compile_search", "bicubic_matrix", "bicubic_taps"]

_A = np.float32(-0.75)


def bicubic_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's 1-D bicubic resize (``align_corners=False``) as four taps per output: indices
    ``(n_out, 4)`` into the input (clamped to the border) and float32 weights ``(n_out, 4)``. Output
    ``j`` samples ``(j + 0.5) * n_in / n_out - 0.5`` with the cubic-convolution kernel (A = -0.75)."""
    return _taps(n_in, np.array([n_out]))


def _taps(n_in: int, n_outs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`bicubic_taps` for several output sizes at once, one after the other: ``(sum n_outs, 4)``."""
    n_outs = n_outs.astype(np.int64)
    j = np.arange(int(n_outs.sum())) - np.repeat(np.cumsum(n_outs) - n_outs, n_outs)
    scale = np.repeat(np.float32(n_in) / n_outs.astype(np.float32), n_outs)
    # one float32 rounding of scale * (j + 0.5) - 0.5, as PyTorch's fused multiply-add (the float64
    # product and difference are exact)
    real = (scale.astype(np.float64) * (j + 0.5) - 0.5).astype(np.float32)
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


def heatmaps_to_keypoints(maps: np.ndarray, boxes: np.ndarray, *, compiled: bool | None = None) -> np.ndarray:
    """``maps`` ``(N, K, S, S)`` logits over ``boxes`` ``(N, 4)`` xyxy -> ``(N, K, 3)`` float32
    ``[x, y, score]`` in the boxes' frame (Detectron2's ``pred_keypoints`` before rescaling).

    The peaks are searched without resizing whole maps: by numba-compiled code
    (:mod:`~d2ov_core.runtime.kernels`) when numba is installed (the ``fast`` extra), else
    by numpy (:func:`_peaks`, box by box). Both give the same answer, bit for bit; ``compiled``
    True / False picks one (True raises ``ImportError`` without numba)."""
    maps = np.asarray(maps, np.float32)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n, k = maps.shape[:2] if maps.ndim == 4 else (len(boxes), 0)
    out = np.zeros((n, k, 3), np.float32)
    if n == 0 or k == 0:
        return out
    widths = np.maximum(boxes[:, 2] - boxes[:, 0], np.float32(1))
    heights = np.maximum(boxes[:, 3] - boxes[:, 1], np.float32(1))
    widths_ceil, heights_ceil = np.ceil(widths), np.ceil(heights)
    oh, ow = heights_ceil.astype(np.int64), widths_ceil.astype(np.int64)
    # every box's taps, one box after the other: box i's are rows start[i] .. start[i + 1]
    taps_y, taps_x = _taps(maps.shape[2], oh), _taps(maps.shape[3], ow)
    start_y, start_x = (np.concatenate([[0], np.cumsum(size)]) for size in (oh, ow))
    if compiled is None:
        compiled = native.kernels() is not None
    search = _search_compiled if compiled else _search_numpy
    pos, peak = search(maps, taps_y, start_y, taps_x, start_x)
    norm = _norm(maps, peak)
    x_int, y_int = pos % ow[:, None], pos // ow[:, None]  # pos: row-major index into the (oh, ow) map
    out[:, :, 0] = (x_int.astype(np.float32) + np.float32(0.5)) * (widths / widths_ceil)[:, None] + boxes[:, 0, None]
    out[:, :, 1] = (y_int.astype(np.float32) + np.float32(0.5)) * (heights / heights_ceil)[:, None] + boxes[:, 1, None]
    out[:, :, 2] = 1.0 / norm
    return out


def _norm(maps: np.ndarray, peak: np.ndarray, chunk: int = 4) -> np.ndarray:
    """``sum(exp(maps - peak))`` over each ``(S, S)`` map, ``chunk`` boxes at a time (in cache)."""
    n, k = maps.shape[:2]
    out = np.empty((n, k), np.float32)
    part = np.empty((min(chunk, n), *maps.shape[1:]), np.float32)
    for i in range(0, n, chunk):
        diff = np.subtract(maps[i : i + chunk], peak[i : i + chunk, :, None, None], out=part[: n - i])
        out[i : i + chunk] = np.exp(diff, out=diff).reshape(len(diff), k, -1).sum(axis=2)
    return out


def compile_search() -> None:
    """Compile the compiled search now (or load it from numba's cache: about 2 s, or 0.4 s), so
    that the first detections do not wait for it. Nothing without numba."""
    if native.kernels() is not None:
        heatmaps_to_keypoints(np.zeros((1, 1, 8, 8), np.float32), np.array([[0, 0, 4, 4]], np.float32))


def _search_compiled(
    maps: np.ndarray, taps_y: tuple, start_y: np.ndarray, taps_x: tuple, start_x: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Every map's peak by :func:`d2ov_core.runtime.kernels.peaks`: ``(N, K)`` int64 row-major
    positions in the boxes' ``(oh, ow)`` maps and ``(N, K)`` float32 values. ``taps_y``/``taps_x``:
    every box's taps (:func:`_taps`), box ``i``'s from row ``start[i]`` to ``start[i + 1]``."""
    peaks = native.require().peaks
    pos, peak = np.empty(maps.shape[:2], np.int64), np.empty(maps.shape[:2], np.float32)
    peaks(np.ascontiguousarray(maps), *taps_y, start_y, *taps_x, start_x, pos, peak)
    return pos, peak


def _search_numpy(
    maps: np.ndarray, taps_y: tuple, start_y: np.ndarray, taps_x: tuple, start_x: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_search_compiled` in numpy, box by box (:func:`_peaks`); non-finite boxes whole."""
    n, k = maps.shape[:2]
    # per map: the extremes of each row, the largest logit's cell, the largest |logit|
    rows = (_last_axis(np.maximum, maps).astype(np.float64), _last_axis(np.minimum, maps).astype(np.float64))
    top = maps.reshape(n, k, -1).argmax(axis=2)
    size = np.maximum(np.abs(rows[0]).max(axis=2), np.abs(rows[1]).max(axis=2))  # (N, K)
    pos = np.empty((n, k), np.int64)
    peak = np.empty((n, k), np.float32)
    finite = np.isfinite(size)
    for i in range(n):
        box_y = tuple(t[start_y[i] : start_y[i + 1]] for t in taps_y)
        box_x = tuple(t[start_x[i] : start_x[i + 1]] for t in taps_x)
        if finite[i].all():
            pos[i], peak[i] = _peaks(maps[i], box_y, box_x, (rows[0][i], rows[1][i]), top[i], size[i])
        else:  # no bound holds: every pixel
            oh, ow = len(box_y[0]), len(box_x[0])
            every = (np.broadcast_to(np.arange(oh), (k, oh)), np.broadcast_to(np.arange(ow), (k, ow)))
            pos[i], peak[i] = _best(maps[i], *every, box_y, box_x)
    return pos, peak


def _last_axis(op: np.ufunc, a: np.ndarray) -> np.ndarray:
    """``op.reduce(a, axis=-1)`` for ``np.maximum`` / ``np.minimum``, by halving (numpy reduces
    many short last axes slowly)."""
    while a.shape[-1] > 1:
        half = a.shape[-1] // 2
        b = op(a[..., :half], a[..., half : 2 * half])
        if a.shape[-1] % 2:
            b[..., :1] = op(b[..., :1], a[..., 2 * half :])
        a = b
    return a[..., 0]


def _axis_bound(
    extremes: tuple[np.ndarray, np.ndarray], taps: tuple[np.ndarray, np.ndarray], overshoot: float
) -> np.ndarray:
    """An upper bound of every resized value in each output row (or column): ``(K, n_out)``
    float64. ``extremes``: ``(K, S)`` maxima and minima of the maps' input rows (columns);
    ``overshoot``: the other axis's largest sum of negative weights, by which its resize can exceed
    a row's maximum (below its minimum) by that times the row's range."""
    hi, lo = extremes
    spread = overshoot * (hi - lo)
    top, bottom = hi + spread, lo - spread
    index, weights = taps
    w = weights.astype(np.float64)
    return np.where(w >= 0, w * top[:, index], w * bottom[:, index]).sum(axis=2)


def _peaks(
    maps: np.ndarray, taps_y: tuple, taps_x: tuple, rows: tuple, top: np.ndarray, size: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Row-major position and value of the largest pixel of each of ``maps`` ``(K, S, S)`` resized
    by ``taps_y`` x ``taps_x`` (the first one on ties): ``(K,)`` int64 and ``(K,)`` float32.

    A lower bound of each peak is the value at the output pixel over the largest logit (``top``).
    A pixel can reach it only if both its row's and its column's bounds (:func:`_axis_bound`, plus
    ``1e-5 * size`` for float32 rounding) do: rows from the input rows' extremes (``rows``), then
    columns from the extremes of the input rows those rows read; only those rows x columns are
    computed (:func:`_best`).
    Peaked heatmaps leave a few rows and columns around the peak; flat ones all of them. Exact: the
    same values as resizing the whole maps.
    """
    k, s_h, s_w = maps.shape
    oh, ow = len(taps_y[0]), len(taps_x[0])
    negative_x = float(np.maximum(-taps_x[1], 0).sum(axis=1).max())
    negative_y = float(np.maximum(-taps_y[1], 0).sum(axis=1).max())
    slack = 1e-5 * size[:, None] + 1e-30
    near_y = np.minimum(((top // s_w + 0.5) * oh / s_h).astype(np.int64), oh - 1)
    near_x = np.minimum(((top % s_w + 0.5) * ow / s_w).astype(np.int64), ow - 1)
    floor = _best(maps, near_y[:, None], near_x[:, None], taps_y, taps_x)[1].astype(np.float64)
    ys = _listed(_axis_bound(rows, taps_y, negative_x) + slack >= floor[:, None])  # (K, a)
    first = taps_y[0][ys[:, 0], 0]
    band = np.minimum(first[:, None] + np.arange(int((taps_y[0][ys[:, -1], 3] - first).max()) + 1), s_h - 1)
    band = maps[np.arange(k)[:, None, None], band[:, :, None], np.arange(s_w)]  # (K, rows read, S)
    cols = (band.max(axis=1).astype(np.float64), band.min(axis=1).astype(np.float64))
    xs = _listed(_axis_bound(cols, taps_x, negative_y) + slack >= floor[:, None])  # (K, b)
    return _best(maps, ys, xs, taps_y, taps_x, floor, slack)


def _listed(ok: np.ndarray) -> np.ndarray:
    """``(K, n)`` bool -> ``(K, m)`` the indices of each row's True entries, ascending, padded with
    the last one (repeating a pixel changes no maximum)."""
    count = ok.sum(axis=1)
    order = np.argsort(~ok, axis=1, kind="stable")[:, : max(int(count.max()), 1)]
    j = np.minimum(np.arange(order.shape[1]), np.maximum(count, 1)[:, None] - 1)
    return np.take_along_axis(order, j, axis=1)


def _best(
    maps: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
    taps_y: tuple,
    taps_x: tuple,
    floor: np.ndarray | None = None,
    slack: np.ndarray | float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The resized ``maps`` ``(K, S, S)`` at output rows ``ys`` ``(K, a)`` x columns ``xs`` ``(K, b)``
    (ascending, repeats allowed): each map's largest value there and its row-major position in the
    ``(oh, ow)`` map (the first on ties), ``(K,)`` int64 and ``(K,)`` float32. Along x, then along y,
    each a sum of four taps in tap order, in float32; the x pass is done once per input row read.
    ``floor`` ``(K,)``: a value each map reaches among these pixels; rows whose bound from the x pass's
    extremes (plus ``slack``) is below it cannot hold the maximum and are not computed along y."""
    k, s_h, s_w = maps.shape
    index_y, weights_y = taps_y
    index_x, weights_x = taps_x
    ow = len(index_x)
    kk = np.arange(k)[:, None, None]
    first = index_y[ys[:, 0], 0]  # (K,) the first input row read; rows are read in order
    span = int((index_y[ys[:, -1], 3] - first).max()) + 1
    rows_in = np.minimum(first[:, None] + np.arange(span), s_h - 1)  # (K, span)
    cx, wx = index_x[xs][:, None], weights_x[xs][:, None]  # (K, 1, b, 4)
    flat_maps = maps.reshape(-1)
    row_start = ((kk[..., 0] * s_h + rows_in) * s_w)[:, :, None]  # (K, span, 1)
    along_x = flat_maps[row_start + cx[..., 0]] * wx[..., 0]  # (K, span, b)
    for t in range(1, 4):
        along_x += flat_maps[row_start + cx[..., t]] * wx[..., t]
    ry, wy = index_y[ys] - first[:, None, None], weights_y[ys]  # (K, a, 4)
    if floor is not None:  # keep the rows whose bound over these columns still reaches ``floor``
        w = wy.astype(np.float64)
        hi, lo = along_x.max(axis=2).astype(np.float64), along_x.min(axis=2).astype(np.float64)  # (K, span)
        bound = np.where(w >= 0, w * hi[kk, ry], w * lo[kk, ry]).sum(axis=2) + slack  # (K, a)
        keep = _listed(bound >= floor[:, None])
        ys, ry, wy = (np.take_along_axis(a, keep[..., None] if a.ndim == 3 else keep, axis=1) for a in (ys, ry, wy))
    b = xs.shape[1]
    flat_x = along_x.reshape(-1)
    row_start = (kk * span + ry) * b  # (K, a, 4)
    values = flat_x[row_start[..., 0, None] + np.arange(b)] * wy[:, :, 0, None]  # (K, a, b)
    for t in range(1, 4):
        values += flat_x[row_start[..., t, None] + np.arange(b)] * wy[:, :, t, None]
    flat = values.reshape(k, -1)
    best = flat.max(axis=1)
    position = (ys[:, :, None] * ow + xs[:, None, :]).reshape(k, -1)
    return np.where(flat == best[:, None], position, np.iinfo(np.int64).max).min(axis=1), best
