"""``d2ov space``: the exact folder a Hugging Face Space runs, and its upload.

A Space runs ``pip install -r requirements.txt`` and then ``python app.py`` from its folder, as a
non-root user, with ``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT`` set. Nothing else runs there, so the
folder holds everything the app needs and nothing more:

  * ``README.md``: the Space's front matter (Gradio SDK, ``app.py``) and a short description;
  * ``app.py``: the d2ov web app (:mod:`d2ov_core.serve.webapp`);
  * ``d2ov_core/``: the package, with the bundled demo IRs and samples (no tests, no training weights);
  * ``requirements.txt``: only what the Space runs: OpenVINO, Gradio (with MCP), PyAV for video,
    trackers for tracking in videos, matplotlib for its sample photo; no torch, no Detectron2 (the
    runtime never imports them, and d2ov draws results itself), no NNCF;
  * ``packages.txt``: the Debian packages the Space installs first: libGL and GLib for OpenCV (which
    trackers asks for);
  * your models (``d2ov space --model``), converted on your machine (:func:`collect_models`): a
    catalog model's IRs beside the bundled ones (``d2ov_core/data/ir/``), any other model's (your
    config, an IR folder) in ``models/<name>/<precision>/``, listed as ``local/<name>``; with
    ``--ir-repo`` the catalog models' IRs go to a model repository instead (:func:`push_models`);
  * ``examples/``: your example images (at most 1600 px on the long side);
  * ``space.json``: what the page opens on (models, examples, title), read by ``app.py`` as
    environment defaults (``D2OV_DEFAULT_MODEL``, ``D2OV_EXAMPLES``, ``D2OV_TITLE``, ``D2OV_MODELS_DIR``).

Every file but the IRs' ``model.bin`` is at most 10 MB. The upload goes through ``huggingface_hub`` (``create_repo(...,
repo_type="space", space_sdk="gradio")`` + ``upload_folder``), which stores binary files the way the
Hub requires (a plain ``git push`` of them is refused).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import tempfile
from pathlib import Path

from .. import __version__
from ..errors import D2ovError, InputError, UploadError
from ..export.convert import convert
from ..export.resolve import resolve_ir
from ..measure import proof
from ..runtime.images import load_image
from ..runtime.settings import IR_PRECISIONS, PRECISIONS
from ..store import catalog, hub, lookup
from ..store.cache import check_given_ir
from ..store.hub import hub_problem
from ..store.weights import Progress
from .service import metadata

__all__ = [
    "build_space",
    "publish_space",
    "collect_models",
    "push_models",
    "SpaceModel",
    "copy_examples",
    "SPACE_REQUIREMENTS",
    "MAX_FILE_MB",
    "GRADIO_VERSION",
]

log = logging.getLogger("d2ov")
MAX_FILE_MB = 10
DEFAULT_TITLE = "d2ov — Detectron2 on OpenVINO"
GRADIO_VERSION = "6.31.0"
#: what the Space installs: the runtime side only (no torch, no Detectron2: the models run on
#: OpenVINO and d2ov draws the results itself)
SPACE_REQUIREMENTS = f"""# d2ov Hugging Face Space: written by `d2ov space` {__version__}
# The models run on OpenVINO and d2ov draws the results itself: no torch, no Detectron2, no CUDA.
openvino==2026.4.1
numpy>=2.0,<3
pillow>=10
threadpoolctl>=3
# keypoint and segmentation decoding compiled (d2ov_core/runtime/kernels.py)
numba>=0.60
gradio[mcp]=={GRADIO_VERSION}
huggingface-hub>=1.0
# the Video mode: decoding and H.264 encoding (PyAV, FFmpeg in the wheel)
av==18.1.0
# the Video mode's Track toggle: Roboflow's trackers (ByteTrack, with supervision); it asks for
# opencv-python, whose build needs libGL and GLib: packages.txt has the Space install them
trackers==2.6.1
supervision==0.31.2
# the example photo offered with COCO models (matplotlib's grace_hopper.jpg)
matplotlib
# on a Space, Gradio runs its hot-reload watcher, which needs this (Spaces usually provide it)
spaces>=0.43
"""

#: Debian packages the Space installs before its requirements (a Space reads ``packages.txt``):
#: OpenCV's libGL and GLib, for tracking
SPACE_PACKAGES = "libgl1\nlibglib2.0-0\n"

APP_PY = '''"""d2ov web app on a Hugging Face Space (written by `d2ov space`).

