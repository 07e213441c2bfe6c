"""`Detections`: the one result type of d2ov, from predictor to renderer to JSON to UI.

Contract:
  * ``boxes``: float32 ``(N, 4)``, ``x0, y0, x1, y1`` in ORIGINAL-image pixels (the image the user
    gave, after EXIF orientation), clipped to the image.
  * ``scores``: float32 ``(N,)`` in ``[0, 1]``, sorted descending by the producers in this package.
  * ``class_ids``: int64 ``(N,)``, contiguous ids into the model's class names.
  * ``labels``: ``(N,)`` numpy array of ``str`` (the class names).
  * ``masks``: bool ``(N, H, W)`` full-image masks, or ``None`` for detection-only models.
  * ``keypoints``: float32 ``(N, K, 3)`` ``[x, y, score]`` in original-image pixels (keypoint models),
    or ``None``; ``keypoint_names`` (K names, the model's order) and ``keypoint_skeleton`` (pairs of
    names joined by a line when drawn) describe them. ``score`` is Detectron2's keypoint score (a
    softmax value at the heatmap's peak, > 0; drawn when above ``KEYPOINT_THRESHOLD``).
  * ``segment_map``: int32 ``(H, W)`` segment ids, 0 = no segment (tasks whose answer is a map of
    segments, things and stuff), or ``None``;
    ``segments`` describes them, one :class:`Segment` per id in id order (``id``, ``label``,
    ``category_id``, ``isthing``, ``score``, ``area``; dicts with those keys are taken too). The map
    is the model's answer (Detectron2's merge with its own score threshold): selecting instances
    (``filter``, indexing) leaves it as it is.
  * ``track_ids``: int64 ``(N,)`` ids that follow an object from frame to frame of a video (a
    tracker's answer, :mod:`d2ov_core.serve.track`), ``-1`` for a detection no track holds yet; or
    ``None`` (no tracking: still images, videos without ``--track``).
  * ``image_size``: ``(H, W)`` of the original image.
  * ``timings``: milliseconds per stage (``preprocess``, ``inference``, ``postprocess``, ``total``).

A broken contract (arrays of the wrong shape) is a bug in the producer, not a user mistake: it raises
``ValueError``, not a :class:`~d2ov_core.errors.D2ovError`.

Nothing here imports torch, detectron2 or openvino.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Detections",
    "Segment",
    "rle_encode",
    "rle_decode",
    "predictions_document",
    "PredictionsWriter",
    "KEYPOINT_THRESHOLD",
]


@dataclasses.dataclass(frozen=True)
class Segment:
    """One segment of a result's ``segment_map``: its ``id`` in the map (1, 2, ...), its class name
    ``label`` and ``category_id`` (an index into the model's ``labels`` for things, into its
    ``stuff_classes`` for stuff), ``isthing``, the instance's ``score`` (``None`` for stuff) and its
    ``area`` in pixels of the map."""

    id: int
    label: str
    category_id: int
    isthing: bool
    score: float | None
    area: int

    @classmethod
    def of(cls, value: Segment | Mapping[str, Any]) -> Segment:
        """A segment from itself or from a dict with its fields (as the JSON holds them)."""
        if isinstance(value, Segment):
            return value
        fields = {f.name for f in dataclasses.fields(cls)}
        missing, extra = fields - set(value), set(value) - fields
        if missing or extra:
            raise ValueError(
                f"Detections.segments: expected keys {sorted(fields)}, found {sorted(value)}"
                + (f" (missing {sorted(missing)})" if missing else "")
            )
        return cls(**value)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: A keypoint counts as visible (drawn, compared by ``verify``) when its score exceeds this:
#: Detectron2's Visualizer's threshold.
KEYPOINT_THRESHOLD = 0.05


@dataclasses.dataclass
class Detections:
    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    labels: np.ndarray
    image_size: tuple[int, int]
    masks: np.ndarray | None = None
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    keypoints: np.ndarray | None = None
    keypoint_names: tuple[str, ...] = ()
    keypoint_skeleton: tuple[tuple[str, str], ...] = ()
    segment_map: np.ndarray | None = None
    segments: tuple[Segment, ...] = ()
    track_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32)
        if self.boxes.size == 0:
            self.boxes = self.boxes.reshape(0, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.class_ids = np.asarray(self.class_ids, dtype=np.int64).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=str).reshape(-1)
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        n = len(self.scores)
        if self.boxes.ndim != 2 or self.boxes.shape != (n, 4):
            raise ValueError(f"Detections.boxes: expected shape ({n}, 4), found {self.boxes.shape}")
        for name in ("class_ids", "labels"):
            arr = getattr(self, name)
            if arr.shape != (n,):
                raise ValueError(f"Detections.{name}: expected shape ({n},), found {arr.shape}")
        if self.masks is not None:
            self.masks = np.asarray(self.masks, dtype=bool)
            h, w = self.image_size
            if self.masks.shape != (n, h, w):
                raise ValueError(f"Detections.masks: expected shape ({n}, {h}, {w}), found {self.masks.shape}")
        if self.track_ids is not None:
            self.track_ids = np.asarray(self.track_ids, dtype=np.int64).reshape(-1)
            if self.track_ids.shape != (n,):
                raise ValueError(f"Detections.track_ids: expected shape ({n},), found {self.track_ids.shape}")
        self.keypoint_names = tuple(str(k) for k in self.keypoint_names)
        self.keypoint_skeleton = tuple((str(a), str(b)) for a, b in self.keypoint_skeleton)
        if self.keypoints is not None:
            self.keypoints = np.asarray(self.keypoints, dtype=np.float32)
            k = len(self.keypoint_names)
            if self.keypoints.shape != (n, k, 3):
                raise ValueError(
                    f"Detections.keypoints: expected shape ({n}, {k}, 3) for {k} keypoint names, "
                    f"found {self.keypoints.shape}"
                )
        unknown = {p for pair in self.keypoint_skeleton for p in pair} - set(self.keypoint_names)
        if unknown:
            raise ValueError(f"Detections.keypoint_skeleton: names {sorted(unknown)} are not keypoint names")
        self.segments = tuple(Segment.of(seg) for seg in self.segments)
        if self.segment_map is not None:
            self.segment_map = np.asarray(self.segment_map, dtype=np.int32)
            if self.segment_map.shape != self.image_size:
                raise ValueError(
                    f"Detections.segment_map: expected shape {self.image_size}, found {self.segment_map.shape}"
                )
            ids = [seg.id for seg in self.segments]
            if ids != list(range(1, len(ids) + 1)):
                raise ValueError(f"Detections.segments: expected ids 1..{len(ids)} in order, found {ids}")
            if int(self.segment_map.max(initial=0)) > len(ids) or int(self.segment_map.min(initial=0)) < 0:
                raise ValueError(f"Detections.segment_map: ids outside 0..{len(ids)} (its segments)")
        elif self.segments:
            raise ValueError("Detections.segments given without a segment_map")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def empty(cls, image_size: tuple[int, int], with_masks: bool = False) -> Detections:
        h, w = image_size
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            class_ids=np.zeros((0,), np.int64),
            labels=np.zeros((0,), dtype=str),
            image_size=(h, w),
            masks=np.zeros((0, h, w), bool) if with_masks else None,
        )

    @classmethod
    def from_dict(cls, result: dict[str, Any]) -> Detections:
        """The inverse of :meth:`to_dict`: one ``results[i]`` of ``d2ov predict --json`` back as
        Detections (values as written: boxes to 1e-3 px, scores to 1e-6; masks and maps decoded from
        their RLE; no timings; each task reads back its own keys). Raises ``ValueError`` on a result
        that is not one."""
        from .tasks import all_tasks  # the tasks build on this module: imported when used

        try:
            h, w = int(result["height"]), int(result["width"])
            instances = list(result["instances"])
            has_masks = bool(instances) and all("mask" in i for i in instances)
            tracked = bool(instances) and all("track_id" in i for i in instances)
            fields: dict[str, Any] = {}
            for task in all_tasks():
                fields.update(task.fields_from_json(result, (h, w)))
            return cls(
                boxes=np.array([i["box"] for i in instances], np.float32).reshape(-1, 4),
                scores=np.array([i["score"] for i in instances], np.float32),
                class_ids=np.array([i["class_id"] for i in instances], np.int64),
                labels=np.array([i["label"] for i in instances], dtype=str),
                image_size=(h, w),
                masks=np.stack([rle_decode(i["mask"]) for i in instances]) if has_masks else None,
                track_ids=np.array([-1 if i["track_id"] is None else i["track_id"] for i in instances], np.int64)
                if tracked
                else None,
                **fields,
            )
        except (KeyError, TypeError, IndexError) as e:
            raise ValueError(f"not a d2ov predict result: missing or malformed {e}") from None
        except ValueError as e:
            raise ValueError(f"not a d2ov predict result: {e}") from None

    # ------------------------------------------------------------------ container protocol
    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, index: Any) -> Detections:
        """Select detections with a boolean mask, an index array, a slice or an int."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(
            boxes=self.boxes[index],
            scores=self.scores[index],
            class_ids=self.class_ids[index],
            labels=self.labels[index],
            image_size=self.image_size,
            masks=None if self.masks is None else self.masks[index],
            timings=dict(self.timings),
            keypoints=None if self.keypoints is None else self.keypoints[index],
            keypoint_names=self.keypoint_names,
            keypoint_skeleton=self.keypoint_skeleton,
            segment_map=self.segment_map,
            segments=self.segments,
            track_ids=None if self.track_ids is None else self.track_ids[index],
        )

    def with_track_ids(self, track_ids: np.ndarray) -> Detections:
        """These detections with ``track_ids`` (``(N,)``, ``-1``: untracked)."""
        return dataclasses.replace(self, track_ids=np.asarray(track_ids, dtype=np.int64))

    @property
    def has_keypoints(self) -> bool:
        return self.keypoints is not None

    def filter(self, threshold: float) -> Detections:
        """Detections with ``score >= threshold`` (timings kept)."""
        return self[self.scores >= threshold]

    # ------------------------------------------------------------------ serialisation
    def to_dict(self, with_masks: bool = True) -> dict[str, Any]:
        """Plain-Python dict (JSON-ready) in the schema of ``d2ov predict --json``'s ``results[i]``,
        minus the ``image`` key. Masks become COCO RLE ``{"size": [H, W], "counts": str}``. Each task
        whose fields the result holds (:meth:`~d2ov_core.runtime.tasks.Task.holds`, in task order) adds
        its keys to each instance and to the result (:meth:`~d2ov_core.runtime.tasks.Task.instance_json`,
        ``result_json``): keypoints ``[[x, y, score], ...]`` per instance with their names once per
        image, a map's segments, ..."""
        from .tasks import all_tasks  # the tasks build on this module: imported when used

        tasks = [t for t in all_tasks() if t.holds(self)]
        h, w = self.image_size
        instances = []
        for i in range(len(self)):
            inst: dict[str, Any] = {
                "label": str(self.labels[i]),
                "class_id": int(self.class_ids[i]),
                "score": round(float(self.scores[i]), 6),
                "box": [round(float(v), 3) for v in self.boxes[i]],
            }
            if self.track_ids is not None:
                inst["track_id"] = int(self.track_ids[i]) if self.track_ids[i] >= 0 else None
            if with_masks and self.masks is not None:
                inst["mask"] = rle_encode(self.masks[i])
            for task in tasks:
                inst.update(task.instance_json(self, i))
            instances.append(inst)
        out: dict[str, Any] = {
            "height": h,
            "width": w,
            "timing_ms": {k: round(float(v), 3) for k, v in self.timings.items()},
            "instances": instances,
        }
        for task in tasks:
            out.update(task.result_json(self, with_masks))
        return out


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of a 2-D boolean mask, same bytes as ``pycocotools.mask.encode``.

    Returns ``{"size": [H, W], "counts": str}`` (column-major runs, starting with zeros). Only the
    window around the mask's pixels is scanned: a mask of a few thousand pixels in a 12 MP image
    costs milliseconds, not the whole image's column-major copy.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"rle_encode: expected a 2-D mask, found shape {mask.shape}")
    h, w = mask.shape
    rows = np.flatnonzero(mask.any(axis=1))
    if mask.size == 0 or len(rows) == 0:
        return _rle_of_runs(np.zeros(0, np.int64), np.zeros(0, np.int64), h, w)
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    cols = np.flatnonzero(mask[y0:y1].any(axis=0))
    x0, x1 = int(cols[0]), int(cols[-1]) + 1
    tall = y1 - y0 + 2  # the window with a row of zeros above and below: every column's runs close in it
    padded = np.zeros((tall, x1 - x0), np.int8)
    padded[1:-1] = mask[y0:y1, x0:x1]
    step = np.diff(padded.ravel(order="F"))
    starts, ends = np.flatnonzero(step == 1) + 1, np.flatnonzero(step == -1) + 1

    def image_index(p: np.ndarray) -> np.ndarray:  # padded window's column-major index -> the image's
        return (x0 + p // tall) * h + y0 + p % tall - 1

    starts, ends = image_index(starts), image_index(ends)
    joined = ends[:-1] == starts[1:]  # a run through a column's last row into the next column's first
    starts = starts[np.concatenate([[True], ~joined])]
    ends = ends[np.concatenate([~joined, [True]])]
    return _rle_of_runs(starts, ends, h, w)


def rle_encode_labels(label_map: np.ndarray, ids) -> list[dict[str, Any]]:
    """:func:`rle_encode` of ``label_map == i`` for each ``i`` of ``ids``, from one column-major pass
    over the map (a 12 MP segment map with 20 segments: one pass instead of 20 comparisons and
    scans). The same bytes as encoding each mask on its own."""
    label_map = np.asarray(label_map)
    if label_map.ndim != 2:
        raise ValueError(f"rle_encode_labels: expected a 2-D map, found shape {label_map.shape}")
    h, w = label_map.shape
    if label_map.size and label_map.min() >= 0 and label_map.max() < 256:
        label_map = label_map.astype(np.uint8)  # a quarter of the memory to transpose
    flat = np.ascontiguousarray(label_map.T).ravel()  # column-major, as COCO counts runs
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    ends = np.concatenate([change, [flat.size]]).astype(np.int64)
    values = flat[starts]
    # runs of one value never touch (a change separates them): each value's runs are its mask's
    return [_rle_of_runs(starts[mine], ends[mine], h, w) for mine in (values == i for i in ids)]


def _rle_of_runs(starts: np.ndarray, ends: np.ndarray, h: int, w: int) -> dict[str, Any]:
    """The COCO RLE of an ``h x w`` mask whose pixels are the column-major runs ``[starts[k], ends[k])``
    (sorted, apart): zeros, ones, zeros, ... counts, starting with zeros, the last zeros only if any."""
    bounds = [np.zeros(1, np.int64), np.column_stack([starts, ends]).ravel().astype(np.int64)]
    if not len(ends) or ends[-1] < h * w:
        bounds.append(np.array([h * w], np.int64))
    return {"size": [int(h), int(w)], "counts": _rle_counts_to_string(np.diff(np.concatenate(bounds)))}


def _rle_counts_to_string(runs) -> str:
    """The LEB128-like, delta-coded ASCII format of the COCO API (``maskApi.c rleToString``), for all
    counts at once: each count (minus the one two before it, from the fourth on) in 5-bit chunks,
    low first, 0x20 set on every chunk but the last, plus 48."""
    x = np.asarray(runs, dtype=np.int64).ravel()
    if not x.size:
        return ""
    d = x.copy()
    d[3:] -= x[1:-2]
    shifts = 5 * np.arange(12)  # 60 bits: the last chunk's rest shifted by at most 60 (< 64)
    chunk = (d[:, None] >> shifts) & 0x1F
    rest = d[:, None] >> (shifts + 5)  # arithmetic: a negative delta's rest ends at -1
    last = np.where(chunk & 0x10, rest == -1, rest == 0)
    k = np.argmax(last, axis=1)  # the chunk each count ends with
    j = np.arange(12)[None, :]
    chars = chunk + 48 + np.where(j < k[:, None], 0x20, 0)
    return chars[j <= k[:, None]].astype(np.uint8).tobytes().decode("ascii")


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`rle_encode`: COCO compressed RLE -> bool ``(H, W)``."""
    h, w = rle["size"]
    s = rle["counts"]
    if isinstance(s, bytes):
        s = s.decode("ascii")
    runs: list[int] = []
    p = 0
    while p < len(s):
        x = 0
        k = 0
        more = True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    flat = np.zeros(h * w, dtype=bool)
    pos = 0
    val = False
    for r in runs:
        if val:
            flat[pos : pos + r] = True
        pos += r
        val = not val
    return flat.reshape((w, h)).T


def predictions_document(
    model: dict[str, Any], backend: str, device: str, threshold: float, results: list[dict[str, Any]]
) -> dict[str, Any]:
    """The JSON document of ``d2ov predict --json`` and of the app's download (one schema, built
    here only): ``results`` are ``{"image": name, **Detections.to_dict()}``."""
    return {"model": model, "backend": backend, "device": device, "threshold": float(threshold), "results": results}


class PredictionsWriter:
    """:func:`predictions_document` written to ``path`` one result at a time, so that a long video or
    a large folder is never held in memory: the same bytes as ``json.dumps(document, indent=indent)``.
    A context manager; the file appears complete or not at all (written under a temporary name,
    renamed on a clean exit, removed on an error)."""

    def __init__(
        self,
        path: str | os.PathLike,
        model: dict[str, Any],
        backend: str,
        device: str,
        threshold: float,
        indent: int | None = 1,
    ):
        self.path = Path(path)
        self.indent = indent
        head = json.dumps(predictions_document(model, backend, device, threshold, []), indent=indent)
        end = "[]\n}" if indent is not None else "[]}"
        assert head.endswith(end), head[-20:]
        self._head = head[: -len(end)] + "["
        self._tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self._file: Any = None
        self.count = 0

    def __enter__(self) -> PredictionsWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self._tmp, "w")
        self._file.write(self._head)
        return self

    def add(self, result: dict[str, Any]) -> None:
        """One more entry of ``"results"`` (``{"image": name, **Detections.to_dict()}`` or a video
        frame's record)."""
        if self.indent is None:
            text = (", " if self.count else "") + json.dumps(result)
        else:
            pad = " " * (2 * self.indent)  # "results" is two levels deep
            body = "\n".join(pad + line for line in json.dumps(result, indent=self.indent).splitlines())
            text = (",\n" if self.count else "\n") + body
        self._file.write(text)
        self.count += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                if self.indent is None:
                    self._file.write("]}")
                else:
                    self._file.write(("\n" + " " * self.indent + "]" if self.count else "]") + "\n}")
            self._file.close()
            if exc_type is None:
                os.replace(self._tmp, self.path)
        finally:
            if self._tmp.exists():
                self._tmp.unlink()
