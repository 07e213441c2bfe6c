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

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import ConversionError, IRError, first_line
from ..runtime import ir as runtime
from ..runtime import settings as S
from ..runtime.images import image_files, load_image
from ..runtime.preprocess import preprocess
from ..store import cache, catalog
from ..store.cache import sha256_file
from ..store.catalog import ModelSpec
from ..store.lookup import IR_NAME, cached_ir_dir, graph_revision
from ..store.weights import Progress
from .model import build, cfg_entries, load_cfg
from .patches import exportable
from .quantize import DEFAULT_RECIPE, Recipe, quantize_int8
from .random_init import RANDOM_INIT_REVISION
from .trace import traceable

__all__ = ["convert", "default_sample", "calibration_files"]

log = logging.getLogger("d2ov")


def default_sample(spec: ModelSpec) -> Path:
    """An image the model should detect something in, for tracing."""
    if spec.source == "demo":
        samples = catalog.sample_images(spec.task)
        if samples:
            return samples[0]
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def _versions() -> dict[str, str]:
    import detectron2
    import torch

    return {
        "d2ov": __version__,
        "detectron2": detectron2.__version__,
        "torch": torch.__version__.split("+")[0],
        "openvino": runtime.openvino_version(),
    }


def calibration_files(folder: str | os.PathLike, n: int) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise ConversionError(f"calibration folder not found: {folder}")
    files = image_files(root, recursive=True)
    if not files:
        raise ConversionError(f"calibration folder {folder} holds no images (.jpg, .png, ...)")
    return files[:n]


#: ``measure(xml, precision) -> (accuracy rows, acceptable)``: what a caller (d2ov_core.measure.accuracy)
#: gives :func:`convert` to measure each IR it writes; INT8 recipes are tried until one is acceptable
Measure = Callable[[Path, str], "tuple[dict[str, Any], bool]"]


