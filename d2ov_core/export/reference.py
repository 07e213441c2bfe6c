"""The PyTorch reference: Detectron2 eager inference with the same weights, same output type.

It is Detectron2 with d2ov's one behavioural patch installed (:mod:`d2ov_core.export.patches`:
proposals of exactly equal objectness are ranked in index order, where Detectron2 leaves their order
to an unstable sort); for untied scores it is exactly Detectron2.

Does what Detectron2's ``DefaultPredictor`` does (BGR/RGB per ``cfg.INPUT.FORMAT``,
``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)``, ``model([{"image", "height", "width"}])``,
``detector_postprocess``) and returns :class:`~d2ov_core.detections.Detections` so it can be compared
with the OpenVINO predictor detection by detection.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..runtime import settings as S
from ..runtime.detections import Detections
from ..runtime.images import load_image
from ..runtime.ir import usable_cpus
from ..runtime.tasks import get_task
from ..store import catalog
from ..store.catalog import ModelSpec
from .model import build, cfg_metadata
from .tasks import for_task

__all__ = ["ReferencePredictor", "detections_of"]


def detections_of(
    inst, labels: list[str], image_size: tuple[int, int], metadata: S.IRMetadata | None = None, **extra: Any
) -> Detections:
    """Detectron2 ``Instances`` (already in original-image pixels) as :class:`Detections`: boxes, scores,
    classes named by ``labels``, masks and keypoints when present (keypoint names and skeleton from
    ``metadata``), and the task's ``extra`` fields."""
    classes = inst.pred_classes.numpy().astype(np.int64)
    keypoints = inst.has("pred_keypoints")
    return Detections(
        boxes=inst.pred_boxes.tensor.numpy(),
        scores=inst.scores.numpy(),
        class_ids=classes,
        labels=np.array([labels[c] for c in classes], dtype=str) if len(classes) else np.zeros((0,), str),
        image_size=image_size,
        masks=inst.pred_masks.numpy() if inst.has("pred_masks") else None,
        keypoints=inst.pred_keypoints.numpy() if keypoints else None,
        keypoint_names=tuple(metadata.keypoint_names) if keypoints and metadata else (),
        keypoint_skeleton=tuple(map(tuple, metadata.keypoint_skeleton)) if keypoints and metadata else (),
        **extra,
    )


