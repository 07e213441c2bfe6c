"""A video through a predictor: per-frame records and the annotated video, for the CLI and the app.

Frames stream from the decoder through the predictor's pipeline (several requests in flight, see
:meth:`~d2ov_core.runtime.predictor.Predictor.stream_frames`) into the renderer and the encoder: one
frame at a time, so memory does not depend on the video's length.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..runtime.detections import Detections
from ..runtime.video import Frame, VideoWriter, read_frames, video_info
from .render import render
from .track import Tracker

__all__ = ["VideoRun", "process_video", "frames_through"]


@dataclasses.dataclass
class VideoRun:
    """What :func:`process_video` did: the JSON records (one per processed frame; none when they
    went to a ``sink``), the annotated video (or ``None``), and the numbers a summary needs."""

    records: list[dict[str, Any]]
    video: Path | None
    frames: int
    wall_s: float
    model_ms: float  # median model time per frame
    per_class: dict[str, int]  # detections per class over all frames
    capped_at_s: float | None = None  # the input was longer: only its first seconds were processed
    tracks: int | None = None  # objects followed across frames (with ``track``)

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self, source: str) -> str:
        classes = ", ".join(f"{name} {n}" for name, n in sorted(self.per_class.items(), key=lambda kv: -kv[1]))
        text = (
            f"{source}: {self.frames} frames in {self.wall_s:.1f} s ({self.fps:.1f} frames/s end to end, "
            f"model {self.model_ms:.0f} ms a frame), {sum(self.per_class.values())} detections"
            + (f" ({classes})" if classes else "")
            + (f", {self.tracks} tracked objects" if self.tracks is not None else "")
        )
        if self.capped_at_s is not None:
            text += f"; only the first {self.capped_at_s:g} s were processed (longer inputs are capped)"
        return text


def _steady(det: Detections) -> Detections:
    """``det`` as a video frame is drawn: untracked detections marked as such (track id -1), so that
    the renderer gives them their class's colour in every frame. (Detectron2's Visualizer picks a
    random colour per instance: frame after frame the same object would flicker.)"""
    return det if det.track_ids is not None else det.with_track_ids(np.full(len(det), -1, np.int64))


def frames_through(
    predictor, frames: Iterable[Frame], threshold: float | None
) -> Iterator[tuple[Frame, np.ndarray, Detections]]:
    """``(frame, rgb, detections)`` per frame: the OpenVINO predictor's pipeline (requests in flight),
    or one frame at a time for a predictor without one (Detectron2 eager)."""
    if hasattr(predictor, "stream_frames"):
        yield from predictor.stream_frames(frames, threshold=threshold)
    else:
        for frame in frames:
            rgb, det = predictor.predict_image(frame.rgb, threshold=threshold)
            yield frame, rgb, det


def process_video(
    predictor,
    path: str | os.PathLike,
    render_to: str | os.PathLike | None = None,
    every: int = 1,
    max_frames: int | None = None,
    max_seconds: float | None = None,
    threshold: float | None = None,
    progress: Callable[[int, int | None, float], None] | None = None,
    source: str | None = None,
    track: bool = False,
    sink: Callable[[dict[str, Any]], None] | None = None,
    renderer: Callable[..., np.ndarray] = render,
) -> VideoRun:
    """Run ``predictor`` on every ``every``-th frame of the video at ``path`` (at most ``max_frames``,
    and only its first ``max_seconds`` when given); with ``render_to``, write the frames drawn as images
    are drawn into that MP4 (complete or not at all). ``progress(done, total or None, frames/s)`` is
    called after each frame. Records carry ``"source"`` (``source``, default the path), ``"frame"``
    (its number in the video) and ``"time_s"``, then an image record's fields. With ``track``, each
    detection also carries the id of the object it follows across frames (:mod:`.track`; drawn).
    With ``sink``, each record goes to ``sink(record)`` as it is made (say a
    :class:`~d2ov_core.runtime.detections.PredictionsWriter`'s ``add``) and none is kept: memory
    does not grow with the video's length (``VideoRun.records`` is then empty). ``renderer(rgb,
    detections, labels, task=)`` draws a frame (default :func:`~d2ov_core.serve.render.render`)."""
    info = video_info(path)
    tracker = None
    if track:
        shown = predictor.confidence_threshold if threshold is None else threshold
        tracker = Tracker(info["fps"] / every, shown)
        threshold = 0.0  # the tracker sees every detection; it returns those at the threshold
    capped = None
    if max_seconds is not None and info["fps"] > 0 and info["duration_s"] > max_seconds:
        cap = max(1, int(max_seconds * info["fps"]) // every)
        max_frames, capped = (min(max_frames, cap) if max_frames else cap), max_seconds
    total = -(-info["frames"] // every) if info["frames"] else None
    if max_frames:
        total = min(total, max_frames) if total else max_frames
    source = source or str(path)
    records: list[dict[str, Any]] = []
    keep = sink if sink is not None else records.append
    frames = 0
    model_ms: list[float] = []
    per_class: collections.Counter[str] = collections.Counter()
    track_ids: set[int] = set()
    out = Path(render_to) if render_to else None
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(VideoWriter(out, fps=info["fps"] / every)) if out else None
        for frame, rgb, det in frames_through(predictor, read_frames(path, every, max_frames), threshold):
            if tracker:
                det = tracker.update(det)
                track_ids.update(int(t) for t in det.track_ids if t >= 0)  # type: ignore[union-attr]
            keep({"source": source, "frame": frame.number, "time_s": round(frame.time_s, 4), **det.to_dict()})
            frames += 1
            model_ms.append(det.timings.get("inference", 0.0))
            per_class.update(det.labels.tolist())
            if writer:
                writer.write(renderer(rgb, _steady(det), predictor.labels, task=predictor.task))
            if progress:
                progress(frames, total, frames / (time.perf_counter() - t0))
    return VideoRun(
        records=records,
        video=out,
        frames=frames,
        wall_s=time.perf_counter() - t0,
        model_ms=statistics.median(model_ms) if model_ms else 0.0,
        per_class=dict(per_class),
        capped_at_s=capped,
        tracks=len(track_ids) if tracker else None,
    )
