import json

import numpy as np
import pytest
from pycocotools import mask as mask_util

from d2ov_core.runtime.detections import Detections, rle_decode, rle_encode


def make(n=3, h=20, w=30, masks=True):
    rng = np.random.default_rng(n)
    return Detections(
        boxes=rng.uniform(0, 20, (n, 4)),
        scores=np.linspace(0.9, 0.1, n),
        class_ids=np.arange(n) % 2,
        labels=np.array(["a", "b"])[np.arange(n) % 2],
        image_size=(h, w),
        masks=rng.random((n, h, w)) > 0.5 if masks else None,
    )


def test_empty_has_right_shapes_and_serialises():
    d = Detections.empty((10, 20), with_masks=True)
    assert len(d) == 0 and d.boxes.shape == (0, 4) and d.masks.shape == (0, 10, 20)
    assert d.to_dict() == {"height": 10, "width": 20, "timing_ms": {}, "instances": []}
    assert len(d.filter(0.5)) == 0


@pytest.mark.parametrize(
    "field,value,msg",
    [
        ("boxes", np.zeros((3, 5)), r"boxes: expected shape \(3, 4\), found \(3, 5\)"),
        ("class_ids", np.zeros(2), r"class_ids: expected shape \(3,\), found \(2,\)"),
        ("masks", np.zeros((3, 5, 5), bool), r"masks: expected shape \(3, 20, 30\), found \(3, 5, 5\)"),
    ],
)
def test_shapes_are_checked_on_construction(field, value, msg):
    d = make()
    kwargs = dict(
        boxes=d.boxes, scores=d.scores, class_ids=d.class_ids, labels=d.labels, image_size=d.image_size, masks=d.masks
    )
    kwargs[field] = value
    with pytest.raises(ValueError, match=msg):
        Detections(**kwargs)


def test_filter_and_indexing_keep_fields_aligned():
    d = make(5)
    f = d.filter(0.5)
    assert np.all(f.scores >= 0.5) and len(f) == 3
    assert f.masks.shape == (3, 20, 30)
    np.testing.assert_array_equal(f.boxes, d.boxes[:3])
    one = d[4]
    assert len(one) == 1 and one.labels[0] == d.labels[4]


def test_to_dict_is_plain_json_with_rle_masks():
    d = make(2)
    doc = json.loads(json.dumps(d.to_dict()))
    inst = doc["instances"][0]
    assert set(inst) == {"label", "class_id", "score", "box", "mask"}
    assert inst["mask"]["size"] == [20, 30]
    np.testing.assert_array_equal(rle_decode(inst["mask"]), d.masks[0])
    assert "mask" not in make(1, masks=False).to_dict()["instances"][0]


@pytest.mark.parametrize(
    "shape,kind",
    [
        ((1, 1), "ones"),
        ((1, 1), "zeros"),
        ((7, 5), "random"),
        ((64, 48), "random"),
        ((30, 40), "zeros"),
        ((30, 40), "ones"),
        ((100, 3), "random"),
    ],
)
def test_rle_matches_pycocotools(shape, kind):
    rng = np.random.default_rng(sum(shape))
    m = {"ones": np.ones(shape, bool), "zeros": np.zeros(shape, bool), "random": rng.random(shape) > 0.3}[kind]
    ours = rle_encode(m)
    ref = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
    assert ours["counts"] == ref["counts"].decode()
    assert ours["size"] == list(ref["size"])
    np.testing.assert_array_equal(rle_decode(ours), m)


def _window_masks():
    """Masks whose pixels sit in a window (what ``rle_encode`` scans): at each edge and corner, spanning
    the full height (runs that go on into the next column), one pixel, and random blobs."""
    rng = np.random.default_rng(7)
    h, w = 23, 17
    cases = []
    for y0, y1, x0, x1 in [
        (0, 5, 0, 4),
        (18, 23, 12, 17),
        (0, 23, 3, 9),
        (0, 23, 0, 17),
        (10, 11, 16, 17),
        (0, 1, 0, 1),
    ]:
        m = np.zeros((h, w), bool)
        m[y0:y1, x0:x1] = True
        cases += [m, m & (rng.random((h, w)) > 0.4)]
    for _ in range(40):
        m = np.zeros((h, w), bool)
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        y1, x1 = rng.integers(y0 + 1, h + 1), rng.integers(x0 + 1, w + 1)
        m[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) > rng.choice([0.1, 0.5, 0.9])
        cases.append(m)
    return cases


def test_rle_of_masks_in_a_window_matches_pycocotools():
    for m in _window_masks():
        ref = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        assert rle_encode(m)["counts"] == ref["counts"].decode(), np.argwhere(m)[:5]
        np.testing.assert_array_equal(rle_decode(rle_encode(m)), m)


def test_rle_counts_string_matches_pycocotools_for_any_counts():
    """The counts string, all counts coded at once: the COCO API's bytes for counts that are zero,
    small, need one to seven 5-bit chunks, and shrink or grow against the count two before (negative
    deltas)."""
    from d2ov_core.runtime.detections import _rle_counts_to_string

    rng = np.random.default_rng(11)
    for case in range(60):
        n = int(rng.integers(1, 40))
        scale = 10 ** int(rng.integers(0, 9))
        runs = rng.integers(0, scale + 1, n).tolist()
        if case % 5 == 0:
            runs[0] = 0  # a mask that starts with ones
        h = int(sum(runs)) or 1
        runs[-1] += h - int(sum(runs))  # an image of h x 1 pixels
        ref = mask_util.frPyObjects({"counts": runs, "size": [h, 1]}, h, 1)
        assert _rle_counts_to_string(runs) == ref["counts"].decode(), runs