``space.json`` beside this file names what the Space opens on (its models, examples and title); the
Space's own variables (``D2OV_HUB_REPO``, ``D2OV_DEFAULT_MODEL``, ...) take precedence over it."""

import json
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
for key, value in json.loads((HERE / "space.json").read_text())["env"].items():
    os.environ.setdefault(key, str(HERE / value) if key in ("D2OV_MODELS_DIR", "D2OV_EXAMPLES") else value)

from d2ov_core.serve.webapp import build_demo, main  # noqa: E402  (after the environment is set)

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
Space's CPU: upload an image (or click an example), press **Detect**, and get boxes, masks, keypoints or a
map of segments (things and stuff), a table and a JSON file. The page opens on **{first}**.

## The models this Space holds

{models}

This Space runs OpenVINO only: it does not convert models, so it offers exactly these (any other model
name is refused).

## Adding a model

Convert it on your machine (where Detectron2 and torch are installed) and publish the Space again with it:

```bash
d2ov space --repo-id <you>/<space> --model {first_arg} --model NEW_MODEL [--weights W --classes a,b,c]
```

`NEW_MODEL` is a Model Zoo name (`d2ov list`), a Detectron2 config (`.yaml`, with `--weights` and
`--classes`) or a d2ov IR folder. Or copy a d2ov IR folder (`model.xml`, `model.bin`, `d2ov.json`) into
`models/<name>/<precision>/` of this Space: it is listed as `local/<name>`.

## API

