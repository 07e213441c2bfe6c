"""``--weights random``: the exact architecture with seeded random init, calibrated on one photo
so it proposes and scores like a trained model (for tests and speed measurements, never a detector)."""

from __future__ import annotations

from ..runtime import settings as S
from ..runtime.images import load_image
from ..runtime.preprocess import preprocess

__all__ = ["calibrate_random_weights", "RANDOM_INIT_REVISION"]

#: Revision of what ``--weights random`` builds (part of the conversion cache key).
RANDOM_INIT_REVISION = 4  # 4: keypoint heads calibrated to peaked heatmaps


def _calibration_photo(cfg):
    """The photo random weights are calibrated on: matplotlib's ``grace_hopper.jpg`` (matplotlib is a
    Detectron2 dependency), preprocessed as the model's test input (:func:`preprocess.preprocess`),
    as a CHW float tensor in the model's channel order. Activation statistics of a real photo carry
    over to other photos; those of synthetic noise or smooth fields did not (measured: 6x off at the
    RPN head)."""
    import torch
    from matplotlib import cbook

    meta = S.IRMetadata(
        min_size=int(cfg.INPUT.MIN_SIZE_TEST), max_size=int(cfg.INPUT.MAX_SIZE_TEST), input_format=cfg.INPUT.FORMAT
    )
    chw, _ = preprocess(load_image(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)), meta)
    return torch.as_tensor(chw)


def calibrate_random_weights(model, cfg) -> None:
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
       reached on real photos, so the mask head does full work; keypoint heatmaps get a standard
       deviation of 4, peaked enough for keypoints to score above the drawing threshold (0.05).
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
                if hasattr(model, "inference"):  # GeneralizedRCNN
                    model.inference(inputs, do_postprocess=False)
                else:  # RetinaNet
                    model(inputs)
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
    retina = getattr(model, "head", None)  # RetinaNetHead
    biases = {
        getattr(predictor, "cls_score", None): ("last", -2.0),  # background: the last class
        # RetinaNet: sigmoid per class, no background: a few in a thousand anchor-class pairs pass 0.05
        getattr(retina, "cls_score", None): ("all", -6.0),
    }
    passes = [
        # proposals: anchors moved/resized by ~30%
        {getattr(rpn_head, "anchor_deltas", None): 0.3},
        # box deltas are divided by BBOX_REG_WEIGHTS (10, 10, 5, 5); logits: scores spread over (0, 1)
        {getattr(predictor, "bbox_pred", None): 1.0, getattr(predictor, "cls_score", None): 2.0},
        # RetinaNet: deltas with BBOX_REG_WEIGHTS (1, 1, 1, 1); class logits spread around a low bias
        {getattr(retina, "bbox_pred", None): 0.2, getattr(retina, "cls_score", None): 1.5},
        # keypoint heatmaps peaked enough that keypoints score above the 0.05 drawing threshold, so
        # verify compares keypoint positions (near-flat maps would leave none "visible")
        {getattr(getattr(getattr(model, "roi_heads", None), "keypoint_head", None), "score_lowres", None): 4.0},
    ]
    for targets in passes:
        targets = {
            layer: t
            for layer, t in targets.items()
            if isinstance(layer, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear))
        }
        if not targets:  # a pass for another architecture's head: a forward pass would change nothing
            continue
        outs: dict = {}

        def keep_first(mod, args, out, outs=outs):  # returns None: the output itself is left alone
            outs.setdefault(mod, out.detach())

        forward_with([layer.register_forward_hook(keep_first) for layer in targets])
        for layer, target in targets.items():
            out = outs.get(layer)
            if out is None or out.numel() <= 1:
                continue
            with torch.no_grad():
                layer.weight.mul_(target / float(out.float().std().clamp_min(1e-12)))
                layer.bias.zero_()
                where, value = biases.get(layer, (None, 0.0))
                if where == "last":
                    layer.bias[-1] = value
                elif where == "all":
                    layer.bias.fill_(value)