def _cache_key(
    spec: ModelSpec,
    weights: str,
    weights_sha256: str,
    fp16: bool,
    calibration: list[str],
    recipes: Sequence[Recipe],
    measure: Measure | None,
) -> str:
    cfg = load_cfg(spec)
    payload = {
        "config": cfg.dump(),
        "classes": list(spec.classes),
        "weights": weights_sha256 or weights,
        "fp16": fp16,
        "calibration": calibration,
        "recipes": [dataclasses.asdict(r) for r in recipes] if calibration else [],
        "measure": getattr(measure, "key", None if measure is None else repr(measure)),
        "versions": _versions(),
        "random_init": RANDOM_INIT_REVISION if weights == "random" else None,
        "graph": graph_revision(cfg.MODEL.META_ARCHITECTURE),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def convert(
    model: str | ModelSpec,
    weights: str | None = None,
    out: str | os.PathLike | None = None,
    fp16: bool = True,
    sample: str | os.PathLike | None = None,
    progress: Progress = True,
    calibration: str | os.PathLike | None = None,
    calibration_size: int = 16,
    recipes: Sequence[Recipe] | None = None,
    measure: Measure | None = None,
) -> Path:
    """Convert ``model`` and return the path of the written ``model.xml``.

    Args:
        model: catalog name or :class:`ModelSpec` (see :func:`catalog.custom` for own models).
        weights: weights spec overriding the catalog's (path, URL or ``"random"``).
        out: folder to write ``model.xml/.bin`` into; default: the cache (reused when present).
        fp16: store weights as FP16 (half the size; compute stays FP32 on CPU).
        sample: image to trace on; default :func:`default_sample`.
        progress: ``True``: progress bars on stderr; a callable: one-line status messages (what a
            server shows while it prepares a model); ``False``: quiet.
        calibration: folder of images of the model's domain: quantize the IR to INT8 with NNCF
            (post-training, the first ``calibration_size`` images by name). ``fp16`` is then ignored.
        recipes: INT8 recipes to try in order (default: :data:`~d2ov_core.export.quantize.DEFAULT_RECIPE`).
        measure: measures each IR written (its accuracy goes into the IR's ``accuracy`` metadata and
            ``d2ov.json``); for INT8 the float model is measured first, then each recipe until
            ``measure`` accepts one; none accepted is a :class:`ConversionError` and nothing is written.
    """
    tell = progress if callable(progress) else (lambda message: None)

    spec = catalog.get(model) if isinstance(model, str) else model
    t0 = time.perf_counter()
    net, cfg, winfo = build(spec, weights, progress=progress)
    calib_files = calibration_files(calibration, calibration_size) if calibration else []
    recipes = list(recipes or [DEFAULT_RECIPE])
    precision = "INT8" if calib_files else ("FP16" if fp16 else "FP32")
    key = _cache_key(
        spec, winfo["source"], winfo["sha256"], fp16, [sha256_file(f) for f in calib_files], recipes, measure
    )
    final_dir = Path(out) if out else cached_ir_dir(spec.name) / key
    if cache.claim_ir(final_dir, reuse=out is None):  # cleans leftovers of killed runs, checks sha256
        log.info("using cached IR %s", final_dir / IR_NAME)
        return final_dir / IR_NAME

    entries = cfg_entries(cfg, spec)  # what the config sets: written as they are
    meta = S.IRMetadata(**entries)
    float_dir = cached_ir_dir(spec.name) / _cache_key(spec, winfo["source"], winfo["sha256"], False, [], [], None)
    if precision != "FP32" and sample is None and _intact(float_dir):
        # the same graph is in the cache as FP32: compress or quantize it instead of tracing again
        log.info("starting from the cached FP32 IR %s", float_dir / IR_NAME)
        tell("reading the cached FP32 graph")
        ov_model = runtime.core().read_model(str(float_dir / IR_NAME))
        names = list(runtime.read_metadata(float_dir / IR_NAME).outputs)
    else:
        ov_model, names = _trace_and_convert(net, spec, meta, Path(sample) if sample else default_sample(spec), tell)
    versions = _versions()
    metadata = dict(
        entries,
        d2ov_version=__version__,
        model_type="d2ov_rcnn",
        outputs=names,
        precision=precision,
        weights_source=winfo["source"],
        weights_sha256=winfo["sha256"],
        random_weights=winfo["random"],
        torch_version=versions["torch"],
        openvino_version=versions["openvino"],
        graph_revision=graph_revision(meta.meta_architecture),
    )
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.tmp-", dir=final_dir.parent))
    try:
        xml = stage / IR_NAME
        accuracy: dict[str, S.AccuracyRow] = {}
        if calib_files:
            if measure is not None:  # the float model's accuracy: what INT8 is held against
                save_ir(ov_model, stage / "float" / IR_NAME, dict(metadata, precision="FP32"), compress_to_fp16=False)
                tell("measuring the float model's accuracy")
                accuracy.update(measure(stage / "float" / IR_NAME, "FP32")[0])
                shutil.rmtree(stage / "float")
            log.info("quantizing to INT8 with NNCF on %d calibration images from %s", len(calib_files), calibration)
            samples = [preprocess(load_image(f), meta)[0] for f in calib_files]
            tried = []
            for recipe in recipes:
                tell(f"quantizing to INT8 on {len(calib_files)} calibration images ({recipe.name})")
                quantized = _quantize(ov_model, samples, recipe, names, spec, progress is True)
                save_ir(
                    quantized,
                    xml,
                    dict(
                        metadata,
                        calibration=f"{Path(calibration).name} ({len(calib_files)} images)",
                        quantization=recipe.describe(),
                    ),
                    compress_to_fp16=False,
                )
                if measure is None:
                    break
                tell(f"measuring the INT8 model's accuracy ({recipe.name})")
                rows, ok = measure(xml, "INT8")
                tried.append((recipe.name, rows))
                if ok:
                    accuracy.update(rows)
                    break
            else:
                found = "; ".join(f"{name}: {_ap_text(rows)}" for name, rows in tried)
                raise ConversionError(
                    f"no INT8 recipe keeps {spec.name}'s accuracy on the validation set "
                    f"(float: {_ap_text(accuracy)}; {found}); nothing written: keep the FP16 IR"
                )
        else:
            save_ir(ov_model, xml, metadata, compress_to_fp16=fp16)
            if measure is not None:
                tell("measuring accuracy")
                accuracy.update(measure(xml, precision)[0])
        if accuracy:
            runtime.write_metadata(xml, "accuracy", accuracy)
        final = runtime.read_metadata(xml).to_dict()
        card = {
            k: final[k]
            for k in (
                "model_name",
                "task",
                "labels",
                "precision",
                "calibration",
                "quantization",
                "weights_source",
                "weights_sha256",
                "random_weights",
                "accuracy",
            )
        }
        card.update(
            box_ap=spec.box_ap,
            mask_ap=spec.mask_ap,
            converted_s=round(time.perf_counter() - t0, 1),
            ir_sha256={p.name: sha256_file(p) for p in sorted(stage.glob("model.*"))},
        )
        (stage / "d2ov.json").write_text(json.dumps(card, indent=1))
        if final_dir.exists():
            shutil.rmtree(final_dir)
        os.replace(stage, final_dir)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    log.info("wrote %s in %.1f s", final_dir / IR_NAME, time.perf_counter() - t0)
    return final_dir / IR_NAME


def _intact(folder: Path) -> bool:
    """``folder`` holds a finished cached IR that matches its card (read only: nothing is cleaned)."""
    return (folder / IR_NAME).is_file() and cache.ir_problem(folder) is None


def _trace_and_convert(net, spec: ModelSpec, meta: S.IRMetadata, sample: Path, tell):
    """Trace ``net`` on ``sample`` (resized as at inference) and convert it; the result must run on
    the trace image and on another size. Returns ``(openvino.Model, output names)``."""
    import warnings

    import torch

    chw, _ = preprocess(load_image(sample), meta)
    torch.set_num_threads(runtime.usable_cpus())
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    log.info("tracing %s on %s (%dx%d)", spec.name, sample.name, chw.shape[2], chw.shape[1])
    tell("tracing the Detectron2 model")
    adapter, names, flat = traceable(net, chw)
    if int(flat[names.index("scores")].shape[0]) == 0:
        log.warning("the model detects nothing in the trace image %s: check the result on other images", sample)
    tell("converting to OpenVINO IR")
    try:
        with exportable():
            ov_model = convert_torch(adapter, (torch.as_tensor(chw),), names)
    except ConversionError:
        raise
    except Exception as e:
        raise ConversionError(f"openvino.convert_model failed for {spec.name}: {first_line(e)}") from None
    for probe in (chw, _other_size(chw)):
        try:
            outs = run_model(ov_model, probe)
        except RuntimeError as e:  # e.g. a shape frozen at the trace image's value
            raise ConversionError(
                f"converted {spec.name} fails on a {probe.shape[2]}x{probe.shape[1]} input: {_last_line(e)}"
            ) from None
        if len(outs) != len(names):
            raise ConversionError(f"converted {spec.name} returned {len(outs)} outputs, expected {len(names)}")
    return ov_model, names


def _quantize(ov_model, samples: list[np.ndarray], recipe: Recipe, names: list[str], spec: ModelSpec, progress: bool):
    quantized = quantize_int8(ov_model, samples, recipe, progress=progress)
    if len(run_model(quantized, samples[0])) != len(names):
        raise ConversionError(f"quantized {spec.name} does not return its {len(names)} outputs")
    return quantized


def _last_line(e: Exception) -> str:
    """OpenVINO's errors are a stack of "Exception from ..." lines; the last one says what failed."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(e).__name__


def _ap_text(rows: dict[str, S.AccuracyRow]) -> str:
    return "; ".join(f"{p} {S.ap_text(r)}" for p, r in rows.items()) or "not measured"


def _other_size(chw: np.ndarray) -> np.ndarray:
    _, h, w = chw.shape
    nh, nw = max(32, int(h * 0.75) | 1), max(32, int(w * 0.6) | 1)
    return np.ascontiguousarray(chw[:, :nh, :nw])


# ----------------------------------------------------------------------------- graph -> IR


def convert_torch(module, example_input, output_names: list[str]):
    """``openvino.convert_model`` on a traceable torch module; names the input ``image`` and the
    outputs ``output_names`` (in order)."""
    ov = runtime._ov()
    model = ov.convert_model(module, example_input=example_input)
    if len(model.outputs) != len(output_names):
        raise IRError(f"converted graph has {len(model.outputs)} outputs, expected {len(output_names)}")
    model.inputs[0].get_tensor().set_names({"image"})
    for out, name in zip(model.outputs, output_names):
        out.get_tensor().set_names({name})
    return model


def save_ir(model, xml_path: Path, metadata: dict[str, Any], compress_to_fp16: bool) -> None:
    """Write ``model`` with its metadata entries (``{setting key: value}``, checked as
    :class:`~d2ov_core.runtime.settings.IRMetadata` first) in ``rt_info`` to ``xml_path`` (+ ``.bin``).
    Not atomic by itself: the caller writes into a temporary folder and renames it."""
    S.IRMetadata(**metadata)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    for key, value in metadata.items():
        model.set_rt_info(S.encode(key, value), [S.RT_INFO_SECTION, key])
    runtime._ov().save_model(model, str(xml_path), compress_to_fp16=compress_to_fp16)


def run_model(model, image_chw: np.ndarray) -> list[np.ndarray]:
    """Compile an in-memory model on CPU and run it once (conversion-time checks)."""
    compiled = runtime.core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    res = compiled(np.ascontiguousarray(image_chw, dtype=np.float32))
    return [res[o] for o in compiled.outputs]
