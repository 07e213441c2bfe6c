"""``d2ov predict --backend pytorch`` (Detectron2 eager) against the OpenVINO backend, as users run
them: on a demo model of each task, the two JSON documents have the same schema and the same
detections within ``d2ov verify``'s default tolerances (the OpenVINO side on the FP32 IR, whose
compute is Detectron2's)."""

from __future__ import annotations

import json

import pytest

from d2ov_core.measure.verify import Tolerance, match
from d2ov_core.runtime.detections import Detections

from ..conftest import SAMPLES, run_cli

CASES = {
    "demo/faster_rcnn_shapes": "shapes_1.jpg",
    "demo/mask_rcnn_shapes": "shapes_2.jpg",
    "demo/keypoint_rcnn_figures": "figures_1.jpg",
    "demo/panoptic_fpn_shapes": "panoptic_1.jpg",
}


def _keys(doc: dict) -> dict:
    """The schema of a predict document: its keys at every level (instances and segments by union)."""
    res = doc["results"][0]
    inst = set().union(*(i.keys() for i in res["instances"]))
    segs = set().union(*(s.keys() for s in res["panoptic"]["segments"])) if "panoptic" in res else set()
    return {
        "top": set(doc),
        "model": set(doc["model"]),
        "result": set(res),
        "instance": inst,
        "segment": segs,
        "timing": set(res["timing_ms"]),
    }


@pytest.mark.slow
@pytest.mark.parametrize("model", list(CASES))
def test_pytorch_backend_gives_the_openvino_backends_json(model, tmp_path):
    image = SAMPLES / CASES[model]
    docs = {}
    for backend, extra in (("pytorch", ["--backend", "pytorch"]), ("openvino", ["--precision", "FP32"])):
        out = tmp_path / f"{backend}.json"
        res = run_cli("predict", model, str(image), *extra, "--json", str(out), "--render", str(tmp_path / backend))
        assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
        assert (tmp_path / backend / (image.stem + ".png")).is_file()
        docs[backend] = json.loads(out.read_text())
    pt, ov = docs["pytorch"], docs["openvino"]
    assert pt["backend"] == "pytorch" and ov["backend"] == "openvino" and pt["device"] == "cpu"
    assert _keys(pt) == _keys(ov)
    assert pt["model"]["ir"] is None and pt["model"]["precision"] == "FP32" and ov["model"]["precision"] == "FP32"
    assert {k: v for k, v in pt["model"].items() if k not in ("ir", "ir_precision")} == {
        k: v for k, v in ov["model"].items() if k not in ("ir", "ir_precision")
    }

    ref, cand = (Detections.from_dict(d["results"][0]) for d in (pt, ov))
    assert len(ref) >= 2, f"{model} found {len(ref)} objects in {image.name}: too few to compare"
    tol = Tolerance(min_score=pt["threshold"])
    c = match(ref, cand, tol)
    assert c.ok(tol) and c.matched == c.reference >= 2, c.to_dict()
    if ref.keypoints is not None:
        assert c.keypoints_compared > 0 and c.max_keypoint_dev <= tol.keypoint_px, c.to_dict()
    if ref.masks is not None:
        assert c.min_mask_iou >= tol.mask_iou, c.to_dict()
    if ref.segment_map is not None:
        assert c.segments_matched == c.segments_reference == c.segments_candidate > 0, c.to_dict()
