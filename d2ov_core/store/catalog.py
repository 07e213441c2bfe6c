"""The model catalog: Detectron2 Model Zoo R-CNN/RetinaNet entries and d2ov's bundled demo models.

A model is named by its catalog name (``COCO-Detection/faster_rcnn_R_50_FPN_1x``, ``demo/...``);
unknown names raise :class:`~d2ov_core.errors.ModelNotFoundError` listing close matches. A user's own
model is not in the catalog: it is a config file + weights + class names (see :func:`custom`).
No torch or detectron2 import here.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from pathlib import Path

from ..errors import InputError, ModelNotFoundError
from ..runtime.tasks import TASK_NAMES, get_task
from .coco_classes import (
    COCO_CLASSES,
    COCO_KEYPOINT_NAMES,
    COCO_KEYPOINT_OKS_SIGMAS,
    COCO_KEYPOINT_SKELETON,
    COCO_PANOPTIC_STUFF_CLASSES,
)

__all__ = [
    "GRAPH_REVISIONS",
    "ModelSpec",
    "CATALOG",
    "get",
    "names",
    "DEFAULTS",
    "DATA_DIR",
    "SAMPLES_DIR",
    "DEMO_DIR",
    "REPO_ROOT",
    "sample_images",
    "custom",
    "spec_for",
]

MODEL_ZOO_URL = "https://dl.fbaipublicfiles.com/detectron2/"
#: d2ov's conversion revision per architecture family (Detectron2's ``MODEL.META_ARCHITECTURE``), bumped
#: when that family's IR changes for the same inputs, so a change to one family's graph invalidates
#: only that family's cached IRs. History (all families until revision 7): 2: exact padding; 3: INT8
#: keeps the mask head in floating point; 4: stable proposal ranking; 5: its fast form; 6: no sort of
#: the chosen proposals (TopK, index order; NMS ranks them), ROI pooling gathered into box order;
#: 7: padding between the mean subtraction and the division by std (INT8 stem convolution runs in INT8).
GRAPH_REVISIONS: dict[str, int] = {
    "GeneralizedRCNN": 7,  # Faster / Mask / Keypoint R-CNN
    "RetinaNet": 7,
    "PanopticFPN": 7,
}
#: Data shipped inside the package (also in a wheel): bundled IRs, demo samples, demo model cards.
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SAMPLES_DIR = DATA_DIR / "samples"
#: The checkout the package sits in, when it does (``None`` for an installed wheel).
REPO_ROOT: Path | None = DATA_DIR.parent.parent if (DATA_DIR.parent.parent / "pyproject.toml").is_file() else None
#: Training artefacts of the demo models (config, weights, logs): in a repository checkout only.
DEMO_DIR = (REPO_ROOT or DATA_DIR.parent) / "models" / "demo"


def sample_images(task: str | None = None) -> list[Path]:
    """The demo models' sample images (shipped with the package) that fit ``task``
    (``<examples>_*.jpg``, :attr:`~d2ov_core.runtime.tasks.Task.examples`: stick figures for the
    keypoint demo model, ...); ``None``: the detection demo's."""
    return sorted(SAMPLES_DIR.glob(f"{get_task(task or TASK_NAMES[0]).examples}_*.jpg"))


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str  # "detection" | "instance_segmentation" | "keypoints" | "panoptic_segmentation"
    config: str  # model-zoo relative path ("COCO-Detection/x.yaml") or an absolute file path
    weights: str  # URL or absolute path
    classes: tuple[str, ...]
    box_ap: float | None = None
    mask_ap: float | None = None
    source: str = "model_zoo"  # "model_zoo" | "demo" | "custom"
    weights_sha256: str = ""
    config_sha256: str = ""  # demo models: an IR converted from another version of their config is stale
    description: str = ""
    keypoint_ap: float | None = None
    #: keypoint models: names in the order the model predicts them, the skeleton's lines (name pairs)
    #: and the OKS sigmas keypoint AP is computed with
    keypoint_names: tuple[str, ...] = ()
    keypoint_skeleton: tuple[tuple[str, str], ...] = ()
    keypoint_oks_sigmas: tuple[float, ...] = ()
    #: panoptic models: the semantic head's classes in label order (label 0 = "things", all thing
    #: classes together; then the stuff classes) and the published panoptic quality
    stuff_classes: tuple[str, ...] = ()
    pq: float | None = None

    @property
    def config_is_model_zoo(self) -> bool:
        return self.source == "model_zoo"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["classes"] = list(self.classes)
        d["num_classes"] = len(self.classes)
        d["keypoint_names"] = list(self.keypoint_names)
        d["keypoint_skeleton"] = [list(p) for p in self.keypoint_skeleton]
        d["keypoint_oks_sigmas"] = list(self.keypoint_oks_sigmas)
        d["stuff_classes"] = list(self.stuff_classes)
        return d


