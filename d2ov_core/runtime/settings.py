"""The one typed table of model settings: what the IR's ``rt_info`` carries, what the runtime reads,
and which of them the CLI (flags) and the UI (controls) expose.

Values live in the IR under ``rt_info["model_info"][key]`` (the layout of OpenVINO's model_api;
key names are model_api's where the meaning matches: ``labels``, ``confidence_threshold``,
``iou_threshold``, ``model_type``). Every value is stored as a JSON string so lists of class names
with spaces ("traffic light") survive; :func:`decode` turns them back into typed Python values.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
from collections.abc import Mapping
from typing import Any

from ..errors import InputError

__all__ = [
    "Setting",
    "SETTINGS",
    "RT_INFO_SECTION",
    "IRMetadata",
    "AccuracyRow",
    "encode",
    "decode",
    "decode_all",
    "check_value",
    "AP_KEYS",
    "ACCURACY_KEYS",
    "primary_metric",
    "ap_text",
    "Precision",
    "PRECISIONS",
    "DEFAULT_PRECISION",
    "precision",
    "IR_PRECISIONS",
]

RT_INFO_SECTION = "model_info"


@dataclasses.dataclass(frozen=True)
class Setting:
    key: str
    type: type
    default: Any
    description: str
    required: bool = False  # an IR without it is not a d2ov IR
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None


def _s(
    default: Any,
    description: str,
    *,
    required: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """One row of the settings table: a dataclass field of :class:`IRMetadata` carrying its row."""
    row = {"description": description, "required": required, "minimum": minimum, "maximum": maximum, "choices": choices}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=functools.partial(copy.deepcopy, default), metadata=row)
    return dataclasses.field(default=default, metadata=row)


def _plain(value: Any) -> Any:
    """``value`` with every row object (:class:`AccuracyRow`) turned into its JSON dict."""
    if isinstance(value, AccuracyRow):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class AccuracyRow:
    """One precision's accuracy, measured at conversion (:mod:`d2ov_core.measure.accuracy`): COCO APs
    in percent (``None`` where the task has no such measure), PQ for panoptic models, the median
    model time per image and the set it was measured on. A row of the ``accuracy`` setting."""

    box_AP: float | None
    mask_AP: float | None
    ms: float
    images: int
    set: str
    keypoint_AP: float | None = None
    PQ: float | None = None
    PQ_things: float | None = None
    PQ_stuff: float | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "set":
                ok = isinstance(value, str)
            elif f.name == "images":
                ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            else:
                ok = (value is None and f.name != "ms") or (
                    isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                )
            if not ok:
                raise ValueError(f"accuracy row: {f.name} expected {f.type}, found {value!r}")

    @classmethod
    def of(cls, row: Mapping[str, Any] | AccuracyRow) -> AccuracyRow:
        """A row from its JSON dict (the ``accuracy`` setting's form); ``ValueError`` naming the
        keys that are missing. Keys this version does not know (a measure a later d2ov adds) are
        left out, as unknown settings are: an IR from a newer converter still loads."""
        if isinstance(row, AccuracyRow):
            return row
        if not isinstance(row, Mapping):
            raise ValueError(f"accuracy row: expected a JSON object, found {row!r}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        missing = [n for n, f in fields.items() if f.default is dataclasses.MISSING and n not in row]
        if missing:
            found = ", ".join(sorted(map(str, row))) or "nothing"
            raise ValueError(
                f"accuracy row: expected keys {', '.join(fields)} (missing {', '.join(missing)}), found {found}"
            )
        return cls(**{k: v for k, v in row.items() if k in fields})

    def value(self, key: str) -> float | None:
        """The measure called ``key`` (one of :data:`ACCURACY_KEYS`), ``None`` where not measured."""
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: box and mask AP always (``null`` where not measured), the task's own
        measures only where measured, then time, image count and set."""
        first = {"box_AP": self.box_AP, "mask_AP": self.mask_AP}
        own = {
            k: getattr(self, k) for k in ("keypoint_AP", "PQ", "PQ_things", "PQ_stuff") if getattr(self, k) is not None
        }
        return {**first, **own, "ms": self.ms, "images": self.images, "set": self.set}


@dataclasses.dataclass(frozen=True)
class IRMetadata:
    """An IR's d2ov metadata (rt_info ``model_info``), typed and checked on construction.

    This class IS the settings table: one field per setting (name, type, default; its description,
    whether it is required, its range or choices in the field's metadata), in the order they are
    written into an IR. Read as ``meta.labels``; ``to_dict()`` for JSON. ``accuracy`` holds
    :class:`AccuracyRow` objects (JSON dicts given to the constructor are turned into them).
    """

    d2ov_version: str = _s("", "d2ov version that wrote the IR", required=True)
    model_type: str = _s("d2ov_rcnn", "model_api-style model type tag", required=True)
    task: str = _s(
        "detection",
        "detection, instance_segmentation, keypoints or panoptic_segmentation",
        required=True,
        choices=("detection", "instance_segmentation", "keypoints", "panoptic_segmentation"),
    )
    model_name: str = _s("", "catalog name or config path the IR was made from", required=True)
    meta_architecture: str = _s("GeneralizedRCNN", "Detectron2 MODEL.META_ARCHITECTURE")
    labels: list[Any] = _s([], "class names, index = class id", required=True)
    keypoint_names: list[Any] = _s([], "keypoint models: keypoint names, in the order the graph's heatmaps come")
    keypoint_skeleton: list[Any] = _s([], "keypoint models: [name, name] pairs joined by a line when drawn")
    keypoint_oks_sigmas: list[Any] = _s([], "keypoint models: per-keypoint OKS sigmas keypoint AP is computed with")
    stuff_classes: list[Any] = _s(
        [],
        "panoptic models: the semantic head's classes in label order; "
        "label 0 stands for all thing classes, 1.. are stuff",
    )
    sem_seg_stride: int = _s(
        1,
        "panoptic models: the sem_seg output's stride: the semantic head's "
        "upsampling (SEM_SEG_HEAD.COMMON_STRIDE, 4) that the runtime does; 1 "
        "for IRs whose graph upsampled itself",
    )
    panoptic_overlap_threshold: float = _s(
        0.5,
        "panoptic merge: an instance is skipped when more "
        "than this share of its mask is already taken "
        "(MODEL.PANOPTIC_FPN.COMBINE.OVERLAP_THRESH)",
        minimum=0.0,
        maximum=1.0,
    )
    panoptic_stuff_area_threshold: int = _s(
        4096,
        "panoptic merge: stuff segments with fewer pixels are dropped (MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT)",
    )
    panoptic_score_threshold: float = _s(
        0.5,
        "panoptic merge: instances below this score are left "
        "out (MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_T"
        "HRESH)",
        minimum=0.0,
        maximum=1.0,
    )
    input_format: str = _s(
        "BGR", "channel order the graph expects (cfg.INPUT.FORMAT)", required=True, choices=("BGR", "RGB")
    )
    min_size: int = _s(800, "ResizeShortestEdge: shorter side (cfg.INPUT.MIN_SIZE_TEST)", required=True)
    max_size: int = _s(1333, "ResizeShortestEdge: longer side cap (cfg.INPUT.MAX_SIZE_TEST)", required=True)
    pixel_mean: list[Any] = _s(
        [103.53, 116.28, 123.675],
        "cfg.MODEL.PIXEL_MEAN in input_format order: the value static-shape letterboxing pads with",
    )
    size_divisibility: int = _s(32, "padding inside the graph (informational)")
    graph_score_threshold: float = _s(0.05, "score threshold frozen into the graph: nothing below it can be returned")
    iou_threshold: float = _s(0.5, "NMS IoU threshold frozen into the graph")
    max_detections: int = _s(100, "detections per image frozen into the graph")
    outputs: list[Any] = _s([], "IR output names, in order", required=True)
    precision: str = _s("FP32", "weights precision of the IR", choices=("FP32", "FP16", "INT8"))
    calibration: str = _s("", "INT8 only: the calibration set (folder name and image count)")
    quantization: str = _s("", "INT8 only: the NNCF recipe (preset, range estimator, what stays float)")
    accuracy: dict[str, AccuracyRow] = _s(
        {},
        "COCO AP measured at conversion, per precision: {precision: "
        "{box_AP, mask_AP, keypoint_AP, PQ, PQ_things, PQ_stuff, ms "
        "(median model time per image), images, set}}; FP32 is the "
        "float reference where present",
    )
    verification: dict[str, Any] = _s(
        {},
        "d2ov verify at conversion (measure/proof.py): {images, "
        "reference, candidate, matched (detections scoring >= "
        "min_score), images_within_tolerance, max_box_dev (px), "
        "max_score_dev, min_mask_iou, max_keypoint_dev, min_score, "
        "precision, against (the float Detectron2 model), "
        "image_names}",
    )
    source_config: str = _s("", "Detectron2 config (model-zoo path or file)")
    weights_source: str = _s("", "where the weights came from (URL, path or 'random')")
    weights_sha256: str = _s("", "sha256 of the weights file ('' for random)")
    config_sha256: str = _s("", "sha256 of the Detectron2 config file the IR was converted from")
    random_weights: bool = _s(False, "True: random init, for tests and speed only, NOT a detector")
    detectron2_version: str = _s("", "detectron2 version used to convert")
    torch_version: str = _s("", "torch version used to convert")
    openvino_version: str = _s("", "OpenVINO version used to convert")
    graph_revision: int = _s(
        0,
        "d2ov's conversion revision of the model's architecture family "
        "(store.catalog.GRAPH_REVISIONS); an IR of another revision is stale",
    )
    confidence_threshold: float = _s(0.5, "default score threshold applied after the graph", minimum=0.0, maximum=1.0)
    mask_threshold: float = _s(0.5, "probability above which a mask pixel is set", minimum=0.0, maximum=1.0)

    __hash__ = None  # type: ignore[assignment]  # frozen but holds lists: not hashable

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON-ready) of every setting, in the table's order."""
        return {key: _plain(copy.deepcopy(getattr(self, key))) for key in SETTINGS}

    def __post_init__(self) -> None:
        if isinstance(self.accuracy, dict):
            rows = {}
            for p, row in self.accuracy.items():
                try:
                    rows[str(p)] = AccuracyRow.of(row)
                except (TypeError, ValueError) as e:
                    raise ValueError(f"accuracy {p} row: {str(e).removeprefix('accuracy row: ')}") from None
            object.__setattr__(self, "accuracy", rows)
        for key, setting in SETTINGS.items():
            value = getattr(self, key)
            if setting.type is float:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            else:
                ok = isinstance(value, setting.type) and (setting.type is bool or not isinstance(value, bool))
            if not ok:
                raise ValueError(f"{key}: expected {setting.type.__name__}, found {value!r}")
            if setting.choices is not None and value not in setting.choices:
                raise ValueError(f"{key}: expected one of {', '.join(setting.choices)}, found {value!r}")


