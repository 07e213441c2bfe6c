"""Stage outputs of a Detectron2 model, in PyTorch and as a verification-only OpenVINO graph, for
the stage-by-stage check (:mod:`d2ov_core.measure.stages`).

:class:`StageGraph` wraps a built model. Its inputs are the resized image ``(3, H, W)`` (as the IR's
``image`` input) and FIXED boxes ``(N, 4)`` (xyxy, resized-input frame: the eager model's
best proposals for the same image). Its outputs, named by :attr:`StageGraph.names`, are every stage the
deployed IR computes on the way to its detections:

- ``features.<name>``: the backbone's (FPN's) feature maps, ``(1, C, h, w)``;
- a model with a semantic head (``sem_seg_head``): ``sem_seg.logits`` ``(1, C, Hp / 4, Wp / 4)``, its
  logits before its upsampling (the IR's ``sem_seg``);
- R-CNN: ``rpn.objectness.<level>`` ``(1, A, h, w)`` and ``rpn.deltas.<level>`` ``(1, 4A, h, w)``
  (the RPN head), ``proposals.boxes`` / ``proposals.logits`` (the RPN's top proposals, computed in
  the graph: informative, ranked by near-flat scores on random weights), then the ROI heads ON THE
  GIVEN BOXES: ``roi.class_logits`` ``(N, K+1)``, ``roi.box_deltas`` ``(N, 4K)``, and
  ``roi.mask_logits`` ``(N, K, M, M)`` for Mask R-CNN, ``roi.keypoint_logits`` ``(N, P, S, S)`` (the
  keypoint heatmaps the IR ends with) for Keypoint R-CNN;
- RetinaNet: ``head.logits.<level>`` ``(1, AK, h, w)`` and ``head.deltas.<level>`` ``(1, 4A, h, w)``.

The same module, run eagerly, gives the reference; traced under :func:`patches.exportable` and
converted with FP32 weights it gives the OpenVINO side, with the same ops the deployed IR has (one
conversion recipe). Fixed boxes make the heads comparable with random weights, where near-flat
objectness lets 1e-6 differences choose other proposals.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..errors import ConversionError, first_line
from ..runtime import ir as runtime
from ..runtime.ir import usable_cpus
from .patches import exportable

__all__ = ["StageGraph", "eager_proposals", "run_stages", "convert_stages", "compile_stages", "run_compiled"]

log = logging.getLogger("d2ov")


def _module():
    import torch

    class _StageGraph(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            from detectron2.modeling import GeneralizedRCNN

            self.model = model
            self.rcnn = isinstance(model, GeneralizedRCNN)
            with torch.no_grad():
                self.feature_names = sorted(model.backbone.output_shape())
            self.names = self._names()

        def _names(self) -> list[str]:
            m = self.model
            names = [f"features.{f}" for f in self.feature_names]
            if hasattr(m, "sem_seg_head"):
                names.append("sem_seg.logits")
            if self.rcnn:
                levels = range(len(m.proposal_generator.in_features))
                names += [f"rpn.objectness.{i}" for i in levels] + [f"rpn.deltas.{i}" for i in levels]
                names += ["proposals.boxes", "proposals.logits", "roi.class_logits", "roi.box_deltas"]
                if getattr(m.roi_heads, "mask_on", False):
                    names.append("roi.mask_logits")
                if getattr(m.roi_heads, "keypoint_on", False):
                    names.append("roi.keypoint_logits")
            else:
                levels = range(len(m.head_in_features))
                names += [f"head.logits.{i}" for i in levels] + [f"head.deltas.{i}" for i in levels]
            return names

        def forward(self, image, boxes):
            from detectron2.modeling.roi_heads import Res5ROIHeads
            from detectron2.structures import Boxes

            m = self.model
            images = m.preprocess_image([{"image": image}])
            features = m.backbone(images.tensor)
            out = [features[f] for f in self.feature_names]
            if hasattr(m, "sem_seg_head"):
                out.append(m.sem_seg_head.layers(features))  # before its upsampling, as the IR returns them
            if not self.rcnn:
                logits, deltas = m.head([features[f] for f in m.head_in_features])
                return tuple(out + list(logits) + list(deltas))
            rpn = m.proposal_generator
            objectness, deltas = rpn.rpn_head([features[f] for f in rpn.in_features])
            out += list(objectness) + list(deltas)
            proposals, _ = rpn(images, features, None)
            out += [proposals[0].proposal_boxes.tensor, proposals[0].objectness_logits]
            heads, given = m.roi_heads, [Boxes(boxes)]
            if isinstance(heads, Res5ROIHeads):
                x = heads._shared_roi_transform([features[f] for f in heads.in_features], given)
                class_logits, box_deltas = heads.box_predictor(x.mean(dim=[2, 3]))
                mask_x = x
            else:
                x = heads.box_pooler([features[f] for f in heads.box_in_features], given)
                class_logits, box_deltas = heads.box_predictor(heads.box_head(x))
                mask_x = None
                if getattr(heads, "mask_on", False):
                    mask_x = heads.mask_pooler([features[f] for f in heads.mask_in_features], given)
            out += [class_logits, box_deltas]
            if getattr(heads, "mask_on", False):
                out.append(heads.mask_head.layers(mask_x))
            if getattr(heads, "keypoint_on", False):
                kp_x = heads.keypoint_pooler([features[f] for f in heads.keypoint_in_features], given)
                out.append(heads.keypoint_head.layers(kp_x))
            return tuple(out)

    return _StageGraph


def StageGraph(model):
    """The stage module over a built, eval-mode model (GeneralizedRCNN or RetinaNet); its
    ``names`` list its outputs in order."""
    from detectron2.modeling import GeneralizedRCNN
    from detectron2.modeling.meta_arch.retinanet import RetinaNet

    if not isinstance(model, (GeneralizedRCNN, RetinaNet)):
        raise ConversionError(
            f"no stage check for meta architecture {type(model).__name__}: expected GeneralizedRCNN or RetinaNet"
        )
    return _module()(model).eval()


#: fixed boxes the ROI heads are compared on: the eager model's best proposals (a C4 model runs res5 on
#: each one; 300 of 1000 give the same verdict at a third of the cost)
FIXED_BOXES = 300


def eager_proposals(model, image_chw: np.ndarray, limit: int = FIXED_BOXES) -> np.ndarray:
    """The eager model's ``limit`` best proposals ``(N, 4)`` float32 for a resized image (``(0, 4)``
    for RetinaNet, which has none)."""
    import torch
    from detectron2.modeling import GeneralizedRCNN

    if not isinstance(model, GeneralizedRCNN):
        return np.zeros((0, 4), np.float32)
    with torch.no_grad():
        images = model.preprocess_image([{"image": torch.as_tensor(image_chw)}])
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features, None)
    return proposals[0].proposal_boxes.tensor[:limit].numpy().astype(np.float32)


def run_stages(graph, image_chw: np.ndarray, boxes: np.ndarray) -> dict[str, np.ndarray]:
    """The stage outputs of ``graph`` (eager) on one image and fixed boxes, by name."""
    import torch

    with torch.no_grad():
        outs = graph(torch.as_tensor(image_chw), torch.as_tensor(boxes))
    return {name: t.numpy() for name, t in zip(graph.names, outs)}


def convert_stages(graph, image_chw: np.ndarray, boxes: np.ndarray):
    """Trace ``graph`` on one image and its boxes and convert it (FP32, in memory); returns the
    ``openvino.Model`` with inputs ``image``, ``boxes`` and outputs named as ``graph.names``."""
    import warnings

    import torch

    torch.set_num_threads(usable_cpus())
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    example = (torch.as_tensor(image_chw), torch.as_tensor(boxes))
    try:
        with exportable(), torch.no_grad():
            model = runtime._ov().convert_model(graph, example_input=example)
    except Exception as e:
        raise ConversionError(f"converting the stage graph failed: {first_line(e)}") from None
    if len(model.outputs) != len(graph.names):
        raise ConversionError(f"stage graph has {len(model.outputs)} outputs, expected {len(graph.names)}")
    model.inputs[0].get_tensor().set_names({"image"})
    model.inputs[1].get_tensor().set_names({"boxes"})
    for out, name in zip(model.outputs, graph.names):
        out.get_tensor().set_names({name})
    return model


def compile_stages(model, device: str = "CPU") -> Any:
    """Compile a converted stage graph with exact f32 compute (bf16-capable CPUs would otherwise
    compute in bf16)."""
    return runtime.core().compile_model(model, device, {"INFERENCE_PRECISION_HINT": "f32"})


def run_compiled(compiled, names: list[str], image_chw: np.ndarray, boxes: np.ndarray) -> dict[str, np.ndarray]:
    res = compiled([np.ascontiguousarray(image_chw, np.float32), np.ascontiguousarray(boxes, np.float32)])
    return {name: np.asarray(res[o]) for name, o in zip(names, compiled.outputs)}
