"""Loading a checkpoint into a Detectron2 model, safely.

``.pkl`` checkpoints are pickles, and unpickling runs code: a ``.pkl`` is unpickled only when
:func:`d2ov_core.store.weights.may_unpickle` allows it (a catalog URL's download or a path the user
typed). Everything else goes through ``torch.load(weights_only=True)`` and is refused, not retried
unsafely, if that fails.
"""

from __future__ import annotations

from ..errors import ConversionError, first_line
from ..store.weights import may_unpickle

__all__ = ["load_into"]


def load_into(model, path: str) -> None:
    """Load the checkpoint at ``path`` (from :func:`resolve`) into a Detectron2 model.

    ``.pkl`` (Detectron2 / Detectron model zoo format) goes through Detectron2's checkpointer,
    which unpickles: only ever call this with a catalog URL's download or a path the user named.
    Anything else goes through ``torch.load(weights_only=True)``.
    """
    import torch
    from detectron2.checkpoint import DetectionCheckpointer

    checkpointer = DetectionCheckpointer(model)
    if path.endswith(".pkl") and may_unpickle(path):
        checkpoint = checkpointer._load_file(path)
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            first = first_line(e)
            if path.endswith(".pkl"):
                raise ConversionError(
                    f"{path}: a .pkl downloaded from a URL outside the catalog is not unpickled (unpickling runs code) "
                    f"and torch.load(weights_only=True) refuses it ({first}); if you trust it, pass its local path"
                ) from None
            raise ConversionError(
                f"{path}: not a plain tensor checkpoint that torch.load(weights_only=True) accepts ({first}); "
                "save the state_dict only: torch.save({'model': model.state_dict()}, path)"
            ) from None
        if not isinstance(obj, dict):
            raise ConversionError(f"{path}: expected a dict checkpoint, found {type(obj).__name__}")
        checkpoint = obj if "model" in obj else {"model": obj}
        checkpoint.setdefault("__author__", "d2ov")
        checkpoint["matching_heuristics"] = False
    incompatible = checkpointer._load_model(checkpoint)
    if incompatible.incorrect_shapes:
        key, got, want = incompatible.incorrect_shapes[0]
        raise ConversionError(
            f"{path}: weights do not fit the config: {key} has shape {tuple(got)} in the checkpoint, "
            f"{tuple(want)} in the model ({len(incompatible.incorrect_shapes)} mismatches)"
        )
    missing = [k for k in (incompatible.missing_keys or []) if not k.endswith(("pixel_mean", "pixel_std"))]
    if missing:
        raise ConversionError(
            f"{path}: weights do not fit the config: {len(missing)} parameters missing "
            f"(e.g. {', '.join(missing[:3])}); check the config matches the checkpoint"
        )
