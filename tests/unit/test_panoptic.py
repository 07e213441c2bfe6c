"""Panoptic FPN's numpy postprocessing against Detectron2's own ``sem_seg_postprocess`` and
``combine_semantic_and_instance_outputs`` on the same inputs."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from d2ov_core.export import compat
from d2ov_core.runtime import panoptic as P
from d2ov_core.runtime.panoptic import (
    _resize_rows,
    _taps,
    bilinear_matrix,
    combine_semantic_and_instance_outputs,
    sem_seg_postprocess,
)
from d2ov_core.runtime.postprocess import BoxMasks, paste_box_masks
from d2ov_core.runtime.preprocess import Geometry

from ..conftest import ROOT

compat.apply()
import torch  # noqa: E402
from detectron2.layers.mask_ops import paste_masks_in_image as d2_paste_masks  # noqa: E402
from detectron2.modeling.meta_arch.panoptic_fpn import combine_semantic_and_instance_outputs as d2_combine  # noqa: E402
from detectron2.modeling.postprocessing import sem_seg_postprocess as d2_sem_seg_postprocess  # noqa: E402
from detectron2.structures import Instances  # noqa: E402

# ---------------------------------------------------------------------------------------------
# combine_semantic_and_instance_outputs


def _shape_mask(rng, h, w):
    """A random rectangle or ellipse, partly outside the image at times."""
    cy, cx = rng.uniform(-5, h + 5), rng.uniform(-5, w + 5)
    ry, rx = rng.uniform(1, h / 2), rng.uniform(1, w / 2)
    yy, xx = np.mgrid[0:h, 0:w]
    if rng.random() < 0.5:
        return (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def _semantic(rng, h, w, n_labels):
    """Blobs of several labels (0 among them) painted over a random background label."""
    sem = np.full((h, w), rng.integers(0, n_labels), np.int64)
    for _ in range(rng.integers(0, 8)):
        sem[_shape_mask(rng, h, w)] = rng.integers(0, n_labels)
    return sem


def _case(rng):
    h, w = rng.integers(20, 90, 2)
    n = int(rng.integers(0, 12))
    masks = np.stack([_shape_mask(rng, h, w) for _ in range(n)]) if n else np.zeros((0, h, w), bool)
    if n >= 2:
        masks[rng.integers(0, n)] = False  # an empty mask
    if n >= 3:  # a mask inside an earlier (higher-scored after sorting: duplicate it and shrink) one
        j, k = rng.choice(n, 2, replace=False)
        masks[k] = masks[j] & _shape_mask(rng, h, w)
    scores = rng.permutation(np.linspace(0.05, 0.99, n)).astype(np.float32)  # untied
    scores += rng.uniform(0, 0.01, n).astype(np.float32)
    classes = rng.integers(0, 80, n)
    return scores, classes, masks, _semantic(rng, h, w, int(rng.integers(1, 7)))


def _d2(scores, classes, masks, semantic, *thresholds):
    inst = Instances(tuple(semantic.shape))
    inst.scores = torch.from_numpy(scores)
    inst.pred_classes = torch.from_numpy(classes)
    inst.pred_masks = torch.from_numpy(masks)
    pan, info = d2_combine(inst, torch.from_numpy(semantic), *thresholds)
    return pan.numpy(), info


def _assert_same(got, ref):
    pan, info = got
    ref_pan, ref_info = ref
    assert pan.dtype == np.int32 and np.array_equal(pan, ref_pan)
    assert len(info) == len(ref_info)
    for a, b in zip(info, ref_info):
        assert list(a) == list(b)
        for key in a:
            assert type(a[key]) is type(b[key]), key
            if key == "score":
                assert abs(a[key] - b[key]) <= 1e-6
            else:
                assert a[key] == b[key], key


THRESHOLDS = [
    (0.5, 4096, 0.5),
    (0.5, 4096, 0.0),
    (0.5, 10, 0.5),
    (0.5, 1, 0.0),
    (0.5, 0, 0.3),
    (0.2, 50, 0.0),
    (1.0, 0, 0.0),
]


@pytest.mark.parametrize("thresholds", THRESHOLDS)
def test_combine_matches_detectron2_on_random_cases(thresholds):
    rng = np.random.default_rng(sum(int(1000 * t) for t in thresholds))
    for _ in range(60):
        case = _case(rng)
        _assert_same(combine_semantic_and_instance_outputs(*case, *thresholds), _d2(*case, *thresholds))


def test_combine_edge_cases_match_detectron2():
    rng = np.random.default_rng(7)
    h, w = 64, 80
    sem = _semantic(rng, h, w, 5)
    big = np.zeros((h, w), bool)
    big[5:50, 5:60] = True
    inside = np.zeros((h, w), bool)
    inside[10:20, 10:20] = True
    half = np.zeros((h, w), bool)
    half[40:60, 50:70] = True  # a corner under `big`
    cases = {
        "no instances": (np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros((0, h, w), bool)),
        "all below threshold": (np.array([0.4, 0.1], np.float32), np.array([1, 2]), np.stack([big, inside])),
        "empty mask": (np.array([0.9, 0.8], np.float32), np.array([1, 2]), np.stack([np.zeros((h, w), bool), big])),
        "covered mask": (np.array([0.9, 0.8, 0.7], np.float32), np.array([1, 2, 3]), np.stack([big, inside, half])),
        "all things": (np.array([0.9], np.float32), np.array([4]), np.ones((1, h, w), bool)),
    }
    for _name, (scores, classes, masks) in cases.items():
        for thresholds in THRESHOLDS:
            got = combine_semantic_and_instance_outputs(scores, classes, masks, sem, *thresholds)
            _assert_same(got, _d2(scores, classes, masks, sem, *thresholds))
    pan, info = combine_semantic_and_instance_outputs(*cases["covered mask"], sem, 0.5, 0, 0.5)
    assert [s["instance_id"] for s in info if s["isthing"]] == [0, 2]  # `inside` is fully taken: skipped
    pan, info = combine_semantic_and_instance_outputs(*cases["all below threshold"], sem, 0.5, 10**9, 0.5)
    assert not pan.any() and info == []


def test_combine_orders_equal_scores_by_index():
    h, w = 10, 10
    masks = np.zeros((3, h, w), bool)
    masks[:, 2:8, 2:8] = True
    pan, info = combine_semantic_and_instance_outputs(
        np.array([0.5, 0.9, 0.9], np.float32), np.array([1, 2, 3]), masks, np.zeros((h, w), np.int64), 0.5, 0, 0.0
    )
    assert [s["instance_id"] for s in info] == [1]  # the first of the tied 0.9s wins; the others overlap


def test_combine_says_what_shapes_it_expected():
    with pytest.raises(ValueError, match=r"masks \(N, H, W\).*found \(2,\), \(2,\), \(2, 5, 5\) and \(4, 4\)"):
        combine_semantic_and_instance_outputs(
            np.ones(2), np.ones(2), np.ones((2, 5, 5), bool), np.zeros((4, 4)), 0.5, 0, 0.5
        )


def _counting(masks):
    """``masks`` as :class:`BoxMasks` in tight boxes, and the list of masks it was asked to make."""
    made = []
    dense = BoxMasks.from_dense(masks)
    return BoxMasks(dense.image_size, dense.bounds, lambda i: made.append(i) or dense.crop(i)), made


def test_combine_of_box_masks_stops_when_nothing_more_can_be_added():
    """An instance covering the image first: with overlap_threshold < 1 every later one is fully
    taken, so the merge stops and makes no other mask; at 1.0 Detectron2 gives them empty segments."""
    rng = np.random.default_rng(11)
    h, w = 40, 50
    masks = np.stack([np.ones((h, w), bool)] + [_shape_mask(rng, h, w) for _ in range(5)])
    scores = np.array([0.99, 0.9, 0.8, 0.7, 0.6, 0.3], np.float32)
    classes = np.arange(6)
    sem = _semantic(rng, h, w, 4)
    for thresholds in [(0.5, 10, 0.5), (0.99, 0, 0.0), (1.0, 0, 0.0), (1.0, 10, 0.5)]:
        box_masks, made = _counting(masks)
        got = combine_semantic_and_instance_outputs(scores, classes, box_masks, sem, *thresholds)
        _assert_same(got, _d2(scores, classes, masks, sem, *thresholds))
        if thresholds[0] < 1:
            assert made == [0] and [s["instance_id"] for s in got[1] if s["isthing"]] == [0]
        else:
            assert len([s for s in got[1] if s["isthing"]]) == 1 + int((scores[1:] >= thresholds[2]).sum())


def test_combine_of_box_masks_skips_instances_whose_box_is_taken_without_making_them():
    h, w = 60, 80
    big = np.zeros((h, w), bool)
    big[5:40, 10:60] = True
    inside = np.zeros((h, w), bool)
    inside[10:20, 20:30] = True  # box inside `big`: skipped, never pasted
    edge = np.zeros((h, w), bool)
    edge[30:60, 50:80] = True  # at the image's bottom-right corner, partly under `big`
    empty = np.zeros((h, w), bool)
    masks = np.stack([big, inside, edge, empty])
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    sem = np.random.default_rng(3).integers(0, 3, (h, w))
    for thresholds in THRESHOLDS:
        box_masks, made = _counting(masks)
        got = combine_semantic_and_instance_outputs(scores, np.arange(4), box_masks, sem, *thresholds)
        _assert_same(got, _d2(scores, np.arange(4), masks, sem, *thresholds))
        if thresholds[0] < 1 and thresholds[2] <= 0.6:
            assert made == [0, 2]  # `inside` skipped unmade, `empty` has an empty box


@pytest.mark.parametrize("seed", range(3))
def test_combine_of_pasted_box_masks_matches_detectron2(seed):
    """Masks pasted in their boxes (boxes over the borders, outside, tiny, empty) merge as
    Detectron2 merges its own pasted full-image masks."""
    rng = np.random.default_rng(seed)
    h, w, n = 90, 120, 40
    x0, y0 = rng.uniform(-30, w, n), rng.uniform(-30, h, n)
    boxes = np.stack([x0, y0, x0 + rng.uniform(0.5, w / 1.5, n), y0 + rng.uniform(0.5, h / 1.5, n)], 1)
    boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)  # as detector_postprocess clips
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 0.25)  # and drops empty boxes
    boxes[0] = [w - 3, h - 3, w, h]  # the bottom-right corner
    boxes[1] = [0, 0, w, h]  # the whole image
    probs = (rng.uniform(0, 1, (n, 28, 28)) ** 2 * 1.5).astype(np.float32)
    scores = rng.permutation(np.linspace(0.1, 0.99, n)).astype(np.float32)
    classes = rng.integers(0, 80, n)
    sem = _semantic(rng, h, w, 6)
    ref_masks = d2_paste_masks(torch.from_numpy(probs), torch.from_numpy(boxes), (h, w), 0.5).numpy()
    box_masks = paste_box_masks(probs, boxes, (h, w), 0.5)
    assert np.array_equal(box_masks.dense(), ref_masks)  # measured: equal on these
    for thresholds in THRESHOLDS:
        got = combine_semantic_and_instance_outputs(
            scores, classes, paste_box_masks(probs, boxes, (h, w)), sem, *thresholds
        )
        _assert_same(got, _d2(scores, classes, ref_masks, sem, *thresholds))


def test_combine_all_stuff_and_odd_semantic_ids_match_detectron2():
    """No instance, no "things" label; semantic ids beyond the table path (large, negative) too."""
    rng = np.random.default_rng(5)
    h, w = 30, 40
    none = (np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros((0, h, w), bool))
    for sem in (_semantic(rng, h, w, 5) + 1, np.full((h, w), 3), _semantic(rng, h, w, 4) * 30000 - 1):
        for thresholds in THRESHOLDS:
            _assert_same(combine_semantic_and_instance_outputs(*none, sem, *thresholds), _d2(*none, sem, *thresholds))


# ---------------------------------------------------------------------------------------------
# sem_seg_postprocess


def _smooth_logits(rng, c, hp, wp):
    """Logits like a segmentation head's: upsampled low-resolution noise, so classes form regions."""
    low = rng.normal(0, 3, (1, c, hp // 4 + 1, wp // 4 + 1)).astype(np.float32)
    up = torch.nn.functional.interpolate(torch.from_numpy(low), size=(hp, wp), mode="bilinear", align_corners=False)
    return up[0].numpy() + rng.normal(0, 0.05, (c, hp, wp)).astype(np.float32)


SIZES = [  # C, padded (Hp, Wp), input (h, w), output (H, W)
    (3, (64, 96), (61, 90), (122, 180)),  # x2 up
    (3, (64, 96), (60, 93), (37, 51)),  # down
    (54, (128, 160), (120, 150), (300, 200)),  # up in y, up in x
    (54, (128, 160), (127, 155), (90, 400)),  # down in y, up in x
    (54, (96, 128), (96, 128), (96, 128)),  # same size: a copy
]


@pytest.mark.parametrize("c,padded,input_size,output_size", SIZES)
def test_sem_seg_postprocess_matches_detectron2(c, padded, input_size, output_size):
    rng = np.random.default_rng(c + sum(output_size))
    logits = _smooth_logits(rng, c, *padded)
    ref = d2_sem_seg_postprocess(torch.from_numpy(logits), input_size, *output_size).argmax(0).numpy()
    got = sem_seg_postprocess(logits, input_size, output_size)
    assert got.dtype == np.int64 and got.shape == ref.shape == output_size
    agreement = float((got == ref).mean())
    # differences only where two classes' interpolated logits tie to float32 rounding (measured: none)
    assert agreement >= 0.9999, agreement


def test_sem_seg_postprocess_at_panoptic_fpn_size_in_blocks():
    """54 classes at 800 x 1216 padded, 800 x 1199 input, to a 1333 x 2000 original."""
    rng = np.random.default_rng(0)
    logits = _smooth_logits(rng, 54, 800, 1216)
    ref = d2_sem_seg_postprocess(torch.from_numpy(logits), (800, 1199), 1333, 2000).argmax(0).numpy()
    got = sem_seg_postprocess(logits, (800, 1199), (1333, 2000))
    assert float((got == ref).mean()) >= 0.9999


STRIDED = [  # C, logits (hs, ws) at stride 4, input (h, w), output (H, W)
    (3, (16, 24), (61, 90), (122, 180)),
    (5, (16, 24), (60, 93), (37, 51)),
    (54, (32, 40), (127, 155), (90, 400)),
    (54, (24, 32), (96, 128), (96, 128)),
    (54, (200, 304), (800, 1199), (1333, 2000)),  # COCO-sized: 800 x 1216 padded, a 2000 x 1333 photo
]


@pytest.mark.parametrize("c,small,input_size,output_size", STRIDED)
def test_sem_seg_postprocess_with_the_heads_upsampling_matches_detectron2(c, small, input_size, output_size):
    """The semantic head's x4 upsampling (``F.interpolate(scale_factor=4)``) then Detectron2's
    ``sem_seg_postprocess``, against one pass over the head's stride-4 logits."""
    rng = np.random.default_rng(c + sum(output_size))
    logits = _smooth_logits(rng, c, *small)
    up = torch.nn.functional.interpolate(
        torch.from_numpy(logits)[None], scale_factor=4, mode="bilinear", align_corners=False
    )[0]
    ref = d2_sem_seg_postprocess(up, input_size, *output_size).argmax(0).numpy()
    got = sem_seg_postprocess(logits, input_size, output_size, stride=4)
    assert got.dtype == np.int64 and got.shape == ref.shape == output_size
    assert float((got == ref).mean()) >= 0.9999
    # the same as upsampling first and resizing then
    np.testing.assert_array_equal(got, sem_seg_postprocess(up.numpy(), input_size, output_size))


def _region_logits(rng, c, hs, ws, regions=8):
    """Logits like a trained head's on a photo: a few confident regions (Voronoi cells), noise."""
    low = (max(2, hs // 4), max(2, ws // 4))
    seeds = rng.uniform(0, 1, (regions, 2)) * low
    labels = rng.integers(0, c, regions)
    yy, xx = np.mgrid[0 : low[0], 0 : low[1]]
    cell = np.argmin((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2, axis=-1)
    onehot = np.zeros((c, *low), np.float32)
    onehot[labels[cell], yy, xx] = 6
    up = torch.nn.functional.interpolate(
        torch.from_numpy(onehot + rng.normal(0, 1, onehot.shape).astype(np.float32))[None],
        size=(hs, ws),
        mode="bilinear",
        align_corners=False,
    )[0].numpy()
    return up + rng.normal(0, 0.3, up.shape).astype(np.float32)


def _logits_of(kind, rng, c, hs, ws):
    if kind == "regions":
        return _region_logits(rng, c, hs, ws)
    if kind == "tied classes":  # class 2 a copy of class 0: exact ties everywhere class 0 leads
        x = _region_logits(rng, c, hs, ws)
        x[2] = x[0]
        return x
    if kind == "integers":  # many exact ties between different maps
        return rng.integers(0, 3, (c, hs, ws)).astype(np.float32)
    if kind == "constant":
        return np.full((c, hs, ws), 1.5, np.float32)
    if kind == "one class":
        return _region_logits(rng, 1, hs, ws)
    if kind == "noise":
        return rng.normal(0, 3, (c, hs, ws)).astype(np.float32)
    x = _region_logits(rng, c, hs, ws)  # non-finite
    x[1, 3, 4] = {"nan": np.nan, "inf": np.inf}[kind]
    return x


KINDS = ["regions", "tied classes", "integers", "constant", "one class", "noise", "nan", "inf"]


#: (head stride, logits' size, input size, output size): upsampling by 4 then down or up, or none
SIZES = [
    (4, (20, 28), (77, 109), (48, 64)),
    (4, (16, 24), (61, 90), (122, 180)),
    (1, (64, 96), (60, 93), (37, 51)),
    (1, (40, 40), (40, 40), (97, 61)),
]


def _fast_path_case(kind, stride, small, input_size, output_size):
    """``(logits, ty, tx, t1y, t1x, labels of resizing every class map twice)`` for a fast path."""
    logits = _logits_of(kind, np.random.default_rng(len(kind) + small[0]), 7, *small)
    h, w = input_size
    ty, tx = _taps(h, output_size[0]), _taps(w, output_size[1])
    if stride == 1:
        return logits, ty, tx, None, None, P._sem_seg_dense(logits[:, :h, :w], ty, tx, None, None)
    t1y = tuple(t[:h] for t in _taps(small[0], small[0] * stride))
    t1x = tuple(t[:w] for t in _taps(small[1], small[1] * stride))
    return logits, ty, tx, t1y, t1x, P._sem_seg_dense(logits, ty, tx, t1y, t1x)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stride, small, input_size, output_size", SIZES)
def test_pruned_argmax_is_the_whole_resize_bit_for_bit(kind, stride, small, input_size, output_size, monkeypatch):
    """Deciding pixels from the logits' windows and computing only the undecided ones' candidates
    gives exactly the labels of resizing every class map (the previous implementation), ties and
    non-finite values included (the pruned path forced even where resizing all would be faster);
    where it does not apply it says so and the whole resize runs."""
    expected = sem_seg_postprocess(
        _logits_of(kind, np.random.default_rng(len(kind) + small[0]), 7, *small), input_size, output_size, stride=stride
    )  # the default shares
    monkeypatch.setattr(P, "_UNDECIDED_SHARE", 1.0)
    monkeypatch.setattr(P, "_DENSE_SHARE", 1e9)
    monkeypatch.setattr(P, "_CHANGE_SHARE", 1.0)
    logits, ty, tx, t1y, t1x, dense = _fast_path_case(kind, stride, small, input_size, output_size)
    pruned = P._argmax_pruned(logits, ty, tx, t1y, t1x)
    if kind in ("nan", "inf"):
        assert pruned is None
    else:
        np.testing.assert_array_equal(pruned, dense)
    np.testing.assert_array_equal(expected, dense)
    if kind == "tied classes":
        assert not (dense == 2).any()  # the first of tied classes, as torch's argmax


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "blas"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stride, small, input_size, output_size", SIZES)
def test_banded_argmax_is_the_whole_resize_bit_for_bit(
    kind, stride, small, input_size, output_size, compiled, monkeypatch
):
    """Every class's map as two banded matrix products (BLAS, or the numba kernel), checked where
    classes come within the rounding bound and settled there exactly, gives exactly the labels of
    resizing every map twice, ties included (small blocks and column chunks forced, so every block and
    chunk edge is crossed); non-finite logits are left to the whole resize."""
    if compiled:
        assert P._kernels() is not None  # numba is in requirements.txt
    else:
        monkeypatch.setattr(P, "_kernels", lambda: None)
    monkeypatch.setattr(P, "_UNDECIDED_SHARE", 1.0)
    monkeypatch.setattr(P, "_BAND_ROWS", 5)
    monkeypatch.setattr(P, "_BAND_COLUMNS", 3)
    monkeypatch.setattr(P, "_BAND_ELEMENTS", small[0] * 7 * 9)  # chunks of 9 columns
    logits, ty, tx, t1y, t1x, dense = _fast_path_case(kind, stride, small, input_size, output_size)
    banded = P._argmax_banded(logits, ty, tx, t1y, t1x)
    if kind in ("nan", "inf"):
        assert banded is None
    else:
        np.testing.assert_array_equal(banded, dense)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "blas"])
@pytest.mark.parametrize("seed", range(2))
def test_fragmented_logits_at_coco_size_take_the_banded_path_and_match_detectron2(seed, compiled, monkeypatch):
    """A random head's logits (a class change every few cells: too many pixels for the pruned path)
    at COCO's size: the banded products (compiled, or BLAS) label them, as Detectron2 does, and only a
    few pixels (where classes come within the rounding bound) are computed exactly."""
    if not compiled:
        monkeypatch.setattr(P, "_kernels", lambda: None)
    rng = np.random.default_rng(seed)
    logits = torch.nn.functional.interpolate(
        torch.from_numpy(rng.normal(0, 3, (54, 50, 68)).astype(np.float32))[None], size=(200, 272), mode="bilinear"
    )[0].numpy()
    settled, banded = [], []
    exact, band = P._exact_argmax, P._argmax_banded
    monkeypatch.setattr(P, "_argmax_banded", lambda *a: banded.append(1) or band(*a))
    monkeypatch.setattr(P, "_exact_argmax", lambda *a: settled.append(len(a[3])) or exact(*a))
    monkeypatch.setattr(P, "_sem_seg_dense", None)  # must not be needed
    got = sem_seg_postprocess(logits, (800, 1067), (480, 640), stride=4)
    up = torch.nn.functional.interpolate(
        torch.from_numpy(logits)[None], scale_factor=4, mode="bilinear", align_corners=False
    )[0]
    ref = d2_sem_seg_postprocess(up, (800, 1067), 480, 640).argmax(0).numpy()
    assert np.array_equal(got, ref)
    assert banded == [1] and len(settled) == 1 and 0 < settled[0] < 0.01 * 480 * 640, settled


def test_banded_products_run_on_one_blas_thread_and_give_the_others_back(monkeypatch):
    """BLAS's other threads spin and stall when OpenVINO shares the cores: the banded products run on
    one, and the process's BLAS threads are what they were afterwards."""
    from threadpoolctl import threadpool_info

    def blas_threads():
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    before, seen, bands = blas_threads(), [], P._bands
    monkeypatch.setattr(P, "_kernels", lambda: None)  # the BLAS products, not the compiled ones
    monkeypatch.setattr(P, "_bands", lambda *a: seen.append(blas_threads()) or bands(*a))
    logits = _logits_of("noise", np.random.default_rng(0), 7, 20, 28)
    h, w = 77, 109
    t1y = tuple(t[:h] for t in _taps(20, 80))
    t1x = tuple(t[:w] for t in _taps(28, 112))
    assert P._argmax_banded(logits, _taps(h, 48), _taps(w, 64), t1y, t1x) is not None
    assert before and seen and all(s == {1} for s in seen), seen
    assert blas_threads() == before


def test_constant_logits_are_all_the_first_class_at_once(monkeypatch):
    """A head whose every map is one constant (the random INT8 Panoptic FPN's is all zeros): every
    class ties everywhere, so Detectron2's argmax is class 0; no resize is needed to say so."""
    logits = np.zeros((54, 200, 272), np.float32)
    ref = d2_sem_seg_postprocess(
        torch.nn.functional.interpolate(torch.from_numpy(logits)[None], scale_factor=4, mode="bilinear")[0],
        (800, 1067),
        480,
        640,
    ).argmax(0)
    for path in ("_argmax_banded", "_sem_seg_dense", "_exact_argmax"):
        monkeypatch.setattr(P, path, None)  # none of them is called: the pruned path says so at once
    got = sem_seg_postprocess(logits, (800, 1067), (480, 640), stride=4)
    assert got.shape == (480, 640) and np.array_equal(got, ref.numpy()) and not got.any()


@pytest.mark.parametrize("seed", range(3))
def test_sem_seg_postprocess_of_regions_matches_detectron2_at_coco_size(seed):
    """Photo-like logits at COCO's size (480 x 640 photo, 800 x 1067 input, 54 classes at stride 4,
    the benchmark's case): the labels are Detectron2's, and the pruned path decides most pixels."""
    rng = np.random.default_rng(seed)
    logits = _region_logits(rng, 54, 200, 272, regions=15)
    up = torch.nn.functional.interpolate(
        torch.from_numpy(logits)[None], scale_factor=4, mode="bilinear", align_corners=False
    )[0]
    ref = d2_sem_seg_postprocess(up, (800, 1067), 480, 640).argmax(0).numpy()
    got = sem_seg_postprocess(logits, (800, 1067), (480, 640), stride=4)
    assert float((got == ref).mean()) >= 0.99999  # measured: equal


def test_bilinear_matrix_is_torch_bilinear():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 1, 37, 53)).astype(np.float32)
    for oh, ow in ((1, 1), (37, 53), (7, 200), (123, 53), (300, 31), (20, 26)):
        ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=(oh, ow), mode="bilinear", align_corners=False)[
            0, 0
        ].numpy()
        got = bilinear_matrix(37, oh) @ x[0, 0] @ bilinear_matrix(53, ow).T
        np.testing.assert_allclose(got, ref, atol=1e-5)


