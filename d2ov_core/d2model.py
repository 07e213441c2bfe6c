"""The Detectron2 side: config, model and traceable wrapper. Imports torch and detectron2.

Used by :mod:`d2ov_core.convert` (tracing) and :mod:`d2ov_core.reference` (the PyTorch reference
predictor), so both build the exact same model from the same (spec, weights).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from . import compat
from .catalog import ModelSpec
from .errors import ConversionError, ModelNotFoundError
from . import weights as W

__all__ = ["load_cfg", "build", "traceable", "cfg_metadata", "OUTPUT_NAMES"]

log = logging.getLogger("d2ov")
compat.apply()

#: Instances field -> IR output name
OUTPUT_NAMES = {"pred_boxes": "boxes", "scores": "scores", "pred_classes": "classes", "pred_masks": "masks"}


def _quiet() -> None:
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch")
    warnings.filterwarnings("ignore", category=UserWarning, module="detectron2")
    warnings.filterwarnings("ignore", message=".*pkg_resources.*")
    logging.getLogger("fvcore").setLevel(logging.WARNING)
    logging.getLogger("detectron2").setLevel(logging.WARNING)


def load_cfg(spec: ModelSpec):
    """Detectron2 ``CfgNode`` for ``spec``, on CPU, without weights."""
    compat.apply()
    _quiet()
    from detectron2.config import get_cfg

    cfg = get_cfg()
    if spec.config_is_model_zoo:
        from detectron2 import model_zoo

        try:
            path = model_zoo.get_config_file(spec.config)
        except RuntimeError as e:
            raise ModelNotFoundError(f"model-zoo config {spec.config} is not installed with detectron2 ({e})") from None
    else:
        path = spec.config
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


def build(spec: ModelSpec, weights: str | None = None, progress: bool = True):
    """Build the eval-mode model for ``spec`` and load its weights.

    Args:
        weights: a weights spec (path, URL or ``"random"``); default: the catalog's weights.
    Returns:
        ``(model, cfg, weights_info)`` where ``weights_info = {"source", "sha256", "random"}``.
    """
    import torch
    from detectron2.modeling import build_model

    cfg = load_cfg(spec)
    source = weights or spec.weights
    path, digest = W.resolve(source, progress=progress)
    if spec.weights_sha256 and source == spec.weights and digest != spec.weights_sha256:
        raise ConversionError(
            f"{path}: sha256 {digest[:12]}... does not match the catalog's {spec.weights_sha256[:12]}..."
        )
    torch.manual_seed(0)  # random weights are reproducible
    model = build_model(cfg).eval()
    if path != W.RANDOM:
        W.load_into(model, path)
    info = {"source": source, "sha256": digest, "random": path == W.RANDOM}
    return model, cfg, info


def traceable(model, image_chw):
    """A ``TracingAdapter`` over ``model`` whose flat outputs are the raw (not postprocessed)
    ``Instances`` fields in the resized-input frame; returns ``(adapter, output_names)``."""
    import torch
    from detectron2.export.flatten import TracingAdapter
    from detectron2.modeling import GeneralizedRCNN
    from detectron2.modeling.meta_arch.retinanet import RetinaNet

    if isinstance(model, GeneralizedRCNN):
        def inference(m, inputs):
            return [{"instances": m.inference(inputs, do_postprocess=False)[0]}]
    elif isinstance(model, RetinaNet):
        def inference(m, inputs):
            images = m.preprocess_image(inputs)
            features = m.backbone(images.tensor)
            features = [features[f] for f in m.head_in_features]
            return [{"instances": m.forward_inference(images, features, m.head(features))[0]}]
    else:
        raise ConversionError(f"unsupported meta architecture {type(model).__name__}: expected GeneralizedRCNN or RetinaNet")

    image = torch.as_tensor(image_chw)
    adapter = TracingAdapter(model, [{"image": image}], inference)
    with torch.no_grad():
        flat = adapter(image)
    names = _output_names(adapter.outputs_schema)
    if len(names) != len(flat):
        raise ConversionError(f"cannot name traced outputs: schema gives {names}, the graph has {len(flat)} outputs")
    return adapter, names, flat


def _output_names(schema) -> list[str]:
    """Flat output names from TracingAdapter's schema: an ``InstancesSchema`` flattens its fields in
    sorted key order (each field ``sizes[i]`` tensors), then the image size."""
    from detectron2.export.flatten import InstancesSchema

    def find(s):
        if isinstance(s, InstancesSchema):
            return s
        for child in getattr(s, "schemas", []) or []:
            found = find(child)
            if found is not None:
                return found
        return None

    inst = find(schema)
    if inst is None:
        raise ConversionError("traced outputs hold no Instances")
    names: list[str] = []
    for key, size in zip(inst.keys, inst.sizes):
        base = OUTPUT_NAMES.get(key, key)
        names += [base] if size == 1 else [f"{base}_{i}" for i in range(size)]
    return names + ["image_size"]


def cfg_metadata(cfg, spec: ModelSpec) -> dict[str, Any]:
    """The IR metadata that comes from the Detectron2 config."""
    import detectron2

    arch = cfg.MODEL.META_ARCHITECTURE
    if arch == "RetinaNet":
        thresh, nms, dets = cfg.MODEL.RETINANET.SCORE_THRESH_TEST, cfg.MODEL.RETINANET.NMS_THRESH_TEST, cfg.TEST.DETECTIONS_PER_IMAGE
    else:
        thresh, nms, dets = cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST, cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST, cfg.TEST.DETECTIONS_PER_IMAGE
    return {
        "model_name": spec.name,
        "task": "instance_segmentation" if cfg.MODEL.MASK_ON else "detection",
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
        "detectron2_version": detectron2.__version__,
    }
