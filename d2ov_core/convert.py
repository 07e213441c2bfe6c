"""Detectron2 model -> self-describing OpenVINO IR (``model.xml`` + ``model.bin``).

Recipe: build the model (catalog entry or config file, with its weights), trace
``model.inference(..., do_postprocess=False)`` through Detectron2's ``TracingAdapter`` on a real
image resized as at inference time, ``openvino.convert_model`` the traced module, check the IR runs
on the trace image and on a second size, write it with all runtime metadata in ``rt_info``.

Thresholds frozen into the graph: the config's test score threshold (0.05), NMS IoU (0.5) and
detections per image (100). Everything else (score threshold, masks) is postprocessing in numpy.

Conversions are cached under ``$D2OV_CACHE/ir/<model>/<key>/`` where ``key`` hashes the full config,
the weights sha256, the options and the versions; they are written into a temporary folder and
renamed into place, so the cache never holds a half-written IR.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, cache, catalog, runtime
from .catalog import ModelSpec
from .errors import ConversionError, first_line
from .images import load_image
from .preprocess import preprocess
from .weights import cache_dir, sha256_file

__all__ = ["convert", "ensure_ir", "default_sample", "cached_ir_dir", "bundled_ir", "IR_NAME"]

log = logging.getLogger("d2ov")
IR_NAME = "model.xml"


def default_sample(spec: ModelSpec) -> Path:
    """An image the model should detect something in, for tracing."""
    if spec.source == "demo":
        samples = sorted((catalog.DEMO_DIR / "samples").glob("*.jpg"))
        if samples:
            return samples[0]
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "__", name).strip("_.") or "model"


def _versions() -> dict[str, str]:
    import detectron2
    import torch

    return {"d2ov": __version__, "detectron2": detectron2.__version__, "torch": torch.__version__.split("+")[0],
            "openvino": runtime.openvino_version()}


def _calibration_files(folder: str | os.PathLike, n: int) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise ConversionError(f"calibration folder not found: {folder}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp"))
    if not files:
        raise ConversionError(f"calibration folder {folder} holds no images (.jpg, .png, ...)")
    return files[:n]


#: Bumped when the IR changes for the same inputs (2: exact padding, d2model.exportable_padding)
GRAPH_REVISION = 5  # 3: INT8 keeps the mask head in floating point; 4: stable proposal ranking; 5: its fast form


def _cache_key(spec: ModelSpec, weights: str, weights_sha256: str, fp16: bool, calibration: list[str] | None = None) -> str:
    from .d2model import RANDOM_INIT_REVISION, load_cfg

    payload = {
        "config": load_cfg(spec).dump(),
        "classes": list(spec.classes),
        "weights": weights_sha256 or weights,
        "fp16": fp16,
        "calibration": calibration or [],
        "versions": _versions(),
        "random_init": RANDOM_INIT_REVISION if weights == "random" else None,
        "graph": GRAPH_REVISION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


BUNDLED_IR_DIR = catalog.REPO_ROOT / "models" / "ir"


def bundled_ir(name: str, precision: str = "FP16") -> Path:
    """Where a pre-converted IR shipped with d2ov lives: ``models/ir/<name with __>/<precision>/model.xml``."""
    return BUNDLED_IR_DIR / name.replace("/", "__") / precision / IR_NAME


def cached_ir_dir(name: str) -> Path:
    return cache_dir() / "ir" / _safe(name)


def convert(
    model: str | ModelSpec,
    weights: str | None = None,
    out: str | os.PathLike | None = None,
    fp16: bool = True,
    sample: str | os.PathLike | None = None,
    progress: bool = True,
    calibration: str | os.PathLike | None = None,
    calibration_size: int = 16,
) -> Path:
    """Convert ``model`` and return the path of the written ``model.xml``.

    Args:
        model: catalog name or :class:`ModelSpec` (see :func:`catalog.custom` for own models).
        weights: weights spec overriding the catalog's (path, URL or ``"random"``).
        out: folder to write ``model.xml/.bin`` into; default: the cache (reused when present).
        fp16: store weights as FP16 (half the size; compute stays FP32 on CPU).
        sample: image to trace on; default :func:`default_sample`.
        calibration: folder of images of the model's domain: quantize the IR to INT8 with NNCF
            (post-training, ``calibration_size`` images, sorted by name). ``fp16`` is then ignored.
    """
    import torch

    from . import d2model

    spec = catalog.get(model) if isinstance(model, str) else model
    t0 = time.perf_counter()
    net, cfg, winfo = d2model.build(spec, weights, progress=progress)
    calib_files = _calibration_files(calibration, calibration_size) if calibration else []
    precision = "INT8" if calib_files else ("FP16" if fp16 else "FP32")
    key = _cache_key(spec, winfo["source"], winfo["sha256"], fp16, [sha256_file(f) for f in calib_files])
    final_dir = Path(out) if out else cached_ir_dir(spec.name) / key
    if cache.claim_ir(final_dir, reuse=out is None):  # cleans leftovers of killed runs, checks sha256
        log.info("using cached IR %s", final_dir / IR_NAME)
        return final_dir / IR_NAME

    meta = d2model.cfg_metadata(cfg, spec)
    sample_path = Path(sample) if sample else default_sample(spec)
    chw, _ = preprocess(load_image(sample_path), meta)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    import warnings

    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    log.info("tracing %s on %s (%dx%d)", spec.name, sample_path.name, chw.shape[2], chw.shape[1])
    adapter, names, flat = d2model.traceable(net, chw)
    n_traced = int(flat[names.index("scores")].shape[0])
    if n_traced == 0:
        log.warning("the model detects nothing in the trace image %s: check the result on other images", sample_path)
    try:
        with d2model.exportable_padding():
            ov_model = runtime.convert_torch(adapter, (torch.as_tensor(chw),), names)
    except ConversionError:
        raise
    except Exception as e:
        first = first_line(e)
        raise ConversionError(f"openvino.convert_model failed for {spec.name}: {first}") from None

    # the IR must run on the trace image and on another size
    for probe in (chw, _other_size(chw)):
        outs = runtime.run_model(ov_model, probe)
        if len(outs) != len(names):
            raise ConversionError(f"converted {spec.name} returned {len(outs)} outputs, expected {len(names)}")

    if calib_files:
        log.info("quantizing to INT8 with NNCF on %d calibration images from %s", len(calib_files), calibration)
        samples = [preprocess(load_image(f), meta)[0] for f in calib_files]
        ov_model = runtime.quantize_int8(ov_model, samples, progress=progress)
        outs = runtime.run_model(ov_model, chw)
        if len(outs) != len(names):
            raise ConversionError(f"quantized {spec.name} returned {len(outs)} outputs, expected {len(names)}")

    metadata: dict[str, Any] = dict(meta)
    versions = _versions()
    metadata.update(
        d2ov_version=__version__,
        model_type="d2ov_rcnn",
        outputs=names,
        precision=precision,
        calibration=f"{Path(calibration).name} ({len(calib_files)} images)" if calib_files else "",
        weights_source=winfo["source"],
        weights_sha256=winfo["sha256"],
        random_weights=winfo["random"],
        torch_version=versions["torch"],
        openvino_version=versions["openvino"],
        graph_revision=GRAPH_REVISION,
    )
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.tmp-", dir=final_dir.parent))
    try:
        runtime.save_ir(ov_model, tmp_dir / IR_NAME, metadata, compress_to_fp16=fp16 and not calib_files)
        card = {k: metadata[k] for k in ("model_name", "task", "labels", "precision", "calibration", "weights_source",
                                         "weights_sha256", "random_weights")}
        card.update(box_ap=spec.box_ap, mask_ap=spec.mask_ap, converted_s=round(time.perf_counter() - t0, 1),
                    ir_sha256={p.name: sha256_file(p) for p in sorted(tmp_dir.glob("model.*"))})
        (tmp_dir / "d2ov.json").write_text(json.dumps(card, indent=1))
        if final_dir.exists():
            shutil.rmtree(final_dir)
        os.replace(tmp_dir, final_dir)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
    log.info("wrote %s in %.1f s", final_dir / IR_NAME, time.perf_counter() - t0)
    return final_dir / IR_NAME


def _other_size(chw: np.ndarray) -> np.ndarray:
    _, h, w = chw.shape
    nh, nw = max(32, int(h * 0.75) | 1), max(32, int(w * 0.6) | 1)
    return np.ascontiguousarray(chw[:, :nh, :nw])


def ensure_ir(model: str, weights: str | None = None, fp16: bool = True, progress: bool = True,
              precision: str | None = None) -> Path:
    """Path of an IR for ``model``: an existing IR path, the bundled or newest cached conversion of
    that precision (made by this converter revision from the catalog's weights), or a new one
    (FP16/FP32 only: an INT8 IR needs calibration images).

    ``model`` may be a path to an ``.xml`` (or a folder holding ``model.xml``) or a catalog name;
    ``precision`` (``FP16``/``FP32``/``INT8``) overrides ``fp16``.
    """
    p = Path(model)
    if p.suffix == ".xml":
        return cache.check_given_ir(p)
    if p.is_dir() and (p / IR_NAME).is_file():
        return cache.check_given_ir(p / IR_NAME)
    spec = catalog.get(model)
    precision = (precision or ("FP16" if fp16 else "FP32")).upper()
    if weights is None:
        shipped = bundled_ir(spec.name, precision)
        if shipped.is_file():
            return shipped
        cached = cache.cached_irs(cached_ir_dir(spec.name))  # verified, newest first; never a leftover
        for xml in cached:
            meta = runtime.read_metadata(xml)
            if (not meta["random_weights"] and meta["precision"] == precision
                    and meta["graph_revision"] == GRAPH_REVISION  # not made by an older converter
                    and (not spec.weights_sha256 or meta["weights_sha256"] == spec.weights_sha256)):
                return xml
    if precision == "INT8":
        raise ConversionError(f"no INT8 IR of {spec.name} yet: make one with `d2ov convert {spec.name} "
                              "--precision INT8 --calibration DIR` (DIR: images of the model's domain)")
    return convert(spec, weights=weights, fp16=precision == "FP16", progress=progress)
