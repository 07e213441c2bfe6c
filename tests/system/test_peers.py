"""The peers of ``d2ov bench`` (TorchScript, onnxruntime FP32 and INT8) on the bundled demo model: they run,
their detections match Detectron2 eager's, INT8 keeps the AP, and an architecture a peer cannot run
gives a failed row with one line."""

import subprocess
import sys

import pytest

from d2ov_core.export.peers import PeerPredictor, prepare
from d2ov_core.measure.bench import run_bench
from d2ov_core.measure.evaluate import evaluate
from d2ov_core.runtime.images import image_files

from ..conftest import ROOT, SAMPLES

MODEL = "demo/faster_rcnn_shapes"
#: ort-int8's box AP may fall this much below ort-fp32's on the 24 held-out images (measured: docs/performance.md)
INT8_AP_DROP = 3.0


def _shapes(out, split: str, num: int):
    subprocess.run(
        [sys.executable, "-m", "tools.make_shapes", "--out", str(out), "--split", split, "--num", str(num)],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    return out


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    """The generator's train split, as the bundled INT8 IR's calibration (8 images: the test's time)."""
    return _shapes(tmp_path_factory.mktemp("peers"), "train", 8) / "train"


@pytest.mark.slow
def test_peers_run_and_match_detectron2(calibration):
    images = [str(p) for p in sorted(SAMPLES.glob("shapes_*.jpg"))[:2]]
    report = run_bench(
        MODEL,
        images,
        runs=1,
        warmup=0,
        threads=2,
        variants=["detectron2", "torchscript", "ort-fp32", "ort-int8"],
        calibration=str(calibration),
        log=lambda *_: None,
    )
    assert report["failed"] == []
    rows = {r["variant"]: r for r in report["rows"]}
    assert list(rows) == ["detectron2", "torchscript", "ort-fp32", "ort-int8"]
    assert "match" not in rows["detectron2"]
    for peer in ("torchscript", "ort-fp32"):  # the same f32 graph: Detectron2's detections to the pixel
        m = rows[peer]["match"]
        assert m["reference"] >= 10 and m["matched"] == m["reference"] and m["extra"] == 0, m
        assert m["max_box_dev"] < 0.01 and m["max_score_dev"] < 1e-4 and m["exact"], m
        assert rows[peer]["detections_median"] == rows["detectron2"]["detections_median"]
    m = rows["ort-int8"]["match"]  # 8-bit: most detections found again, boxes within a few pixels
    assert m["matched_fraction"] >= 0.8 and m["max_box_dev"] < 10 and not m["exact"], m
    for r in rows.values():
        assert r["e2e_ms"] > 0 and r["samples"] == 2


@pytest.mark.slow
def test_ort_int8_keeps_the_ap_on_held_out_images(calibration, tmp_path):
    data = _shapes(tmp_path, "test", 24)
    files = image_files(calibration)[:16]  # what run_bench takes: the first 16
    ap = {}
    for kind in ("ort-fp32", "ort-int8"):
        pred = PeerPredictor(kind, MODEL, prepare(kind, MODEL, calibration=files), threads=2)
        ap[kind] = evaluate(pred, data / "test.json", data, progress=False)["bbox"]["AP"]
    assert ap["ort-fp32"] > 40, ap  # the demo model scores about 61 on its full test split
    assert ap["ort-int8"] >= ap["ort-fp32"] - INT8_AP_DROP, ap


def test_a_peer_that_cannot_run_the_architecture_is_a_failed_row():
    report = run_bench(
        "demo/keypoint_rcnn_figures",
        [str(SAMPLES / "figures_1.jpg")],
        runs=1,
        warmup=0,
        variants=["torchscript", "ort-fp32"],
        log=lambda *_: None,
    )
    assert report["rows"] == [] and [f["variant"] for f in report["failed"]] == ["torchscript", "ort-fp32"]
    for f in report["failed"]:
        assert "keypoint" in f["error"] and "\n" not in f["error"], f