# (name, model id/file suffix, box AP, mask AP) from Detectron2's MODEL_ZOO.md
_ZOO = [
    ("COCO-Detection/faster_rcnn_R_50_C4_1x", "137257644/model_final_721ade.pkl", 35.7, None),
    ("COCO-Detection/faster_rcnn_R_50_DC5_1x", "137847829/model_final_51d356.pkl", 37.3, None),
    ("COCO-Detection/faster_rcnn_R_50_FPN_1x", "137257794/model_final_b275ba.pkl", 37.9, None),
    ("COCO-Detection/faster_rcnn_R_50_C4_3x", "137849393/model_final_f97cb7.pkl", 38.4, None),
    ("COCO-Detection/faster_rcnn_R_50_DC5_3x", "137849425/model_final_68d202.pkl", 39.0, None),
    ("COCO-Detection/faster_rcnn_R_50_FPN_3x", "137849458/model_final_280758.pkl", 40.2, None),
    ("COCO-Detection/faster_rcnn_R_101_C4_3x", "138204752/model_final_298dad.pkl", 41.1, None),
    ("COCO-Detection/faster_rcnn_R_101_DC5_3x", "138204841/model_final_3e0943.pkl", 40.6, None),
    ("COCO-Detection/faster_rcnn_R_101_FPN_3x", "137851257/model_final_f6e8b1.pkl", 42.0, None),
    ("COCO-Detection/faster_rcnn_X_101_32x8d_FPN_3x", "139173657/model_final_68b088.pkl", 43.0, None),
    ("COCO-Detection/retinanet_R_50_FPN_1x", "137593951/model_final_b796dc.pkl", 36.5, None),
    ("COCO-Detection/retinanet_R_50_FPN_3x", "137849486/model_final_4cafe0.pkl", 37.9, None),
    ("COCO-Detection/retinanet_R_101_FPN_3x", "138363263/model_final_59f53c.pkl", 39.9, None),
    ("COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x", "137259246/model_final_9243eb.pkl", 36.8, 32.2),
    ("COCO-InstanceSegmentation/mask_rcnn_R_50_DC5_1x", "137260150/model_final_4f86c3.pkl", 38.3, 34.2),
    ("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x", "137260431/model_final_a54504.pkl", 38.6, 35.2),
    ("COCO-InstanceSegmentation/mask_rcnn_R_50_C4_3x", "137849525/model_final_4ce675.pkl", 39.8, 34.4),
    ("COCO-InstanceSegmentation/mask_rcnn_R_50_DC5_3x", "137849551/model_final_84107b.pkl", 40.0, 35.9),
    ("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x", "137849600/model_final_f10217.pkl", 41.0, 37.2),
    ("COCO-InstanceSegmentation/mask_rcnn_R_101_C4_3x", "138363239/model_final_a2914c.pkl", 42.6, 36.7),
    ("COCO-InstanceSegmentation/mask_rcnn_R_101_DC5_3x", "138363294/model_final_0464b7.pkl", 41.9, 37.3),
    ("COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x", "138205316/model_final_a3ec72.pkl", 42.9, 38.6),
    ("COCO-InstanceSegmentation/mask_rcnn_X_101_32x8d_FPN_3x", "139653917/model_final_2d9806.pkl", 44.3, 39.5),
]
# (name, model id/file suffix, box AP, keypoint AP): person detection + 17 COCO keypoints
_ZOO_KEYPOINTS = [
    ("COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x", "137261548/model_final_04e291.pkl", 53.6, 64.0),
    ("COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x", "137849621/model_final_a6e10b.pkl", 55.4, 65.5),
    ("COCO-Keypoints/keypoint_rcnn_R_101_FPN_3x", "138363331/model_final_997cc7.pkl", 56.4, 66.1),
    ("COCO-Keypoints/keypoint_rcnn_X_101_32x8d_FPN_3x", "139686956/model_final_5ad38f.pkl", 57.3, 66.0),
]

