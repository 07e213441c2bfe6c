"""COCO evaluation (box AP, mask AP, keypoint AP) of any predictor over a COCO-format data set, with pycocotools.

The predictor is an OpenVINO :class:`~d2ov_core.predictor.Predictor` or the PyTorch
:class:`~d2ov_core.reference.ReferencePredictor`; both return ``Detections``, so both are evaluated
by the same code. Model classes are matched to the data set's categories BY NAME. All detections the
graph returns (score >= 0.05, at most 100 per image) are scored, as Detectron2's COCOEvaluator does.
Keypoints are scored as Detectron2 does (x, y minus 0.5: COCO's keypoints are pixel indices) with the
model's OKS sigmas (IR metadata ``keypoint_oks_sigmas``; COCO's own for 17 COCO keypoints).
Panoptic models, given the data set's COCO panoptic annotations (``panoptic``: the JSON, its PNGs in
the folder named like it), also get PQ / SQ / RQ (All, Things, Stuff) with
:mod:`~d2ov_core.measure.panoptic_quality`; their segments are matched to the panoptic categories
BY NAME too (things to thing categories, stuff to stuff categories).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..runtime.tasks import get_task

__all__ = ["evaluate", "STAT_NAMES"]

STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
#: COCOeval's keypoint summary has no small-object row
KEYPOINT_STAT_NAMES = ["AP", "AP50", "AP75", "APm", "APl"]


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
    panoptic: str | Path | None = None,
    panoptic_pngs: str | Path | None = None,
) -> dict[str, Any]:
    """Returns ``{"bbox": {AP...}, "segm": {AP...} or absent, "keypoints": {AP...} or absent,
    "panoptic": {"All": {PQ, SQ, RQ, n}, "Things": ..., "Stuff": ..., "per_class": ...} or absent,
    "images": n, "per_image_ms": median end-to-end, "per_image_inference_ms": median model call}``
    (AP and PQ values in percent). ``panoptic``: the COCO panoptic JSON of the same images (panoptic
    models only); ``panoptic_pngs``: its PNG folder (default: next to it, named like it)."""
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
    pq = None
    if panoptic is not None:
        from .panoptic_quality import PanopticScorer

        pq = PanopticScorer(predictor, panoptic, panoptic_pngs)
    sigmas = _oks_sigmas(predictor) if "keypoints" in task.iou_types else None
    results: list[dict[str, Any]] = []
    times, model_times = [], []
    bar = _bar(len(img_ids), progress)
    for img_id in img_ids:
        info = gt.loadImgs(img_id)[0]
        det = predictor.predict(img_dir / info["file_name"], threshold=0.0)
        if pq is not None:
            pq.add(info["file_name"], det)
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
    if pq is not None:
        out["panoptic"] = pq.result()
    return out


def _oks_sigmas(predictor) -> np.ndarray:
    """The OKS sigmas keypoint AP is computed with: the model's (IR metadata), else COCO's for the 17
    COCO person keypoints; anything else is an error (AP with made-up sigmas would mean nothing)."""
    from ..store.coco_classes import COCO_KEYPOINT_NAMES, COCO_KEYPOINT_OKS_SIGMAS

    meta = predictor.metadata
    names = list(meta["keypoint_names"])
    sigmas = list(meta["keypoint_oks_sigmas"])
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
