import importlib
import sys

import numpy as np
import pytest

from d2ov_core.export import compat


def test_apply_is_idempotent_and_detectron2_imports():
    compat.apply()
    compat.apply()
    from detectron2.data import transforms as T  # needs the PIL.Image.LINEAR alias
    from detectron2.export.flatten import flatten_to_tuple  # needs the caffe2-free export package
    from detectron2.modeling import build_model  # noqa: F401  needs detectron2._C importable

    # ResizeShortestEdge resizes through PIL with Image.LINEAR (gone from Pillow 10; the shim aliases it)
    image = np.zeros((600, 900, 3), np.uint8)
    image[100:200, 300:450] = 255
    resized = T.ResizeShortestEdge([800, 800], 1333).get_transform(image).apply_image(image)
    assert resized.shape == (800, 1200, 3) and resized[200, 500].tolist() == [255, 255, 255]
    flat, schema = flatten_to_tuple({"a": (1, 2), "b": [3]})  # the export package's flattening works
    assert flat == (1, 2, 3) and schema(flat) == {"a": (1, 2), "b": [3]}


def test_model_zoo_configs_are_installed():
    compat.apply()
    from detectron2 import model_zoo

    for name in (
        "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml",
        "COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x.yaml",
    ):
        path = model_zoo.get_config_file(name)
        assert path.endswith(name)


def test_missing_c_extension_raises_a_clear_error():
    compat.apply()
    import detectron2

    c_ext = sys.modules["detectron2._C"]
    if not isinstance(c_ext, compat._MissingCExtension):
        pytest.skip("a detectron2 with its C++ extension is installed")
    with pytest.raises(RuntimeError, match="without its C\\+\\+ extension"):
        c_ext.deform_conv_forward  # noqa: B018
    assert importlib.util.find_spec("detectron2") is not None and detectron2.__version__
