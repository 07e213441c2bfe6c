"""The torch-free runtime: IR loading and inference (OpenVINO), image decoding, pre- and
postprocessing, the one result type (:class:`Detections`), the settings table and the tasks
(:mod:`d2ov_core.runtime.tasks`: one module per task, asked for what differs between them).

Nothing in this package imports torch, torchvision or detectron2 (``tests/unit/test_layout.py``
fails if anything does); it needs only openvino, numpy and Pillow, and threadpoolctl to run some
matrix products of the postprocessing on one BLAS thread. It imports nothing from the other d2ov
packages except :mod:`d2ov_core.errors`.
"""
