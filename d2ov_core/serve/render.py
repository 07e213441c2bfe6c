"""Drawing :class:`~d2ov_core.runtime.detections.Detections` on the image they were made on.

Input: the RGB uint8 image (original pixels) and its detections. Output: RGB uint8 ``(H, W, 3)``.

What is drawn is the task's choice (:meth:`~d2ov_core.runtime.tasks.Task.draw`): instances, or a
map of segments; each renderer offers both (a :class:`~d2ov_core.runtime.tasks.base.Painter`).

Two renderers, chosen by what is installed:
  * ``detectron2``: Detectron2's ``Visualizer`` (its colours, ``name 97%`` labels, masks with
    outlines, keypoints as red dots joined by the skeleton's lines; a map of segments with its
    ``draw_panoptic_seg``: every segment filled, things labelled ``name 97%``, stuff by name), used whenever detectron2 and
    torch are importable (the repository's environment, the Hugging Face Space, which ships
    Detectron2 beside ``app.py``). Imports them lazily.
  * ``plain``: d2ov's own drawing with Pillow and numpy only, for torch-free installs (``pip install
    d2ov[app]``): the same label text, translucent masks with outlines and box outlines, one colour
    per class; keypoints above ``KEYPOINT_THRESHOLD`` as red dots joined by the skeleton's lines; a
    map of segments as every segment filled (a colour per thing class and per stuff class) with its
    outline and label.

Tracked detections (a video with ``--track``: ``det.track_ids``) are drawn in a colour per track, the
same in every frame, labelled ``#id name 97%``, by either renderer.
"""

from __future__ import annotations

import colorsys
import functools
import importlib.util

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..runtime.detections import KEYPOINT_THRESHOLD, Detections
from ..runtime.tasks import get_task, task_of

__all__ = ["render", "renderer"]


