"""What every task does the same way; a task module overrides what differs (see the package)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from ..detections import Detections, Segment, rle_encode
from ..postprocess import postprocess
from ..preprocess import Geometry
from ..settings import IRMetadata

__all__ = ["Task", "Painter"]


class Painter(Protocol):
    """What a renderer (:mod:`d2ov_core.serve.render`) offers a task to draw with; ``RGB uint8 (H, W, 3)``
    in and out."""

    def instances(self, image_rgb: np.ndarray, det: Detections, names: list[str]) -> np.ndarray:
        """Boxes with ``name 97%`` labels, and the masks and keypoints ``det`` holds."""

    def segments(
        self, image_rgb: np.ndarray, segment_map: np.ndarray, segments: Sequence[Segment], names: list[str]
    ) -> np.ndarray:
        """Every segment of an int ``(H, W)`` map of segment ids filled and labelled (things by class
        name and score, stuff by name)."""


class Task:
    """A task: detection, the base every other task refines.

    Attributes:
        name: the IR's ``task`` value.
        label: how the app names it.
        examples: the prefix of the demo model's sample images (``<examples>_*.jpg``) and the name of
            the app's example set that fits it; ``examples_label`` describes them.
        iou_types: the COCO evaluations of its results (``bbox``, ``segm``, ``keypoints``).
        segment_map: its results hold a map of segment ids with its ``segments`` (see :class:`Detections`),
            measured by PQ given the set's segment annotations.
        table_columns: the app's table of a result (see :meth:`table_rows`).
        measure: the module of :mod:`d2ov_core.measure` holding its own measure beside COCO AP
            (``MEASURE``, a :class:`~d2ov_core.measure.evaluate.TaskMeasure`), or ``""``.
        coco_results_note: what :meth:`coco_results` leaves out of the task's answer ("": nothing),
            said beside them (the batch's COCO-results JSON).
    """

    name = "detection"
    label = "Object detection"
    examples = "shapes"
    examples_label = "synthetic shapes"
    iou_types: tuple[str, ...] = ("bbox",)
    segment_map = False
    table_columns: tuple[str, ...] = ("label", "score", "x0", "y0", "x1", "y1")
    measure = ""
    coco_results_note = ""

    # ------------------------------------------------------------------ decoding
    def prepare(self) -> None:
        """Work done once, when a predictor of this task is made, so that its first image does not
        wait for it (e.g. compiling decoding code)."""

    def decode_options(self, metadata: IRMetadata) -> dict[str, Any]:
        """What :meth:`decode` needs from the IR's metadata (read once, when the IR is loaded)."""
        return {}

    def decode(
        self,
        raw: dict[str, np.ndarray],
        geometry: Geometry,
        labels: Sequence[str],
        threshold: float,
        mask_threshold: float,
        options: dict[str, Any],
    ) -> Detections:
        """The graph's named outputs -> :class:`Detections` in original-image pixels, ``geometry``
        mapping them back (:func:`~d2ov_core.runtime.postprocess.postprocess`; ``options`` from
        :meth:`decode_options`)."""
        return postprocess(raw, geometry, labels, threshold=threshold, mask_threshold=mask_threshold, **options)

    def holds(self, det: Detections) -> bool:
        """Whether ``det`` is a result of this task (see :func:`~d2ov_core.runtime.tasks.task_of`)."""
        return True

    def model_info(self, metadata: IRMetadata) -> dict[str, Any]:
        """The task's keys of the model block of ``d2ov predict --json`` (after ``classes``)."""
        return {}

    # ------------------------------------------------------------------ JSON (Detections.to_dict, from_dict)
    def instance_json(self, det: Detections, i: int) -> dict[str, Any]:
        """The task's keys of instance ``i`` in ``d2ov predict --json`` (after its box and mask)."""
        return {}

    def result_json(self, det: Detections, with_masks: bool) -> dict[str, Any]:
        """The task's keys of a result in ``d2ov predict --json`` (after its instances)."""
        return {}

    def fields_from_json(self, result: dict[str, Any], image_size: tuple[int, int]) -> dict[str, Any]:
        """The :class:`Detections` fields the task's keys of ``result`` hold (none when absent): the
        inverse of :meth:`instance_json` and :meth:`result_json`."""
        return {}

    # ------------------------------------------------------------------ COCO results
    def coco_results(self, det: Detections, image_id: int, category_of: Mapping[int, int]) -> list[dict[str, Any]]:
        """``det`` in COCO's results format (what ``COCO.loadRes`` reads, what Detectron2's
        ``instances_to_coco_json`` writes): one ``{"image_id", "category_id", "bbox": [x, y, w, h],
        "score"}`` per detection whose class ``category_of`` maps (class id -> category id; others are
        left out), plus ``"segmentation"`` (COCO RLE) when :attr:`iou_types` has ``segm`` and ``det``
        masks. Values unrounded (float32 as Python floats)."""
        with_masks = "segm" in self.iou_types and det.masks is not None
        out = []
        for i in range(len(det)):
            cat = category_of.get(int(det.class_ids[i]))
            if cat is None:
                continue
            x0, y0, x1, y1 = (float(v) for v in det.boxes[i])
            r: dict[str, Any] = {
                "image_id": image_id,
                "category_id": cat,
                "score": float(det.scores[i]),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
            }
            if with_masks:
                r["segmentation"] = rle_encode(det.masks[i])  # type: ignore[index]
            out.append(r | self.coco_result_extra(det, i))
        return out

    def coco_result_extra(self, det: Detections, i: int) -> dict[str, Any]:
        """The task's keys of detection ``i``'s COCO result (after ``segmentation``)."""
        return {}

    # ------------------------------------------------------------------ presenting
    def table_rows(self, det: Detections) -> list[list[Any]]:
        """The app's table of ``det``, one row per detection, :attr:`table_columns` in order."""
        return [
            [str(l), round(float(s), 3), *[round(float(v), 1) for v in b]]
            for l, s, b in zip(det.labels, det.scores, det.boxes)
        ]

    def summary(self, det: Detections, model: dict[str, Any], threshold: float) -> str:
        """What the app says it found (Markdown); ``model``: the model block."""
        return f"**{len(det)}** detections at threshold {threshold:.2f}"

    def draw(self, image_rgb: np.ndarray, det: Detections, names: list[str], painter: Painter) -> np.ndarray:
        """``det`` drawn on the image with ``painter`` (either renderer)."""
        return painter.instances(image_rgb, det, names)

    # ------------------------------------------------------------------ verifying
    def compare(self, ref: Detections, cand: Detections) -> dict[str, Any]:
        """What :func:`~d2ov_core.measure.verify.match` adds to the detection-by-detection comparison
        of two results of the same image (fields of its ``Comparison``)."""
        return {}

    def tolerance_text(self, tol: Any) -> str:
        """The task's part of ``d2ov verify``'s closing line (``tol``: its ``Tolerance``)."""
        return ""

    def __repr__(self) -> str:
        return f"<task {self.name}>"
