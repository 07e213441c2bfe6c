import importlib
import sys

import pytest

from d2ov_core.export import compat


def test_apply_is_idempotent_and_detectron2_imports():
    compat.apply()
    compat.apply()
    from detectron2.data import transforms as T  # needs the PIL.Image.LINEAR alias
    from detectron2.export.flatten import TracingAdapter  # needs the caffe2-free export package
    from detectron2.modeling import build_model  # noqa: F401  needs detectron2._C importable

    assert TracingAdapter.__name__ == "TracingAdapter"
    assert T.ResizeShortestEdge([800, 800], 1333).max_size == 1333


def test_model_zoo_configs_are_installed():
    compat.apply()
    from detectron2 import model_zoo

    for name in ("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml", "COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x.yaml"):
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
