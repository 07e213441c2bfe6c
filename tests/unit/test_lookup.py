"""One answer to "which IR serves (model, precision)?" (store.lookup), used by the CLI, the app's
service, bench and the Hub path: a stale IR (older converter, other weights, random weights) never
serves, wherever it is found."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from d2ov_core.export.convert import save_ir
from d2ov_core.export.resolve import resolve_ir
from d2ov_core.runtime import ir as runtime
from d2ov_core.runtime.settings import PRECISIONS
from d2ov_core.serve.service import ModelService
from d2ov_core.store import lookup
from d2ov_core.store.cache import sha256_file

NAME = "demo/mask_rcnn_shapes"


def cached_copy(tmp_cache: Path, precision: str, key: str, **changes) -> Path:
    """The bundled FP16 IR of NAME written into the conversion cache as ``precision`` with some
    metadata changed (what an older converter or other weights would have written)."""
    src = lookup.bundled_ir(NAME, "FP16")
    meta = dict(runtime.read_metadata(src).to_dict(), precision=precision, **changes)
    folder = lookup.cached_ir_dir(NAME) / key
    folder.mkdir(parents=True)
    save_ir(runtime.core().read_model(str(src)), folder / "model.xml", meta, compress_to_fp16=False)
    card = {
        "model_name": NAME,
        "precision": precision,
        "ir_sha256": {p.name: sha256_file(p) for p in sorted(folder.glob("model.*"))},
    }
    (folder / "d2ov.json").write_text(json.dumps(card))
    return folder / "model.xml"


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("D2OV_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_bundled_ir_serves_its_model():
    xml = lookup.find_ir(NAME, "FP16")
    assert xml == lookup.bundled_ir(NAME, "FP16")
    assert lookup.problem(xml, NAME, "FP16") is None
    assert lookup.problem(xml, "demo/faster_rcnn_shapes", "FP16").startswith("it is an IR of demo/mask_rcnn_shapes")
    assert "precision is FP16, not FP32" in lookup.problem(xml, NAME, "FP32")


@pytest.mark.parametrize(
    "changes,why",
    [
        ({"graph_revision": lookup.GRAPH_REVISIONS["GeneralizedRCNN"] - 1}, "older converter (GeneralizedRCNN graph"),
        ({"meta_architecture": "SemanticSegmentor"}, "does not convert architecture 'SemanticSegmentor'"),
        ({"weights_sha256": "0" * 64}, "not the catalog's"),
        ({"random_weights": True}, "random weights"),
        ({"config_sha256": "0" * 64}, "another version of the model's Detectron2 config"),
    ],
)
def test_a_stale_cached_ir_is_refused_by_cli_lookup_and_app(tmp_cache, changes, why):
    stale = cached_copy(tmp_cache, "FP32", "stale", **changes)
    assert why in lookup.problem(stale, NAME, "FP32")
    assert lookup.find_ir(NAME, "FP32") is None
    service = ModelService(use_hub=False, convert_fallback=False, models_root=tmp_cache / "none")
    assert service.state(NAME, "FP32").status == "not prepared"  # the app does not serve it
    assert "FP32" not in service.precisions(NAME)


def test_a_graph_revision_bump_invalidates_only_its_family(tmp_cache, monkeypatch):
    """Panoptic FPN's graph changing must not make every R-CNN's cached IR stale, and vice versa."""
    good = cached_copy(tmp_cache, "FP32", "good")  # a GeneralizedRCNN (Mask R-CNN) IR
    bumped = dict(lookup.GRAPH_REVISIONS, PanopticFPN=lookup.GRAPH_REVISIONS["PanopticFPN"] + 1)
    monkeypatch.setattr(lookup, "GRAPH_REVISIONS", bumped)
    assert lookup.problem(good, NAME, "FP32") is None and lookup.find_ir(NAME, "FP32") == good
    panoptic = lookup.bundled_ir("demo/panoptic_fpn_shapes", "FP16")
    assert "older converter (PanopticFPN graph revision 7, current 8)" in lookup.problem(
        panoptic, "demo/panoptic_fpn_shapes", "FP16"
    )
    bumped["GeneralizedRCNN"] += 1
    assert "older converter" in lookup.problem(good, NAME, "FP32")
    assert lookup.find_ir(NAME, "FP32") is None


def test_graph_revision_of_an_unknown_family_is_an_error():
    from d2ov_core.errors import D2ovError

    assert lookup.graph_revision("RetinaNet") == lookup.GRAPH_REVISIONS["RetinaNet"]
    with pytest.raises(D2ovError, match="no graph revision for architecture 'SemanticSegmentor'"):
        lookup.graph_revision("SemanticSegmentor")


def test_a_current_cached_ir_serves_cli_and_app(tmp_cache):
    good = cached_copy(tmp_cache, "FP32", "good")
    assert lookup.find_ir(NAME, "FP32") == good
    assert resolve_ir(NAME, PRECISIONS["FP32"]) == good  # the CLI's path: no conversion
    service = ModelService(use_hub=False, convert_fallback=False, models_root=tmp_cache / "none")
    st = service.state(NAME, "FP32")
    assert st.status == "ready" and st.xml == good
    assert "FP32" in service.precisions(NAME)


def test_a_tampered_cached_ir_is_removed_not_served(tmp_cache, caplog):
    good = cached_copy(tmp_cache, "FP32", "good")
    with open(good.with_suffix(".bin"), "r+b") as f:
        f.seek(64)
        f.write(b"\xff\xfe\xfd\xfc")
    with caplog.at_level(logging.WARNING, logger="d2ov"):
        assert lookup.find_ir(NAME, "FP32") is None
    assert not good.parent.exists() and "does not match" in caplog.text
