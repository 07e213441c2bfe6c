"""Detectron2 v0.6 as source, without GitHub: the ``pb1-detectron2==0.6`` sdist from PyPI, whose
``.py`` files are byte-identical to the official v0.6 tag (Apache-2.0), checked against its sha256.

Used by ``tools/install_detectron2.py`` (builds and pip-installs it as pure Python, no C++
extension) and by ``d2ov space`` (puts the ``detectron2`` package beside the Space's ``app.py``, so
nothing is installed at run time). Torch-free.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from pathlib import Path

from ..errors import DownloadError
from .weights import Progress, download

__all__ = ["SDIST_URL", "SDIST_SHA256", "fetch_sdist", "extract_tree", "vendor_package"]

SDIST_URL = (
    "https://files.pythonhosted.org/packages/60/26/48f5bbb7ee492696a21da23303daeecdfe3942c498a70d34108acf63b2bd/"
    "pb1-detectron2-0.6.tar.gz"
)
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
_TOP = "pb1-detectron2-0.6"


def fetch_sdist(progress: Progress = True) -> Path:
    """The sdist in d2ov's download cache (downloaded once, sha256-checked every time it is used)."""
    return download(SDIST_URL, progress=progress, expected_sha256=SDIST_SHA256)


def extract_tree(dest: str | Path, progress: Progress = True) -> Path:
    """Extract the whole sdist into ``dest``; returns its top folder (``dest/pb1-detectron2-0.6``)."""
    archive = fetch_sdist(progress)
    dest = Path(dest)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise DownloadError(f"{archive}: cannot unpack the Detectron2 sdist ({e})") from None
    return dest / _TOP


def vendor_package(dest: str | Path, progress: Progress = True) -> Path:
    """Write the pure-Python ``detectron2`` package (no configs, no projects) and its LICENSE into
    ``dest`` (``dest/detectron2/``, ``dest/detectron2/LICENSE``); returns the package folder."""
    dest = Path(dest)
    with tempfile.TemporaryDirectory(prefix="d2ov-d2-") as tmp:
        top = extract_tree(tmp, progress)
        target = dest / "detectron2"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(top / "detectron2", target, ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyd"))
        shutil.copy2(top / "LICENSE", target / "LICENSE")
    return target
