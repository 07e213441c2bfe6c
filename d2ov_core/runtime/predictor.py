"""The OpenVINO predictor: image -> :class:`~d2ov_core.detections.Detections`. No torch, no detectron2.

``Predictor(xml)`` needs nothing but the IR: class names, resize rule, channel order and output
names come from its ``rt_info``. ``Predictor(server="http://host:port", model="name")`` runs the same
pipeline with the graph on a KServe-v2 model server (:mod:`d2ov_core.runtime.remote`): decoding,
pre- and postprocessing stay here, the metadata comes from the server. One instance may be called
from several threads at once.

Pipeline (each stage timed, milliseconds in ``Detections.timings``):
  ``load_image`` (RGB uint8, EXIF applied) -> ``preprocess`` (ResizeShortestEdge, channel order)
  -> ``inference`` (OpenVINO) -> ``postprocess`` (boxes to original pixels, threshold, masks pasted).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from . import ir as runtime
from . import settings as S
from .detections import Detections
from .images import load_image
from .preprocess import Geometry, preprocess
from .remote import RemoteIR
from .tasks import Task, get_task
from .video import Frame, read_frames

if TYPE_CHECKING:
    from .remote import RemoteIR

__all__ = ["Predictor"]


class Predictor:
    """Args:
    xml: path of the IR's ``.xml`` (its ``.bin`` beside it).
    device: OpenVINO device string (``CPU``, ``GPU``, ``AUTO``, ...).
    hint: ``LATENCY`` (one image at a time) or ``THROUGHPUT`` (many requests in parallel).
    threads: CPU inference threads (default: OpenVINO's choice).
    static_shape: ``(H, W)``, multiples of 32: reshape the IR to this fixed input and letterbox
        every image into it (for devices that need static shapes, e.g. NPU); ``None``: dynamic.
    profile: collect OpenVINO per-op counters (see :meth:`profile`).
    compute: floating-point compute on CPU: ``f32`` (default: what Detectron2 computes, what
        ``verify`` checks) or ``bf16`` (faster on CPUs with native bfloat16; less exact). OpenVINO
        itself would pick bf16 silently on such CPUs; d2ov only does when asked.
    server: ``http(s)://host:port`` of a KServe-v2 model server to run the graph on instead of a
        local IR (then ``xml``, ``static_shape``, ``profile`` do not apply; the server decides
        device and compute); ``model``: the model's name there (default: the server's only one);
        ``timeout``: seconds per request (default ``D2OV_SERVER_TIMEOUT``, 60).
    """

    def __init__(
        self,
        xml: str | os.PathLike | None = None,
        device: str = "CPU",
        hint: str = "LATENCY",
        threads: int | None = None,
        static_shape: tuple[int, int] | None = None,
        profile: bool = False,
        compute: str = "f32",
        *,
        server: str | None = None,
        model: str | None = None,
        timeout: float | None = None,
    ):
        self._ir: runtime.CompiledIR | RemoteIR
        if server is not None:
            if xml is not None or static_shape is not None or profile:
                raise InputError("a Predictor on a model server takes no IR path, static shape or profiling")

            self.xml = None
            self._ir = RemoteIR(server, model, timeout=timeout)
            device = self._ir.device
        elif xml is None:
            raise InputError("Predictor needs an IR (.xml path) or a model server (server=URL)")
        else:
            self.xml = Path(xml)
            self._ir = runtime.load_ir(
                self.xml,
                device=device,
                hint=hint,
                threads=threads,
                static_shape=static_shape,
                profile=profile,
                compute=compute,
            )
        self.compute = self._ir.compute
        self.static_shape = self._ir.static_shape
        self.metadata: S.IRMetadata = self._ir.metadata
        self.device = device
        self.labels: list[str] = list(self.metadata.labels)
        self.task: str = self.metadata.task
        self._task: Task = get_task(self.task)
        self._decoder = _Decoder(self._task, self.labels, self.metadata, self._task.decode_options(self.metadata))
        self._task.prepare()

    @property
    def name(self) -> str:
        return str(self.metadata.model_name)

    @property
    def precision(self) -> str:
        """The precision this predictor runs, as users name it (:data:`settings.PRECISIONS`): the IR's
        weight precision, or ``BF16`` when a floating-point IR is computed in bfloat16."""
        return "BF16" if self.compute == "bf16" else str(self.metadata.precision)

    def predict(self, image: Any, threshold: float | None = None, mask_threshold: float | None = None) -> Detections:
        """Detect objects in ``image`` (path, bytes, PIL image or RGB uint8 array).

        ``threshold`` defaults to the IR's ``confidence_threshold`` (0.5); values below the graph's
        frozen ``graph_score_threshold`` (0.05) cannot bring back more detections.
        """
        return self.predict_image(image, threshold, mask_threshold)[1]

    def predict_image(
        self, image: Any, threshold: float | None = None, mask_threshold: float | None = None
    ) -> tuple[np.ndarray, Detections]:
        """:meth:`predict`, also returning the decoded RGB image (what renderers draw on)."""
        thr = self._decoder.thresholds(threshold, mask_threshold)
        rgb, chw, geometry, timings = self._prepare(image)
        t = time.perf_counter()
        raw = self._ir.infer(chw)
        return rgb, self._decoder.finish(raw, geometry, thr, timings, t)

    def run(
        self, image: Any, mask_threshold: float | None = None
    ) -> tuple[np.ndarray, Callable[[float | None], Detections]]:
        """Decode, preprocess and run the graph once: ``(rgb, detections)``, where
        ``detections(threshold)`` postprocesses the graph's outputs (kept) at that threshold, as
        :meth:`predict` would (default: the IR's ``confidence_threshold``), each time it is called:
        an answer at another threshold without running the model again, in which only the detections
        shown have their masks pasted at the image's size (a 12 MP photo's 100 detections at 0.05:
        1.2 GB of masks). Its timings: this run's decode, preprocess and inference, and that call's
        postprocess."""
        rgb, chw, geometry, timings = self._prepare(image)
        t = time.perf_counter()
        raw = self._ir.infer(chw)
        inference = (time.perf_counter() - t) * 1e3
        decoder = self._decoder  # what postprocessing needs, not the compiled model: a kept answer holds no IR

        def detections(threshold: float | None = None) -> Detections:
            thr = decoder.thresholds(threshold, mask_threshold)
            return decoder.finish(raw, geometry, thr, {**timings, "inference": inference}, None)

        return rgb, detections

    def predict_many(
        self,
        images: Iterable[Any],
        threshold: float | None = None,
        mask_threshold: float | None = None,
        jobs: int | None = None,
    ) -> Iterator[tuple[np.ndarray, Detections]]:
        """Throughput path for many images: yields ``(rgb, detections)`` in input order.

        Decoding and preprocessing of the next images overlap with inference of earlier ones on an
        OpenVINO ``AsyncInferQueue`` of ``jobs`` requests (default: the device's optimal number; with
        ``hint="THROUGHPUT"`` that is one per CPU stream). Timings per image: ``preprocess`` and
        ``postprocess`` as in :meth:`predict`; ``inference`` is the time from submission to the
        result being taken (includes queueing), so per-image sums exceed the wall time.
        """
        thr = self._decoder.thresholds(threshold, mask_threshold)

        def prepared():
            for image in images:
                rgb, chw, geometry, timings = self._prepare(image)
                yield (rgb, geometry, timings, time.perf_counter()), chw

        for (rgb, geometry, timings, submitted), raw in self._ir.infer_stream(prepared(), jobs=jobs):
            yield rgb, self._decoder.finish(raw, geometry, thr, timings, submitted)

    def stream(
        self, frames: Iterable[Any], threshold: float | None = None, mask_threshold: float | None = None
    ) -> Iterator[tuple[int, float, Detections]]:
        """Frames through the pipeline of :meth:`predict_many` (several requests in flight): yields
        ``(frame_index, time_s, detections)`` in input order. ``frames``: :class:`~.video.Frame`
        tuples (``number, time_s, rgb``) or plain images (then numbered 0, 1, ... with time 0)."""
        for frame, _, det in self.stream_frames(frames, threshold, mask_threshold):
            yield frame.number, frame.time_s, det

    def stream_frames(
        self, frames: Iterable[Any], threshold: float | None = None, mask_threshold: float | None = None
    ) -> Iterator[tuple[Frame, np.ndarray, Detections]]:
        """:meth:`stream` that also yields each frame and its RGB pixels (what a renderer draws on):
        ``(frame, rgb, detections)``. Only the frames in flight are held (memory stays flat)."""
        pending: deque[Frame] = deque()

        def images():
            for i, f in enumerate(frames):
                frame = f if isinstance(f, Frame) else Frame(i, 0.0, f)
                pending.append(frame)
                yield frame.rgb

        for rgb, det in self.predict_many(images(), threshold, mask_threshold):
            yield pending.popleft(), rgb, det

    def predict_video(
        self,
        path: str | os.PathLike,
        every: int = 1,
        max_frames: int | None = None,
        threshold: float | None = None,
        mask_threshold: float | None = None,
    ) -> Iterator[tuple[int, float, Detections]]:
        """Detect in a video file frame by frame: yields ``(frame_index, time_s, detections)`` for every
        ``every``-th frame (at most ``max_frames``), decoding, inference and postprocessing overlapped
        (:meth:`stream`); the frames are streamed, never collected."""
        return self.stream(read_frames(path, every, max_frames), threshold, mask_threshold)

    def profile(self, image: Any, top: int = 15) -> dict[str, Any]:
        """One inference with OpenVINO's per-op counters (needs ``profile=True``): milliseconds per
        op type (sorted, with op counts), the ``top`` slowest single ops, and the Python-side stages."""
        rgb, chw, geometry, timings = self._prepare(image)
        t = time.perf_counter()
        rows = self._ir.profile(chw)
        profiled = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        det = self._decoder.finish(self._ir.infer(chw), geometry, (0.05, self.metadata.mask_threshold), timings, t)
        by_type: dict[str, dict[str, float]] = {}
        for r in rows:
            agg = by_type.setdefault(r["type"], {"ms": 0.0, "count": 0})
            agg["ms"] += r["ms"]
            agg["count"] += 1
        return {
            "ops_ms": sum(r["ms"] for r in rows),
            "by_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1]["ms"])),
            "slowest": sorted(rows, key=lambda r: -r["ms"])[:top],
            "stages_ms": {
                "preprocess": det.timings["preprocess"],
                "inference_profiled": profiled,
                "inference": det.timings["inference"],
                "postprocess": det.timings["postprocess"],
            },
            "detections": len(det),
            "input_shape": list(chw.shape),
        }

    # -------------------------------------------------------------- the pipeline's two halves
    def _prepare(self, image: Any) -> tuple[np.ndarray, np.ndarray, Geometry, dict[str, float]]:
        """Decode and preprocess: ``(rgb, chw, geometry, timings)``."""
        t0 = time.perf_counter()
        rgb = load_image(image)
        t1 = time.perf_counter()
        chw, geometry = preprocess(rgb, self.metadata, self.static_shape)
        t2 = time.perf_counter()
        return rgb, chw, geometry, {"decode": (t1 - t0) * 1e3, "preprocess": (t2 - t1) * 1e3}

    @property
    def confidence_threshold(self) -> float:
        """The score threshold ``threshold=None`` means: the IR's ``confidence_threshold``."""
        return float(self.metadata.confidence_threshold)

    def describe(self) -> dict[str, Any]:
        """The model block of ``d2ov predict --json``."""
        m = self.metadata
        return {
            "name": m.model_name,
            "task": m.task,
            "ir": str(self.xml) if self.xml is not None else self._ir.location,  # type: ignore[union-attr]  # RemoteIR
            "precision": self.precision,
            "ir_precision": m.precision,
            "compute": self.compute,
            "classes": self.labels,
            **self._task.model_info(m),
            "random_weights": m.random_weights,
            "weights_sha256": m.weights_sha256,
            "graph_score_threshold": m.graph_score_threshold,
            "static_shape": list(self.static_shape) if self.static_shape else None,
        }


