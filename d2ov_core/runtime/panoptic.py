"""Panoptic FPN's postprocessing, in numpy (one loop numba-compiled where numba is installed):
Detectron2's ``sem_seg_postprocess`` + argmax and ``combine_semantic_and_instance_outputs``.

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
     gathers (x first, then y, as PyTorch orders the sums), in float32. Only the pixels whose
     class the logits around them do not settle are computed, and only for the classes that can
     win there (:func:`_argmax_pruned`), or every class's map as two banded products, checked
     (:func:`_argmax_banded`, compiled with numba when installed); the pixels in doubt get the same
     float32 operations in the same order as resizing every map whole (:func:`_sem_seg_dense`, still
     used when that is faster), so the same labels.
  2. :func:`combine_semantic_and_instance_outputs`: instances, by descending score, stop at the
     first score below ``instances_score_thresh``; an instance is skipped when its mask is empty or
     when more than ``overlap_threshold`` of it is already taken, otherwise its not-yet-taken pixels
     become segment ``1, 2, ...``. Then each semantic label in ascending order, except 0 ("things"),
     takes its still-free pixels as a segment unless there are fewer than ``stuff_area_thresh``
     of them. Segment ids, the map and ``segments_info`` (same keys, same order) are Detectron2's.
     Tie order: Detectron2 sorts with ``torch.argsort(-scores)``, which is not stable, so equal
     scores come in an unspecified order there; here they come in index order (a stable sort).
     Each instance is handled inside its box (:class:`~d2ov_core.runtime.postprocess.BoxMasks`: no
     full-image array per instance, and a mask the merge cannot use is never pasted).

Nothing here imports torch, detectron2 or openvino.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ..errors import IRError
from . import native
from .detections import Detections, Segment
from .postprocess import BoxMasks
from .preprocess import Geometry

__all__ = [
    "PanopticParams",
    "sem_seg_postprocess",
    "compile_kernels",
    "combine_semantic_and_instance_outputs",
    "bilinear_matrix",
    "describe_segments",
    "compare_panoptic",
]

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


def _upsampled_rows(
    logits: np.ndarray, t1y: tuple, t1x: tuple, ty: tuple, tx: tuple, start: int, stop: int
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


def sem_seg_postprocess(
    logits: np.ndarray, input_size: Sequence[int], output_size: Sequence[int], stride: int = 1
) -> np.ndarray:
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

    With numba (the ``fast`` extra), every class's map is resized by the banded products compiled
    (:func:`_argmax_banded`, about 20 ms at COCO's size on any logits). In numpy, most pixels are
    decided without resizing anything (see :func:`_argmax_pruned`), and the banded products (BLAS)
    take the maps where too many are not. Either way, the pixels left in doubt get their candidate
    classes' values computed with the same float32 operations, in the same order, as resizing the
    whole maps (:func:`_sem_seg_dense`, which also remains the path for non-finite logits and for
    maps where too many pixels are in doubt): the same labels on every path.
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
            raise ValueError(
                f"sem_seg_postprocess: logits {logits.shape} at stride {stride} do not cover the "
                f"input {(h, w)}, or the output size {(H, W)} is empty"
            )
        t1y = tuple(t[:h] for t in _taps(hs, hs * stride))  # the upsampled rows, cropped to the input
        t1x = tuple(t[:w] for t in _taps(ws, ws * stride))
    else:
        c, h, w = logits[:, :h, :w].shape
        if min(c, h, w, H, W) <= 0:
            raise ValueError(f"sem_seg_postprocess: empty input {logits[:, :h, :w].shape} or output size {(H, W)}")
        t1y = t1x = None  # type: ignore[assignment]  # no upsampling
    ty, tx = _taps(h, H), _taps(w, W)
    logits = np.ascontiguousarray(logits)
    extremes = _read_extremes(logits, ty, tx, t1y, t1x)  # None: not all finite, no fast path applies
    if extremes is not None and extremes[1] == extremes[2]:
        # every class's map the same constant where it is read (a degenerate head): the same float
        # operations on the same values, so every class ties and the first wins
        return np.zeros((H, W), np.int64)
    # compiled, the banded products beat pruning on any logits; in numpy, pruning comes first and the
    # products take the maps where too many pixels are undecided by their windows
    paths = (_argmax_banded,) if _kernels() is not None else (_argmax_pruned, _argmax_banded)
    for path in paths if extremes is not None else ():
        labels = path(logits, ty, tx, t1y, t1x, extremes)
        if labels is not None:
            return labels
    return _sem_seg_dense(logits if t1y is not None else logits[:, :h, :w], ty, tx, t1y, t1x)


def compile_kernels() -> None:
    """Compile the compiled loop of :func:`sem_seg_postprocess` now (or load it from numba's cache:
    about 2 s, or 0.3 s), so that the first image does not wait for it. Nothing without numba."""
    if _kernels() is not None:
        sem_seg_postprocess(np.arange(24, dtype=np.float32).reshape(2, 3, 4), (6, 7), (5, 5), stride=2)


def _sem_seg_dense(logits: np.ndarray, ty: tuple, tx: tuple, t1y: tuple | None, t1x: tuple | None) -> np.ndarray:
    """The argmax over C of the whole resized maps, a block of output rows at a time: ``(H, W)``
    int64. ``t1y``/``t1x``: the head's upsampling taps (``None``: no upsampling, ``logits`` already
    cropped to the input)."""
    c = logits.shape[0]
    H, W = len(ty[0]), len(tx[0])
    out = np.empty((H, W), np.int64)
    step = max(1, _BLOCK_ELEMENTS // (c * max(W, len(t1x[0]) if t1x is not None else logits.shape[2])))
    for start in range(0, H, step):
        stop = min(start + step, H)
        if t1y is None or t1x is None:
            block = _resize_rows(logits, ty, tx, start, stop)
        else:
            block = _upsampled_rows(logits, t1y, t1x, ty, tx, start, stop)
        out[start:stop] = block.argmax(axis=0)
    return out


def _support(t: tuple, t1: tuple | None) -> tuple[np.ndarray, np.ndarray]:
    """The first and last logit index each output index reads along one axis (both taps of the
    resize, each through both taps of the head's upsampling ``t1`` if any): ``(n_out,)`` int64 each."""
    lo, hi = t[0], t[1]
    return (lo, hi) if t1 is None else (t1[0][lo], t1[1][hi])


def _distinct(first: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``(first, last)`` windows of non-decreasing ``first`` and ``last``: ``(n, 2)``,
    in order, and the window of each index ``(len(first),)``."""
    new = np.ones(len(first), bool)
    new[1:] = (first[1:] != first[:-1]) | (last[1:] != last[:-1])
    return np.stack([first[new], last[new]], axis=1), np.cumsum(new) - 1


def _window_reduce(a: np.ndarray, first: np.ndarray, last: np.ndarray, axis: int, op: np.ufunc) -> np.ndarray:
    """``op`` reduced over ``a[first[k] : last[k] + 1]`` along ``axis``, for each ``k``."""
    out = np.take(a, first, axis=axis)
    for d in range(1, int((last - first).max(initial=0)) + 1):
        op(out, np.take(a, np.minimum(first + d, last), axis=axis), out=out)
    return out


#: float32 elements of the (pixels x candidates) arrays of one exact-evaluation chunk
_CHUNK_ELEMENTS = 1 << 16
#: when more pixels than this share are undecided, or more (pixel, candidate class) pairs than this
#: share of H x W x C are left, resizing the whole maps is faster (measured: about 15 ns per output
#: value dense, 100 ns per pair)
_UNDECIDED_SHARE = 0.25
_DENSE_SHARE = 0.0625
#: when the best class of more than this share of logit cells differs from its right neighbour's, the
#: pruned path is not tried (measured on the benchmark's logits: photo-like 2%, a random head's 42%)
_CHANGE_SHARE = 0.15
#: candidate lists are padded to these lengths (fewer distinct array shapes, fewer numpy calls)
_SIZES = np.array([1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1 << 62])


def _argmax_pruned(
    logits: np.ndarray, ty: tuple, tx: tuple, t1y: tuple | None, t1x: tuple | None, extremes: tuple | None = None
) -> np.ndarray | None:
    """:func:`_sem_seg_dense`'s labels, computing values only where the winner is not certain.

    Bilinear weights are non-negative and sum to one, so a pixel's resized value of class ``c`` lies
    between the minimum and the maximum of ``logits[c]`` over the window of logit cells it reads
    (:func:`_support`), up to float32 rounding (at most 16 roundings of at most 2**-24 relative each,
    bounded here by ``1e-5 * max|logits|``). Per logit cell: the best class (the first on ties), its
    value and the best other value. A window whose cells share one best class, whose worst best
    value exceeds its best other value by more than twice the rounding bound, has that class as the
    argmax of every pixel reading it, whatever the rounding. The other pixels are computed exactly
    (:func:`_exact_values`) for the classes that can win in their window: those whose maximum over
    it reaches the largest minimum over it of any class (minus twice the bound); the argmax among
    those, in ascending class order, is the argmax over all (a window with one such class needs no
    value at all).

    Args:
        logits: ``(C, hs, ws)`` float32, C-contiguous.
        ty, tx: the resize's taps (:func:`_taps`) per output row / column.
        t1y, t1x: the head's upsampling taps per input row / column, or ``None``.
        extremes: :func:`_read_extremes` of these, if the caller has them (else read here).

    Returns:
        ``(H, W)`` int64 labels, or ``None`` when the logits are not all finite or too many pixels
        are undecided for this to be faster than resizing everything.
    """
    c, hs, ws = logits.shape
    H, W = len(ty[0]), len(tx[0])
    (r0, r1), (q0, q1) = _support(ty, t1y), _support(tx, t1x)
    extremes = extremes or _read_extremes(logits, ty, tx, t1y, t1x)
    if extremes is None:
        return None
    read, _, _, bound = extremes
    # 0. a look at every 16th row of logit cells first: where the best class changes between neighbours
    #    this often, too many windows are undecided for this path to pay
    sample = read[:, ::16]
    best_sampled = np.ascontiguousarray(sample.reshape(c, -1).T).argmax(axis=1).reshape(sample.shape[1:])
    changes = best_sampled[:, 1:] != best_sampled[:, :-1]
    if np.count_nonzero(changes) > _CHANGE_SHARE * changes.size:
        return None
    # 1. per logit cell: best class (the first on ties), best value, best other value
    best = read[0].copy()
    other = np.full_like(best, -np.inf)
    arg = np.zeros(best.shape, np.int16 if c < 1 << 15 else np.int64)
    tmp = np.empty_like(best)
    greater = np.empty(best.shape, bool)
    for k in range(1, c):
        x = read[k]
        np.minimum(best, x, out=tmp)
        np.maximum(other, tmp, out=other)
        np.greater(x, best, out=greater)
        np.copyto(arg, k, where=greater)
        np.maximum(best, x, out=best)
    # 2. per distinct window of logit rows x columns: decided (the class) or not (-1)
    rows, row_of = _distinct(r0, r1)
    cols, col_of = _distinct(q0, q1)
    stats = []
    for a, op in ((arg, np.minimum), (arg, np.maximum), (best, np.minimum), (other, np.maximum)):
        by_rows = _window_reduce(a, rows[:, 0], rows[:, 1], 0, op)
        stats.append(_window_reduce(by_rows, cols[:, 0], cols[:, 1], 1, op))
    arg_lo, arg_hi, best_lo, other_hi = stats
    decided = (arg_lo == arg_hi) & (best_lo - other_hi > 2 * bound)
    labels = np.where(decided, arg_lo.astype(np.int64), -1)[row_of[:, None], col_of[None, :]]
    undecided = np.nonzero(~decided)  # (row window, column window) pairs
    if len(undecided[0]) == 0:
        return labels
    ys, xs = np.nonzero(labels < 0)
    if len(ys) > _UNDECIDED_SHARE * H * W:
        return None
    # 3. candidate classes per undecided window: those whose maximum over it reaches the largest
    #    minimum over it of any class (minus twice the bound)
    r_first, r_last = rows[undecided[0], 0], rows[undecided[0], 1]
    q_first, q_last = cols[undecided[1], 0], cols[undecided[1], 1]
    cells = np.stack(
        [
            np.minimum(r_first + dr, r_last) * ws + np.minimum(q_first + dq, q_last)
            for dr in range(int((r_last - r_first).max()) + 1)
            for dq in range(int((q_last - q_first).max()) + 1)
        ]
    )  # (cells per window, windows)
    used = np.zeros(hs * ws, bool)
    used[cells] = True
    needed = np.flatnonzero(used)
    by_cell = np.ascontiguousarray(logits.reshape(c, hs * ws)[:, needed].T)  # (cells, C)
    cells = np.cumsum(used)[cells] - 1  # into by_cell
    hi = by_cell[cells[0]]
    lo = hi.copy()
    for j in range(1, len(cells)):
        v = by_cell[cells[j]]
        np.maximum(hi, v, out=hi)
        np.minimum(lo, v, out=lo)
    candidate = hi >= lo.max(axis=1, keepdims=True) - 2 * bound  # (windows, C)
    per_window = candidate.sum(axis=1)
    window_of = np.zeros(decided.shape, np.int64)
    window_of[undecided] = np.arange(len(per_window))
    window = window_of[row_of[ys], col_of[xs]]
    count = per_window[window]
    if int(count[count > 1].sum()) > _DENSE_SHARE * H * W * c:
        return None
    # 4. the candidates' exact values
    labels[ys, xs] = _exact_argmax(logits, candidate, window, ys, xs, ty, tx, t1y, t1x)
    return labels


def _read_extremes(
    logits: np.ndarray, ty: tuple, tx: tuple, t1y: tuple | None, t1x: tuple | None
) -> tuple[np.ndarray, float, float, np.float32] | None:
    """The logit cells the output reads (every cell a tap reads, with or without weight), their
    lowest and highest value, and the float32 rounding bound of a resized value,
    ``1e-5 * max|logits|``; ``None`` when not all of them are finite."""
    rows, cols = int(_support(ty, t1y)[1][-1]) + 1, int(_support(tx, t1x)[1][-1]) + 1
    read = logits[:, :rows, :cols]
    lowest, highest = float(read.min()), float(read.max())
    if not (np.isfinite(lowest) and np.isfinite(highest)):
        return None
    return read, lowest, highest, np.float32(1e-5) * max(abs(lowest), abs(highest)) + np.float32(1e-30)


def _exact_argmax(
    logits: np.ndarray,
    candidate: np.ndarray,
    group: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
    ty: tuple,
    tx: tuple,
    t1y: tuple | None,
    t1x: tuple | None,
) -> np.ndarray:
    """The argmax at output pixels ``(ys, xs)`` over their candidate classes, from the candidates'
    exact values (:func:`_exact_values`): ``(U,)`` int64. ``candidate``: ``(G, C)`` bool, the classes
    that can win, per group of pixels; ``group``: ``(U,)``, each pixel's row of it. Candidate lists
    are padded to a few sizes with their last class (a repeated class cannot change which class is
    first among the largest), in ascending class order (the first class wins ties, as in an argmax
    over all)."""
    c, hs, ws = logits.shape
    per_group = candidate.sum(axis=1)
    _, listed = np.nonzero(candidate)  # ascending classes, group after group
    first = np.cumsum(per_group) - per_group
    count = per_group[group]
    size = _SIZES[np.searchsorted(_SIZES, count)]
    flat = logits.reshape(-1)
    out = np.empty(len(ys), np.int64)
    for k in np.unique(size).tolist():
        sel = np.flatnonzero(size == k)
        step = max(1, _CHUNK_ELEMENTS // k)
        for start in range(0, len(sel), step):
            part = sel[start : start + step]
            g = group[part]
            classes = listed[first[g][:, None] + np.minimum(np.arange(k), per_group[g][:, None] - 1)]
            if k == 1:
                out[part] = classes[:, 0]
            else:
                values = _exact_values(flat, hs * ws, ws, classes, ys[part], xs[part], ty, tx, t1y, t1x)
                out[part] = np.take_along_axis(classes, values.argmax(axis=1)[:, None], 1)[:, 0]
    return out


@functools.cache
def _blas_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController  # a dependency of d2ov; absent: BLAS as it is
    except ImportError:
        return None
    return ThreadpoolController()


def _one_blas_thread() -> contextlib.AbstractContextManager:
    """BLAS on one thread for the banded products: its other threads spin and stall when OpenVINO or
    another frame shares the cores (measured beside a test run: 72 ms with two threads, 48 ms with
    one; idle: 36 against 41 ms, for half the CPU time)."""
    controller = _blas_controller()
    return controller.limit(limits=1, user_api="blas") if controller is not None else contextlib.nullcontext()


#: output rows and columns per block of the banded products (:func:`_argmax_banded`), and the most
#: float32 elements of the logits resized along x held at once (columns are done in chunks beyond it)
_BAND_ROWS, _BAND_COLUMNS, _BAND_ELEMENTS = 8, 64, 1 << 24


def _composite(t: tuple, t1: tuple | None, n_src: int) -> np.ndarray:
    """``(n_out, n_src)`` float32: the weights of the resize ``t`` (after the head's upsampling
    ``t1``, if any) on each logit index along one axis, products taken in float64 from the float32
    taps, then rounded once."""
    lo, hi, w_lo, w_hi = t
    out = np.zeros((len(lo), n_src), np.float64)
    rows = np.arange(len(lo))
    for idx, weight in ((lo, w_lo), (hi, w_hi)):
        if t1 is None:
            np.add.at(out, (rows, idx), weight.astype(np.float64))
        else:
            np.add.at(out, (rows, t1[0][idx]), weight.astype(np.float64) * t1[2][idx])
            np.add.at(out, (rows, t1[1][idx]), weight.astype(np.float64) * t1[3][idx])
    return out.astype(np.float32)


def _bands(weights: np.ndarray, size: int):
    """Blocks of ``size`` output indices of ``weights`` ``(n_out, n_src)``: ``(start, stop, first,
    last + 1, weights[start:stop, first : last + 1])``, the source indices the block reads."""
    nonzero = weights != 0
    lo = nonzero.argmax(axis=1)
    hi = weights.shape[1] - nonzero[:, ::-1].argmax(axis=1)
    for start in range(0, weights.shape[0], size):
        stop = min(start + size, weights.shape[0])
        a, b = int(lo[start:stop].min()), int(hi[start:stop].max())
        yield start, stop, a, b, np.ascontiguousarray(weights[start:stop, a:b])


def _argmax_banded(
    logits: np.ndarray, ty: tuple, tx: tuple, t1y: tuple | None, t1x: tuple | None, extremes: tuple | None = None
) -> np.ndarray | None:
    """:func:`_sem_seg_dense`'s labels from every class's resized map computed another way, checked.

    Both resizes (the head's upsampling and the resize to the output) along one axis are one matrix
    of non-negative weights summing to one (:func:`_composite`), with a few logits per output index:
    the maps are two banded matrix products (x, then y, a block of output rows or columns at a time,
    BLAS), a few times faster than resizing twice with gathers. Their values differ from
    :func:`_sem_seg_dense`'s only by float32 rounding, far below ``1e-5 * max|logits|`` (the bound of
    :func:`_argmax_pruned`): a pixel whose best class leads every other by more than twice that has
    the same argmax both ways; at the others, the classes within twice the bound of the best are
    computed exactly (:func:`_exact_argmax`).

    With numba installed the products and the check are one compiled loop
    (:func:`d2ov_core.runtime.kernels.labels_banded`: a logit row at a time, each output row from the
    rows it reads), the same weights and bound, in another order of the sums; else BLAS.

    ``extremes``: :func:`_read_extremes` of these, if the caller has them (else read here). Returns
    ``None`` when the logits are not all finite or too many pixels are that close.
    """
    c, hs, ws = logits.shape
    H, W = len(ty[0]), len(tx[0])
    extremes = extremes or _read_extremes(logits, ty, tx, t1y, t1x)
    if extremes is None:
        return None
    read, _, _, bound = extremes
    rows_read, cols_read = read.shape[1:]
    ay, ax = _composite(ty, t1y, rows_read), _composite(tx, t1x, cols_read)
    kernels = _kernels()
    if kernels is not None:  # the same products and check, compiled (numba)
        labels = np.empty((H, W), np.int64)
        cap = int(_UNDECIDED_SHARE * H * W)
        ys_xs, classes = np.empty((cap, 2), np.int64), np.empty((cap, c), np.bool_)
        close = kernels.labels_banded(
            logits, cols_read, *_band_taps(ay), *_band_taps(ax), 2 * bound, labels, ys_xs, classes
        )
        if close > cap:
            return None
        return _settle(labels, logits, classes[:close], ys_xs[:close, 0], ys_xs[:close, 1], ty, tx, t1y, t1x)
    by_row = np.ascontiguousarray(read.transpose(1, 0, 2)).reshape(rows_read * c, cols_read)  # (y, class) x x
    labels = np.empty((H, W), np.int64)
    close_y, close_x, close_classes = [], [], []
    chunk = max(_BAND_COLUMNS, _BAND_ELEMENTS // (rows_read * c) // _BAND_COLUMNS * _BAND_COLUMNS)
    # one matrix product gives, per pixel, how many classes are near the best and (where only one is) which
    count_and_class = np.stack([np.ones(c, np.float32), np.arange(c, dtype=np.float32)])
    with _one_blas_thread():
        for c0 in range(0, W, chunk):
            c1 = min(c0 + chunk, W)
            along_x = np.empty((rows_read * c, c1 - c0), np.float32)
            for start, stop, a, b, weights in _bands(ax[c0:c1], _BAND_COLUMNS):
                along_x[:, start:stop] = by_row[:, a:b] @ weights.T
            along_x = along_x.reshape(rows_read, c * (c1 - c0))
            for start, stop, a, b, weights in _bands(ay, _BAND_ROWS):
                values = (weights @ along_x[a:b]).reshape(stop - start, c, c1 - c0)
                best = values.max(axis=1)
                # 1.0 for the best class and the classes as good, give or take the bound; 0.0 for the others
                near = np.greater_equal(values, (best - 2 * bound)[:, None, :], out=values, casting="unsafe")
                count, label = (count_and_class @ near).transpose(1, 0, 2)
                labels[start:stop, c0:c1] = label  # the class, where it is alone
                ys, xs = np.nonzero(count > 1)
                close_y.append(ys + start)
                close_x.append(xs + c0)
                close_classes.append(near[ys, :, xs] > 0)
    ys, xs = np.concatenate(close_y), np.concatenate(close_x)
    if len(ys) > _UNDECIDED_SHARE * H * W:
        return None
    return _settle(labels, logits, np.concatenate(close_classes), ys, xs, ty, tx, t1y, t1x)


def _settle(labels: np.ndarray, logits: np.ndarray, candidate: np.ndarray, ys, xs, ty, tx, t1y, t1x) -> np.ndarray:
    """``labels`` with the pixels ``(ys, xs)`` set to the argmax of their ``candidate`` classes'
    exact values (:func:`_exact_argmax`)."""
    if len(ys):
        labels[ys, xs] = _exact_argmax(logits, candidate, np.arange(len(ys)), ys, xs, ty, tx, t1y, t1x)
    return labels


def _kernels() -> Any:
    """The compiled kernels (:mod:`~d2ov_core.runtime.kernels`) when numba is installed, else None."""
    return native.kernels()


def _band_taps(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``weights`` ``(n_out, n_src)`` with consecutive non-zeros per row -> each row's indices and
    weights ``(n_out, J)``, ``J`` the widest band, narrower rows padded with zero weights."""
    nonzero = weights != 0
    first = nonzero.argmax(axis=1)
    width = weights.shape[1] - nonzero[:, ::-1].argmax(axis=1) - first
    at = np.minimum(first[:, None] + np.arange(int(width.max())), weights.shape[1] - 1)
    taps = np.where(np.arange(at.shape[1]) < width[:, None], np.take_along_axis(weights, at, axis=1), np.float32(0))
    return at, taps.astype(np.float32)


def _exact_values(
    flat: np.ndarray,
    plane: int,
    ws: int,
    classes: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
    ty: tuple,
    tx: tuple,
    t1y: tuple | None,
    t1x: tuple | None,
) -> np.ndarray:
    """The resized value of class ``classes[i, j]`` at output pixel ``(ys[i], xs[i])``: ``(U, K)``
    float32, bit for bit what :func:`_sem_seg_dense` computes there (the same products and sums in
    the same order: x then y for the head's upsampling, x then y for the resize).

    Args:
        flat: the ``(C, hs, ws)`` logits, raveled; ``plane``: ``hs * ws``; ``ws``: their width.
        classes: ``(U, K)`` int64 class ids; ``ys``, ``xs``: ``(U,)`` output pixel coordinates.
        ty, tx, t1y, t1x: as :func:`_argmax_pruned`.
    """
    base = classes * plane
    y_lo, y_hi, wy_lo, wy_hi = (t[ys][:, None] for t in ty)
    x_lo, x_hi, wx_lo, wx_hi = (t[xs][:, None] for t in tx)
    if t1y is None or t1x is None:

        def value(yr, xc):
            return flat[base + (yr * ws + xc)]
    else:

        def value(yr, xc):  # the head's upsampling at input pixel (yr, xc)
            r_lo, r_hi, v_lo, v_hi = (t[yr] for t in t1y)
            c_lo, c_hi, u_lo, u_hi = (t[xc] for t in t1x)
            r_lo, r_hi = r_lo * ws, r_hi * ws
            top = flat[base + (r_lo + c_lo)] * u_lo + flat[base + (r_lo + c_hi)] * u_hi
            bottom = flat[base + (r_hi + c_lo)] * u_lo + flat[base + (r_hi + c_hi)] * u_hi
            return top * v_lo + bottom * v_hi

    top = value(y_lo, x_lo) * wx_lo + value(y_lo, x_hi) * wx_hi
    bottom = value(y_hi, x_lo) * wx_lo + value(y_hi, x_hi) * wx_hi
    return top * wy_lo + bottom * wy_hi


def combine_semantic_and_instance_outputs(
    scores: np.ndarray,
    classes: np.ndarray,
    masks: np.ndarray | BoxMasks,
    semantic: np.ndarray,
    overlap_threshold: float,
    stuff_area_thresh: float,
    instances_score_thresh: float,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Instances and a semantic map -> Detectron2's panoptic segmentation.

    Args:
        scores: ``(N,)`` instance scores.
        classes: ``(N,)`` int instance class ids.
        masks: ``(N, H, W)`` bool full-image instance masks (as ``detector_postprocess`` gives), or
            the same as :class:`BoxMasks` (only the masks the merge reaches are made).
        semantic: ``(H, W)`` int contiguous semantic ids, 0 meaning "things".
        overlap_threshold: an instance more than this fraction of which is taken is skipped.
        stuff_area_thresh: a stuff segment of fewer free pixels than this is skipped.
        instances_score_thresh: instances below this score are not used.

    Returns:
        ``panoptic_seg`` ``(H, W)`` int32 segment ids (0: none) and ``segments_info``, one dict per
        segment in id order: ``{"id", "isthing": True, "score", "category_id", "instance_id"}`` for
        things (``instance_id`` indexes the inputs), ``{"id", "isthing": False, "category_id",
        "area"}`` for stuff (``category_id`` is the semantic id); plain Python types.

    Every instance is looked at inside its box only. With ``overlap_threshold < 1``, an instance
    whose box is already all taken is skipped without making its mask (all of a non-empty mask
    would be taken; an empty one is skipped anyway), and the instances stop once the whole image
    is taken. (With ``overlap_threshold >= 1`` Detectron2 gives such instances empty segments, and
    so does this.)
    """
    semantic = np.asarray(semantic)
    scores = np.asarray(scores).reshape(-1)
    classes = np.asarray(classes).reshape(-1)
    n = len(scores)
    if not isinstance(masks, BoxMasks):
        masks = np.asarray(masks, bool)
        masks = masks.reshape((n, *semantic.shape)) if n == 0 and semantic.ndim == 2 else masks
        shape = masks.shape
    else:
        shape = (len(masks), *masks.image_size)
    if semantic.ndim != 2 or shape != (n, *semantic.shape) or len(classes) != n:
        raise ValueError(
            f"combine_semantic_and_instance_outputs: expected scores (N,), classes (N,), masks "
            f"(N, H, W) and semantic (H, W) with the same N, H, W; found {scores.shape}, "
            f"{classes.shape}, {shape} and {semantic.shape}"
        )
    if not isinstance(masks, BoxMasks):
        masks = BoxMasks.from_dense(masks)
    panoptic = np.zeros(semantic.shape, np.int32)
    segments: list[dict[str, Any]] = []
    segment_id = 0
    free_pixels = panoptic.size
    stops = overlap_threshold < 1  # a fully taken mask cannot become a segment

    for i in np.argsort(-scores, kind="stable").tolist():
        score = float(scores[i])
        if score < instances_score_thresh or (stops and free_pixels == 0):
            break
        y0, y1, x0, x1 = masks.bounds[i].tolist()
        if y1 <= y0 or x1 <= x0:
            continue  # an empty mask
        box = panoptic[y0:y1, x0:x1]
        if stops and box.all():
            continue
        mask = masks.crop(i)
        mask_area = int(np.count_nonzero(mask))
        if mask_area == 0:
            continue
        new = mask & (box == 0)
        new_area = int(np.count_nonzero(new))
        intersect_area = mask_area - new_area
        if intersect_area * 1.0 / mask_area > overlap_threshold:
            continue
        segment_id += 1
        box[new] = segment_id
        free_pixels -= new_area
        segments.append(
            {"id": segment_id, "isthing": True, "score": score, "category_id": int(classes[i]), "instance_id": i}
        )

    # Stuff: each label's free pixels; labels are disjoint, so their free areas do not depend on
    # the order in which they are assigned and can be counted at once.
    free = np.flatnonzero(panoptic == 0)
    free_semantic = semantic.reshape(-1)[free]
    small_ids = semantic.dtype.kind in "iu" and semantic.size > 0 and 0 <= semantic.min() and semantic.max() < 1 << 16
    if small_ids:  # counted by bincount, looked up in a table
        n_labels = int(semantic.max()) + 1
        free_semantic = free_semantic.astype(np.intp, copy=False)
        present = np.flatnonzero(
            np.bincount(semantic.reshape(-1).astype(np.intp, copy=False), minlength=n_labels)
        ).tolist()
        area_of = np.bincount(free_semantic, minlength=n_labels).tolist()
        segment_of = np.zeros(n_labels, np.int32)
    else:
        present = np.unique(semantic).tolist()
        free_labels, inverse, counts = np.unique(free_semantic, return_inverse=True, return_counts=True)
        area_of = dict(zip(free_labels.tolist(), counts.tolist()))
        position = {label: k for k, label in enumerate(free_labels.tolist())}
        segment_of = np.zeros(len(free_labels), np.int32)
    for label in present:
        if label == 0:
            continue
        area = area_of[label] if small_ids else area_of.get(label, 0)
        if area < stuff_area_thresh:
            continue
        segment_id += 1
        if small_ids:
            segment_of[label] = segment_id
        elif label in position:
            segment_of[position[label]] = segment_id
        segments.append({"id": segment_id, "isthing": False, "category_id": int(label), "area": int(area)})
    panoptic.reshape(-1)[free] = segment_of[free_semantic if small_ids else inverse.reshape(-1)]
    return panoptic, segments


class PanopticParams(NamedTuple):
    """What the panoptic merge needs from the IR's metadata (``stuff_classes``, ``panoptic_*``; read by
    the task, :mod:`d2ov_core.runtime.tasks.panoptic_segmentation`). Called by
    :func:`~d2ov_core.runtime.postprocess.postprocess` (its ``combine`` step), it merges the semantic
    logits (the raw ``sem_seg`` output) with the instances at or above :attr:`score_threshold`, whatever
    the threshold of the listed detections is: the map is the model's answer, the threshold only
    selects the instances listed. Steps 0-2 of this module, as Detectron2's ``PanopticFPN.inference``
    does after ``detector_postprocess``."""

    stuff_classes: Sequence[str]
    stride: int = 4
    size_divisibility: int = 32
    overlap_threshold: float = 0.5
    stuff_area_threshold: int = 4096
    score_threshold: float = 0.5

    def __call__(
        self,
        raw: dict[str, np.ndarray],
        geometry: Geometry,
        scores: np.ndarray,
        classes: np.ndarray,
        valid: np.ndarray,
        masks: BoxMasks | None,
        names: np.ndarray,
    ) -> dict[str, Any]:
        """``{"segment_map", "segments"}`` for :class:`~d2ov_core.detections.Detections` (nothing
        when the outputs have no ``sem_seg``)."""
        if "sem_seg" not in raw:
            return {}
        if masks is None:
            raise ValueError("postprocess: a panoptic model's outputs need masks")
        H, W = geometry.original_size
        h, w = geometry.input_size
        sem_seg = np.asarray(raw["sem_seg"], np.float32)
        logits: np.ndarray = sem_seg.reshape(sem_seg.shape[-3:])
        div = self.size_divisibility
        padded_size = geometry.padded_size or (h, w)
        padded = tuple(-(-int(n) // div) * div for n in padded_size)  # what the graph pads to
        if (int(logits.shape[1]) * self.stride, int(logits.shape[2]) * self.stride) != padded:
            raise IRError(
                f"the IR's sem_seg output {tuple(logits.shape)} at stride {self.stride} does not cover "
                f"the {h}x{w} input padded to {padded[0]}x{padded[1]}: its metadata does not describe its "
                "graph (convert it again)"
            )
        semantic = sem_seg_postprocess(logits, (h, w), (H, W), stride=self.stride)
        use = np.flatnonzero(valid & (scores >= self.score_threshold))
        segment_map, info = combine_semantic_and_instance_outputs(
            scores[use],
            classes[use],
            masks.subset(use),
            semantic,
            self.overlap_threshold,
            self.stuff_area_threshold,
            self.score_threshold,
        )
        return {"segment_map": segment_map, "segments": describe_segments(segment_map, info, names, self.stuff_classes)}


def describe_segments(
    panoptic_seg: np.ndarray,
    info: list[dict[str, Any]],
    labels: Sequence[str] | np.ndarray,
    stuff_classes: Sequence[str],
) -> tuple[Segment, ...]:
    """Detectron2's ``segments_info`` as :class:`~d2ov_core.runtime.detections.Detections` carries it:
    a :class:`~d2ov_core.runtime.detections.Segment` per segment, the class name from ``labels``
    (things) or ``stuff_classes`` (stuff), the area counted on ``panoptic_seg``."""
    areas = np.bincount(np.asarray(panoptic_seg).reshape(-1), minlength=len(info) + 1)
    out = []
    for seg in info:
        cat = int(seg["category_id"])
        names = labels if seg["isthing"] else stuff_classes
        out.append(
            Segment(
                id=int(seg["id"]),
                label=str(names[cat]) if 0 <= cat < len(names) else f"class_{cat}",
                category_id=cat,
                isthing=bool(seg["isthing"]),
                score=float(seg["score"]) if seg["isthing"] else None,
                area=int(areas[seg["id"]]),
            )
        )
    return tuple(out)


def compare_panoptic(ref: Detections, cand: Detections) -> dict[str, Any]:
    """Segment matching of two panoptic maps of the same image, for ``verify``: a candidate segment
    matches a reference segment of the same class (thing or stuff) when their IoU exceeds 0.5 (then
    it is the only one that can, as in COCO's panoptic quality); returned are the segment counts,
    the matched segments' smallest and mean IoU and the share of pixels on which the two maps agree
    (same matched segment, or no segment in both): the ``segments_*``, ``*_segment_iou`` and
    ``pixel_agreement`` fields of :class:`~d2ov_core.measure.verify.Comparison`."""
    if ref.segment_map is None or cand.segment_map is None:
        raise ValueError("compare_panoptic: both results need a panoptic map")
    a, b = ref.segment_map.astype(np.int64), cand.segment_map.astype(np.int64)
    na, nb = len(ref.segments), len(cand.segments)
    joint = np.bincount((a * (nb + 1) + b).reshape(-1), minlength=(na + 1) * (nb + 1)).reshape(na + 1, nb + 1)
    area_a, area_b = joint.sum(axis=1), joint.sum(axis=0)
    ious, agree = [], int(joint[0, 0])
    for sa in ref.segments:
        for sb in cand.segments:
            if (sa.isthing, sa.category_id) != (sb.isthing, sb.category_id):
                continue
            inter = int(joint[sa.id, sb.id])
            iou = inter / int(area_a[sa.id] + area_b[sb.id] - inter) if inter else 0.0
            if iou > 0.5:
                ious.append(iou)
                agree += inter
    return {
        "segments_reference": na,
        "segments_candidate": nb,
        "segments_matched": len(ious),
        "min_segment_iou": min(ious, default=1.0 if na == nb == 0 else 0.0),
        "mean_segment_iou": float(np.mean(ious)) if ious else (1.0 if na == nb == 0 else 0.0),
        "pixel_agreement": float(agree / max(a.size, 1)),
    }