def test_resize_by_taps_is_the_matrix_product_and_torch():
    rng = np.random.default_rng(2)
    x = rng.normal(0, 3, (5, 30, 41)).astype(np.float32)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(x)[None], size=(77, 19), mode="bilinear", align_corners=False
    )[0].numpy()
    got = _resize_rows(x, _taps(30, 77), _taps(41, 19), 0, 77)
    np.testing.assert_allclose(got, bilinear_matrix(30, 77) @ x @ bilinear_matrix(41, 19).T, atol=1e-5)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    np.testing.assert_array_equal(_resize_rows(x, _taps(30, 77), _taps(41, 19), 10, 20), got[:, 10:20])


def test_sem_seg_postprocess_rejects_non_3d_logits():
    with pytest.raises(ValueError, match=r"expected logits of shape \(C, H, W\), found \(4, 4\)"):
        sem_seg_postprocess(np.zeros((4, 4), np.float32), (4, 4), (8, 8))


def test_module_imports_no_torch():
    code = (
        "import sys, d2ov_core.runtime.panoptic\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'detectron2', 'openvino')]\n"
        "assert not bad, bad\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# the whole panoptic postprocessing of the predictor (raw IR outputs -> Detections) against
# Detectron2's PanopticFPN.inference postprocessing on the same raw outputs


def _raw_outputs(rng, n, input_size, c):
    h, w = input_size
    hp, wp = -(-h // 32) * 32, -(-w // 32) * 32
    x0 = rng.uniform(-10, w - 20, n)
    y0 = rng.uniform(-10, h - 20, n)
    boxes = np.stack([x0, y0, x0 + rng.uniform(2, w / 2, n), y0 + rng.uniform(2, h / 2, n)], 1).astype(np.float32)
    scores = np.sort(rng.uniform(0.05, 1, n)).astype(np.float32)[::-1].copy()
    return {
        "boxes": boxes,
        "scores": scores,
        "classes": rng.integers(0, 3, n),
        "masks": rng.uniform(0, 1, (n, 1, 28, 28)).astype(np.float32) ** 3 * 1.6,
        "sem_seg": rng.normal(0, 1, (c, hp // 4, wp // 4)).astype(np.float32),  # stride 4, as the IR's
        "image_size": np.array([h, w]),
    }


def _detectron2_panoptic(raw, input_size, original_size, params):
    from detectron2.modeling.postprocessing import detector_postprocess
    from detectron2.structures import Boxes

    inst = Instances(tuple(input_size))
    inst.pred_boxes = Boxes(torch.tensor(raw["boxes"]))  # a copy: detector_postprocess scales in place
    inst.scores = torch.as_tensor(raw["scores"])
    inst.pred_classes = torch.as_tensor(raw["classes"])
    inst.pred_masks = torch.as_tensor(raw["masks"])
    det = detector_postprocess(inst, *original_size)
    up = torch.nn.functional.interpolate(
        torch.as_tensor(raw["sem_seg"])[None], scale_factor=4, mode="bilinear", align_corners=False
    )[0]  # the semantic head's last step
    sem = d2_sem_seg_postprocess(up, tuple(input_size), *original_size)
    return d2_combine(
        det, sem.argmax(dim=0), params.overlap_threshold, params.stuff_area_threshold, params.score_threshold
    )


@pytest.mark.parametrize(
    "seed, input_size, original_size",
    [(0, (96, 128), (120, 160)), (1, (200, 150), (100, 75)), (2, (64, 64), (64, 64)), (3, (130, 97), (301, 223))],
)
def test_predictor_postprocess_is_detectron2s_panoptic_inference(seed, input_size, original_size):
    from d2ov_core.runtime.panoptic import PanopticParams
    from d2ov_core.runtime.postprocess import postprocess

    rng = np.random.default_rng(seed)
    raw = _raw_outputs(rng, 25, input_size, 5)
    params = PanopticParams(
        ("things", "a", "b", "c", "d"), stride=4, overlap_threshold=0.5, stuff_area_threshold=300, score_threshold=0.5
    )
    meta = Geometry(original_size, input_size)
    det = postprocess(raw, meta, ["circle", "square", "triangle"], threshold=0.8, combine=params)
    d2_map, d2_info = _detectron2_panoptic(raw, input_size, original_size, params)
    assert np.array_equal(det.segment_map, d2_map.numpy())
    assert len(det.segments) == len(d2_info) > 3 and any(s["isthing"] for s in d2_info)
    for mine, theirs in zip(det.segments, d2_info):
        assert (mine.id, mine.isthing, mine.category_id) == (
            theirs["id"],
            theirs["isthing"],
            theirs["category_id"],
        )
        assert mine.area == int((d2_map == theirs["id"]).sum())
        if theirs["isthing"]:
            assert mine.score == pytest.approx(theirs["score"]) and mine.label in ("circle", "square", "triangle")
        else:
            assert mine.score is None and mine.label == params.stuff_classes[theirs["category_id"]]
    # the listed instances follow the user's threshold; the map the model's own (0.5)
    assert 0 < len(det) <= int((raw["scores"] >= 0.8).sum()) and det.scores.min() >= 0.8
    low = postprocess(raw, meta, ["circle", "square", "triangle"], threshold=0.05, combine=params)
    assert np.array_equal(low.segment_map, det.segment_map) and len(low) > len(det)


def test_panoptic_detections_json_and_checks():
    from d2ov_core.runtime.detections import Detections, rle_decode
    from d2ov_core.runtime.panoptic import PanopticParams
    from d2ov_core.runtime.postprocess import postprocess

    rng = np.random.default_rng(7)
    raw = _raw_outputs(rng, 12, (96, 128), 4)
    det = postprocess(
        raw,
        Geometry((96, 128), (96, 128)),
        ["circle", "square", "triangle"],
        threshold=0.5,
        combine=PanopticParams(("things", "a", "b", "c"), stuff_area_threshold=100),
    )
    doc = det.to_dict()["panoptic"]["segments"]
    assert [s["id"] for s in doc] == list(range(1, len(det.segments) + 1))
    for s in doc:
        assert rle_decode(s["mask"]).sum() == s["area"] == int((det.segment_map == s["id"]).sum())
    assert det[:0].segment_map is det.segment_map  # selecting instances keeps the map
    with pytest.raises(ValueError, match=r"segment_map: expected shape \(96, 128\)"):
        Detections.empty((96, 128)).__class__(**{**_fields(det), "segment_map": det.segment_map[:10]})
    with pytest.raises(ValueError, match="segments: expected ids 1..1 in order"):
        Detections(**{**_fields(det), "segments": [dataclasses.replace(det.segments[0], id=5)]})
    with pytest.raises(ValueError, match=r"segments: expected keys .* \(missing \['area', 'category_id'"):
        Detections(**{**_fields(det), "segments": [{"id": 1, "label": "a", "isthing": True, "score": 0.9}]})
    back = Detections(**{**_fields(det), "segments": [seg.to_dict() for seg in det.segments]})
    assert back.segments == det.segments  # dicts with a Segment's keys are taken as Segments
    with pytest.raises(ValueError, match="segments given without a segment_map"):
        Detections(**{**_fields(det), "segment_map": None})


def _fields(det):
    import dataclasses

    return {f.name: getattr(det, f.name) for f in dataclasses.fields(det)}


def test_verify_compares_panoptic_maps_segment_by_segment():
    from d2ov_core.runtime.detections import Detections
    from d2ov_core.runtime.panoptic import compare_panoptic

    def pan(m, segs):
        d = Detections.empty(m.shape)
        return Detections(
            **{
                **_fields(d),
                "segment_map": m,
                "segments": [
                    {
                        "id": i + 1,
                        "label": lab,
                        "category_id": cat,
                        "isthing": thing,
                        "score": None,
                        "area": int((m == i + 1).sum()),
                    }
                    for i, (lab, cat, thing) in enumerate(segs)
                ],
            }
        )

    a = np.zeros((10, 10), np.int32)
    a[:, :5], a[:, 5:] = 1, 2
    b = a.copy()
    b[0, 5] = 1  # one pixel moves from segment 2 to segment 1
    segs = [("sky", 1, False), ("road", 2, False)]
    c = compare_panoptic(pan(a, segs), pan(b, segs))
    assert c["segments_matched"] == 2 and c["pixel_agreement"] == 0.99
    assert c["min_segment_iou"] == pytest.approx(49 / 50) and c["mean_segment_iou"] == pytest.approx(
        (50 / 51 + 49 / 50) / 2
    )
    other = compare_panoptic(pan(a, segs), pan(b, [("sky", 1, False), ("grass", 3, False)]))  # another class
    assert other["segments_matched"] == 1 and other["pixel_agreement"] == pytest.approx(0.50)


def test_sem_seg_stride_must_describe_the_graph():
    """An IR converted before the graph returned stride-4 logits has none in its metadata (stride 1:
    full-size logits, read as such); logits that do not fit the declared stride are refused."""
    from d2ov_core.errors import IRError
    from d2ov_core.runtime import settings as S
    from d2ov_core.runtime.panoptic import PanopticParams
    from d2ov_core.runtime.postprocess import postprocess

    assert S.SETTINGS["sem_seg_stride"].default == 1
    rng = np.random.default_rng(3)
    raw = _raw_outputs(rng, 10, (96, 128), 5)
    meta = Geometry((96, 128), (96, 128))
    params = PanopticParams(("things", "a", "b", "c", "d"), stuff_area_threshold=100)
    at4 = postprocess(raw, meta, ["circle", "square", "triangle"], combine=params)
    up = torch.nn.functional.interpolate(
        torch.as_tensor(raw["sem_seg"])[None], scale_factor=4, mode="bilinear", align_corners=False
    )[0].numpy()
    full = postprocess(dict(raw, sem_seg=up), meta, ["circle", "square", "triangle"], combine=params._replace(stride=1))
    assert np.array_equal(at4.segment_map, full.segment_map)
    with pytest.raises(
        IRError, match=r"sem_seg output \(5, 96, 128\) at stride 4 does not cover the 96x128 input padded to 96x128"
    ):
        postprocess(dict(raw, sem_seg=up), meta, ["circle", "square", "triangle"], combine=params)