@functools.lru_cache(maxsize=1)
def renderer() -> str:
    """``"detectron2"`` when Detectron2's Visualizer can be imported here, else ``"plain"``."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("detectron2") is None:
        return "plain"
    try:
        from ..export import compat

        compat.apply()
        from detectron2.utils.visualizer import Visualizer  # noqa: F401
    except Exception:  # a broken or partial install: draw without it
        return "plain"
    return "detectron2"


def render(
    image_rgb: np.ndarray,
    det: Detections,
    class_names: list[str] | None = None,
    style: str | None = None,
    task: str | None = None,
) -> np.ndarray:
    """``det`` drawn on ``image_rgb`` as its task draws it (``task``: the model's; default: the task
    whose result ``det`` is); ``style`` forces a renderer."""
    names = list(class_names) if class_names is not None else sorted(set(det.labels.tolist()))
    painter = _PAINTERS[style or renderer()]
    return (get_task(task) if task else task_of(det)).draw(image_rgb, det, names, painter)


def _render_detectron2(image_rgb: np.ndarray, det: Detections, names: list[str]) -> np.ndarray:
    from ..export import compat

    compat.apply()
    import torch
    from detectron2.data import Metadata
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.visualizer import ColorMode, Visualizer

    meta = Metadata(name="d2ov")
    meta.thing_classes = names
    inst = Instances(det.image_size)
    inst.pred_boxes = Boxes(torch.from_numpy(det.boxes.copy()))
    inst.scores = torch.from_numpy(det.scores.copy())
    inst.pred_classes = torch.from_numpy(det.class_ids.copy())
    if det.masks is not None:
        inst.pred_masks = torch.from_numpy(det.masks.copy())
    if det.keypoints is not None:
        inst.pred_keypoints = torch.from_numpy(det.keypoints.copy())
        meta.keypoint_names = list(det.keypoint_names)
        meta.keypoint_connection_rules = [(a, b, _skeleton_color(i)) for i, (a, b) in enumerate(det.keypoint_skeleton)]
    vis = Visualizer(image_rgb, metadata=meta, scale=1.0, instance_mode=ColorMode.IMAGE)
    if det.track_ids is None:
        out = vis.draw_instance_predictions(inst)
    else:  # a colour per track, "#id" before the label, so that an object keeps its look in a video
        out = vis.overlay_instances(
            boxes=det.boxes,
            labels=[_instance_text(names, det, i) for i in range(len(det))],
            masks=det.masks,
            keypoints=det.keypoints,
            assigned_colors=[np.asarray(_instance_color(det, i), np.float64) / 255 for i in range(len(det))],
            alpha=0.5,
        )
    return np.asarray(out.get_image(), dtype=np.uint8)


def _stuff_names(segments) -> list[str]:
    """Stuff class names by semantic label, as far as the segments tell them (label 0 is "things")."""
    stuff = {seg["category_id"]: seg["label"] for seg in segments if not seg["isthing"]}
    return ["things"] + [stuff.get(i, f"stuff_{i}") for i in range(1, max(stuff, default=0) + 1)]


def _segments_detectron2(image_rgb: np.ndarray, segment_map: np.ndarray, segments, names: list[str]) -> np.ndarray:
    from ..export import compat

    compat.apply()
    import torch
    from detectron2.data import Metadata
    from detectron2.utils.visualizer import Visualizer

    meta = Metadata(name="d2ov_segments")
    meta.thing_classes = names
    meta.stuff_classes = _stuff_names(segments)
    info = [
        {
            "id": seg["id"],
            "category_id": seg["category_id"],
            "isthing": seg["isthing"],
            **({"score": seg["score"]} if seg["isthing"] else {"area": seg["area"]}),
        }
        for seg in segments
    ]
    vis = Visualizer(image_rgb, metadata=meta, scale=1.0)
    out = vis.draw_panoptic_seg(torch.from_numpy(segment_map.astype(np.int64)), info)
    return np.asarray(out.get_image(), dtype=np.uint8)


def _segments_plain(image_rgb: np.ndarray, segment_map: np.ndarray, segments, names: list[str]) -> np.ndarray:
    """Every segment tinted with its colour and outlined (white for things), in one pass over the
    image (segments do not overlap), then labelled at a pixel near its middle row."""
    out = np.asarray(image_rgb, dtype=np.float32).copy()
    h, w = out.shape[:2]
    segment_map = np.asarray(segment_map)
    size = max([int(segment_map.max(initial=0))] + [int(seg["id"]) for seg in segments]) + 1
    fill = np.zeros((size, 3), np.float32)  # per segment id: its colour, its outline's colour, shown or not
    edge = np.zeros((size, 3), np.float32)
    shown = np.zeros(size, bool)
    labels = []
    for seg in segments:
        mask = segment_map == seg["id"]
        per_row = np.count_nonzero(mask, axis=1)
        total = int(per_row.sum())
        if not total:
            continue
        color = _class_color(seg["category_id"]) if seg["isthing"] else _skeleton_color(seg["category_id"])
        fill[seg["id"]], edge[seg["id"]], shown[seg["id"]] = color, (255, 255, 255) if seg["isthing"] else color, True
        k = total // 2  # a pixel of the segment near its middle row, row-major (a centroid may lie outside it)
        upto = np.cumsum(per_row)  # pixels in the rows up to each row
        y = int(np.searchsorted(upto, k, side="right"))
        x = int(np.flatnonzero(mask[y])[k - (int(upto[y - 1]) if y else 0)])
        text = seg["label"] + (f" {seg['score'] * 100:.0f}%" if seg["isthing"] and seg["score"] is not None else "")
        labels.append((float(x), float(y), text, color))
    painted = shown[segment_map]
    tinted = 0.4 * out + 0.6 * fill[segment_map]
    np.copyto(out, tinted, where=painted[..., None])
    border = np.zeros((h, w), bool)  # a neighbour (4-connected) of another segment
    across_rows = segment_map[1:] != segment_map[:-1]  # each pair compared once, marked on both sides
    border[1:] |= across_rows
    border[:-1] |= across_rows
    across_cols = segment_map[:, 1:] != segment_map[:, :-1]
    border[:, 1:] |= across_cols
    border[:, :-1] |= across_cols
    border &= painted
    out[border] = edge[segment_map[border]]
    img = Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    font = _font(max(10, round(min(h, w) / 45)))
    for x, y, text, color in labels:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        x0, y0 = (
            min(max(0.0, x - (right - left) / 2), w - (right - left)),
            min(max(0.0, y - (bottom - top) / 2), h - (bottom - top)),
        )
        draw.rectangle([x0 - 2, y0 - 2, x0 + right - left + 2, y0 + bottom - top + 2], fill=(0, 0, 0))
        draw.text((x0 - left, y0 - top), text, fill=color, font=font)
    return np.asarray(img, dtype=np.uint8)


def _class_color(class_id: int) -> tuple[int, int, int]:
    """A distinct, saturated colour per class (hues spaced by the golden ratio)."""
    r, g, b = colorsys.hsv_to_rgb((0.13 + 0.618034 * class_id) % 1.0, 0.75, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def _instance_text(names: list[str], det: Detections, i: int) -> str:
    """``name 97%`` (Detectron2's label), after ``#id`` when a track holds the detection."""
    cid = int(det.class_ids[i])
    name = names[cid] if 0 <= cid < len(names) else f"class_{cid}"
    track = det.track_ids[i] if det.track_ids is not None else -1
    return f"{'#' + str(track) + ' ' if track >= 0 else ''}{name} {det.scores[i] * 100:.0f}%"


def _instance_color(det: Detections, i: int) -> tuple[int, int, int]:
    """The track's colour (the same in every frame), else the class's."""
    track = det.track_ids[i] if det.track_ids is not None else -1
    return _skeleton_color(int(track)) if track >= 0 else _class_color(int(det.class_ids[i]))


def _skeleton_color(i: int) -> tuple[int, int, int]:
    """A colour per skeleton line (bright, hues spaced by the golden ratio)."""
    r, g, b = colorsys.hsv_to_rgb((0.55 + 0.618034 * i) % 1.0, 0.6, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's default font at ``size`` (loaded once per size: a video draws hundreds of frames)."""
    return ImageFont.load_default(size=size)


def _around(mask: np.ndarray) -> tuple[slice, slice] | None:
    """The rows and columns that hold ``mask``'s pixels, one more on each side where the image has it
    (so :func:`_outline` of the window is the outline in the whole image); ``None`` for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    h, w = mask.shape
    return slice(max(rows[0] - 1, 0), min(rows[-1] + 2, h)), slice(max(cols[0] - 1, 0), min(cols[-1] + 2, w))


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def _paint_masks(out: np.ndarray, masks: np.ndarray, colors: list[tuple[int, int, int]]) -> None:
    """Each mask half-tinted with its colour and outlined, in place on the float image ``out``; each
    in its window (:func:`_around`): a mask costs its size, not the image's."""
    for mask, color in zip(masks, colors):
        window = _around(mask)
        if window is None:
            continue
        part, region = mask[window], out[window]
        np.copyto(region, 0.5 * region + 0.5 * np.asarray(color, np.float32), where=part[..., None])
        region[_outline(part)] = color


def _render_plain(image_rgb: np.ndarray, det: Detections, names: list[str]) -> np.ndarray:
    out = np.asarray(image_rgb, dtype=np.float32).copy()
    h, w = out.shape[:2]
    colors = [_instance_color(det, i) for i in range(len(det))]
    if det.masks is not None:
        _paint_masks(out, det.masks, colors)
    img = Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    width = max(1, round(min(h, w) / 300))
    font = _font(max(10, round(min(h, w) / 45)))
    for i, (box, color) in enumerate(zip(det.boxes, colors)):
        x0, y0, x1, y1 = (float(v) for v in box)
        draw.rectangle([x0, y0, x1, y1], outline=color, width=width)
        text = _instance_text(names, det, i)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        ty = y0 - th - 2 * width if y0 - th - 2 * width >= 0 else y0
        draw.rectangle([x0, ty, x0 + tw + 2 * width, ty + th + 2 * width], fill=(0, 0, 0))
        draw.text((x0 + width - left, ty + width - top), text, fill=color, font=font)
    if det.keypoints is not None:
        index = {n: i for i, n in enumerate(det.keypoint_names)}
        radius = max(2, round(min(h, w) / 150))
        for kps in det.keypoints:
            seen = kps[:, 2] > KEYPOINT_THRESHOLD
            for li, (a, b) in enumerate(det.keypoint_skeleton):
                i, j = index[a], index[b]
                if seen[i] and seen[j]:
                    draw.line([tuple(kps[i, :2]), tuple(kps[j, :2])], fill=_skeleton_color(li), width=width + 1)
            for x, y, _s in kps[seen]:
                draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(255, 0, 0))
    return np.asarray(img, dtype=np.uint8)


class _Painter:
    """One renderer's two drawings (see :class:`~d2ov_core.runtime.tasks.base.Painter`)."""

    def __init__(self, instances, segments):
        self.instances, self.segments = instances, segments


_PAINTERS = {
    "detectron2": _Painter(_render_detectron2, _segments_detectron2),
    "plain": _Painter(_render_plain, _segments_plain),
}
