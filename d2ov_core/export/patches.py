"""The changes d2ov makes to Detectron2's behaviour, each in one place.

1. :func:`use_stable_proposal_ranking` (installed for the whole process by
   :func:`d2ov_core.export.model.build`): the RPN ranks proposals of exactly equal objectness in
   index order, and RetinaNet's inference (:func:`retinanet_detections`) is written so it traces
   (per-level top-k with a traced ``k``, one offset NMS) and ranks equal scores alike. It applies to eager inference too, so the PyTorch reference
   (:mod:`d2ov_core.export.reference`) is Detectron2 with this patch, and the IR matches it; for
   untied scores (every trained model's normal case) the ranking is exactly Detectron2's.
2. :func:`exportable` (a context manager, active only while tracing): padding to
   ``size_divisibility`` is computed from the image's own shape so it converts exactly, and the
   multi-level ROI pooler gathers its per-level results into box order instead of writing them into
   a zero-filled buffer (same values; the buffer's Broadcast + ScatterNDUpdate cost 8% of the demo
   model's OpenVINO time). Eager results are unchanged.
3. :func:`exportable_keypoints` (active around the traced inference only): Keypoint R-CNN's graph
   ends at the keypoint heatmaps (the per-box decoding, whose output size differs per box, runs in
   numpy: :mod:`d2ov_core.runtime.keypoints`).

Training is never patched.
"""

from __future__ import annotations

import contextlib

__all__ = [
    "use_stable_proposal_ranking",
    "retinanet_detections",
    "exportable",
    "exportable_padding",
    "exportable_pooling",
    "exportable_keypoints",
]


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

    def find_top_rpn_proposals(
        proposals, pred_objectness_logits, image_sizes, nms_thresh, pre_nms_topk, post_nms_topk, min_box_size, training
    ):
        if training:
            return original(
                proposals,
                pred_objectness_logits,
                image_sizes,
                nms_thresh,
                pre_nms_topk,
                post_nms_topk,
                min_box_size,
                training,
            )
        return _stable_top_proposals(
            proposals, pred_objectness_logits, image_sizes, nms_thresh, pre_nms_topk, post_nms_topk, min_box_size
        )

    find_top_rpn_proposals._d2ov_stable = True
    rpn.find_top_rpn_proposals = find_top_rpn_proposals

    from detectron2.modeling.meta_arch import retinanet

    retinanet.RetinaNet.forward_inference = retinanet_detections  # only ever called at inference