# (name, model id/file suffix, box AP, mask AP, PQ): COCO panoptic, 80 thing + 53 stuff classes
_ZOO_PANOPTIC = [
    ("COCO-PanopticSegmentation/panoptic_fpn_R_50_1x", "139514544/model_final_dbfeb4.pkl", 37.6, 34.7, 39.4),
    ("COCO-PanopticSegmentation/panoptic_fpn_R_50_3x", "139514569/model_final_c10459.pkl", 40.0, 36.5, 41.5),
    ("COCO-PanopticSegmentation/panoptic_fpn_R_101_3x", "139514519/model_final_cafdb1.pkl", 42.4, 38.5, 43.0),
]


def _zoo_spec(name: str, suffix: str, box_ap: float, mask_ap: float | None) -> ModelSpec:
    task = "instance_segmentation" if name.startswith("COCO-InstanceSegmentation/") else "detection"
    arch = name.split("/", 1)[1]
    return ModelSpec(
        name=name,
        task=task,
        config=name + ".yaml",
        weights=f"{MODEL_ZOO_URL}{name}/{suffix}",
        classes=COCO_CLASSES,
        box_ap=box_ap,
        mask_ap=mask_ap,
        description=f"Detectron2 Model Zoo {arch} (COCO, 80 classes)",
    )


def _zoo_keypoint_spec(name: str, suffix: str, box_ap: float, keypoint_ap: float) -> ModelSpec:
    arch = name.split("/", 1)[1]
    return ModelSpec(
        name=name,
        task="keypoints",
        config=name + ".yaml",
        weights=f"{MODEL_ZOO_URL}{name}/{suffix}",
        classes=("person",),
        box_ap=box_ap,
        keypoint_ap=keypoint_ap,
        keypoint_names=COCO_KEYPOINT_NAMES,
        keypoint_skeleton=COCO_KEYPOINT_SKELETON,
        keypoint_oks_sigmas=COCO_KEYPOINT_OKS_SIGMAS,
        description=f"Detectron2 Model Zoo {arch} (COCO person keypoints, 17 per person)",
    )


def _zoo_panoptic_spec(name: str, suffix: str, box_ap: float, mask_ap: float, pq: float) -> ModelSpec:
    arch = name.split("/", 1)[1]
    return ModelSpec(
        name=name,
        task="panoptic_segmentation",
        config=name + ".yaml",
        weights=f"{MODEL_ZOO_URL}{name}/{suffix}",
        classes=COCO_CLASSES,
        box_ap=box_ap,
        mask_ap=mask_ap,
        pq=pq,
        stuff_classes=COCO_PANOPTIC_STUFF_CLASSES,
        description=f"Detectron2 Model Zoo {arch} (COCO panoptic, 80 thing and 53 stuff classes)",
    )


def _demo_specs() -> list[ModelSpec]:
    """Demo model cards ship with the package (``data/demo/<name>.json``); their Detectron2 config and
    weights are training artefacts in the repository (``models/demo/<name>/``)."""
    specs = []
    for card in sorted((DATA_DIR / "demo").glob("*.json")):
        info = json.loads(card.read_text())
        folder = DEMO_DIR / card.stem
        specs.append(
            ModelSpec(
                name=info["name"],
                task=info["task"],
                config=str(folder / info["config"]),
                weights=str(folder / info["weights"]),
                classes=tuple(info["classes"]),
                box_ap=info.get("box_AP"),
                mask_ap=info.get("mask_AP"),
                source="demo",
                weights_sha256=info.get("weights_sha256", ""),
                config_sha256=info.get("config_sha256", ""),
                description=(
                    f"d2ov demo model trained on synthetic stick figures ({len(info['keypoint_names'])} keypoints)"
                    if info["task"] == "keypoints"
                    else f"d2ov demo model trained on synthetic shapes ({', '.join(info['classes'])}) over "
                    f"textured regions ({', '.join(info['stuff_classes'][1:])})"
                    if info["task"] == "panoptic_segmentation"
                    else f"d2ov demo model trained on synthetic shapes ({', '.join(info['classes'])})"
                ),
                keypoint_ap=info.get("keypoint_AP"),
                keypoint_names=tuple(info.get("keypoint_names", ())),
                keypoint_skeleton=tuple(tuple(p) for p in info.get("keypoint_skeleton", ())),
                keypoint_oks_sigmas=tuple(info.get("keypoint_oks_sigmas", ())),
                stuff_classes=tuple(info.get("stuff_classes", ())),
                pq=info.get("PQ"),
            )
        )
    return specs


