"""The keypoint demo model (demo/keypoint_rcnn_figures, a Keypoint R-CNN trained here on synthetic
stick figures): committed weights, bundled IR, keypoint AP on the generated 200-image test split with
both backends, their agreement, verify on visible keypoints, and the app's Keypoints task."""

from __future__ import annotations

import json

import numpy as np
import pytest

from d2ov_core.runtime import ir as runtime
from d2ov_core.store import catalog
from d2ov_core.store.lookup import bundled_ir
from d2ov_core.store.weights import sha256_file
from tools import make_figures  # the data set's generator: keypoint names, sigmas, splits

from ..conftest import ROOT, SAMPLES, run_cli

ARTIFACTS = ROOT / "tests" / "_artifacts"
NAME = "demo/keypoint_rcnn_figures"
#: The issue's bars: keypoint AP >= 60 on the test split, OpenVINO within 0.3 AP of PyTorch, verify
#: within 0.5 px on visible keypoints.
MIN_KEYPOINT_AP = 60.0


@pytest.fixture(scope="module")
def test_split(tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    n, seed = make_figures.DEFAULT_SPLITS["test"]
    return make_figures.make_split(str(out), "test", n, seed), out


def test_committed_weights_card_and_bundled_ir():
    spec = catalog.get(NAME)
    card = json.loads((catalog.DATA_DIR / "demo" / "keypoint_rcnn_figures.json").read_text())
    assert sha256_file(spec.weights) == card["weights_sha256"] == spec.weights_sha256
    assert sha256_file(spec.config) == card["config_sha256"] == spec.config_sha256
    assert (catalog.DEMO_DIR / "keypoint_rcnn_figures" / "model_final.pth").stat().st_size <= 15 * 1024 * 1024
    assert spec.task == "keypoints" and spec.classes == ("figure",)
    assert spec.keypoint_names == tuple(make_figures.KEYPOINTS) and len(spec.keypoint_oks_sigmas) == 7
    for precision in ("FP16", "INT8"):
        meta = runtime.read_metadata(bundled_ir(NAME, precision))
        assert meta.weights_sha256 == spec.weights_sha256 and meta.random_weights is False
        assert meta.task == "keypoints" and meta.outputs[-2:] == ["scores", "image_size"]
        assert "keypoint_heatmaps" in meta.outputs
        assert meta.keypoint_names == list(spec.keypoint_names)
        assert meta.keypoint_skeleton == [list(p) for p in spec.keypoint_skeleton]
        assert meta.keypoint_oks_sigmas == list(make_figures.OKS_SIGMAS)
        assert meta.accuracy[precision].keypoint_AP >= MIN_KEYPOINT_AP - 1.0


@pytest.fixture(scope="module")
def openvino_eval(test_split, tmp_path_factory):
    """``d2ov eval`` of the bundled IR on the test split, run once: (stdout, the JSON it wrote)."""
    ann, images = test_split
    out = tmp_path_factory.mktemp("keypoint_eval") / "eval.json"
    res = run_cli(
        "-q", "eval", str(bundled_ir(NAME)), "--annotations", ann, "--images", str(images), "--json", str(out)
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout, json.loads(out.read_text())


def test_keypoint_ap_on_the_test_split(openvino_eval):
    """``d2ov eval`` of the bundled IR (the PyTorch side is measured in the next test)."""
    stdout, doc = openvino_eval
    assert "keypoints" in stdout
    assert doc["images"] == 200
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "ap_keypoint_rcnn_figures_openvino.json").write_text(json.dumps(doc, indent=1))
    assert doc["keypoints"]["AP"] >= MIN_KEYPOINT_AP, doc["keypoints"]


def test_openvino_and_pytorch_keypoint_ap_agree(test_split, openvino_eval):
    """PyTorch on the same 200 images, against the OpenVINO evaluation above (the CLI's numbers)."""
    from d2ov_core.export.reference import ReferencePredictor
    from d2ov_core.measure.evaluate import evaluate

    ann, images = test_split
    ov = openvino_eval[1]
    pt = evaluate(ReferencePredictor(NAME, progress=False), ann, images, progress=False)
    (ARTIFACTS / "ap_keypoint_rcnn_figures_agree.json").write_text(
        json.dumps({"openvino": ov, "pytorch": pt}, indent=1)
    )
    assert pt["images"] == ov["images"] == 200
    assert pt["keypoints"]["AP"] >= MIN_KEYPOINT_AP, pt["keypoints"]
    for iou_type in ("bbox", "keypoints"):
        assert abs(ov[iou_type]["AP"] - pt[iou_type]["AP"]) <= 0.3, (iou_type, ov[iou_type], pt[iou_type])


@pytest.mark.parametrize("precision,score_tol,keypoint_tol", [("FP32", "0.001", 0.5), ("FP16", "0.003", 1.5)])
def test_verify_keypoints(precision, score_tol, keypoint_tol, test_split, tmp_path):
    """The issue's bar on the FP32 IR: every detection matched, visible keypoints within 0.5 px
    (measured 3e-4 px). The FP16-weight IR (the default) rounds weights, which moves a few heatmap
    peaks to the neighbouring pixel of the box-sized map: keypoints within one such pixel (measured
    1.01 px on 3 of 12 images; boxes within 0.08 px, scores 1.6e-3)."""
    _, images = test_split
    files = sorted((images / "test").glob("*.jpg"))[:12]
    res = run_cli(
        "-q",
        "verify",
        NAME,
        *map(str, files),
        "--precision",
        precision,
        "--score-tol",
        score_tol,
        "--keypoint-tol",
        str(keypoint_tol),
        "--json",
        str(tmp_path / "v.json"),
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    doc = json.loads((tmp_path / "v.json").read_text())
    rows = doc["images"]
    assert all(r["ok"] for r in rows) and sum(r["matched"] for r in rows) > 0
    assert sum(r["keypoints_compared"] for r in rows) > 50
    assert max(r["max_keypoint_dev"] for r in rows) <= keypoint_tol
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"verify_keypoint_rcnn_figures_{precision}.json").write_text(json.dumps(doc, indent=1))


def test_predict_json_has_keypoints_by_name(tmp_path):
    sample = sorted(SAMPLES.glob("figures_*.jpg"))[0]
    out = tmp_path / "p.json"
    res = run_cli("-q", "predict", NAME, str(sample), "--json", str(out), "--render", str(tmp_path / "r"))
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(out.read_text())
    result = doc["results"][0]
    assert doc["model"]["task"] == "keypoints" and doc["model"]["keypoint_names"] == list(
        catalog.get(NAME).keypoint_names
    )
    assert result["keypoint_names"] == doc["model"]["keypoint_names"]
    inst = result["instances"]
    assert inst and all(np.asarray(i["keypoints"]).shape == (7, 3) for i in inst)
    # keypoints lie in (or right at) their figure's box
    for i in inst:
        x0, y0, x1, y1 = i["box"]
        kp = np.asarray(i["keypoints"])
        seen = kp[:, 2] > 0.05
        assert np.all(
            (kp[seen, 0] >= x0 - 2) & (kp[seen, 0] <= x1 + 2) & (kp[seen, 1] >= y0 - 2) & (kp[seen, 1] <= y1 + 2)
        )
    assert any((tmp_path / "r").glob("*.png")) or any((tmp_path / "r").glob("*.jpg"))
