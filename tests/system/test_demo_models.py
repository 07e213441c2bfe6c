"""The bundled demo models: committed weights, bundled IRs, accuracy on a generated test split with
both backends, and PyTorch-vs-OpenVINO parity (the ground truth for every accuracy claim)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from d2ov_core.measure.verify import Tolerance
from d2ov_core.runtime import ir as runtime
from d2ov_core.store import catalog
from d2ov_core.store.lookup import bundled_ir
from d2ov_core.store.weights import sha256_file

from ..conftest import ROOT, SAMPLES, run_cli

ARTIFACTS = ROOT / "tests" / "_artifacts"

DEMOS = ["demo/faster_rcnn_shapes", "demo/mask_rcnn_shapes"]
MASK_DEMOS = {"demo/mask_rcnn_shapes"}
N_TEST = 60  # images of the generated test split used here (the full 200 are in the README numbers)
#: The demo-model issue's bar (COCO AP@[.5:.95]): box AP >= 60 for both, mask AP >= 55, OpenVINO and
#: PyTorch alike, here on the first 60 images of the generated test split.
MIN_AP = {
    ("demo/faster_rcnn_shapes", "bbox"): 60.0,
    ("demo/mask_rcnn_shapes", "bbox"): 60.0,
    ("demo/mask_rcnn_shapes", "segm"): 55.0,
}


@pytest.fixture(scope="module")
def test_split(tmp_path_factory):
    from tools import make_shapes

    out = tmp_path_factory.mktemp("shapes")
    seed = make_shapes.DEFAULT_SPLITS["test"][1]
    ann = make_shapes.make_split(str(out), "test", N_TEST, seed)
    return ann, out


@pytest.mark.parametrize("name", DEMOS)
def test_committed_weights_match_their_sha256_and_size(name):
    spec = catalog.get(name)
    card = json.loads((catalog.DATA_DIR / "demo" / f"{name.split('/')[1]}.json").read_text())
    assert sha256_file(spec.weights) == card["weights_sha256"] == spec.weights_sha256
    assert sha256_file(spec.config) == card["config_sha256"] == spec.config_sha256
    assert (catalog.DEMO_DIR / name.split("/")[1] / "model_final.pth").stat().st_size <= 15 * 1024 * 1024
    assert spec.classes == ("circle", "square", "triangle")


@pytest.mark.parametrize("name", DEMOS)
def test_bundled_ir_was_made_from_the_committed_weights(name):
    xml = bundled_ir(name)
    meta = runtime.read_metadata(xml)
    assert meta.weights_sha256 == catalog.get(name).weights_sha256
    assert meta.random_weights is False and meta.labels == ["circle", "square", "triangle"]
    assert meta.task == catalog.get(name).task


@pytest.fixture(scope="module")
def cli_eval(test_split, tmp_path_factory):
    """``d2ov eval`` of a demo model with a backend on the test split, each run once for the module
    (the AP, agreement and INT8 tests read the same numbers): ``cli_eval(name, backend)`` -> its JSON."""
    ann, images = test_split
    docs: dict[tuple[str, str], dict] = {}

    def run(name: str, backend: str) -> dict:
        if (name, backend) not in docs:
            model = str(bundled_ir(name)) if backend == "openvino" else name
            out = tmp_path_factory.mktemp("eval") / "eval.json"
            res = run_cli(
                "-q",
                "eval",
                model,
                "--annotations",
                ann,
                "--images",
                str(images),
                "--backend",
                backend,
                "--json",
                str(out),
            )
            assert res.returncode == 0, res.stderr[-2000:]
            docs[name, backend] = json.loads(out.read_text())
        return docs[name, backend]

    return run


@pytest.mark.parametrize("name", DEMOS)
@pytest.mark.parametrize("backend", ["openvino", "pytorch"])
def test_ap_on_generated_test_split(name, backend, cli_eval):
    doc = cli_eval(name, backend)
    assert doc["images"] == N_TEST
    ARTIFACTS.mkdir(exist_ok=True)  # the numbers the README quotes
    (ARTIFACTS / f"ap_{name.split('/')[1]}_{backend}.json").write_text(json.dumps(doc, indent=1))
    for iou_type in ("bbox", "segm"):
        if (name, iou_type) in MIN_AP:
            assert doc[iou_type]["AP"] >= MIN_AP[name, iou_type], (iou_type, doc[iou_type])


@pytest.mark.parametrize("name", DEMOS)
def test_openvino_and_pytorch_ap_agree(name, cli_eval):
    ov, pt = cli_eval(name, "openvino"), cli_eval(name, "pytorch")
    assert ov["images"] == pt["images"] == N_TEST and ("segm" in pt) == ("segm" in ov) == (name in MASK_DEMOS)
    for iou_type in ("bbox", "segm"):
        if iou_type in pt:
            assert abs(ov[iou_type]["AP"] - pt[iou_type]["AP"]) <= 0.3, (iou_type, ov[iou_type], pt[iou_type])


@pytest.mark.parametrize("name", DEMOS)
@pytest.mark.parametrize("precision,score_tol", [("FP32", "0.001"), ("FP16", "0.003")])
def test_verify_passes_on_test_images(name, precision, score_tol, test_split, tmp_path):
    """The issue's tolerances (every detection >= 0.3 matched, box <= 0.5 px, score <= 1e-3, mask IoU
    >= 0.98) on the FP32 IR; the FP16-weight IR (the default) rounds weights, which moves scores by up
    to ~2e-3 (measured 1.9e-3; boxes <= 0.06 px), so it is held to 3e-3."""
    ann, images = test_split
    files = sorted((images / "test").glob("*.jpg"))[:12]
    flags = ["--precision", precision]
    res = run_cli(
        "-q", "verify", name, *map(str, files), *flags, "--score-tol", score_tol, "--json", str(tmp_path / "v.json")
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    doc = json.loads((tmp_path / "v.json").read_text())
    assert all(r["ok"] for r in doc["images"]) and sum(r["matched"] for r in doc["images"]) > 0
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"verify_{name.split('/')[1]}_{precision}.json").write_text(json.dumps(doc, indent=1))


def test_verify_passes_on_the_bundled_samples_near_ties_included(tmp_path):
    """``make demo``'s images, the FP32 IR at the issue's tolerances. On ``shapes_1.jpg`` Detectron2
    scores two overlapping squares 0.5172539 and 0.5172534 and keeps the first; on an Intel Xeon with
    AMX the IR keeps the second (before near ties were told apart, verify exited 1 there: 25/26
    matched, one unmatched on each side). Another CPU may round the other way: either way every
    image passes, a tie only where Detectron2's own boxes before its NMS show one."""
    files = sorted(SAMPLES.glob("shapes_*.jpg"))
    res = run_cli(
        "-q",
        "verify",
        "demo/mask_rcnn_shapes",
        *map(str, files),
        "--precision",
        "FP32",
        "--json",
        str(tmp_path / "v.json"),
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    doc = json.loads((tmp_path / "v.json").read_text())
    assert len(doc["images"]) == 4 and all(r["ok"] for r in doc["images"])
    for r in doc["images"]:
        assert r["matched"] + r["ties"] == r["reference"] and r["unmatched_reference"] == r["unmatched_candidate"] == 0
    # Detectron2's boxes before NMS hold two rivals within 1e-3 of a kept box in these images, all on shapes_1
    assert sum(r["ties"] for r in doc["images"]) <= 2 and all(r["ties"] == 0 for r in doc["images"][1:])
    assert ("near tie" in res.stdout) == any(r["ties"] for r in doc["images"])


@pytest.mark.parametrize("name", DEMOS)
def test_int8_ir_keeps_ap_within_1_point_of_fp16(name, test_split, cli_eval):
    """The shipped INT8 IR (NNCF recipe d2ov-3, calibrated on train images, box arithmetic kept in float)
    against the FP16 IR, same images."""
    from d2ov_core.measure.evaluate import evaluate
    from d2ov_core.runtime.predictor import Predictor

    ann, images = test_split
    int8 = bundled_ir(name, "INT8")
    meta = runtime.read_metadata(int8)
    assert meta.precision == "INT8" and "train" in meta.calibration and meta.quantization.startswith("d2ov-3")
    q = evaluate(Predictor(int8), ann, images, progress=False)
    f = cli_eval(name, "openvino")  # the FP16 IR's AP on the same images
    assert q["images"] == f["images"] == N_TEST
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"ap_{name.split('/')[1]}_int8_vs_fp16.json").write_text(json.dumps({"INT8": q, "FP16": f}, indent=1))
    for iou_type in ("bbox", "segm"):
        if iou_type in f:
            assert abs(q[iou_type]["AP"] - f[iou_type]["AP"]) <= 1.0, (iou_type, q[iou_type], f[iou_type])