def retinanet_detections(self, images, features, predictions):
    """``RetinaNet.forward_inference`` (installed by :func:`use_stable_proposal_ranking`): the same
    detections as Detectron2's, in a form that traces and ranks equal scores in index order.

    Detectron2, per level: keep scores > ``SCORE_THRESH_TEST``, sort them (unstable), keep the
    ``TOPK_CANDIDATES_TEST`` best, decode their boxes; then per-class NMS over all levels
    (``batched_nms``: a per-class loop and an unstable sort past 40,000 boxes) and the
    ``DETECTIONS_PER_IMAGE`` best. Traced as is, ``min(topk, number above threshold)`` is frozen at
    the trace image's value. Here, per level: the ``k = min(topk, H*W*A*K)`` best scores
    (:func:`_stable_topk`, ``k`` a traced shape), those > threshold kept, boxes decoded; then one
    NMS with each class shifted out of reach of the others (what ``batched_nms`` does below 40,000
    boxes) and the first ``DETECTIONS_PER_IMAGE``. The set kept per level is the same (the top k of
    the scores above the threshold are the top k of all, filtered); only the order of exactly equal
    scores, which Detectron2 leaves unspecified, is pinned down.

    Returns a list of ``Instances`` (``pred_boxes``, ``scores``, ``pred_classes``) per image, in the
    padded input frame, as Detectron2's ``forward_inference``.
    """
    import torch
    from detectron2.structures import Boxes, Instances
    from torchvision.ops import nms

    pred_logits, pred_deltas = self._transpose_dense_predictions(predictions, [self.num_classes, 4])
    anchors = self.anchor_generator(features)
    results = []
    for i, image_size in enumerate(images.image_sizes):
        boxes_all, scores_all, classes_all = [], [], []
        for logits_l, deltas_l, anchors_l in zip(pred_logits, pred_deltas, anchors):
            scores = logits_l[i].sigmoid().flatten()  # (H*W*A*K,), anchor-major
            n = scores.shape[0]
            k = (
                torch.clamp(n, max=self.test_topk_candidates)
                if isinstance(n, torch.Tensor)
                else min(n, self.test_topk_candidates)
            )
            top, idx = _stable_topk(scores[None], k)
            top, idx = top[0], idx[0]
            keep = top > self.test_score_thresh
            top, idx = top[keep], idx[keep]
            anchor_idx, classes = idx // self.num_classes, idx % self.num_classes
            boxes_all.append(self.box2box_transform.apply_deltas(deltas_l[i][anchor_idx], anchors_l.tensor[anchor_idx]))
            scores_all.append(top)
            classes_all.append(classes)
        boxes, scores, classes = torch.cat(boxes_all), torch.cat(scores_all), torch.cat(classes_all)
        if boxes.numel() == 0 and not torch.jit.is_tracing():
            keep = torch.empty(0, dtype=torch.int64)
        else:
            t = boxes.float()  # RetinaNet's boxes are not clipped: shift by the whole span
            shifted = t + (classes.to(t) * (t.max() - t.min() + 1))[:, None]
            keep = nms(shifted, scores, self.test_nms_thresh)[: self.max_detections_per_image]
        results.append(
            Instances(image_size, pred_boxes=Boxes(boxes[keep]), scores=scores[keep], pred_classes=classes[keep])
        )
    return results


def _stable_topk(x, k):
    """The ``k`` largest of each row of ``x`` ``(N, n)``, equal values taken in index order (the set
    the first ``k`` of ``torch.sort(x, descending=True, stable=True)`` holds), returned IN INDEX ORDER
    with their values: ``(values (N, k), indices (N, k))``. ``k`` may be a traced 0-d tensor.

    Why not sorted: the caller feeds them to NMS, which sorts by score itself, stably in both
    torchvision and OpenVINO (equal scores keep their input order, measured with hundreds of ties),
    so index order here gives the stable ranking there. Sorting here cost 16 ms per FPN level in
    OpenVINO (a whole-level sort; a stable sort of the k chosen alone still 6 ms); the ``TopK`` that
    finds the k-th value costs well under a millisecond."""
    import torch

    top, _ = torch.topk(x, k, dim=1)
    kth = top.narrow(1, k - 1, 1)
    greater, equal = x > kth, x == kth
    room = k - greater.sum(1, keepdim=True)
    chosen = greater | (equal & (torch.cumsum(equal.to(torch.int64), 1) <= room))
    idx = chosen.nonzero()[:, 1].view(x.shape[0], -1)  # exactly k per row, ascending
    return torch.gather(x, 1, idx), idx


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
    from detectron2.modeling.meta_arch import rcnn
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

    def preprocess_image(self, batched_inputs):
        """Normalize and pad one image so that the padding comes between the mean subtraction and the
        division by std: the values are Detectron2's (the padding is 0 either way), but the graph's
        dynamic Pad no longer sits between the normalized image and the first convolution, where it
        kept OpenVINO from running an INT8 model's stem convolution in INT8."""
        if not torch.jit.is_tracing() or len(batched_inputs) != 1:
            return original_preprocess(self, batched_inputs)
        x = batched_inputs[0]["image"].to(self.device)
        h, w = x.shape[-2], x.shape[-1]
        image_size = torch.stack([torch.as_tensor(h), torch.as_tensor(w)])
        d = self.backbone.size_divisibility
        size = (image_size + (d - 1)) // d * d if d > 1 else image_size
        centered = F.pad(x - self.pixel_mean, [0, size[1] - w, 0, size[0] - h], value=0.0)
        return image_list.ImageList((centered / self.pixel_std).unsqueeze(0).contiguous(), [image_size])

    original_preprocess = rcnn.GeneralizedRCNN.preprocess_image
    image_list.ImageList.from_tensors = staticmethod(from_tensors)
    rcnn.GeneralizedRCNN.preprocess_image = preprocess_image
    try:
        yield
    finally:
        image_list.ImageList.from_tensors = staticmethod(original)
        rcnn.GeneralizedRCNN.preprocess_image = original_preprocess


