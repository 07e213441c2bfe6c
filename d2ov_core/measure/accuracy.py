"""Accuracy that travels with the IR: COCO AP measured at conversion, per precision, on a named
evaluation set, written into the IR's ``accuracy`` metadata and ``d2ov.json`` (what the app shows
next to every precision, and how it picks its default).

:class:`AccuracyCheck` is the ``measure`` hook of :func:`d2ov_core.export.convert.convert`: for a
float IR it measures its precision (and ``BF16`` where the CPU has it); for INT8 it measures the float
model first, then each recipe, and accepts the first that loses at most ``max_drop`` box AP (and mask
AP for segmentation) against it. :func:`fastest_within` is the app's default-precision rule.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from ..errors import InputError
from ..export.resolve import open_predictor
from ..runtime import settings as S
from ..runtime.ir import bf16_available
from ..store.weights import Progress
from .evaluate import evaluate, task_measure

__all__ = ["AccuracyCheck", "fastest_within", "reference_row", "AP_KEYS", "ap_text"]

AP_KEYS, ap_text = S.AP_KEYS, S.ap_text


@dataclasses.dataclass
class AccuracyCheck:
    """Measure IRs on a COCO-format set (``annotations`` + ``images``, first ``limit`` images)."""

    annotations: Path
    images: Path
    limit: int | None = None
    max_drop: float | None = None  # INT8: most AP (and PQ) points it may lose against the float model
    #: a task's own measure (:class:`~d2ov_core.measure.evaluate.TaskMeasure`): its first input, the
    #: set's annotations for it, by name (measured for models of that task; its other inputs default)
    task_annotations: dict[str, Path] = dataclasses.field(default_factory=dict)
    progress: Progress = False
    reference: S.AccuracyRow | None = None  # the float model's row (set when a float IR is measured)

    def __post_init__(self) -> None:
        self.annotations, self.images = Path(self.annotations), Path(self.images)
        if not self.annotations.is_file():
            raise InputError(f"annotations not found: {self.annotations}")
        if not self.images.is_dir():
            raise InputError(f"images folder not found: {self.images}")
        self.task_annotations = {k: Path(v) for k, v in self.task_annotations.items() if v is not None}
        for name, path in self.task_annotations.items():
            if not path.is_file():
                raise InputError(f"--{name.replace('_', '-')} annotations not found: {path}")
        if self.max_drop is not None and self.max_drop < 0:
            raise InputError(f"--max-ap-drop must be >= 0, got {self.max_drop}")

    @property
    def key(self) -> str:
        """What the result depends on (part of the conversion cache key)."""
        digest = hashlib.sha256(self.annotations.read_bytes()).hexdigest()[:16]
        own = "".join(f":{hashlib.sha256(p.read_bytes()).hexdigest()[:16]}" for p in self.task_annotations.values())
        return f"{digest}:{self.limit}:{self.max_drop}{own}"

    def __call__(self, xml: Path, precision: str) -> tuple[dict[str, S.AccuracyRow], bool]:
        precisions = [precision] + (["BF16"] if precision in ("FP16", "FP32") and bf16_available() else [])
        rows = {p: self._measure(xml, p) for p in precisions}
        if precision != "INT8":
            self.reference = rows[precision]
            return rows, True
        return rows, self.acceptable(rows["INT8"])

    def acceptable(self, row: S.AccuracyRow) -> bool:
        if self.max_drop is None or self.reference is None:
            return True
        return within(self.reference, row, self.max_drop)

    def _measure(self, xml: Path, precision: str) -> S.AccuracyRow:
        predictor = open_predictor(xml, S.precision(precision))
        own = task_measure(predictor.task)
        given = {k: v for k, v in self.task_annotations.items() if own is not None and k in own.options}
        res = evaluate(
            predictor,
            self.annotations,
            self.images,
            limit=self.limit,
            progress=self.progress is True,
            task_annotations=given,
        )
        return S.AccuracyRow(
            box_AP=res["bbox"]["AP"],
            mask_AP=res["segm"]["AP"] if "segm" in res else None,
            keypoint_AP=res["keypoints"]["AP"] if "keypoints" in res else None,
            **(own.row(res[own.key]) if own is not None and own.key in res else {}),
            ms=round(res["per_image_inference_ms"], 1),
            images=res["images"],
            set=self.annotations.name,
        )


def within(reference: S.AccuracyRow, row: S.AccuracyRow, tolerance: float) -> bool:
    """Whether ``row`` loses at most ``tolerance`` points against ``reference`` on every measure both hold."""
    pairs = [(reference.value(k), row.value(k)) for k in S.ACCURACY_KEYS]
    return all(ref - got <= tolerance for ref, got in pairs if ref is not None and got is not None)


def reference_row(accuracy: dict[str, S.AccuracyRow]) -> S.AccuracyRow | None:
    """The float reference among measured rows: FP32 where measured, else FP16 (f32 compute)."""
    return accuracy.get("FP32") or accuracy.get("FP16")


def fastest_within(accuracy: dict[str, S.AccuracyRow], offered: list[str], tolerance: float = 0.5) -> str | None:
    """Of the ``offered`` precisions measured in ``accuracy``, the fastest whose box AP (and mask AP,
    keypoint AP, PQ) is within ``tolerance`` points of the float reference; ``None`` if none was measured."""
    ref = reference_row(accuracy)
    if ref is None:
        return None
    ok = [p for p in offered if p in accuracy and within(ref, accuracy[p], tolerance)]
    return min(ok, key=lambda p: accuracy[p].ms) if ok else None
