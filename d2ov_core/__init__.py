"""d2ov: Detectron2 R-CNN models converted to OpenVINO IR, served without PyTorch.

Importing this package imports neither torch, detectron2 nor openvino: each lives behind the
module that needs it (``convert``/``reference``/``render`` for torch+detectron2, ``runtime``
for openvino).
"""

__version__ = "0.1.0"

from .errors import D2ovError
from .runtime.detections import Detections

__all__ = ["__version__", "D2ovError", "Detections"]
