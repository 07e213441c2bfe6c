"""Tracing: a ``TracingAdapter`` over a built Detectron2 model whose flat outputs are the raw
``Instances`` fields (see :mod:`d2ov_core.runtime.ir` for the IR contract), and their names."""

from __future__ import annotations

from ..errors import ConversionError

__all__ = ["traceable", "OUTPUT_NAMES"]


#: Instances field -> IR output name
OUTPUT_NAMES = {"pred_boxes": "boxes", "scores": "scores", "pred_classes": "classes", "pred_masks": "masks",
                "pred_keypoint_heatmaps": "keypoint_heatmaps"}


def traceable(model, image_chw):
    """A ``TracingAdapter`` over ``model`` whose flat outputs are the raw (not postprocessed)
    ``Instances`` fields in the resized-input frame; returns ``(adapter, output_names)``."""
    import torch
    from detectron2.export.flatten import TracingAdapter
    from detectron2.modeling import GeneralizedRCNN
    from detectron2.modeling.meta_arch.retinanet import RetinaNet

    from .patches import exportable_keypoints

    if isinstance(model, GeneralizedRCNN):
        def inference(m, inputs):
            with exportable_keypoints():  # keypoint models: the graph ends at the heatmaps
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

