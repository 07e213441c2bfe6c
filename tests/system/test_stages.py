"""The stage-by-stage check on one Model Zoo architecture per family (FPN, C4 with masks, DC5,
RetinaNet, Keypoint R-CNN, Panoptic FPN) with calibrated random weights, at a reduced test size (shorter side 320, longer at most
512) so the four take a few minutes; and a deliberately perturbed graph that it must fail."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from d2ov_core.store import catalog

from ..conftest import other_photo, real_photo, run_cli

FAMILIES = {
    "fpn": "COCO-Detection/faster_rcnn_R_50_FPN_1x",
    "c4": "COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x",  # Res5ROIHeads: res5 on each box, masks from it
    "dc5": "COCO-Detection/faster_rcnn_R_50_DC5_1x",  # dilated res5
    "retinanet": "COCO-Detection/retinanet_R_50_FPN_1x",
    "keypoints": "COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x",  # the graph ends at the keypoint heatmaps
    "panoptic": "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x",  # + the semantic head's logits, merged in numpy
}

#: per family, what keeps its heads' work per image small (the same graph, fewer boxes through it): C4
#: runs res5 on every proposal (1000 by default: ~0.6 GFLOPs each), Keypoint R-CNN eight 512-channel
#: convolutions on every detection (100 by default: ~7 GFLOPs each)
LIGHTER = {
    "c4": "MODEL:\n  RPN:\n    POST_NMS_TOPK_TEST: 200\n",
    "keypoints": "TEST:\n  DETECTIONS_PER_IMAGE: 20\n",
}
#: the ROI heads are compared on the eager model's 64 best proposals, not the 300 `d2ov verify --stages`
#: uses: the same graph on fewer boxes (Keypoint R-CNN's check took 176 s with 300, 150 of them in the heads)
ROIS = 64


def small_spec(name: str, folder: Path, extra: str = "") -> catalog.ModelSpec:
    """The catalog model ``name`` at test size 320/512 (a config whose _BASE_ is the Model Zoo one),
    with the config lines ``extra``."""
    import d2ov_core.export.compat as compat

    compat.apply()
    from detectron2 import model_zoo

    entry = catalog.get(name)
    cfg = folder / (name.rsplit("/", 1)[1] + "_320.yaml")
    cfg.write_text(
        f"_BASE_: {model_zoo.get_config_file(entry.config)}\nINPUT:\n  MIN_SIZE_TEST: 320\n  MAX_SIZE_TEST: 512\n{extra}"
    )
    spec = catalog.custom(cfg, "random", entry.classes, task=entry.task)
    return dataclasses.replace(
        spec,
        keypoint_names=entry.keypoint_names,
        keypoint_skeleton=entry.keypoint_skeleton,
        keypoint_oks_sigmas=entry.keypoint_oks_sigmas,
        stuff_classes=entry.stuff_classes,
    )


def _perturb_first_convolution(model, factor: float = 1.01):
    """Scale the weights of the graph's first convolution by ``factor`` (a broken conversion)."""
    from openvino import opset13 as ops

    for op in model.get_ordered_ops():
        if op.get_type_name() == "Convolution":
            source = op.input(1).get_source_output().get_node()
            while source.get_type_name() != "Constant":  # e.g. a Convert of FP16 weights
                source = source.input(0).get_source_output().get_node()
            data = source.get_data().astype(np.float32) * factor
            const = ops.constant(data.astype(source.get_data().dtype))
            for target in list(source.output(0).get_target_inputs()):
                target.replace_source_output(const.output(0))
            model.validate_nodes_and_infer_types()
            return model
    raise AssertionError("no Convolution in the graph")


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_stage_check_passes_per_family(family, tmp_path):
    from d2ov_core.export.convert import convert
    from d2ov_core.measure.stages import check, format_table
    from d2ov_core.runtime.predictor import Predictor

    spec = small_spec(FAMILIES[family], tmp_path, LIGHTER.get(family, ""))
    xml = convert(spec, weights="random", out=tmp_path / "ir", fp16=False, progress=False)
    report = check(spec, [str(real_photo()), str(other_photo())], weights="random", predictor=Predictor(xml), rois=ROIS)
    print(format_table(report))
    stages = {r.stage for r in report.rows}
    expected = {"features", "detections"} | ({"head"} if family == "retinanet" else {"rpn", "proposals", "roi"})
    expected |= {"sem_seg"} if family == "panoptic" else set()
    assert stages == expected
    assert report.ok, format_table(report)
    assert report.tensor_rel <= 1e-3
    roi = [r for r in report.rows if r.stage == "roi"]
    if family == "c4":  # Mask R-CNN: the mask head's logits were compared, on every image, within tolerance
        assert "roi.mask_logits" in _tensor_names(spec)
        assert len(roi) == 2 and all("roi.mask_logits" in r.compared and r.ok for r in roi), roi
    if family == "keypoints":  # Keypoint R-CNN: the keypoint heatmaps (the IR's last output) were compared
        assert "roi.keypoint_logits" in _tensor_names(spec)
        assert len(roi) == 2 and all("roi.keypoint_logits" in r.compared and r.ok for r in roi), roi
        assert Predictor(xml).metadata.keypoint_names == list(catalog.get(FAMILIES[family]).keypoint_names)
    if family == "panoptic":  # the panoptic maps: every segment matched, the same pixels
        for d in report.detections:
            assert d["segments_reference"] > 3 and d["min_segment_iou"] >= 0.98, d
            assert d["segments_matched"] == d["segments_reference"] == d["segments_candidate"]
            assert d["pixel_agreement"] >= 0.999
    for d in report.detections:  # whatever was matched agrees exactly
        assert d["max_box_dev"] <= 0.5 and d["max_score_dev"] <= 1e-3
    if family == "retinanet":  # no proposals in between: every detection matches
        assert all(
            d["unmatched_reference"] == d["unmatched_candidate"] == 0 and d["matched"] > 0 for d in report.detections
        )


def _tensor_names(spec):
    from d2ov_core.export import stages as ST
    from d2ov_core.export.model import build

    return ST.StageGraph(build(spec, "random", progress=False)[0]).names


@pytest.mark.slow
def test_stage_check_fails_on_a_perturbed_graph(tmp_path, monkeypatch):
    """A conversion that is off by 1% in one convolution fails at the features stage, and every stage
    after it, although with random weights the final detections could not tell."""
    from d2ov_core.export import stages as ST
    from d2ov_core.measure.stages import check, format_table

    convert_stages = ST.convert_stages
    monkeypatch.setattr(ST, "convert_stages", lambda *a, **k: _perturb_first_convolution(convert_stages(*a, **k)))
    spec = small_spec(FAMILIES["retinanet"], tmp_path)
    report = check(spec, [str(real_photo())], weights="random")
    table = format_table(report)
    assert not report.ok
    verdicts = {r.stage: r.ok for r in report.rows}
    assert verdicts == {"features": False, "head": False}, table
    assert report.tensor_rel > 1e-3 and "FAIL" in table


def test_verify_stages_bad_input_is_one_line(tmp_path):
    res = run_cli("verify", "COCO-Detection/retinanet_R_50_FPN_1x", str(real_photo()), "--stages", "--stage-tol", "2")
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "d2ov: error: --stage-tol must be in (0, 1), got 2.0"
    ]
    res = run_cli("verify", "COCO-Detection/retinanet_R_50_FPN_1x", str(tmp_path / "none.jpg"), "--stages")
    assert res.returncode == 2 and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
