"""The OpenVINO predictor: image -> :class:`~d2ov_core.detections.Detections`. No torch, no detectron2.

``Predictor(xml)`` needs nothing but the IR: class names, resize rule, channel order and output
names come from its ``rt_info``. One instance may be called from several threads at once.

Pipeline (each stage timed, milliseconds in ``Detections.timings``):
  ``load_image`` (RGB uint8, EXIF applied) -> ``preprocess`` (ResizeShortestEdge, channel order)
  -> ``inference`` (OpenVINO) -> ``postprocess`` (boxes to original pixels, threshold, masks pasted).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from . import runtime
from . import settings as S
from .detections import Detections
from .images import load_image
from .postprocess import postprocess
from .preprocess import preprocess

__all__ = ["Predictor"]


class Predictor:
    """Args:
        xml: path of the IR's ``.xml`` (its ``.bin`` beside it).
        device: OpenVINO device string (``CPU``, ``GPU``, ``AUTO``, ...).
        hint: ``LATENCY`` (one image at a time) or ``THROUGHPUT`` (many requests in parallel).
        threads: CPU inference threads (default: OpenVINO's choice).
    """

    def __init__(self, xml: str | os.PathLike, device: str = "CPU", hint: str = "LATENCY", threads: int | None = None):
        self.xml = Path(xml)
        self._ir = runtime.load_ir(self.xml, device=device, hint=hint, threads=threads)
        self.metadata: dict[str, Any] = self._ir.metadata
        self.device = device
        self.labels: list[str] = list(self.metadata["labels"])
        self.task: str = self.metadata["task"]

    @property
    def name(self) -> str:
        return str(self.metadata["model_name"])

    def predict(self, image: Any, threshold: float | None = None, mask_threshold: float | None = None) -> Detections:
        """Detect objects in ``image`` (path, bytes, PIL image or RGB uint8 array).

        ``threshold`` defaults to the IR's ``confidence_threshold`` (0.5); values below the graph's
        frozen ``graph_score_threshold`` (0.05) cannot bring back more detections.
        """
        thr = S.check_value("confidence_threshold",
                            self.metadata["confidence_threshold"] if threshold is None else threshold)
        mthr = S.check_value("mask_threshold", self.metadata["mask_threshold"] if mask_threshold is None else mask_threshold)
        t0 = time.perf_counter()
        rgb = load_image(image)
        t1 = time.perf_counter()
        chw, meta = preprocess(rgb, self.metadata)
        t2 = time.perf_counter()
        raw = self._ir.infer(chw)
        t3 = time.perf_counter()
        det = postprocess(raw, meta, self.labels, threshold=thr, mask_threshold=mthr)
        t4 = time.perf_counter()
        det.timings = {
            "decode": (t1 - t0) * 1e3,
            "preprocess": (t2 - t1) * 1e3,
            "inference": (t3 - t2) * 1e3,
            "postprocess": (t4 - t3) * 1e3,
            "total": (t4 - t1) * 1e3,
        }
        return det

    def describe(self) -> dict[str, Any]:
        """The model block of ``d2ov predict --json``."""
        m = self.metadata
        return {
            "name": m["model_name"],
            "task": m["task"],
            "ir": str(self.xml),
            "precision": m["precision"],
            "classes": self.labels,
            "random_weights": m["random_weights"],
            "weights_sha256": m["weights_sha256"],
            "graph_score_threshold": m["graph_score_threshold"],
        }
