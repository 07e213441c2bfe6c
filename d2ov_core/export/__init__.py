"""The Detectron2 side: config and model building, random-weight calibration, d2ov's two patches to
Detectron2, tracing, conversion to OpenVINO IR, INT8 quantization (NNCF), and the PyTorch reference.

The only package whose modules import torch and detectron2 at module level (besides
:mod:`d2ov_core.serve.render`, which draws with Detectron2's ``Visualizer``). It may import
:mod:`d2ov_core.runtime` and :mod:`d2ov_core.store`; they never import it.
"""

from . import compat

compat.apply()  # before any detectron2 import in this package (cheap: nothing is imported by it)
