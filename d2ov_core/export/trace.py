"""Tracing: a ``TracingAdapter`` over a built Detectron2 model whose flat outputs are the raw
``Instances`` fields (see :mod:`d2ov_core.runtime.ir` for the IR contract), and their names."""

from __future__ import annotations

from ..errors import ConversionError
from .patches import exportable_keypoints
from .tasks import EXPORT_TASKS

__all__ = ["traceable", "OUTPUT_NAMES"]


#: Instances field -> IR output name
OUTPUT_NAMES = {
    "pred_boxes": "boxes",
    "scores": "scores",
    "pred_classes": "classes",
    "pred_masks": "masks",
    "pred_keypoint_heatmaps": "keypoint_heatmaps",
}


def traceable(model, image_chw):
    """A ``TracingAdapter`` over ``model`` whose flat outputs are the raw (not postprocessed)
    ``Instances`` fields in the resized-input frame; returns ``(adapter, output_names)``."""
    import torch
    from detectron2.export.flatten import TracingAdapter
    from detectron2.modeling import GeneralizedRCNN
    from detectron2.modeling.meta_arch.retinanet import RetinaNet

    own = next((f for t in EXPORT_TASKS if (f := t.inference(model)) is not None), None)
    if own is not None:  # a task whose model is traced its own way
        inference = own
    elif isinstance(model, GeneralizedRCNN):

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
        raise ConversionError(
            f"unsupported meta architecture {type(model).__name__}: expected GeneralizedRCNN (or a subclass) or RetinaNet"
        )

    image = torch.as_tensor(image_chw)
    adapter = TracingAdapter(model, [{"image": image}], inference)
    with torch.no_grad():
        flat = adapter(image)
    names = _output_names(adapter.outputs_schema)
    if len(names) != len(flat):
        raise ConversionError(f"cannot name traced outputs: schema gives {names}, the graph has {len(flat)} outputs")
    return adapter, names, flat


def _output_names(schema) -> list[str]:
    """Flat output names from TracingAdapter's schema, in its flattening order: an ``InstancesSchema``
    flattens its fields in sorted key order (each field ``sizes[i]`` tensors), then the image size; a
    dict its values in sorted key order (a plain tensor is named by its key: ``sem_seg``)."""
    from detectron2.export.flatten import DictSchema, IdentitySchema, InstancesSchema

    def walk(s, key: str | None) -> list[str]:
        if isinstance(s, InstancesSchema):
            names: list[str] = []
            for field, size in zip(s.keys, s.sizes):
                base = OUTPUT_NAMES.get(field, field)
                names += [base] if size == 1 else [f"{base}_{i}" for i in range(size)]
            return names + ["image_size"]
        if isinstance(s, IdentitySchema):
            return [key or "output"]
        keys = s.keys if isinstance(s, DictSchema) else [key] * len(getattr(s, "schemas", []) or [])
        return [name for k, child in zip(keys, getattr(s, "schemas", []) or []) for name in walk(child, k)]

    names = walk(schema, None)
    if "image_size" not in names:
        raise ConversionError("traced outputs hold no Instances")
    return names
