"""Instance segmentation (Mask R-CNN): detections with a full-image mask each."""

from __future__ import annotations

from typing import Any

from ..detections import Detections
from .base import Task

__all__ = ["InstanceSegmentation", "TASK"]


class InstanceSegmentation(Task):
    name = "instance_segmentation"
    label = "Instance segmentation"
    iou_types = ("bbox", "segm")

    def holds(self, det: Detections) -> bool:
        return det.masks is not None

    def tolerance_text(self, tol: Any) -> str:
        return f", mask IoU >= {tol.mask_iou}"


TASK = InstanceSegmentation()
