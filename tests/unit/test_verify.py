"""Matching detections of two backends (:func:`d2ov_core.measure.verify.match`), and near ties in
Detectron2's last NMS: counted as ties only when Detectron2's own detections before that NMS show one."""

from __future__ import annotations

import numpy as np
import pytest

from d2ov_core.measure.verify import Tolerance, match
from d2ov_core.runtime.detections import Detections

# demo/mask_rcnn_shapes on shapes_1.jpg, FP32 IR on an Intel Xeon with AMX: Detectron2 kept A, the IR B
A = [29.860697, 141.21196, 186.30392, 246.7508]
B = [34.544292, 146.53064, 174.99066, 243.42706]  # IoU(A, B) = 0.82, above the NMS's 0.5
OTHER = [300.0, 300.0, 360.0, 380.0]


def _det(boxes, scores, classes=None) -> Detections:
    classes = [1] * len(boxes) if classes is None else classes
    return Detections(
        boxes=np.array(boxes, np.float32).reshape(-1, 4),
        scores=np.array(scores, np.float32),
        class_ids=np.array(classes, np.int64),
        labels=np.array([f"c{c}" for c in classes], dtype=str).reshape(-1),
        image_size=(480, 640),
    )


REF = _det([A, OTHER], [0.5172539, 0.9])
CAND = _det([B, OTHER], [0.5172535, 0.9])
BEFORE = _det([A, B, OTHER, OTHER], [0.5172539, 0.5172534, 0.9, 0.31])


def test_the_nms_swap_is_a_miss_and_an_extra_without_the_boxes_before_nms():
    c = match(REF, CAND)
    assert (c.matched, c.unmatched_reference, c.unmatched_candidate, c.ties) == (1, 1, 1, 0)
    assert not c.ok(Tolerance())


def test_a_near_tie_in_detectron2_itself_is_a_tie_not_a_miss():
    c = match(REF, CAND, Tolerance(), BEFORE, 0.5)
    assert (c.matched, c.unmatched_reference, c.unmatched_candidate, c.ties) == (1, 0, 0, 1)
    assert c.ok(Tolerance()) and c.max_box_dev == 0.0 and c.to_dict()["ties"] == 1


@pytest.mark.parametrize(
    ("why", "before", "nms_iou", "cand"),
    [
        # the IR's box is not one Detectron2 scored: 1 px off (a box decoding bug keeps scores equal)
        ("box not scored by Detectron2", _det([A, np.add(B, 1.0).tolist()], [0.5172539, 0.5172534]), 0.5, CAND),
        # Detectron2 scored that box, but not alike: no tie in Detectron2 itself (0.49 vs 0.517)
        ("not a tie in Detectron2", _det([A, B], [0.5172539, 0.49]), 0.5, _det([B, OTHER], [0.49, 0.9])),
        # the two boxes do not overlap beyond the NMS threshold: both would have been kept
        ("no suppression between them", BEFORE, 0.9, CAND),
        # another class
        (
            "another class",
            _det([A, B], [0.5172539, 0.5172534], [1, 2]),
            0.5,
            _det([B, OTHER], [0.5172535, 0.9], [2, 1]),
        ),
    ],
)
def test_anything_else_stays_unmatched(why, before, nms_iou, cand):
    c = match(REF, cand, Tolerance(), before, nms_iou)
    assert (c.unmatched_reference, c.unmatched_candidate, c.ties) == (1, 1, 0), why
    assert not c.ok(Tolerance()), why


def test_the_ir_score_of_the_other_box_must_be_within_tolerance():
    """The IR kept B but scored it 0.51 where Detectron2 scored it 0.517: a score deviation, no tie."""
    c = match(REF, _det([B, OTHER], [0.51, 0.9]), Tolerance(), BEFORE, 0.5)
    assert (c.unmatched_reference, c.unmatched_candidate, c.ties) == (1, 1, 0)


def test_empty_sides():
    empty = _det([], [])
    c = match(empty, empty, Tolerance(), empty, 0.5)
    assert (c.reference, c.matched, c.ties) == (0, 0, 0) and c.ok(Tolerance())
    c = match(REF, empty, Tolerance(), BEFORE, 0.5)
    assert (c.unmatched_reference, c.ties) == (2, 0)
