"""Peer runtimes for ``d2ov bench``: what a user would deploy instead of d2ov, built from the same trace.

* ``torchscript``: Detectron2's ``TracingAdapter`` trace (:func:`d2ov_core.export.trace.traceable`, the
  graph d2ov converts) saved with ``torch.jit`` and run with it;
* ``ort-fp32``: the same ``TracingAdapter`` exported to ONNX (``torch.onnx.export``, TorchScript-based
  exporter, ``dynamo=False``: the dynamo exporter needs ``onnxscript``, which is not installed; opset
  :data:`ONNX_OPSET`, the newest that exporter writes) and run by onnxruntime's
  ``CPUExecutionProvider`` with ``ORT_ENABLE_ALL`` and ``intra_op_num_threads`` = the bench's threads;
* ``ort-int8``: that ONNX model after ``quant_pre_process``, quantized by
  ``onnxruntime.quantization.quantize_static`` (QDQ) with a recipe of :data:`ORT_RECIPES`, calibrated on
  the images d2ov's INT8 is calibrated on, preprocessed exactly as the model's input.

Pre- and postprocessing are Detectron2's, as its deployment docs describe: ``ResizeShortestEdge`` on
the input, then the flat outputs are put back into ``Instances`` by the adapter's ``outputs_schema``
(pickled beside the model) and ``detector_postprocess`` rescales boxes and pastes masks to the image.
Models of the other tasks are refused (``_TASKS``): their traced graphs end at raw keypoint heatmaps or
semantic logits that d2ov decodes in numpy, and Detectron2 has no postprocess for those raw outputs.

Imports torch and detectron2; ONNX ones also onnx and onnxruntime (``pip install 'd2ov[bench]'``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import shutil
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConversionError, InputError, first_line
from ..runtime import settings as S
from ..runtime.detections import Detections
from ..runtime.images import load_image
from ..runtime.ir import usable_cpus
from ..runtime.preprocess import preprocess
from ..store import cache, catalog
from ..store.catalog import ModelSpec
from ..store.lookup import folder_name
from .convert import default_sample
from .model import build, cfg_metadata, load_cfg
from .patches import exportable
from .reference import detections_of
from .tasks import export_task
from .trace import traceable

__all__ = ["PEERS", "ONNX_OPSET", "OrtRecipe", "ORT_RECIPES", "DEFAULT_ORT_RECIPE", "prepare", "PeerPredictor"]

PEERS = {
    "torchscript": "Detectron2 TracingAdapter trace run by torch.jit (PyTorch), Detectron2 postprocess",
    "ort-fp32": "the same trace exported to ONNX, onnxruntime CPUExecutionProvider, ORT_ENABLE_ALL",
    "ort-int8": "that ONNX model quantized by onnxruntime quantize_static (QDQ), same provider",
}
#: the newest opset torch's TorchScript-based ONNX exporter writes (onnxruntime 1.31 reads up to 23+)
ONNX_OPSET = 20
_FILE = {"torchscript": "model.ts", "ort-fp32": "model.onnx", "ort-int8": "model_int8.onnx"}
_TASKS = ("detection", "instance_segmentation")


@dataclasses.dataclass(frozen=True)
class OrtRecipe:
    """How onnxruntime quantizes: per-channel weights or not, the activation calibration method
    (``MinMax``, ``Entropy``, ``Percentile``), which op types are quantized (empty: every op onnxruntime
    can) and node-name prefixes kept in float."""

    name: str
    per_channel: bool = True
    method: str = "MinMax"
    op_types: tuple[str, ...] = ("Conv", "Gemm", "MatMul")
    exclude_prefixes: tuple[str, ...] = ()

    def describe(self) -> str:
        ops = ", ".join(self.op_types) or "every quantizable op"
        kept = ", ".join(self.exclude_prefixes) or "nothing else"
        return (
            f"{self.name}: QDQ, {'per-channel' if self.per_channel else 'per-tensor'} int8 weights, uint8 "
            f"activations calibrated by {self.method}; quantized: {ops}; kept in float: {kept}"
        )


#: the recipes tried on demo/faster_rcnn_shapes: calibrated on 64 images of its generator's train split (as
#: its bundled INT8 IR), box AP on the first 60 images of its val split (ort-fp32: 60.28). Entropy and
#: Percentile calibration fail in onnxruntime 1.31 on inputs of different sizes ("setting an array
#: element with a sequence ... inhomogeneous shape"): the histogram collector stacks the activations.
ORT_RECIPES: dict[str, OrtRecipe] = {
    r.name: r
    for r in [
        OrtRecipe("ort-pt-minmax-conv", per_channel=False),  # 60.07: the most AP, the default
        OrtRecipe("ort-pc-minmax-conv-no-heads", exclude_prefixes=("/roi_heads/box_predictor",)),  # 60.06
        OrtRecipe("ort-pc-minmax-conv"),  # 60.02
        OrtRecipe("ort-default", per_channel=False, op_types=()),  # onnxruntime's defaults: 52.25
        OrtRecipe("ort-pc-minmax-all", op_types=()),  # 52.11: quantizing the box arithmetic moves boxes
        OrtRecipe("ort-pc-entropy-conv", method="Entropy"),  # fails (see above)
        OrtRecipe("ort-pc-percentile-conv", method="Percentile"),  # fails (see above)
    ]
}
DEFAULT_ORT_RECIPE = ORT_RECIPES["ort-pt-minmax-conv"]


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise InputError(f"the {module} peer needs {module}: pip install 'd2ov[bench]'") from None


def _key(
    spec: ModelSpec, weights: str | None, sample: Path, calibration: Sequence[Path], recipe: OrtRecipe | None
) -> str:
    import torch

    _, cfg, info = build(spec, weights, progress=False)
    payload = {
        "config": cfg.dump(),
        "weights": info["sha256"] or info["source"],
        "sample": cache.sha256_file(sample),
        "calibration": [cache.sha256_file(f) for f in calibration],
        "recipe": dataclasses.asdict(recipe) if recipe else None,
        "torch": torch.__version__,
        "opset": ONNX_OPSET,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def prepare(
    kind: str,
    model: str | ModelSpec,
    weights: str | None = None,
    sample: str | os.PathLike | None = None,
    calibration: Sequence[str | os.PathLike] = (),
    recipe: OrtRecipe = DEFAULT_ORT_RECIPE,
) -> Path:
    """Build (or reuse from the cache) the model file of peer ``kind``; returns its path. Beside it:
    ``schema.pkl`` (the adapter's ``outputs_schema``) and, for ``ort-int8``, ``peer.json`` (its recipe).
    ``calibration``: image files (``ort-int8`` only). Raises :class:`ConversionError` with one line
    when the model cannot be made."""
    if kind not in PEERS:
        raise InputError(f"unknown peer {kind!r}; choose from {', '.join(PEERS)}")
    spec = catalog.get(model) if isinstance(model, str) else model
    net, cfg, _ = build(spec, weights, progress=False)
    meta = cfg_metadata(cfg, spec)
    if meta.task not in _TASKS:
        raise ConversionError(
            f"{kind} peer: {meta.task} models are not supported (the traced graph ends at raw "
            "heatmaps/logits that Detectron2 has no postprocess for)"
        )
    if kind == "ort-int8" and not calibration:
        raise InputError("the ort-int8 peer needs calibration images (d2ov bench --calibration DIR)")
    sample = Path(sample) if sample else default_sample(spec)
    calib = [Path(c) for c in calibration] if kind == "ort-int8" else []
    key = _key(spec, weights, sample, calib, recipe if kind == "ort-int8" else None)
    folder = cache.cache_dir() / "peers" / folder_name(spec.name) / key
    target = folder / _FILE[kind]
    if target.is_file() and (folder / "schema.pkl").is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    chw, _ = preprocess(load_image(sample), meta)
    if kind == "torchscript":
        _trace_torchscript(net, chw, folder)
    elif kind == "ort-fp32":
        _export_onnx(net, chw, target, folder)
    else:  # the ort-fp32 peer's model (exported once), quantized
        fp32 = prepare("ort-fp32", spec, weights, sample)
        shutil.copyfile(fp32.parent / "schema.pkl", folder / "schema.pkl")
        samples = [preprocess(load_image(f), meta)[0] for f in calib]
        _quantize_onnx(fp32, target, samples, recipe)
    return target


def _adapter(net, chw: np.ndarray, folder: Path):
    adapter, names, _ = traceable(net, chw)
    (folder / "schema.pkl").write_bytes(pickle.dumps(adapter.outputs_schema))
    return adapter, names


def _trace_torchscript(net, chw: np.ndarray, folder: Path) -> None:
    import torch

    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    try:
        with exportable(), torch.no_grad():
            adapter, _ = _adapter(net, chw, folder)
            traced = torch.jit.trace(adapter, (torch.as_tensor(chw),), check_trace=False)
    except Exception as e:
        raise ConversionError(f"torch.jit.trace failed: {first_line(e)}") from None
    finally:
        net.eval()
    tmp = folder / "model.ts.tmp"
    traced.save(str(tmp))
    os.replace(tmp, folder / _FILE["torchscript"])


def _export_onnx(net, chw: np.ndarray, out: Path, folder: Path) -> None:
    import torch

    _require("onnx")
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    tmp = out.with_suffix(".tmp")
    try:
        with exportable(), torch.no_grad():
            adapter, names = _adapter(net, chw, folder)
            torch.onnx.export(
                adapter,
                (torch.as_tensor(chw),),
                str(tmp),
                opset_version=ONNX_OPSET,
                dynamo=False,
                input_names=["image"],
                output_names=names,
                dynamic_axes={"image": {1: "height", 2: "width"}},
            )
    except Exception as e:
        raise ConversionError(f"torch.onnx.export failed: {first_line(e)}") from None
    finally:
        net.eval()  # the exporter restores the adapter's (training) mode, which recurses into the model
    os.replace(tmp, out)


def _quantize_onnx(fp32: Path, out: Path, samples: list[np.ndarray], recipe: OrtRecipe) -> None:
    _require("onnxruntime")
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(samples)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {"image": np.ascontiguousarray(x, dtype=np.float32)}

    pre = out.with_name("model_pre.onnx")
    cwd = os.getcwd()
    try:
        os.chdir(out.parent)  # onnxruntime writes scratch files (shape inference, external data) into the cwd
        if not pre.is_file():
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)  # data-dependent shapes
        nodes = [n.name for n in onnx.load(str(pre), load_external_data=False).graph.node]
        exclude = [n for n in nodes if recipe.exclude_prefixes and n.startswith(recipe.exclude_prefixes)]
        tmp = out.with_suffix(".tmp")
        quantize_static(
            str(pre),
            str(tmp),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=recipe.per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, recipe.method),
            op_types_to_quantize=list(recipe.op_types) or None,
            nodes_to_exclude=exclude,
        )
    except Exception as e:
        raise ConversionError(f"onnxruntime quantize_static failed: {first_line(e)}") from None
    finally:
        os.chdir(cwd)
    os.replace(tmp, out)
    (out.parent / "peer.json").write_text(json.dumps({"recipe": recipe.describe(), "calibration": len(samples)}))


class PeerPredictor:
    """Runs a peer's model file with Detectron2's own pre- and postprocessing; ``predict`` has the
    contract of the other predictors (RGB in, :class:`Detections` with ``timings`` out)."""

    def __init__(self, kind: str, model: str | ModelSpec, path: str | os.PathLike, threads: int | None = None):
        import torch
        from detectron2.data import transforms as T

        threads = threads or usable_cpus()
        torch.set_num_threads(threads)
        self.kind = kind
        self.spec = catalog.get(model) if isinstance(model, str) else model
        cfg = load_cfg(self.spec)
        self.labels = list(self.spec.classes)
        self.task = export_task(cfg).name
        self._bgr = cfg.INPUT.FORMAT == "BGR"
        self._aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        path = Path(path)
        self._schema = pickle.loads((path.parent / "schema.pkl").read_bytes())
        if kind == "torchscript":
            self._ts = torch.jit.load(str(path)).eval()
        else:
            ort = _require("onnxruntime")
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def _run(self, chw: np.ndarray) -> list:
        import torch

        if self.kind == "torchscript":
            with torch.no_grad():
                return list(self._ts(torch.as_tensor(chw)))
        return [torch.from_numpy(o) for o in self._sess.run(None, {"image": chw})]

    def predict(self, image: Any, threshold: float | None = None) -> Detections:
        from detectron2.modeling.postprocessing import detector_postprocess

        thr = S.SETTINGS["confidence_threshold"].default if threshold is None else threshold
        t1 = time.perf_counter()
        rgb = load_image(image)
        img = rgb[:, :, ::-1] if self._bgr else rgb
        h, w = img.shape[:2]
        resized = self._aug.get_transform(img).apply_image(img)
        chw = np.ascontiguousarray(resized.transpose(2, 0, 1), dtype=np.float32)
        t2 = time.perf_counter()
        flat = self._run(chw)
        t3 = time.perf_counter()
        inst = self._schema(flat)[0]["instances"]
        inst = detector_postprocess(inst, h, w)
        inst = inst[inst.scores >= thr]
        det = detections_of(inst, self.labels, (h, w))
        t4 = time.perf_counter()
        det.timings = {
            "preprocess": (t2 - t1) * 1e3,
            "inference": (t3 - t2) * 1e3,
            "postprocess": (t4 - t3) * 1e3,
            "total": (t4 - t1) * 1e3,
        }
        return det
