"""Keypoints: the numpy decoding against Detectron2's own ``heatmaps_to_keypoints``, and keypoints
through Detections, postprocessing, JSON and drawing."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from d2ov_core.export import compat
from d2ov_core.runtime import keypoints as KP
from d2ov_core.runtime.detections import Detections
from d2ov_core.runtime.keypoints import bicubic_matrix, bicubic_taps, heatmaps_to_keypoints
from d2ov_core.runtime.postprocess import postprocess
from d2ov_core.runtime.preprocess import Geometry
from d2ov_core.serve.render import render
from tools.bench_postprocess import keypoint_inputs

from ..conftest import ROOT

compat.apply()
import torch  # noqa: E402
from detectron2.modeling.roi_heads.keypoint_head import heatmaps_to_keypoints as d2_heatmaps_to_keypoints  # noqa: E402

NAMES = ("head", "neck", "hand")
SKELETON = (("head", "neck"), ("neck", "hand"))


def _peaked_maps(rng, n, k, s=56):
    """Logit maps like a trained head's: noise plus one Gaussian peak per keypoint."""
    yy, xx = np.mgrid[0:s, 0:s]
    maps = rng.normal(0, 2, (n, k, s, s)).astype(np.float32)
    for i in range(n):
        for j in range(k):
            cy, cx = rng.uniform(0, s, 2)
            maps[i, j] += 12 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(1, 4) ** 2))
    return maps


#: the two peak searches: numba-compiled (the ``fast`` extra, in requirements.txt) and numpy (without numba)
SEARCHES = pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "numpy"])


@SEARCHES
@pytest.mark.parametrize("seed", range(4))
def test_decoding_matches_detectron2_on_the_same_heatmaps(seed, compiled):
    rng = np.random.default_rng(seed)
    n = 16
    maps = _peaked_maps(rng, n, 17) if seed % 2 == 0 else rng.normal(0, 3, (n, 17, 56, 56)).astype(np.float32)
    x0, y0 = rng.uniform(-20, 400, n), rng.uniform(-20, 400, n)
    sides = np.concatenate([[0.2, 0.9, 1.0, 1.5], rng.uniform(2, 350, n - 4)])  # under 1 px: clamped to 1
    boxes = np.stack([x0, y0, x0 + sides, y0 + rng.permutation(sides)], 1).astype(np.float32)
    ref = d2_heatmaps_to_keypoints(torch.from_numpy(maps), torch.from_numpy(boxes))[:, :, [0, 1, 3]].numpy()
    got = heatmaps_to_keypoints(maps, boxes, compiled=compiled)
    assert got.shape == ref.shape == (n, 17, 3)
    # the same arithmetic as Detectron2: measured 0.0 px apart (the bar was 0.5 px); float32
    # rounding may differ in the last bits only
    np.testing.assert_allclose(got[..., :2], ref[..., :2], rtol=0, atol=1e-3)
    np.testing.assert_allclose(got[..., 2], ref[..., 2], rtol=1e-4)


def _coco_boxes(rng, n, largest=600):
    """Boxes of COCO people sizes in an 800 x 1067 input: sides 20 .. ``largest`` px, over the borders."""
    w = np.exp(rng.uniform(np.log(20), np.log(largest), n))
    h = np.minimum(w * np.exp(rng.normal(0.5, 0.4, n)), 1.5 * largest)
    x0, y0 = rng.uniform(-20, 1057, n), rng.uniform(-20, 790, n)
    return np.stack([x0, y0, x0 + w, y0 + h], 1).astype(np.float32)


@SEARCHES
@pytest.mark.parametrize("kind", ["peaked", "noise", "broad"])
def test_decoding_matches_detectron2_on_coco_sized_boxes(kind, compiled):
    rng = np.random.default_rng(len(kind))
    n = 12
    maps = _peaked_maps(rng, n, 17) if kind == "peaked" else rng.normal(0, 3, (n, 17, 56, 56)).astype(np.float32)
    if kind == "broad":  # wide, low peaks: many rows and columns near the maximum
        yy, xx = np.mgrid[0:56, 0:56]
        maps = (0.2 * maps + 4 * np.exp(-((yy - 20) ** 2 + (xx - 30) ** 2) / 200)).astype(np.float32)
    boxes = _coco_boxes(rng, n)
    ref = d2_heatmaps_to_keypoints(torch.from_numpy(maps), torch.from_numpy(boxes))[:, :, [0, 1, 3]].numpy()
    got = heatmaps_to_keypoints(maps, boxes, compiled=compiled)
    np.testing.assert_array_equal(got[..., :2], ref[..., :2])
    np.testing.assert_allclose(got[..., 2], ref[..., 2], rtol=1e-4)


