"""Rendering: both renderers draw boxes, labels and masks where the detections are, and leave the
rest of the image alone; an empty result draws nothing."""

import numpy as np
import pytest

from d2ov_core.runtime.detections import Detections
from d2ov_core.serve.render import render, renderer

H, W = 120, 160


def detections(with_masks=True) -> Detections:
    masks = np.zeros((2, H, W), bool)
    masks[0, 30:60, 20:60] = True
    masks[1, 70:100, 100:140] = True
    return Detections(
        boxes=[[20, 30, 60, 60], [100, 70, 140, 100]],
        scores=[0.97, 0.6],
        class_ids=[0, 2],
        labels=["circle", "triangle"],
        image_size=(H, W),
        masks=masks if with_masks else None,
    )


@pytest.fixture()
def image():
    return np.full((H, W, 3), 128, np.uint8)


@pytest.mark.parametrize("style", ["plain", "detectron2"])
def test_draws_on_the_detections_only(style, image):
    out = render(image, detections(), ["circle", "square", "triangle"], style=style)
    assert out.shape == image.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - image).sum(axis=2)
    assert (diff[35:55, 25:55] > 0).mean() > 0.9 and (diff[75:95, 105:135] > 0).mean() > 0.9  # masks tinted
    assert diff[105:, :15].max() <= 2  # a corner far from every detection is untouched


@pytest.mark.parametrize("style", ["plain", "detectron2"])
def test_empty_detections_leave_the_image(style, image):
    out = render(image, Detections.empty((H, W), with_masks=True), ["circle"], style=style)
    assert np.abs(out.astype(int) - image).max() <= 2


def test_plain_renderer_without_masks_draws_box_outlines(image):
    out = render(image, detections(with_masks=False), ["circle", "square", "triangle"], style="plain")
    diff = np.abs(out.astype(int) - image).sum(axis=2)
    assert diff[45, 20] > 0 and diff[45, 40] == 0  # the box's left edge, not its inside


def test_renderer_is_detectron2_where_it_is_installed():
    assert renderer() == "detectron2"  # the repository's environment has detectron2 and torch


def test_plain_masks_drawn_in_their_window_equal_masks_drawn_over_the_image():
    """The plain renderer paints each mask in the rows and columns that hold it (a mask costs its size,
    not the image's): pixel for pixel what painting over the whole image gives, for masks that overlap,
    touch the image's edges, are one pixel, are scattered over the image, or are empty."""
    from d2ov_core.serve.render import _outline, _paint_masks

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8).astype(np.float32)
    masks = np.zeros((6, H, W), bool)
    masks[0, 0:40, 0:50] = True  # the top-left corner
    masks[1, 20:70, 30:90] = True  # overlaps the first
    masks[2, 90:, 120:] = True  # the bottom-right corner
    masks[3, 50, 80] = True  # one pixel
    masks[4] = rng.random((H, W)) > 0.7  # scattered over the whole image
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (9, 9, 9)]  # [5] is empty
    expected = image.copy()
    for mask, color in zip(masks, colors):
        expected[mask] = 0.5 * expected[mask] + 0.5 * np.asarray(color, np.float32)
        expected[_outline(mask)] = color
    painted = image.copy()
    _paint_masks(painted, masks, colors)
    assert np.array_equal(painted, expected)
    assert (painted != image).any(axis=2).sum() > H * W / 4  # it did paint


def test_plain_segment_map_in_one_pass_equals_painting_segment_by_segment():
    """The plain renderer tints and outlines a whole segment map in one pass: pixel for pixel what
    painting each segment over the image in turn gives (tint, outline), for things and stuff, segments
    that touch the edges, a one-pixel segment, an id the list does not name (left as it is) and a listed
    id absent from the map; only the labels differ, each drawn at its segment's middle pixel in
    row-major order."""
    from d2ov_core.serve import render as R

    h, w = 400, 600
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    seg_map = np.kron(rng.integers(0, 7, (h // 80 + 1, w // 80 + 1)), np.ones((80, 80), np.int64))[:h, :w]
    seg_map[200, 300] = 8  # one pixel
    segments = [
        {"id": i, "label": f"c{i}", "category_id": i % 3, "isthing": i % 2 == 1, "score": 0.5 + i / 20}
        for i in (1, 2, 3, 4, 5, 8, 9)  # 6: in the map, not listed; 9: listed, not in the map
    ]
    expected = image.astype(np.float32)
    labelled = np.zeros((h, w), bool)  # where a label may be drawn: around each segment's middle pixel
    for seg in segments:
        mask = seg_map == seg["id"]
        if not mask.any():
            continue
        color = R._class_color(seg["category_id"]) if seg["isthing"] else R._skeleton_color(seg["category_id"])
        expected[mask] = 0.4 * expected[mask] + 0.6 * np.asarray(color, np.float32)
        expected[R._outline(mask)] = (255, 255, 255) if seg["isthing"] else color
        ys, xs = np.nonzero(mask)
        x, y = xs[len(xs) // 2], ys[len(ys) // 2]
        labelled[max(0, y - 12) : y + 13, max(0, x - 40) : x + 41] = True
    drawn = R._segments_plain(image, seg_map, segments, [])
    differs = (drawn != np.clip(expected + 0.5, 0, 255).astype(np.uint8)).any(axis=2)
    assert not (differs & ~labelled).any(), np.argwhere(differs & ~labelled)[:5]
    assert differs.sum() > 6 * 50  # the labels are there
    six = seg_map == 6
    assert six.any() and np.array_equal(drawn[six & ~labelled], image[six & ~labelled])
