"""``d2ov space``: the exact folder a Hugging Face Space runs, and its upload.

A Space runs ``pip install -r requirements.txt`` and then ``python app.py`` from its folder, as a
non-root user, with ``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT`` set. Nothing else runs there, so the
folder holds everything the app needs and nothing more:

  * ``README.md``: the Space's front matter (Gradio SDK, ``app.py``) and a short description;
  * ``app.py``: the d2ov web app (:mod:`d2ov_core.serve.webapp`);
  * ``d2ov_core/``: the package, with the bundled demo IRs and samples (no tests, no training weights);
  * ``detectron2/``: Detectron2 v0.6 as pure Python with its LICENSE (Apache-2.0), from the
    sha256-checked sdist (:mod:`d2ov_core.store.detectron2_source`), for ``Visualizer`` rendering:
    importable from the app's folder, nothing installed at run time;
  * ``requirements.txt``: only what the Space runs: OpenVINO, Gradio (with MCP), and for drawing
    with Detectron2 torch's CPU build (from PyTorch's CPU index; no CUDA, no torchvision, no NNCF).

Every file is at most 10 MB. The upload goes through ``huggingface_hub`` (``create_repo(...,
repo_type="space", space_sdk="gradio")`` + ``upload_folder``), which stores binary files the way the
Hub requires (a plain ``git push`` of them is refused).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from .. import __version__
from ..errors import InputError, UploadError
from ..store.weights import Progress

__all__ = ["build_space", "publish_space", "SPACE_REQUIREMENTS", "MAX_FILE_MB", "GRADIO_VERSION"]

log = logging.getLogger("d2ov")
MAX_FILE_MB = 10
GRADIO_VERSION = "6.31.0"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
#: what the Space installs; torch is the CPU build (Detectron2's Visualizer imports it)
SPACE_REQUIREMENTS = f"""# d2ov Hugging Face Space: written by `d2ov space` {__version__}
# torch's CPU build (from PyTorch's CPU index) is only for drawing with Detectron2's Visualizer;
# the models run on OpenVINO. No CUDA, no torchvision, no NNCF.
--extra-index-url {TORCH_CPU_INDEX}
torch==2.13.0+cpu
openvino==2026.4.1
numpy>=2.0,<3
pillow>=10
gradio[mcp]=={GRADIO_VERSION}
huggingface-hub>=1.0
# on a Space, Gradio runs its hot-reload watcher, which needs this (Spaces usually provide it)
spaces>=0.43
# Detectron2 v0.6 (beside app.py) needs these to import its Visualizer
matplotlib
opencv-python-headless
pycocotools
fvcore==0.1.5.post20221221
iopath
yacs
termcolor
tabulate
cloudpickle
omegaconf>=2.1
tqdm
"""

APP_PY = '''"""d2ov web app on a Hugging Face Space (written by `d2ov space`)."""

from d2ov_core.serve.webapp import build_demo, main

__all__ = ["build_demo", "main"]

if __name__ == "__main__":
    main()
'''

README = """---
title: {title}
emoji: 🔎
colorFrom: blue
colorTo: indigo
sdk: gradio
sdk_version: {gradio}
python_version: "3.11"
app_file: app.py
pinned: false
license: apache-2.0
short_description: Detectron2 R-CNN models on OpenVINO, on CPU
---

# {title}

Detectron2 R-CNN models converted to OpenVINO IR by [d2ov](https://github.com/) {version}, running on this
Space's CPU: upload an image, pick a task, a model and a precision, and get boxes, masks, keypoints or a
panoptic map (every pixel a thing or stuff segment), and a JSON file.

- The demo models (circles, squares, triangles; stick figures with keypoints; shapes over textured regions,
  panoptic) are bundled and ready at once.
- Detectron2 Model Zoo models are prepared when selected: from the Hugging Face Hub repository named in
  the Space's `D2OV_HUB_REPO` variable (pin `D2OV_HUB_REVISION` to a commit), else downloaded and converted.
- API: `gradio_client.Client("<this space>").predict(handle_file(img), "demo/mask_rcnn_shapes", "CPU", 0.5,
  api_name="/detect")`; MCP: this Space's `/gradio_api/mcp/` endpoint offers the same as a tool.
"""


def _package_dir() -> Path:
    return Path(__file__).resolve().parent.parent


def build_space(out: str | Path, title: str = "d2ov — Detectron2 on OpenVINO", progress: Progress = True) -> Path:
    """Write the Space folder into ``out`` (which must not exist or be empty); returns it."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} exists and is not an empty folder: give a new folder for the Space")
    out.mkdir(parents=True, exist_ok=True)
    try:
        (out / "README.md").write_text(README.format(title=title, gradio=GRADIO_VERSION, version=__version__))
        (out / "app.py").write_text(APP_PY)
        (out / "requirements.txt").write_text(SPACE_REQUIREMENTS)
        shutil.copytree(_package_dir(), out / "d2ov_core",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
        from ..store.detectron2_source import vendor_package

        vendor_package(out, progress=progress)
        big = [p for p in out.rglob("*") if p.is_file() and p.stat().st_size > MAX_FILE_MB * 1024 * 1024]
        if big:
            raise InputError(f"{big[0]} is over {MAX_FILE_MB} MB: a Space folder keeps every file at most that size")
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # no half-written Space folder
        raise
    return out


def publish_space(repo_id: str, private: bool = False, token: str | None = None, progress: Progress = True) -> str:
    """Build the Space folder and upload it to ``repo_id`` (created as a Gradio Space if needed);
    returns the Space's URL."""
    from huggingface_hub import HfApi

    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise InputError(f"--repo-id must be USER/NAME (or ORG/NAME), got {repo_id!r}")
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="d2ov-space-") as tmp:
        folder = build_space(Path(tmp) / "space", progress=progress)
        try:
            url = api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
            api.upload_folder(repo_id=repo_id, repo_type="space", folder_path=str(folder),
                              commit_message=f"d2ov space {__version__}")
        except Exception as e:  # huggingface_hub raises HTTP, auth and network errors of many types
            from ..store.hub import hub_problem

            raise UploadError(f"cannot publish the Space {repo_id}: {hub_problem(e)}") from None
    return str(url)
