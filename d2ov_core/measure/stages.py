"""The stage-by-stage check: PyTorch and OpenVINO compared stage by stage on the same image, so a
conversion can be judged with no trained checkpoint.

Final detections of a model with random weights are no judge: its objectness is near-flat, so
differences of 1e-6 choose other proposals and the detections differ although every op converted
exactly. This check compares what each stage computes from the same input:

=============  =====================================================================  ==========
stage          compared (PyTorch eager vs the verification graph of                   pass when
               :mod:`d2ov_core.export.stages`, FP32 weights, f32 compute)
=============  =====================================================================  ==========
features       the backbone's (FPN's) feature maps                                    rel <= tol
sem_seg        a semantic head's logits over the padded input                         rel <= tol
rpn            the RPN head's objectness logits and anchor deltas, every level        rel <= tol
head           RetinaNet's class logits and box deltas, every level                   rel <= tol
roi            class logits, box deltas (and mask logits) of the ROI heads on the     rel <= tol
               SAME FIXED boxes: the eager model's proposals for the image
proposals      the RPN's top proposals computed in each graph: the fraction of        (info)
               PyTorch's found in OpenVINO's (same box within 0.01 px); their
               sorted objectness is compared as a tensor
detections     the deployed IR's final detections against Detectron2's                see below
=============  =====================================================================  ==========

``rel`` is the largest absolute difference divided by the largest absolute reference value of that
tensor (a per-tensor scale: per-element ratios explode where values cross zero). ``tol`` is 1e-3.

Detections pass when every detection found by both (greedy IoU >= 0.9 within a class, score >=
``min_score``) agrees within the verify tolerance (0.5 px, 1e-3 score) and, where the proposals
were identical, none is missing on either side; for a task whose answer is a map of segments, where
the proposals were identical, every segment is matched with IoU >= the verify tolerance (0.98). Where the proposals differ (near-tied objectness:
their values agree to ``rel`` but the order among near-equal ones does not), missing detections are
expected and reported, not failed: the heads on fixed boxes prove the same boxes give the same
detections.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..export import stages as ST
from ..export.model import build, cfg_metadata
from ..export.reference import ReferencePredictor
from ..runtime.images import load_image
from ..runtime.preprocess import preprocess
from ..store import catalog
from .verify import Comparison, Tolerance, match

__all__ = ["TOLERANCE", "StageRow", "StageReport", "compare_tensors", "compare_proposals", "check", "format_table"]

#: relative tolerance per stage tensor
TOLERANCE = 1e-3
#: final-mask IoU bar with random weights (their masks sit near the threshold; see :func:`check`)
RANDOM_MASK_IOU = 0.9
#: share of visible keypoints within tolerance with random weights (near-tied noise peaks; see :func:`check`)
RANDOM_KEYPOINT_SHARE = 0.99
#: proposals are "the same" within this many pixels
PROPOSAL_PX = 0.01


def compare_tensors(ref: np.ndarray, cand: np.ndarray) -> tuple[float, float]:
    """``(max abs difference, max abs difference / max |ref|)``; shapes must agree (a shape mismatch
    is ``(inf, inf)``); empty tensors compare as ``(0, 0)``."""
    ref, cand = np.asarray(ref, np.float64), np.asarray(cand, np.float64)
    if ref.shape != cand.shape:
        return float("inf"), float("inf")
    if ref.size == 0:
        return 0.0, 0.0
    diff = np.abs(ref - cand)
    if not np.all(np.isfinite(diff)):
        return float("inf"), float("inf")
    d = float(diff.max())
    return d, d / max(float(np.abs(ref).max()), 1e-12)


def compare_proposals(ref: np.ndarray, cand: np.ndarray, px: float = PROPOSAL_PX) -> float:
    """Fraction of the boxes ``ref (N, 4)`` that have a box in ``cand (M, 4)`` within ``px`` on every
    coordinate (1.0 when ``ref`` is empty)."""
    ref, cand = np.asarray(ref, np.float64).reshape(-1, 4), np.asarray(cand, np.float64).reshape(-1, 4)
    if len(ref) == 0:
        return 1.0
    if len(cand) == 0:
        return 0.0
    found = np.zeros(len(ref), bool)
    for start in range(0, len(ref), 256):  # (256, M, 4) at a time
        dev = np.abs(ref[start : start + 256, None, :] - cand[None, :, :]).max(axis=2)
        found[start : start + 256] = dev.min(axis=1) <= px
    return float(found.mean())


@dataclasses.dataclass
class StageRow:
    stage: str  # features | rpn | head | proposals | roi | detections
    image: str
    tensors: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    worst: str = ""  # the tensor with the largest relative difference
    ok: bool | None = True  # None: informative only
    note: str = ""
    compared: list[str] = dataclasses.field(default_factory=list)  # the tensors compared, by name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class StageReport:
    model: str
    rows: list[StageRow]
    tolerance: float
    seconds: dict[str, float]
    detections: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        return all(r.ok is not False for r in self.rows)

    @property
    def tensor_rel(self) -> float:
        """The largest relative deviation over the tensor stages (features, rpn/head, roi)."""
        return max(
            (r.max_rel for r in self.rows if r.stage in ("features", "sem_seg", "rpn", "head", "roi")), default=0.0
        )

    def stage_summary(self) -> list[dict[str, Any]]:
        """One row per stage over all images: worst abs/rel, pass."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.rows:
            s = out.setdefault(
                r.stage,
                {"stage": r.stage, "tensors": 0, "max_abs": 0.0, "max_rel": 0.0, "worst": "", "ok": r.ok, "notes": []},
            )
            s["tensors"] += r.tensors
            if r.max_rel >= s["max_rel"] and r.worst:
                s["worst"] = r.worst
            s["max_abs"], s["max_rel"] = max(s["max_abs"], r.max_abs), max(s["max_rel"], r.max_rel)
            s["ok"] = None if (s["ok"] is None and r.ok is None) else (s["ok"] is not False and r.ok is not False)
            if r.note:
                s["notes"].append(r.note)
        return list(out.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "ok": self.ok,
            "tolerance": self.tolerance,
            "tensor_rel": self.tensor_rel,
            "seconds": self.seconds,
            "stages": self.stage_summary(),
            "rows": [r.to_dict() for r in self.rows],
            "detections": self.detections,
        }


