#!/usr/bin/env python3
"""Install Detectron2 v0.6 (pure Python) into the running interpreter's environment, without GitHub.

Downloads the ``pb1-detectron2==0.6`` sdist from PyPI (its ``.py`` files are byte-identical to the
official v0.6 tag), checks its sha256, and installs it with our own minimal ``setup.py``: no C++
extension (R-CNN models on CPU do not need it; see d2ov_core/compat.py) and the model-zoo configs
really packaged (the original ``setup.py`` globbed them from the wrong folder). Does nothing when a
``detectron2`` is already importable (e.g. a user's own build). Used by tools/setup.sh and by app.py
on a Hugging Face Space.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

URL = ("https://files.pythonhosted.org/packages/60/26/48f5bbb7ee492696a21da23303daeecdfe3942c498a70d34108acf63b2bd/"
       "pb1-detectron2-0.6.tar.gz")
SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"

SETUP_PY = '''
from setuptools import find_packages, setup
PROJECTS = {
    "detectron2.projects.point_rend": "projects/PointRend/point_rend",
    "detectron2.projects.deeplab": "projects/DeepLab/deeplab",
    "detectron2.projects.panoptic_deeplab": "projects/Panoptic-DeepLab/panoptic_deeplab",
}
setup(
    name="pb1-detectron2",
    version="0.6",
    packages=find_packages(exclude=("configs", "tests*")) + list(PROJECTS),
    package_dir=PROJECTS,
    package_data={"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]},
    python_requires=">=3.7",
)
'''


def main() -> int:
    spec = importlib.util.find_spec("detectron2")
    if spec is not None:
        print(f"[setup] detectron2 already installed at {spec.origin} (left alone)")
        return 0
    print("[setup] building detectron2 0.6 (pure python) from the pb1-detectron2 sdist")
    with tempfile.TemporaryDirectory() as tmp:
        data = urllib.request.urlopen(URL, timeout=120).read()
        got = hashlib.sha256(data).hexdigest()
        if got != SHA256:
            print(f"[setup] pb1-detectron2 sdist sha256 mismatch: expected {SHA256}, got {got}", file=sys.stderr)
            return 1
        archive = Path(tmp) / "d2.tar.gz"
        archive.write_bytes(data)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        src = Path(tmp) / "pb1-detectron2-0.6"
        (src / "setup.py").write_text(SETUP_PY)
        (src / "pyproject.toml").unlink(missing_ok=True)
        res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", str(src)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            print(res.stdout[-3000:], res.stderr[-3000:], file=sys.stderr)
            return res.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