@pytest.mark.parametrize("kind", ["peaked", "noise", "plateau", "constant", "tiny boxes"])
def test_peak_search_is_the_whole_resized_map(kind):
    """The rows x columns the bounds keep hold the same largest pixel (value and first position,
    bit for bit) as computing every pixel of the resized maps, in both searches."""
    rng = np.random.default_rng(len(kind))
    k = 17
    maps = _peaked_maps(rng, 1, k)[0] if kind in ("peaked", "tiny boxes") else rng.normal(0, 3, (k, 56, 56))
    if kind == "plateau":
        maps = np.zeros((k, 56, 56))
        maps[:, 20:30, 10:40] = 5.0
        maps[::2, 3, 3] = 5.0
    if kind == "constant":
        maps = np.full((k, 56, 56), -2.5)
    maps = maps.astype(np.float32)
    sizes = [(1, 1), (3, 2), (7, 40)] if kind == "tiny boxes" else [(56, 56), (123, 37), (612, 455), (88, 290)]
    top = maps.reshape(k, -1).argmax(axis=1)
    rows = (maps.max(axis=2).astype(np.float64), maps.min(axis=2).astype(np.float64))
    size = np.maximum(np.abs(rows[0]).max(axis=1), np.abs(rows[1]).max(axis=1))
    for oh, ow in sizes:
        taps_y, taps_x = bicubic_taps(56, oh), bicubic_taps(56, ow)
        every = (np.broadcast_to(np.arange(oh), (k, oh)), np.broadcast_to(np.arange(ow), (k, ow)))
        pos, peak = KP._peaks(maps, taps_y, taps_x, rows, top, size)
        all_pos, all_peak = KP._best(maps, *every, taps_y, taps_x)
        np.testing.assert_array_equal(pos, all_pos)
        np.testing.assert_array_equal(peak, all_peak)
        # and the whole map computed as the taps say: x then y, four taps each, in order
        cols = sum(maps[:, :, taps_x[0][:, t]] * taps_x[1][:, t] for t in range(4))
        full = sum(cols[:, taps_y[0][:, t]] * taps_y[1][:, t, None] for t in range(4)).reshape(k, -1)
        np.testing.assert_array_equal(all_peak, full.max(axis=1))
        np.testing.assert_array_equal(all_pos, full.argmax(axis=1))
        compiled_pos, compiled_peak = KP._search_compiled(
            maps[None], taps_y, np.array([0, oh]), taps_x, np.array([0, ow])
        )
        np.testing.assert_array_equal(compiled_pos[0], all_pos)
        np.testing.assert_array_equal(compiled_peak[0], all_peak)


@SEARCHES
def test_non_finite_heatmaps_are_searched_whole(compiled):
    """No bound holds with inf or nan logits: every pixel is computed (no crash), and the other maps'
    keypoints are those of a search without them."""
    rng = np.random.default_rng(4)
    maps = _peaked_maps(rng, 3, 2)
    maps[1, 0, 5, 5] = np.inf
    maps[2, 1, 7, 9] = np.nan
    maps[2, 0, 1, 1] = -np.inf
    boxes = np.array([[0, 0, 30, 40], [10, 10, 50, 35], [5, 5, 25, 25]], np.float32)
    got = heatmaps_to_keypoints(maps, boxes, compiled=compiled)
    np.testing.assert_array_equal(got[0], heatmaps_to_keypoints(maps[:1], boxes[:1], compiled=compiled)[0])
    np.testing.assert_array_equal(got[1, 1], heatmaps_to_keypoints(maps[1:2], boxes[1:2], compiled=not compiled)[0, 1])
    assert got.shape == (3, 2, 3) and np.isfinite(got[0]).all()


def test_both_searches_agree_bit_for_bit_on_a_hundred_people():
    """The compiled search and the numpy one on the benchmark's 100 detections x 17 maps of COCO sizes."""
    maps, boxes = keypoint_inputs(seed=7)
    np.testing.assert_array_equal(
        heatmaps_to_keypoints(maps, boxes, compiled=True), heatmaps_to_keypoints(maps, boxes, compiled=False)
    )


def test_bicubic_matrix_is_torch_bicubic():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 1, 56, 56)).astype(np.float32)
    for oh, ow in ((1, 1), (7, 200), (123, 56), (300, 31)):
        ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=(oh, ow), mode="bicubic", align_corners=False)[
            0, 0
        ].numpy()
        got = bicubic_matrix(56, oh) @ x[0, 0] @ bicubic_matrix(56, ow).T
        np.testing.assert_allclose(got, ref, atol=2e-5)


