"""Panoptic quality (PQ, SQ, RQ) with COCO panopticapi's semantics, and COCO panoptic files.

The counting follows ``pq_compute_single_core`` of panopticapi's ``evaluation.py`` (github
cocodataset/panopticapi, 2021-06) step by step, on in-memory id maps instead of PNG folders:

  * A map is ``(H, W)`` segment ids; 0 is VOID (unlabeled). A predicted segment's area is its pixel
    count; a ground-truth segment's area is the ``area`` its record gives (panopticapi reads it from
    the JSON), or its pixel count when the record has none.
  * A ground-truth segment (not crowd) and a predicted segment of the same category match when
    ``IoU > 0.5`` (0.5 itself does not match), where
    ``IoU = inter / (pred_area + gt_area - inter - pred ∩ gt VOID)``: the part of the prediction on
    ground-truth VOID is taken out of the union. Each match adds 1 to the category's TP and its IoU
    to the category's IoU sum; IoU > 0.5 makes matches one-to-one.
  * Unmatched ground-truth segments are FN, except crowd ones (``iscrowd == 1``), which are never
    matched nor counted. Each category keeps ONE crowd region per image, the last crowd segment of
    that category in the ground truth's segment order (as panopticapi's ``crowd_labels_dict``).
  * An unmatched predicted segment is FP unless more than half of its area lies on ground-truth VOID
    plus its category's crowd region.
  * Pixels of ground-truth ids that the segment list does not name are neither VOID nor a segment:
    they count in no intersection with VOID (panopticapi skips them the same way).
  * Per category: ``PQ = iou_sum / (TP + FP/2 + FN/2)``, ``SQ = iou_sum / TP`` (0 when TP is 0),
    ``RQ = TP / (TP + FP/2 + FN/2)``. All / Things / Stuff average these over the categories of the
    group that occur (``TP + FP + FN > 0``); a group with none reports 0 with ``n = 0`` (panopticapi
    divides by zero there).

Why hand-written: panopticapi has no PyPI release. Of the registry's alternatives,
``panopticapi-lite`` 0.2.0 (the same ``evaluation.py`` repackaged) requires ``numpy<2`` (the
project is on numpy 2) and, like panopticapi, only reads JSON + PNG folders; ``hotcoco`` 1.3.0 (Rust)
agrees with panopticapi but takes only JSON + PNG folders or RLE datasets and reports no per-class
TP/FP/FN; torchmetrics' ``PanopticQuality`` needs torch and has no crowd regions nor things/stuff
split. The counting is 40 lines of numpy; ``tests/unit/test_panoptic_quality.py`` checks it against a
transcription of panopticapi's per-image loop on random maps (exact TP/FP/FN and IoU sums).

PNG files: a segment id is stored as ``R + 256 * G + 65536 * B`` (panopticapi's ``rgb2id``).
Nothing here imports torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageError, InputError
from ..runtime.tasks import get_task
from .evaluate import TaskMeasure

__all__ = [
    "read_panoptic_png",
    "write_panoptic_png",
    "load_panoptic_gt",
    "PanopticGT",
    "PanopticImage",
    "PQAccumulator",
    "PanopticScorer",
    "VOID",
]

#: segment id of unlabeled pixels
VOID = 0
#: pair key = gt_id * OFFSET + pred_id (ids are < 2**24, as a PNG's 3 bytes hold)
OFFSET = 256 * 256 * 256


# -------------------------------------------------------------------------------------------------
# PNG files


def read_panoptic_png(path) -> np.ndarray:
    """Reads a COCO panoptic PNG.

    Args:
        path: an RGB PNG (RGBA: alpha ignored; palette: expanded to RGB).

    Returns:
        ``(H, W)`` int32 segment ids, ``R + 256 * G + 65536 * B``.

    Raises:
        ImageError: the file is missing, not an image, or not RGB.
    """
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise ImageError(f"panoptic PNG not found: {p}")
    try:
        with Image.open(p) as im:
            if im.mode == "P":
                im = im.convert("RGB")
            if im.mode not in ("RGB", "RGBA"):
                raise ImageError(f"{p}: expected an RGB panoptic PNG (id = R + 256 G + 65536 B), found mode {im.mode}")
            rgb = np.asarray(im)[:, :, :3].astype(np.int32)
    except (UnidentifiedImageError, OSError) as e:
        raise ImageError(f"{p}: not a readable PNG ({e})") from None
    return rgb[:, :, 0] + 256 * rgb[:, :, 1] + 65536 * rgb[:, :, 2]


def write_panoptic_png(path, ids: np.ndarray) -> None:
    """Writes ``(H, W)`` segment ids as a COCO panoptic PNG (the inverse of :func:`read_panoptic_png`).

    Args:
        path: the file to write (its folder must exist).
        ids: ``(H, W)`` integer ids in ``[0, 2**24)``.

    Raises:
        InputError: ``ids`` is not a 2-D integer array in range.
    """
    from PIL import Image

    a = _as_id_map(ids, "ids")
    rgb = np.stack([a % 256, (a // 256) % 256, a // 65536], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(Path(path), format="PNG")


# -------------------------------------------------------------------------------------------------
# ground truth: COCO panoptic JSON + PNG folder


@dataclass(frozen=True)
class PanopticImage:
    """One ground-truth image. Fields read as attributes or as keys (``rec.png`` or ``rec["png"]``).

    Attributes:
        image_id: the COCO image id.
        file_name: the IMAGE's file name (``json["images"]``), e.g. ``000000000139.jpg``.
        png: path of its panoptic PNG.
        segments: ``[{"id", "category_id", "iscrowd", "area"}]`` (``area`` None when the JSON has none).
        height, width: from ``json["images"]`` (None when absent).
    """

    image_id: int
    file_name: str
    png: Path
    segments: list[dict[str, Any]]
    height: int | None = None
    width: int | None = None

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None


@dataclass
class PanopticGT:
    """A COCO panoptic ground truth: categories and one :class:`PanopticImage` per annotation.

    Attributes:
        categories: ``[{"id", "name", "isthing"}]`` in the JSON's order.
        images: the annotated images, in the JSON's annotation order.
        by_file_name: image file name -> record.
        by_image_id: image id -> record.
        json_path, png_dir: where they were read from.
    """

    categories: list[dict[str, Any]]
    images: list[PanopticImage]
    json_path: Path | None = None
    png_dir: Path | None = None
    by_file_name: dict[str, PanopticImage] = field(init=False, repr=False)
    by_image_id: dict[int, PanopticImage] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.by_file_name = {r.file_name: r for r in self.images}
        self.by_image_id = {r.image_id: r for r in self.images}

    def __len__(self) -> int:
        return len(self.images)


def load_panoptic_gt(json_path, png_dir=None) -> PanopticGT:
    """Reads a COCO panoptic ground truth (``panoptic_val2017.json`` and its PNG folder).

    Args:
        json_path: the COCO panoptic JSON (``images``, ``annotations`` with ``segments_info``,
            ``categories`` with ``isthing``).
        png_dir: the folder of the annotations' PNG files; default: the folder next to the JSON named
            like its stem (``panoptic_val2017.json`` -> ``panoptic_val2017/``).

    Returns:
        The :class:`PanopticGT`. PNG files are not opened here (see :func:`read_panoptic_png`).

    Raises:
        InputError: a missing or malformed file or folder; the message says what was expected and
            what was found.
    """
    jp = Path(json_path)
    if not jp.is_file():
        raise InputError(f"panoptic annotations not found: {jp}")
    try:
        data = json.loads(jp.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{jp}: expected a COCO panoptic JSON file, found invalid JSON ({e})") from None
    if not isinstance(data, dict):
        raise InputError(
            f"{jp}: expected a JSON object with images, annotations and categories, found a {type(data).__name__}"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            found = "nothing" if key not in data else f"a {type(data[key]).__name__}"
            raise InputError(f"{jp}: expected a list '{key}' (COCO panoptic format), found {found}")
    where = str(jp)
    categories = _categories(data["categories"], where)
    cat_ids = {c["id"] for c in categories}
    pdir = Path(png_dir) if png_dir is not None else jp.with_suffix("")
    if not pdir.is_dir():
        raise InputError(f"{jp}: expected its PNG folder at {pdir}, found no such folder")

    image_info: dict[int, dict] = {}
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise InputError(f"{jp}: expected images[{i}] to have 'id' and 'file_name', found {_short(im)}")
        image_info[_int(im["id"], f"{where}: images[{i}].id")] = im

    records: list[PanopticImage] = []
    seen: set[int] = set()
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not all(k in ann for k in ("image_id", "file_name", "segments_info")):
            raise InputError(
                f"{jp}: expected annotations[{i}] to have 'image_id', 'file_name' and "
                f"'segments_info', found {_short(ann)}"
            )
        image_id = _int(ann["image_id"], f"{where}: annotations[{i}].image_id")
        if image_id in seen:
            raise InputError(f"{jp}: expected one annotation per image, found two for image_id {image_id}")
        seen.add(image_id)
        im = image_info.get(image_id)
        if im is None:
            raise InputError(f"{jp}: annotations[{i}] is for image_id {image_id}, which 'images' does not list")
        segments = _segments(ann["segments_info"], f"{where}: annotations[{i}] (image_id {image_id})", cat_ids, gt=True)
        records.append(
            PanopticImage(
                image_id=image_id,
                file_name=str(im["file_name"]),
                png=pdir / str(ann["file_name"]),
                segments=[
                    {"id": s, "category_id": c, "iscrowd": crowd, "area": area}
                    for s, (c, crowd, area) in segments.items()
                ],
                height=im.get("height"),
                width=im.get("width"),
            )
        )
    return PanopticGT(categories=categories, images=records, json_path=jp, png_dir=pdir)


# -------------------------------------------------------------------------------------------------
# PQ


class PQAccumulator:
    """Accumulates panopticapi's per-category TP / FP / FN / IoU sum over images.

    Args:
        categories: ``[{"id", "name", "isthing"}]``, the data set's categories (ids and names unique);
            segments are given in these ids.

    Raises:
        InputError: a category lacks a key, or ids or names repeat.
    """

    def __init__(self, categories: list[dict]):
        self.categories = _categories(categories, "categories")
        self._stats: dict[int, list] = {c["id"]: [0, 0, 0, 0.0] for c in self.categories}  # tp, fp, fn, iou
        #: images added so far
        self.n_images = 0

    def add(self, gt_map, gt_segments, pred_map, pred_segments) -> None:
        """Adds one image.

        Args:
            gt_map: ``(H, W)`` ground-truth segment ids, 0 = VOID.
            gt_segments: ``[{"id", "category_id", "iscrowd"?, "area"?}]``; ``iscrowd`` defaults to 0,
                ``area`` (as panopticapi, the JSON's) to the segment's pixel count in ``gt_map``.
                Ids of ``gt_map`` it does not list are ignored, as panopticapi does.
            pred_map: ``(H, W)`` predicted segment ids, 0 = VOID (unassigned).
            pred_segments: ``[{"id", "category_id"}]`` (other keys ignored); must list exactly the
                non-zero ids of ``pred_map``.

        Raises:
            InputError: maps of different shapes or not 2-D integer ids in ``[0, 2**24)``, an unknown
                category, a repeated or zero segment id, or predicted segments and ``pred_map``
                that disagree.
        """
        gt = _as_id_map(gt_map, "gt_map")
        pred = _as_id_map(pred_map, "pred_map")
        if gt.shape != pred.shape:
            raise InputError(f"expected gt_map and pred_map of the same shape, found {gt.shape} and {pred.shape}")
        known = set(self._stats)
        gt_segs = _segments(gt_segments, "gt_segments", known, gt=True)
        pred_segs = _segments(pred_segments, "pred_segments", known, gt=False)

        ids, counts = np.unique(pred, return_counts=True)
        pred_area: dict[int, int] = {}
        for i, n in zip(ids.tolist(), counts.tolist()):
            if i == VOID:
                continue
            if i not in pred_segs:
                raise InputError(
                    f"expected pred_segments to list every id of pred_map, found id {i} ({n} pixels) not listed"
                )
            pred_area[i] = n
        absent = [i for i in pred_segs if i not in pred_area]
        if absent:
            raise InputError(
                f"expected every id of pred_segments in pred_map, found {len(absent)} with no pixel (ids {absent[:5]})"
            )

        # pixel counts of every (gt id, pred id) pair, in panopticapi's order (ascending key)
        keys, inter = np.unique(gt.astype(np.uint64) * np.uint64(OFFSET) + pred.astype(np.uint64), return_counts=True)
        pairs = list(zip((keys // np.uint64(OFFSET)).tolist(), (keys % np.uint64(OFFSET)).tolist(), inter.tolist()))
        on_void: dict[int, int] = {}
        gt_pixels: dict[int, int] = {}
        for g, p, n in pairs:
            if g == VOID:
                on_void[p] = n
            gt_pixels[g] = gt_pixels.get(g, 0) + n
        gt_area = {g: (a if a is not None else gt_pixels.get(g, 0)) for g, (_, _, a) in gt_segs.items()}

        stats = self._stats
        gt_matched: set[int] = set()
        pred_matched: set[int] = set()
        for g, p, n in pairs:
            gs, ps = gt_segs.get(g), pred_segs.get(p)
            if gs is None or ps is None or gs[1] == 1 or gs[0] != ps[0]:
                continue
            iou = n / (pred_area[p] + gt_area[g] - n - on_void.get(p, 0))
            if iou > 0.5:
                st = stats[gs[0]]
                st[0] += 1
                st[3] += iou
                gt_matched.add(g)
                pred_matched.add(p)

        crowd_of: dict[int, int] = {}
        for g, (cat, crowd, _) in gt_segs.items():
            if g in gt_matched:
                continue
            if crowd == 1:
                crowd_of[cat] = g  # the last crowd segment of a category wins, as in panopticapi
                continue
            stats[cat][2] += 1

        pair_count = {(g, p): n for g, p, n in pairs}
        for p, (cat, _, _) in pred_segs.items():
            if p in pred_matched:
                continue
            ignored = on_void.get(p, 0)
            if cat in crowd_of:
                ignored += pair_count.get((crowd_of[cat], p), 0)
            if ignored / pred_area[p] > 0.5:
                continue
            stats[cat][1] += 1
        self.n_images += 1

    def counts(self) -> dict[int, dict[str, float]]:
        """The raw sums: ``{category_id: {"tp", "fp", "fn", "iou"}}`` for every category (``iou``: the
        sum of matched IoUs, a fraction)."""
        return {c: {"tp": s[0], "fp": s[1], "fn": s[2], "iou": s[3]} for c, s in self._stats.items()}

    def result(self) -> dict:
        """PQ, SQ, RQ in percent (0-100), rounded to 3 decimals.

        Returns:
            ``{"All": {"PQ", "SQ", "RQ", "n"}, "Things": {...}, "Stuff": {...},
            "per_class": {name: {"PQ", "SQ", "RQ", "tp", "fp", "fn"}}}``; ``n`` is the number of
            categories averaged (those with ``tp + fp + fn > 0``; 0 -> values 0.0); ``per_class``
            has those categories only, in the categories' order.
        """
        per_cat: dict[int, tuple[float, float, float]] = {}
        per_class: dict[str, dict] = {}
        for c in self.categories:
            tp, fp, fn, iou = self._stats[c["id"]]
            if tp + fp + fn == 0:
                continue
            denom = tp + 0.5 * fp + 0.5 * fn
            pq, sq, rq = iou / denom, (iou / tp if tp else 0.0), tp / denom
            per_cat[c["id"]] = (pq, sq, rq)
            per_class[c["name"]] = {"PQ": _pct(pq), "SQ": _pct(sq), "RQ": _pct(rq), "tp": tp, "fp": fp, "fn": fn}
        out: dict[str, Any] = {}
        for group, isthing in (("All", None), ("Things", True), ("Stuff", False)):
            vals = [
                per_cat[c["id"]]
                for c in self.categories
                if c["id"] in per_cat and (isthing is None or (c["isthing"] == 1) == isthing)
            ]
            n = len(vals)
            out[group] = {
                "PQ": _pct(sum(v[0] for v in vals) / n) if n else 0.0,
                "SQ": _pct(sum(v[1] for v in vals) / n) if n else 0.0,
                "RQ": _pct(sum(v[2] for v in vals) / n) if n else 0.0,
                "n": n,
            }
        out["per_class"] = per_class
        return out


# -------------------------------------------------------------------------------------------------
# validation


def _pct(x: float) -> float:
    return round(100.0 * float(x), 3)


def _short(obj: Any, limit: int = 80) -> str:
    s = repr(obj)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise InputError(f"{what}: expected an integer, found {_short(value)}")
    return int(value)


def _as_id_map(a: Any, what: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2:
        hint = " (an RGB panoptic image? decode it with read_panoptic_png)" if arr.ndim == 3 else ""
        raise InputError(f"{what}: expected a 2-D (H, W) map of segment ids, found shape {arr.shape}{hint}")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{what}: expected integer segment ids, found dtype {arr.dtype}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= OFFSET):
        raise InputError(f"{what}: expected segment ids in [0, 2**24), found [{int(arr.min())}, {int(arr.max())}]")
    return arr.astype(np.int64, copy=False)


def _categories(categories: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(categories, (list, tuple)) or not categories:
        raise InputError(
            f"{where}: expected a non-empty list of categories {{id, name, isthing}}, found {_short(categories)}"
        )
    out, ids, names = [], set(), set()
    for i, c in enumerate(categories):
        if not isinstance(c, Mapping) or not all(k in c for k in ("id", "name", "isthing")):
            raise InputError(f"{where}: expected category {i} to have 'id', 'name' and 'isthing', found {_short(c)}")
        cid = _int(c["id"], f"{where}: category {i} id")
        name = str(c["name"])
        if cid in ids:
            raise InputError(f"{where}: expected unique category ids, found id {cid} twice")
        if name in names:
            raise InputError(f"{where}: expected unique category names, found '{name}' twice")
        ids.add(cid)
        names.add(name)
        out.append({"id": cid, "name": name, "isthing": int(c["isthing"])})
    return out


def _segments(segments: Any, where: str, known: set[int], gt: bool) -> dict[int, tuple[int, int, int | None]]:
    """``{id: (category_id, iscrowd, area or None)}`` in the list's order."""
    if not isinstance(segments, (list, tuple)):
        raise InputError(f"{where}: expected a list of segments {{id, category_id}}, found {_short(segments)}")
    out: dict[int, tuple[int, int, int | None]] = {}
    for i, s in enumerate(segments):
        if not isinstance(s, Mapping) or "id" not in s or "category_id" not in s:
            raise InputError(f"{where}: expected segment {i} to have 'id' and 'category_id', found {_short(s)}")
        sid = _int(s["id"], f"{where}: segment {i} id")
        cat = _int(s["category_id"], f"{where}: segment {i} category_id")
        if sid == VOID or not 0 < sid < OFFSET:
            raise InputError(f"{where}: expected segment ids in [1, 2**24) (0 is VOID), found {sid}")
        if sid in out:
            raise InputError(f"{where}: expected unique segment ids, found id {sid} twice")
        if cat not in known:
            raise InputError(
                f"{where}: segment {sid} has category_id {cat}, expected one of the "
                f"{len(known)} categories ({_short(sorted(known), 60)})"
            )
        crowd = _int(s.get("iscrowd", 0), f"{where}: segment {sid} iscrowd") if gt else 0
        area = s.get("area") if gt else None
        if area is not None:
            area = _int(area, f"{where}: segment {sid} area")
            if area <= 0:
                raise InputError(f"{where}: expected segment {sid} to have a positive area, found {area}")
        out[sid] = (cat, crowd, area)
    return out


class PanopticScorer:
    """PQ of a panoptic predictor's maps against COCO panoptic ground truth, image by image (what
    :func:`~d2ov_core.measure.evaluate.evaluate` adds for a task whose results hold a segment map)."""

    def __init__(self, predictor, panoptic: str | Path, panoptic_pngs: str | Path | None = None):
        if not get_task(predictor.task).segment_map:
            raise InputError(f"--panoptic needs a panoptic model; {predictor.name} is a {predictor.task} model")
        self.gt = load_panoptic_gt(panoptic, panoptic_pngs)
        cats = self.gt.categories
        things = {c["name"]: c["id"] for c in cats if c["isthing"]}
        stuff = {c["name"]: c["id"] for c in cats if not c["isthing"]}
        self.thing_cat = {i: things[n] for i, n in enumerate(predictor.labels) if n in things}
        self.stuff_cat = {i: stuff[n] for i, n in enumerate(predictor.metadata.stuff_classes) if n in stuff}
        if not self.thing_cat and not self.stuff_cat:
            raise InputError(
                f"none of {predictor.name}'s classes is a category of {panoptic} "
                f"({', '.join(list(things) + list(stuff))[:80]}...)"
            )
        self.acc = PQAccumulator(cats)

    def add(self, file_name: str, det) -> None:
        rec = self.gt.by_file_name.get(file_name) or self.gt.by_file_name.get(Path(file_name).name)
        if rec is None:
            raise InputError(f"{file_name}: no panoptic annotation in {self.gt.json_path}")
        pred = det.segment_map.copy()
        segments = []
        for seg in det.segments:
            cat = (self.thing_cat if seg.isthing else self.stuff_cat).get(seg.category_id)
            if cat is None:  # a class the data set does not have: its pixels are left unlabeled
                pred[pred == seg.id] = 0
            else:
                segments.append({"id": seg.id, "category_id": cat})
        present = set(np.unique(pred).tolist())
        segments = [s for s in segments if s["id"] in present]
        self.acc.add(read_panoptic_png(rec.png), rec.segments, pred, segments)

    def result(self) -> dict[str, Any]:
        return self.acc.result()


def _lines(result: dict[str, Any]) -> list[str]:
    return [
        f"  {'PQ ' + group:<9}  PQ {g['PQ']:5.2f}  SQ {g['SQ']:5.2f}  RQ {g['RQ']:5.2f}  ({g['n']} classes)"
        for group in ("All", "Things", "Stuff")
        for g in [result[group]]
    ]


def _row(result: dict[str, Any]) -> dict[str, Any]:
    return {"PQ": result["All"]["PQ"], "PQ_things": result["Things"]["PQ"], "PQ_stuff": result["Stuff"]["PQ"]}


#: the panoptic task's measure (see :class:`~d2ov_core.measure.evaluate.TaskMeasure`): PQ / SQ / RQ
#: (All, Things, Stuff), segments matched to the panoptic categories BY NAME (things to thing
#: categories, stuff to stuff categories)
MEASURE = TaskMeasure(
    title="panoptic PQ",
    key="panoptic",
    options={
        "panoptic": "panoptic models: COCO panoptic JSON of the same images (PQ, SQ, RQ measured too)",
        "panoptic_pngs": "its PNG folder (default: beside the JSON, named like it)",
    },
    scorer=PanopticScorer,
    lines=_lines,
    row=_row,
)