CATALOG: dict[str, ModelSpec] = {
    s.name: s
    for s in _demo_specs()
    + [_zoo_spec(*row) for row in _ZOO]
    + [_zoo_keypoint_spec(*row) for row in _ZOO_KEYPOINTS]
    + [_zoo_panoptic_spec(*row) for row in _ZOO_PANOPTIC]
}

#: The seed pair: the defaults when a model-zoo model is asked for without a name.
SEED_MODELS = ("COCO-Detection/faster_rcnn_R_50_FPN_1x", "COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x")
#: What `d2ov predict` and the app use when nothing is asked for: the bundled demo model.
DEFAULTS = {
    "detection": "demo/faster_rcnn_shapes",
    "instance_segmentation": "demo/mask_rcnn_shapes",
    "keypoints": "demo/keypoint_rcnn_figures",
}
DEFAULTS["panoptic_segmentation"] = (
    "demo/panoptic_fpn_shapes"
    if "demo/panoptic_fpn_shapes" in CATALOG
    else "COCO-PanopticSegmentation/panoptic_fpn_R_50_3x"
)


def names(task: str | None = None) -> list[str]:
    return [n for n, s in CATALOG.items() if task is None or s.task == task]


def get(name: str) -> ModelSpec:
    """The catalog entry ``name`` (".yaml" suffix tolerated)."""
    key = name[:-5] if name.endswith(".yaml") else name
    if key in CATALOG:
        return CATALOG[key]
    short = [n for n in CATALOG if n.split("/", 1)[-1] == key]
    if len(short) == 1:
        return CATALOG[short[0]]
    close = difflib.get_close_matches(key, list(CATALOG), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ModelNotFoundError(f"unknown model {name!r}{hint} (`d2ov list` shows all {len(CATALOG)} names)")


def custom(
    config: str | Path, weights: str, classes: list[str] | tuple[str, ...], task: str | None = None
) -> ModelSpec:
    """A user's own model: a Detectron2 config file, weights (path/URL/'random') and class names."""
    cfg = Path(config)
    if not cfg.is_file():
        raise ModelNotFoundError(f"config file not found: {config}")
    return ModelSpec(
        name=str(cfg),
        task=task or "detection",
        config=str(cfg.resolve()),
        weights=weights,
        classes=tuple(classes),
        source="custom",
        description=f"custom model {cfg.name}",
    )


def _read_classes(text: str) -> list[str]:
    p = Path(text)
    if p.suffix == ".txt" and p.is_file():
        names = [line.strip() for line in p.read_text().splitlines() if line.strip()]
    else:
        names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise InputError(f"--classes: expected comma-separated class names or a .txt file, got {text!r}")
    return names


def spec_for(model: str, weights: str | None = None, classes: str | None = None) -> ModelSpec:
    """What a command's MODEL argument names: a catalog name, or a Detectron2 config file (``.yaml``)
    of a user's own model, which needs ``weights`` (a path, a URL or 'random') and ``classes``
    (comma-separated names or a ``.txt`` file, one per line)."""
    p = Path(model)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        if not classes:
            raise InputError(f"{model}: a custom config needs --classes (comma-separated names or a .txt file)")
        if not weights:
            raise InputError(f"{model}: a custom config needs --weights (a path, a URL or 'random')")
        return custom(p, weights, _read_classes(classes))
    return get(model)
