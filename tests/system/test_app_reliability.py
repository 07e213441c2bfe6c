"""The web app under untrusted input and load, for real: `python app.py` serving on 127.0.0.1 in a
subprocess, driven through gradio_client and raw HTTP.

Models: IRs dropped into a models folder (``D2OV_MODELS_DIR``): the tiny spread-score Mask R-CNN of
tests/helpers.py as FP32, FP16 (compressed) and INT8 (NNCF), plus broken IRs. So this runs whether
or not the demo models are built. Limits are lowered for the test (``D2OV_MAX_UPLOAD_MB=2``,
``D2OV_MAX_PIXELS=2000000``) to exercise them with small files.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import re
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from .. import helpers
from ..conftest import ROOT
from ..unit.test_images import BAD, GOOD, _save
from .test_corpus import good_cases, write_cases

ARTIFACTS = ROOT / "tests" / "_artifacts"
MODEL = "local/tiny"
DEMO = "demo/mask_rcnn_shapes"


@pytest.fixture(scope="module")
def models_root(tmp_path_factory) -> Path:
    fp32 = helpers.sparse_ir()
    root = tmp_path_factory.mktemp("models")
    helpers.copy_ir(fp32, root / "tiny" / "FP32")
    fp16 = helpers.resave(fp32, root / "tiny" / "FP16", "FP16")
    helpers.resave(fp32, root / "tiny" / "INT8", "INT8", samples=helpers.calibration_samples(fp32))
    helpers.copy_ir(fp16, root / "plain" / "FP16")  # a model with no INT8 IR
    helpers.truncated_bin_ir(fp16, root / "truncated" / "FP16")
    helpers.no_metadata_ir(root / "no_metadata")
    helpers.other_bin_ir(fp16, fp32, root / "other_bin" / "FP16")
    return root


@pytest.fixture(scope="module")
def app(models_root, tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("app_cache")
    (cache_dir / "weights").mkdir()
    (cache_dir / "weights" / "secret.pkl").write_bytes(b"not for the web")
    env = {
        "D2OV_MODELS_DIR": str(models_root),
        "D2OV_CACHE": str(cache_dir),
        "HF_HOME": str(tmp_path_factory.mktemp("hf_home")),
        "D2OV_MAX_UPLOAD_MB": "2",
        "D2OV_MAX_PIXELS": "2000000",
    }
    log = tmp_path_factory.mktemp("app_log") / "app.log"
    proc, url = helpers.start_app(env, log)
    try:
        yield proc, url, log, cache_dir
    finally:
        helpers.stop(proc)


@pytest.fixture(scope="module")
def client(app):
    from gradio_client import Client

    return Client(app[1], verbose=False)


def detect(client, path, *args, model=MODEL):
    from gradio_client import handle_file

    args = args or ("CPU", 0.5)
    return client.predict(handle_file(str(path)), model, *args, api_name="/detect")


def instances(out) -> list[dict]:
    return json.loads(Path(out[2]).read_text())["results"][0]["instances"]


def error_of(fn) -> str:
    """The message the client gets for a failed call (gradio_client re-raises the server's gr.Error)."""
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as exc:
        fn()
    return str(exc.value)


def raw_call(url: str, body: str) -> str:
    """POST a raw JSON body to /detect (what any HTTP client can send) and return the event stream."""
    r = httpx.post(
        url + "gradio_api/call/detect", content=body, headers={"content-type": "application/json"}, timeout=30
    )
    r.raise_for_status()
    with httpx.stream("GET", url + f"gradio_api/call/detect/{r.json()['event_id']}", timeout=120) as s:
        return "".join(s.iter_text())


def upload(url: str, path: Path) -> httpx.Response:
    with open(path, "rb") as f:
        return httpx.post(
            url + "gradio_api/upload", files={"files": (path.name, f, "application/octet-stream")}, timeout=60
        )


# ----------------------------------------------------------------------------- the corpus


def test_good_images_give_the_library_result(client, models_root, tmp_path):
    from d2ov_core.runtime.predictor import Predictor
    from d2ov_core.serve.render import DISPLAY_MAX_SIDE

    cases = good_cases()
    lib = Predictor(models_root / "tiny" / "FP16" / "model.xml")
    found = 0
    for name, path in write_cases(tmp_path, cases).items():
        out = detect(client, path)
        doc = json.loads(Path(out[2]).read_text())
        r = doc["results"][0]
        assert (r["height"], r["width"]) == cases[name][1], name
        ref = lib.predict(path, threshold=0.5)
        assert len(r["instances"]) == len(ref) == len(out[1]["data"]), name
        if len(ref):
            np.testing.assert_allclose([i["box"] for i in r["instances"]], ref.boxes, atol=2e-3, err_msg=name)
            assert [i["label"] for i in r["instances"]] == list(ref.labels), name
        h, w = cases[name][1]
        k = -(-max(h, w) // DISPLAY_MAX_SIDE)  # drawn on the display copy: every k-th pixel (1: itself)
        assert Image.open(out[0]).size == (len(range(k // 2, w, k)), len(range(k // 2, h, k))), name
        found += len(ref)
    assert found > 0
    assert doc["model"]["precision"] == "FP16"  # the default precision


BAD_API = {  # name -> (image case or None, model, device, threshold, precision, message fragment)
    **{f"image_{n}": (n, MODEL, "CPU", 0.5, "FP16", msg) for n, (_, msg) in BAD.items()},
    "no_image": (None, MODEL, "CPU", 0.5, "FP16", "Upload an image first"),
    "pixel_limit": ("too_many_pixels", MODEL, "CPU", 0.5, "FP16", "the limit is 2,000,000"),
    "threshold_nan": ("png", MODEL, "CPU", "nan", "FP16", "got NaN"),
    "threshold_-1": ("png", MODEL, "CPU", -1, "FP16", "must be in [0, 1]"),
    "threshold_2": ("png", MODEL, "CPU", 2, "FP16", "must be in [0, 1]"),
    "threshold_text": ("png", MODEL, "CPU", "high", "FP16", "must be a float"),
    "unknown_device": ("png", MODEL, "TPU", 0.5, "FP16", "unknown device 'TPU'"),
    "device_not_offered": ("png", MODEL, "HETERO:CPU", 0.5, "FP16", "unknown device 'HETERO:CPU'"),
    "unknown_model": ("png", "no_such_model", "CPU", 0.5, "FP16", "unknown model 'no_such_model'"),
    "model_name_dotdot": ("png", "../../../etc/passwd", "CPU", 0.5, "FP16", "unknown model '../../../etc/passwd'"),
    "model_name_local_dotdot": ("png", "local/../../etc", "CPU", 0.5, "FP16", "unknown model"),
    "model_name_path": ("png", str(ROOT / "models"), "CPU", 0.5, "FP16", "unknown model"),
    "ir_truncated_bin": ("png", "local/truncated", "CPU", 0.5, "FP16", "model.bin sha256"),
    "ir_xml_without_d2ov_metadata": ("png", "local/no_metadata", "CPU", 0.5, "FP16", "not a d2ov IR"),
    "ir_bin_of_another_model": ("png", "local/other_bin", "CPU", 0.5, "FP16", "model.bin sha256"),
    "precision_unknown": ("png", MODEL, "CPU", 0.5, "FP8", "unknown precision 'FP8'"),
    "precision_int8_not_available": (
        "png",
        "local/plain",
        "CPU",
        0.5,
        "INT8",
        "local/plain has no INT8 IR (its IRs: FP16)",
    ),
}
EXTRA_IMAGES = {"too_many_pixels": lambda: _save(Image.new("RGB", (1600, 1300), (90, 90, 90)), "PNG")}


@pytest.mark.parametrize("case", BAD_API)
def test_bad_input_is_a_readable_error_and_the_server_keeps_serving(case, app, client, tmp_path):
    from gradio_client import handle_file

    image, model, device, threshold, precision, msg = BAD_API[case]
    if image is None:
        arg = None
    else:
        make = {**{k: v[0] for k, v in BAD.items()}, **{k: v[0] for k, v in GOOD.items()}, **EXTRA_IMAGES}[image]
        p = tmp_path / f"{image}{'.png' if 'png' in image or 'bomb' in image or 'pixels' in image else '.jpg'}"
        p.write_bytes(make())
        arg = handle_file(str(p))
    text = error_of(lambda: client.predict(arg, model, device, threshold, precision, api_name="/detect"))
    assert msg in text, text
    assert "\n" not in text.strip() and len(text) < 400 and "Traceback" not in text, text
    assert app[0].poll() is None


def test_raw_requests_cannot_name_server_files_or_send_nan(app, client, tmp_path):
    """Bypassing gradio_client: a FileData naming a server file is refused (Gradio's upload-folder
    check, then d2ov's), and a JSON NaN threshold is a readable error."""
    url = app[1]
    secret_files = [
        "/etc/passwd",
        str(ROOT / "app.py"),
        str(next((ROOT / "models").rglob("*.yaml"), ROOT / "README.md")),
    ]
    for f in secret_files:
        body = json.dumps({"data": [{"path": f, "meta": {"_type": "gradio.FileData"}}, MODEL, "CPU", 0.5, "FP16"]})
        events = raw_call(url, body)
        assert "event: error" in events and "event: complete" not in events, events[:500]
        assert "root:" not in events and "import" not in events, events[:500]
    good = tmp_path / "g.png"
    good.write_bytes(GOOD["png"][0]())
    uploaded = upload(url, good).json()[0]
    events = raw_call(
        url,
        '{"data": [{"path": "'
        + uploaded
        + '", "meta": {"_type": "gradio.FileData"}}, "'
        + MODEL
        + '", "CPU", NaN, "FP16"]}',
    )
    assert "event: error" in events and "got NaN" in events, events[:500]
    events = raw_call(
        url, json.dumps({"data": [{"path": uploaded, "meta": {"_type": "gradio.FileData"}}, MODEL, "CPU", 0.5, "FP16"]})
    )
    assert "event: complete" in events, events[:500]
    assert app[0].poll() is None


def test_upload_size_limit(app, client, tmp_path):
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > 2 * 1024 * 1024
    r = upload(app[1], big)
    assert r.status_code == 413 and "maximum allowed size" in r.text, (r.status_code, r.text[:300])
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        detect(client, big)  # gradio_client checks the server's limit before uploading
    ok = tmp_path / "ok.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)).save(ok)
    assert 1024 * 1024 < ok.stat().st_size < 2 * 1024 * 1024
    assert Image.open(detect(client, ok)[0]).size == (700, 700)


def test_gradio_serves_no_file_outside_its_upload_and_output_folders(app, client, models_root, tmp_path):
    url = app[1]
    good = tmp_path / "g.png"
    good.write_bytes(GOOD["png"][0]())
    server_json = None
    refused = [
        "/etc/passwd",
        "/proc/self/environ",
        str(ROOT / "app.py"),
        str(ROOT / "d2ov_core" / "weights.py"),
        str(models_root / "tiny" / "FP16" / "model.bin"),
        str(models_root / "tiny" / "FP16" / "model.xml"),
        str(app[3] / "weights" / "secret.pkl"),
        "/tmp/gradio/../../etc/passwd",
        "%2Fetc%2Fpasswd",
        "..%2F..%2F..%2Fetc%2Fpasswd",
        f"http://127.0.0.1:{url.rsplit(':', 1)[1].strip('/')}/config",
    ]
    weights = sorted((ROOT / "models").rglob("*.pth")) + sorted((ROOT / "models").rglob("*.pkl"))
    refused += [str(w) for w in weights[:2]]
    for path in refused:
        r = httpx.get(url + "gradio_api/file=" + path, timeout=30)
        assert r.status_code in (403, 404), (path, r.status_code, r.text[:200])
        assert "root:" not in r.text and "import " not in r.text, path
    # what it does serve: uploads and the app's outputs (the JSON file of that detection)
    uploaded = upload(url, good).json()[0]
    assert httpx.get(url + "gradio_api/file=" + uploaded, timeout=30).status_code == 200
    events = raw_call(
        url, json.dumps({"data": [{"path": uploaded, "meta": {"_type": "gradio.FileData"}}, MODEL, "CPU", 0.5, "FP16"]})
    )
    for line in events.splitlines():
        if line.startswith("data: ["):
            server_json = json.loads(line[6:])[2]["path"]
    assert server_json and httpx.get(url + "gradio_api/file=" + server_json, timeout=30).status_code == 200


def test_listens_on_loopback_only(app):
    conns = [c for c in psutil.Process(app[0].pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert conns and all(c.laddr.ip == "127.0.0.1" for c in conns), conns


# ----------------------------------------------------------------------------- precision


def test_precision_picks_its_ir_and_is_cached_per_precision(client, tmp_path):
    good = tmp_path / "n.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (120, 100, 3), dtype=np.uint8)).save(good)
    docs = {}
    for precision in ("FP16", "FP32", "INT8"):
        out = detect(client, good, "CPU", 0.3, precision)
        docs[precision] = json.loads(Path(out[2]).read_text())
        assert docs[precision]["model"]["precision"] == precision
        assert docs[precision]["model"]["ir"].endswith(f"{precision}/model.xml")
    default = json.loads(Path(detect(client, good, "CPU", 0.3)[2]).read_text())  # old callers: 4 arguments
    assert default["model"]["precision"] == "FP16"
    assert default["results"][0]["instances"] == docs["FP16"]["results"][0]["instances"]
    assert len({d["model"]["ir"] for d in docs.values()}) == 3
    # the same request again gives the same result: each precision keeps its own compiled model
    again = json.loads(Path(detect(client, good, "CPU", 0.3, "INT8")[2]).read_text())
    assert again["results"][0]["instances"] == docs["INT8"]["results"][0]["instances"]
    # (random weights: FP16/INT8 may differ from FP32 in which near-tied boxes survive NMS, so no parity here)


# ----------------------------------------------------------------------------- load


def load_images(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (h, w) in enumerate([(64, 80), (120, 100), (96, 128), (80, 64), (100, 120), (72, 96), (128, 96), (90, 90)]):
        p = folder / f"load{i}.png"
        Image.fromarray(np.random.default_rng(100 + i).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def _record(key: str, value) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    f = ARTIFACTS / "reliability.json"
    doc = json.loads(f.read_text()) if f.is_file() else {}
    doc[key] = value
    f.write_text(json.dumps(doc, indent=1))


@pytest.mark.parametrize("model", [MODEL, DEMO])
def test_64_requests_from_16_threads_equal_the_sequential_results(model, app, client, tmp_path):
    from gradio_client import Client

    if model == DEMO:
        images = sorted((ROOT / "d2ov_core" / "data" / "samples").glob("shapes_*.jpg"))[:8]
    else:
        images = load_images(tmp_path)
    t0 = time.perf_counter()
    sequential = [instances(detect(client, p, model=model)) for p in images]
    t_seq = time.perf_counter() - t0
    assert sum(map(len, sequential)) > 0

    local = threading.local()

    def one(i):
        if not hasattr(local, "client"):
            local.client = Client(app[1], verbose=False)
        return i, instances(detect(local.client, images[i % len(images)], model=model))

    errors, results = [], []
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(16) as pool:
        for fut in cf.as_completed([pool.submit(one, i) for i in range(64)]):
            try:
                results.append(fut.result())
            except Exception as e:  # counted, not raised: the assertion says how many
                errors.append(f"{type(e).__name__}: {e}")
    wall = time.perf_counter() - t0
    assert errors == [], errors[:3]
    assert len(results) == 64
    mismatched = [i for i, inst in results if inst != sequential[i % len(images)]]
    assert mismatched == [], f"{len(mismatched)} of 64 results differ from the sequential result"
    _record(
        f"concurrency {model}",
        {
            "requests": 64,
            "threads": 16,
            "errors": len(errors),
            "mismatched": len(mismatched),
            "wall_s": round(wall, 1),
            "sequential_s_per_request": round(t_seq / len(images), 3),
        },
    )
    assert app[0].poll() is None


#: sequential requests of the memory test: each costs about 1.2 s in the app (drawing, Gradio; issue 26),
#: so 300 took 371 s of CI's 600 s per-test limit; in that run RSS grew 0.08% from request 20 to 200, and to 300
REQUESTS = 200


def test_200_sequential_requests_hold_memory(app, tmp_path):
    from gradio_client import Client

    client = Client(app[1], verbose=False, download_files=False)  # an API user who reads the table only
    images = load_images(tmp_path)
    proc = psutil.Process(app[0].pid)

    def rss():
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])

    samples = []
    t0 = time.perf_counter()
    first: dict[int, list] = {}  # each image's first table: every later answer for it must be the same
    for i in range(REQUESTS):
        out = detect(client, images[i % len(images)], "CPU", 0.05)  # 0.05: noise images give detections too
        table = out[1]["data"]
        assert table == first.setdefault(i % len(images), table), f"request {i + 1}: another answer for the same image"
        if i + 1 in (20, 100, 150, REQUESTS):
            samples.append((i + 1, rss()))
    wall = time.perf_counter() - t0
    assert sum(len(t) for t in first.values()) > 0, "no detection on any image: the comparison above proved nothing"
    base = samples[0][1]
    growth = (samples[-1][1] - base) / base
    _record(
        "memory",
        {
            "requests": REQUESTS,
            "rss_mb": {n: round(r / 2**20, 1) for n, r in samples},
            "growth_after_20": round(growth, 4),
            "wall_s": round(wall, 1),
        },
    )
    assert growth < 0.10, f"RSS grew {growth:.1%} from request 20 to {REQUESTS}: {samples}"
    assert app[0].poll() is None


def test_the_server_log_has_no_unexpected_crash(app):
    text = Path(app[2]).read_text()
    assert "internal error" not in text and "detect failed" not in text, text[-3000:]
    assert os.path.getsize(app[2]) > 0


def test_detect_video_through_the_api(app, client, tmp_path):
    """/detect_video with tracking: the annotated H.264 video has one frame per processed frame, the
    JSON one record per frame equal to the library on the same decoded frames, each detection with its
    track id; a bad video (track left to its default) is one readable error."""
    from gradio_client import handle_file

    from d2ov_core.runtime.predictor import Predictor
    from d2ov_core.runtime.video import read_frames, video_info
    from d2ov_core.serve.video import process_video
    from d2ov_core.store.lookup import bundled_ir

    clip = helpers.make_clip(tmp_path / "clip.mp4", frames=10, fps=10)
    video, json_path, summary = client.predict(
        handle_file(str(clip)), DEMO, "CPU", 0.5, "FP16", 3, True, api_name="/detect_video"
    )
    out = Path(video["video"] if isinstance(video, dict) else video)
    info = video_info(out)
    assert (info["frames"], info["width"], info["height"]) == (4, 302, 418), info
    assert summary.startswith("clip.mp4: 4 frames in") and "FP16 on CPU" in summary, summary
    assert re.search(r", \d+ tracked objects", summary), summary
    records = json.loads(Path(json_path).read_text())["results"]
    assert [(r["source"], r["frame"], r["time_s"]) for r in records] == [("clip.mp4", n, n / 10) for n in (0, 3, 6, 9)]
    pred = Predictor(bundled_ir(DEMO, "FP16"))
    decoded = {f.number: f.rgb for f in read_frames(clip)}
    tracked = process_video(pred, clip, every=3, threshold=0.5, track=True).records  # the library, tracking
    for r, lib in zip(records, tracked, strict=True):
        ref = pred.predict(decoded[r["frame"]], threshold=0.5).to_dict()["instances"]
        assert [i["label"] for i in r["instances"]] == [i["label"] for i in ref] and len(ref) > 5
        assert max(abs(a - b) for i, j in zip(r["instances"], ref) for a, b in zip(i["box"], j["box"])) <= 1e-2
        ids = [i["track_id"] for i in r["instances"]]
        assert ids == [i["track_id"] for i in lib["instances"]], (r["frame"], ids, lib["instances"])
        if r["frame"] > 0:  # an object gets its id from its second processed frame (measured: 63-79% tracked)
            assert sum(t is not None for t in ids) >= 0.5 * len(ids), ids
    # the shapes slide 24 px between processed frames: most objects keep their id to the last frame
    first, last = ({i["track_id"] for i in records[n]["instances"]} - {None} for n in (1, -1))
    assert len(first & last) >= 0.5 * len(first), (first, last)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 100)
    message = error_of(
        lambda: client.predict(
            handle_file(str(garbage)),
            DEMO,
            "CPU",
            0.5,
            "FP16",
            1,
            api_name="/detect_video",
        )
    )
    assert "cannot read video" in message and "garbage.mp4" in message and "Traceback" not in message, message
    assert app[0].poll() is None


def test_detect_batch_through_the_api(app, client, tmp_path):
    """/detect_batch: three images and a zip (one image, one text file) give the library's COCO results
    for the same files, exactly; a zip of only text files is one readable error and the server keeps
    serving."""
    import zipfile

    from gradio_client import handle_file

    from d2ov_core.runtime.predictor import Predictor
    from d2ov_core.serve import batch
    from d2ov_core.store.lookup import bundled_ir

    from ..conftest import SAMPLES

    shapes = sorted(SAMPLES.glob("shapes_*.jpg"))
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(shapes[3], "in/four.jpg")
        zf.writestr("readme.txt", "not an image")
    files = [(p, p.name) for p in shapes[:3]] + [(archive, "more.zip")]
    doc = client.predict([handle_file(str(p)) for p, _ in files], DEMO, "CPU", 0.5, "FP16", api_name="/detect_batch")
    lib = batch.run_batch(
        Predictor(bundled_ir(DEMO, "FP16")), batch.list_inputs(files), tmp_path / "out", threshold=0.5
    ).document
    assert [i["file_name"] for i in doc["images"]] == [*(p.name for p in shapes[:3]), "more.zip/in/four.jpg"]
    assert doc["images"] == lib["images"] and doc["categories"] == lib["categories"]
    assert len(doc["results"]) > 10 and doc["results"] == lib["results"]
    assert doc["skipped"] == [{"file_name": "more.zip/readme.txt", "reason": "not an image"}]
    assert doc["model"] == {"name": "demo/mask_rcnn_shapes", "task": "instance_segmentation", "precision": "FP16"}
    assert doc["summary"].startswith(f"**4** images, **{len(lib['results'])}** detections (")
    assert "FP16 on CPU; skipped 1 file that is not an image: more.zip/readme.txt" in doc["summary"]
    texts = tmp_path / "texts.zip"
    with zipfile.ZipFile(texts, "w") as zf:
        zf.writestr("a.txt", "a")
        zf.writestr("b.csv", "b")
    message = error_of(
        lambda: client.predict([handle_file(str(texts))], DEMO, "CPU", 0.5, "FP16", api_name="/detect_batch")
    )
    assert message.startswith("no images to run on") and "texts.zip/a.txt, texts.zip/b.csv" in message, message
    assert "Traceback" not in message and "\n" not in message.strip()
    assert app[0].poll() is None
    assert detect(client, shapes[0], "CPU", 0.5, "FP16", model=DEMO)[3]  # still serving
