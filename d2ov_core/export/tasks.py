"""The export side of the task seam (:mod:`d2ov_core.runtime.tasks` is the runtime side): which task
a Detectron2 config is, the IR metadata that task needs from the config, and what the eager model's
output adds to its :class:`~d2ov_core.runtime.detections.Detections` (the PyTorch reference).

Tracing differs by meta architecture, not by task (:mod:`d2ov_core.export.trace`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ConversionError
from ..runtime import settings as S
from ..runtime.panoptic import describe_segments
from ..runtime.tasks import get_task
from ..store.catalog import ModelSpec

__all__ = ["ExportTask", "EXPORT_TASKS", "export_task", "for_task"]


def _nothing(*_args) -> dict[str, Any]:
    return {}


@dataclasses.dataclass(frozen=True)
class ExportTask:
    """Attributes:
    name: the task (:func:`~d2ov_core.runtime.tasks.get_task`).
    is_config: ``cfg -> bool``: whether a Detectron2 config is a model of this task.
    metadata: ``(cfg, spec) -> dict``: the task's IR metadata (beside the common keys).
    eager_fields: ``(output, labels, metadata) -> dict``: what the eager model's output for one
        image (``model([...])[0]``) adds to its Detections beyond its instances.
    inference: ``model -> forward or None``: the forward traced for a built model of this task,
        ``forward(model, inputs) -> [{"instances": ..., <more outputs>}]`` (:mod:`~d2ov_core.export.trace`),
        when its meta architecture needs its own; ``None``: the architecture's default.
    """

    name: str
    is_config: Callable[[Any], bool]
    metadata: Callable[[Any, ModelSpec], dict[str, Any]] = _nothing
    eager_fields: Callable[[dict[str, Any], list[str], S.IRMetadata], dict[str, Any]] = _nothing
    inference: Callable[[Any], Callable | None] = lambda model: None


def _keypoint_metadata(cfg, spec: ModelSpec) -> dict[str, Any]:
    """Keypoint names, skeleton and OKS sigmas of a Keypoint R-CNN: the catalog's, else (a user's own
    model) ``keypoint_1..K``, no skeleton, and the config's ``TEST.KEYPOINT_OKS_SIGMAS``."""
    k = int(cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS)
    names = list(spec.keypoint_names) or [f"keypoint_{i + 1}" for i in range(k)]
    if len(names) != k:
        raise ConversionError(
            f"{spec.name}: MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS is {k} but {len(names)} keypoint names were given"
        )
    sigmas = list(spec.keypoint_oks_sigmas) or [float(v) for v in cfg.TEST.KEYPOINT_OKS_SIGMAS]
    return {
        "keypoint_names": names,
        "keypoint_skeleton": [list(p) for p in spec.keypoint_skeleton],
        "keypoint_oks_sigmas": [float(v) for v in sigmas] if len(sigmas) == k else [],
    }


def _panoptic_metadata(cfg, spec: ModelSpec) -> dict[str, Any]:
    """Semantic classes and merge parameters of a Panoptic FPN: the catalog's class names, else (a
    user's own model) ``things, stuff_1..`` for the config's ``SEM_SEG_HEAD.NUM_CLASSES``."""
    n = int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
    names = list(spec.stuff_classes) or ["things"] + [f"stuff_{i}" for i in range(1, n)]
    if len(names) != n:
        raise ConversionError(
            f"{spec.name}: MODEL.SEM_SEG_HEAD.NUM_CLASSES is {n} but {len(names)} semantic class "
            "names (things + stuff) were given"
        )
    combine = cfg.MODEL.PANOPTIC_FPN.COMBINE
    if not combine.ENABLED:
        raise ConversionError(
            f"{spec.name}: MODEL.PANOPTIC_FPN.COMBINE.ENABLED is off; d2ov converts Panoptic FPN "
            "with its panoptic merge"
        )
    return {
        "stuff_classes": names,
        "sem_seg_stride": int(cfg.MODEL.SEM_SEG_HEAD.COMMON_STRIDE),
        "panoptic_overlap_threshold": float(combine.OVERLAP_THRESH),
        "panoptic_stuff_area_threshold": int(combine.STUFF_AREA_LIMIT),
        "panoptic_score_threshold": float(combine.INSTANCES_CONFIDENCE_THRESH),
    }


def _panoptic_fields(out: dict[str, Any], labels: list[str], metadata: S.IRMetadata) -> dict[str, Any]:
    """Detectron2's panoptic map and its segments, described as the runtime describes its own."""
    if "panoptic_seg" not in out:
        return {}
    seg_map = out["panoptic_seg"][0].numpy().astype(np.int32)
    return {
        "segment_map": seg_map,
        "segments": describe_segments(seg_map, out["panoptic_seg"][1], labels, metadata.stuff_classes),
    }


def _panoptic_inference(model) -> Callable | None:
    """PanopticFPN.inference(do_postprocess=False) without the semantic head's final x4 upsampling:
    its logits leave the graph at stride 4 (16x smaller; numpy upsamples only what the resize to the
    image reads), beside the raw instances."""
    from detectron2.modeling import PanopticFPN

    if not isinstance(model, PanopticFPN):
        return None

    def inference(m, inputs):
        images = m.preprocess_image(inputs)
        features = m.backbone(images.tensor)
        sem_seg = m.sem_seg_head.layers(features)
        proposals, _ = m.proposal_generator(images, features, None)
        instances, _ = m.roi_heads(images, features, proposals, None)
        return [{"instances": instances[0], "sem_seg": sem_seg[0]}]

    return inference


#: every task's export side, the most specific first (a config is the first task it is)
EXPORT_TASKS: tuple[ExportTask, ...] = (
    ExportTask(
        "panoptic_segmentation",
        lambda cfg: cfg.MODEL.META_ARCHITECTURE == "PanopticFPN",
        _panoptic_metadata,
        _panoptic_fields,
        _panoptic_inference,
    ),
    ExportTask("keypoints", lambda cfg: bool(cfg.MODEL.KEYPOINT_ON), _keypoint_metadata),
    ExportTask("instance_segmentation", lambda cfg: bool(cfg.MODEL.MASK_ON)),
    ExportTask("detection", lambda cfg: True),
)


def export_task(cfg) -> ExportTask:
    """The task of a Detectron2 config."""
    return next(t for t in EXPORT_TASKS if t.is_config(cfg))


def for_task(name: str) -> ExportTask:
    """The export side of the task ``name`` (:class:`~d2ov_core.errors.InputError` for an unknown one)."""
    get_task(name)
    return next(t for t in EXPORT_TASKS if t.name == name)
