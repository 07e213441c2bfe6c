"""Detectron2 config and model: what both the converter and the PyTorch reference build from a
catalog entry (or a user's config) and its weights, so they are the same model.

Imports torch and detectron2 (with :mod:`d2ov_core.export.compat` applied first).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from ..errors import ConversionError, ModelNotFoundError
from ..runtime import settings as S
from ..store import weights as W
from ..store.cache import sha256_file
from ..store.catalog import ModelSpec
from . import compat
from .checkpoint import load_into
from .patches import use_stable_proposal_ranking
from .random_init import calibrate_random_weights
from .tasks import export_task

__all__ = ["load_cfg", "config_path", "build", "cfg_metadata", "cfg_entries"]

log = logging.getLogger("d2ov")
compat.apply()


def _quiet() -> None:
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch")
    warnings.filterwarnings("ignore", category=UserWarning, module="detectron2")
    warnings.filterwarnings("ignore", message=".*pkg_resources.*")
    logging.getLogger("fvcore").setLevel(logging.WARNING)
    logging.getLogger("detectron2").setLevel(logging.WARNING)


def load_cfg(spec: ModelSpec):
    """Detectron2 ``CfgNode`` for ``spec``, on CPU, without weights."""
    compat.require_torch_side(f"reading the Detectron2 config of {spec.name}")
    compat.apply()
    if spec.source == "demo" and not Path(spec.config).is_file():
        raise ModelNotFoundError(
            f"{spec.name}: its Detectron2 config and weights are training artefacts of the d2ov "
            "repository (models/demo/), not part of the installed package; its bundled IR runs "
            "without them"
        )
    _quiet()
    from detectron2.config import get_cfg

    cfg = get_cfg()
    path = config_path(spec)
    try:
        cfg.merge_from_file(path)
    except Exception as e:
        raise ConversionError(f"cannot read Detectron2 config {path}: {e}") from None
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    if spec.source == "custom" and cfg.MODEL.ROI_HEADS.NUM_CLASSES != len(spec.classes) and len(spec.classes):
        raise ConversionError(
            f"{spec.config}: MODEL.ROI_HEADS.NUM_CLASSES is {cfg.MODEL.ROI_HEADS.NUM_CLASSES} but "
            f"{len(spec.classes)} class names were given"
        )
    return cfg


def config_path(spec: ModelSpec) -> str:
    """The Detectron2 config file of ``spec`` (a model-zoo config is looked up in detectron2's package)."""
    if not spec.config_is_model_zoo:
        return spec.config
    from detectron2 import model_zoo

    try:
        return model_zoo.get_config_file(spec.config)
    except RuntimeError as e:
        raise ModelNotFoundError(f"model-zoo config {spec.config} is not installed with detectron2 ({e})") from None


def build(spec: ModelSpec, weights: str | None = None, progress: W.Progress = True):
    """Build the eval-mode model for ``spec`` and load its weights.

    Args:
        weights: a weights spec (path, URL or ``"random"``); default: the catalog's weights.
    Returns:
        ``(model, cfg, weights_info)`` where ``weights_info = {"source", "sha256", "random"}``. The
        last model built is kept and returned again for the same inputs: do not modify it (copy it).
    """
    compat.require_torch_side(f"building {spec.name} in PyTorch")
    import torch
    from detectron2.modeling import build_model

    use_stable_proposal_ranking()
    cfg = load_cfg(spec)
    source = weights or spec.weights
    path, digest = W.resolve(source, progress=progress)
    if spec.weights_sha256 and source == spec.weights and digest != spec.weights_sha256:
        raise ConversionError(
            f"{path}: sha256 {digest[:12]}... does not match the catalog's {spec.weights_sha256[:12]}..."
        )
    key = (spec, cfg.dump(), source, digest)
    if _last_build and _last_build[0] == key:  # verify: the converter, the reference and the stage check
        return _last_build[1]
    torch.manual_seed(0)  # random weights are reproducible
    model = build_model(cfg).eval()
    if path != W.RANDOM:
        load_into(model, path)
    else:
        calibrate_random_weights(model, cfg)
    info = {"source": source, "sha256": digest, "random": path == W.RANDOM}
    _last_build[:] = [key, (model, cfg, info)]
    return model, cfg, info


#: the last model :func:`build` built, ``[key, (model, cfg, info)]``: a process that converts a model and
#: then runs it in PyTorch (``d2ov verify``) builds it once (random weights: one calibration, not two)
_last_build: list = []


def cfg_metadata(cfg, spec: ModelSpec) -> S.IRMetadata:
    """The IR metadata that comes from the Detectron2 config (what is known before tracing: no
    outputs, weights or versions yet; the other settings at their defaults)."""
    return S.IRMetadata(**cfg_entries(cfg, spec))


def cfg_entries(cfg, spec: ModelSpec) -> dict[str, Any]:
    """The settings the Detectron2 config gives, by key: the ``rt_info`` entries
    :func:`d2ov_core.export.convert.convert` writes for it (with outputs, weights and versions)."""
    import detectron2

    arch = cfg.MODEL.META_ARCHITECTURE
    task = export_task(cfg)
    if arch == "RetinaNet":
        thresh, nms, dets = (
            cfg.MODEL.RETINANET.SCORE_THRESH_TEST,
            cfg.MODEL.RETINANET.NMS_THRESH_TEST,
            cfg.TEST.DETECTIONS_PER_IMAGE,
        )
    else:
        thresh, nms, dets = (
            cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
            cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
            cfg.TEST.DETECTIONS_PER_IMAGE,
        )
    return {
        "model_name": spec.name,
        "task": task.name,
        **task.metadata(cfg, spec),
        "meta_architecture": arch,
        "labels": list(spec.classes),
        "input_format": cfg.INPUT.FORMAT,
        "pixel_mean": [float(v) for v in cfg.MODEL.PIXEL_MEAN],
        "min_size": int(cfg.INPUT.MIN_SIZE_TEST),
        "max_size": int(cfg.INPUT.MAX_SIZE_TEST),
        "size_divisibility": 32,
        "graph_score_threshold": float(thresh),
        "iou_threshold": float(nms),
        "max_detections": int(dets),
        "source_config": spec.config if spec.config_is_model_zoo else spec.config.rsplit("/", 1)[-1],
        "config_sha256": sha256_file(config_path(spec)),
        "detectron2_version": detectron2.__version__,
    }
