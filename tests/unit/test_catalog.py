import pytest

from d2ov_core.errors import ModelNotFoundError
from d2ov_core.export import compat
from d2ov_core.store import catalog

compat.apply()
from detectron2 import model_zoo  # noqa: E402

RCNN = [n for n in catalog.names() if n.startswith("COCO-")]


def test_every_rcnn_config_of_the_model_zoo_is_in_the_catalog():
    import os

    root = os.path.dirname(model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"))
    root = os.path.dirname(root)
    expected = set()
    for folder in ("COCO-Detection", "COCO-InstanceSegmentation"):
        for f in os.listdir(os.path.join(root, folder)):
            if f.endswith(".yaml") and (f.startswith(("faster_rcnn", "mask_rcnn", "retinanet"))) and "giou" not in f:
                expected.add(f"{folder}/{f[:-5]}")
    assert expected <= set(RCNN), sorted(expected - set(RCNN))
    assert len(expected) == 23


@pytest.mark.parametrize("name", RCNN)
def test_zoo_entries_are_complete(name):
    spec = catalog.get(name)
    assert model_zoo.get_config_file(spec.config)
    assert spec.weights.startswith("https://dl.fbaipublicfiles.com/detectron2/" + name + "/")
    assert spec.weights.endswith(".pkl")
    if spec.task == "keypoints":  # person detection with 17 COCO keypoints
        assert spec.classes == ("person",) and 50 <= spec.box_ap <= 60 and 60 <= spec.keypoint_ap <= 70
        assert len(spec.keypoint_names) == len(spec.keypoint_oks_sigmas) == 17
        assert all(a in spec.keypoint_names and b in spec.keypoint_names for a, b in spec.keypoint_skeleton)
        return
    if spec.task == "panoptic_segmentation":  # 80 things + 53 stuff, published box/mask AP and PQ
        assert len(spec.classes) == 80 and len(spec.stuff_classes) == 54 and spec.stuff_classes[0] == "things"
        assert 37 <= spec.box_ap <= 43 and 34 <= spec.mask_ap <= 39 and 39 <= spec.pq <= 43
        return
    assert len(spec.classes) == 80 and spec.classes[0] == "person"
    assert 35 <= spec.box_ap <= 45
    assert (spec.mask_ap is not None) == (spec.task == "instance_segmentation")


def test_keypoint_zoo_entries_match_detectron2():
    """The four COCO-Keypoints R-CNNs, with Detectron2's own keypoint names, skeleton and checkpoint ids."""
    from detectron2.data.datasets.builtin_meta import COCO_PERSON_KEYPOINT_NAMES, KEYPOINT_CONNECTION_RULES
    from detectron2.model_zoo.model_zoo import _ModelZooUrls

    kp = [n for n in catalog.names("keypoints") if n.startswith("COCO-Keypoints/")]
    assert kp == [n for n in _ModelZooUrls.CONFIG_PATH_TO_URL_SUFFIX if n.startswith("COCO-Keypoints/")]
    for name in kp:
        spec = catalog.get(name)
        assert spec.weights.endswith(_ModelZooUrls.CONFIG_PATH_TO_URL_SUFFIX[name])
        assert spec.keypoint_names == COCO_PERSON_KEYPOINT_NAMES
        assert list(spec.keypoint_skeleton) == [(a, b) for a, b, _ in KEYPOINT_CONNECTION_RULES]


def test_panoptic_zoo_entries_match_detectron2():
    """The three COCO-PanopticSegmentation Panoptic FPNs, with Detectron2's checkpoint ids and its COCO
    panoptic class lists (things in the thing order, semantic labels in the stuff order)."""
    from detectron2.data.datasets.builtin_meta import _get_builtin_metadata
    from detectron2.model_zoo.model_zoo import _ModelZooUrls

    meta = _get_builtin_metadata("coco_panoptic_separated")
    pan = catalog.names("panoptic_segmentation")
    zoo = [n for n in pan if n.startswith("COCO-PanopticSegmentation/")]
    assert zoo == [n for n in _ModelZooUrls.CONFIG_PATH_TO_URL_SUFFIX if n.startswith("COCO-PanopticSegmentation/")]
    for name in zoo:
        spec = catalog.get(name)
        assert spec.weights.endswith(_ModelZooUrls.CONFIG_PATH_TO_URL_SUFFIX[name])
        assert list(spec.classes) == meta["thing_classes"] and list(spec.stuff_classes) == meta["stuff_classes"]
    assert catalog.get("COCO-PanopticSegmentation/panoptic_fpn_R_101_3x").pq == 43.0


def test_seed_models_and_published_ap():
    assert catalog.get("COCO-Detection/faster_rcnn_R_50_FPN_1x").box_ap == 37.9
    m = catalog.get("COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x")
    assert (m.box_ap, m.mask_ap) == (42.9, 38.6)
    assert catalog.get("mask_rcnn_R_101_FPN_3x.yaml") is m  # short name and .yaml tolerated


@pytest.mark.parametrize("bad", ["faster_rcnn_R50", "../etc/passwd", "", "COCO-Detection/"])
def test_unknown_names_raise_with_suggestions(bad):
    with pytest.raises(ModelNotFoundError, match="unknown model"):
        catalog.get(bad)


def test_error_suggests_close_names():
    with pytest.raises(ModelNotFoundError, match="did you mean COCO-Detection/faster_rcnn_R_50_FPN"):
        catalog.get("COCO-Detection/faster_rcnn_R_50_FPN")


def test_custom_requires_existing_config(tmp_path):
    with pytest.raises(ModelNotFoundError, match="config file not found"):
        catalog.custom(tmp_path / "nope.yaml", "random", ["a"])
