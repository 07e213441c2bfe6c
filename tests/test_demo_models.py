"""The bundled demo models: committed weights, bundled IRs, accuracy on a generated test split with
both backends, and PyTorch-vs-OpenVINO parity (the ground truth for every accuracy claim)."""

from __future__ import annotations

import json
import sys

import pytest

from d2ov_core import catalog, runtime
from d2ov_core.service import bundled_ir
from d2ov_core.weights import sha256_file

from .conftest import ROOT, run_cli

DEMOS = ["demo/faster_rcnn_shapes", "demo/mask_rcnn_shapes"]
pytestmark = pytest.mark.skipif(not all((catalog.DEMO_DIR / d.split("/")[1] / "model.json").is_file() for d in DEMOS),
                                reason="demo models not built (tools/train_demo_models.py)")
N_TEST = 60  # images of the generated test split used here (the full 200 are in the README numbers)


@pytest.fixture(scope="module")
def test_split(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "tools"))
    import make_shapes

    out = tmp_path_factory.mktemp("shapes")
    seed = make_shapes.DEFAULT_SPLITS["test"][1]
    ann = make_shapes.make_split(str(out), "test", N_TEST, seed)
    return ann, out


@pytest.mark.parametrize("name", DEMOS)
def test_committed_weights_match_their_sha256_and_size(name):
    spec = catalog.get(name)
    card = json.loads((catalog.DEMO_DIR / name.split("/")[1] / "model.json").read_text())
    assert sha256_file(spec.weights) == card["weights_sha256"] == spec.weights_sha256
    assert (catalog.DEMO_DIR / name.split("/")[1] / "model_final.pth").stat().st_size <= 15 * 1024 * 1024
    assert spec.classes == ("circle", "square", "triangle")


@pytest.mark.parametrize("name", DEMOS)
def test_bundled_ir_was_made_from_the_committed_weights(name):
    xml = bundled_ir(name)
    meta = runtime.read_metadata(xml)
    assert meta["weights_sha256"] == catalog.get(name).weights_sha256
    assert meta["random_weights"] is False and meta["labels"] == ["circle", "square", "triangle"]
    assert meta["task"] == catalog.get(name).task


@pytest.mark.parametrize("name", DEMOS)
@pytest.mark.parametrize("backend", ["openvino", "pytorch"])
def test_ap_on_generated_test_split(name, backend, test_split, tmp_path):
    ann, images = test_split
    model = str(bundled_ir(name)) if backend == "openvino" else name
    out = tmp_path / "eval.json"
    res = run_cli("-q", "eval", model, "--annotations", ann, "--images", str(images), "--backend", backend, "--json", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["images"] == N_TEST
    assert doc["bbox"]["AP"] >= 60, doc["bbox"]
    if name == "demo/mask_rcnn_shapes":
        assert doc["segm"]["AP"] >= 55, doc["segm"]


@pytest.mark.parametrize("name", DEMOS)
def test_openvino_and_pytorch_ap_agree(name, test_split, tmp_path):
    ann, images = test_split
    from d2ov_core.evaluate import evaluate
    from d2ov_core.predictor import Predictor
    from d2ov_core.reference import ReferencePredictor

    ov = evaluate(Predictor(bundled_ir(name)), ann, images, progress=False)
    pt = evaluate(ReferencePredictor(name, progress=False), ann, images, progress=False)
    for iou_type in ("bbox", "segm"):
        if iou_type in pt:
            assert abs(ov[iou_type]["AP"] - pt[iou_type]["AP"]) <= 0.3, (iou_type, ov[iou_type], pt[iou_type])


@pytest.mark.parametrize("name", DEMOS)
def test_verify_passes_on_test_images(name, test_split, tmp_path):
    ann, images = test_split
    files = sorted((images / "test").glob("*.jpg"))[:12]
    res = run_cli("-q", "verify", name, *map(str, files), "--json", str(tmp_path / "v.json"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    doc = json.loads((tmp_path / "v.json").read_text())
    assert all(r["ok"] for r in doc["images"]) and sum(r["matched"] for r in doc["images"]) > 0