def _stage_of(name: str) -> str:
    return name.split(".", 1)[0]


def _tensor_rows(ref: dict[str, np.ndarray], cand: dict[str, np.ndarray], image: str, tol: float) -> list[StageRow]:
    rows: dict[str, StageRow] = {}
    for name, r in ref.items():
        stage = _stage_of(name)
        if stage == "proposals":
            continue
        a, rel = compare_tensors(r, cand[name])
        row = rows.setdefault(stage, StageRow(stage, image))
        row.tensors += 1
        row.compared.append(name)
        if rel >= row.max_rel:
            row.worst = name
        row.max_abs, row.max_rel = max(row.max_abs, a), max(row.max_rel, rel)
        if np.asarray(r).shape != np.asarray(cand[name]).shape:
            row.note = f"{name}: shape {tuple(np.shape(cand[name]))}, expected {tuple(np.shape(r))}"
    for row in rows.values():
        row.ok = row.max_rel <= tol
    return list(rows.values())


def _proposal_row(ref: dict[str, np.ndarray], cand: dict[str, np.ndarray], image: str) -> StageRow | None:
    if "proposals.boxes" not in ref:
        return None
    same = compare_proposals(ref["proposals.boxes"], cand["proposals.boxes"])
    a, rel = compare_tensors(np.sort(ref["proposals.logits"]), np.sort(cand["proposals.logits"]))
    n = len(ref["proposals.boxes"])
    return StageRow(
        "proposals",
        image,
        tensors=1,
        max_abs=a,
        max_rel=rel,
        worst="proposals.logits (sorted)",
        ok=None,
        note=f"{same:.1%} of {n} identical",
    )


