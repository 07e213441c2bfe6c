"""Drawing :class:`~d2ov_core.runtime.detections.Detections` on the image they were made on.

Input: the RGB uint8 image (original pixels) and its detections. Output: RGB uint8 ``(H, W, 3)``.

What is drawn is the task's choice (:meth:`~d2ov_core.runtime.tasks.Task.draw`): instances, or a
map of segments; each renderer offers both (a :class:`~d2ov_core.runtime.tasks.base.Painter`).

Two renderers:
  * ``plain`` (the default, everywhere: the app, ``d2ov predict --render``, video frames): d2ov's own
    drawing with numpy and Pillow, in the look of Detectron2's ``Visualizer`` (its sizes and line
    widths for the image's size, boxes and masks at half opacity with outlines, ``name 97%`` labels
    in a lighter tint on a dark box at the box's corner or beside a small instance, the largest
    instance drawn first; keypoints as red dots joined by the skeleton's coloured lines; a map of
    segments filled at 0.7 opacity, things outlined in their colour and stuff off-white). Where it
    differs: a colour per class (the ``Visualizer`` picks one at random per instance and drawing, so
    an object would change colour from frame to frame), and a mask's holes stay holes. It runs in
    milliseconds on the demo samples where the ``Visualizer`` takes 0.05-0.4 s (12 MP: 0.07-0.44 s
    against 2.7-15 s; ``tools/bench_render.py``, the performance docs).
  * ``detectron2``: Detectron2's ``Visualizer`` itself, on request (``style="detectron2"``, ``d2ov
    bench --renderer detectron2``) where torch and Detectron2 are importable. Imports them lazily.

Tracked detections (a video with ``--track``: ``det.track_ids``) are drawn in a colour per track, the
same in every frame, labelled ``#id name 97%``, by either renderer.

The app draws a large photo on its display copy (:func:`for_display`, at most
:data:`DISPLAY_MAX_SIDE` px long); everything else draws on the image as given.
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
import importlib.util

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import InputError
from ..export import compat
from ..runtime.detections import KEYPOINT_THRESHOLD, Detections
from ..runtime.tasks import get_task, task_of

__all__ = ["STYLES", "DISPLAY_MAX_SIDE", "has_visualizer", "checked_style", "render", "for_display"]


STYLES = ("plain", "detectron2")
DISPLAY_MAX_SIDE = 2048  # the app draws on a copy of a larger photo this long: what a browser shows


@functools.lru_cache(maxsize=1)
def has_visualizer() -> bool:
    """Whether Detectron2's ``Visualizer`` (the ``detectron2`` style) can be imported here."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("detectron2") is None:
        return False
    try:
        compat.apply()
        from detectron2.utils.visualizer import Visualizer  # noqa: F401
    except Exception:  # a broken or partial install: draw without it
        return False
    return True


def checked_style(style: str | None) -> str:
    """``style`` (``None``: ``plain``) if this machine can draw in it, else one :class:`InputError`."""
    if style not in (None, *STYLES):
        raise InputError(f"renderer: expected one of {', '.join(STYLES)}, found {style!r}")
    if style == "detectron2" and not has_visualizer():
        raise InputError("renderer detectron2: needs torch and Detectron2 importable here; 'plain' needs neither")
    return style or "plain"


def render(
    image_rgb: np.ndarray,
    det: Detections,
    class_names: list[str] | None = None,
    style: str | None = None,
    task: str | None = None,
) -> np.ndarray:
    """``det`` drawn on ``image_rgb`` as its task draws it (``task``: the model's; default: the task
    whose result ``det`` is); ``style``: one of :data:`STYLES` (default ``plain``)."""
    names = list(class_names) if class_names is not None else sorted(set(det.labels.tolist()))
    painter = _PAINTERS[checked_style(style)]
    return (get_task(task) if task else task_of(det)).draw(image_rgb, det, names, painter)