_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict}


def _setting(f: dataclasses.Field) -> Setting:
    default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
    return Setting(f.name, _TYPES[str(f.type).split("[")[0]], default, **f.metadata)


#: The settings table by key (derived from :class:`IRMetadata`'s fields).
SETTINGS: dict[str, Setting] = {f.name: _setting(f) for f in dataclasses.fields(IRMetadata)}


def encode(key: str, value: Any) -> str:
    """Typed value -> the JSON string stored in rt_info."""
    return json.dumps(_plain(SETTINGS[key].type(value)))


def decode(key: str, text: str) -> Any:
    """rt_info string -> typed value (raises ``ValueError`` on a malformed value)."""
    setting = SETTINGS[key]
    value = json.loads(text)
    if setting.type in (list, dict):
        if not isinstance(value, setting.type):
            raise ValueError(f"{key}: expected a JSON {setting.type.__name__}, found {text!r}")
        return value
    return setting.type(value)


def decode_all(texts: dict[str, str]) -> IRMetadata:
    """All settings from their rt_info strings (``{key: JSON string}``, as stored in an IR and as a
    model server returns them), defaults filled in for optional keys missing from ``texts``.

    Raises ``KeyError(key)`` for the first missing required key and ``ValueError`` naming the key
    for a malformed value; callers turn them into their own one-line errors."""
    meta: dict[str, Any] = {}
    for key, setting in SETTINGS.items():
        if key not in texts:
            if setting.required:
                raise KeyError(key)
            meta[key] = setting.default
            continue
        try:
            meta[key] = decode(key, str(texts[key]))
        except ValueError as e:
            raise ValueError(f"malformed rt_info {key}={texts[key]!r} ({e})") from None
    try:
        return IRMetadata(**meta)
    except ValueError as e:
        raise ValueError(f"malformed rt_info {e}") from None


