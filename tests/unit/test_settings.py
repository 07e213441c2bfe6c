"""The settings table: typed rt_info values, user-value checks, the precision table."""

import json
import math

import pytest

from d2ov_core.errors import InputError
from d2ov_core.runtime import settings as S


@pytest.mark.parametrize(
    "key,value",
    [
        ("labels", ["traffic light", "a,b", "ü"]),
        ("min_size", 800),
        ("graph_score_threshold", 0.05),
        ("random_weights", True),
        ("labels", []),
    ],
)
def test_encode_decode_round_trip(key, value):
    text = S.encode(key, value)
    assert isinstance(text, str)
    assert S.decode(key, text) == value


def test_decode_rejects_a_malformed_list():
    with pytest.raises(ValueError, match="expected a JSON list"):
        S.decode("labels", '"circle"')


@pytest.mark.parametrize(
    "value,msg",
    [(1.5, r"must be in \[0, 1\]"), (-0.1, r"must be in \[0, 1\]"), (math.nan, "NaN"), ("abc", "must be a float")],
)
def test_check_value_names_the_range(value, msg):
    with pytest.raises(InputError, match=msg):
        S.check_value("confidence_threshold", value)


def test_check_value_accepts_the_range_and_converts():
    assert S.check_value("confidence_threshold", "0.25") == 0.25
    assert S.check_value("confidence_threshold", 0) == 0.0 and S.check_value("confidence_threshold", 1) == 1.0


def test_every_required_setting_has_a_description_and_choices_fit_the_default():
    for s in S.SETTINGS.values():
        assert s.description
        if s.choices:
            assert s.default in s.choices, s.key


def test_precision_table():
    assert S.precision("bf16") == S.PRECISIONS["BF16"]
    assert S.PRECISIONS["BF16"].ir == "FP16" and S.PRECISIONS["BF16"].compute == "bf16"
    assert {p.ir for p in S.PRECISIONS.values()} == set(S.IR_PRECISIONS)
    assert S.precision(None).name == S.DEFAULT_PRECISION
    with pytest.raises(InputError, match="expected one of FP16, FP32, BF16, INT8"):
        S.precision("FP8")


def _texts(**changes):
    base = {
        "d2ov_version": "0",
        "model_type": "d2ov_rcnn",
        "task": "detection",
        "model_name": "m",
        "labels": ["a", "b"],
        "input_format": "BGR",
        "min_size": 800,
        "max_size": 1333,
        "outputs": ["x"],
    }
    return {k: json.dumps(v) for k, v in {**base, **changes}.items()}


def test_ir_metadata_is_a_typed_frozen_record_of_the_settings_table():
    import dataclasses

    meta = S.decode_all(_texts())
    assert isinstance(meta, S.IRMetadata) and dataclasses.is_dataclass(meta)
    assert [f.name for f in dataclasses.fields(meta)] == list(S.SETTINGS)
    assert meta.labels == ["a", "b"] and meta.min_size == 800 and meta.accuracy == {}
    assert meta.confidence_threshold == 0.5 and meta.precision == "FP32"  # defaults filled in
    with pytest.raises(dataclasses.FrozenInstanceError):
        meta.min_size = 1
    assert json.loads(json.dumps(meta.to_dict()))["labels"] == ["a", "b"]
    with pytest.raises(TypeError):  # read by attribute only: no second, untyped way in
        meta["labels"]  # type: ignore[index]
    assert S.decode_all(_texts()) == meta


@pytest.mark.parametrize(
    "changes, msg",
    [
        (
            {"task": "segmentation"},
            "task: expected one of detection, instance_segmentation, keypoints, panoptic_segmentation, found 'segmentation'",
        ),
        ({"precision": "FP8"}, "precision: expected one of FP32, FP16, INT8, found 'FP8'"),
        ({"labels": {"a": 1}}, "labels"),
    ],
)
def test_ir_metadata_refuses_values_outside_the_table(changes, msg):
    with pytest.raises(ValueError, match=msg):
        S.decode_all(_texts(**changes))


#: rows as the bundled IRs carry them (d2ov_core/data/ir/*/INT8): a detector's and a panoptic model's
DETECTOR_ROW = {"box_AP": 61.427, "mask_AP": None, "ms": 30.7, "images": 200, "set": "test.json"}
PANOPTIC_ROW = {
    "box_AP": 51.485,
    "mask_AP": 57.06,
    "PQ": 64.941,
    "PQ_things": 54.971,
    "PQ_stuff": 72.418,
    "ms": 60.7,
    "images": 200,
    "set": "test.json",
}


def test_accuracy_rows_are_typed_and_keep_their_json_form():
    meta = S.decode_all(_texts(accuracy={"INT8": DETECTOR_ROW, "FP32": PANOPTIC_ROW}))
    det, pan = meta.accuracy["INT8"], meta.accuracy["FP32"]
    assert isinstance(det, S.AccuracyRow) and det.box_AP == 61.427 and det.mask_AP is None and det.ms == 30.7
    assert pan.PQ == 64.941 and pan.value("PQ_stuff") == 72.418 and pan.keypoint_AP is None
    assert S.primary_metric(det) == "box_AP" and S.primary_metric(pan) == "PQ"
    assert S.ap_text(det) == "box AP 61.4" and S.ap_text(pan, 2) == "PQ 64.94, box AP 51.48, mask AP 57.06"
    # written back exactly as read: keys, order, nulls (what the IR, d2ov.json and the Hub card hold)
    assert json.dumps(det.to_dict()) == json.dumps(DETECTOR_ROW)
    assert json.dumps(pan.to_dict()) == json.dumps(PANOPTIC_ROW)
    assert json.loads(S.encode("accuracy", meta.accuracy)) == {"INT8": DETECTOR_ROW, "FP32": PANOPTIC_ROW}
    assert meta.to_dict()["accuracy"]["INT8"] == DETECTOR_ROW
    # a measure a later d2ov adds is left out, as unknown settings are: its IRs still load here
    later = S.decode_all(_texts(accuracy={"INT8": dict(DETECTOR_ROW, mIoU=48.2)}))
    assert later.accuracy["INT8"].to_dict() == DETECTOR_ROW


@pytest.mark.parametrize(
    "row, msg",
    [
        ({k: v for k, v in DETECTOR_ROW.items() if k != "ms"}, r"missing ms\)"),
        (dict(DETECTOR_ROW, ms="fast"), "ms expected float, found 'fast'"),
        (dict(DETECTOR_ROW, box_AP=float("nan")), "box_AP expected float | None, found nan"),
        (dict(DETECTOR_ROW, images=-1), "images expected int, found -1"),
        ([1, 2], "expected a JSON object, found \\[1, 2\\]"),
    ],
)
def test_a_malformed_accuracy_row_is_refused_naming_what_is_wrong(row, msg):
    with pytest.raises(ValueError, match=r"^malformed rt_info accuracy FP16 row: .*" + msg):
        S.decode_all(_texts(accuracy={"FP16": row}))
