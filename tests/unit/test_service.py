"""The app's model service: names, the preparing/ready/unavailable state machine, and one shared
compiled predictor per (model, device, precision) with least-recently-used eviction."""

from __future__ import annotations

import time

import pytest

from d2ov_core.errors import IRError, ModelNotFoundError, NotReadyError
from d2ov_core.runtime.ir import bf16_available
from d2ov_core.serve.service import ModelService
from d2ov_core.store import lookup

from ..helpers import copy_ir

MASK, FASTER = "demo/mask_rcnn_shapes", "demo/faster_rcnn_shapes"
ZOO = "COCO-Detection/faster_rcnn_R_50_FPN_1x"  # its weights cannot be downloaded here


@pytest.fixture()
def service(tmp_path, monkeypatch):
    monkeypatch.setenv("D2OV_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "models"
    copy_ir(lookup.bundled_ir(MASK, "FP16"), root / "only_fp16" / "FP16")
    (root / "broken" / "FP16").mkdir(parents=True)
    (root / "broken" / "FP16" / "model.xml").write_text("<net/>")
    return ModelService(use_hub=False, convert_fallback=True, models_root=root, max_predictors=2)


def test_names(service):
    assert MASK in service.models("instance_segmentation") and "local/only_fp16" in service.models()
    assert FASTER not in service.models("instance_segmentation")
    assert service.canonical("mask_rcnn_R_50_FPN_3x") == "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x"
    with pytest.raises(ModelNotFoundError, match="unknown model"):
        service.canonical("../../etc/passwd")
    with pytest.raises(IRError, match="local/broken is not usable"):
        service.canonical("local/broken")


def test_bundled_models_are_ready_at_once_and_bf16_shares_the_fp16_ir(service):
    st = service.state(MASK, "FP16")
    assert st.status == "ready" and st.xml == lookup.bundled_ir(MASK, "FP16")
    assert service.state(MASK, "BF16") == st
    expected = ["FP16"] + (["BF16"] if bf16_available() else []) + ["INT8"]
    assert service.precisions(MASK) == expected
    assert "BF16" not in service.precisions(MASK, device="AUTO")


def test_a_missing_precision_of_a_local_ir_is_unavailable_with_the_reason(service):
    st = service.prepare("local/only_fp16", "INT8")
    assert st.status == "unavailable" and "has no INT8 IR (its IRs: FP16)" in st.detail
    with pytest.raises(NotReadyError, match="unavailable"):
        service.predictor("local/only_fp16", "CPU", "INT8")


def test_preparing_then_unavailable_when_the_weights_cannot_be_downloaded(service):
    with pytest.raises(NotReadyError, match="being prepared"):
        service.predictor(ZOO, "CPU", "FP16")
    for _ in range(300):
        st = service.state(ZOO, "FP16")
        if st.status != "preparing":
            break
        time.sleep(0.2)
    assert st.status == "unavailable"
    assert "cannot download" in st.detail and "choose a demo model" in st.detail and "--weights" not in st.detail
    with pytest.raises(NotReadyError, match="unavailable"):
        service.predictor(ZOO, "CPU", "FP16")


def test_one_predictor_per_key_and_least_recently_used_eviction(service):
    a = service.predictor(MASK, "CPU", "FP16")
    assert service.predictor(MASK, "CPU", "FP16") is a  # shared
    b = service.predictor(FASTER, "CPU", "FP16")
    assert service.predictor(MASK, "CPU", "FP16") is a  # a is now the most recently used
    c = service.predictor(MASK, "CPU", "INT8")  # third key: b (least recently used) goes
    assert service.predictor(MASK, "CPU", "FP16") is a and service.predictor(MASK, "CPU", "INT8") is c
    assert service.predictor(FASTER, "CPU", "FP16") is not b  # compiled again
    assert c.precision == "INT8" and a.precision == "FP16"


@pytest.mark.skipif(not bf16_available(), reason="this CPU has no native bfloat16")
def test_bf16_runs_the_fp16_ir_in_bf16(service):
    p = service.predictor(MASK, "CPU", "BF16")
    assert p.precision == "BF16" and p.compute == "bf16" and p.xml == lookup.bundled_ir(MASK, "FP16")