def test_no_detections_give_empty_keypoints():
    assert heatmaps_to_keypoints(np.zeros((0, 7, 56, 56), np.float32), np.zeros((0, 4), np.float32)).shape == (0, 7, 3)


def _det(n=2, h=100, w=120):
    kps = np.zeros((n, 3, 3), np.float32)
    kps[:, :, :2] = [[10, 10], [20, 30], [40, 50]]
    kps[:, :, 2] = [0.9, 0.5, 0.01]
    return Detections(
        boxes=np.tile([[5, 5, 60, 80]], (n, 1)),
        scores=np.linspace(0.9, 0.6, n),
        class_ids=np.zeros(n),
        labels=np.array(["figure"] * n),
        image_size=(h, w),
        keypoints=kps,
        keypoint_names=NAMES,
        keypoint_skeleton=SKELETON,
    )


def test_detections_carry_keypoints_checked_on_construction():
    det = _det()
    assert det.has_keypoints and det[1:].keypoints.shape == (1, 3, 3) and det[1:].keypoint_names == NAMES
    assert det.filter(0.8).keypoints.shape == (1, 3, 3)
    with pytest.raises(
        ValueError, match=r"keypoints: expected shape \(2, 3, 3\) for 3 keypoint names, found \(2, 4, 3\)"
    ):
        Detections(
            boxes=det.boxes,
            scores=det.scores,
            class_ids=det.class_ids,
            labels=det.labels,
            image_size=(100, 120),
            keypoints=np.zeros((2, 4, 3)),
            keypoint_names=NAMES,
        )
    with pytest.raises(ValueError, match=r"names \['foot'\] are not keypoint names"):
        Detections(
            boxes=det.boxes,
            scores=det.scores,
            class_ids=det.class_ids,
            labels=det.labels,
            image_size=(100, 120),
            keypoints=det.keypoints,
            keypoint_names=NAMES,
            keypoint_skeleton=(("head", "foot"),),
        )


def test_keypoints_in_json():
    d = _det().to_dict()
    assert d["keypoint_names"] == list(NAMES) and d["keypoint_skeleton"] == [list(p) for p in SKELETON]
    assert d["instances"][0]["keypoints"] == [[10.0, 10.0, 0.9], [20.0, 30.0, 0.5], [40.0, 50.0, 0.01]]
    assert "keypoints" not in Detections.empty((10, 10)).to_dict()


def test_postprocess_decodes_on_the_input_frame_and_scales_like_boxes():
    rng = np.random.default_rng(3)
    maps = _peaked_maps(rng, 2, 3)
    boxes_in = np.array([[10, 20, 110, 220], [50.5, 60.25, 90.5, 70.75]], np.float32)  # resized-input frame
    raw = {
        "boxes": boxes_in,
        "scores": np.array([0.9, 0.8], np.float32),
        "classes": np.zeros(2, np.int64),
        "keypoint_heatmaps": maps,
    }
    meta = Geometry((600, 400), (300, 200))  # everything x2
    det = postprocess(raw, meta, ["figure"], keypoint_names=NAMES, keypoint_skeleton=SKELETON)
    expected = heatmaps_to_keypoints(maps, boxes_in)
    np.testing.assert_allclose(det.keypoints[..., :2], expected[..., :2] * 2, rtol=1e-6)
    np.testing.assert_allclose(det.keypoints[..., 2], expected[..., 2])
    assert det.keypoint_names == NAMES
    assert len(postprocess(raw, meta, ["figure"], threshold=0.85, keypoint_names=NAMES)) == 1


@pytest.mark.parametrize("style", ["plain", "detectron2"])
def test_keypoints_are_drawn(style):
    img = np.full((100, 120, 3), 40, np.uint8)
    det = _det(1)
    det.keypoints[0, :, :2] = [[30, 40], [60, 60], [90, 85]]
    out = render(img, det, ["figure"], style=style).astype(int)
    red = (out[..., 0] > 150) & (out[..., 1] < 100) & (out[..., 2] < 100)

    def red_near(x, y, r=4):
        return red[y - r : y + r + 1, x - r : x + r + 1].sum()

    # visible keypoints (score > 0.05) become red dots; the third (score 0.01) is not drawn
    assert red_near(30, 40) >= 4 and red_near(60, 60) >= 4, style
    assert red_near(90, 85) == 0, style


