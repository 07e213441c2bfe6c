"""Keypoint detection (Keypoint R-CNN): detections with named keypoints, decoded from each box's
heatmaps (:func:`~d2ov_core.runtime.keypoints.heatmaps_to_keypoints`)."""

from __future__ import annotations

from typing import Any

from ..detections import Detections
from .base import Task

__all__ = ["Keypoints", "TASK"]


class Keypoints(Task):
    name = "keypoints"
    label = "Keypoints"
    examples = "figures"
    examples_label = "stick figures"
    iou_types = ("bbox", "keypoints")

    def decode_options(self, metadata: Any) -> dict[str, Any]:
        return {"keypoint_names": metadata["keypoint_names"], "keypoint_skeleton": metadata["keypoint_skeleton"]}

    def holds(self, det: Detections) -> bool:
        return det.keypoints is not None

    def model_info(self, metadata: Any) -> dict[str, Any]:
        return {"keypoint_names": list(metadata["keypoint_names"]), "keypoint_skeleton": metadata["keypoint_skeleton"]}

    def tolerance_text(self, tol: Any) -> str:
        return f", keypoints <= {tol.keypoint_px} px"


TASK = Keypoints()
