"""Drawing :class:`~d2ov_core.detections.Detections` with Detectron2's ``Visualizer``.

Input: the RGB uint8 image the detections were made on (original pixels) and the detections.
Output: RGB uint8 ``(H, W, 3)``. Imports detectron2 (lazily), never torch tensors into the result.
"""

from __future__ import annotations

import numpy as np

from .detections import Detections

__all__ = ["render"]


def render(image_rgb: np.ndarray, det: Detections, class_names: list[str] | None = None) -> np.ndarray:
    """Boxes, labels with scores and masks drawn as Detectron2 draws them."""
    from . import compat

    compat.apply()
    from detectron2.data import Metadata
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.visualizer import ColorMode, Visualizer
    import torch

    names = list(class_names) if class_names is not None else sorted(set(det.labels.tolist()))
    meta = Metadata(name="d2ov")
    meta.thing_classes = names
    inst = Instances(det.image_size)
    inst.pred_boxes = Boxes(torch.from_numpy(det.boxes.copy()))
    inst.scores = torch.from_numpy(det.scores.copy())
    inst.pred_classes = torch.from_numpy(det.class_ids.copy())
    if det.masks is not None:
        inst.pred_masks = torch.from_numpy(det.masks.copy())
    vis = Visualizer(image_rgb, metadata=meta, scale=1.0, instance_mode=ColorMode.IMAGE)
    out = vis.draw_instance_predictions(inst)
    return np.asarray(out.get_image(), dtype=np.uint8)
