"""Where models and IRs come from: the catalog, weights downloads, the conversion cache, the Hugging
Face Hub, and the one answer to "which IR serves (model, precision)?" (:mod:`.lookup`).

Torch-free, like :mod:`d2ov_core.runtime` (enforced by ``tests/unit/test_layout.py``); it may import
the runtime (to read IR metadata), never :mod:`d2ov_core.export`.
"""