def _detection_row(c: Comparison, image: str, proposals_same: bool, tol: Tolerance) -> StageRow:
    agree = c.max_box_dev <= tol.box_px and c.max_score_dev <= tol.score and c.masks_ok(tol) and c.keypoints_ok(tol)
    missing = c.unmatched_reference + c.unmatched_candidate
    ok = agree and (missing == 0 and c.segments_ok(tol) or not proposals_same)
    note = (
        f"matched {c.matched}/{c.reference}, box dev {c.max_box_dev:.3f} px, score dev {c.max_score_dev:.1e}"
        + (
            ""
            if c.min_mask_iou is None
            else f", mask IoU {c.min_mask_iou:.3f}" + (f" (pooled {c.mask_iou_pooled:.3f})" if tol.mask_pooled else "")
        )
        + (f", score tol {tol.score:.1e}" if tol.score > Tolerance().score else "")
        + (
            ""
            if c.max_keypoint_dev is None
            else f", keypoint dev {c.max_keypoint_dev:.3f} px ({c.keypoints_compared} visible"
            + (f", {c.keypoints_off} beyond {tol.keypoint_px:g} px" if c.keypoints_off else "")
            + ")"
        )
        + (
            ""
            if c.min_segment_iou is None
            else f", segments {c.segments_matched}/{c.segments_reference} (ov {c.segments_candidate}), segment IoU "
            f"min {c.min_segment_iou:.4f}, pixels agree {100 * c.pixel_agreement:.3f}%"
        )
    )
    if missing and not proposals_same:
        note += " (unmatched: other proposals)"
    return StageRow("detections", image, tensors=0, max_abs=c.max_box_dev, max_rel=0.0, worst="", ok=ok, note=note)


