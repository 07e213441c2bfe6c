"""Install Detectron2 v0.6 (pure Python) into the running interpreter's environment, without GitHub.

Takes the ``pb1-detectron2==0.6`` sdist from PyPI (its ``.py`` files are byte-identical to the
official v0.6 tag; downloaded and sha256-checked by d2ov_core/store/detectron2_source.py) and
installs it with our own minimal ``setup.py``: no C++ extension (R-CNN models on CPU do not need it;
see d2ov_core/export/compat.py) and the model-zoo configs really packaged (the original ``setup.py``
globbed them from the wrong folder). Does nothing when a ``detectron2`` is already importable (e.g. a
user's own build). Used by tools/setup.sh (``python -m tools.install_detectron2`` from the
repository's root, before ``pip install -e .``: the root on sys.path makes ``d2ov_core`` importable);
a Hugging Face Space gets the package beside its app.py from ``d2ov space`` instead. Detectron2's
own ``tools/`` scripts are left out: installed as a top-level ``tools`` package they would shadow
this repository's ``tools`` wherever the repository's root is not first on sys.path.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile

SETUP_PY = """
from setuptools import find_packages, setup
PROJECTS = {
    "detectron2.projects.point_rend": "projects/PointRend/point_rend",
    "detectron2.projects.deeplab": "projects/DeepLab/deeplab",
    "detectron2.projects.panoptic_deeplab": "projects/Panoptic-DeepLab/panoptic_deeplab",
}
setup(
    name="pb1-detectron2",
    version="0.6",
    packages=find_packages(exclude=("configs", "tests*", "tools*")) + list(PROJECTS),
    package_dir=PROJECTS,
    package_data={"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]},
    python_requires=">=3.7",
)
"""


def main() -> int:
    spec = importlib.util.find_spec("detectron2")
    if spec is not None:
        print(f"[setup] detectron2 already installed at {spec.origin} (left alone)")
        return 0
    print("[setup] building detectron2 0.6 (pure python) from the pb1-detectron2 sdist")
    from d2ov_core.errors import D2ovError
    from d2ov_core.store.detectron2_source import extract_tree

    with tempfile.TemporaryDirectory() as tmp:
        try:
            src = extract_tree(tmp, progress=False)  # sha256-checked
        except D2ovError as e:
            print(f"[setup] {e}", file=sys.stderr)
            return 1
        (src / "setup.py").write_text(SETUP_PY)
        (src / "pyproject.toml").unlink(missing_ok=True)
        res = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", str(src)], capture_output=True, text=True
        )
        if res.returncode != 0:
            print(res.stdout[-3000:], res.stderr[-3000:], file=sys.stderr)
            return res.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