@SEARCHES
def test_ties_take_the_first_pixel_as_detectron2(compiled):
    """Flat or plateaued maps: the peak search must pick Detectron2's pixel (the first in row-major order)."""
    maps = np.zeros((3, 2, 56, 56), np.float32)
    maps[1, :, 20:30, 10:40] = 5.0  # a plateau
    maps[2, 0, ::7, ::5] = 1.0  # many equal maxima
    boxes = np.array([[0, 0, 100, 80], [3.3, 4.7, 210.2, 96.1], [10, 10, 37, 300]], np.float32)
    ref = d2_heatmaps_to_keypoints(torch.from_numpy(maps), torch.from_numpy(boxes))[:, :, [0, 1, 3]].numpy()
    got = heatmaps_to_keypoints(maps, boxes, compiled=compiled)
    np.testing.assert_array_equal(got[..., :2], ref[..., :2])
    np.testing.assert_allclose(got[..., 2], ref[..., 2], rtol=1e-5)


def test_verify_compares_visible_keypoints():
    """match(): keypoints of matched detections scoring > 0.05 count; one off by 3 px fails the
    default tolerance and passes a 99% share (the random-weights rule of the stage check)."""
    from d2ov_core.measure.verify import Tolerance, match

    ref = _det(2)
    ref.keypoints[:, :, 2] = 0.9
    ref.keypoints[1, 2, 2] = 0.01  # not visible: never compared
    cand = ref[np.arange(2)]
    cand.keypoints = cand.keypoints.copy()
    cand.keypoints[1, 2, 0] += 30.0  # the invisible one moves: no effect
    c = match(ref, cand)
    assert (c.keypoints_compared, c.keypoints_off, c.max_keypoint_dev) == (5, 0, 0.0) and c.ok(Tolerance())
    cand.keypoints[0, 1, 1] += 3.0
    c = match(ref, cand)
    assert (c.keypoints_off, c.max_keypoint_dev) == (1, 3.0) and not c.ok(Tolerance())
    assert c.ok(Tolerance(keypoint_share=0.8)) and not c.ok(Tolerance(keypoint_share=0.9))


def test_verify_pooled_mask_iou():
    """With ``mask_pooled`` (the stage check's random-weights rule) a tiny mask that flips whole does
    not fail a comparison whose masks agree as a whole."""
    from d2ov_core.measure.verify import Tolerance, match

    masks = np.zeros((2, 100, 120), bool)
    masks[0, 10:60, 10:60] = True
    masks[1, 70:72, 100:102] = True  # 4 pixels
    ref = Detections(
        boxes=[[10, 10, 60, 60], [100, 70, 102, 72]],
        scores=[0.9, 0.8],
        class_ids=[0, 0],
        labels=["a", "a"],
        image_size=(100, 120),
        masks=masks,
    )
    cand_masks = masks.copy()
    cand_masks[1] = False
    cand_masks[1, 72:74, 100:102] = True  # the tiny mask moved: IoU 0
    cand = Detections(
        boxes=ref.boxes,
        scores=ref.scores,
        class_ids=ref.class_ids,
        labels=ref.labels,
        image_size=(100, 120),
        masks=cand_masks,
    )
    c = match(ref, cand)
    assert c.min_mask_iou == 0.0 and abs(c.mask_iou_pooled - 2500 / 2508) < 1e-9
    assert not c.ok(Tolerance()) and c.ok(Tolerance(mask_iou=0.9, mask_pooled=True))


def test_without_numba_the_numpy_search_answers_and_compiled_says_what_to_install(tmp_path):
    """A process where numba cannot be imported (the base install): the numpy search gives the same
    keypoints; asking for the compiled one names the extra."""
    code = (
        "import sys; sys.modules['numba'] = None\n"
        "import numpy as np\n"
        "from tools.bench_postprocess import keypoint_inputs\n"
        "from d2ov_core.runtime.keypoints import heatmaps_to_keypoints\n"
        "maps, boxes = keypoint_inputs(seed=3, n=12)\n"
        "np.save(sys.argv[1], heatmaps_to_keypoints(maps, boxes))\n"
        "try:\n"
        "    heatmaps_to_keypoints(maps, boxes, compiled=True)\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = tmp_path / "keypoints.npy"
    res = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "need numba (pip install 'd2ov[fast]')" in res.stdout
    maps, boxes = keypoint_inputs(seed=3, n=12)
    np.testing.assert_array_equal(np.load(out), heatmaps_to_keypoints(maps, boxes, compiled=True))
