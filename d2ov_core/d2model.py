"""The Detectron2 side: config, model and traceable wrapper. Imports torch and detectron2.

Used by :mod:`d2ov_core.convert` (tracing) and :mod:`d2ov_core.reference` (the PyTorch reference
predictor), so both build the exact same model from the same (spec, weights).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Any

from . import compat
from .catalog import ModelSpec
from .errors import ConversionError, ModelNotFoundError
from . import weights as W

__all__ = ["load_cfg", "build", "traceable", "cfg_metadata", "OUTPUT_NAMES", "use_stable_proposal_ranking"]

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

    use_stable_proposal_ranking()
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
    else:
        _spread_random_scores(model, cfg)
    info = {"source": source, "sha256": digest, "random": path == W.RANDOM}
    return model, cfg, info


#: Revision of what ``--weights random`` builds (part of the conversion cache key).
RANDOM_INIT_REVISION = 2


def _calibration_photo(cfg):
    """The photo random weights are calibrated on: matplotlib's ``grace_hopper.jpg`` (matplotlib is a
    Detectron2 dependency), preprocessed as the model's test input (:func:`preprocess.preprocess`),
    as a CHW float tensor in the model's channel order. Activation statistics of a real photo carry
    over to other photos; those of synthetic noise or smooth fields did not (measured: 6x off at the
    RPN head)."""
    import torch
    from matplotlib import cbook

    from .images import load_image
    from .preprocess import preprocess

    meta = {"min_size": cfg.INPUT.MIN_SIZE_TEST, "max_size": cfg.INPUT.MAX_SIZE_TEST, "input_format": cfg.INPUT.FORMAT}
    chw, _ = preprocess(load_image(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)), meta)
    return torch.as_tensor(chw)


def _spread_random_scores(model, cfg) -> None:
    """Make a random-weights R-CNN behave like a trained one at inference, for speed measurements.

    Freshly initialised, Detectron2's ResNet has identity ``FrozenBN`` layers, so activations grow
    through the network: RPN deltas explode (a handful of degenerate proposals survive) and class
    logits saturate (one box with score 1.0), and the box/mask heads do almost no work. Deterministic
    passes over one real photo (:func:`_calibration_photo`) fix that without changing the graph or its
    FLOPs:

    1. every BatchNorm layer (frozen or not) gets the running mean/variance of its own input
       (data-dependent init, layer by layer in one forward pass), so activations stay O(1) and the
       proposals are anchor-like boxes, as many as the config keeps;
    2. the output layers (RPN deltas, box deltas, class logits) are rescaled so their outputs have a
       trained-like spread (logit standard deviation 2, background 2 lower): proposals stay near
       anchors, scores spread over (0, 1) and depend on the input, and the 100-detection cap is
       reached on real photos, so the mask head does full work.
    Seeded (``torch.manual_seed(0)`` before ``build_model``): the same random model every time.
    """
    import torch
    from detectron2.layers import FrozenBatchNorm2d

    image = _calibration_photo(cfg)
    inputs = [{"image": image, "height": image.shape[1], "width": image.shape[2]}]

    def set_stats(mod, args):
        x = args[0]
        if x.dim() == 4 and x.shape[0] * x.shape[2] * x.shape[3] > 1:
            var = x.var((0, 2, 3))
            mod.running_mean.copy_(x.mean((0, 2, 3)))
            # floor: a channel (almost) flat on this image must not be amplified without bound on another
            mod.running_var.copy_(var.clamp_min(0.05 * float(var.mean()) + 1e-6))

    def forward_with(hooks):
        """One calibration forward pass; the hooks are removed afterwards, whatever happens."""
        try:
            with torch.no_grad():
                model.inference(inputs, do_postprocess=False)
        finally:
            for h in hooks:
                h.remove()

    norms = [m for m in model.modules() if isinstance(m, (FrozenBatchNorm2d, torch.nn.BatchNorm2d))]
    forward_with([m.register_forward_pre_hook(set_stats) for m in norms])

    # output layers: rescale so their outputs on the calibration image have a trained-like spread.
    # Two passes: the rescaled RPN deltas move the proposals the box head then sees; the box deltas
    # and class logits are parallel outputs over the same proposals, so they share the second pass.
    rpn_head = getattr(getattr(model, "proposal_generator", None), "rpn_head", None)
    predictor = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
    passes = [
        # proposals: anchors moved/resized by ~30%
        {getattr(rpn_head, "anchor_deltas", None): 0.3},
        # box deltas are divided by BBOX_REG_WEIGHTS (10, 10, 5, 5); logits: scores spread over (0, 1)
        {getattr(predictor, "bbox_pred", None): 1.0, getattr(predictor, "cls_score", None): 2.0},
    ]
    for targets in passes:
        targets = {layer: t for layer, t in targets.items() if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear))}
        outs: dict = {}
        def keep_first(mod, args, out):  # returns None: the output itself is left alone
            outs.setdefault(mod, out.detach())

        forward_with([layer.register_forward_hook(keep_first) for layer in targets])
        for layer, target in targets.items():
            out = outs.get(layer)
            if out is None or out.numel() <= 1:
                continue
            with torch.no_grad():
                layer.weight.mul_(target / float(out.float().std().clamp_min(1e-12)))
                layer.bias.zero_()
                if layer is getattr(predictor, "cls_score", None):
                    layer.bias[-1] = -2.0  # background is the last class in FastRCNNOutputLayers


def use_stable_proposal_ranking() -> None:
    """Make the RPN rank proposals with equal objectness in a defined order: lower anchor index
    first. Installed (once, for the process) by :func:`build`, so the PyTorch reference and the
    traced graph behind every IR rank alike; training is left to Detectron2.

    Detectron2's ``find_top_rpn_proposals`` orders proposals with ``Tensor.sort`` (unstable) and
    merges the FPN levels with ``batched_nms`` (per-level NMS, then an unstable sort in eager; one
    offset NMS when traced). Scores that are exactly equal are common: wherever the RPN's hidden
    layer is all zero after its ReLU, the logit is the bias, the same at every such anchor (measured:
    hundreds of tied proposals on a demo image). Their order is then an accident of the sort
    implementation: eager PyTorch and OpenVINO's TopK each pick their own, NMS keeps a different
    one of two overlapping tied boxes, and final detections moved by up to 9 px. With a stable sort
    (``aten::sort(stable=True)`` converts to OpenVINO ``TopK`` with ``stable=true``) and the same
    offset NMS in both (torchvision's NMS and OpenVINO's keep the earlier of equal scores), the
    proposals are identical. Untied scores rank exactly as in Detectron2, so only the choice among
    exactly equal scores, which Detectron2 leaves unspecified, is pinned down.
    """
    from detectron2.modeling.proposal_generator import proposal_utils, rpn

    if getattr(rpn.find_top_rpn_proposals, "_d2ov_stable", False):
        return
    original = proposal_utils.find_top_rpn_proposals

    def find_top_rpn_proposals(proposals, pred_objectness_logits, image_sizes, nms_thresh, pre_nms_topk,
                               post_nms_topk, min_box_size, training):
        if training:
            return original(proposals, pred_objectness_logits, image_sizes, nms_thresh, pre_nms_topk,
                            post_nms_topk, min_box_size, training)
        return _stable_top_proposals(proposals, pred_objectness_logits, image_sizes, nms_thresh,
                                     pre_nms_topk, post_nms_topk, min_box_size)

    find_top_rpn_proposals._d2ov_stable = True
    rpn.find_top_rpn_proposals = find_top_rpn_proposals


def _stable_topk(x, k):
    """The ``k`` largest of each row of ``x`` ``(N, n)`` and their indices, equal values in index
    order: the first ``k`` of ``torch.sort(x, descending=True, stable=True)``, computed so that it
    converts to fast OpenVINO ops. (OpenVINO's stable TopK over a whole FPN level is quadratic:
    4.5 s for 47,000 logits, measured; this is 7 ms.) ``k`` may be a traced 0-d tensor.

    The values come from an unstable sort (values do not depend on the tie order); the indices are
    all those above the k-th value plus the lowest-index ones equal to it, ordered by a stable sort
    of only those ``k``."""
    import torch

    values, _ = torch.sort(x, dim=1, descending=True)
    top = values.narrow(1, 0, k)
    kth = top.narrow(1, k - 1, 1)
    greater, equal = x > kth, x == kth
    room = k - greater.sum(1, keepdim=True)
    chosen = greater | (equal & (torch.cumsum(equal.to(torch.int64), 1) <= room))
    idx = chosen.nonzero()[:, 1].view(x.shape[0], -1)  # exactly k per row, ascending
    _, order = torch.sort(torch.gather(x, 1, idx), dim=1, descending=True, stable=True)
    return top, torch.gather(idx, 1, order)


def _stable_top_proposals(proposals, logits, image_sizes, nms_thresh, pre_nms_topk, post_nms_topk, min_box_size):
    """Inference-time ``find_top_rpn_proposals`` with stable ranking (see
    :func:`use_stable_proposal_ranking`): per level the ``pre_nms_topk`` best, clipped, empty boxes
    dropped, NMS per level, the ``post_nms_topk`` best overall, by descending objectness."""
    import torch
    from detectron2.structures import Boxes, Instances
    from torchvision.ops import nms

    top_scores, top_boxes, level_ids = [], [], []
    batch = torch.arange(len(image_sizes))
    for level, (boxes_l, logits_l) in enumerate(zip(proposals, logits)):
        n = logits_l.shape[1]
        k = torch.clamp(n, max=pre_nms_topk) if isinstance(n, torch.Tensor) else min(n, pre_nms_topk)
        scores_l, idx = _stable_topk(logits_l, k)
        top_scores.append(scores_l)
        top_boxes.append(boxes_l[batch[:, None], idx])
        level_ids.append(torch.full((k,), level, dtype=torch.int64))
    top_scores, top_boxes, level_ids = torch.cat(top_scores, 1), torch.cat(top_boxes, 1), torch.cat(level_ids)
    results = []
    for i, image_size in enumerate(image_sizes):
        boxes, scores, levels = Boxes(top_boxes[i]), top_scores[i], level_ids
        valid = torch.isfinite(boxes.tensor).all(dim=1) & torch.isfinite(scores)
        if not torch.jit.is_tracing() and not bool(valid.all()):
            boxes, scores, levels = boxes[valid], scores[valid], levels[valid]
        boxes.clip(image_size)
        keep = boxes.nonempty(threshold=min_box_size)
        boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        # one NMS over all levels, each level shifted out of reach of the others
        t = boxes.tensor.float()
        if t.numel() == 0 and not torch.jit.is_tracing():
            keep = torch.empty(0, dtype=torch.int64)
        else:
            shifted = t + (levels.to(t) * (t.max() + 1))[:, None]
            keep = nms(shifted, scores, nms_thresh)[:post_nms_topk]
        res = Instances(image_size)
        res.proposal_boxes = boxes[keep]
        res.objectness_logits = scores[keep]
        results.append(res)
    return results


@contextlib.contextmanager
def exportable_padding():
    """While active, ``ImageList.from_tensors`` of one image computes its padding to
    ``size_divisibility`` without ``torch.stack(...).max(0)``.

    Detectron2 computes the padded size as ``stack(sizes).max(0).values`` then ``(s + 31) // 32 * 32``.
    Traced and converted by OpenVINO 2026.4, the floor division after ``max`` loses its integer
    type: a 576x416 input was padded to 608x448 (measured), which shifts every feature map and
    changed a trained model's detections (72 -> 81 raw detections on one image). The same
    arithmetic on the image's own shape converts exactly. Eager results are unchanged: this path is
    used only while tracing, for one image.
    """
    import torch
    import torch.nn.functional as F
    from detectron2.structures import image_list

    original = image_list.ImageList.from_tensors

    def from_tensors(tensors, size_divisibility: int = 0, pad_value: float = 0.0):
        if not torch.jit.is_tracing() or len(tensors) != 1:
            return original(tensors, size_divisibility, pad_value)
        x = tensors[0]
        h, w = x.shape[-2], x.shape[-1]  # traced: 0-d int64 tensors
        image_size = torch.stack([torch.as_tensor(h), torch.as_tensor(w)])
        size = image_size
        if size_divisibility > 1:
            size = (size + (size_divisibility - 1)) // size_divisibility * size_divisibility
        padded = F.pad(x, [0, size[1] - w, 0, size[0] - h], value=pad_value).unsqueeze(0)
        return image_list.ImageList(padded.contiguous(), [image_size])

    image_list.ImageList.from_tensors = staticmethod(from_tensors)
    try:
        yield
    finally:
        image_list.ImageList.from_tensors = staticmethod(original)


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
