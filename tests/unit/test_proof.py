"""The proof that travels with an IR (d2ov_core.measure.proof): its sentence, and the record written
into a real IR's rt_info and d2ov.json, read back by the runtime and shown on the app's model card."""

from __future__ import annotations

import json

from d2ov_core.measure.proof import proof_text, record
from d2ov_core.runtime.ir import read_metadata
from d2ov_core.store import lookup
from d2ov_core.store.cache import ir_problem

from ..helpers import copy_ir

RECORD = {
    "images": 3,
    "reference": 12,
    "candidate": 12,
    "matched": 12,
    "images_within_tolerance": 3,
    "max_box_dev": 0.0001,
    "max_score_dev": 2e-06,
    "min_mask_iou": None,
    "max_keypoint_dev": None,
    "min_score": 0.3,
    "precision": "FP16",
    "against": "Detectron2 0.6, PyTorch 2.14.1, float32, weights w.pth",
    "image_names": ["a.jpg", "b.jpg", "c.jpg"],
}


def test_sentence():
    assert proof_text(RECORD).startswith(
        "checked against Detectron2 on 3 images: 12/12 detections matched, "
        "boxes within 0.0001 px, scores within 2e-06 (FP16 IR"
    )
    assert "weights w.pth" in proof_text(RECORD)
    one_missed = dict(RECORD, images=1, matched=11, candidate=13, min_mask_iou=0.98765)
    text = proof_text(one_missed)
    assert (
        "on 1 image:" in text
        and "11/12 detections matched (13 from the IR)" in text
        and "mask IoU at least 0.9877" in text
    )
    tied = proof_text(dict(RECORD, matched=11, ties=1))
    assert "11/12 detections matched + 1 near tie in Detectron2's NMS, boxes within" in tied
    assert "near tie" not in proof_text(RECORD)  # records written before ties were counted: none
    assert proof_text(dict(RECORD, matched=0, reference=0, candidate=0)).count("within") == 0  # nothing to measure
    assert proof_text(None) == proof_text({}) == ""


def test_record_goes_into_the_ir_and_its_card(tmp_path):
    from d2ov_core.serve.handlers import model_card
    from d2ov_core.serve.service import ModelService

    xml = copy_ir(lookup.bundled_ir("demo/faster_rcnn_shapes", "FP16"), tmp_path / "models" / "shapes" / "FP16")
    bin_before = xml.with_suffix(".bin").read_bytes()
    assert read_metadata(xml).verification == {}
    record(xml, RECORD)
    assert read_metadata(xml).verification == RECORD
    assert xml.with_suffix(".bin").read_bytes() == bin_before  # the weights are left as they are
    assert json.loads((xml.parent / "d2ov.json").read_text())["verification"] == RECORD
    assert ir_problem(xml.parent) is None  # the card's sha256 follow the rewritten model.xml
    service = ModelService(use_hub=False, convert_fallback=False, models_root=tmp_path / "models")
    assert proof_text(RECORD) in model_card(service, "local/shapes")
