import numpy as np
import pytest

from d2ov_core import compat
from d2ov_core.preprocess import preprocess, resized_shape

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


@pytest.mark.parametrize("h,w", [(480, 640), (333, 501), (97, 1500)])
@pytest.mark.parametrize("fmt", ["BGR", "RGB"])
def test_preprocess_pixels_equal_detectron2(h, w, fmt):
    rng = np.random.default_rng(h)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    chw, meta = preprocess(rgb, {"min_size": 800, "max_size": 1333, "input_format": fmt})
    img = rgb[:, :, ::-1] if fmt == "BGR" else rgb  # DefaultPredictor's channel handling
    ref = T.ResizeShortestEdge([800, 800], 1333).get_transform(img).apply_image(img)
    ref = ref.astype("float32").transpose(2, 0, 1)
    assert chw.dtype == np.float32 and chw.shape == ref.shape
    np.testing.assert_array_equal(chw, ref)
    assert meta == {"original_size": (h, w), "input_size": ref.shape[1:]}
