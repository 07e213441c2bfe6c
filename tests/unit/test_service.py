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


@pytest.mark.parametrize("name", [MASK, FASTER])
def test_every_offered_precision_says_its_measured_ap_and_the_default_is_the_fastest_within_half_a_point(service, name):
    from d2ov_core.serve import handlers as H

    choices, default, why = H.precision_choices(service, name)
    acc = service.accuracy(name)
    assert [v for _, v in choices] == service.precisions(name)
    for label, value in choices:
        row = acc[value]
        assert f"box AP {row.box_AP:.1f}" in label and f"{row.ms:.0f} ms" in label, label
    ref = acc["FP32"]
    within = [
        p
        for _, p in choices
        if all(ref.value(k) - acc[p].value(k) <= 0.5 for k in ("box_AP", "mask_AP") if acc[p].value(k) is not None)
    ]
    assert default == min(within, key=lambda p: acc[p].ms) and default in why
    card = H.model_card(service, name)
    assert f"{default} runs by default" in card


def test_auto_is_each_models_own_default_and_a_named_precision_is_checked(service):
    """The app's initial choice and API callers that omit the precision get "auto": the model's
    measured default, which differs between models (a demo model's INT8, a local FP16-only IR's FP16)."""
    from d2ov_core.errors import InputError
    from d2ov_core.serve import handlers as H

    for name in (MASK, FASTER, "local/only_fp16"):
        default = H.precision_choices(service, name)[1]
        assert H.resolve_precision(service, name, "auto") == H.resolve_precision(service, name, None) == default
        assert f"selected: {default}" in H.model_card(service, name, "auto")
    assert H.resolve_precision(service, "local/only_fp16", None) == "FP16"
    assert H.resolve_precision(service, MASK, "fp32") == "FP32"
    with pytest.raises(InputError, match="unknown precision 'fp8'"):
        H.resolve_precision(service, MASK, "fp8")


def test_a_precision_without_a_measurement_says_so(tmp_path, monkeypatch):
    from d2ov_core.export.convert import save_ir
    from d2ov_core.runtime import ir
    from d2ov_core.serve import handlers as H

    monkeypatch.setenv("D2OV_CACHE", str(tmp_path / "cache"))
    src = lookup.bundled_ir(MASK, "FP16")
    meta = dict(ir.read_metadata(src).to_dict(), accuracy={})
    save_ir(
        ir.core().read_model(str(src)),
        tmp_path / "models" / "unmeasured" / "FP16" / "model.xml",
        meta,
        compress_to_fp16=False,
    )
    service = ModelService(use_hub=False, convert_fallback=False, models_root=tmp_path / "models")
    choices, default, why = H.precision_choices(service, "local/unmeasured")
    assert choices == [(f"{p} · AP not measured", p) for p in service.precisions("local/unmeasured")]
    assert default == "FP16" and "no precision of this model has a measured accuracy" in why


def test_a_server_that_cannot_convert_offers_only_what_it_holds(tmp_path, monkeypatch):
    """Without conversion (as on a Space, which has no torchvision), a Model Zoo model with no IR in
    reach is not listed, and naming it anyway says so in one sentence that sends no one to pip."""
    monkeypatch.setenv("D2OV_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "models"
    copy_ir(lookup.bundled_ir(FASTER, "FP16"), root / "mine" / "FP16")
    service = ModelService(use_hub=False, convert_fallback=False, models_root=root)
    offered = service.models()
    assert {MASK, FASTER, "local/mine"} <= set(offered)
    assert not [n for n in offered if n.startswith("COCO-")]
    assert service.default_model("detection") == FASTER and ZOO not in service.models("detection")
    assert service.prepare(ZOO, "FP16", wait=True).status == "unavailable"
    with pytest.raises(NotReadyError, match="holds no FP16 IR of .* and does not convert models") as e:
        service.predictor(ZOO, "CPU", "FP16")
    assert "pip" not in str(e.value)

    monkeypatch.setenv("D2OV_ONLY", "1")  # d2ov space --only: no demo models but the ones it opens on
    monkeypatch.delenv("D2OV_DEFAULT_MODEL", raising=False)
    only = ModelService(use_hub=False, convert_fallback=False, models_root=root)
    assert only.models() == ["local/mine"] and only.default_model("instance_segmentation") is None
    monkeypatch.setenv("D2OV_DEFAULT_MODEL", f"{FASTER},local/mine")
    named = ModelService(use_hub=False, convert_fallback=False, models_root=root)
    assert named.models() == [FASTER, "local/mine"]


def test_a_server_that_converts_still_offers_the_whole_catalog(service):
    assert service.convert_fallback  # this machine has the converter
    assert ZOO in service.models("detection")
