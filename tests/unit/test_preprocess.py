import numpy as np
import pytest

from d2ov_core.export import compat
from d2ov_core.runtime.preprocess import Geometry, preprocess, resized_shape
from d2ov_core.runtime.settings import IRMetadata

compat.apply()
from detectron2.data import transforms as T  # noqa: E402

SIZES = [(480, 640), (640, 480), (800, 1333), (1, 1), (4, 4000), (4000, 4), (333, 501), (1200, 1200), (27, 913)]


@pytest.mark.parametrize("h,w", SIZES)
@pytest.mark.parametrize("min_size,max_size", [(800, 1333), (416, 640), (0, 0)])
def test_resized_shape_matches_detectron2(h, w, min_size, max_size):
    if min_size == 0:
        assert resized_shape(h, w, 0, 0) == (h, w)
        return
    aug = T.ResizeShortestEdge([min_size, min_size], max_size)
    ref = aug.get_output_shape(h, w, min_size, max_size)
    assert resized_shape(h, w, min_size, max_size) == tuple(ref)


@pytest.mark.parametrize("h,w", [(480, 640), (333, 501), (97, 1500), (3000, 4000)])
@pytest.mark.parametrize("fmt", ["BGR", "RGB"])
def test_preprocess_pixels_equal_detectron2(h, w, fmt):
    rng = np.random.default_rng(h)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    chw, meta = preprocess(rgb, IRMetadata(min_size=800, max_size=1333, input_format=fmt))
    img = rgb[:, :, ::-1] if fmt == "BGR" else rgb  # DefaultPredictor's channel handling
    ref = T.ResizeShortestEdge([800, 800], 1333).get_transform(img).apply_image(img)
    ref = ref.astype("float32").transpose(2, 0, 1)
    assert chw.dtype == np.float32 and chw.shape == ref.shape
    np.testing.assert_array_equal(chw, ref)
    assert meta == Geometry((h, w), ref.shape[1:], ref.shape[1:])


@pytest.mark.parametrize("h,w", [(480, 640), (640, 480), (97, 1500), (1, 1), (4000, 4)])
def test_letterbox_fits_the_static_canvas_and_pads_with_the_mean(h, w):
    from d2ov_core.runtime.preprocess import letterbox_shape

    meta = IRMetadata(min_size=416, max_size=640, input_format="BGR", pixel_mean=[10.0, 20.0, 30.0])
    static = (448, 640)
    rgb = np.random.default_rng(w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    chw, m = preprocess(rgb, meta, static_size=static)
    nh, nw = m.input_size
    assert chw.shape == (3, *static) and chw.dtype == np.float32
    assert (nh, nw) == letterbox_shape(h, w, 416, 640, static) and nh <= 448 and nw <= 640
    # aspect kept within rounding; never scaled up beyond Detectron2's own rule
    rh, rw = resized_shape(h, w, 416, 640)
    assert nh <= rh and nw <= rw and abs(nh / max(nw, 1) - rh / rw) <= max(1 / nw, 1 / nh) * rh / rw * 2 + 1e-6
    for c, mean in enumerate(meta.pixel_mean):
        assert np.all(chw[c, nh:, :] == mean) and np.all(chw[c, :, nw:] == mean)
    if (nh, nw) == (rh, rw):  # fits: the content equals the dynamic preprocessing
        dyn, _ = preprocess(rgb, meta)
        np.testing.assert_array_equal(chw[:, :nh, :nw], dyn)
