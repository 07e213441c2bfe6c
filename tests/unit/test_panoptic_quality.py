"""Panoptic quality (d2ov_core.measure.panoptic_quality): hand-computed cases for each rule of COCO
panopticapi's pq_compute, a cross-check against a transcription of panopticapi's per-image loop on
random maps, COCO panoptic files (PNG ids, the JSON loader) and the InputError cases."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest

from d2ov_core.errors import InputError
from d2ov_core.measure.panoptic_quality import PQAccumulator, load_panoptic_gt, read_panoptic_png, write_panoptic_png

CATS = [
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 2, "name": "car", "isthing": 1},
    {"id": 10, "name": "sky", "isthing": 0},
    {"id": 11, "name": "grass", "isthing": 0},
]
PERSON, CAR, SKY, GRASS = 1, 2, 10, 11


def row(*runs):
    """A 1-row id map from (id, length) runs: row((1, 4), (0, 2)) -> [[1 1 1 1 0 0]]."""
    return np.concatenate([np.full(n, i, np.int64) for i, n in runs])[None, :]


def seg(sid, cat, crowd=0, **kw):
    return {"id": sid, "category_id": cat, "iscrowd": crowd, **kw}


def one(gt_map, gt_segs, pred_map, pred_segs):
    acc = PQAccumulator(CATS)
    acc.add(gt_map, gt_segs, pred_map, pred_segs)
    return acc


# ---------------------------------------------------------------------------------------------
# hand-computed cases


def test_perfect_prediction_is_100_and_absent_class_is_excluded():
    gt = np.array([[1, 1, 2, 2, 0], [1, 1, 2, 2, 0], [3, 3, 3, 3, 3]])
    pred = np.where(gt == 0, 0, gt + 40)  # other ids, same segments
    acc = one(gt, [seg(1, PERSON), seg(2, CAR), seg(3, SKY)], pred, [seg(41, PERSON), seg(42, CAR), seg(43, SKY)])
    r = acc.result()
    assert r["All"] == {"PQ": 100.0, "SQ": 100.0, "RQ": 100.0, "n": 3}
    assert r["Things"] == {"PQ": 100.0, "SQ": 100.0, "RQ": 100.0, "n": 2}
    assert r["Stuff"] == {"PQ": 100.0, "SQ": 100.0, "RQ": 100.0, "n": 1}
    assert set(r["per_class"]) == {"person", "car", "sky"}  # grass: in neither -> not scored
    assert r["per_class"]["car"] == {"PQ": 100.0, "SQ": 100.0, "RQ": 100.0, "tp": 1, "fp": 0, "fn": 0}


def test_iou_of_exactly_one_half_does_not_match():
    gt = row((1, 4), (2, 4))
    # person: pred 2 px inside the 4 px gt -> IoU 2/4 = 0.5 -> FP + FN; sky: IoU 4/6 -> TP
    r = one(gt, [seg(1, PERSON), seg(2, SKY)], row((5, 2), (6, 6)), [seg(5, PERSON), seg(6, SKY)]).result()
    assert r["per_class"]["person"] == {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0, "tp": 0, "fp": 1, "fn": 1}
    assert r["per_class"]["sky"] == {"PQ": 66.667, "SQ": 66.667, "RQ": 100.0, "tp": 1, "fp": 0, "fn": 0}
    # one pixel more: IoU 3/4 -> matched
    r = one(gt, [seg(1, PERSON), seg(2, SKY)], row((5, 3), (6, 5)), [seg(5, PERSON), seg(6, SKY)]).result()
    assert r["per_class"]["person"] == {"PQ": 75.0, "SQ": 75.0, "RQ": 100.0, "tp": 1, "fp": 0, "fn": 0}


def test_prediction_on_gt_void_is_taken_out_of_the_union():
    # pred person covers the 4 gt person pixels and 4 VOID pixels: IoU = 4 / (8 + 4 - 4 - 4) = 1
    r = one(row((1, 4), (0, 4)), [seg(1, PERSON)], row((5, 8)), [seg(5, PERSON)]).result()
    assert r["per_class"]["person"] == {"PQ": 100.0, "SQ": 100.0, "RQ": 100.0, "tp": 1, "fp": 0, "fn": 0}
    # the same 4 pixels labelled sky instead of VOID: IoU 4/8 -> no match
    r = one(row((1, 4), (2, 4)), [seg(1, PERSON), seg(2, SKY)], row((5, 8)), [seg(5, PERSON)]).result()
    assert r["per_class"]["person"]["tp"] == 0
    assert (r["per_class"]["person"]["fp"], r["per_class"]["person"]["fn"]) == (1, 1)
    # ids of gt_map that gt_segments does not list are not VOID (panopticapi skips them): IoU 4/8
    r = one(row((1, 4), (99, 4)), [seg(1, PERSON)], row((5, 8)), [seg(5, PERSON)]).result()
    assert (r["per_class"]["person"]["tp"], r["per_class"]["person"]["fp"]) == (0, 1)


def test_unmatched_prediction_mostly_on_void_is_not_a_false_positive():
    gt = row((0, 3), (2, 5))
    # car 7: all 3 px on VOID -> ignored; grass 3: on sky -> FP; sky 9: IoU 3/5 -> TP
    pred = row((7, 3), (3, 2), (9, 3))
    r = one(gt, [seg(2, SKY)], pred, [seg(7, CAR), seg(3, GRASS), seg(9, SKY)]).result()
    assert "car" not in r["per_class"]
    assert r["per_class"]["sky"]["tp"] == 1
    assert r["per_class"]["grass"] == {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0, "tp": 0, "fp": 1, "fn": 0}
    # grass 3: 2 of its 4 px on VOID, exactly one half (not more) -> still FP
    r = one(row((0, 2), (2, 6)), [seg(2, SKY)], row((3, 4), (9, 4)), [seg(3, GRASS), seg(9, SKY)]).result()
    assert r["per_class"]["grass"]["fp"] == 1
    # 3 of 4 on VOID -> ignored
    r = one(row((0, 3), (2, 5)), [seg(2, SKY)], row((3, 4), (9, 4)), [seg(3, GRASS), seg(9, SKY)]).result()
    assert "grass" not in r["per_class"]


def test_crowd_region_absorbs_predictions_of_its_class_and_is_not_a_false_negative():
    gt = row((1, 4), (2, 6))
    gt_segs = [seg(1, PERSON, crowd=1), seg(2, SKY)]
    # person pred inside the crowd -> ignored; car pred inside the person crowd -> FP (other class);
    # sky matched exactly
    pred = row((5, 3), (6, 1), (7, 6))
    r = one(gt, gt_segs, pred, [seg(5, PERSON), seg(6, CAR), seg(7, SKY)]).result()
    assert "person" not in r["per_class"]  # crowd: no FN; absorbed pred: no FP
    assert r["per_class"]["car"] == {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0, "tp": 0, "fp": 1, "fn": 0}
    assert r["per_class"]["sky"]["tp"] == 1
    assert r["All"]["n"] == 2 and r["Things"]["n"] == 1
    # a crowd segment is never matched, even by a perfect prediction of its class
    r = one(gt, gt_segs, row((5, 4), (7, 6)), [seg(5, PERSON), seg(7, SKY)]).result()
    assert "person" not in r["per_class"]


def test_crowd_and_void_add_up_and_one_half_is_not_enough():
    gt = row((0, 1), (1, 1), (2, 2))
    gt_segs = [seg(1, PERSON, crowd=1), seg(2, SKY)]
    # person pred over VOID (1 px) + crowd (1 px) + sky (1 px): 2/3 > 0.5 -> ignored
    r = one(gt, gt_segs, row((5, 3), (7, 1)), [seg(5, PERSON), seg(7, SKY)]).result()
    assert "person" not in r["per_class"]
    # person pred over crowd (1 px) + sky (1 px): 1/2 -> FP
    r = one(gt, gt_segs, row((0, 1), (5, 2), (7, 1)), [seg(5, PERSON), seg(7, SKY)]).result()
    assert r["per_class"]["person"]["fp"] == 1


def test_only_the_last_crowd_segment_of_a_class_absorbs():
    # panopticapi keeps one crowd region per class and image: the last in segments_info
    gt = row((1, 2), (2, 2))
    r = one(gt, [seg(1, PERSON, crowd=1), seg(2, PERSON, crowd=1)], row((5, 2), (0, 2)), [seg(5, PERSON)]).result()
    assert r["per_class"]["person"]["fp"] == 1
    r = one(gt, [seg(2, PERSON, crowd=1), seg(1, PERSON, crowd=1)], row((5, 2), (0, 2)), [seg(5, PERSON)]).result()
    assert "person" not in r["per_class"]


def test_things_and_stuff_are_averaged_separately():
    gt = row((1, 4), (3, 4), (4, 4))
    gt_segs = [seg(1, PERSON), seg(3, SKY), seg(4, GRASS)]
    # person IoU 1; sky IoU 3/4; car: 1 px FP; grass: IoU 2/4 -> FP + FN; 2 px unassigned
    pred = row((5, 4), (6, 3), (7, 1), (8, 2), (0, 2))
    r = one(gt, gt_segs, pred, [seg(5, PERSON), seg(6, SKY), seg(7, CAR), seg(8, GRASS)]).result()
    assert r["per_class"] == {
        "person": {"PQ": 100.0, "SQ": 100.0, "RQ": 100.0, "tp": 1, "fp": 0, "fn": 0},
        "car": {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0, "tp": 0, "fp": 1, "fn": 0},
        "sky": {"PQ": 75.0, "SQ": 75.0, "RQ": 100.0, "tp": 1, "fp": 0, "fn": 0},
        "grass": {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0, "tp": 0, "fp": 1, "fn": 1},
    }
    assert r["Things"] == {"PQ": 50.0, "SQ": 50.0, "RQ": 50.0, "n": 2}
    assert r["Stuff"] == {"PQ": 37.5, "SQ": 37.5, "RQ": 50.0, "n": 2}
    assert r["All"] == {"PQ": 43.75, "SQ": 43.75, "RQ": 50.0, "n": 4}


def test_counts_add_up_over_images_and_empty_groups_report_zero():
    acc = PQAccumulator(CATS)
    gt = row((1, 4), (0, 4))
    acc.add(gt, [seg(1, PERSON)], row((5, 4), (0, 4)), [seg(5, PERSON)])  # TP, IoU 1
    acc.add(gt, [seg(1, PERSON)], row((5, 3), (0, 5)), [seg(5, PERSON)])  # TP, IoU 3/4
    acc.add(gt, [seg(1, PERSON)], row((0, 8)), [])  # FN
    assert acc.n_images == 3
    assert acc.counts()[PERSON] == {"tp": 2, "fp": 0, "fn": 1, "iou": 1.75}
    r = acc.result()
    # PQ = 1.75 / (2 + 0.5) = 70, SQ = 87.5, RQ = 80
    assert r["per_class"]["person"] == {"PQ": 70.0, "SQ": 87.5, "RQ": 80.0, "tp": 2, "fp": 0, "fn": 1}
    assert r["Stuff"] == {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0, "n": 0}
    assert PQAccumulator(CATS).result()["All"] == {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0, "n": 0}


def test_gt_area_from_the_segment_record_is_used_as_panopticapi_uses_the_json():
    gt, pred = row((1, 4), (0, 4)), row((5, 4), (0, 4))
    r = one(gt, [seg(1, PERSON)], pred, [seg(5, PERSON)]).result()
    assert r["per_class"]["person"]["tp"] == 1
    # area 8 in the record: IoU = 4 / (4 + 8 - 4) = 0.5 -> no match
    r = one(gt, [seg(1, PERSON, area=8)], pred, [seg(5, PERSON)]).result()
    assert r["per_class"]["person"]["tp"] == 0
    # a listed segment with no pixel is a false negative
    r = one(gt, [seg(1, PERSON), seg(2, CAR, area=3)], pred, [seg(5, PERSON)]).result()
    assert r["per_class"]["car"]["fn"] == 1


# ---------------------------------------------------------------------------------------------
# cross-check: THE TEST'S REFERENCE, a transcription of panopticapi's evaluation.py
# (pq_compute_single_core and PQStat.pq_average, github cocodataset/panopticapi @ 7bb4655),
# dict-based and unvectorized, independent of the module under test.

_REF_OFFSET = 256 * 256 * 256
_REF_VOID = 0


def _reference_single(pan_gt, gt_segments, pan_pred, pred_segments, pq_stat):
    gt_segms = {el["id"]: dict(el) for el in gt_segments}
    pred_segms = {el["id"]: dict(el) for el in pred_segments}
    labels, labels_cnt = np.unique(pan_pred, return_counts=True)
    for label, label_cnt in zip(labels, labels_cnt):
        if label not in pred_segms:
            assert label == _REF_VOID
            continue
        pred_segms[label]["area"] = label_cnt
    pan_gt_pred = pan_gt.astype(np.uint64) * _REF_OFFSET + pan_pred.astype(np.uint64)
    gt_pred_map = {}
    labels, labels_cnt = np.unique(pan_gt_pred, return_counts=True)
    for label, intersection in zip(labels, labels_cnt):
        gt_pred_map[(label // _REF_OFFSET, label % _REF_OFFSET)] = intersection
    gt_matched, pred_matched = set(), set()
    for (gt_label, pred_label), intersection in gt_pred_map.items():
        if gt_label not in gt_segms or pred_label not in pred_segms:
            continue
        if gt_segms[gt_label]["iscrowd"] == 1:
            continue
        if gt_segms[gt_label]["category_id"] != pred_segms[pred_label]["category_id"]:
            continue
        union = (
            pred_segms[pred_label]["area"]
            + gt_segms[gt_label]["area"]
            - intersection
            - gt_pred_map.get((_REF_VOID, pred_label), 0)
        )
        iou = intersection / union
        if iou > 0.5:
            pq_stat[gt_segms[gt_label]["category_id"]]["tp"] += 1
            pq_stat[gt_segms[gt_label]["category_id"]]["iou"] += iou
            gt_matched.add(gt_label)
            pred_matched.add(pred_label)
    crowd_labels_dict = {}
    for gt_label, gt_info in gt_segms.items():
        if gt_label in gt_matched:
            continue
        if gt_info["iscrowd"] == 1:
            crowd_labels_dict[gt_info["category_id"]] = gt_label
            continue
        pq_stat[gt_info["category_id"]]["fn"] += 1
    for pred_label, pred_info in pred_segms.items():
        if pred_label in pred_matched:
            continue
        intersection = gt_pred_map.get((_REF_VOID, pred_label), 0)
        if pred_info["category_id"] in crowd_labels_dict:
            intersection += gt_pred_map.get((crowd_labels_dict[pred_info["category_id"]], pred_label), 0)
        if intersection / pred_info["area"] > 0.5:
            continue
        pq_stat[pred_info["category_id"]]["fp"] += 1


def _reference_average(pq_stat, categories, isthing):
    pq, sq, rq, n = 0, 0, 0, 0
    for label_info in categories:
        if isthing is not None and (label_info["isthing"] == 1) != isthing:
            continue
        s = pq_stat[label_info["id"]]
        iou, tp, fp, fn = s["iou"], s["tp"], s["fp"], s["fn"]
        if tp + fp + fn == 0:
            continue
        n += 1
        pq += iou / (tp + 0.5 * fp + 0.5 * fn)
        sq += iou / tp if tp != 0 else 0
        rq += tp / (tp + 0.5 * fp + 0.5 * fn)
    return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}


def _random_case(rng, cats):
    """Blocky gt with VOID, crowd (sometimes two per class), unlisted ids, a listed segment with no
    pixel and some JSON areas larger than the pixel count (panopticapi trusts the JSON); the
    prediction is the gt with noise, new ids and some categories changed."""
    h, w = int(rng.integers(8, 25)), int(rng.integers(8, 25))
    blocks = rng.integers(0, 9, size=(h // 4 + 1, w // 4 + 1)).repeat(4, 0).repeat(4, 1)[:h, :w]
    noisy = rng.random((h, w)) < 0.1
    labels = np.where(noisy, rng.integers(0, 9, size=(h, w)), blocks)
    gt = np.zeros((h, w), np.int64)
    gt_segs = []
    cat_ids = [c["id"] for c in cats]
    for lab in np.unique(labels):
        if lab == 0:
            continue
        sid = int(rng.integers(1, 1 << 24))
        while sid in gt:
            sid = int(rng.integers(1, 1 << 24))
        gt[labels == lab] = sid
        if lab == 8:  # an id the segment list does not name
            continue
        gt_segs.append(
            {
                "id": sid,
                "category_id": int(rng.choice(cat_ids)),
                "iscrowd": int(rng.random() < 0.25),
                "area": int((labels == lab).sum()) + int(rng.random() < 0.2) * int(rng.integers(1, 4)),
            }
        )
    if rng.random() < 0.3:
        gt_segs.append({"id": (1 << 24) - 1, "category_id": int(rng.choice(cat_ids)), "iscrowd": 0, "area": 5})
    rng.shuffle(gt_segs)
    gt_cat = {s["id"]: s["category_id"] for s in gt_segs}
    pred_src = gt.copy()
    noise = rng.random((h, w)) < rng.uniform(0.0, 0.6)
    choices = np.array([0] + [int(i) for i in np.unique(gt)])
    pred_src[noise] = rng.choice(choices, size=int(noise.sum()))
    pred = np.zeros_like(pred_src)
    pred_segs = []
    for k, src in enumerate(int(i) for i in np.unique(pred_src) if i != 0):
        if rng.random() < 0.1:
            continue  # left VOID
        pid = k + 1 if rng.random() < 0.5 else int(rng.integers(1, 1 << 24))
        if pid in pred:
            pid = 1000 + k
        pred[pred_src == src] = pid
        cat = gt_cat.get(src) if rng.random() < 0.8 else None
        pred_segs.append(
            {"id": pid, "category_id": cat if cat is not None else int(rng.choice(cat_ids)), "isthing": "ignored"}
        )
    return gt, gt_segs, pred, pred_segs


def test_matches_panopticapis_algorithm_on_random_maps():
    cats = [
        {"id": 1, "name": "a", "isthing": 1},
        {"id": 2, "name": "b", "isthing": 1},
        {"id": 5, "name": "c", "isthing": 0},
        {"id": 9, "name": "d", "isthing": 0},
        {"id": 12, "name": "e", "isthing": 1},
    ]
    rng = np.random.default_rng(20240611)
    ref = defaultdict(lambda: {"tp": 0, "fp": 0, "fn": 0, "iou": 0.0})
    scored = cats + [{"id": 30, "name": "never", "isthing": 0}]  # in no case: left out of the averages
    acc = PQAccumulator(scored)
    for _ in range(60):
        gt, gt_segs, pred, pred_segs = _random_case(rng, cats)
        _reference_single(gt, gt_segs, pred, pred_segs, ref)
        acc.add(gt, gt_segs, pred, pred_segs)
    counts = acc.counts()
    for c in cats:
        r, mine = ref[c["id"]], counts[c["id"]]
        assert (mine["tp"], mine["fp"], mine["fn"]) == (r["tp"], r["fp"], r["fn"]), c["name"]
        assert mine["iou"] == r["iou"], c["name"]  # same sums in the same order: exactly equal
    total = {k: sum(ref[c["id"]][k] for c in cats) for k in ("tp", "fp", "fn")}
    assert min(total.values()) > 20  # the cases exercise matches, misses and false positives
    res = acc.result()
    for group, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        exp = _reference_average(ref, scored, isthing)
        assert res[group] == {
            "PQ": round(100 * exp["pq"], 3),
            "SQ": round(100 * exp["sq"], 3),
            "RQ": round(100 * exp["rq"], 3),
            "n": exp["n"],
        }


# ---------------------------------------------------------------------------------------------
# files


def test_png_round_trip_and_id_encoding(tmp_path):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 1 << 24, size=(7, 11))
    ids[0, :3] = [0, (1 << 24) - 1, 1 + 2 * 256 + 3 * 65536]
    write_panoptic_png(tmp_path / "a.png", ids)
    back = read_panoptic_png(tmp_path / "a.png")
    assert back.dtype == np.int32 and back.shape == (7, 11)
    np.testing.assert_array_equal(back, ids)
    from PIL import Image

    rgb = np.asarray(Image.open(tmp_path / "a.png"))
    assert rgb[0, 2].tolist() == [1, 2, 3]  # R + 256 G + 65536 B


def test_read_panoptic_png_rejects_what_is_not_an_rgb_png(tmp_path):
    from PIL import Image

    with pytest.raises(InputError, match="not found"):
        read_panoptic_png(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="not a readable PNG"):
        read_panoptic_png(tmp_path / "junk.png")
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(tmp_path / "gray.png")
    with pytest.raises(InputError, match="found mode L"):
        read_panoptic_png(tmp_path / "gray.png")


def test_write_panoptic_png_rejects_bad_ids(tmp_path):
    for bad in (np.zeros((2, 2, 3), np.int64), np.full((2, 2), 1 << 24), np.full((2, 2), -1), np.zeros((2, 2)) + 0.5):
        with pytest.raises(InputError):
            write_panoptic_png(tmp_path / "x.png", bad)


def _write_dataset(root, name="panoptic_val2017"):
    folder = root / name
    folder.mkdir()
    gt1 = np.array([[1, 1, 0], [2, 2, 2]])
    gt2 = np.array([[7, 7], [7, 0]])
    write_panoptic_png(folder / "000000000001.png", gt1)
    write_panoptic_png(folder / "000000000002.png", gt2)
    data = {
        "images": [
            {"id": 1, "file_name": "000000000001.jpg", "height": 2, "width": 3},
            {"id": 2, "file_name": "000000000002.jpg", "height": 2, "width": 2},
        ],
        "annotations": [
            {
                "image_id": 1,
                "file_name": "000000000001.png",
                "segments_info": [
                    {"id": 1, "category_id": 1, "iscrowd": 0, "area": 2, "bbox": [0, 0, 2, 1]},
                    {"id": 2, "category_id": 10, "iscrowd": 0, "area": 3},
                ],
            },
            {
                "image_id": 2,
                "file_name": "000000000002.png",
                "segments_info": [{"id": 7, "category_id": 2, "iscrowd": 1, "area": 3}],
            },
        ],
        "categories": [dict(c, supercategory="x") for c in CATS],
    }
    path = root / f"{name}.json"
    path.write_text(json.dumps(data))
    return path, data


def test_load_panoptic_gt_reads_coco_panoptic_files(tmp_path):
    path, _ = _write_dataset(tmp_path)
    gt = load_panoptic_gt(path)
    assert [c["name"] for c in gt.categories] == ["person", "car", "sky", "grass"]
    assert gt.categories[2] == {"id": 10, "name": "sky", "isthing": 0}
    assert [r.image_id for r in gt.images] == [1, 2]
    rec = gt.by_file_name["000000000001.jpg"]
    assert rec is gt.by_image_id[1]
    assert rec.png == tmp_path / "panoptic_val2017" / "000000000001.png" and rec["png"] == rec.png
    assert rec.segments == [
        {"id": 1, "category_id": 1, "iscrowd": 0, "area": 2},
        {"id": 2, "category_id": 10, "iscrowd": 0, "area": 3},
    ]
    assert gt.by_image_id[2].segments[0]["iscrowd"] == 1
    # the ground truth scored against itself
    acc = PQAccumulator(gt.categories)
    for r in gt.images:
        m = read_panoptic_png(r.png)
        acc.add(m, r.segments, m, r.segments)
    res = acc.result()
    assert res["All"] == {"PQ": 100.0, "SQ": 100.0, "RQ": 100.0, "n": 2}  # the crowd car is not scored
    # an explicit PNG folder
    (tmp_path / "pngs").mkdir()
    assert load_panoptic_gt(path, png_dir=tmp_path / "pngs").images[0].png == tmp_path / "pngs" / "000000000001.png"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("annotations"), "expected a list 'annotations'"),
        (lambda d: d["categories"][0].pop("isthing"), "'isthing'"),
        (lambda d: d["annotations"][0]["segments_info"][0].update(category_id=99), "category_id 99"),
        (lambda d: d["annotations"][1].update(image_id=3), "image_id 3, which 'images' does not list"),
        (lambda d: d["annotations"][1].update(image_id=1), "two for image_id 1"),
        (lambda d: d["annotations"][0].pop("segments_info"), "'segments_info'"),
        (lambda d: d["annotations"][0]["segments_info"][1].update(id=1), "id 1 twice"),
    ],
)
def test_load_panoptic_gt_rejects_malformed_json(tmp_path, change, message):
    path, data = _write_dataset(tmp_path)
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=message):
        load_panoptic_gt(path)


def test_load_panoptic_gt_rejects_missing_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_panoptic_gt(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="invalid JSON"):
        load_panoptic_gt(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(InputError, match="found a list"):
        load_panoptic_gt(tmp_path / "list.json")
    path, _ = _write_dataset(tmp_path)
    with pytest.raises(InputError, match="PNG folder"):
        load_panoptic_gt(path, png_dir=tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------
# InputError


@pytest.mark.parametrize(
    "args, message",
    [
        ((np.zeros((2, 3), int), [], np.zeros((3, 2), int), []), "same shape"),
        ((row((1, 2)), [seg(1, 99)], row((0, 2)), []), "category_id 99"),
        ((row((1, 2)), [seg(1, PERSON)], row((5, 2)), [seg(5, 42)]), "category_id 42"),
        ((row((1, 2)), [seg(1, PERSON)], row((5, 2)), []), "id 5 .* not listed"),
        ((row((1, 2)), [seg(1, PERSON)], row((5, 2)), [seg(5, PERSON), seg(6, CAR)]), "no pixel"),
        ((row((1, 2)).astype(float), [seg(1, PERSON)], row((0, 2)), []), "integer segment ids"),
        ((np.zeros((2, 2, 3), np.uint8), [], np.zeros((2, 2, 3), np.uint8), []), "read_panoptic_png"),
        ((row((1, 2)) - 2, [], row((0, 2)), []), r"\[0, 2\*\*24\)"),
        ((row((1, 2)), [seg(0, PERSON)], row((0, 2)), []), "0 is VOID"),
        ((row((1, 2)), [seg(1, PERSON), seg(1, CAR)], row((0, 2)), []), "id 1 twice"),
        ((row((1, 2)), [{"id": 1}], row((0, 2)), []), "'category_id'"),
        ((row((1, 2)), "segments", row((0, 2)), []), "list of segments"),
    ],
)
def test_add_rejects_bad_input(args, message):
    with pytest.raises(InputError, match=message):
        PQAccumulator(CATS).add(*args)


def test_categories_must_be_complete_and_unique():
    with pytest.raises(InputError, match="'isthing'"):
        PQAccumulator([{"id": 1, "name": "a"}])
    with pytest.raises(InputError, match="'a' twice"):
        PQAccumulator([{"id": 1, "name": "a", "isthing": 1}, {"id": 2, "name": "a", "isthing": 0}])
    with pytest.raises(InputError, match="id 1 twice"):
        PQAccumulator([{"id": 1, "name": "a", "isthing": 1}, {"id": 1, "name": "b", "isthing": 0}])
    with pytest.raises(InputError, match="non-empty"):
        PQAccumulator([])
