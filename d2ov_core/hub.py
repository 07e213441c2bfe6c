"""Pre-converted IRs on the Hugging Face Hub: the layout ``d2ov push`` writes and the app fetches.

Layout of a d2ov IR repository (one repo holds many models)::

    README.md                                   model card (written by push)
    <model_dir>/<precision>/model.xml           e.g. COCO-Detection__faster_rcnn_R_50_FPN_1x/FP16/
    <model_dir>/<precision>/model.bin
    <model_dir>/<precision>/d2ov.json           card with the sha256 of model.xml and model.bin

``<model_dir>`` is the catalog name with ``/`` replaced by ``__``. Fetching goes through
huggingface_hub's own cache (so ``HF_HUB_OFFLINE=1`` and ``HF_HOME`` work as usual), pins a revision
(``D2OV_HUB_REVISION``; a commit hash is the safe choice), and checks both files against the sha256
recorded in ``d2ov.json`` before returning them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .weights import sha256_file
from .errors import DownloadError, IRError, first_line

__all__ = ["DEFAULT_REPO", "repo_settings", "model_dir", "fetch_ir", "push_ir", "verify_ir_folder"]

DEFAULT_REPO = "d2ov/detectron2-openvino"


def repo_settings() -> tuple[str, str]:
    """``(repo_id, revision)`` from ``D2OV_HUB_REPO`` / ``D2OV_HUB_REVISION``."""
    return os.environ.get("D2OV_HUB_REPO", DEFAULT_REPO), os.environ.get("D2OV_HUB_REVISION", "main")


def model_dir(name: str, precision: str = "FP16") -> str:
    return f"{name.replace('/', '__')}/{precision}"


def verify_ir_folder(folder: Path) -> Path:
    """Check ``model.xml``/``model.bin`` against ``d2ov.json``; return the xml path."""
    card_path = folder / "d2ov.json"
    if not card_path.is_file():
        raise IRError(f"{folder}: no d2ov.json card beside the IR")
    expected = json.loads(card_path.read_text()).get("ir_sha256", {})
    for name in ("model.xml", "model.bin"):
        f = folder / name
        if not f.is_file():
            raise IRError(f"{folder}: {name} is missing")
        if expected.get(name) and sha256_file(f) != expected[name]:
            raise IRError(f"{f}: sha256 does not match the one recorded in d2ov.json (corrupt or tampered)")
    return folder / "model.xml"


def fetch_ir(name: str, precision: str = "FP16", repo_id: str | None = None, revision: str | None = None,
             local_files_only: bool = False) -> Path:
    """Download (or find in the HF cache) the IR of catalog model ``name``; returns its ``model.xml``."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo, rev = repo_settings()
    repo_id, revision = repo_id or repo, revision or rev
    sub = model_dir(name, precision)
    try:
        root = snapshot_download(repo_id, revision=revision, allow_patterns=[f"{sub}/*"],
                                 local_files_only=local_files_only)
    except LocalEntryNotFoundError:
        raise DownloadError(f"{name}: not on the Hugging Face Hub ({repo_id}@{revision}) and not in the local HF cache "
                            "(offline?)") from None
    except (HfHubHTTPError, OSError, ValueError) as e:
        first = first_line(e)
        raise DownloadError(f"{name}: cannot fetch from the Hugging Face Hub {repo_id}@{revision}: {first}") from None
    folder = Path(root) / sub
    if not (folder / "model.xml").is_file():
        raise DownloadError(f"{name}: {repo_id}@{revision} has no {sub}/model.xml")
    return verify_ir_folder(folder)


MODEL_CARD = """---
library_name: openvino
tags: [detectron2, openvino, object-detection, instance-segmentation, d2ov]
---
# Detectron2 models converted to OpenVINO IR by d2ov

Each folder `<model>/<precision>/` holds `model.xml`, `model.bin` and `d2ov.json` (task, classes,
COCO AP from the Detectron2 Model Zoo, weights sha256, IR sha256). The IR's `rt_info` carries all
the runtime needs; run it with `d2ov predict <folder> image.jpg` or the d2ov app.

| model | task | precision | box AP | mask AP |
| --- | --- | --- | --- | --- |
"""


def push_ir(xml: Path, repo_id: str, revision: str | None = None, token: str | None = None,
            dry_run_dir: Path | None = None) -> str:
    """Upload the IR folder of ``xml`` into ``repo_id`` in the layout :func:`fetch_ir` reads.

    With ``dry_run_dir`` the repository tree is written there instead of uploaded (to inspect it).
    Returns the ``<model>/<precision>`` path in the repo.
    """
    from . import runtime

    meta = runtime.read_metadata(xml)
    folder = Path(xml).parent
    verify_ir_folder(folder)
    sub = model_dir(meta["model_name"], meta["precision"])
    card = json.loads((folder / "d2ov.json").read_text())
    row = (f"| {meta['model_name']} | {meta['task']} | {meta['precision']} | {card.get('box_ap') or '-'} | "
           f"{card.get('mask_ap') or '-'} |\n")
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "repo"
        (stage / sub).mkdir(parents=True)
        for f in ("model.xml", "model.bin", "d2ov.json"):
            shutil.copy2(folder / f, stage / sub / f)
        (stage / "README.md").write_text(MODEL_CARD + row)
        if dry_run_dir is not None:
            shutil.copytree(stage, dry_run_dir, dirs_exist_ok=True)
            return sub
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        try:
            api.create_repo(repo_id, exist_ok=True)
            api.upload_folder(repo_id=repo_id, folder_path=str(stage), revision=revision,
                              commit_message=f"d2ov push {meta['model_name']} {meta['precision']}")
        except Exception as e:
            first = first_line(e)
            raise DownloadError(f"cannot push to the Hugging Face Hub {repo_id}: {first}") from None
    return sub
