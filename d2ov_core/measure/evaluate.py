"""COCO evaluation (box AP, mask AP, keypoint AP) of any predictor over a COCO-format data set, with pycocotools.

The predictor is an OpenVINO :class:`~d2ov_core.predictor.Predictor` or the PyTorch
:class:`~d2ov_core.reference.ReferencePredictor`; both return ``Detections``, so both are evaluated
by the same code. Model classes are matched to the data set's categories BY NAME. All detections the
graph returns (score >= 0.05, at most 100 per image) are scored, as Detectron2's COCOEvaluator does.
Keypoints are scored as Detectron2 does (x, y minus 0.5: COCO's keypoints are pixel indices) with the
model's OKS sigmas (IR metadata ``keypoint_oks_sigmas``; COCO's own for 17 COCO keypoints).
A task with a measure of its own (:attr:`~d2ov_core.runtime.tasks.Task.measure`, a module of this
package holding a :class:`TaskMeasure`) adds it when given that measure's annotations of the same
images (``task_annotations``), e.g. PQ / SQ / RQ of a map of segments.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..runtime.tasks import all_tasks, get_task
from ..store.coco_classes import COCO_KEYPOINT_NAMES, COCO_KEYPOINT_OKS_SIGMAS

__all__ = ["evaluate", "STAT_NAMES", "TaskMeasure", "task_measure", "task_measures"]

STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
#: COCOeval's keypoint summary has no small-object row
KEYPOINT_STAT_NAMES = ["AP", "AP50", "AP75", "APm", "APl"]


@dataclasses.dataclass(frozen=True)
class TaskMeasure:
    """A task's own measure beside COCO AP: what ``d2ov eval`` and ``d2ov convert`` offer for it.

    Attributes:
        title: what it measures, in a few words (``d2ov eval``'s help).
        key: its entry in :func:`evaluate`'s result.
        options: its annotation inputs, ``name -> help`` (CLI ``--name`` with ``_`` as ``-``; the
            first is required to measure, the others optional), passed to ``scorer`` by name.
        scorer: ``scorer(predictor, **inputs)`` with ``.add(file_name, detections)`` per image and
            ``.result()`` (the value at ``key``).
        lines: ``result -> [str]``: its lines of ``d2ov eval``'s report.
        row: ``result -> dict``: its keys of an ``accuracy`` row (:data:`~d2ov_core.runtime.settings.ACCURACY_KEYS`).
    """

    title: str
    key: str
    options: Mapping[str, str]
    scorer: Callable[..., Any]
    lines: Callable[[Any], list[str]]
    row: Callable[[Any], dict[str, Any]]

    @property
    def first(self) -> str:
        """The annotation input that turns the measure on."""
        return next(iter(self.options))


def task_measure(task: str) -> TaskMeasure | None:
    """The measure of its own of the task ``task``, or ``None``."""
    module = get_task(task).measure
    return importlib.import_module(f"{__package__}.{module}").MEASURE if module else None


def task_measures() -> list[TaskMeasure]:
    """Every task's measure of its own, in task order."""
    return [m for t in all_tasks() if (m := task_measure(t.name)) is not None]


def _load_coco(path: Path):
    from pycocotools.coco import COCO

    if not path.is_file():
        raise InputError(f"annotations not found: {path}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    except (ValueError, KeyError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a COCO annotation file ({e})") from None


def evaluate(
    predictor,
    annotations: str | Path,
    images: str | Path,
    limit: int | None = None,
    progress: bool = True,
    task_annotations: Mapping[str, str | Path | None] | None = None,
) -> dict[str, Any]:
    """Returns ``{"bbox": {AP...}, "segm": {AP...} or absent, "keypoints": {AP...} or absent,
    <the task's measure's key>: its result or absent, "images": n, "per_image_ms": median end-to-end,
    "per_image_inference_ms": median model call}`` (AP values in percent). ``task_annotations``: the
    inputs of the predictor's task's own measure (:class:`TaskMeasure`), by name; it is measured when
    the first is given (an error for a task without one)."""
    from pycocotools.cocoeval import COCOeval

    gt = _load_coco(Path(annotations))
    img_dir = Path(images)
    if not img_dir.is_dir():
        raise InputError(f"images folder not found: {img_dir}")
    name_to_cat = {c["name"]: c["id"] for c in gt.loadCats(gt.getCatIds())}
    class_to_cat = {i: name_to_cat[n] for i, n in enumerate(predictor.labels) if n in name_to_cat}
    if not class_to_cat:
        raise InputError(
            f"none of the model's classes ({', '.join(predictor.labels[:5])}...) is a category of {annotations} "
            f"({', '.join(list(name_to_cat)[:5])}...)"
        )
    img_ids = sorted(gt.getImgIds())[: limit or None]
    task = get_task(predictor.task)
    with_masks = "segm" in task.iou_types
    own = _task_scorer(predictor, task_annotations or {})
    sigmas = _oks_sigmas(predictor) if "keypoints" in task.iou_types else None
    results: list[dict[str, Any]] = []
    times, model_times = [], []
    bar = _bar(len(img_ids), progress)
    for img_id in img_ids:
        info = gt.loadImgs(img_id)[0]
        det = predictor.predict(img_dir / info["file_name"], threshold=0.0)
        if own is not None:
            own[1].add(info["file_name"], det)
        times.append(det.timings.get("total", 0.0))
        model_times.append(det.timings.get("inference", 0.0))
        results.extend(task.coco_results(det, img_id, class_to_cat))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    out: dict[str, Any] = {
        "images": len(img_ids),
        "detections": len(results),
        "per_image_ms": float(np.median(times)) if times else 0.0,
        "per_image_inference_ms": float(np.median(model_times)) if model_times else 0.0,
    }
    for iou_type in ["bbox"] + (["segm"] if with_masks else []) + (["keypoints"] if sigmas is not None else []):
        names = KEYPOINT_STAT_NAMES if iou_type == "keypoints" else STAT_NAMES
        if not results:
            out[iou_type] = {k: 0.0 for k in names}
            continue
        if iou_type == "keypoints" and not any(a.get("num_keypoints", 0) for a in gt.dataset.get("annotations", [])):
            raise InputError(f"{annotations}: no annotation has keypoints (num_keypoints > 0): not a keypoint data set")
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(
                [{k: v for k, v in r.items() if k != "keypoints" or iou_type == "keypoints"} for r in results]
            )
            ev = COCOeval(gt, dt, iou_type)
            ev.params.imgIds = img_ids
            if sigmas is not None:
                ev.params.kpt_oks_sigmas = sigmas
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        out[iou_type] = {k: round(float(v) * 100, 3) for k, v in zip(names, ev.stats[: len(names)])}
    if own is not None:
        out[own[0].key] = own[1].result()
    return out


def _task_scorer(predictor, given: Mapping[str, Any]) -> tuple[TaskMeasure, Any] | None:
    """The predictor's task's own measure and its scorer, when its annotations are ``given``."""
    given = {k: v for k, v in given.items() if v is not None}
    if not given:
        return None
    measure = task_measure(predictor.task)
    if measure is None or measure.first not in given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        owners = [t.name for t in all_tasks() if (m := task_measure(t.name)) and set(given) & set(m.options)]
        raise InputError(
            f"{flags} is for {' or '.join(owners) or 'no'} models; {predictor.name} is not one (its task: {predictor.task})"
        )
    return measure, measure.scorer(predictor, **{k: given.get(k) for k in measure.options})


def _oks_sigmas(predictor) -> np.ndarray:
    """The OKS sigmas keypoint AP is computed with: the model's (IR metadata), else COCO's for the 17
    COCO person keypoints; anything else is an error (AP with made-up sigmas would mean nothing)."""
    meta = predictor.metadata
    names = list(meta.keypoint_names)
    sigmas = list(meta.keypoint_oks_sigmas)
    if sigmas and len(sigmas) == len(names):
        return np.asarray(sigmas, np.float64)
    if tuple(names) == COCO_KEYPOINT_NAMES:
        return np.asarray(COCO_KEYPOINT_OKS_SIGMAS, np.float64)
    raise InputError(
        f"{predictor.name}: no OKS sigmas for its {len(names)} keypoints (expected "
        f"{len(names)} values in TEST.KEYPOINT_OKS_SIGMAS of its config)"
    )


def _bar(total: int, progress: bool):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="eval", file=sys.stderr, mininterval=1.0)