@contextlib.contextmanager
def exportable_pooling():
    """While tracing, :class:`detectron2.modeling.poolers.ROIPooler` with several levels pools each
    level's boxes and puts the results back in box order with one gather, instead of ``index_put_``
    into a zero-filled ``(boxes, C, S, S)`` buffer (which OpenVINO runs as a reference Broadcast plus
    a ScatterNDUpdate). Each box is pooled from the same level with the same ROIAlign, so the values
    are identical. Eager calls (and one-level poolers) go to Detectron2's own code."""
    import torch
    from detectron2.modeling import poolers

    original = poolers.ROIPooler.forward

    def forward(self, x, box_lists):
        if not torch.jit.is_tracing() or len(self.level_poolers) == 1 or len(box_lists) == 0:
            return original(self, x, box_lists)
        pooler_fmt_boxes = poolers.convert_boxes_to_pooler_format(box_lists)
        levels = poolers.assign_boxes_to_levels(
            box_lists, self.min_level, self.max_level, self.canonical_box_size, self.canonical_level
        )
        order, pooled = [], []
        for level, pooler in enumerate(self.level_poolers):
            inds = poolers.nonzero_tuple(levels == level)[0]
            order.append(inds)
            pooled.append(pooler(x[level], pooler_fmt_boxes[inds]))
        order = torch.cat(order)  # box index of each pooled row
        position = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel()))  # its inverse
        return torch.cat(pooled)[position]

    poolers.ROIPooler.forward = forward
    try:
        yield
    finally:
        poolers.ROIPooler.forward = original


@contextlib.contextmanager
def exportable_keypoints():
    """While active, Keypoint R-CNN's inference stops at the keypoint head's logits: each image's
    ``Instances`` get ``pred_keypoint_heatmaps`` (``(N, K, S, S)``, what Detectron2 also keeps) and no
    ``pred_keypoints``. Detectron2's ``heatmaps_to_keypoints`` resizes each box's maps to that box's
    own size in a Python loop (scripted when tracing), which no static graph holds; the runtime does
    the same arithmetic in numpy (:func:`d2ov_core.runtime.keypoints.heatmaps_to_keypoints`).
    Active around the traced inference (:func:`d2ov_core.export.trace.traceable`), eager and traced
    alike, so both give the same outputs."""
    from detectron2.modeling.roi_heads import keypoint_head

    original = keypoint_head.keypoint_rcnn_inference

    def keypoint_rcnn_inference(pred_keypoint_logits, pred_instances):
        if len(pred_instances) == 1:  # what is traced: no split, whose sizes would be frozen as constants
            pred_instances[0].pred_keypoint_heatmaps = pred_keypoint_logits
            return
        sizes = [len(i) for i in pred_instances]
        for maps, inst in zip(pred_keypoint_logits.split(sizes, dim=0), pred_instances):
            inst.pred_keypoint_heatmaps = maps

    keypoint_head.keypoint_rcnn_inference = keypoint_rcnn_inference
    try:
        yield
    finally:
        keypoint_head.keypoint_rcnn_inference = original


@contextlib.contextmanager
def exportable():
    """Both tracing-time changes: :func:`exportable_padding` and :func:`exportable_pooling`."""
    with exportable_padding(), exportable_pooling():
        yield