class ReferencePredictor:
    def __init__(
        self, model: str | ModelSpec, weights: str | None = None, threads: int | None = None, progress: bool = True
    ):
        import torch

        self.spec = catalog.get(model) if isinstance(model, str) else model
        torch.set_num_threads(threads or usable_cpus())
        self.model, self.cfg, self.weights_info = build(self.spec, weights, progress=progress)
        self.metadata = cfg_metadata(self.cfg, self.spec)
        self.labels = list(self.spec.classes)
        self.task = self.metadata.task
        from detectron2.data import transforms as T

        self._aug = T.ResizeShortestEdge([self.cfg.INPUT.MIN_SIZE_TEST] * 2, self.cfg.INPUT.MAX_SIZE_TEST)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def confidence_threshold(self) -> float:
        """The score threshold ``threshold=None`` means (the settings' default, as for an IR)."""
        return float(S.SETTINGS["confidence_threshold"].default)

    def predict(self, image: Any, threshold: float | None = None, mask_threshold: float | None = None) -> Detections:
        """Detect objects in ``image`` (path, bytes, PIL image or RGB uint8 array), as
        :meth:`d2ov_core.runtime.predictor.Predictor.predict` does. ``mask_threshold`` is accepted for
        the same signature; Detectron2 pastes masks at its own 0.5."""
        return self.predict_image(image, threshold, mask_threshold)[1]

    def predict_image(
        self, image: Any, threshold: float | None = None, mask_threshold: float | None = None
    ) -> tuple[np.ndarray, Detections]:
        """:meth:`predict`, also returning the decoded RGB image (what renderers draw on): the same
        contract as the OpenVINO predictor's ``predict_image``, so commands take either."""
        import torch

        thr = S.check_value(
            "confidence_threshold", S.SETTINGS["confidence_threshold"].default if threshold is None else threshold
        )
        t0 = time.perf_counter()
        rgb = load_image(image)
        t1 = time.perf_counter()
        inputs = self._inputs(rgb)
        h, w = rgb.shape[:2]
        t2 = time.perf_counter()
        with torch.no_grad():
            out = self.model([inputs])[0]
        inst = out["instances"]
        t3 = time.perf_counter()
        extra = for_task(self.task).eager_fields(out, self.labels, self.metadata)
        keep = inst.scores >= thr
        inst = inst[keep]
        det = detections_of(inst, self.labels, (h, w), self.metadata, **extra)
        t4 = time.perf_counter()
        # the model's forward includes postprocessing; "inference" here is the whole eager forward
        det.timings = {
            "decode": (t1 - t0) * 1e3,
            "preprocess": (t2 - t1) * 1e3,
            "inference": (t3 - t2) * 1e3,
            "postprocess": (t4 - t3) * 1e3,
            "total": (t4 - t1) * 1e3,
        }
        return rgb, det

    def _inputs(self, rgb: np.ndarray) -> dict[str, Any]:
        """Detectron2's model input for an RGB image: its ``INPUT.FORMAT``, resized as at test time."""
        import torch

        img = rgb[:, :, ::-1] if self.cfg.INPUT.FORMAT == "BGR" else rgb
        resized = self._aug.get_transform(img).apply_image(img)
        tensor = torch.as_tensor(np.ascontiguousarray(resized).astype("float32").transpose(2, 0, 1))
        return {"image": tensor, "height": rgb.shape[0], "width": rgb.shape[1]}

    def predict_before_nms(self, image: Any) -> tuple[Detections, float]:
        """Every detection of ``image`` Detectron2 scores above its heads' test threshold, before its
        last non-maximum suppression (boxes, scores and classes only, in image pixels), and that
        suppression's IoU threshold: what :func:`d2ov_core.measure.verify.match` needs to tell two
        overlapping boxes scoring alike, of which either side may keep either, from a wrong box."""
        import torch
        from detectron2.modeling.postprocessing import detector_postprocess

        rgb = load_image(image)
        inputs = self._inputs(rgb)
        model = self.model
        heads = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
        # R-CNN: the box predictor's test NMS and top-k, mask and keypoint heads off; RetinaNet: its own
        saved: list[tuple[Any, str, Any]] = []

        def put(obj: Any, attr: str, value: Any) -> None:
            saved.append((obj, attr, getattr(obj, attr)))
            setattr(obj, attr, value)

        try:
            if heads is not None:
                nms = float(heads.test_nms_thresh)
                put(heads, "test_nms_thresh", 1.0)  # nothing overlaps more than 1: nothing suppressed
                put(heads, "test_topk_per_image", -1)
                for head in ("mask_on", "keypoint_on"):
                    if getattr(model.roi_heads, head, False):
                        put(model.roi_heads, head, False)
                with torch.no_grad():
                    found = model.inference([inputs], do_postprocess=False)
                inst = (found[0] if isinstance(found, tuple) else found)[0]
                inst = detector_postprocess(inst, rgb.shape[0], rgb.shape[1])
            else:
                nms = float(model.test_nms_thresh)
                put(model, "test_nms_thresh", 1.0)
                put(model, "max_detections_per_image", 1 << 30)
                with torch.no_grad():
                    inst = model([inputs])[0]["instances"]
        finally:
            for obj, attr, value in reversed(saved):
                setattr(obj, attr, value)
        det = detections_of(inst, self.labels, rgb.shape[:2])
        return det, nms

    def describe(self) -> dict[str, Any]:
        """The model block of ``d2ov predict --json``: the OpenVINO predictor's keys, with no IR
        (``ir``, ``ir_precision`` and ``static_shape`` are null) and FP32 eager compute."""
        m = self.metadata
        return {
            "name": self.spec.name,
            "task": self.task,
            "ir": None,
            "precision": "FP32",
            "ir_precision": None,
            "compute": "f32",
            "classes": self.labels,
            **get_task(self.task).model_info(m),
            "random_weights": self.weights_info["random"],
            "weights_sha256": self.weights_info["sha256"],
            "graph_score_threshold": m.graph_score_threshold,
            "static_shape": None,
        }