def check_value(key: str, value: Any) -> Any:
    """Validate a user-supplied runtime value; raise :class:`InputError` naming the range."""
    setting = SETTINGS[key]
    try:
        v = setting.type(value)
    except (TypeError, ValueError):
        raise InputError(f"{key.replace('_', ' ')} must be a {setting.type.__name__}, got {value!r}") from None
    if setting.type is float and math.isnan(v):
        raise InputError(f"{key.replace('_', ' ')} must be a number in [{setting.minimum}, {setting.maximum}], got NaN")
    if (setting.minimum is not None and v < setting.minimum) or (setting.maximum is not None and v > setting.maximum):
        raise InputError(
            f"{key.replace('_', ' ')} must be in [{setting.minimum:g}, {setting.maximum:g}], got {value!r}"
        )
    if setting.choices is not None and v not in setting.choices:
        raise InputError(f"{key}: expected one of {', '.join(setting.choices)}, got {value!r}")
    return v


#: the APs a row of the ``accuracy`` setting may hold (absent or ``None`` where the task has none); panoptic
#: models also carry ``PQ`` (panoptic quality, percent)
AP_KEYS = ("box_AP", "mask_AP", "keypoint_AP")


#: every accuracy measure a row may hold, the one that matters most for its task first (precision
#: choices are held to all of them; labels show the first present)
ACCURACY_KEYS = ("PQ", "keypoint_AP", "mask_AP", "box_AP")


