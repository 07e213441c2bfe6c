"""Serving past one machine, at the unit level: the OVMS repository writer (``d2ov export --ovms``) and
the app's model service with a model server (a fake KServe-v2 server in a thread)."""

from __future__ import annotations

import json

import pytest

from d2ov_core.errors import InputError, IRError, NotReadyError, ServerError
from d2ov_core.runtime.ir import read_metadata
from d2ov_core.runtime.settings import IRMetadata
from d2ov_core.serve import ovms
from d2ov_core.serve.service import ModelService
from d2ov_core.store import lookup

from ..conftest import SAMPLES
from ..fake_v2 import FakeV2Server, closed_port_url
from ..helpers import no_metadata_ir

MASK, FASTER = "demo/mask_rcnn_shapes", "demo/faster_rcnn_shapes"


# ----------------------------------------------------------------------------- OVMS repository


def test_ovms_repository_layout_config_and_metadata(tmp_path):
    out = tmp_path / "repo"
    name, text = ovms.write_repository(lookup.bundled_ir(MASK, "FP16"), out)
    assert name == "mask_rcnn_shapes"
    ovms.write_repository(lookup.bundled_ir(FASTER, "FP16"), out, nireq=4, hint="THROUGHPUT")
    ovms.write_repository(lookup.bundled_ir(MASK, "INT8"), out)  # the same name again: replaced, not doubled
    config = json.loads((out / "config.json").read_text())
    entries = {e["config"]["name"]: e["config"] for e in config["model_config_list"]}
    assert sorted(entries) == ["faster_rcnn_shapes", "mask_rcnn_shapes"]
    mask = entries["mask_rcnn_shapes"]
    assert mask["base_path"] == "/models/mask_rcnn_shapes" and mask["nireq"] == 2
    assert mask["shape"] == {"image": "(3,-1,-1)"}
    assert mask["plugin_config"] == {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    assert entries["faster_rcnn_shapes"]["plugin_config"]["PERFORMANCE_HINT"] == "THROUGHPUT"
    assert sorted(p.name for p in (out / "mask_rcnn_shapes" / "1").iterdir()) == ["model.bin", "model.xml"]
    assert read_metadata(out / "mask_rcnn_shapes" / "1" / "model.xml") == read_metadata(lookup.bundled_ir(MASK, "INT8"))
    assert read_metadata(out / "faster_rcnn_shapes" / "1" / "model.xml") == read_metadata(lookup.bundled_ir(FASTER))
    readme = (out / "README.md").read_text()
    assert "docker run" in readme and "--config_path /models/config.json" in readme and f"{out}:/models" in readme
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_ovms_repository_refuses_bad_input(tmp_path):
    with pytest.raises(InputError, match="name"):
        ovms.write_repository(lookup.bundled_ir(MASK), tmp_path / "a", name="../x")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.json").write_text('{"something": "else"}')
    with pytest.raises(InputError, match="not an OVMS config"):
        ovms.write_repository(lookup.bundled_ir(MASK), tmp_path / "b")
    with pytest.raises(IRError, match="not a d2ov IR"):
        ovms.write_repository(no_metadata_ir(tmp_path / "plain"), tmp_path / "c")


@pytest.mark.parametrize(
    "model_name, expected",
    [
        ("demo/mask_rcnn_shapes", "mask_rcnn_shapes"),
        ("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x", "mask_rcnn_R_50_FPN_3x"),
        ("/home/me/my config.yaml", "my_config"),
    ],
)
def test_served_names(model_name, expected):
    assert ovms.model_name(IRMetadata(model_name=model_name)) == expected


# ----------------------------------------------------------------------------- the app's service


@pytest.fixture(scope="module")
def fake():
    with FakeV2Server(lookup.bundled_ir(FASTER, "FP16"), "faster") as srv:
        yield srv


def test_service_offers_the_servers_models(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("D2OV_CACHE", str(tmp_path / "cache"))
    fake.mode = "ok"
    service = ModelService(use_hub=False, models_root=tmp_path / "none", server=fake.url)
    assert "remote/faster" in service.models("detection") and "remote/faster" not in service.models(
        "instance_segmentation"
    )
    assert service.default_model("detection") == "remote/faster"
    assert service.default_model("instance_segmentation") == MASK  # the server has none: the catalog's
    assert service.source_name("remote/faster") == FASTER
    assert service.state("remote/faster", "FP16").status == "ready"
    assert service.precisions("remote/faster", "GPU") == ["FP16"]  # the page's device does not matter
    assert service.spec_info("remote/faster").source == "model server"
    p = service.predictor("remote/faster", "CPU", "FP16")
    assert service.predictor("remote/faster", "AUTO", "FP16") is p  # one per model, whatever the device
    det = p.predict(sorted(SAMPLES.glob("shapes_*.jpg"))[0])
    assert len(det) > 0 and p.describe()["ir"] == f"{fake.url}/v2/models/faster"
    with pytest.raises(NotReadyError, match="runs FP16 on the model server, not INT8"):
        service.predictor("remote/faster", "CPU", "INT8")
    assert service.state("remote/faster", "INT8").status == "unavailable"
    fake.mode = "error"
    with pytest.raises(ServerError, match="HTTP 500"):
        p.predict(sorted(SAMPLES.glob("shapes_*.jpg"))[0])


def test_service_with_a_server_that_is_down_or_not_d2ov(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("D2OV_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ServerError, match="unreachable"):
        ModelService(use_hub=False, models_root=tmp_path / "none", server=closed_port_url())
    fake.mode = "no_rt_info"
    service = ModelService(use_hub=False, models_root=tmp_path / "none", server=fake.url)
    assert "remote/faster" not in service.models()
    with pytest.raises(IRError, match="remote/faster is not usable: .*not a d2ov model"):
        service.canonical("remote/faster")
    fake.mode = "ok"


# ----------------------------------------------------------------------------- the KServe examples


def test_kserve_examples_parse_and_name_the_real_entry_point():
    """docs/kserve/*.yaml are examples (no cluster here); at least they parse and their commands are real."""
    import yaml

    from d2ov_core.serve import kserve

    from ..conftest import ROOT

    custom = yaml.safe_load((ROOT / "docs" / "kserve" / "inferenceservice-custom.yaml").read_text())
    container = custom["spec"]["predictor"]["containers"][0]
    assert custom["kind"] == "InferenceService" and container["command"] == ["python", "-m", "d2ov_core.serve.kserve"]
    args = kserve.parse_args(container["args"])
    assert args.ir == ["/mnt/models/1/model.xml"] and args.host == "0.0.0.0" and args.http_port == 8080
    ovms_isvc = yaml.safe_load((ROOT / "docs" / "kserve" / "inferenceservice-ovms.yaml").read_text())
    model = ovms_isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "openvino_ir" and model["protocolVersion"] == "v2"
    plugin = next(a for a in model["args"] if a.startswith("--plugin_config="))
    assert json.loads(plugin.split("=", 1)[1]) == ovms.config_entry("x")["config"]["plugin_config"]
    dockerfile = (ROOT / "docs" / "kserve" / "Dockerfile").read_text()
    assert "requirements-serve.txt" in dockerfile and '"-m", "d2ov_core.serve.kserve"' in dockerfile


def test_the_space_does_not_get_kserve():
    from d2ov_core.serve.space import SPACE_REQUIREMENTS

    assert "kserve" not in SPACE_REQUIREMENTS.lower()
