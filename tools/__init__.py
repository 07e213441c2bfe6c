"""d2ov's maintainer tools: the synthetic data sets' generators (make_shapes, make_figures,
make_panoptic, sharing :mod:`tools.synth`), the demo models' training, benchmarks and setup helpers.

Not part of the installed package (pyproject.toml packages only ``d2ov_core``). Run them from the
repository's root as modules, e.g. ``python -m tools.make_shapes --out DIR --split test``; the tests
import them as ``from tools import make_shapes``.
"""
