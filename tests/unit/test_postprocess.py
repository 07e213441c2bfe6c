"""numpy postprocess vs Detectron2's detector_postprocess on the same raw outputs."""

import numpy as np
import pytest
import torch

from d2ov_core.export import compat
from d2ov_core.measure.verify import mask_iou
from d2ov_core.runtime.postprocess import paste_masks, postprocess
from d2ov_core.runtime.preprocess import Geometry

compat.apply()
from detectron2.modeling.postprocessing import detector_postprocess  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402


def raw_outputs(n, input_hw, seed, with_masks=True):
    rng = np.random.default_rng(seed)
    h, w = input_hw
    x0 = rng.uniform(-40, w, n)
    y0 = rng.uniform(-40, h, n)
    boxes = np.stack([x0, y0, x0 + rng.uniform(0, w / 2, n), y0 + rng.uniform(0, h / 2, n)], 1).astype(np.float32)
    if n > 2:
        boxes[0] = [10, 10, 10, 40]  # zero width: dropped
        boxes[1] = [w + 5, 3, w + 50, 30]  # fully outside: clipped to zero width, dropped
    raw = {
        "boxes": boxes,
        "scores": np.sort(rng.random(n).astype(np.float32))[::-1].copy(),
        "classes": rng.integers(0, 3, n).astype(np.int64),
    }
    if with_masks:
        # smooth blobs so that masks are not salt-and-pepper
        yy, xx = np.mgrid[0:28, 0:28] / 27.0
        cx, cy, r = rng.uniform(0.3, 0.7, (3, n, 1, 1))
        raw["masks"] = (1 / (1 + np.exp(((xx - cx) ** 2 + (yy - cy) ** 2 - (r / 2) ** 2) * 60)))[:, None].astype(
            np.float32
        )
    return raw


def detectron2_reference(raw, input_hw, orig_hw):
    inst = Instances(input_hw)
    inst.pred_boxes = Boxes(torch.from_numpy(raw["boxes"].copy()))
    inst.scores = torch.from_numpy(raw["scores"].copy())
    inst.pred_classes = torch.from_numpy(raw["classes"].copy())
    if "masks" in raw:
        inst.pred_masks = torch.from_numpy(raw["masks"].copy())
    return detector_postprocess(inst, orig_hw[0], orig_hw[1])


CASES = [((800, 1067), (480, 640)), ((800, 800), (1024, 1024)), ((517, 1333), (300, 773)), ((800, 1200), (800, 1200))]


@pytest.mark.parametrize("input_hw,orig_hw", CASES)
@pytest.mark.parametrize("n", [0, 1, 25, 100])
def test_matches_detector_postprocess(input_hw, orig_hw, n):
    raw = raw_outputs(n, input_hw, seed=n + input_hw[1])
    ref = detectron2_reference(raw, input_hw, orig_hw)
    ours = postprocess(raw, Geometry(orig_hw, input_hw), ["a", "b", "c"])
    assert len(ours) == len(ref)
    assert ours.image_size == orig_hw
    np.testing.assert_allclose(ours.boxes, ref.pred_boxes.tensor.numpy(), atol=1e-3, rtol=0)
    np.testing.assert_array_equal(ours.scores, ref.scores.numpy())
    np.testing.assert_array_equal(ours.class_ids, ref.pred_classes.numpy())
    ref_masks = ref.pred_masks.numpy()
    assert ours.masks.shape == ref_masks.shape
    for a, b in zip(ours.masks, ref_masks):
        assert mask_iou(a, b) >= 0.99
    if n > 2:
        assert (
            np.array_equal(ours.masks, ref_masks) or min(mask_iou(a, b) for a, b in zip(ours.masks, ref_masks)) > 0.995
        )


def test_threshold_drops_low_scores_and_their_masks():
    raw = raw_outputs(30, (600, 800), seed=3)
    d = postprocess(raw, Geometry((600, 800), (600, 800)), ["a", "b", "c"], threshold=0.5)
    assert len(d) > 0 and np.all(d.scores >= 0.5) and d.masks.shape[0] == len(d)


def test_detection_only_outputs_give_no_masks():
    raw = raw_outputs(10, (600, 800), seed=4, with_masks=False)
    d = postprocess(raw, Geometry((300, 400), (600, 800)), ["a", "b", "c"])
    assert d.masks is None and np.all(d.boxes[:, 2] <= 400) and np.all(d.boxes[:, 3] <= 300)


def test_paste_masks_empty():
    assert paste_masks(np.zeros((0, 28, 28), np.float32), np.zeros((0, 4), np.float32), (5, 7)).shape == (0, 5, 7)


@pytest.mark.parametrize("seed", range(4))
def test_paste_masks_is_detectron2s_paste_bit_for_bit(seed):
    """Two taps along y then along x, each sum rounded as a fused multiply-add: the same pixels as
    Detectron2's grid_sample paste (measured: 0 of 186 M pixels differ over 40 such cases), boxes
    over the borders and thin ones included; only what is asked is pasted."""
    from detectron2.layers.mask_ops import paste_masks_in_image

    from d2ov_core.runtime.postprocess import paste_box_masks

    rng = np.random.default_rng(seed)
    (h, w), n = (int(v) for v in rng.integers(40, 400, 2)), 30
    x0, y0 = rng.uniform(-30, w, n), rng.uniform(-30, h, n)
    boxes = np.stack([x0, y0, x0 + rng.uniform(1, w / 1.5, n), y0 + rng.uniform(1, h / 1.5, n)], 1)
    boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 0.5)
    probs = rng.uniform(0, 1, (n, 28, 28)).astype(np.float32)
    ref = paste_masks_in_image(torch.from_numpy(probs), torch.from_numpy(boxes), (h, w), 0.5).numpy()
    np.testing.assert_array_equal(paste_masks(probs, boxes, (h, w)), ref)
    made = paste_box_masks(probs, boxes, (h, w))
    np.testing.assert_array_equal(made.dense([3, 1]), ref[[3, 1]])
    assert sorted(made._crops) == [1, 3]


def test_paste_masks_of_pixel_sized_and_border_boxes_is_detectron2s():
    """Every box's taps are computed at once: boxes of 0.3 to 2 px, at each border and corner, and a
    box of zero side among them (never pasted by postprocess; its taps are meaningless and must not
    warn or disturb the others) paste as Detectron2 pastes each alone."""
    import warnings

    from detectron2.layers.mask_ops import paste_masks_in_image

    from d2ov_core.runtime.postprocess import paste_box_masks

    h, w = 37, 53
    sides = [0.3, 1.0, 1.5, 2.0]
    corners = [(0, 0), (w - 2, 0), (0, h - 2), (w - 2, h - 2), (w / 2 - 0.7, h / 2 + 0.2)]
    boxes = np.array([[x, y, min(x + s, w), min(y + s * 1.3, h)] for x, y in corners for s in sides], np.float32)
    probs = np.random.default_rng(0).uniform(0, 1, (len(boxes), 28, 28)).astype(np.float32)
    ref = paste_masks_in_image(torch.from_numpy(probs), torch.from_numpy(boxes), (h, w), 0.5).numpy()
    np.testing.assert_array_equal(paste_masks(probs, boxes, (h, w)), ref)
    flat = np.concatenate([boxes, [[5, 5, 5, 9]]]).astype(np.float32)  # zero width
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        made = paste_box_masks(np.concatenate([probs, probs[:1]]), flat, (h, w))
        np.testing.assert_array_equal(made.dense(np.arange(len(boxes))), ref)