def primary_metric(row: AccuracyRow) -> str | None:
    """The key of ``row``'s most telling measure: PQ for panoptic models, keypoint AP for keypoint
    models, mask AP for instance segmentation, else box AP."""
    return next((k for k in ACCURACY_KEYS if row.value(k) is not None), None)


def ap_text(row: AccuracyRow, digits: int = 1) -> str:
    """``box AP 60.8, mask AP 66.4`` (``PQ 61.2, ...`` first for panoptic models): what a row holds."""
    parts = [f"PQ {row.PQ:.{digits}f}"] if row.PQ is not None else []
    values = [(k, row.value(k)) for k in AP_KEYS]
    return ", ".join(parts + [f"{k.split('_')[0]} AP {v:.{digits}f}" for k, v in values if v is not None])


def accuracy_by_precision(measured: dict[str, dict[str, AccuracyRow]]) -> dict[str, AccuracyRow]:
    """Accuracy rows per precision, from the ``accuracy`` setting of each ready IR (``{IR precision:
    accuracy}``): each precision's row from the IR it runs (BF16: the FP16 IR's BF16 row), plus the
    float reference (FP32) from whichever IR measured it."""
    rows = {p: measured[PRECISIONS[p].ir][p] for p in PRECISIONS if p in measured.get(PRECISIONS[p].ir, {})}
    if "FP32" not in rows:
        rows.update(next(({"FP32": m["FP32"]} for m in measured.values() if "FP32" in m), {}))
    return rows


# ----------------------------------------------------------------------------- precisions


@dataclasses.dataclass(frozen=True)
class Precision:
    """A precision users choose (CLI ``--precision``, the app's control, the API): which IR runs
    (its weights) and in what floating-point arithmetic the CPU computes it."""

    name: str
    ir: str  # the IR's weights: FP32 | FP16 | INT8
    compute: str  # CPU floating-point compute: f32 | bf16
    description: str


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in [
        Precision("FP16", "FP16", "f32", "FP16-compressed weights, exact f32 compute (the default IR)"),
        Precision("FP32", "FP32", "f32", "full-precision weights, exact f32 compute"),
        Precision(
            "BF16",
            "FP16",
            "bf16",
            "the FP16 IR computed in bfloat16: faster on CPUs with native bf16 (AVX512_BF16, AMX), slightly less exact",
        ),
        Precision("INT8", "INT8", "f32", "NNCF post-training INT8 IR (quantized convolutions and matmuls)"),
    ]
}
#: Weight precisions of IR files (what ``d2ov convert --precision`` writes).
IR_PRECISIONS = ("FP16", "FP32", "INT8")
DEFAULT_PRECISION = "FP16"


def precision(name: Any) -> Precision:
    """The :class:`Precision` called ``name`` (case-insensitive); :class:`InputError` naming the choices."""
    key = str(name or DEFAULT_PRECISION).upper()
    if key not in PRECISIONS:
        raise InputError(f"unknown precision {name!r}: expected one of {', '.join(PRECISIONS)}")
    return PRECISIONS[key]
