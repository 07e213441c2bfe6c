"""Rendering: both renderers draw boxes, labels and masks where the detections are, and leave the
rest of the image alone; an empty result draws nothing."""

import numpy as np
import pytest

from d2ov_core.errors import InputError
from d2ov_core.runtime.detections import Detections, Segment
from d2ov_core.serve.render import has_visualizer, render

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


def test_plain_is_the_default_and_a_wrong_style_is_one_clear_error(image):
    det = detections()
    names = ["circle", "square", "triangle"]
    assert np.array_equal(render(image, det, names), render(image, det, names, style="plain"))
    assert has_visualizer()  # the repository's environment has detectron2 and torch
    with pytest.raises(InputError, match="expected one of plain, detectron2, found 'fancy'"):
        render(image, det, names, style="fancy")


def _blend(dst: np.ndarray, color, alpha: float) -> np.ndarray:
    return np.round(dst.astype(np.float64) * (1 - alpha) + np.asarray(color, np.float64) * alpha)


def test_plain_masks_drawn_in_their_window_equal_masks_drawn_over_the_image():
    """The plain renderer paints each mask in the rows and columns that hold it, found near its box (a
    mask costs its size, not the image's): within one level of what painting over the whole image
    gives (half opacity, then the outline in the mask's colour), for masks that overlap, touch the
    image's edges, are one pixel, are scattered over the image, are empty, reach beyond the box
    they come with, or reach the edge of the rows searched near it."""
    from d2ov_core.serve.render import _edge, _paint_masks

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    masks = np.zeros((8, H, W), bool)
    masks[0, 0:40, 0:50] = True  # the top-left corner
    masks[1, 20:70, 30:90] = True  # overlaps the first
    masks[2, 90:, 120:] = True  # the bottom-right corner
    masks[3, 50, 80] = True  # one pixel
    masks[4] = rng.random((H, W)) > 0.7  # scattered over the whole image
    masks[6, 10:100, 100:150] = True  # far beyond the box it comes with
    masks[7, 12:24, 52:58] = True  # to the last row searched near its box (rows 7-23), not beyond
    boxes = [[0, 0, 50, 40], [30, 20, 90, 70], [120, 90, 160, 120], [80, 50, 81, 51], [0, 0, 5, 5], [0, 0, 9, 9]]
    boxes += [[100, 10, 110, 20], [50, 10, 60, 20]]
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (9, 9, 9), (200, 100, 50)]
    colors.append((90, 200, 30))
    for width in (1, 2):
        expected = image.astype(np.float64)
        for mask, color in zip(masks, colors):
            expected[mask] = _blend(expected[mask], color, 128 / 255)
            expected[_edge(mask, width)] = color
        painted = image.copy()
        _paint_masks(painted, masks, colors, width, boxes)
        assert np.abs(painted.astype(int) - expected).max() <= 1, width
        assert (painted != image).any(axis=2).sum() > H * W / 4  # it did paint