def test_rle_of_a_label_map_equals_each_label_on_its_own():
    """``rle_encode_labels`` (the panoptic JSON's segments, one pass over the map) gives for each id
    the bytes :func:`rle_encode` gives for its mask: ids at the corners and edges, running from
    column to column, absent, over the whole map, and ids beyond a byte."""
    from d2ov_core.runtime.detections import rle_encode_labels

    rng = np.random.default_rng(5)
    maps = [np.kron(rng.integers(0, 6, (5, 4)), np.ones((7, 9), np.int32))[:31, :33], rng.integers(0, 4, (23, 17))]
    maps += [np.full((9, 8), 3), np.where(rng.random((12, 10)) > 0.5, 300, 2)]
    for label_map in maps:
        ids = [0, 1, 2, 3, 5, 7, 300]
        got = rle_encode_labels(label_map, ids)
        assert [g["counts"] for g in got] == [rle_encode(label_map == i)["counts"] for i in ids]
        assert all(g["size"] == list(label_map.shape) for g in got)


def _panoptic_and_keypoints(n=2, h=20, w=30):
    rng = np.random.default_rng(3)
    seg = np.zeros((h, w), np.int32)
    seg[:10] = 1
    seg[12:, 5:] = 2
    segments = [
        {"id": 1, "label": "round", "category_id": 0, "isthing": True, "score": 0.9, "area": int((seg == 1).sum())},
        {"id": 2, "label": "sky", "category_id": 1, "isthing": False, "score": None, "area": int((seg == 2).sum())},
    ]
    return Detections(
        boxes=rng.uniform(0, 19, (n, 4)).cumsum(1).clip(0, 19),
        scores=[0.875, 0.25],
        class_ids=[0, 1],
        labels=["a", "b"],
        image_size=(h, w),
        keypoints=rng.uniform(0, 19, (n, 2, 3)),
        keypoint_names=("head", "foot"),
        keypoint_skeleton=(("head", "foot"),),
        segment_map=seg,
        segments=segments,
    )


@pytest.mark.parametrize(
    "det",
    [make(), make(masks=False), make(n=0), make(n=0, masks=False), _panoptic_and_keypoints()],
    ids=["masks", "boxes", "empty-masks", "empty", "panoptic-kp"],
)
def test_from_dict_reads_back_what_to_dict_wrote(det):
    back = Detections.from_dict(json.loads(json.dumps(det.to_dict())))
    assert back.image_size == det.image_size and len(back) == len(det)
    assert np.allclose(back.boxes, det.boxes, atol=1e-3) and np.allclose(back.scores, det.scores, atol=1e-6)
    assert back.class_ids.tolist() == det.class_ids.tolist() and back.labels.tolist() == det.labels.tolist()
    if det.masks is not None and len(det):
        assert np.array_equal(back.masks, det.masks)
    else:
        assert back.masks is None
    if det.keypoints is not None:
        assert np.allclose(back.keypoints, det.keypoints, atol=1e-3)
        assert back.keypoint_names == det.keypoint_names and back.keypoint_skeleton == det.keypoint_skeleton
    if det.segment_map is not None:
        assert np.array_equal(back.segment_map, det.segment_map) and back.segments == det.segments


def test_from_dict_refuses_what_is_not_a_result():
    with pytest.raises(ValueError, match="not a d2ov predict result"):
        Detections.from_dict({"height": 2, "width": 2})
    with pytest.raises(ValueError, match="not a d2ov predict result: cannot reshape"):
        Detections.from_dict(
            {"height": 2, "width": 2, "instances": [{"box": [1, 2, 3], "score": 1, "class_id": 0, "label": "a"}]}
        )


@pytest.mark.parametrize("indent", [1, None])
@pytest.mark.parametrize("count", [0, 1, 3])
def test_predictions_writer_writes_the_document_json_dumps_writes(tmp_path, indent, count):
    """Written one result at a time, the file is byte for byte ``json.dumps(predictions_document(...))``
    (the CLI's --json with indent 1, the app's download compact), nested values and empty ones too."""
    from d2ov_core.runtime.detections import PredictionsWriter, predictions_document

    results = [
        {"image": f"{i}.jpg", "instances": [{"box": [1.5, 2.0, 3.0, 4.0], "mask": {"counts": "x1"}}], "e": [], "o": {}}
        for i in range(count)
    ]
    model = {"name": "demo/x", "classes": ["a", "b"], "accuracy": {"FP16": {"box_ap": 70.1}}}
    with PredictionsWriter(tmp_path / "out" / "p.json", model, "openvino", "CPU", 0.5, indent=indent) as w:
        for r in results:
            w.add(r)
    text = (tmp_path / "out" / "p.json").read_text()
    assert text == json.dumps(predictions_document(model, "openvino", "CPU", 0.5, results), indent=indent)
    assert json.loads(text)["results"] == results and w.count == count
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["p.json"]


def test_predictions_writer_that_fails_leaves_the_file_that_was_there(tmp_path):
    """An error half way (a video that stops decoding, Ctrl-C) loses nothing: the file from before stays
    as it was and no temporary file is left."""
    from d2ov_core.runtime.detections import PredictionsWriter

    path = tmp_path / "p.json"
    path.write_text('{"before": true}')
    with pytest.raises(KeyboardInterrupt):
        with PredictionsWriter(path, {"name": "m"}, "openvino", "CPU", 0.5) as w:
            w.add({"image": "a.jpg"})
            raise KeyboardInterrupt
    assert path.read_text() == '{"before": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]
