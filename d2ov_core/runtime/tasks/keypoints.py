"""Keypoint detection (Keypoint R-CNN): detections with named keypoints, decoded from each box's
heatmaps (:func:`~d2ov_core.runtime.keypoints.heatmaps_to_keypoints`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..detections import Detections
from ..keypoints import compile_search
from ..settings import IRMetadata
from .base import Task

__all__ = ["Keypoints", "TASK"]


class Keypoints(Task):
    name = "keypoints"
    label = "Keypoints"
    examples = "figures"
    examples_label = "stick figures"
    iou_types = ("bbox", "keypoints")

    def prepare(self) -> None:
        compile_search()

    def decode_options(self, metadata: IRMetadata) -> dict[str, Any]:
        return {"keypoint_names": metadata.keypoint_names, "keypoint_skeleton": metadata.keypoint_skeleton}

    def holds(self, det: Detections) -> bool:
        return det.keypoints is not None

    def model_info(self, metadata: IRMetadata) -> dict[str, Any]:
        return {"keypoint_names": list(metadata.keypoint_names), "keypoint_skeleton": metadata.keypoint_skeleton}

    def instance_json(self, det: Detections, i: int) -> dict[str, Any]:
        """``keypoints``: ``[[x, y, score], ...]`` in ``keypoint_names`` order."""
        if det.keypoints is None:
            return {}
        return {
            "keypoints": [[round(float(x), 3), round(float(y), 3), round(float(s), 6)] for x, y, s in det.keypoints[i]]
        }

    def result_json(self, det: Detections, with_masks: bool) -> dict[str, Any]:
        """``keypoint_names`` and ``keypoint_skeleton``, once per image."""
        return {
            "keypoint_names": list(det.keypoint_names),
            "keypoint_skeleton": [list(p) for p in det.keypoint_skeleton],
        }

    def fields_from_json(self, result: dict[str, Any], image_size: tuple[int, int]) -> dict[str, Any]:
        if "keypoint_names" not in result:
            return {}
        names = tuple(result["keypoint_names"])
        return {
            "keypoints": np.array([i["keypoints"] for i in result["instances"]], np.float32).reshape(-1, len(names), 3),
            "keypoint_names": names,
            "keypoint_skeleton": tuple(tuple(p) for p in result.get("keypoint_skeleton", ())),
        }

    def coco_result_extra(self, det: Detections, i: int) -> dict[str, Any]:
        """``keypoints``: ``[x, y, score] * K`` flat, x and y minus 0.5 (COCO's keypoints are pixel
        indices; Detectron2's ``instances_to_coco_json`` does the same)."""
        if det.keypoints is None:
            return {}
        kp = det.keypoints[i].astype(np.float64)
        kp[:, :2] -= 0.5
        return {"keypoints": kp.reshape(-1).tolist()}

    def tolerance_text(self, tol: Any) -> str:
        return f", keypoints <= {tol.keypoint_px} px"


TASK = Keypoints()
