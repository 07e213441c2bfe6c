"""The OpenVINO predictor on a real converted IR (tiny random-weights Mask R-CNN)."""

import concurrent.futures as cf
import subprocess
import sys

import numpy as np
import pytest

from d2ov_core.errors import DeviceError, ImageError, InputError, IRError
from d2ov_core.runtime import ir as runtime
from d2ov_core.runtime.predictor import Predictor

from ..conftest import random_image, real_photo


@pytest.fixture(scope="module")
def predictor(tiny_ir):
    return Predictor(tiny_ir)


def test_metadata_travels_in_the_ir(tiny_ir):
    meta = runtime.read_metadata(tiny_ir)
    assert meta.labels == ["circle", "square", "triangle"]
    assert meta.task == "instance_segmentation"
    assert meta.outputs == ["boxes", "classes", "masks", "scores", "image_size"]
    assert (meta.min_size, meta.max_size, meta.input_format) == (320, 512, "BGR")
    assert (meta.graph_score_threshold, meta.iou_threshold, meta.max_detections) == (0.05, 0.5, 100)
    assert meta.random_weights is True and meta.weights_source == "random" and meta.weights_sha256 == ""
    assert meta.precision == "FP32" and meta.detectron2_version == "0.6"


@pytest.mark.parametrize("h,w", [(480, 640), (640, 480), (200, 900), (64, 64)])
def test_detections_contract_on_any_size(predictor, h, w):
    det = predictor.predict(random_image(h, w, seed=h), threshold=0.05)
    assert det.image_size == (h, w)
    assert det.boxes.dtype == np.float32 and det.boxes.shape == (len(det), 4)
    assert len(det) <= 100 and np.all(det.scores >= 0.05)
    assert np.all(det.boxes[:, 0] >= 0) and np.all(det.boxes[:, 2] <= w)
    assert np.all(det.boxes[:, 1] >= 0) and np.all(det.boxes[:, 3] <= h)
    assert np.all(det.boxes[:, 2] > det.boxes[:, 0])
    assert det.masks.shape == (len(det), h, w) and det.masks.dtype == bool
    assert set(det.labels) <= {"circle", "square", "triangle"}
    assert set(det.timings) == {"decode", "preprocess", "inference", "postprocess", "total"}


def test_threshold_filters_without_changing_kept_results(predictor):
    img = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(real_photo()).convert("RGB"))
    low = predictor.predict(img, threshold=0.05)
    high = predictor.predict(img, threshold=0.5)
    assert np.all(high.scores >= 0.5)
    np.testing.assert_allclose(high.boxes, low.filter(0.5).boxes, atol=1e-4)


@pytest.mark.parametrize("model", ["demo/mask_rcnn_shapes", "demo/panoptic_fpn_shapes"])
def test_run_answers_at_any_threshold_as_predict_does(model):
    """Predictor.run: one inference, then the detections at each threshold asked (in any order, again)
    equal predict()'s at that threshold, masks and the segment map too: the kept outputs are not
    changed by postprocessing them."""
    from d2ov_core.store.lookup import bundled_ir

    from ..conftest import SAMPLES

    pred = Predictor(bundled_ir(model, "FP16"))
    sample = sorted(SAMPLES.glob("panoptic_*.jpg" if "panoptic" in model else "shapes_*.jpg"))[0]
    rgb, detections = pred.run(sample)
    assert rgb.shape[:2] == pred.predict(sample).image_size
    for threshold in (0.5, 0.05, 0.9, 0.5):
        got, ref = detections(threshold), pred.predict(sample, threshold=threshold)
        assert len(got) == len(ref) and (threshold == 0.9 or len(got) > 0)
        np.testing.assert_array_equal(got.boxes, ref.boxes)
        np.testing.assert_array_equal(got.scores, ref.scores)
        assert list(got.labels) == list(ref.labels)
        np.testing.assert_array_equal(got.masks, ref.masks)
        if "panoptic" in model:
            np.testing.assert_array_equal(got.segment_map, ref.segment_map)
            assert got.segments == ref.segments
    assert detections(None).scores.min() >= pred.confidence_threshold
    assert detections(0.5).timings["inference"] == detections(0.05).timings["inference"] > 0
    # a kept answer does not keep the predictor (its compiled model) alive: the app keeps 32 of them
    import gc
    import weakref

    alive, expected = weakref.ref(pred), pred.predict(sample, threshold=0.3)
    del pred
    gc.collect()
    assert alive() is None
    np.testing.assert_array_equal(detections(0.3).boxes, expected.boxes)


@pytest.mark.parametrize("bad", [float("nan"), -1, 2, "x"])
def test_bad_threshold_is_an_input_error(predictor, bad):
    with pytest.raises(InputError, match="confidence threshold"):
        predictor.predict(random_image(32, 32), threshold=bad)


def test_bad_images_are_image_errors(predictor, tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "html.jpg").write_text("<html>not an image</html>")
    for p, msg in [
        (tmp_path / "empty.jpg", "empty file"),
        (tmp_path / "html.jpg", "not an image"),
        (tmp_path / "missing.jpg", "image not found"),
    ]:
        with pytest.raises(ImageError, match=msg):
            predictor.predict(p)
    with pytest.raises(ImageError, match="expected a uint8 array"):
        predictor.predict(np.zeros((10, 10, 3), np.float32))


