"""Converter tests on the exact seed architectures (random weights: no checkpoint is reachable here)."""

import json
from pathlib import Path

import numpy as np
import pytest

from d2ov_core.export.convert import convert
from d2ov_core.export.resolve import resolve_ir
from d2ov_core.runtime import ir as runtime
from d2ov_core.runtime.predictor import Predictor
from d2ov_core.store import catalog

from ..conftest import SAMPLES, other_photo, random_image, real_photo

SEEDS = [
    ("COCO-Detection/faster_rcnn_R_50_FPN_1x", ["boxes", "classes", "scores", "image_size"]),
    ("COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x", ["boxes", "classes", "masks", "scores", "image_size"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,outputs", SEEDS)
def test_seed_architecture_converts_and_runs(name, outputs, tmp_path):
    spec = catalog.get(name)
    xml = convert(spec, weights="random", out=tmp_path / "ir", progress=False)
    assert xml == tmp_path / "ir" / "model.xml" and xml.with_suffix(".bin").is_file()
    assert sorted(p.name for p in (tmp_path / "ir").iterdir()) == ["d2ov.json", "model.bin", "model.xml"]
    assert not list(tmp_path.glob(".*tmp*")), "temporary folder left behind"

    meta = runtime.read_metadata(xml)
    assert meta.model_name == name and meta.outputs == outputs
    assert meta.labels == list(spec.classes) and len(meta.labels) == 80
    assert meta.random_weights is True and meta.precision == "FP16"
    assert (meta.min_size, meta.max_size, meta.input_format) == (800, 1333, "BGR")
    assert meta.graph_score_threshold == 0.05 and meta.max_detections == 100
    assert meta.source_config == spec.config and meta.d2ov_version
    card = json.loads((tmp_path / "ir" / "d2ov.json").read_text())
    assert card["box_ap"] == spec.box_ap and set(card["ir_sha256"]) == {"model.xml", "model.bin"}

    pred = Predictor(xml)
    for h, w in [(480, 640), (700, 500)]:  # another size than the trace image
        det = pred.predict(random_image(h, w, seed=w), threshold=0.05)
        assert det.image_size == (h, w) and len(det) <= 100
        assert np.all(det.boxes[:, 2] <= w) and np.all(det.boxes[:, 3] <= h)
        assert (det.masks is not None) == ("masks" in outputs)
        if det.masks is not None:
            assert det.masks.shape == (len(det), h, w)
    # random weights are calibrated to work like a trained model's (random_init.calibrate_random_weights): on a
    # photo they were not calibrated on, the 100-detection cap is reached with spread scores, so the
    # box and mask heads do full work in benchmarks
    det = pred.predict(other_photo(), threshold=0.05)
    assert len(det) == 100, len(det)
    assert 0.05 <= det.scores.min() and det.scores.max() < 0.95 and len(np.unique(det.class_ids)) >= 3
    widths, heights = det.boxes[:, 2] - det.boxes[:, 0], det.boxes[:, 3] - det.boxes[:, 1]
    assert np.median(widths) >= 4 and np.median(heights) >= 4  # real boxes, not collapsed ones


def test_conversion_is_cached_and_atomic(tiny_spec, monkeypatch, tmp_path):
    monkeypatch.setenv("D2OV_CACHE", str(tmp_path))
    xml = convert(tiny_spec, weights="random", sample=real_photo(), progress=False)
    assert xml.is_relative_to(tmp_path / "ir")
    mtime = xml.stat().st_mtime_ns
    again = convert(tiny_spec, weights="random", sample=real_photo(), progress=False)
    assert again == xml and xml.stat().st_mtime_ns == mtime  # cache hit: not rewritten
    assert [p.name for p in xml.parent.parent.iterdir()] == [xml.parent.name]  # no temp dirs left
    assert resolve_ir(str(xml.parent)) == xml


def test_fp16_and_int8_start_from_the_cached_fp32_graph(tiny_spec, monkeypatch, tmp_path, caplog):
    """With the same model's FP32 IR in the cache, FP16 and INT8 read that graph instead of tracing
    again, and write what a fresh trace writes: FP16 the same bytes, INT8 the same answers."""
    import logging

    monkeypatch.setenv("D2OV_CACHE", str(tmp_path / "cache"))
    cal = dict(calibration=SAMPLES, calibration_size=2)
    fresh16 = convert(tiny_spec, weights="random", out=tmp_path / "fresh16", progress=False)
    fresh8 = convert(tiny_spec, weights="random", out=tmp_path / "fresh8", progress=False, **cal)
    convert(tiny_spec, weights="random", fp16=False, progress=False)  # the FP32 IR, into the cache
    with caplog.at_level(logging.INFO, logger="d2ov"):
        again16 = convert(tiny_spec, weights="random", out=tmp_path / "again16", progress=False)
        again8 = convert(tiny_spec, weights="random", out=tmp_path / "again8", progress=False, **cal)
    assert sum("starting from the cached FP32 IR" in r.getMessage() for r in caplog.records) == 2, caplog.text
    assert not any("tracing" in r.getMessage() for r in caplog.records), caplog.text
    # the same weights, byte for byte, and the same graph (node names are counters: they differ by run)
    assert again16.with_suffix(".bin").read_bytes() == fresh16.with_suffix(".bin").read_bytes()
    graphs = [runtime.core().read_model(str(x)) for x in (fresh16, again16)]
    assert [op.get_type_name() for op in graphs[0].get_ordered_ops()] == [
        op.get_type_name() for op in graphs[1].get_ordered_ops()
    ]
    assert runtime.read_metadata(again16) == runtime.read_metadata(fresh16)
    assert runtime.read_metadata(again8) == runtime.read_metadata(fresh8)
    for image in (real_photo(), other_photo()):
        a, b = (Predictor(x).predict(str(image), threshold=0.05) for x in (fresh8, again8))
        assert len(a) > 0 and len(a) == len(b)
        assert np.array_equal(a.class_ids, b.class_ids) and np.abs(a.boxes - b.boxes).max() <= 1e-3
        assert np.abs(a.scores - b.scores).max() <= 1e-5


def test_tiny_ir_handles_blank_image_and_zero_detections(tiny_ir):
    pred = Predictor(tiny_ir)
    every = pred.predict(np.zeros((100, 100, 3), np.uint8), threshold=0.05)
    cut = float(every.scores.max()) + 1e-3 if len(every) else 0.5
    det = pred.predict(np.zeros((100, 100, 3), np.uint8), threshold=min(cut, 1.0))
    assert len(det) == 0  # nothing above the best score: the empty (0, ...) case end to end
    assert det.boxes.shape == (0, 4) and det.scores.shape == (0,) and det.masks.shape == (0, 100, 100)
    assert det.to_dict()["instances"] == []


@pytest.mark.parametrize("h,w", [(577, 416), (576, 416), (100, 200), (33, 64), (320, 481)])
def test_traced_padding_converts_exactly(h, w):
    """Detectron2 pads the input to multiples of 32 inside the graph. Converted as Detectron2 writes
    it, OpenVINO padded 576x416 to 608x448 (a shifted feature grid, other detections on a trained
    model); under patches.exportable_padding the IR pads exactly as eager Detectron2 does."""
    import openvino as ov
    import torch
    from detectron2.structures import ImageList

    from d2ov_core.export import patches  # applies the detectron2 compat shims first

    class Pad(torch.nn.Module):
        def forward(self, x):
            return ImageList.from_tensors([x], 32).tensor

    with patches.exportable_padding():
        model = ov.convert_model(Pad(), example_input=(torch.zeros(3, 100, 200),))
    compiled = ov.Core().compile_model(model, "CPU")
    x = np.random.default_rng(0).random((3, h, w), dtype=np.float32)
    got = compiled(x)[0]
    want = Pad()(torch.as_tensor(x)).numpy()
    assert got.shape == want.shape == (1, 3, -(-h // 32) * 32, -(-w // 32) * 32)
    assert np.array_equal(got, want)


def _rpn_inputs(tied: bool, seed: int = 0):
    """Two FPN levels of RPN outputs for one 96x128 image: boxes (1, N, 4) and logits (1, N); with
    ``tied``, most logits share one value (an RPN whose hidden layer is zero there outputs its bias)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    boxes, logits = [], []
    for n, size in ((600, 12.0), (150, 40.0)):
        xy = torch.rand(1, n, 2, generator=g) * torch.tensor([128.0, 96.0])
        wh = size * (0.5 + torch.rand(1, n, 2, generator=g))
        boxes.append(torch.cat([xy, xy + wh], 2))
        lg = torch.randn(1, n, generator=g)
        if tied:
            lg[torch.rand(1, n, generator=g) < 0.7] = -0.25
        logits.append(lg)
    return boxes, logits


def test_stable_proposal_ranking_equals_detectron2_without_ties():
    """Where no two objectness scores are equal, d2ov's proposal ranking is Detectron2's exactly."""
    import torch
    from detectron2.modeling.proposal_generator.proposal_utils import find_top_rpn_proposals

    from d2ov_core.export import patches

    boxes, logits = _rpn_inputs(tied=False)
    args = ([(96, 128)], 0.7, 200, 120, 0.0)
    want = find_top_rpn_proposals(boxes, logits, *args[:1], *args[1:], training=False)[0]
    got = patches._stable_top_proposals(boxes, logits, *args)[0]
    assert len(got) == len(want) == 120
    assert torch.equal(got.proposal_boxes.tensor, want.proposal_boxes.tensor)
    assert torch.equal(got.objectness_logits, want.objectness_logits)


def test_tied_proposal_scores_rank_alike_in_openvino():
    """With hundreds of exactly equal objectness scores, the converted proposal step keeps the same
    proposals in the same order as eager PyTorch. (Detectron2's unstable sort let eager and OpenVINO
    each pick their own tied boxes: up to 9 px different final detections on the demo Mask R-CNN.)"""
    import openvino as ov
    import torch

    from d2ov_core.export import patches

    class Top(torch.nn.Module):
        def forward(self, b0, b1, l0, l1):
            r = patches._stable_top_proposals([b0, b1], [l0, l1], [(96, 128)], 0.7, 200, 120, 0.0)[0]
            return r.proposal_boxes.tensor, r.objectness_logits

    boxes, logits = _rpn_inputs(tied=True)
    assert int((torch.cat(logits, 1) == -0.25).sum()) > 400
    inputs = (*boxes, *logits)
    compiled = ov.Core().compile_model(
        ov.convert_model(Top(), example_input=inputs), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    for seed in (0, 1, 2):  # traced once, run on other tied inputs
        boxes, logits = _rpn_inputs(tied=True, seed=seed)
        want = [t.numpy() for t in Top()(*boxes, *logits)]
        out = compiled([t.numpy() for t in (*boxes, *logits)])
        got = [out[o] for o in compiled.outputs]
        assert got[0].shape == want[0].shape
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_stable_topk_takes_the_head_of_a_stable_sort_in_index_order():
    """d2ov's top-k picks exactly the first k of a stable full sort, ties included, in index order."""
    import torch

    from d2ov_core.export import patches

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5000, generator=g)
    x[torch.rand(2, 5000, generator=g) < 0.6] = -0.25  # the k-th value is a tie
    for k in (1, 999, 4000, 5000):
        values, idx = torch.sort(x, dim=1, descending=True, stable=True)
        want_idx = torch.sort(idx[:, :k], dim=1).values
        got_v, got_i = patches._stable_topk(x, k)
        assert torch.equal(got_i, want_idx) and torch.equal(got_v, torch.gather(x, 1, want_idx))


def test_exportable_pooling_converts_to_the_same_values():
    """The multi-level ROI pooler traced under patches.exportable_pooling (per-level results gathered
    into box order, no zero buffer + index_put) gives Detectron2's eager values in OpenVINO, boxes of
    every level included, and eager Detectron2 is untouched."""
    import openvino as ov
    import torch
    from detectron2.modeling.poolers import ROIPooler
    from detectron2.structures import Boxes

    from d2ov_core.export import patches

    pooler = ROIPooler(output_size=7, scales=(1 / 4, 1 / 8, 1 / 16, 1 / 32), sampling_ratio=0, pooler_type="ROIAlignV2")
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(1, 8, 256 // s, 320 // s, generator=g) for s in (4, 8, 16, 32)]
    xy = torch.rand(60, 2, generator=g) * 200
    wh = torch.cat(
        [torch.full((15, 2), 12.0), torch.full((15, 2), 90.0), torch.full((15, 2), 200.0), torch.full((15, 2), 400.0)]
    ) * (0.8 + 0.4 * torch.rand(60, 2, generator=g))
    boxes = torch.cat([xy, xy + wh], 1)[torch.randperm(60, generator=g)]

    class Pool(torch.nn.Module):
        def forward(self, f0, f1, f2, f3, b):
            return pooler([f0, f1, f2, f3], [Boxes(b)])

    want = Pool()(*feats, boxes)
    with patches.exportable_pooling():
        model = ov.convert_model(Pool(), example_input=(*feats, boxes))
        assert torch.equal(Pool()(*feats, boxes), want)  # eager calls keep Detectron2's code
    kinds = {op.get_type_name() for op in model.get_ops()}
    assert "ScatterNDUpdate" not in kinds, kinds  # no (boxes, C, 7, 7) zero buffer written into
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled([t.numpy() for t in (*feats, boxes)])[0]
    assert got.shape == tuple(want.shape)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)


@pytest.fixture(scope="module")
def shapes_val(tmp_path_factory):
    """20 val images and 16 train images of the demo models' data set (never the test split)."""
    from tools import make_shapes

    out = tmp_path_factory.mktemp("shapes")
    ann = make_shapes.make_split(str(out), "val", 20, make_shapes.DEFAULT_SPLITS["val"][1])
    make_shapes.make_split(str(out), "train", 16, make_shapes.DEFAULT_SPLITS["train"][1])
    return ann, out


@pytest.mark.slow
def test_int8_with_accuracy_control_keeps_ap_or_writes_nothing(shapes_val, tmp_path):
    """`d2ov convert --precision INT8 --annotations --images --max-ap-drop`: an IR within the drop, with
    the measured AP and the recipe in its metadata; a recipe that cannot hold it: one line, exit 2,
    nothing written."""
    from d2ov_core.runtime import ir

    from ..conftest import run_cli

    ann, images = shapes_val
    common = [
        "convert",
        "demo/faster_rcnn_shapes",
        "--precision",
        "INT8",
        "--calibration",
        str(images / "train"),
        "--annotations",
        ann,
        "--images",
        str(images),
    ]
    ok = run_cli(*common, "--max-ap-drop", "1.0", "--out", str(tmp_path / "ok"), timeout=1500)
    assert ok.returncode == 0, ok.stderr[-3000:]
    meta = ir.read_metadata(tmp_path / "ok" / "model.xml")
    acc = meta.accuracy
    assert set(acc) >= {"FP32", "INT8"} and acc["INT8"].images == 20 and acc["INT8"].set == Path(ann).name
    assert acc["FP32"].box_AP - acc["INT8"].box_AP <= 1.0 and meta.quantization.startswith("d2ov-3")
    assert "INT8  box AP" in ok.stdout
    # the proof travels with it: d2ov verify against Detectron2 on the set's first 12 images, in the IR
    v = meta.verification
    assert (
        v["images"] == 12 and v["precision"] == "INT8" and v["reference"] > 0 and v["against"].startswith("Detectron2")
    )
    assert f"checked against Detectron2 on 12 images: {v['matched']}/{v['reference']} detections matched" in ok.stdout
    bad = run_cli(
        *common, "--recipe", "nncf-default", "--max-ap-drop", "0.5", "--out", str(tmp_path / "bad"), timeout=1500
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "no INT8 recipe keeps demo/faster_rcnn_shapes's accuracy" in bad.stderr and "nncf-default" in bad.stderr
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
