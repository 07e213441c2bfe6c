"""Comparing two sets of detections of the same image (PyTorch reference vs OpenVINO).

Detections are matched greedily by IoU within the same class, highest reference score first
(element-wise comparison is meaningless: equal scores may come out in another order).
What else a task's results hold is compared by the task (:meth:`~d2ov_core.runtime.tasks.Task.compare`):
maps of segments segment by segment, reported as the ``segments_*``, ``*_segment_iou`` and
``pixel_agreement`` fields.

Near ties: when Detectron2 itself scores two overlapping boxes of a class within the score
tolerance, its last non-maximum suppression keeps whichever is ahead by a few float32 roundings, and
another runtime (other kernels, same maths) may keep the other. Given Detectron2's detections before
that suppression, :func:`match` counts such a pair as a ``tie`` rather than a miss and an extra
detection, and only then: the candidate's box must be one Detectron2 scored too (within the box and
score tolerances), overlapping the reference's kept box beyond the suppression's IoU threshold, the
two Detectron2 scores within the score tolerance.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..runtime.detections import KEYPOINT_THRESHOLD, Detections
from ..runtime.tasks import task_of

__all__ = ["box_iou", "mask_iou", "match", "match_reference", "ties_text", "Comparison", "Tolerance"]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(len(a), len(b))`` of xyxy boxes."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clip(0).prod(axis=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.logical_and(a, b).sum()
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(inter / union)


@dataclasses.dataclass(frozen=True)
class Tolerance:
    min_score: float = 0.3  # detections of interest: reference score >= this
    iou: float = 0.9  # to count as the same detection
    box_px: float = 0.5
    score: float = 1e-3
    mask_iou: float = 0.98
    keypoint_px: float = 0.5  # visible keypoints (reference score > KEYPOINT_THRESHOLD)
    keypoint_share: float = 1.0  # of visible keypoints that must be within keypoint_px
    mask_pooled: bool = False  # judge masks by the IoU pooled over matched detections, not the smallest
    segment_iou: float = 0.98  # segment maps: every segment matched, the smallest matched IoU at least this


@dataclasses.dataclass
class Comparison:
    reference: int  # detections of interest in the reference
    candidate: int
    matched: int
    unmatched_reference: int
    unmatched_candidate: int
    max_box_dev: float
    max_score_dev: float
    min_mask_iou: float | None
    max_keypoint_dev: float | None = None  # px, over visible keypoints of matched detections
    keypoints_compared: int = 0
    keypoints_off: int = 0  # of them, how many deviate more than the tolerance
    mask_iou_pooled: float | None = None  # intersection / union summed over the matched detections
    segments_reference: int = 0  # segment maps: segments of the reference's map
    segments_candidate: int = 0
    segments_matched: int = 0
    min_segment_iou: float | None = None  # over matched segments
    mean_segment_iou: float | None = None
    pixel_agreement: float | None = None  # share of pixels in the same matched segment (or in none in both)
    ties: int = 0  # unmatched pairs that are a near tie in Detectron2's last NMS (not counted as unmatched)

    def ok(self, tol: Tolerance) -> bool:
        return (
            self.unmatched_reference == 0
            and self.unmatched_candidate == 0
            and self.max_box_dev <= tol.box_px
            and self.max_score_dev <= tol.score
            and self.masks_ok(tol)
            and self.keypoints_ok(tol)
            and self.segments_ok(tol)
        )

    def segments_ok(self, tol: Tolerance) -> bool:
        if self.min_segment_iou is None:
            return True
        return bool(
            self.segments_matched == self.segments_reference == self.segments_candidate
            and self.min_segment_iou >= tol.segment_iou
        )

    def masks_ok(self, tol: Tolerance) -> bool:
        if self.min_mask_iou is None:
            return True
        return (
            self.mask_iou_pooled if tol.mask_pooled and self.mask_iou_pooled is not None else self.min_mask_iou
        ) >= tol.mask_iou

    def keypoints_ok(self, tol: Tolerance) -> bool:
        return (
            self.max_keypoint_dev is None
            or self.max_keypoint_dev <= tol.keypoint_px
            or self.keypoints_compared - self.keypoints_off >= tol.keypoint_share * self.keypoints_compared
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def match(
    ref: Detections,
    cand: Detections,
    tol: Tolerance = Tolerance(),
    before_nms: Detections | None = None,
    nms_iou: float = 0.5,
) -> Comparison:
    """Match ``cand`` to ``ref`` detections with score >= ``tol.min_score``.

    A candidate just below ``min_score`` may match a reference just above it (and vice versa), so
    borderline scores do not count as misses: each side is filtered at ``min_score - tol.score``
    for matching, but only detections >= ``min_score`` count as unmatched. ``before_nms``: the
    reference's detections before its last NMS, whose IoU threshold is ``nms_iou``
    (:meth:`~d2ov_core.export.reference.ReferencePredictor.predict_before_nms`): unmatched pairs that
    are a near tie there are counted as ``ties`` (see the module's docstring).
    """
    lo = max(tol.min_score - tol.score, 0.0)
    r = ref.filter(lo)
    c = cand.filter(lo)
    iou = box_iou(r.boxes, c.boxes)
    same = r.class_ids[:, None] == c.class_ids[None, :]
    iou = np.where(same, iou, 0.0)
    used = np.zeros(len(c), bool)
    pairs = []
    for i in np.argsort(-r.scores, kind="stable"):
        if len(c) == 0:
            break
        cand_iou = np.where(used, -1.0, iou[i])
        j = int(np.argmax(cand_iou))
        if cand_iou[j] >= tol.iou:
            used[j] = True
            pairs.append((int(i), j))
    matched_r = {i for i, _ in pairs}
    lone_r = [i for i in range(len(r)) if i not in matched_r and r.scores[i] >= tol.min_score]
    lone_c = [j for j in range(len(c)) if not used[j] and c.scores[j] >= tol.min_score]
    ties = _ties(r, c, lone_r, lone_c, before_nms, nms_iou, tol) if before_nms is not None else []
    unmatched_r = len(lone_r) - len(ties)
    unmatched_c = len(lone_c) - len(ties)
    box_dev = max((float(np.abs(r.boxes[i] - c.boxes[j]).max()) for i, j in pairs), default=0.0)
    score_dev = max((float(abs(r.scores[i] - c.scores[j])) for i, j in pairs), default=0.0)
    m_iou, pooled = None, None
    if r.masks is not None and c.masks is not None:
        m_iou = min((mask_iou(r.masks[i], c.masks[j]) for i, j in pairs), default=1.0)
        inter = sum(int(np.logical_and(r.masks[i], c.masks[j]).sum()) for i, j in pairs)
        union = sum(int(np.logical_or(r.masks[i], c.masks[j]).sum()) for i, j in pairs)
        pooled = 1.0 if union == 0 else inter / union
    kp_dev, kp_n, kp_off = None, 0, 0
    if r.keypoints is not None and c.keypoints is not None:
        devs = [
            np.abs(r.keypoints[i, :, :2] - c.keypoints[j, :, :2]).max(axis=1)[r.keypoints[i, :, 2] > KEYPOINT_THRESHOLD]
            for i, j in pairs
        ]
        kp_n = int(sum(len(d) for d in devs))
        kp_off = int(sum(int((d > tol.keypoint_px).sum()) for d in devs))
        kp_dev = max((float(d.max()) for d in devs if len(d)), default=0.0)
    return Comparison(
        reference=int((r.scores >= tol.min_score).sum()),
        candidate=int((c.scores >= tol.min_score).sum()),
        matched=len(pairs),
        unmatched_reference=unmatched_r,
        unmatched_candidate=unmatched_c,
        max_box_dev=box_dev,
        max_score_dev=score_dev,
        min_mask_iou=m_iou,
        max_keypoint_dev=kp_dev,
        keypoints_compared=kp_n,
        keypoints_off=kp_off,
        mask_iou_pooled=pooled if m_iou is not None else None,
        ties=len(ties),
        **task_of(ref).compare(ref, cand),
    )


def match_reference(reference: Any, candidate: Any, image: np.ndarray, tol: Tolerance) -> Comparison:
    """:func:`match` of ``candidate``'s detections of ``image`` (any predictor) with ``reference``'s (a
    :class:`~d2ov_core.export.reference.ReferencePredictor`), both at threshold 0.05; where that leaves
    unmatched detections on both sides, again with the reference's detections before its last NMS, so
    near ties count as ties. What ``d2ov verify`` and the proof recorded at conversion
    (:mod:`~d2ov_core.measure.proof`) do."""
    expected, got = reference.predict(image, threshold=0.05), candidate.predict(image, threshold=0.05)
    c = match(expected, got, tol)
    if c.unmatched_reference and c.unmatched_candidate:
        c = match(expected, got, tol, *reference.predict_before_nms(image))
    return c


def ties_text(n: int) -> str:
    """``" + 2 near ties"`` after a matched count (``""`` for none): how every report says it."""
    return f" + {n} near tie{'s' * (n > 1)}" if n else ""


def _ties(
    r: Detections,
    c: Detections,
    lone_r: list[int],
    lone_c: list[int],
    before: Detections,
    nms_iou: float,
    tol: Tolerance,
) -> list[tuple[int, int]]:
    """Pairs ``(i, j)`` of unmatched reference and candidate detections that are a near tie in the
    reference's last NMS: candidate ``j`` is a box the reference scored before that NMS (``k``: same
    class, IoU >= ``tol.iou``, within ``tol.box_px`` and ``tol.score``), overlapping the reference's
    kept ``i`` above ``nms_iou``, and the reference scored ``i`` and ``k`` within ``tol.score``."""
    if not lone_r or not lone_c or len(before) == 0:
        return []
    found = box_iou(c.boxes[lone_c], before.boxes)  # (candidates, before NMS)
    same = c.class_ids[lone_c][:, None] == before.class_ids[None, :]
    near = np.abs(c.boxes[lone_c][:, None, :] - before.boxes[None, :, :]).max(axis=2) <= tol.box_px
    alike = np.abs(c.scores[lone_c][:, None] - before.scores[None, :]) <= tol.score
    scored = same & near & alike & (found >= tol.iou)  # (candidates, before NMS)
    overlap = box_iou(r.boxes[lone_r], c.boxes[lone_c])  # (references, candidates)
    pairs: list[tuple[int, int]] = []
    taken: set[int] = set()
    for a, i in enumerate(lone_r):
        for b, j in enumerate(lone_c):
            if b in taken or r.class_ids[i] != c.class_ids[j] or overlap[a, b] <= nms_iou:
                continue
            if np.any(scored[b] & (np.abs(before.scores - r.scores[i]) <= tol.score)):
                pairs.append((i, j))
                taken.add(b)
                break
    return pairs
