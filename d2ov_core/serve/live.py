"""The live webcam: frames streamed from a browser, always the newest one processed.

A browser streams a frame every ``stream_every`` seconds whether or not the last one is done. If each
frame were queued, a model slower than the camera would fall further behind with every frame (seconds
of lag after a minute). :class:`LiveSessions` keeps one rule per browser session instead: a frame that
a newer frame of the same session overtook while it waited for its turn is dropped, so the picture
shown is never more than the frame being processed behind the camera. Sessions run side by side;
frames of one session run one at a time.

It also measures what the person sees: frames per second actually answered and each answer's
latency (arrival of the frame to the drawn result), which :func:`overlay` writes on the frame.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["LiveSessions", "LiveStats", "overlay"]

T = TypeVar("T")


@dataclasses.dataclass
class LiveStats:
    """One answered frame: its number in the session, the frames dropped so far, answered frames per
    second (over the last few), and its latency in ms (arrival to answer)."""

    frame: int
    dropped: int
    fps: float
    latency_ms: float


@dataclasses.dataclass
class _Session:
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    newest: int = 0  # number of the newest frame that arrived
    dropped: int = 0
    answered: collections.deque = dataclasses.field(default_factory=lambda: collections.deque(maxlen=10))


class LiveSessions:
    """Per-session newest-frame scheduling; at most ``keep`` sessions are remembered (oldest forgotten)."""

    def __init__(self, keep: int = 64):
        self._keep = keep
        self._sessions: collections.OrderedDict[str, _Session] = collections.OrderedDict()
        self._guard = threading.Lock()

    def submit(self, session: str, work: Callable[[], T]) -> tuple[T, LiveStats] | None:
        """Run ``work`` for a frame of ``session`` that just arrived, unless a newer frame of that session
        arrives while this one waits: then ``None`` (dropped). Returns ``(work's result, stats)``."""
        arrived = time.perf_counter()
        with self._guard:
            s = self._sessions.get(session)
            if s is None:
                s = self._sessions[session] = _Session()
                while len(self._sessions) > self._keep:
                    self._sessions.popitem(last=False)
            self._sessions.move_to_end(session)
            s.newest += 1
            number = s.newest
        with s.lock:
            if number != s.newest:  # overtaken while waiting: the newer frame is the one to show
                s.dropped += 1
                return None
            result = work()
            done = time.perf_counter()
            s.answered.append(done)
            span = s.answered[-1] - s.answered[0]
            fps = (len(s.answered) - 1) / span if span > 0 else 0.0
            return result, LiveStats(number, s.dropped, fps, (done - arrived) * 1e3)


def overlay(rgb: np.ndarray, text: str) -> np.ndarray:
    """``text`` in the top-left corner of ``rgb`` (white on a black band), e.g. frames/s and latency."""
    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    draw = ImageDraw.Draw(img)
    h, w = rgb.shape[:2]
    font = ImageFont.load_default(size=max(12, round(min(h, w) / 30)))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = 4
    draw.rectangle([0, 0, right - left + 2 * pad, bottom - top + 2 * pad], fill=(0, 0, 0))
    draw.text((pad - left, pad - top), text, fill=(255, 255, 255), font=font)
    return np.asarray(img, dtype=np.uint8)