def check(
    model,
    images: Sequence[str],
    weights: str | None = None,
    tol: float = TOLERANCE,
    verify_tol: Tolerance | None = None,
    predictor=None,
    progress: bool = False,
    rois: int | None = None,
) -> StageReport:
    """Run the stage check of ``model`` (catalog name or spec) on ``images``.

    Args:
        weights: weights spec (default: the catalog's; ``"random"`` for calibrated random weights).
        predictor: the OpenVINO predictor of the deployed IR for the detections stage (``None``: no
            detections stage).
        verify_tol: the detections stage's tolerance (default :class:`Tolerance`).
        rois: how many of the eager model's best proposals the ROI heads are compared on (default
            :data:`d2ov_core.export.stages.FIXED_BOXES`); each one costs a Keypoint R-CNN ~7 GFLOPs
            and a C4 model its res5, on both sides and in the trace.
    """
    verify_tol = verify_tol or Tolerance()

    spec = catalog.get(model) if isinstance(model, str) else model
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    net, cfg, _ = build(spec, weights, progress=progress)
    meta = cfg_metadata(cfg, spec)
    graph = ST.StageGraph(net)
    chws = [preprocess(load_image(p), meta)[0] for p in images]
    boxes = [ST.eager_proposals(net, c, rois or ST.FIXED_BOXES) for c in chws]
    seconds["build"] = time.perf_counter() - t
    t = time.perf_counter()
    compiled = ST.compile_stages(ST.convert_stages(graph, chws[0], boxes[0]))
    seconds["convert_stages"] = time.perf_counter() - t
    t = time.perf_counter()
    rows: list[StageRow] = []
    same_proposals: list[bool] = []
    logit_devs: list[float] = []  # per image: the class logits' largest absolute deviation
    for path, chw, b in zip(images, chws, boxes):
        ref = ST.run_stages(graph, chw, b)
        cand = ST.run_compiled(compiled, graph.names, chw, b)
        rows += _tensor_rows(ref, cand, str(path), tol)
        logit_devs.append(
            max(
                (
                    float(np.abs(np.asarray(ref[n], np.float64) - cand[n]).max())
                    for n in ref
                    if (n == "roi.class_logits" or n.startswith("head.logits.")) and np.size(ref[n])
                ),
                default=0.0,
            )
        )
        prow = _proposal_row(ref, cand, str(path))
        if prow is not None:
            rows.append(prow)
        same_proposals.append(prow is None or prow.note.startswith("100.0%"))
    seconds["run_stages"] = time.perf_counter() - t
    detections = []
    if predictor is not None:
        if weights == "random":
            # random mask heads put most mask probabilities near the 0.5 threshold, where a 1e-4 change
            # flips pixels (measured: mask IoU 0.948 on the C4 Mask R-CNN with its mask logits within
            # 1.6e-4): the mask head is judged at roi.mask_logits, the final masks loosely
            # random keypoint heatmaps are noise with several near-equal peaks: a 1e-5 change in a logit
            # can move the peak to another (measured: 1 of 425 keypoints, 3.2 px, on the R50-FPN Keypoint
            # R-CNN at full size with its heatmaps within 6e-5): the keypoint head is judged at
            # roi.keypoint_logits, the final keypoints by the share within tolerance
            # (and the masks' IoU pooled over the matched detections: a mask of a few pixels near 0.5
            # can flip whole; measured: one matched DC5 mask at IoU 0.0 with the mask logits within 4.8e-5)
            verify_tol = dataclasses.replace(
                verify_tol,
                mask_iou=min(verify_tol.mask_iou, RANDOM_MASK_IOU),
                mask_pooled=True,
                keypoint_share=min(verify_tol.keypoint_share, RANDOM_KEYPOINT_SHARE),
            )
        t = time.perf_counter()
        reference = ReferencePredictor(spec, weights=weights, progress=progress)
        for path, same, logit_dev in zip(images, same_proposals, logit_devs):
            rgb = load_image(path)
            image_tol = verify_tol
            if weights == "random":
                # a softmax or sigmoid score moves by less than its logits do: with the class logits
                # within the stage tolerance, a score may move by their measured deviation (R101-DC5:
                # logits 2.6e-4 relative, largest |change| about 1.4e-3, a score 1.4e-3)
                image_tol = dataclasses.replace(verify_tol, score=max(verify_tol.score, logit_dev))
            c = match(reference.predict(rgb, threshold=0.05), predictor.predict(rgb, threshold=0.05), image_tol)
            rows.append(_detection_row(c, str(path), same, image_tol))
            detections.append({"image": str(path), **c.to_dict()})
        seconds["detections"] = time.perf_counter() - t
    order = {s: i for i, s in enumerate(["features", "sem_seg", "rpn", "head", "proposals", "roi", "detections"])}
    rows.sort(key=lambda r: order.get(r.stage, 99))
    return StageReport(spec.name, rows, tol, {k: round(v, 1) for k, v in seconds.items()}, detections)


def format_table(report: StageReport) -> str:
    """The report as a text table, one line per stage and image."""
    lines = [f"{'stage':<11} {'image':<18} {'tensors':>7} {'max abs':>10} {'max rel':>10}  {'pass':<4}  worst / note"]
    for r in report.rows:
        verdict = "info" if r.ok is None else ("ok" if r.ok else "FAIL")
        img = r.image.rsplit("/", 1)[-1][:18]
        rel = "-" if r.stage == "detections" else f"{r.max_rel:.2e}"
        mabs = f"{r.max_abs:.3f}px" if r.stage == "detections" else f"{r.max_abs:.2e}"
        detail = "; ".join(x for x in (r.worst, r.note) if x)
        lines.append(f"{r.stage:<11} {img:<18} {r.tensors:>7} {mabs:>10} {rel:>10}  {verdict:<4}  {detail}")
    return "\n".join(lines)