def _static_vs_dynamic(files, crop_to_32: bool):
    from d2ov_core.measure.bench import default_static_shape
    from d2ov_core.measure.verify import Tolerance, match
    from d2ov_core.runtime.images import load_image
    from d2ov_core.runtime.predictor import Predictor

    xml = bundled_ir("demo/mask_rcnn_shapes")
    dyn = Predictor(xml)
    comparisons = []
    for f in files:
        rgb = load_image(f)
        if crop_to_32:  # shorter side 416 (= the model's resize), longer a multiple of 32: no canvas padding
            h, w = rgb.shape[:2]
            rgb = (
                np.ascontiguousarray(rgb[:416, : min(w, 640) // 32 * 32])
                if h <= w
                else np.ascontiguousarray(rgb[: min(h, 640) // 32 * 32, :416])
            )
        shape = default_static_shape(dyn.metadata, rgb)
        static = Predictor(xml, static_shape=shape)
        comparisons.append(
            match(dyn.predict(rgb, threshold=0.05), static.predict(rgb, threshold=0.05), Tolerance(min_score=0.3))
        )
    return comparisons


def test_static_shape_equals_dynamic_where_the_canvas_adds_no_padding(test_split):
    """A static input the size of the (multiple-of-32) resized image gives the dynamic IR's detections."""
    _, images = test_split
    files = [f for f in sorted((images / "test").glob("*.jpg")) if min(Image.open(f).size) >= 416][:6]
    comparisons = _static_vs_dynamic(files, crop_to_32=True)
    assert comparisons and sum(c.matched for c in comparisons) > 0
    for c in comparisons:
        # the same arithmetic up to kernel choice for the fixed shape (measured 2.3e-5 px, 6e-8 in score)
        assert c.ok(Tolerance(min_score=0.3)) and c.max_box_dev <= 1e-3 and c.max_score_dev <= 1e-5, c.to_dict()


@pytest.mark.xfail(
    strict=True,
    reason=(
        "known limit of static shapes: the graph sees the padded canvas as the image, so proposals are clipped "
        "to the canvas instead of the image, and detections near the padded border move (measured 1.6 px, "
        "scores 0.013 on the first test image); dynamic input (the default) has no such difference"
    ),
)
def test_static_shape_equals_dynamic_on_padded_images(test_split):
    _, images = test_split
    comparisons = _static_vs_dynamic(sorted((images / "test").glob("*.jpg"))[:6], crop_to_32=False)
    assert all(c.ok(Tolerance(min_score=0.3)) for c in comparisons), [c.to_dict() for c in comparisons]


@pytest.mark.parametrize("name", DEMOS)
def test_bundled_irs_carry_their_measured_accuracy(name):
    """Every precision the app offers for the demo models has AP measured on the 200-image test split in
    the IR's metadata (what the app shows and picks its default from), close to the catalog's PyTorch AP."""
    spec = catalog.get(name)
    rows = {
        **runtime.read_metadata(bundled_ir(name, "INT8")).accuracy,
        **runtime.read_metadata(bundled_ir(name, "FP16")).accuracy,
    }
    want = {"FP32", "FP16", "INT8"} | ({"BF16"} if runtime.bf16_available() else set())
    assert set(rows) == want
    for p, row in rows.items():
        assert row.images == 200 and row.set == "test.json" and row.ms > 0
        assert abs(row.box_AP - spec.box_ap) <= {"INT8": 1.0, "BF16": 1.5}.get(p, 0.3), (p, row)
        if spec.mask_ap is not None:
            assert abs(row.mask_AP - spec.mask_ap) <= {"INT8": 1.0, "BF16": 1.5}.get(p, 0.3), (p, row)


@pytest.mark.parametrize("name", DEMOS)
def test_int8_ir_runs_its_stem_convolution_in_int8(name):
    """The image's padding is traced before the division by std (patches.exportable_padding), so no
    dynamic Pad sits between the quantized input and the first convolution: OpenVINO runs it in INT8
    (it ran in f32 before, 9% of the demo Mask R-CNN's INT8 time)."""
    from d2ov_core.runtime.images import load_image
    from d2ov_core.runtime.preprocess import preprocess

    xml = bundled_ir(name, "INT8")
    model = runtime.core().read_model(str(xml))
    stem = next(op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution").get_friendly_name()
    compiled = runtime.load_ir(xml, profile=True)
    chw, _ = preprocess(load_image(catalog.sample_images()[0]), compiled.metadata)
    kinds = {r["exec_type"] for r in compiled.profile(chw) if r["name"] == stem}
    # brgconv_avx512_I8 on AVX-512/VNNI, brgconv_avx512_amx_i8 on AMX, jit_avx2_I8 on AVX2 (runtime.exec_precision)
    assert kinds and all(runtime.exec_precision(k) == "i8" for k in kinds), (stem, kinds)