def test_plain_segment_map_in_one_pass_equals_painting_segment_by_segment():
    """The plain renderer tints and outlines a whole segment map in one pass: within one level of what
    painting each segment over the image in turn gives (0.7 opacity; the outline in a thing's colour,
    off-white for stuff), for segments that touch the edges, a one-pixel segment, an id the list does
    not name (left as it is) and a listed id absent from the map; only the labels differ, each drawn
    around the median of its segment's pixels. The byte-sized ids' path (Pillow) and the wide ids'
    path (numpy) agree."""
    from d2ov_core.serve import render as R

    h, w = 400, 600
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    seg_map = np.kron(rng.integers(0, 7, (h // 80 + 1, w // 80 + 1)), np.ones((80, 80), np.int64))[:h, :w]
    seg_map[200, 300] = 8  # one pixel
    segments = [
        Segment(id=i, label=f"c{i}", category_id=i % 3, isthing=i % 2 == 1, score=0.5 + i / 20, area=0)
        for i in (1, 2, 3, 4, 5, 8, 9)  # 6: in the map, not listed; 9: listed, not in the map
    ]
    expected = image.astype(np.float64)
    labelled = np.zeros((h, w), bool)  # where a label may be drawn: around each segment's median pixel
    for seg in segments:
        mask = seg_map == seg.id
        if not mask.any():
            continue
        color = R._class_color(seg.category_id) if seg.isthing else R._skeleton_color(seg.category_id)
        expected[mask] = _blend(expected[mask], color, 0.7)
        expected[R._outline(mask)] = color if seg.isthing else (255, 255, 240)
        ys, xs = np.nonzero(mask)
        x, y = int(np.median(xs)), int(np.median(ys))
        labelled[max(0, y - 4) : y + 30, max(0, x - 60) : x + 61] = True
    drawn = R._segments_plain(image, seg_map, segments, [])
    differs = np.abs(drawn.astype(int) - expected).max(axis=2) > 2
    assert not (differs & ~labelled).any(), np.argwhere(differs & ~labelled)[:5]
    assert differs.sum() > 6 * 50  # the labels are there
    six = seg_map == 6
    assert six.any() and np.array_equal(drawn[six & ~labelled], image[six & ~labelled])
    shown, colors = np.zeros(9, bool), rng.integers(0, 256, (9, 3)).astype(np.uint8)
    shown[1:6] = True
    wide_shown, wide_colors = np.pad(shown, (0, 300)), np.pad(colors, ((0, 300), (0, 0)))
    narrow = R._tint(image, seg_map, colors, shown, 0.7)
    wide = R._tint(image, seg_map, wide_colors, wide_shown, 0.7)
    assert np.abs(narrow.astype(int) - wide).max() <= 1 and (narrow != image).any()


def test_plain_masks_look_like_the_visualizers():
    """Given the same colours (a video's tracked detections: the Visualizer is then told each one's
    colour), the plain renderer fills masks as Detectron2's Visualizer does: at half opacity, inside
    each mask within a few levels of the Visualizer's pixels; and both leave the background alone."""
    h, w = 240, 320
    rng = np.random.default_rng(2)
    image = rng.integers(40, 216, (h, w, 3), dtype=np.uint8)
    masks = np.zeros((2, h, w), bool)
    masks[0, 60:180, 40:150] = True
    masks[1, 90:200, 190:290] = True
    det = Detections(
        boxes=[[40, 60, 150, 180], [190, 90, 290, 200]],
        scores=[0.9, 0.8],
        class_ids=[0, 1],
        labels=["circle", "square"],
        image_size=(h, w),
        masks=masks,
    ).with_track_ids([4, 7])
    plain = render(image, det, ["circle", "square"], style="plain").astype(int)
    visualizer = render(image, det, ["circle", "square"], style="detectron2").astype(int)
    inside = np.zeros((h, w), bool)  # well inside each mask, below its label
    inside[100:170, 50:140] = inside[130:190, 200:280] = True
    assert np.abs(plain - visualizer)[inside].max() <= 3
    assert np.abs(plain - image)[inside].mean() > 20  # the masks are tinted
    outside = np.zeros((h, w), bool)
    outside[:40, :] = outside[210:, :] = True
    assert np.abs(plain - image)[outside].max() == 0 and np.abs(visualizer - image)[outside].max() <= 2


def test_a_large_photo_is_drawn_on_its_display_copy(tmp_path):
    """for_display: a photo longer than DISPLAY_MAX_SIDE becomes every k-th pixel (k = 3 for 4500 px),
    its detections the same ones in that copy: boxes and keypoints / k, masks and the segment map
    sampled at the copy's pixels, also a mask with a pixel outside its box; smaller images and
    their detections are returned as they are. What the app draws (present) is that copy, while its
    JSON keeps the original's pixels."""
    import json
    from pathlib import Path

    from PIL import Image

    from d2ov_core.serve import handlers as H
    from d2ov_core.serve.render import DISPLAY_MAX_SIDE, for_display

    h, w, k = 3001, 4500, 3
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    masks = np.zeros((3, h, w), bool)
    masks[0, 1000:1900, 700:2100] = True
    masks[1, 5:400, 4000:4499] = True
    masks[2, 2500:2900, 100:600] = True
    masks[2, 10, 10] = True  # far outside its box: the whole mask is searched
    seg_map = np.kron(rng.integers(0, 4, (31, 46)), np.ones((100, 100), np.int32))[:h, :w]
    det = Detections(
        boxes=[[700, 1000, 2100, 1900], [4000, 5, 4499, 400], [100, 2500, 600, 2900]],
        scores=[0.9, 0.8, 0.7],
        class_ids=[0, 1, 2],
        labels=["circle", "square", "triangle"],
        image_size=(h, w),
        masks=masks,
        keypoints=np.float32([[[750, 1030, 0.9]], [[4100, 30, 0.8]], [[300, 2600, 0.1]]]),
        keypoint_names=("top",),
        segment_map=seg_map,
        segments=[Segment(id=i, label=f"c{i}", category_id=i, isthing=False, score=1, area=0) for i in (1, 2, 3)],
    )
    shown, small = for_display(rgb, det)
    assert max(shown.shape[:2]) <= DISPLAY_MAX_SIDE and shown.shape == (1000, 1500, 3)
    np.testing.assert_array_equal(shown, rgb[1::3, 1::3])
    assert small.image_size == (1000, 1500) and list(small.labels) == list(det.labels)
    np.testing.assert_allclose(small.boxes * k, det.boxes, rtol=1e-6)
    np.testing.assert_allclose(small.keypoints[..., :2] * k, det.keypoints[..., :2], rtol=1e-6)
    np.testing.assert_array_equal(small.keypoints[..., 2], det.keypoints[..., 2])
    np.testing.assert_array_equal(small.masks, masks[:, 1::3, 1::3])
    np.testing.assert_array_equal(small.segment_map, seg_map[1::3, 1::3])
    same_rgb, same = for_display(rgb[:2048, :2048], det[:0])
    assert same_rgb.base is rgb and same.image_size == det.image_size

    model = {"task": "instance_segmentation", "name": "m", "precision": "FP32"}
    result = H.Result(
        rgb=rgb,
        detections=det.filter,
        model=model,
        device="CPU",
        image="big.jpg",
        labels=["circle", "square", "triangle"],
    )
    drawn, _, json_path, _ = H.present(result, 0.5, tmp_path)
    again = H.present(result, 0.5, tmp_path)[0]
    assert Path(drawn).parent == tmp_path and again != drawn  # a file per request, never shared
    with Image.open(drawn) as im:
        assert im.format == "JPEG" and im.size == (1500, 1000)
        assert np.abs(np.asarray(im).astype(int) - shown).mean() > 1  # the detections are drawn on it
    boxes = [inst["box"] for inst in json.loads(open(json_path).read())["results"][0]["instances"]]
    np.testing.assert_allclose(boxes, det.boxes, atol=0.01)
