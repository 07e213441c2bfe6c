"""An OpenVINO Model Server (OVMS) model repository of d2ov IRs (``d2ov export MODEL --ovms DIR``).

Layout (what ``ovms --config_path DIR/config.json`` reads; several models share one ``DIR``):

    DIR/config.json              {"model_config_list": [{"config": {name, base_path, target_device,
                                 nireq, shape, plugin_config}}, ...]}
    DIR/<name>/1/model.xml|.bin  the IR byte for byte: its rt_info keeps d2ov's metadata, which OVMS
                                 returns in its KServe model metadata (``rt_info.model_info``)
    DIR/README.md                the ``docker run`` command that serves DIR, and how to query it

Per model: the input ``image`` stays dynamic (``"shape": {"image": "(3,-1,-1)"}``); ``plugin_config``
pins ``INFERENCE_PRECISION_HINT`` to ``f32`` (OpenVINO would compute in bf16 on CPUs that have it,
which moves scores by ~1e-2: d2ov computes in f32 unless asked) and sets the ``PERFORMANCE_HINT``.
``base_path`` is where the container sees the folder (``/models/<name>``, with ``-v DIR:/models``).
Files are written under temporary names and renamed into place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..runtime.ir import read_metadata
from ..runtime.settings import IRMetadata
from ..store.cache import write_atomic

__all__ = ["model_name", "check_name", "config_entry", "write_repository", "readme", "MOUNT"]

#: where the container sees the repository (``docker run -v DIR:/models``)
MOUNT = "/models"
OVMS_IMAGE = "openvino/model_server:latest"


def model_name(metadata: IRMetadata) -> str:
    """A server-side name for an IR: the last part of its model name (``demo/mask_rcnn_shapes`` ->
    ``mask_rcnn_shapes``), characters other than letters, digits, ``_``, ``-``, ``.`` made ``_``."""
    base = str(metadata.model_name).replace("\\", "/").rstrip("/").split("/")[-1]
    base = re.sub(r"\.ya?ml$", "", base)
    return re.sub(r"[^A-Za-z0-9_.-]", "_", base) or "model"


def check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name or ""):
        raise InputError(f"a served model's name is letters, digits, '_', '-', '.', got {name!r}")
    return name


def config_entry(name: str, nireq: int = 2, hint: str = "LATENCY", device: str = "CPU") -> dict[str, Any]:
    """One ``model_config_list`` entry for model ``name`` (its IR in ``<MOUNT>/<name>/1``)."""
    if hint not in ("LATENCY", "THROUGHPUT"):
        raise InputError(f"unknown performance hint {hint!r}: expected LATENCY or THROUGHPUT")
    if int(nireq) < 1:
        raise InputError(f"nireq must be at least 1, got {nireq}")
    return {
        "config": {
            "name": name,
            "base_path": f"{MOUNT}/{name}",
            "target_device": device,
            "nireq": int(nireq),
            "shape": {"image": "(3,-1,-1)"},
            "plugin_config": {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": "f32"},
        }
    }


def readme(out_dir: Path, names: list[str], rest_port: int = 8000) -> str:
    """Markdown: the ``docker run`` command serving ``out_dir`` and how to query it."""
    first = names[0] if names else "<name>"
    return f"""# OpenVINO Model Server repository (written by `d2ov export --ovms`)

Models: {", ".join(f"`{n}`" for n in names)}. Start OpenVINO Model Server on it (REST on {rest_port}, gRPC on 9000):

```bash
docker run --rm -p {rest_port}:{rest_port} -p 9000:9000 -v "{out_dir.resolve()}:{MOUNT}:ro" {OVMS_IMAGE} \\
    --config_path {MOUNT}/config.json --rest_port {rest_port} --port 9000
```

Then (KServe v2 REST API):

```bash
# 200 once the models are loaded
curl -s localhost:{rest_port}/v2/health/ready
# the model's metadata; its rt_info.model_info is d2ov's metadata
curl -s localhost:{rest_port}/v2/models/{first}
# detect: decoding, pre- and postprocessing here, the graph in OVMS
d2ov predict --server http://localhost:{rest_port} --remote-model {first} IMAGE.jpg
# the web app with OVMS's models listed as remote/<name>
python app.py --server http://localhost:{rest_port}
```

Use an OVMS release built on OpenVINO at least as new as the IR's (`openvino_version` in
`rt_info`); the `rt_info` field of the KServe model metadata is in OVMS releases from late 2024 on
(openvinotoolkit/model_server PR #2736); without it `d2ov predict --server` says the model is not a
d2ov model. The IR keeps a dynamic `image` input `(3,-1,-1)`; `plugin_config` pins f32 compute.
"""


def write_repository(
    xml: str | os.PathLike,
    out_dir: str | os.PathLike,
    name: str | None = None,
    nireq: int = 2,
    hint: str = "LATENCY",
    rest_port: int = 8000,
) -> tuple[str, str]:
    """Put the IR ``xml`` into the OVMS repository ``out_dir`` as model ``name`` (version 1), add or
    replace its entry in ``config.json`` and write ``README.md``. Returns ``(name, README text)``."""
    xml = Path(xml)
    meta = read_metadata(xml)  # a d2ov IR (IRError otherwise)
    name = check_name(name or model_name(meta))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "config.json"
    config: dict[str, Any] = {"model_config_list": []}
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text())
            assert isinstance(config.get("model_config_list"), list)
        except (ValueError, AssertionError, AttributeError):
            raise InputError(
                f"{config_path} is not an OVMS config (no model_config_list): choose another folder"
            ) from None
    version = out / name / "1"
    tmp = out / name / f".1.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for suffix in (".xml", ".bin"):
        shutil.copy2(xml.with_suffix(suffix), tmp / f"model{suffix}")
    if version.exists():
        shutil.rmtree(version)
    os.replace(tmp, version)
    entries = [e for e in config["model_config_list"] if e.get("config", {}).get("name") != name]
    entries.append(config_entry(name, nireq=nireq, hint=hint))
    config["model_config_list"] = entries
    write_atomic(config_path, (json.dumps(config, indent=2) + "\n").encode())
    names = [e.get("config", {}).get("name", "?") for e in entries]
    text = readme(out, names, rest_port)
    write_atomic(out / "README.md", text.encode())
    return name, text
