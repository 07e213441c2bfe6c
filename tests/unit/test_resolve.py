"""One way from a model to a predictor (export.resolve), as the CLI, the app's service, bench and the
accuracy measure use it."""

from __future__ import annotations

import pytest

from d2ov_core.errors import ConversionError, DeviceError, InputError, ModelNotFoundError
from d2ov_core.export.resolve import given_ir, open_predictor, predictor_for, resolve_ir
from d2ov_core.runtime.ir import bf16_available
from d2ov_core.runtime.settings import PRECISIONS
from d2ov_core.store import catalog, lookup

NAME = "demo/faster_rcnn_shapes"
FP16, INT8 = lookup.bundled_ir(NAME, "FP16"), lookup.bundled_ir(NAME, "INT8")


def test_a_catalog_model_resolves_to_the_ir_that_serves_each_precision():
    assert resolve_ir(NAME) == FP16  # the default precision
    assert resolve_ir(NAME, PRECISIONS["INT8"]) == INT8
    assert resolve_ir(catalog.get(NAME), PRECISIONS["BF16"]) == FP16  # a spec is not looked up again by name


def test_an_ir_given_by_path_runs_at_its_own_precision_or_the_one_asked_for():
    assert given_ir(str(FP16.parent)) == FP16 and given_ir(NAME) is None and given_ir(catalog.get(NAME)) is None
    assert resolve_ir(str(INT8.parent)) == INT8
    assert resolve_ir(str(FP16), PRECISIONS["BF16"]) == FP16
    with pytest.raises(InputError, match="is an INT8 IR; precision FP16 needs an FP16 IR"):
        resolve_ir(str(INT8), PRECISIONS["FP16"])


def test_what_cannot_be_resolved_says_why():
    with pytest.raises(ModelNotFoundError):
        resolve_ir("COCO-Detection/no_such_model")
    spec = catalog.get("COCO-Detection/retinanet_R_50_FPN_1x")
    with pytest.raises(ConversionError, match="no INT8 IR of COCO-Detection/retinanet_R_50_FPN_1x yet.*--calibration"):
        resolve_ir(spec, PRECISIONS["INT8"])


def test_the_predictor_computes_as_its_precision_says():
    assert open_predictor(FP16, PRECISIONS["FP16"]).compute == "f32"
    assert predictor_for(NAME, PRECISIONS["INT8"]).precision == "INT8"
    if bf16_available():
        assert open_predictor(FP16, PRECISIONS["BF16"]).compute == "bf16"
    else:
        with pytest.raises(DeviceError, match="native bfloat16"):
            open_predictor(FP16, PRECISIONS["BF16"])
