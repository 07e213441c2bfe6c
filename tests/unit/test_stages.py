"""The stage check's comparisons (numpy only) and the zoo table, without converting anything."""

from __future__ import annotations

import json

import numpy as np
import pytest

from d2ov_core.measure import stages as M
from d2ov_core.measure import zoo
from d2ov_core.measure.verify import Comparison, Tolerance


@pytest.mark.parametrize(
    "ref,cand,expected",
    [
        (np.zeros((0, 4)), np.zeros((0, 4)), (0.0, 0.0)),  # empty
        (np.array([1.0, -4.0]), np.array([1.0, -4.0]), (0.0, 0.0)),
        (np.array([1.0, -4.0]), np.array([1.0, -3.996]), (0.004, 0.001)),  # relative to max |ref|, not per element
        (np.array([0.0, 2.0]), np.array([1e-3, 2.0]), (1e-3, 5e-4)),  # a zero crossing does not explode
        (np.ones((2, 3)), np.ones((3, 2)), (float("inf"), float("inf"))),  # shape mismatch
        (np.ones(2), np.array([1.0, np.nan]), (float("inf"), float("inf"))),
    ],
)
def test_compare_tensors(ref, cand, expected):
    a, rel = M.compare_tensors(ref, cand)
    assert a == pytest.approx(expected[0]) and rel == pytest.approx(expected[1])


def test_compare_proposals_counts_boxes_found_in_any_order():
    ref = np.array([[0, 0, 10, 10], [5, 5, 20, 20], [1, 2, 3, 4], [7, 7, 9, 9]], np.float32)
    assert M.compare_proposals(ref, ref[::-1]) == 1.0
    cand = ref.copy()
    cand[3] += 0.5  # one box moved half a pixel
    assert M.compare_proposals(ref, cand) == 0.75
    assert M.compare_proposals(np.zeros((0, 4)), cand) == 1.0
    assert M.compare_proposals(ref, np.zeros((0, 4))) == 0.0


def _comparison(matched=3, reference=3, unmatched=0, box=0.0, score=0.0):
    return Comparison(
        reference=reference,
        candidate=reference,
        matched=matched,
        unmatched_reference=unmatched,
        unmatched_candidate=unmatched,
        max_box_dev=box,
        max_score_dev=score,
        min_mask_iou=None,
    )


@pytest.mark.parametrize(
    "comparison,proposals_same,ok",
    [
        (_comparison(), True, True),
        (_comparison(matched=2, unmatched=1), True, False),  # same proposals must give the same detections
        (_comparison(matched=2, unmatched=1), False, True),  # other proposals: missing ones are expected
        (_comparison(box=0.6), False, False),  # but matched ones must agree
        (_comparison(score=2e-3), True, False),
    ],
)
def test_detection_row(comparison, proposals_same, ok):
    row = M._detection_row(comparison, "a.jpg", proposals_same, Tolerance())
    assert row.ok is ok and f"matched {comparison.matched}/" in row.note


def test_tensor_rows_fail_past_tolerance_and_name_the_worst_tensor():
    ref = {
        "features.p2": np.ones((1, 2, 4, 4)),
        "features.p3": np.ones((1, 2, 2, 2)),
        "rpn.objectness.0": np.ones(3),
        "proposals.boxes": np.zeros((2, 4)),
    }
    cand = {k: v.copy() for k, v in ref.items()}
    cand["features.p3"][0, 0, 0, 0] += 2e-3
    rows = {r.stage: r for r in M._tensor_rows(ref, cand, "a.jpg", 1e-3)}
    assert set(rows) == {"features", "rpn"}  # proposals are compared as a set, elsewhere
    assert rows["features"].ok is False and rows["features"].worst == "features.p3" and rows["features"].tensors == 2
    assert rows["rpn"].ok is True and rows["rpn"].max_rel == 0.0
    report = M.StageReport("m", list(rows.values()), 1e-3, {}, [])
    assert not report.ok and report.tensor_rel == pytest.approx(2e-3)
    assert "FAIL" in M.format_table(report) and "features.p3" in M.format_table(report)
    summary = {s["stage"]: s for s in report.stage_summary()}
    assert summary["features"]["ok"] is False and summary["rpn"]["ok"] is True


def test_zoo_table_has_a_row_per_result_and_a_reason_for_failures(tmp_path):
    names = ["COCO-Detection/a", "COCO-Detection/b", "COCO-Detection/c"]
    ok_report = {
        "ok": True,
        "tensor_rel": 2.5e-5,
        "ir_mb": 167.1,
        "ir": str(tmp_path / "x" / "model.xml"),
        "stages": [
            {"stage": "features", "ok": True, "max_rel": 2e-5, "worst": "features.p2", "notes": []},
            {
                "stage": "proposals",
                "ok": None,
                "max_rel": 1e-5,
                "worst": "",
                "notes": ["97.0% of 1000 identical", "100.0% of 1000 identical"],
            },
        ],
        "detections": [
            {"matched": 56, "reference": 100, "max_box_dev": 0.001, "max_score_dev": 1e-6},
            {"matched": 13, "reference": 13, "max_box_dev": 0.0, "max_score_dev": 0.0},
        ],
    }
    (tmp_path / "COCO-Detection__a.json").write_text(
        json.dumps({"model": names[0], "report": ok_report, "convert_s": 70.2})
    )
    (tmp_path / "COCO-Detection__b.json").write_text(json.dumps({"model": names[1], "reason": "d2ov: error: boom"}))
    text = zoo.render(names, tmp_path, tmp_path / "zoo.md")
    assert (tmp_path / "zoo.md").read_text() == text
    rows = [line for line in text.splitlines() if line.startswith("| COCO")]
    assert len(rows) == 2
    assert "| 56/100, 13/13 |" in rows[0] and "| pass |" in rows[0] and "97.0%, 100.0%" in rows[0]
    assert "| FAIL | d2ov: error: boom |" in rows[1]
    assert "Not run yet: COCO-Detection/c." in text and "1 of 2 pass." in text


def test_zoo_table_marks_twins_and_orders_families_first(tmp_path):
    names = ["COCO-Detection/faster_rcnn_R_50_C4_3x", "COCO-Detection/faster_rcnn_R_50_FPN_1x"]
    (tmp_path / "COCO-Detection__faster_rcnn_R_50_C4_3x.json").write_text(
        json.dumps({"model": names[0], "same_as": "COCO-Detection/faster_rcnn_R_50_C4_1x", "ok": True})
    )
    text = zoo.render(names, tmp_path, tmp_path / "zoo.md")
    assert "the same model as COCO-Detection/faster_rcnn_R_50_C4_1x" in text and "| pass |" in text
    assert zoo.order(names + ["COCO-Detection/retinanet_R_50_FPN_1x"]) == [
        "COCO-Detection/faster_rcnn_R_50_FPN_1x",
        "COCO-Detection/retinanet_R_50_FPN_1x",
        names[0],
    ]
