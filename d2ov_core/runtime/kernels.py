"""Postprocessing loops compiled with numba (the ``fast`` extra), each the same computation as a
numpy path beside it, done one element at a time in machine code instead of numpy calls:

  * :func:`peaks`: the keypoint peak search of :mod:`d2ov_core.runtime.keypoints` (14 ms instead of
    150 for 100 people), the same float32 arithmetic, so the same pixels;
  * :func:`labels_banded`: the argmax over classes of semantic logits resized by banded weights, with
    the pixels where classes come within the rounding bound listed (the product and the check of
    ``_argmax_banded`` in the semantic postprocessing).

Imported through :mod:`~d2ov_core.runtime.native` on first use, only when numba is installed.
Compiled on first use (about 2 s), cached on disk beside this file or in the user's cache when
either is writable (numba's cache), else compiled again in each process.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["peaks", "labels_banded"]


def _jit(function):
    """``numba.njit`` without the GIL, cached on disk when numba finds a writable place for it
    (a Space's user may have none: then compiled in each process, not an error)."""
    try:
        return numba.njit(cache=True, nogil=True)(function)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(function)


@_jit
def _overshoot(weights, first, last):
    """The largest sum of negative weights over outputs ``first .. last - 1``: a resize along that
    axis exceeds its input's maximum (falls below its minimum) by at most that times the range."""
    most = 0.0
    for o in range(first, last):
        s = 0.0
        for t in range(4):
            if weights[o, t] < 0:
                s -= weights[o, t]
        most = max(most, s)
    return most


@_jit
def _runs(index, weights, first, count):
    """The outputs ``first .. first + count - 1`` in runs that read the same four inputs: ``(R + 1,)``
    offsets from ``first`` where each run starts (and the end), and each run's smallest and largest
    weight of each tap, ``(R, 4)`` float64 each."""
    starts = np.empty(count + 1, np.int64)
    low, high = np.empty((count, 4)), np.empty((count, 4))
    runs = -1
    for o in range(first, first + count):
        new = o == first
        for t in range(4):
            new = new or index[o, t] != index[o - 1, t]
        if new:
            runs += 1
            starts[runs] = o - first
            for t in range(4):
                low[runs, t] = high[runs, t] = weights[o, t]
        for t in range(4):
            low[runs, t] = min(low[runs, t], weights[o, t])
            high[runs, t] = max(high[runs, t], weights[o, t])
    starts[runs + 1] = count
    return starts[: runs + 2], low[: runs + 1], high[: runs + 1]


@_jit
def _kept(index, weights, first, runs, top, bottom, floor, out):
    """Write into ``out`` the outputs (taps from row ``first``, in ``runs`` (:func:`_runs`)) whose
    bound (each tap's weight times ``top`` of its input if positive, else ``bottom``) reaches
    ``floor``; return how many. A run is skipped whole when a bound of all its outputs (each tap's
    largest product at its run's extreme weights) falls short."""
    starts, low, high = runs
    kept = 0
    for run in range(len(starts) - 1):
        a, b = first + starts[run], first + starts[run + 1]
        bound = 0.0
        for t in range(4):
            hi, lo = top[index[a, t]], bottom[index[a, t]]
            bound += max(max(low[run, t] * hi, high[run, t] * hi), max(low[run, t] * lo, high[run, t] * lo))
        if bound < floor:
            continue
        for o in range(a, b):
            bound = 0.0
            for t in range(4):
                w = np.float64(weights[o, t])
                bound += w * (top[index[o, t]] if w >= 0 else bottom[index[o, t]])
            if bound >= floor:
                out[kept] = o - first
                kept += 1
    return kept


@_jit
def _widened(high, low, overshoot, top, bottom):
    """``top``/``bottom`` := ``high``/``low`` widened by ``overshoot`` times their range, float64."""
    for c in range(len(high)):
        spread = overshoot * (np.float64(high[c]) - np.float64(low[c]))
        top[c] = high[c] + spread
        bottom[c] = low[c] - spread


@_jit
def peaks(maps, index_y, weights_y, start_y, index_x, weights_x, start_x, pos, peak):
    """Each map's largest resized pixel: ``pos[i, j]`` its row-major index in box ``i``'s
    ``(oh, ow)`` map (the first on ties), ``peak[i, j]`` its float32 value.

    ``maps`` ``(N, K, S, S)`` float32; box ``i``'s taps are rows ``start_y[i] .. start_y[i + 1]``
    of ``index_y``/``weights_y`` (``(sum oh, 4)``) and the same along x. A map with an inf or nan
    logit is computed whole (no bound holds; nan is the largest, as in PyTorch).

    Otherwise, as the numpy search: a lower bound (``floor``) is the pixel over the largest logit;
    columns are kept whose bound from the input columns' extremes (plus the y resize's overshoot)
    reaches it, then rows whose bound from the extremes of the input columns those columns read
    does; then the x pass over the input rows read, rows dropped whose bound from its extremes falls
    short, and the kept pixels computed: four taps along x then four along y, in tap order, float32.
    ``slack`` (1e-5 of the largest |logit|) covers float32 rounding against the float64 bounds.
    """
    n, k, s_h, s_w = maps.shape
    high_c, low_c, nan_c = np.empty(s_w, np.float32), np.empty(s_w, np.float32), np.empty(s_w, np.float32)
    high_r, low_r = np.empty(s_h, np.float32), np.empty(s_h, np.float32)
    top_c, bottom_c = np.empty(s_w), np.empty(s_w)
    top_r, bottom_r = np.empty(s_h), np.empty(s_h)
    for i in range(n):
        y0, x0 = start_y[i], start_x[i]
        oh, ow = start_y[i + 1] - y0, start_x[i + 1] - x0
        over_x, over_y = _overshoot(weights_x, x0, x0 + ow), _overshoot(weights_y, y0, y0 + oh)
        ys, xs = np.empty(oh, np.int64), np.empty(ow, np.int64)
        runs_y, runs_x = _runs(index_y, weights_y, y0, oh), _runs(index_x, weights_x, x0, ow)
        along = np.empty((s_h, ow), np.float32)
        for j in range(k):
            m = maps[i, j]
            # the input columns' extremes; ``nan_c`` stays 0 unless a logit is inf or nan
            for c in range(s_w):
                high_c[c] = low_c[c] = m[0, c]
                nan_c[c] = m[0, c] - m[0, c]
            for r in range(1, s_h):
                for c in range(s_w):
                    v = m[r, c]
                    high_c[c] = v if v > high_c[c] else high_c[c]
                    low_c[c] = v if v < low_c[c] else low_c[c]
                    nan_c[c] += v - v
            whole = False
            for c in range(s_w):
                whole = whole or nan_c[c] != 0
            floor = 0.0
            if whole:
                for y in range(oh):
                    ys[y] = y
                for x in range(ow):
                    xs[x] = x
                rows, cols = oh, ow
            else:
                # the largest logit's cell and the largest |logit|
                best_c, size = 0, 0.0
                for c in range(s_w):
                    if high_c[c] > high_c[best_c]:
                        best_c = c
                    size = max(size, abs(np.float64(high_c[c])), abs(np.float64(low_c[c])))
                best_r = 0
                while m[best_r, best_c] != high_c[best_c]:
                    best_r += 1
                # floor: the output pixel over that cell, computed exactly
                ny = y0 + min(int((best_r + 0.5) * oh / s_h), oh - 1)
                nx = x0 + min(int((best_c + 0.5) * ow / s_w), ow - 1)
                value = np.float32(0.0)
                for t in range(4):
                    r = index_y[ny, t]
                    a = m[r, index_x[nx, 0]] * weights_x[nx, 0]
                    for u in range(1, 4):
                        a += m[r, index_x[nx, u]] * weights_x[nx, u]
                    value = a * weights_y[ny, 0] if t == 0 else value + a * weights_y[ny, t]
                floor = np.float64(value) - (1e-5 * size + 1e-30)
                _widened(high_c, low_c, over_y, top_c, bottom_c)
                cols = _kept(index_x, weights_x, x0, runs_x, top_c, bottom_c, floor, xs)
                # the input rows' extremes over the input columns the kept columns read
                c0, c1 = index_x[x0 + xs[0], 0], index_x[x0 + xs[cols - 1], 3]
                for r in range(s_h):
                    h = m[r, c0]
                    low = h
                    for c in range(c0 + 1, c1 + 1):
                        v = m[r, c]
                        h = v if v > h else h
                        low = v if v < low else low
                    high_r[r] = h
                    low_r[r] = low
                _widened(high_r, low_r, over_x, top_r, bottom_r)
                rows = _kept(index_y, weights_y, y0, runs_y, top_r, bottom_r, floor, ys)
            # along x: the input rows the kept rows read, at the kept columns
            r0, r1 = index_y[y0 + ys[0], 0], index_y[y0 + ys[rows - 1], 3]
            for r in range(r0, r1 + 1):
                for q in range(cols):
                    x = x0 + xs[q]
                    a = m[r, index_x[x, 0]] * weights_x[x, 0]
                    for u in range(1, 4):
                        a += m[r, index_x[x, u]] * weights_x[x, u]
                    along[r, q] = a
                if not whole:  # its extremes: a bound for each output row
                    h = along[r, 0]
                    low = h
                    for q in range(1, cols):
                        h = along[r, q] if along[r, q] > h else h
                        low = along[r, q] if along[r, q] < low else low
                    top_r[r] = h
                    bottom_r[r] = low
            best, where = np.float32(0.0), -1
            for p in range(rows):
                y = y0 + ys[p]
                if not whole:
                    bound = 0.0
                    for t in range(4):
                        w = np.float64(weights_y[y, t])
                        bound += w * (top_r[index_y[y, t]] if w >= 0 else bottom_r[index_y[y, t]])
                    if bound < floor:
                        continue
                for q in range(cols):
                    v = along[index_y[y, 0], q] * weights_y[y, 0]
                    for t in range(1, 4):
                        v += along[index_y[y, t], q] * weights_y[y, t]
                    if where < 0 or v > best or (np.isnan(v) and not np.isnan(best)):
                        best, where = v, ys[p] * ow + xs[q]
            pos[i, j] = where
            peak[i, j] = best


@_jit
def labels_banded(logits, w, rows_at, rows_w, cols_at, cols_w, near, labels, close_at, close_classes):
    """Class labels of ``logits[:, :, :w]`` (``logits`` ``(C, h, W0)`` float32, C-contiguous)
    resized by banded weights, and the pixels where more than one class is ``near`` the best;
    returns how many those are.

    Output row ``Y`` is ``sum_j rows_w[Y, j] * (logits resized along x)[rows_at[Y, j]]`` and column
    ``X`` ``sum_j cols_w[X, j] * logits[..., cols_at[X, j]]`` (zero weights pad the taps). Each
    pixel's label is its first largest class (``labels`` ``(H, W)``); where another class is
    within ``near`` of the largest, the pixel goes to ``close_at[n] = (Y, X)`` with
    ``close_classes[n]`` the classes within it, while ``n`` is below ``len(close_at)`` (the count
    returned goes on). The x pass runs a logit row at a time over all classes, kept for the few
    output rows that read it."""
    c = logits.shape[0]
    rows, cols = labels.shape
    ring_size = 2 * rows_at.shape[1] + 2  # rows a few output rows apart read at most this many
    ring = np.empty((ring_size, c, cols), np.float32)
    ring_row = np.full(ring_size, -1, np.int64)
    row_in = np.empty((w, c), np.float32)
    along = np.empty((cols, c), np.float32)
    values = np.empty((c, cols), np.float32)
    best = np.empty(cols, np.float32)
    arg = np.empty(cols, np.int64)
    count = np.empty(cols, np.int64)
    close = 0
    for y in range(rows):
        for j in range(rows_at.shape[1]):
            r = rows_at[y, j]
            slot = r % ring_size
            if ring_row[slot] == r:
                continue
            for k in range(c):  # the logit row, classes last: the x pass runs over them
                for x in range(w):
                    row_in[x, k] = logits[k, r, x]
            for x in range(cols):
                first, weight = row_in[cols_at[x, 0]], cols_w[x, 0]
                for k in range(c):
                    along[x, k] = first[k] * weight
                for t in range(1, cols_at.shape[1]):
                    tap, weight = row_in[cols_at[x, t]], cols_w[x, t]
                    for k in range(c):
                        along[x, k] += tap[k] * weight
            for k in range(c):
                for x in range(cols):
                    ring[slot, k, x] = along[x, k]
            ring_row[slot] = r
        for k in range(c):  # the y pass, then the best class and how many are near it
            out, first, weight = values[k], ring[rows_at[y, 0] % ring_size, k], rows_w[y, 0]
            for x in range(cols):
                out[x] = first[x] * weight
            for j in range(1, rows_at.shape[1]):
                tap, weight = ring[rows_at[y, j] % ring_size, k], rows_w[y, j]
                for x in range(cols):
                    out[x] += tap[x] * weight
        for x in range(cols):
            best[x] = values[0, x]
            arg[x] = 0
            count[x] = 0
        for k in range(1, c):
            out = values[k]
            for x in range(cols):
                greater = out[x] > best[x]
                best[x] = out[x] if greater else best[x]
                arg[x] = k if greater else arg[x]
        for k in range(c):
            out = values[k]
            for x in range(cols):
                count[x] += out[x] >= best[x] - near
        for x in range(cols):
            labels[y, x] = arg[x]
            if count[x] > 1:
                if close < len(close_at):
                    close_at[close, 0] = y
                    close_at[close, 1] = x
                    for k in range(c):
                        close_classes[close, k] = values[k, x] >= best[x] - near
                close += 1
    return close
