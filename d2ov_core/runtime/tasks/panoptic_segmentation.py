"""Panoptic segmentation (Panoptic FPN): detections plus a map of segments, things and stuff.

Decoding adds the semantic head's logits (the IR's ``sem_seg`` output: label 0 all things, then the
``stuff_classes``) and the panoptic merge (:mod:`d2ov_core.runtime.panoptic`); the result's map is the model's answer whatever the threshold
(it only selects the instances listed). The app's table lists the map's segments; two results are
compared segment by segment (:func:`~d2ov_core.runtime.panoptic.compare_panoptic`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..detections import Detections, rle_decode, rle_encode_labels
from ..panoptic import PanopticParams, compare_panoptic, compile_kernels
from ..settings import IRMetadata
from .base import Painter
from .instance_segmentation import InstanceSegmentation

__all__ = ["PanopticSegmentation", "TASK"]


class PanopticSegmentation(InstanceSegmentation):
    name = "panoptic_segmentation"
    label = "Panoptic segmentation"
    examples = "panoptic"
    examples_label = "shapes over textured regions"
    table_columns = ("segment", "class", "thing/stuff", "area px", "score")
    segment_map = True
    measure = "panoptic_quality"
    coco_results_note = (
        "panoptic model: its thing instances (box, mask, score) are the results; the panoptic map "
        "(stuff segments) is not in COCO's results format and is not exported here"
    )

    def prepare(self) -> None:
        compile_kernels()

    def decode_options(self, metadata: IRMetadata) -> dict[str, Any]:
        m = metadata
        return {
            "combine": PanopticParams(
                tuple(m.stuff_classes),
                int(m.sem_seg_stride),
                int(m.size_divisibility),
                float(m.panoptic_overlap_threshold),
                int(m.panoptic_stuff_area_threshold),
                float(m.panoptic_score_threshold),
            )
        }

    def holds(self, det: Detections) -> bool:
        return det.segment_map is not None

    def model_info(self, metadata: IRMetadata) -> dict[str, Any]:
        return {
            "stuff_classes": list(metadata.stuff_classes),
            "panoptic_score_threshold": metadata.panoptic_score_threshold,
        }

    def result_json(self, det: Detections, with_masks: bool) -> dict[str, Any]:
        """``"panoptic": {"segments": [{id, label, category_id, isthing, score, area, mask}]}``, each
        segment's pixels of the map as COCO RLE (segments do not overlap; pixels in none of them have
        no segment)."""
        if det.segment_map is None:
            return {}
        masks = rle_encode_labels(det.segment_map, [seg.id for seg in det.segments]) if with_masks else []
        return {
            "panoptic": {
                "segments": [
                    {
                        **seg.to_dict(),
                        "score": None if seg.score is None else round(float(seg.score), 6),
                        **({"mask": masks[k]} if with_masks else {}),
                    }
                    for k, seg in enumerate(det.segments)
                ]
            }
        }

    def fields_from_json(self, result: dict[str, Any], image_size: tuple[int, int]) -> dict[str, Any]:
        doc = result.get("panoptic")
        if doc is None:
            return {}
        seg_map = np.zeros(image_size, np.int32)
        for seg in doc["segments"]:
            seg_map[rle_decode(seg["mask"])] = int(seg["id"])
        return {
            "segment_map": seg_map,
            "segments": tuple({k: v for k, v in seg.items() if k != "mask"} for seg in doc["segments"]),
        }

    def table_rows(self, det: Detections) -> list[list[Any]]:
        """One row per segment of the map: id, class, thing or stuff, area in pixels, score."""
        return [
            [
                seg.id,
                seg.label,
                "thing" if seg.isthing else "stuff",
                seg.area,
                None if seg.score is None else round(float(seg.score), 3),
            ]
            for seg in det.segments
        ]

    def summary(self, det: Detections, model: dict[str, Any], threshold: float) -> str:
        if det.segment_map is None:
            return super().summary(det, model, threshold)
        return (
            f"**{len(det.segments)}** panoptic segments ({sum(s.isthing for s in det.segments)} things, "
            f"instances scoring at least {model.get('panoptic_score_threshold', 0.5):g}), {len(det)} detections "
            f"at threshold {threshold:.2f}"
        )

    def draw(self, image_rgb: np.ndarray, det: Detections, names: list[str], painter: Painter) -> np.ndarray:
        if det.segment_map is None:
            return super().draw(image_rgb, det, names, painter)
        return painter.segments(image_rgb, det.segment_map, det.segments, names)

    def compare(self, ref: Detections, cand: Detections) -> dict[str, Any]:
        if ref.segment_map is None or cand.segment_map is None:
            return {}
        return compare_panoptic(ref, cand)

    def tolerance_text(self, tol: Any) -> str:
        return f", mask IoU >= {tol.mask_iou}, every panoptic segment matched with IoU >= {tol.segment_iou}"


TASK = PanopticSegmentation()