@dataclasses.dataclass(frozen=True)
class _Decoder:
    """A predictor's postprocessing: its task, class names, metadata (thresholds) and decode options."""

    task: Task
    labels: list[str]
    metadata: S.IRMetadata
    options: Any

    def thresholds(self, threshold, mask_threshold) -> tuple[float, float]:
        thr = S.check_value(
            "confidence_threshold", self.metadata.confidence_threshold if threshold is None else threshold
        )
        mthr = S.check_value(
            "mask_threshold", self.metadata.mask_threshold if mask_threshold is None else mask_threshold
        )
        return thr, mthr

    def finish(
        self,
        raw: dict[str, np.ndarray],
        geometry: Geometry,
        thresholds: tuple[float, float],
        timings: dict[str, float],
        inference_started: float | None,
    ) -> Detections:
        """Postprocess the raw outputs; timings of all stages (``total`` excludes decoding;
        ``inference_started``: ``None`` when ``timings`` already has the inference's)."""
        t3 = time.perf_counter()
        det = self.task.decode(raw, geometry, self.labels, thresholds[0], thresholds[1], self.options)
        t4 = time.perf_counter()
        inference = timings["inference"] if inference_started is None else (t3 - inference_started) * 1e3
        det.timings = {**timings, "inference": inference, "postprocess": (t4 - t3) * 1e3}
        det.timings["total"] = det.timings["preprocess"] + det.timings["inference"] + det.timings["postprocess"]
        return det
