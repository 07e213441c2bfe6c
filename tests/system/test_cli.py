"""The `d2ov` CLI, run as a user runs it: a subprocess, real files, exit codes, stderr."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from d2ov_core.runtime.detections import rle_decode

from ..conftest import SAMPLES, real_photo, run_cli


def one_line_error(res, code=2):
    assert res.returncode == code, (res.returncode, res.stdout[-500:], res.stderr[-2000:])
    lines = [l for l in res.stderr.strip().splitlines() if "Warning" not in l and "warnings.warn" not in l]
    assert "Traceback" not in res.stderr
    # d2ov's own errors, or argparse's usage errors ("d2ov <command>: error: ..."): one line either way
    assert len(lines) == 1 and re.match(r"d2ov( [a-z]+)?: error: ", lines[-1]), res.stderr
    return lines[-1]


def test_list_json_has_the_catalog():
    res = run_cli("list", "--json")
    assert res.returncode == 0
    models = {m["name"]: m for m in json.loads(res.stdout)}
    assert models["COCO-Detection/faster_rcnn_R_50_FPN_1x"]["box_ap"] == 37.9
    assert models["COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x"]["mask_ap"] == 38.6
    assert models["COCO-Detection/retinanet_R_50_FPN_1x"]["weights"].endswith("model_final_b796dc.pkl")


def test_predict_json_schema_and_render(tiny_ir, tmp_path):
    out = tmp_path / "pred.json"
    res = run_cli(
        "predict",
        str(tiny_ir),
        str(real_photo()),
        "--threshold",
        "0.05",
        "--json",
        str(out),
        "--render",
        str(tmp_path / "r"),
    )
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert set(doc) == {"model", "backend", "device", "threshold", "results"}
    assert doc["backend"] == "openvino" and doc["device"] == "CPU" and doc["threshold"] == 0.05
    assert doc["model"]["classes"] == ["circle", "square", "triangle"] and doc["model"]["random_weights"] is True
    r = doc["results"][0]
    assert r["image"] == str(real_photo()) and (r["height"], r["width"]) == (600, 512)
    assert set(r["timing_ms"]) >= {"preprocess", "inference", "postprocess", "total"}
    for inst in r["instances"]:
        assert set(inst) == {"label", "class_id", "score", "box", "mask"}
        assert inst["label"] == ["circle", "square", "triangle"][inst["class_id"]] and inst["score"] >= 0.05
        x0, y0, x1, y1 = inst["box"]
        assert 0 <= x0 <= x1 <= 512 and 0 <= y0 <= y1 <= 600  # JSON rounds to 1e-3 px
        assert rle_decode(inst["mask"]).shape == (600, 512)
    rendered = Image.open(tmp_path / "r" / "grace_hopper.png")
    assert rendered.size == (512, 600)
    assert f"{len(r['instances'])} detections" in res.stdout


@pytest.mark.parametrize(
    "args,msg",
    [
        (["predict", "MODEL", "/no/such.jpg"], "image not found: /no/such.jpg"),
        (["predict", "MODEL", "NOTIMG"], "not an image"),
        (["predict", "MODEL", "IMG", "--device", "TPU"], "unknown device 'TPU'"),
        (["predict", "MODEL", "IMG", "--threshold", "1.5"], "must be in [0, 1]"),
        (["predict", "MODEL", "IMG", "--threshold", "nan"], "NaN"),
        (["predict", "no_such_model", "IMG"], "unknown model 'no_such_model'"),
        (["predict", "../../etc/passwd", "IMG"], "unknown model"),
        (["convert", "faster_rcnn_R_50_FPN_1x", "--weights", "/no/weights.pkl"], "weights file not found"),
        (["convert", "CFG"], "needs --classes"),
        (["verify", "no_such_model", "IMG"], "unknown model"),
        (["space", "--dry-run", "OUT", "--only"], "--only leaves the demo models out: name at least one --model"),
        (["space", "--dry-run", "OUT", "--weights", "w.pth"], "--weights is about your models: give --model MODEL"),
        (["space", "--model", "demo/faster_rcnn_shapes"], "give --repo-id USER/NAME to publish, or --dry-run DIR"),
        (["space", "--dry-run", "OUT", "--model", "no_such_model"], "unknown model 'no_such_model'"),
        (["space", "--dry-run", "OUT", "--model", "CFG"], "needs --classes"),
        (
            ["space", "--dry-run", "OUT", "--model", "demo/faster_rcnn_shapes", "--precision", "FP8"],
            "--precision: a comma list",
        ),
        (
            ["space", "--dry-run", "OUT", "--model", "demo/faster_rcnn_shapes", "--precision", "FP16,INT8"],
            "--precision INT8 needs --calibration DIR",
        ),
        (
            ["space", "--dry-run", "OUT", "--model", "demo/faster_rcnn_shapes", "--examples", "/no/such.jpg"],
            "image not found: /no/such.jpg",
        ),
        (["serve", "--model", "no_such_model"], "unknown model 'no_such_model'"),
    ],
)
def test_bad_input_is_one_clear_line_with_exit_2(args, msg, tiny_ir, tmp_path):
    notimg = tmp_path / "notimg.jpg"
    notimg.write_text("<html></html>")
    cfg = tmp_path / "own.yaml"
    cfg.write_text("MODEL:\n  META_ARCHITECTURE: GeneralizedRCNN\n")
    subst = {
        "MODEL": str(tiny_ir),
        "IMG": str(real_photo()),
        "NOTIMG": str(notimg),
        "CFG": str(cfg),
        "OUT": str(tmp_path / "space"),
    }
    res = run_cli(*[subst.get(a, a) for a in args])
    line = one_line_error(res)
    assert msg in line, res.stderr
    assert not (tmp_path / "space").exists()  # d2ov space: nothing written


def test_custom_config_converts_through_the_cli(tmp_path):
    from ..conftest import write_tiny_config

    cfg = write_tiny_config(tmp_path / "det.yaml", mask=False)
    res = run_cli(
        "convert", str(cfg), "--weights", "random", "--classes", "cat,dog,bird,fish", "--out", str(tmp_path / "ir")
    )
    # the tiny config has 3 classes: 4 names is a user error, said plainly
    assert "NUM_CLASSES is 3 but 4 class names" in one_line_error(res)
    res = run_cli(
        "convert",
        str(cfg),
        "--weights",
        "random",
        "--classes",
        "cat,dog,bird",
        "--out",
        str(tmp_path / "ir"),
        "--sample",
        str(real_photo()),
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "ir" / "model.xml").is_file()
    res = run_cli(
        "predict", str(tmp_path / "ir"), str(real_photo()), "--threshold", "0.05", "--json", str(tmp_path / "p.json")
    )
    assert res.returncode == 0
    inst = json.loads((tmp_path / "p.json").read_text())["results"][0]["instances"]
    assert all("mask" not in i and i["label"] in ("cat", "dog", "bird") for i in inst)


def test_predict_folder_in_throughput_mode_matches_latency_mode(tiny_ir, tmp_path):
    from ..conftest import random_image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(random_image(240, 320 + 32 * i, seed=i)).save(folder / f"{i}.png")
    outs = {}
    for hint in ("LATENCY", "THROUGHPUT"):
        out = tmp_path / f"{hint}.json"
        res = run_cli("predict", str(tiny_ir), str(folder), "--hint", hint, "--threshold", "0.05", "--json", str(out))
        assert res.returncode == 0, res.stderr[-2000:]
        assert "4 images in" in res.stdout and hint.lower() in res.stdout
        outs[hint] = json.loads(out.read_text())["results"]
    assert [r["image"] for r in outs["LATENCY"]] == [r["image"] for r in outs["THROUGHPUT"]]
    for a, b in zip(outs["LATENCY"], outs["THROUGHPUT"]):
        assert len(a["instances"]) == len(b["instances"])
        for ia, ib in zip(a["instances"], b["instances"]):
            # the same IR on the same images: the hints change scheduling, not arithmetic (as test_predictor)
            assert ia["box"] == pytest.approx(ib["box"], abs=1e-4) and ia["label"] == ib["label"]
            assert ia["score"] == pytest.approx(ib["score"], abs=1e-4)


def test_profile_command_prints_op_table(tiny_ir, tmp_path):
    res = run_cli("profile", str(tiny_ir), str(real_photo()), "--json", str(tmp_path / "p.json"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Convolution" in res.stdout and "slowest ops" in res.stdout
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["ops_ms"] > 0 and doc["by_type"]


@pytest.mark.parametrize(
    "args,msg",
    [
        (["predict", "MODEL", "IMG", "--static-shape", "300x400"], "multiples of 32"),
        (["predict", "MODEL", "IMG", "--static-shape", "big"], "expected HxW"),
        (["convert", "faster_rcnn_R_50_FPN_1x", "--precision", "int8"], "needs --calibration"),
        (["predict", "faster_rcnn_R_50_FPN_1x", "IMG", "--precision", "INT8"], "no INT8 IR"),
    ],
)
def test_performance_options_reject_bad_values(args, msg, tiny_ir):
    subst = {"MODEL": str(tiny_ir), "IMG": str(real_photo())}
    line = one_line_error(run_cli(*[subst.get(a, a) for a in args]))
    assert msg in line


def test_predict_a_video_and_an_image(tmp_path):
    """A video among the inputs: one JSON record per processed frame, equal to predict() on the same
    decoded frame, and a rendered H.264 MP4 with one frame per processed frame."""
    from d2ov_core.runtime.predictor import Predictor
    from d2ov_core.runtime.video import read_frames, video_info
    from d2ov_core.store.lookup import bundled_ir

    from ..helpers import make_clip

    clip = make_clip(tmp_path / "clip.mp4", frames=10, fps=10)
    image = SAMPLES / "shapes_2.jpg"
    out = tmp_path / "p.json"
    res = run_cli(
        "predict", "demo/mask_rcnn_shapes", str(clip), str(image), "--every", "3", "--render", str(tmp_path / "r"),
        "--json", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert (
        f"{clip}: 4 frames in" in res.stdout
        and "frames/s end to end" in res.stdout
        and f"rendered {tmp_path / 'r' / 'clip.mp4'}" in res.stdout
    )
    records = json.loads(out.read_text())["results"]
    frames = [r for r in records if r.get("source") == str(clip)]
    assert [(r["frame"], r["time_s"]) for r in frames] == [(0, 0.0), (3, 0.3), (6, 0.6), (9, 0.9)]
    assert [r["image"] for r in records if "image" in r] == [str(image)]
    pred = Predictor(bundled_ir("demo/mask_rcnn_shapes"))  # the CLI's default precision for a demo model
    decoded = {f.number: f.rgb for f in read_frames(clip)}
    for r in frames:
        ref = pred.predict(decoded[r["frame"]]).to_dict()["instances"]
        assert len(r["instances"]) == len(ref) > 5
        for a, b in zip(r["instances"], ref):
            assert a["label"] == b["label"] and abs(a["score"] - b["score"]) <= 1e-4
            assert np.abs(np.array(a["box"]) - np.array(b["box"])).max() <= 1e-2
    info = video_info(tmp_path / "r" / "clip.mp4")
    assert (info["frames"], info["width"], info["height"]) == (4, 302, 418)
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["clip.mp4", "shapes_2.png"]


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--every", "0"], "--every and --max-frames must be >= 1, got 0 and None"),
        (["--max-frames", "0"], "--every and --max-frames must be >= 1, got 1 and 0"),
    ],
)
def test_video_options_reject_bad_values(args, msg, tmp_path):
    res = run_cli("predict", "demo/mask_rcnn_shapes", str(SAMPLES / "shapes_1.jpg"), *args)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [f"d2ov: error: {msg}"]


def test_bad_video_files_are_one_line_errors(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 100)
    for path, words in ((garbage, "cannot read video"), (tmp_path / "none.webm", "video not found")):
        res = run_cli("predict", "demo/mask_rcnn_shapes", str(path), "--render", str(tmp_path / "r"))
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and words in res.stderr, res.stderr
    assert not (tmp_path / "r").exists() or list((tmp_path / "r").iterdir()) == []


def test_a_failure_half_way_leaves_the_json_that_was_there(tmp_path):
    """--json is written as the results come (a long video is not held in memory), yet a failure half
    way (here the second video is not one) loses nothing: the file from before stays, no temporary."""
    from ..helpers import make_clip

    clip = make_clip(tmp_path / "clip.mp4", frames=3, fps=10)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 100)
    out = tmp_path / "json" / "p.json"
    out.parent.mkdir()
    out.write_text('{"before": true}')
    res = run_cli("predict", "demo/mask_rcnn_shapes", str(clip), str(garbage), "--json", str(out))
    error = res.stderr.strip().splitlines()[-1]  # after the first video's progress line
    assert res.returncode == 2 and error.startswith("d2ov: error: cannot read video") and "Traceback" not in res.stderr
    assert "clip.mp4: 3 frames" in res.stdout  # the first video was done before the second failed
    assert out.read_text() == '{"before": true}' and [p.name for p in out.parent.iterdir()] == ["p.json"]


def test_track_gives_ids_that_follow_objects(tmp_path):
    """--track: the detections are predict()'s on the same frames, and each carries an id that stays
    with its object: in a clip where everything slides 8 px a frame, a track's box moves 8 px."""
    from d2ov_core.runtime.predictor import Predictor
    from d2ov_core.runtime.video import read_frames, video_info
    from d2ov_core.store.lookup import bundled_ir

    from ..helpers import make_clip

    clip = make_clip(tmp_path / "clip.mp4", frames=8, fps=10)
    out = tmp_path / "t.json"
    res = run_cli(
        "predict", "demo/mask_rcnn_shapes", str(clip), "--track", "--json", str(out), "--render", str(tmp_path / "r")
    )
    assert res.returncode == 0, res.stderr[-2000:]
    frames = json.loads(out.read_text())["results"]
    assert [r["frame"] for r in frames] == list(range(8))
    pred = Predictor(bundled_ir("demo/mask_rcnn_shapes"))
    decoded = {f.number: f.rgb for f in read_frames(clip)}
    width = frames[0]["width"]
    by_id: dict[int, dict[int, list[float]]] = {}
    for r in frames:
        ref = pred.predict(decoded[r["frame"]]).to_dict()["instances"]
        key = lambda i: (round(i["box"][0]), round(i["box"][1]), i["label"])  # noqa: E731
        assert sorted(map(key, r["instances"])) == sorted(map(key, ref))  # tracking changes no detection
        ids = [i["track_id"] for i in r["instances"]]
        assert all(t is None or isinstance(t, int) for t in ids)
        tracked = [t for t in ids if t is not None]
        assert len(tracked) == len(set(tracked))  # one detection per track in a frame
        if r["frame"] >= 1:  # an object gets its id from its second frame on
            assert len(tracked) >= 0.8 * len(ids), ids
        for i in r["instances"]:
            if i["track_id"] is not None:
                by_id.setdefault(i["track_id"], {})[r["frame"]] = i["box"]

    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)

    pairs = [
        (box, boxes[f + 1])
        for boxes in by_id.values()
        for f, box in boxes.items()
        if f + 1 in boxes and 10 < box[0] and boxes[f + 1][2] < width - 10  # away from the wrap-around
    ]
    assert len(pairs) >= 30
    # the same object one frame later: where its box was, 8 px to the right (the model's boxes jitter)
    overlaps = [iou([a[0] + 8, a[1], a[2] + 8, a[3]], b) for a, b in pairs]
    assert min(overlaps) >= 0.5, sorted(overlaps)[:5]
    assert abs(np.median([b[0] - a[0] for a, b in pairs]) - 8) <= 1.5
    assert video_info(tmp_path / "r" / "clip.mp4")["frames"] == 8


def test_track_needs_a_video():
    res = run_cli("predict", "demo/mask_rcnn_shapes", str(SAMPLES / "shapes_1.jpg"), "--track")
    line = one_line_error(res)
    assert line == "d2ov: error: --track follows objects across a video's frames: no video among the inputs"
