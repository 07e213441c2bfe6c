"""INT8 post-training quantization of a converted IR with NNCF (imports nncf and openvino)."""

from __future__ import annotations

import contextlib
import dataclasses
import sys

import numpy as np

from ..errors import IRError, first_line
from ..runtime.ir import _ov, core

__all__ = ["Recipe", "RECIPES", "DEFAULT_RECIPE", "quantize_int8", "BOX_MATH", "MASK_HEAD"]


#: the mask head: quantized with the box arithmetic, the first demo Mask R-CNN's mask AP fell from 19.6
#: to 7.1 (60 test images)
MASK_HEAD = (r".*roi_heads\.mask_head\..*",)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How NNCF quantizes: its preset, activation range estimator, overflow fix and what stays in
    floating point (NNCF ignored-scope patterns on the IR's friendly names)."""

    name: str
    preset: str = "MIXED"  # PERFORMANCE: symmetric activations; MIXED: asymmetric activations
    range_estimator: str = "MINMAX"  # NNCF RangeEstimatorParametersSet name, or "default"
    overflow_fix: str = "DISABLE"  # ENABLE | FIRST_LAYER | DISABLE (VNNI CPUs need no fix)
    keep_float: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for the IR's metadata and d2ov.json."""
        kept = ", ".join(self.keep_float) or "nothing"
        return (
            f"{self.name}: NNCF {self.preset} preset, activation ranges {self.range_estimator}, overflow fix "
            f"{self.overflow_fix}; kept in floating point: {kept}"
        )


#: the box/proposal arithmetic traced into the graph (decoding deltas, clipping, pooler level
#: assignment) is not a neural-network layer: quantized to 8 bits it moves boxes
BOX_MATH = (r".*roi_heads/aten::.*", r".*roi_heads\.(box|mask|keypoint)_pooler/.*", r".*proposal_generator/aten::.*")

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        # chosen on the demo models' val split, reported on their 200-image test split (docs/int8.md):
        # the box arithmetic (decoding, clipping, the pooler's level assignment) in float; MIXED preset,
        # MINMAX activation ranges, no overflow fix (VNNI CPUs). Mask R-CNN box/mask 60.76/66.47 vs FP32
        # 60.51/66.26, Faster R-CNN 61.03 vs 60.97 (200 test-time proposals)
        Recipe("d2ov-3", keep_float=BOX_MATH),
        # the same with the mask head in float (what d2ov-3 showed unnecessary: val mask AP 63.60 vs 63.64,
        # slower): 60.82/66.55 with 500 proposals
        Recipe("d2ov-2", keep_float=BOX_MATH + MASK_HEAD),
        # NNCF's default preset, ranges and overflow fix (for CPUs without VNNI, where the overflow fix
        # matters), box arithmetic and mask head in float: 60.64/66.41 and 61.15 with 500 proposals
        Recipe(
            "d2ov-2-overflow-fix",
            preset="PERFORMANCE",
            range_estimator="default",
            overflow_fix="ENABLE",
            keep_float=BOX_MATH + MASK_HEAD,
        ),
        # NNCF's defaults with the mask head in float, what d2ov used before: 37.10/44.75 and 47.75
        Recipe(
            "nncf-default", preset="PERFORMANCE", range_estimator="default", overflow_fix="ENABLE", keep_float=MASK_HEAD
        ),
    ]
}
#: what ``d2ov convert --precision INT8`` uses unless told otherwise
DEFAULT_RECIPE = RECIPES["d2ov-3"]


def quantize_int8(model, samples: list[np.ndarray], recipe: Recipe = DEFAULT_RECIPE, progress: bool = True):
    """NNCF post-training INT8 quantization of ``model`` on preprocessed ``(3, H, W)`` samples.

    The converted Detectron2 graph has many ops sharing one friendly name, in the main graph and in
    the bodies of its ``If`` ops, which NNCF 3.4 cannot map back ("Could not find a node
    aten::unsqueeze/Unsqueeze in NNCFGraph"). The model is therefore serialized and read back first
    (the IR reader gives every node a unique name), then every remaining duplicate is renamed.
    What stays in floating point is the recipe's ``keep_float``.
    """
    import logging
    import tempfile

    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    ov = _ov()
    advanced = AdvancedQuantizationParameters(overflow_fix=OverflowFix[recipe.overflow_fix])
    if recipe.range_estimator != "default":
        advanced.activations_range_estimator_params = getattr(RangeEstimatorParametersSet, recipe.range_estimator)
    with tempfile.TemporaryDirectory(prefix="d2ov-int8-") as tmp:
        ov.save_model(model, f"{tmp}/fp32.xml", compress_to_fp16=False)
        model = core().read_model(f"{tmp}/fp32.xml")
        _unique_names(model)
        nncf.set_log_level(logging.WARNING if progress else logging.ERROR)
        dataset = nncf.Dataset([np.ascontiguousarray(s, dtype=np.float32) for s in samples])
        try:
            # NNCF's progress bars and notes go to stderr: stdout belongs to the caller (CLI output)
            with contextlib.redirect_stdout(sys.stderr):
                return nncf.quantize(
                    model,
                    dataset,
                    subset_size=len(samples),
                    preset=getattr(nncf.QuantizationPreset, recipe.preset),
                    ignored_scope=nncf.IgnoredScope(patterns=list(recipe.keep_float), validate=False),
                    advanced_parameters=advanced,
                )
        except Exception as e:  # NNCF raises many types; the caller turns this into a ConversionError
            raise IRError(f"NNCF INT8 quantization failed: {first_line(e)}") from None


def _unique_names(model, seen: dict[str, int] | None = None) -> None:
    """Give every op (recursively into ``If``/``Loop`` bodies) a unique friendly name."""
    seen = {} if seen is None else seen
    for op in model.get_ordered_ops():
        name = op.get_friendly_name()
        if name in seen:
            seen[name] += 1
            op.set_friendly_name(f"{name}__d2ov{seen[name]}")
        else:
            seen[name] = 0
        get_body = getattr(op, "get_function", None)
        if get_body is not None:
            for i in range(2):  # If: then/else; Loop/TensorIterator: body (index 0)
                try:
                    body = op.get_function(i)
                except Exception:
                    break
                if body is not None:
                    _unique_names(body, seen)
