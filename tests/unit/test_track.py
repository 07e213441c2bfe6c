"""Track ids: carried by Detections (validated, indexed, JSON both ways), given by ByteTrack, drawn."""

import numpy as np
import pytest

from d2ov_core.runtime.detections import Detections
from d2ov_core.serve.render import render
from d2ov_core.serve.track import Tracker, tracking_available

pytestmark = pytest.mark.skipif(not tracking_available(), reason="trackers (the 'track' extra) is not installed")


def frame(boxes, scores, size=(200, 300)):
    n = len(scores)
    return Detections(
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        scores=scores,
        class_ids=np.zeros(n, np.int64),
        labels=np.array(["a"] * n),
        image_size=size,
    )


def test_track_ids_are_validated_indexed_and_round_trip_through_json():
    det = frame([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 70]], [0.9, 0.8, 0.7]).with_track_ids([4, -1, 7])
    with pytest.raises(ValueError, match=r"Detections.track_ids: expected shape \(3,\), found \(2,\)"):
        frame([[0, 0, 1, 1]] * 3, [0.9, 0.8, 0.7]).with_track_ids([1, 2])
    assert det[np.array([True, False, True])].track_ids.tolist() == [4, 7]
    assert det[1:].track_ids.tolist() == [-1, 7]
    inst = det.to_dict()["instances"]
    assert [i["track_id"] for i in inst] == [4, None, 7]
    assert Detections.from_dict(det.to_dict()).track_ids.tolist() == [4, -1, 7]
    untracked = frame([[0, 0, 10, 10]], [0.9])
    assert "track_id" not in untracked.to_dict()["instances"][0]
    assert Detections.from_dict(untracked.to_dict()).track_ids is None


def test_bytetrack_keeps_ids_on_moving_objects_and_starts_new_ones():
    tracker = Tracker(frame_rate=10, threshold=0.5)
    seen = []
    for f in range(6):
        boxes = [[10 + 5 * f, 10, 40 + 5 * f, 40], [200 - 5 * f, 100, 240 - 5 * f, 150]]
        scores = [0.9, 0.8]
        if f >= 3:  # a third object appears
            boxes.append([100, 150, 130, 190])
            scores.append(0.95)
        out = tracker.update(frame(boxes, scores))
        assert out.boxes.tolist() == frame(boxes, scores).boxes.tolist()  # same detections, same order
        seen.append(out.track_ids.tolist())
    assert seen[0] == [-1, -1]  # an object gets its id from its second frame
    first, second = seen[1]
    assert first >= 0 and second >= 0 and first != second
    assert all(s[:2] == [first, second] for s in seen[1:])
    assert seen[3][2] == -1 and seen[4][2] == seen[5][2] not in (first, second, -1)


def test_low_scores_keep_a_track_alive_but_are_not_returned():
    tracker = Tracker(frame_rate=10, threshold=0.5)
    for f in range(3):
        tracker.update(frame([[10 + 5 * f, 10, 40 + 5 * f, 40]], [0.9]))
    kept = tracker.update(frame([[25, 10, 55, 40], [150, 150, 170, 170]], [0.2, 0.3]))
    assert len(kept) == 0  # below the threshold: not shown ...
    back = tracker.update(frame([[30, 10, 60, 40]], [0.9]))
    first = tracker.update(frame([[35, 10, 65, 40]], [0.9]))
    assert back.track_ids.tolist() == first.track_ids.tolist() != [-1]  # ... yet the track lived on


def test_tracked_detections_are_drawn_in_a_colour_per_track():
    rgb = np.full((200, 300, 3), 128, np.uint8)
    det = frame([[10, 10, 60, 60], [150, 100, 200, 150]], [0.9, 0.9])
    same = render(rgb, det, ["a"], style="plain")
    a, b = same[35, 10], same[125, 150]  # left edges of the two boxes: the class's colour
    assert (a == b).all() and not (a == 128).all()
    tracked = render(rgb, det.with_track_ids([3, 8]), ["a"], style="plain")
    assert not (tracked[35, 10] == tracked[125, 150]).all()
    assert not (tracked == same).all()