`gradio_client.Client("<this space>").predict(handle_file(img), api_name="/detect")` runs {first};
name another model as the second argument. MCP: this Space's `/gradio_api/mcp/` endpoint offers the same
as a tool.
"""


def _package_dir() -> Path:
    return Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class SpaceModel:
    """A model put into a Space: the name the app lists it under and its IRs (one per precision).

    ``name`` is a catalog name when its IRs serve that catalog model (they go where the app finds
    bundled IRs, or to ``--ir-repo``), else ``local/<slug>`` (its IRs go to the Space's ``models/<slug>/``).
    """

    name: str
    irs: dict[str, Path]  # precision -> model.xml
    slug: str = ""  # local models: the folder under models/
    on_hub: bool = False  # pushed to the IR repository instead of copied into the Space
    #: precision -> d2ov verify's record on the examples (:mod:`d2ov_core.measure.proof`), written into the
    #: IR the Space gets
    proof: dict[str, dict] = dataclasses.field(default_factory=dict)

    @property
    def bundled(self) -> bool:
        return not self.name.startswith("local/")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.") or "model"


def _ir_folder_irs(path: Path) -> dict[str, Path]:
    """The IRs of a d2ov IR folder given as ``--model``: ``model.xml`` in it, or one per precision subfolder."""
    xmls = (
        [path]
        if path.suffix == ".xml"
        else (
            [path / "model.xml"]
            if (path / "model.xml").is_file()
            else [path / p / "model.xml" for p in IR_PRECISIONS if (path / p / "model.xml").is_file()]
        )
    )
    if not xmls:
        raise InputError(f"{path}: no model.xml in it (nor in {'/, '.join(IR_PRECISIONS)}/ subfolders)")
    return {metadata(check_given_ir(x)).precision: x for x in xmls}


def collect_models(
    models: list[str],
    *,
    weights: list[str] | None = None,
    classes: list[str] | None = None,
    precisions: tuple[str, ...] = ("FP16",),
    calibration: str | None = None,
    measure=None,
    progress: Progress = True,
    proof_images: list[Path] | None = None,
) -> list[SpaceModel]:
    """Each ``--model`` as IRs on this machine: a catalog name (its bundled or cached IR, else a
    conversion; ``INT8`` needs ``calibration``), a Detectron2 config (+ weights and classes: converted,
    cached by the weights' sha256) or a d2ov IR folder (used as it is). The i-th ``weights``/``classes``
    go with the i-th model. With ``proof_images``, each converted model's IRs are checked against
    Detectron2 on them (``d2ov verify``, :func:`d2ov_core.measure.proof.check`); an IR folder, whose float
    model is not known here, is not."""
    weights, classes = list(weights or []), list(classes or [])
    if len(weights) > len(models) or len(classes) > len(models):
        raise InputError("more --weights/--classes than --model: each goes with the --model in the same place")
    if "INT8" in precisions and not calibration:
        raise InputError("--precision INT8 needs --calibration DIR (images of the model's domain)")
    out: list[SpaceModel] = []
    for i, model in enumerate(models):
        w = weights[i] if i < len(weights) else None
        c = classes[i] if i < len(classes) else None
        path = Path(model)
        if path.suffix == ".xml" or (path.is_dir() and not path.suffix):
            if w or c:
                raise InputError(f"{model} is an IR: --weights/--classes are for configs and catalog models")
            irs = _ir_folder_irs(path)
            folder = path.parent if path.suffix == ".xml" else path
            folder = folder.parent if folder.name in IR_PRECISIONS else folder
            out.append(SpaceModel(f"local/{_slug(folder.name)}", irs, _slug(folder.name)))
            continue
        spec = catalog.spec_for(model, w, c)
        irs = {}
        for p in precisions:
            if p == "INT8":
                irs[p] = convert(spec, weights=w, calibration=calibration, measure=measure, progress=progress)
            elif spec.source == "custom" or w or measure is not None:
                irs[p] = convert(spec, weights=w, fp16=p == "FP16", measure=measure, progress=progress)
            else:
                irs[p] = resolve_ir(spec, PRECISIONS[p], progress=progress)
        checked = _prove(spec, w, irs, proof_images or [], progress)
        if spec.source != "custom" and all(lookup.problem(x, spec.name, p) is None for p, x in irs.items()):
            out.append(SpaceModel(spec.name, irs, proof=checked))
        else:  # a config, or a catalog model with other weights: the Space lists it as a local IR
            stem = Path(spec.config).stem
            slug = _slug(
                Path(spec.config).parent.name
                if stem in ("config", "model", "cfg")
                else stem
                if spec.source == "custom"
                else spec.name.replace("/", "__")
            )
            out.append(SpaceModel(f"local/{slug}", irs, slug, proof=checked))
    names = [m.name for m in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise InputError(f"two --model give the same name in the Space ({dup}): rename one's folder")
    return out


def _prove(spec, weights: str | None, irs: dict[str, Path], images: list[Path], progress: Progress) -> dict[str, dict]:
    """d2ov verify's record of each IR on ``images`` (none when there are no images, or Detectron2's
    model cannot be had here: then the Space shows no proof, and the log says why)."""
    out = {}
    for p, xml in irs.items() if images else ():
        try:
            out[p] = proof.check(spec, xml, images, weights=weights, progress=progress is True)
        except D2ovError as e:
            log.warning("%s %s: not checked against Detectron2 (%s)", spec.name, p, e)
            return {}
    return out


#: the longest side of an example image in the Space
EXAMPLE_MAX_PX = 1600


def copy_examples(images: list[Path], dest: Path) -> list[Path]:
    """The user's example images, at most :data:`EXAMPLE_MAX_PX` on the long side (smaller ones as they are)."""
    from PIL import Image

    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for src in images:
        rgb = load_image(src)  # checked like any image d2ov reads
        target = dest / src.name
        if max(rgb.shape[:2]) <= EXAMPLE_MAX_PX:
            shutil.copy2(src, target)
        else:
            im = Image.fromarray(rgb)
            im.thumbnail((EXAMPLE_MAX_PX, EXAMPLE_MAX_PX), Image.Resampling.LANCZOS)
            target = target.with_suffix(".png" if src.suffix.lower() == ".png" else ".jpg")
            im.save(target, quality=90) if target.suffix == ".jpg" else im.save(target)
        written.append(target)
    return written


def _model_lines(models: list[SpaceModel], hub_repo: str | None, only: bool) -> str:
    rows = []
    for m in models:
        meta = metadata(next(iter(m.irs.values())))
        where = (
            f"from the model repository {hub_repo}"
            if m.on_hub
            else (f"`models/{m.slug}/`" if not m.bundled else "bundled with the app")
        )
        classes = ", ".join(meta.labels[:12]) + (" ..." if len(meta.labels) > 12 else "")
        rows.append(
            f"- **{m.name}**: {meta.task.replace('_', ' ')}, {len(meta.labels)} classes ({classes}); "
            f"{', '.join(m.irs)} IR, {where}"
        )
    if not only:
        demo = [n for n in catalog.names() if n.startswith("demo/")]
        rows.append(f"- the d2ov demo models (synthetic shapes, stick figures): {', '.join(demo)}, bundled")
    return "\n".join(rows)


def _copy_ir(xml: Path, dest: Path, verification: dict | None) -> Path:
    """Copy the IR of ``xml`` into ``dest`` (the cache's and the package's IRs stay as they are), with
    ``verification`` recorded in the copy."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in ("model.xml", "model.bin", "d2ov.json"):
        if (xml.parent / f).is_file():
            shutil.copy2(xml.parent / f, dest / f)
    if verification:
        proof.record(dest / "model.xml", verification)
    return dest / "model.xml"


def build_space(
    out: str | Path,
    title: str = DEFAULT_TITLE,
    progress: Progress = True,
    models: list[SpaceModel] | None = None,
    examples: list[Path] | None = None,
    only: bool = False,
    hub: tuple[str, str] | None = None,
) -> Path:
    """Write the Space folder into ``out`` (which must not exist or be empty); returns it.

    Args:
        models: the models to put in (see :func:`collect_models`); the page opens on the first.
        examples: the user's example images (copied into ``examples/``, at most 1600 px long side).
        only: leave the bundled demo models out.
        hub: ``(repo, revision)`` of the IR repository the models marked ``on_hub`` were pushed to.
    """
    out = Path(out)
    models = list(models or [])
    if only and not models:
        raise InputError("--only leaves the demo models out: name at least one --model")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} exists and is not an empty folder: give a new folder for the Space")
    out.mkdir(parents=True, exist_ok=True)
    try:
        first = models[0].name if models else "demo/mask_rcnn_shapes"
        (out / "README.md").write_text(
            README.format(
                title=title,
                gradio=GRADIO_VERSION,
                version=__version__,
                first=first,
                first_arg=first if models and models[0].bundled else "YOUR_MODEL",
                models=_model_lines(models, hub[0] if hub else None, only),
            )
        )
        (out / "app.py").write_text(APP_PY)
        (out / "requirements.txt").write_text(SPACE_REQUIREMENTS)
        (out / "packages.txt").write_text(SPACE_PACKAGES)
        skip = ["__pycache__", "*.pyc", ".*"]
        shutil.copytree(_package_dir(), out / "d2ov_core", ignore=shutil.ignore_patterns(*skip))
        if only:
            for d in (out / "d2ov_core" / "data" / "ir").glob("demo__*"):
                shutil.rmtree(d)
        env = {"D2OV_TITLE": title}
        if models:
            env["D2OV_DEFAULT_MODEL"] = ",".join(m.name for m in models)
        for m in models:
            if m.on_hub:
                continue
            for p, xml in m.irs.items():
                dest = (
                    out / "models" / m.slug / p
                    if not m.bundled
                    else out / "d2ov_core" / "data" / "ir" / m.name.replace("/", "__") / p
                )
                dest.mkdir(parents=True, exist_ok=True)
                _copy_ir(xml, dest, m.proof.get(p))
                m.irs[p] = dest / "model.xml"
        if (out / "models").is_dir():
            env["D2OV_MODELS_DIR"] = "models"
        if examples:
            copy_examples(examples, out / "examples")
            env["D2OV_EXAMPLES"] = "examples"
        if only:
            env["D2OV_ONLY"] = "1"
        if hub:
            env.update(D2OV_HUB_REPO=hub[0], D2OV_HUB_REVISION=hub[1])
        (out / "space.json").write_text(json.dumps({"written_by": f"d2ov space {__version__}", "env": env}, indent=1))
        # model.bin files go through large-file storage (upload_folder); every other file stays small
        big = [
            p
            for p in out.rglob("*")
            if p.is_file() and p.name != "model.bin" and p.stat().st_size > MAX_FILE_MB * 1024 * 1024
        ]
        if big:
            raise InputError(
                f"{big[0]} is over {MAX_FILE_MB} MB: a Space folder keeps every file but the IRs' "
                "model.bin at most that size"
            )
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # no half-written Space folder
        raise
    return out


def push_models(models: list[SpaceModel], ir_repo: str, token: str | None = None) -> str:
    """Push the catalog models' IRs to the model repository ``ir_repo`` (``d2ov push``) and mark them
    ``on_hub``; returns the repository's commit after the pushes (what the Space pins). Local models
    (your configs, IR folders) stay in the Space: the app fetches catalog models only."""
    from huggingface_hub import HfApi

    pushed = False
    for m in models:
        if not m.bundled:
            continue
        for p, xml in m.irs.items():
            with tempfile.TemporaryDirectory(prefix="d2ov-push-") as tmp:  # the proof goes along
                hub.push_ir(_copy_ir(xml, Path(tmp) / p, m.proof.get(p)), ir_repo, token=token)
        m.on_hub = pushed = True
    if not pushed:
        raise InputError(
            "--ir-repo holds catalog models' IRs: none of the --model is one (configs and IR "
            "folders go into the Space itself)"
        )
    try:
        return HfApi(token=token).repo_info(ir_repo).sha
    except Exception as e:
        raise UploadError(f"cannot read the commit of {ir_repo}: {hub.hub_problem(e)}") from None


def publish_space(
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    progress: Progress = True,
    ir_repo: str | None = None,
    **build,
) -> str:
    """Build the Space folder (``build``: the arguments of :func:`build_space`) and upload it to
    ``repo_id`` (created as a Gradio Space if needed); with ``ir_repo``, the catalog models' IRs go to
    that model repository instead and the Space's variables ``D2OV_HUB_REPO``/``D2OV_HUB_REVISION``
    name it, pinned to the pushed commit. Returns the Space's URL."""
    from huggingface_hub import HfApi

    for repo in [repo_id] + ([ir_repo] if ir_repo else []):
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise InputError(f"a Hub repository is USER/NAME (or ORG/NAME), got {repo!r}")
    api = HfApi(token=token)
    hub = (ir_repo, push_models(build.get("models") or [], ir_repo, token=token)) if ir_repo else None
    with tempfile.TemporaryDirectory(prefix="d2ov-space-") as tmp:
        folder = build_space(Path(tmp) / "space", progress=progress, hub=hub, **build)
        try:
            url = api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
            if hub:
                api.add_space_variable(repo_id, "D2OV_HUB_REPO", hub[0], description="d2ov: the IR repository")
                api.add_space_variable(repo_id, "D2OV_HUB_REVISION", hub[1], description="d2ov: its pinned commit")
            api.upload_folder(
                repo_id=repo_id, repo_type="space", folder_path=str(folder), commit_message=f"d2ov space {__version__}"
            )
        except Exception as e:  # huggingface_hub raises HTTP, auth and network errors of many types
            raise UploadError(f"cannot publish the Space {repo_id}: {hub_problem(e)}") from None
    return str(url)