def test_same_compiled_model_is_safe_from_many_threads(predictor):
    images = [random_image(240 + 16 * i, 320, seed=i) for i in range(6)]
    sequential = [predictor.predict(im, threshold=0.05) for im in images]
    with cf.ThreadPoolExecutor(6) as pool:
        parallel = list(pool.map(lambda im: predictor.predict(im, threshold=0.05), images * 3))
    for i, det in enumerate(parallel):
        ref = sequential[i % len(images)]
        assert len(det) == len(ref)
        np.testing.assert_allclose(det.boxes, ref.boxes, atol=1e-4)
        np.testing.assert_allclose(det.scores, ref.scores, atol=1e-6)
        np.testing.assert_array_equal(det.masks, ref.masks)


def test_unknown_device_and_non_ir_files(tiny_ir, tmp_path):
    with pytest.raises(DeviceError, match="unknown device 'NPU7'"):
        Predictor(tiny_ir, device="NPU7")
    with pytest.raises(IRError, match="IR file not found"):
        Predictor(tmp_path / "none.xml")
    bad = tmp_path / "bad.xml"
    bad.write_text("<net>")
    (tmp_path / "bad.bin").write_bytes(b"")
    with pytest.raises(IRError, match="cannot read IR"):
        Predictor(bad)


def test_loading_and_predicting_never_imports_torch(tiny_ir):
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'detectron2', 'torchvision'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
from d2ov_core.runtime.predictor import Predictor
import numpy as np
det = Predictor({str(tiny_ir)!r}).predict(np.full((300, 400, 3), 127, np.uint8), threshold=0.05)
assert not any(m.split('.')[0] in ('torch', 'detectron2') for m in sys.modules)
print('ok', len(det))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("ok ")


def test_static_shape_keeps_the_detections_contract(tiny_ir):
    # parity with the dynamic IR is tested on a trained model (test_demo_models.py): random weights
    # saturate scores to 1.0, so which of the tied detections survive NMS is arbitrary
    static = Predictor(tiny_ir, static_shape=(320, 448))
    assert static.describe()["static_shape"] == [320, 448]
    for h, w in [(320, 448), (600, 512), (100, 900)]:
        det = static.predict(random_image(h, w, seed=w), threshold=0.05)
        assert det.image_size == (h, w) and det.masks.shape == (len(det), h, w) and len(det) > 0
        assert np.all(det.boxes >= 0) and np.all(det.boxes[:, 2] <= w) and np.all(det.boxes[:, 3] <= h)


def test_bad_static_shape_is_an_ir_error(tiny_ir):
    with pytest.raises(IRError, match="multiples of 32"):
        Predictor(tiny_ir, static_shape=(300, 400))


def test_predict_many_yields_in_order_the_sequential_results(tiny_ir):
    pred = Predictor(tiny_ir, hint="THROUGHPUT")
    images = [random_image(200 + 40 * i, 300, seed=i) for i in range(7)]
    seq = [pred.predict(im, threshold=0.05) for im in images]
    many = list(pred.predict_many(images, threshold=0.05, jobs=3))
    assert len(many) == len(images)
    for (rgb, det), im, ref in zip(many, images, seq):
        assert rgb is not None and det.image_size == im.shape[:2]
        assert len(det) == len(ref)
        np.testing.assert_allclose(det.boxes, ref.boxes, atol=1e-4)
        assert set(det.timings) >= {"preprocess", "inference", "postprocess", "total"}
    assert list(pred.predict_many([], threshold=0.05)) == []


def test_profile_reports_op_types_that_add_up(tiny_ir):
    pred = Predictor(tiny_ir, profile=True)
    prof = pred.profile(real_photo())
    assert prof["ops_ms"] > 0 and prof["input_shape"][0] == 3
    assert "Convolution" in prof["by_type"]
    assert abs(sum(v["ms"] for v in prof["by_type"].values()) - prof["ops_ms"]) < 1e-6
    assert prof["slowest"][0]["ms"] >= prof["slowest"][-1]["ms"]


def test_cpu_computes_in_f32_unless_bf16_is_asked(tiny_ir):
    """OpenVINO would silently run FP32 graphs in bf16 on CPUs with native bfloat16 (scores then move
    by ~1e-2); d2ov pins f32, the precision Detectron2 computes in, and offers bf16 explicitly."""
    pred = Predictor(tiny_ir)
    assert pred.compute == "f32" and pred.describe()["compute"] == "f32"
    assert str(pred._ir._compiled.get_property("INFERENCE_PRECISION_HINT")) in ("<Type: 'float32'>", "f32")
    with pytest.raises(InputError, match="compute precision"):
        Predictor(tiny_ir, compute="fp8")
    if runtime.bf16_available():
        fast = Predictor(tiny_ir, compute="bf16")
        assert "bfloat16" in str(fast._ir._compiled.get_property("INFERENCE_PRECISION_HINT"))
        assert len(fast.predict(real_photo(), threshold=0.05)) > 0
    else:
        with pytest.raises(DeviceError, match="native bfloat16"):
            Predictor(tiny_ir, compute="bf16")
