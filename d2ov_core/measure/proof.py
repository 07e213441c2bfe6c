"""The proof that travels with an IR: ``d2ov verify`` (Detectron2 in PyTorch against the IR, detection
by detection, :mod:`d2ov_core.measure.verify`) run on a few images at conversion and recorded in the
IR's ``verification`` metadata (rt_info) and its ``d2ov.json``, so that whoever runs the IR (the app's
model card) can say: "checked against Detectron2 on 3 images: 12/12 detections matched, boxes within
0.0001 px".

The record (:func:`check`)::

    {"images": 3, "reference": 12, "candidate": 12, "matched": 12, "images_within_tolerance": 3,
     "max_box_dev": 0.0001, "max_score_dev": 2e-06, "min_mask_iou": null, "max_keypoint_dev": null,
     "min_score": 0.3, "precision": "FP16", "against": "Detectron2 0.6, PyTorch 2.14.1, float32, weights
     model_final.pth (sha256 1234abcd...)", "image_names": ["a.jpg", ...]}

``reference``/``candidate``: detections scoring at least ``min_score`` in Detectron2's / the IR's
output; ``matched``: pairs of the same class with box IoU >= 0.9; ``ties``: pairs that are a near tie
in Detectron2's last NMS (:func:`~d2ov_core.measure.verify.match_reference`). Checking needs torch and Detectron2
(imported when called); reading and wording the record do not.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..export.reference import ReferencePredictor
from ..runtime import ir as runtime
from ..runtime.images import load_image
from ..runtime.predictor import Predictor
from ..store.cache import sha256_file
from .verify import Tolerance, match_reference, ties_text

__all__ = ["check", "record", "proof_text", "MAX_IMAGES"]

#: images checked at most (the first, by name)
MAX_IMAGES = 12


def check(
    spec,
    xml: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    weights: str | None = None,
    tol: Tolerance | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run Detectron2 (``spec`` + ``weights``, float32 on CPU) and the IR at ``xml`` on ``images`` (the
    first :data:`MAX_IMAGES`) and compare them as ``d2ov verify`` does (``tol``: default
    :class:`Tolerance`); returns the record."""
    tol = tol or Tolerance()
    import detectron2
    import torch

    images = [Path(p) for p in images][:MAX_IMAGES]
    ref = ReferencePredictor(spec, weights=weights, progress=progress)
    ov = Predictor(xml)
    rows = []
    for path in images:
        rgb = load_image(path)
        rows.append(match_reference(ref, ov, rgb, tol))
    winfo = ref.weights_info
    source = (
        "random weights"
        if winfo["random"]
        else (
            f"weights {Path(str(winfo['source'])).name}"
            + (f" (sha256 {winfo['sha256'][:12]}...)" if winfo["sha256"] else "")
        )
    )

    def worst(key, pick):
        values = [getattr(r, key) for r in rows if getattr(r, key) is not None]
        return round(float(pick(values)), 6) if values else None

    return {
        "images": len(rows),
        "reference": sum(r.reference for r in rows),
        "candidate": sum(r.candidate for r in rows),
        "matched": sum(r.matched for r in rows),
        "ties": sum(r.ties for r in rows),
        "images_within_tolerance": sum(bool(r.ok(tol)) for r in rows),
        "max_box_dev": worst("max_box_dev", max),
        "max_score_dev": worst("max_score_dev", max),
        "min_mask_iou": worst("min_mask_iou", min),
        "max_keypoint_dev": worst("max_keypoint_dev", max),
        "min_score": tol.min_score,
        "precision": ov.precision,
        "against": f"Detectron2 {detectron2.__version__}, PyTorch {torch.__version__.split('+')[0]}, float32, {source}",
        "image_names": [p.name for p in images],
    }


def record(xml: str | os.PathLike, verification: dict[str, Any]) -> None:
    """Write ``verification`` into the IR at ``xml`` (rt_info ``verification``) and into its
    ``d2ov.json`` (with the new sha256 of ``model.xml``; ``model.bin`` is left as it is)."""
    xml = Path(xml)
    runtime.write_metadata(xml, "verification", verification)
    card_path = xml.parent / "d2ov.json"
    if card_path.is_file():
        card = json.loads(card_path.read_text())
        card["verification"] = verification
        card["ir_sha256"] = {p.name: sha256_file(p) for p in sorted(xml.parent.glob("model.*"))}
        card_path.write_text(json.dumps(card, indent=1))


def _num(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".") if value >= 1e-4 else ("0" if value == 0 else f"{value:.0e}")


def proof_text(v: dict[str, Any] | None) -> str:
    """One sentence of a record: "checked against Detectron2 on 3 images: 12/12 detections matched,
    boxes within 0.0001 px, scores within 2e-06 (FP16 IR; ...)"; "" when there is none."""
    if not v:
        return ""
    ties = v.get("ties", 0)
    parts = [
        f"{v['matched']}/{v['reference']} detections matched"
        + (f"{ties_text(ties)} in Detectron2's NMS" if ties else "")
        + (f" ({v['candidate']} from the IR)" if v["candidate"] != v["reference"] else "")
    ]
    if v["matched"]:
        parts.append(f"boxes within {_num(v['max_box_dev'])} px, scores within {_num(v['max_score_dev'])}")
    if v.get("min_mask_iou") is not None:
        parts.append(f"mask IoU at least {v['min_mask_iou']:.4f}")
    if v.get("max_keypoint_dev") is not None:
        parts.append(f"keypoints within {_num(v['max_keypoint_dev'])} px")
    n = v["images"]
    return (
        f"checked against Detectron2 on {n} image{'s' * (n != 1)}: {', '.join(parts)} ({v['precision']} IR, "
        f"detections scoring {v['min_score']:g} or more; reference: {v['against']})"
    )
