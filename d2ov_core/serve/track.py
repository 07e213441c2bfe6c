"""Ids that follow objects from frame to frame of a video: ByteTrack, the maintained implementation.

ByteTrack comes from Roboflow's ``trackers`` package (``ByteTrackTracker``, the successor of
supervision's ``ByteTrack``, which supervision removed in 0.30); it is an extra
(``pip install 'd2ov[track]'``), imported only when a video is tracked.

How d2ov feeds it (ByteTrack's own recipe): every detection the graph returned (scores down to the
graph's floor) goes in, so that a low-score box can keep an existing track alive (its second
association stage); only detections at or above the user's threshold start a track. What is shown and
written is then the thresholded set, exactly as without tracking, each with its ``track_id`` (``-1``,
JSON ``null``: not tracked yet, e.g. the first frame of a new object). Tracks ignore the class
(as in Detectron2's and supervision's demos, a track's label is its detection's in that frame).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ..runtime.detections import Detections

__all__ = ["Tracker", "tracking_available"]


def _bytetrack() -> Any:
    try:
        from trackers import ByteTrackTracker
    except (ImportError, OSError) as e:  # OSError: OpenCV (a dependency) without its system libraries
        raise InputError(
            f"tracking needs Roboflow's trackers package: pip install 'd2ov[track]' ({type(e).__name__}: {e})"
        ) from None
    return ByteTrackTracker


def tracking_available() -> bool:
    """Whether :class:`Tracker` can run here (the ``trackers`` package imports)."""
    try:
        _bytetrack()
    except InputError:
        return False
    return True


class Tracker:
    """One video's tracks: :meth:`update` once per processed frame, in order.

    Args:
        frame_rate: processed frames per second (the video's rate divided by ``every``): how long a
            lost track is kept (ByteTrack's 30-frame buffer, in seconds).
        threshold: detections scoring at least this start tracks and are returned; lower ones only
            extend existing tracks.
    """

    def __init__(self, frame_rate: float, threshold: float):
        bytetrack = _bytetrack()  # first: says what to install when trackers is missing
        import supervision  # a dependency of trackers: there whenever _bytetrack() succeeds

        self._sv = supervision
        self.threshold = float(threshold)
        self._tracker = bytetrack(
            frame_rate=float(frame_rate) if frame_rate > 0 else 30.0,
            track_activation_threshold=self.threshold,
            high_conf_det_threshold=self.threshold,
            minimum_consecutive_frames=1,
        )

    def update(self, det: Detections) -> Detections:
        """``det`` (all of a frame's detections, any score) -> those at or above the threshold, each
        with its track id (``-1`` when no track holds it)."""
        index = np.arange(len(det))
        tracked = self._tracker.update(
            self._sv.Detections(
                xyxy=det.boxes.astype(np.float32).reshape(-1, 4),
                confidence=det.scores.astype(np.float32),
                class_id=det.class_ids.astype(int),
                data={"d2ov_index": index},
            )
        )
        ids = np.full(len(det), -1, np.int64)
        if len(tracked) and tracked.tracker_id is not None:
            ids[np.asarray(tracked.data["d2ov_index"], np.int64)] = np.asarray(tracked.tracker_id, np.int64)
        keep = det.scores >= self.threshold
        return det.with_track_ids(ids)[keep]
