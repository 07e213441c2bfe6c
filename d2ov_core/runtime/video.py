"""Video files in and out, frame by frame (PyAV: FFmpeg's decoders and encoders as a Python package).

Frames are streamed: :func:`read_frames` decodes one frame at a time and :class:`VideoWriter` encodes
one at a time, so memory does not grow with the video's length. Nothing is written under the final
name until the video is complete (:class:`VideoWriter` writes a temporary file and renames it).

PyAV is the ``video`` extra (``pip install d2ov[video]``); the rest of d2ov does not need it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import InputError, first_line

__all__ = ["VIDEO_SUFFIXES", "Frame", "is_video", "read_frames", "VideoWriter"]

#: what ``d2ov predict`` takes as a video (by suffix, case-insensitive)
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi")


class Frame(NamedTuple):
    """One decoded frame: its number in the video (0-based, counting the frames ``every`` skips), its
    time in seconds and its pixels (RGB uint8 ``(H, W, 3)``)."""

    number: int
    time_s: float
    rgb: np.ndarray


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _av():
    try:
        import av
    except ImportError:
        raise InputError("reading and writing video needs PyAV: pip install 'd2ov[video]'") from None
    return av


def _open(path: Path):
    av = _av()
    if not path.is_file():
        raise InputError(f"video not found: {path}")
    try:
        container = av.open(str(path))
    except Exception as e:  # av.error.InvalidDataError and friends: one line, naming the file
        raise InputError(f"cannot read video {path}: {first_line(e)}") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{path}: no video stream in the file")
    return container


def video_info(path: str | os.PathLike) -> dict[str, Any]:
    """``{"frames", "fps", "width", "height", "duration_s"}`` from the container's header (``frames``
    is 0 when the container does not say)."""
    with _open(Path(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 0.0
        duration = float(stream.duration * stream.time_base) if stream.duration else 0.0
        return {
            "frames": int(stream.frames or 0),
            "fps": fps,
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "duration_s": duration,
        }


def read_frames(path: str | os.PathLike, every: int = 1, max_frames: int | None = None) -> Iterator[Frame]:
    """Decode ``path`` frame by frame, yielding every ``every``-th frame (0, every, 2 * every, ...), at
    most ``max_frames`` of them. A file that stops decoding part-way is an :class:`InputError` naming
    the frame (the frames before it have been yielded)."""
    if every < 1:
        raise InputError(f"every must be >= 1, got {every}")
    if max_frames is not None and max_frames < 1:
        raise InputError(f"max_frames must be >= 1, got {max_frames}")
    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        yielded = index = 0
        try:
            for frame in container.decode(stream):
                if index % every == 0:
                    t = float(frame.time) if frame.time is not None else index / float(stream.average_rate or 1)
                    yield Frame(index, t, _upright(frame))
                    yielded += 1
                    if max_frames is not None and yielded >= max_frames:
                        return
                index += 1
        except InputError:
            raise
        except Exception as e:  # a truncated or corrupt stream
            raise InputError(f"{path}: decoding stopped at frame {index}: {first_line(e)}") from None
        if index == 0:
            raise InputError(f"{path}: the video stream has no frames")
    finally:
        container.close()


def _upright(frame) -> np.ndarray:
    """The frame's RGB pixels as a player shows them: turned by the stream's rotation metadata (a
    phone's portrait video is stored landscape with a display rotation), as images follow EXIF."""
    rgb = frame.to_ndarray(format="rgb24")
    quarter_turns = round((getattr(frame, "rotation", 0) or 0) / 90) % 4  # counter-clockwise
    return np.ascontiguousarray(np.rot90(rgb, quarter_turns)) if quarter_turns else rgb


class VideoWriter:
    """Encode RGB frames into ``path`` (H.264 in MP4, yuv420p: what browsers play without a plug-in).

    Use as a context manager; the file appears under ``path`` only when the block ends without an
    exception (it is written as ``.<name>.tmp-<pid>`` first). Frame sizes are rounded down to even
    numbers (yuv420p needs them); every frame must have the first frame's size.
    """

    def __init__(self, path: str | os.PathLike, fps: float, crf: int = 23):
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
        self.crf = crf
        self.frames = 0
        self._tmp = self.path.with_name(f".{self.path.stem}.tmp-{os.getpid()}{self.path.suffix}")
        self._container: Any = None
        self._stream: Any = None
        self._size: tuple[int, int] | None = None

    def __enter__(self) -> VideoWriter:
        av = _av()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self._tmp), mode="w", format="mp4")
        return self

    def write(self, rgb: np.ndarray) -> None:
        av = _av()
        h, w = rgb.shape[:2]
        if self._stream is None:
            self._size = (h - h % 2, w - w % 2)
            self._stream = self._container.add_stream("libx264", rate=self.fps)
            self._stream.height, self._stream.width = self._size
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": str(self.crf), "preset": "veryfast"}
        eh, ew = self._size or (0, 0)
        if (h - h % 2, w - w % 2) != (eh, ew):
            raise InputError(f"frame {self.frames} is {w}x{h}, the video's first frame {ew}x{eh}")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:eh, :ew]), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and self._stream is not None:
                for packet in self._stream.encode():  # flush the encoder
                    self._container.mux(packet)
            self._container.close()
            if exc_type is None:
                if self.frames == 0:
                    raise InputError(f"no frame to write into {self.path}")
                os.replace(self._tmp, self.path)
        finally:
            if self._tmp.exists():
                self._tmp.unlink()