def for_display(image_rgb: np.ndarray, det: Detections, max_side: int = DISPLAY_MAX_SIDE):
    """``(image, det)`` to draw for a person to look at: a photo longer than ``max_side`` px becomes
    every k-th pixel of it (the one at the centre of each k x k block, k the smallest whole number
    that brings it within ``max_side``) and ``det`` the same detections in that copy (boxes and
    keypoints divided by k; masks and the segment map sampled at the same pixels, a mask only in its
    window near its box). Drawing, encoding and sending a 12 MP photo cost about 4x what its 3 MP
    copy costs, and the answer (``det``, its JSON) stays the original's. Smaller images are returned
    as they are."""
    h, w = image_rgb.shape[:2]
    k = -(-max(h, w) // max_side)
    if k <= 1:
        return image_rgb, det
    every = slice(k // 2, None, k)  # the pixels kept, along each axis
    small = image_rgb[every, every]
    masks = None
    if det.masks is not None:
        masks = np.zeros((len(det), *small.shape[:2]), bool)
        for i, mask in enumerate(det.masks):
            window = _mask_window(mask, det.boxes[i])
            if window is not None:  # the kept pixels in it, from the first at or after its start
                y, x = (-(-(part.start - k // 2) // k) for part in window)
                kept = mask[k // 2 + y * k : window[0].stop : k, k // 2 + x * k : window[1].stop : k]
                masks[i, y : y + kept.shape[0], x : x + kept.shape[1]] = kept
    return small, dataclasses.replace(
        det,
        boxes=det.boxes / np.float32(k),
        image_size=small.shape[:2],
        masks=masks,
        keypoints=None if det.keypoints is None else det.keypoints / np.float32([k, k, 1]),
        segment_map=None if det.segment_map is None else det.segment_map[every, every],
    )


def _render_detectron2(image_rgb: np.ndarray, det: Detections, names: list[str]) -> np.ndarray:
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
    stuff = {seg.category_id: seg.label for seg in segments if not seg.isthing}
    return ["things"] + [stuff.get(i, f"stuff_{i}") for i in range(1, max(stuff, default=0) + 1)]


def _segments_detectron2(image_rgb: np.ndarray, segment_map: np.ndarray, segments, names: list[str]) -> np.ndarray:
    compat.apply()
    import torch
    from detectron2.data import Metadata
    from detectron2.utils.visualizer import Visualizer

    meta = Metadata(name="d2ov_segments")
    meta.thing_classes = names
    meta.stuff_classes = _stuff_names(segments)
    info = [
        {
            "id": seg.id,
            "category_id": seg.category_id,
            "isthing": seg.isthing,
            **({"score": seg.score} if seg.isthing else {"area": seg.area}),
        }
        for seg in segments
    ]
    vis = Visualizer(image_rgb, metadata=meta, scale=1.0)
    out = vis.draw_panoptic_seg(torch.from_numpy(segment_map.astype(np.int64)), info)
    return np.asarray(out.get_image(), dtype=np.uint8)


def _segments_plain(image_rgb: np.ndarray, segment_map: np.ndarray, segments, names: list[str]) -> np.ndarray:
    """Every segment filled with its colour at the ``Visualizer``'s panoptic opacity (0.7) and
    outlined (things in their colour, stuff off-white), in one pass over the image (segments do not
    overlap); labels at the median of each segment's pixels: things ``name 97%``, stuff by name."""
    image_rgb = np.asarray(image_rgb, dtype=np.uint8)
    h, w = image_rgb.shape[:2]
    segment_map = np.asarray(segment_map)
    size = max([int(segment_map.max(initial=0))] + [int(seg.id) for seg in segments]) + 1
    shown = np.zeros(size, bool)  # per segment id: drawn or not, its colour, its outline's colour
    colors = np.zeros((size, 3), np.uint8)
    edge = np.zeros((size, 3), np.uint8)
    look = _Look(h, w)
    step = max(1, int(np.sqrt(h * w / 250_000)))  # label positions from about a quarter MP of the map
    sampled = segment_map[::step, ::step]
    labels = []
    for seg in segments:
        ys, xs = np.nonzero(sampled == seg.id)
        if not len(ys):
            continue
        color = _class_color(seg.category_id) if seg.isthing else _skeleton_color(seg.category_id)
        shown[seg.id], colors[seg.id] = True, color
        edge[seg.id] = color if seg.isthing else _OFF_WHITE
        middle = (float(np.median(xs)) * step, float(np.median(ys)) * step)
        if seg.isthing:
            text = seg.label + (f" {seg.score * 100:.0f}%" if seg.score is not None else "")
            box = (xs.min() * step, ys.min() * step, (xs.max() + 1) * step, (ys.max() + 1) * step)
            labels.append((look.label_at(middle, box, center=True), text, color, look.label_size(box)))
        else:
            labels.append(((*middle, "center"), seg.label, color, look.font_size))
    if size <= 256:  # compared and looked up as bytes: a quarter of the memory traffic
        segment_map = segment_map.astype(np.uint8)
    out = _tint(image_rgb, segment_map, colors, shown, SEGMENT_ALPHA)
    border = np.zeros((h, w), bool)  # a neighbour (4-connected) of another segment
    across_rows = segment_map[1:] != segment_map[:-1]  # each pair compared once, marked on both sides
    border[1:] |= across_rows
    border[:-1] |= across_rows
    across_cols = segment_map[:, 1:] != segment_map[:, :-1]
    border[:, 1:] |= across_cols
    border[:, :-1] |= across_cols
    ys, xs = np.nonzero(border)
    on = segment_map[ys, xs]
    painted = shown[on]
    out[ys[painted], xs[painted]] = edge[on[painted]]
    for (x, y, align), text, color, font_size in labels:
        _put_label(out, text, x, y, align, color, font_size)
    return out


def _tint(
    image_rgb: np.ndarray, segment_map: np.ndarray, colors: np.ndarray, shown: np.ndarray, alpha: float
) -> np.ndarray:
    """Each pixel of a ``shown`` segment blended with its segment's colour (``colors``, by id) at
    ``alpha``, the others as they are: with Pillow's palette and masked paste where ids fit in a byte
    (12 MP: about 0.1 s, a third of numpy's gathers), else with numpy; the same weights either way."""
    weights = np.where(shown, round(alpha * 255), 0).astype(np.uint8)  # per id, of 255
    if len(shown) > 256:
        w = np.take(weights, segment_map).astype(np.uint32)[..., None]
        blend = image_rgb * (255 - w) + np.take(colors, segment_map, axis=0) * w
        return ((blend + 127) // 255).astype(np.uint8)
    h, w = segment_map.shape
    ids = np.ascontiguousarray(segment_map, dtype=np.uint8)  # ids < 256 here
    palette, alphas = np.zeros((256, 3), np.uint8), np.zeros(256, np.uint8)
    palette[: len(colors)], alphas[: len(weights)] = colors, weights
    painted = Image.frombuffer("P", (w, h), ids.tobytes(), "raw", "P", 0, 1)
    painted.putpalette(palette.tobytes())
    out = Image.fromarray(image_rgb)
    out.paste(painted.convert("RGB"), (0, 0), Image.fromarray(ids, "L").point(alphas.tolist()))
    return np.array(out)


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


def _around(
    mask: np.ndarray, at: tuple[int, int] = (0, 0), size: tuple[int, int] | None = None
) -> tuple[slice, slice] | None:
    """The rows and columns that hold ``mask``'s pixels, one more on each side where the image has it
    (so :func:`_outline` of the window is the outline in the whole image); ``None`` for an empty mask.
    ``mask`` may be a part of the image: its corner at ``at`` in an image of ``size`` (default: the
    mask is the image); the window is in the image's rows and columns."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    h, w = size or mask.shape
    y0, x0 = at
    return (
        slice(max(y0 + rows[0] - 1, 0), min(y0 + rows[-1] + 2, h)),
        slice(max(x0 + cols[0] - 1, 0), min(x0 + cols[-1] + 2, w)),
    )


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def _edge(part: np.ndarray, width: int) -> np.ndarray:
    """A mask's outline ``width`` px wide (the Visualizer's polygon edge, centred on the contour): its
    own border pixels, and from 2 px on the ring just outside it too."""
    edge = _outline(part)
    if width >= 2:
        grown = part.copy()
        grown[1:, :] |= part[:-1, :]
        grown[:-1, :] |= part[1:, :]
        grown[:, 1:] |= part[:, :-1]
        grown[:, :-1] |= part[:, 1:]
        edge |= grown & ~part
    return edge


def _mask_window(mask: np.ndarray, box) -> tuple[slice, slice] | None:
    """:func:`_around` the mask, searched near its box first (a pasted mask reaches at most half a mask
    cell, 1/56 of the box, beyond it): a 12 MP mask then costs its box, not the image; the whole image
    is searched when the box does not hold every pixel of the mask."""
    if box is not None:
        x0, y0, x1, y1 = (float(v) for v in box)
        margin = max(x1 - x0, y1 - y0) / 28 + 2
        h, w = mask.shape
        rows = slice(max(0, int(y0 - margin)), min(h, int(np.ceil(y1 + margin)) + 1))
        cols = slice(max(0, int(x0 - margin)), min(w, int(np.ceil(x1 + margin)) + 1))
        near = mask[rows, cols]
        if near.size and np.count_nonzero(near) == np.count_nonzero(mask):
            return _around(near, (rows.start, cols.start), (h, w))
    return _around(mask)


def _paint_masks(
    out: np.ndarray, masks: np.ndarray, colors: list[tuple[int, int, int]], width: int = 1, boxes=None
) -> None:
    """Each mask half-tinted with its colour (the Visualizer's instance opacity, 0.5) and outlined
    ``width`` px wide in it, in place on the uint8 image ``out``; each in its window
    (:func:`_mask_window`: a mask costs its size, not the image's) with Pillow's masked paste (a C loop
    over the window, 2-3x numpy's blend)."""
    for k, (mask, color) in enumerate(zip(masks, colors)):
        window = _mask_window(mask, boxes[k] if boxes is not None else None)
        if window is None:
            continue
        part = mask[window]
        alpha = part.view(np.uint8) * np.uint8(128)  # the fill at half opacity, the outline opaque: one paste
        alpha[_edge(part, width)] = 255
        region = Image.fromarray(out[window])
        region.paste(color, None, Image.fromarray(alpha))
        out[window] = np.asarray(region)


_OFF_WHITE = (255, 255, 240)  # the Visualizer's outline of stuff
SEGMENT_ALPHA = 0.7  # the Visualizer's fill of a panoptic segment


@functools.lru_cache(maxsize=256)
def _lighter(color: tuple[int, int, int]) -> tuple[int, int, int]:
    """A label's text colour, the Visualizer's: lightness x1.7, then no channel under 0.2 and the
    largest at least 0.8, so that it reads on the dark box."""
    hue, light, sat = colorsys.rgb_to_hls(*(c / 255 for c in color))
    rgb = np.maximum(colorsys.hls_to_rgb(hue, min(1.0, light * 1.7), sat), 0.2)
    rgb[np.argmax(rgb)] = max(0.8, float(rgb.max()))
    r, g, b = (int(round(c * 255)) for c in rgb)
    return r, g, b


class _Look:
    """The Visualizer's sizes for an image of ``h`` x ``w`` pixels drawn at scale 1, in pixels: its
    font sizes and line widths are points on a 100 dpi figure (1 pt = 100/72 px); its keypoint dots
    have a radius of 3 px."""

    PX_PER_PT = 100 / 72

    def __init__(self, h: int, w: int):
        self.h, self.w = h, w
        self.font_pt = max(float(np.sqrt(h * w) // 90), 10.0)  # the Visualizer's default font size
        self.font_size = self.font_pt * self.PX_PER_PT
        self.box_width = max(int(round(max(self.font_pt / 4, 1) * self.PX_PER_PT)), 1)
        self.edge_width = max(int(round(max(self.font_pt // 15, 1) * self.PX_PER_PT)), 1)
        self.line_width = max(int(round(self.font_pt / 3 * self.PX_PER_PT)), 1)
        self.dot_radius = 3

    def label_size(self, box) -> float:
        """An instance label's font size: 0.6x the default, up to 1x for boxes a fifth of the image tall."""
        ratio = (box[3] - box[1]) / np.sqrt(self.h * self.w)
        return float(np.clip((ratio - 0.02) / 0.08 + 1, 1.2, 2) * 0.5 * self.font_size)

    def label_at(self, at, box, center: bool = False) -> tuple[float, float, str]:
        """Where an instance's label goes: ``at`` (a box's top-left corner; a segment's middle, centred
        on it), or beside a small instance (under 1000 px or 40 px tall) so as not to hide it."""
        x0, y0, x1, y1 = (float(v) for v in box)
        if (y1 - y0) * (x1 - x0) < 1000 or y1 - y0 < 40:
            return (x1, y0, "left") if y1 >= self.h - 5 else (x0, y1, "left")
        return float(at[0]), float(at[1]), "center" if center else "left"


@functools.lru_cache(maxsize=512)
def _glyphs(text: str, size: int) -> np.ndarray:
    """``text`` as an anti-aliased uint8 coverage mask (cached: a video labels the same texts frame
    after frame)."""
    font = _font(size)
    left, _top, right, _bottom = font.getbbox(text)
    ascent, descent = font.getmetrics()  # a line's full height, as the Visualizer's text box has
    canvas = Image.new("L", (max(1, int(right - left)), max(1, ascent + descent)), 0)
    ImageDraw.Draw(canvas).text((-left, 0), text, fill=255, font=font)
    return np.asarray(canvas)


def _put_label(
    out: np.ndarray, text: str, x: float, y: float, align: str, color: tuple[int, int, int], font_size: float
) -> None:
    """The Visualizer's label, in place: ``text`` in the lighter ``color`` on a black box at 0.8
    opacity, its top at ``y`` and its left edge (``align="left"``) or middle at ``x``, inside the image."""
    glyphs = _glyphs(text, max(6, int(round(font_size))))
    pad = max(1, int(round(font_size / 10)))
    th, tw = glyphs.shape[0] + 2 * pad, glyphs.shape[1] + 2 * pad
    h, w = out.shape[:2]
    left = x - tw / 2 if align == "center" else x
    x0 = max(0, int(round(min(max(0.0, left), w - tw))))
    y0 = max(0, int(round(min(max(0.0, y), h - th))))
    region = out[y0 : y0 + th, x0 : x0 + tw]
    cover = np.zeros((th, tw), np.uint16)
    cover[pad : pad + glyphs.shape[0], pad : pad + glyphs.shape[1]] = glyphs
    cover = cover[: region.shape[0], : region.shape[1], None]
    dark = (region.astype(np.uint16) * 51 + 127) // 255  # black at 0.8 opacity
    ink = np.asarray(_lighter(color), np.uint16)
    region[...] = ((dark * (255 - cover) + ink * cover + 127) // 255).astype(np.uint8)


def _put_box(out: np.ndarray, box, color: tuple[int, int, int], width: int) -> None:
    """A box's outline ``width`` px wide, centred on its edges, in ``color`` at half opacity (the
    Visualizer's), in place; each pixel blended once."""
    h, w = out.shape[:2]
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    half = width // 2
    top, bottom = max(0, y0 - half), min(h, max(y1, y0 + 1) + width - half)
    left, right = max(0, x0 - half), min(w, max(x1, x0 + 1) + width - half)
    inner_top, inner_bottom = min(bottom, top + width), max(top + width, bottom - width)
    strips = [
        (slice(top, inner_top), slice(left, right)),
        (slice(inner_bottom, bottom), slice(left, right)),
        (slice(inner_top, inner_bottom), slice(left, min(right, left + width))),
        (slice(inner_top, inner_bottom), slice(max(left + width, right - width), right)),
    ]
    ink = np.asarray(color, np.uint16)
    for rows, cols in strips:
        region = out[rows, cols]
        region[...] = ((region + ink + 1) >> 1).astype(np.uint8)


def _put_keypoints(out: np.ndarray, kps: np.ndarray, det: Detections, look: _Look) -> None:
    """The Visualizer's keypoints, in place: a red dot per visible keypoint (score above
    ``KEYPOINT_THRESHOLD``), then the skeleton's lines in a colour per line, and red lines nose to
    mid-shoulder to mid-hip where the model has those keypoints; drawn with Pillow in their window."""
    seen = kps[:, 2] > KEYPOINT_THRESHOLD
    if not seen.any():
        return
    at = {n: (float(kps[i, 0]), float(kps[i, 1])) for i, n in enumerate(det.keypoint_names) if seen[i]}
    lines = [
        (at[a], at[b], _skeleton_color(i)) for i, (a, b) in enumerate(det.keypoint_skeleton) if a in at and b in at
    ]
    if "left_shoulder" in at and "right_shoulder" in at:
        shoulders = tuple((p + q) / 2 for p, q in zip(at["left_shoulder"], at["right_shoulder"]))
        if "nose" in at:
            lines.append((at["nose"], shoulders, (255, 0, 0)))
        if "left_hip" in at and "right_hip" in at:
            hips = tuple((p + q) / 2 for p, q in zip(at["left_hip"], at["right_hip"]))
            lines.append((hips, shoulders, (255, 0, 0)))
    h, w = out.shape[:2]
    margin = look.line_width + look.dot_radius + 1
    xs, ys = kps[seen, 0], kps[seen, 1]
    x0, y0 = max(0, int(xs.min()) - margin), max(0, int(ys.min()) - margin)
    x1, y1 = min(w, int(np.ceil(xs.max())) + margin + 1), min(h, int(np.ceil(ys.max())) + margin + 1)
    if x0 >= x1 or y0 >= y1:
        return
    window = Image.fromarray(out[y0:y1, x0:x1])
    draw = ImageDraw.Draw(window)
    r = look.dot_radius
    for x, y in zip(xs - x0, ys - y0):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 0, 0))
    for (ax, ay), (bx, by), color in lines:
        draw.line([(ax - x0, ay - y0), (bx - x0, by - y0)], fill=color, width=look.line_width)
    out[y0:y1, x0:x1] = np.asarray(window)


def _render_plain(image_rgb: np.ndarray, det: Detections, names: list[str]) -> np.ndarray:
    """Instances as the Visualizer draws them (its sizes, opacities, label places, and its order: the
    largest box first, so that small ones stay visible; labels last), in a colour per class (per track in a video)."""
    image_rgb = np.asarray(image_rgb, dtype=np.uint8)
    if not len(det):
        return image_rgb.copy()
    look = _Look(*image_rgb.shape[:2])
    boxes = np.asarray(det.boxes, np.float64)
    order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable").tolist()
    out = image_rgb.copy()
    for i in order:
        color = _instance_color(det, i)
        _put_box(out, boxes[i], color, look.box_width)
        if det.masks is not None:
            _paint_masks(out, det.masks[i : i + 1], [color], look.edge_width, boxes[i : i + 1])
    if det.keypoints is not None:
        for i in order:
            _put_keypoints(out, det.keypoints[i], det, look)
    for i in order:  # labels over everything, as the Visualizer draws its text
        x, y, align = look.label_at(boxes[i][:2], boxes[i])
        _put_label(out, _instance_text(names, det, i), x, y, align, _instance_color(det, i), look.label_size(boxes[i]))
    return out


class _Painter:
    """One renderer's two drawings (see :class:`~d2ov_core.runtime.tasks.base.Painter`)."""

    def __init__(self, instances, segments):
        self.instances, self.segments = instances, segments


_PAINTERS = {
    "detectron2": _Painter(_render_detectron2, _segments_detectron2),
    "plain": _Painter(_render_plain, _segments_plain),
}
