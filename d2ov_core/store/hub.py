"""Pre-converted IRs on the Hugging Face Hub: the layout ``d2ov push`` writes and the app fetches.

Layout of a d2ov IR repository (one repo holds many models)::

    README.md                                   model card (written by push)
    <model_dir>/<precision>/model.xml           e.g. COCO-Detection__faster_rcnn_R_50_FPN_1x/FP16/
    <model_dir>/<precision>/model.bin
    <model_dir>/<precision>/d2ov.json           card with the sha256 of model.xml and model.bin

``<model_dir>`` is the catalog name with ``/`` replaced by ``__``. Fetching goes through
huggingface_hub's own cache (so ``HF_HUB_OFFLINE=1`` and ``HF_HOME`` work as usual), pins a revision
(``D2OV_HUB_REVISION``; a commit hash is the safe choice: a branch can move), and checks both files
against the sha256 recorded in ``d2ov.json`` before returning them; files in the local HF cache that
no longer match are fetched again (with a warning) when the Hub is reachable, refused when offline.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from ..errors import DownloadError, IRError, UploadError, first_line
from ..runtime import ir as runtime
from . import lookup
from .cache import ir_problem

__all__ = [
    "repo_settings",
    "configured",
    "model_dir",
    "fetch_ir",
    "push_ir",
    "verify_ir_folder",
    "is_pinned",
    "hub_problem",
]

log = logging.getLogger("d2ov")


def hub_problem(exc: BaseException) -> str:
    """One line for a huggingface_hub error: its first line plus what the Hub said (an HTTP error's
    first line alone can be only ``404 Client Error.``)."""
    line = first_line(exc)
    server = " ".join(str(getattr(exc, "server_message", None) or "").split())
    if server and server not in line:
        line = f"{line.rstrip('.')}: {server}"
    return line


def repo_settings() -> tuple[str | None, str]:
    """``(repo_id, revision)`` from ``D2OV_HUB_REPO`` / ``D2OV_HUB_REVISION``. There is no default
    repository: d2ov fetches IRs only from a repository you name (yours, or one you trust)."""
    return os.environ.get("D2OV_HUB_REPO") or None, os.environ.get("D2OV_HUB_REVISION", "main")


def configured() -> bool:
    """Whether a Hub repository of pre-converted IRs is configured (``D2OV_HUB_REPO``)."""
    return repo_settings()[0] is not None


def model_dir(name: str, precision: str = "FP16") -> str:
    return f"{name.replace('/', '__')}/{precision}"


def verify_ir_folder(folder: Path) -> Path:
    """Check ``model.xml``/``model.bin`` against the sha256 recorded in ``d2ov.json``; return the xml path."""
    if not (folder / "d2ov.json").is_file():
        raise IRError(f"{folder}: no d2ov.json card beside the IR")
    problem = ir_problem(folder)
    if problem is not None:
        raise IRError(f"{folder}: {problem}; the sha256 does not match d2ov.json (corrupt or tampered)")
    return folder / "model.xml"


def is_pinned(revision: str) -> bool:
    """A full commit hash: the only revision whose content cannot change under the app."""
    return bool(re.fullmatch(r"[0-9a-f]{40}", revision))


def fetch_ir(
    name: str,
    precision: str = "FP16",
    repo_id: str | None = None,
    revision: str | None = None,
    local_files_only: bool = False,
) -> Path:
    """Download (or find in the HF cache) the IR of catalog model ``name``; returns its ``model.xml``."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo, rev = repo_settings()
    repo_id, revision = repo_id or repo, revision or rev
    if repo_id is None:
        raise DownloadError(f"{name}: no Hugging Face Hub repository of IRs is configured (set D2OV_HUB_REPO)")
    sub = model_dir(name, precision)
    if not is_pinned(revision):
        log.warning(
            "Hub IRs from %s@%s: a branch, not a pinned commit (set D2OV_HUB_REVISION to a commit hash)",
            repo_id,
            revision,
        )

    def snapshot(force: bool) -> Path:
        try:
            return Path(
                snapshot_download(
                    repo_id,
                    revision=revision,
                    allow_patterns=[f"{sub}/*"],
                    local_files_only=local_files_only,
                    force_download=force,
                )
            )
        except LocalEntryNotFoundError:
            raise DownloadError(
                f"{name}: not on the Hugging Face Hub ({repo_id}@{revision}) and not in the local HF cache (offline?)"
            ) from None
        except (HfHubHTTPError, OSError, ValueError) as e:
            first = hub_problem(e)
            raise DownloadError(
                f"{name}: cannot fetch from the Hugging Face Hub {repo_id}@{revision}: {first}"
            ) from None

    folder = snapshot(force=False) / sub
    if not (folder / "model.xml").is_file():
        raise DownloadError(f"{name}: {repo_id}@{revision} has no {sub}/model.xml")
    try:
        xml = verify_ir_folder(folder)
    except IRError as e:
        if local_files_only or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            raise
        log.warning("%s; fetching it again from %s@%s", e, repo_id, revision)
        xml = verify_ir_folder(snapshot(force=True) / sub)
    why = lookup.problem(xml, name, precision)
    if why is not None:
        raise IRError(f"{name}: the IR on the Hugging Face Hub ({repo_id}@{revision}) is not used: {why}")
    log.info("%s: Hub IR %s@%s (snapshot %s), sha256 checked", name, repo_id, revision, folder.parent.parent.name)
    return xml


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


def push_ir(
    xml: Path, repo_id: str, revision: str | None = None, token: str | None = None, dry_run_dir: Path | None = None
) -> str:
    """Upload the IR folder of ``xml`` into ``repo_id`` in the layout :func:`fetch_ir` reads.

    With ``dry_run_dir`` the repository tree is written there instead of uploaded (to inspect it).
    Returns the ``<model>/<precision>`` path in the repo.
    """
    meta = runtime.read_metadata(xml)
    folder = Path(xml).parent
    verify_ir_folder(folder)
    sub = model_dir(meta.model_name, meta.precision)
    card = json.loads((folder / "d2ov.json").read_text())
    row = (
        f"| {meta.model_name} | {meta.task} | {meta.precision} | {card.get('box_ap') or '-'} | "
        f"{card.get('mask_ap') or '-'} |\n"
    )
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
            if revision not in (None, "main"):
                # the Hub commits only to a branch that exists (else 404 "Invalid rev id")
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            api.upload_folder(
                repo_id=repo_id,
                folder_path=str(stage),
                revision=revision,
                commit_message=f"d2ov push {meta.model_name} {meta.precision}",
            )
        except Exception as e:
            raise UploadError(f"cannot push to the Hugging Face Hub {repo_id}: {hub_problem(e)}") from None
    return sub
