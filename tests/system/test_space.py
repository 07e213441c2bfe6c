"""The Hugging Face Space, launched the way a Space launches it: `d2ov space --dry-run` writes the
folder, with a user's own model in it (the demo Faster R-CNN's config and weights standing in for "my
model", its classes renamed round/box/wedge, three example images of the user's, a title); a fresh
virtual environment is made from that folder's requirements.txt alone (one venv for the module);
`python app.py` runs from the folder as a non-root user whose site-packages are read-only, with the
variables a Space sets (SPACE_ID, SYSTEM=spaces, GRADIO_SERVER_NAME=0.0.0.0, GRADIO_SERVER_PORT) and
HF_HUB_OFFLINE=1 (one launch for the module). It must listen on all interfaces at that port, answer
/detect through gradio_client with the library's detections drawn as the library draws them (no torch
or Detectron2 installed there) and offer /detect as an MCP tool; in
chromium the page opens on the user's model, with its examples, its title and its recorded check against
Detectron2; it offers no Model Zoo model (the Space cannot convert) and no text on it mentions pip."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from ..conftest import ROOT, SAMPLES, netguard_env, run_cli
from ..helpers import assert_drawn_as_the_library, free_port, stop, uv_venv, wait_until_up
from .test_app import CHROMIUM, browser_page

ARTIFACTS = ROOT / "tests" / "_artifacts"
NOBODY = 65534
pytestmark = pytest.mark.slow


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


MY_MODEL = ROOT / "models" / "demo" / "faster_rcnn_shapes"
MY_CLASSES = ("round", "box", "wedge")
MY_TITLE = "My detector"
MY_NAME = "local/faster_rcnn_shapes"  # the config's folder names the model in the Space
#: a Model Zoo model beside it (random weights: no Model Zoo checkpoint is reachable here), converted by
#: d2ov space on this machine; the Space itself cannot convert
ZOO = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x"
ZOO_NAME = "local/" + ZOO.replace("/", "__")  # random weights: a local IR, not the catalog's model


def _my_examples(folder: Path) -> list[Path]:
    """Three images of the demo data's kind (tools/make_shapes.py), with three or more shapes each, named
    unlike the bundled samples."""
    import numpy as np
    from PIL import Image

    from tools import make_shapes

    folder.mkdir(parents=True)
    rng, out = np.random.default_rng(2026), []
    while len(out) < 3:
        img, instances = make_shapes.make_image(rng)
        if len(instances) >= 3:
            out.append(folder / f"my_photo_{len(out)}.jpg")
            Image.fromarray(img).save(out[-1], quality=92)
    return out


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    examples = _my_examples(tmp_path_factory.mktemp("mine") / "examples")
    folder = tmp_path_factory.mktemp("space_parent") / "space"
    res = run_cli(
        "space",
        "--dry-run",
        str(folder),
        "--model",
        "models/demo/faster_rcnn_shapes/config.yaml",
        "--weights",
        "models/demo/faster_rcnn_shapes/model_final.pth",
        "--classes",
        ",".join(MY_CLASSES),
        "--model",
        ZOO,
        "--weights",
        "random",
        "--examples",
        str(examples[0].parent),
        "--title",
        MY_TITLE,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "wrote the Space folder" in res.stdout and f"opens on {MY_NAME}" in res.stdout, res.stdout
    assert f"{MY_NAME} FP16: checked against Detectron2 on 3 images: " in res.stdout, res.stdout
    return folder


def test_the_folder_holds_what_the_app_needs_and_nothing_more(space):
    top = sorted(p.name for p in space.iterdir())
    assert top == [
        "README.md",
        "app.py",
        "d2ov_core",
        "examples",
        "models",
        "packages.txt",
        "requirements.txt",
        "space.json",
    ]
    assert (space / "packages.txt").read_text().split() == ["libgl1", "libglib2.0-0"]  # OpenCV's, for tracking
    assert sorted(p.name for p in (space / "examples").iterdir()) == [f"my_photo_{i}.jpg" for i in range(3)]
    assert sorted(p.relative_to(space).as_posix() for p in (space / "models").rglob("*") if p.is_file()) == sorted(
        f"models/{m}/FP16/{f}"
        for m in ("faster_rcnn_shapes", ZOO_NAME.split("/", 1)[1])
        for f in ("d2ov.json", "model.bin", "model.xml")
    )
    env = json.loads((space / "space.json").read_text())["env"]
    assert env["D2OV_DEFAULT_MODEL"].split(",")[0] == MY_NAME
    assert {k: v for k, v in env.items() if k != "D2OV_DEFAULT_MODEL"} == {
        "D2OV_TITLE": MY_TITLE,
        "D2OV_MODELS_DIR": "models",
        "D2OV_EXAMPLES": "examples",
    }
    readme = space.joinpath("README.md").read_text()
    assert f"- **{MY_NAME}**: detection, 3 classes (round, box, wedge); FP16 IR, `models/faster_rcnn_shapes/`" in readme
    assert "## Adding a model" in readme and "pip" not in readme.split("---", 2)[2]
    front = space.joinpath("README.md").read_text().split("---")[1]
    for line in ("sdk: gradio", "app_file: app.py", 'python_version: "3.11"', "sdk_version: 6.31.0"):
        assert line in front
    reqs = [
        l.strip()
        for l in space.joinpath("requirements.txt").read_text().splitlines()
        if l.strip() and not l.startswith("#")
    ]
    names = {re.split(r"[=<>\[ ]", l)[0].lower() for l in reqs if not l.startswith("--")}
    assert {"openvino", "gradio", "av", "trackers"} <= names
    assert not names & {
        "torch",
        "detectron2",
        "nncf",
        "pytest",
        "playwright",
        "torchvision",
        "pytest-timeout",
        "psutil",
    }
    assert not [l for l in reqs if l.startswith("--")]  # PyPI only: no extra index
    files = [p for p in space.rglob("*") if p.is_file()]
    assert max(p.stat().st_size for p in files if p.name != "model.bin") <= 10 * 1024 * 1024
    assert not [p for p in files if p.suffix in (".pth", ".pkl") or "tests" in p.relative_to(space).parts]
    assert (space / "d2ov_core" / "data" / "ir" / "demo__mask_rcnn_shapes" / "FP16" / "model.bin").is_file()
    assert not list(space.rglob("__pycache__")) and not list(space.rglob("*.so"))


#: a system Python 3.11 (as a Space container has), not the build machine's pyenv under /root (0700: the
#: app's non-root user could not run it)
SYSTEM_PYTHON = shutil.which("python3.11", path="/usr/local/bin:/usr/bin") or sys.executable


@pytest.fixture(scope="module")
def space_env(space, tmp_path_factory):
    """A fresh venv from the Space's requirements.txt alone, made with uv (the same pins from the same
    index as the Space builder's pip, in about 10 s instead of pip's 60-100 s; what is checked is that
    the file is complete, not pip's resolver)."""
    venv = tmp_path_factory.mktemp("space_venv") / "venv"
    t0 = time.perf_counter()
    res = uv_venv(venv, SYSTEM_PYTHON, "-r", str(space / "requirements.txt"))
    assert res.returncode == 0, res.stderr[-3000:]
    install_s = time.perf_counter() - t0
    size = _du(venv)
    site = next((venv / "lib").glob("python3*/site-packages"))
    # no torch side; OpenCV is there for tracking only (trackers asks for opencv-python; d2ov draws without it)
    assert not [m for m in ("torch", "torchvision", "nncf", "detectron2") if (site / m).exists()]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "space_env.json").write_text(
        json.dumps(
            {"install_s": round(install_s, 1), "venv_mb": round(size / 1e6), "folder_mb": round(_du(space) / 1e6, 1)},
            indent=1,
        )
    )
    # the app's user may read the venv and the folder, not write them
    for p in (venv, space):
        subprocess.run(["chmod", "-R", "a+rX,go-w", str(p)], check=True)
    subprocess.run(["chmod", "-R", "a-w", str(site)], check=True)
    for parent in _below_temp(space) + _below_temp(venv):  # pytest's (and xdist's) folders are 0700
        os.chmod(parent, os.stat(parent).st_mode | 0o005)
    return venv, site


def _below_temp(path: Path) -> list[Path]:
    """``path``'s folders below the system's temporary folder (pytest's ``pytest-of-<user>/pytest-N``,
    and with xdist a ``popen-gwN`` more): the app's user must be able to pass through each."""
    top = Path(tempfile.gettempdir()).resolve()
    return [parent for parent in path.resolve().parents if top in parent.parents]


@pytest.fixture(scope="module")
def running_space(space, space_env, tmp_path_factory):
    """The Space folder's app, started once for the module as a Space starts it: ``(url, port, process,
    log path, site-packages listing before the start)``."""
    if os.geteuid() != 0:
        pytest.skip("starting the app as another (non-root) user needs root")
    venv, site = space_env
    before = sorted(str(p) for p in site.rglob("*"))
    tmp = tmp_path_factory.mktemp("space_run")
    home = tmp / "home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    os.chmod(tmp, 0o755)
    port = free_port()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(home),
        "SPACE_ID": "someone/d2ov-demo",
        "SYSTEM": "spaces",
        "GRADIO_SERVER_NAME": "0.0.0.0",
        "GRADIO_SERVER_PORT": str(port),
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(home / "gradio"),
        **netguard_env(),
    }
    log_path = tmp / "space.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [str(venv / "bin" / "python"), "app.py"],
        cwd=space,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        user=NOBODY,
        group=NOBODY,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_up(proc, url, log_path, timeout=180)
        yield url, port, proc, log_path, before
    finally:
        stop(proc)
        log.close()


def test_the_space_starts_as_a_space_and_answers(running_space, space_env):
    from gradio_client import Client, handle_file

    url, port, proc, log_path, before = running_space
    _, site = space_env
    import psutil

    listening = {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.Process(proc.pid).net_connections("tcp")
        if c.status == psutil.CONN_LISTEN
    }
    assert ("0.0.0.0", port) in listening, listening  # all interfaces, the Space's port

    client = Client(url, verbose=False)
    sample = sorted(SAMPLES.glob("shapes_*.jpg"))[0]
    image, table, json_path, summary, card = client.predict(
        handle_file(str(sample)), "demo/mask_rcnn_shapes", "CPU", 0.5, api_name="/detect"
    )
    doc = json.loads(Path(json_path).read_text())
    instances = doc["results"][0]["instances"]
    assert len(table["data"]) == len(instances) > 0
    assert Path(image).is_file()
    # the Space's answer is the library's on the same IR (its venv, its user, its folder: same numbers)
    from d2ov_core.runtime.predictor import Predictor
    from d2ov_core.store.lookup import bundled_ir

    pred = Predictor(bundled_ir("demo/mask_rcnn_shapes", doc["model"]["precision"]))
    ref = pred.predict(str(sample), threshold=0.5)
    assert [i["label"] for i in instances] == [str(x) for x in ref.labels]
    # ... and drawn as the library draws it (the Space has neither torch nor Detectron2: d2ov's renderer)
    assert_drawn_as_the_library(image, sample, "demo/mask_rcnn_shapes", doc["model"]["precision"])
    assert [i["score"] for i in instances] == pytest.approx(ref.scores.tolist(), abs=1e-4)
    assert [i["box"] for i in instances] == [pytest.approx(b, abs=0.01) for b in ref.boxes.tolist()]
    schema = json.loads(urllib.request.urlopen(url + "gradio_api/mcp/schema", timeout=30).read())
    assert any(t["name"].endswith("detect") for t in schema), schema
    text = log_path.read_text()  # while serving (shutdown noise of the event loop is not the app's)
    assert "Traceback" not in text, text[-3000:]
    assert sorted(str(p) for p in site.rglob("*")) == before  # nothing written into site-packages


def test_a_video_runs_and_is_tracked_on_the_space(running_space, tmp_path):
    """The Space decodes and encodes video with its own venv (PyAV from its requirements): the annotated
    MP4 has one frame per processed frame and the records are the library's; tracked (trackers from its
    requirements, OpenCV's system libraries from its packages.txt), the ids are the library's too."""
    from gradio_client import Client, handle_file

    from d2ov_core.runtime.predictor import Predictor
    from d2ov_core.runtime.video import read_frames, video_info
    from d2ov_core.serve.video import process_video
    from d2ov_core.store.lookup import bundled_ir

    from ..helpers import make_clip

    clip = make_clip(tmp_path / "clip.mp4", frames=6, fps=10)
    client = Client(running_space[0], verbose=False)
    video, json_path, summary = client.predict(
        handle_file(str(clip)), "demo/mask_rcnn_shapes", "CPU", 0.5, "FP16", 2, api_name="/detect_video"
    )
    out = Path(video["video"] if isinstance(video, dict) else video)
    assert video_info(out)["frames"] == 3 and summary.startswith("clip.mp4: 3 frames in"), summary
    records = json.loads(Path(json_path).read_text())["results"]
    pred = Predictor(bundled_ir("demo/mask_rcnn_shapes", "FP16"))
    decoded = {f.number: f.rgb for f in read_frames(clip)}
    assert [r["frame"] for r in records] == [0, 2, 4]
    for r in records:
        ref = pred.predict(decoded[r["frame"]], threshold=0.5)
        assert [i["label"] for i in r["instances"]] == [str(x) for x in ref.labels] and len(ref) > 5
    _, json_path, summary = client.predict(
        handle_file(str(clip)), "demo/mask_rcnn_shapes", "CPU", 0.5, "FP16", 2, True, api_name="/detect_video"
    )
    tracked = json.loads(Path(json_path).read_text())["results"]
    here = process_video(pred, clip, every=2, threshold=0.5, track=True).records  # the library, this process
    assert [r["frame"] for r in tracked] == [r["frame"] for r in here] == [0, 2, 4]
    for space_rec, lib_rec in zip(tracked, here):
        ids = [(i["label"], i["track_id"]) for i in space_rec["instances"]]
        assert ids == [(i["label"], i["track_id"]) for i in lib_rec["instances"]]
    assert sum(i["track_id"] is not None for i in tracked[-1]["instances"]) > 5  # objects followed
    assert running_space[2].poll() is None


def test_detect_without_a_model_runs_the_users_model_and_no_zoo_model_is_offered(running_space, space):
    """/detect with the image alone runs the model the Space opens on; the models the API offers are the
    user's and the bundled demo models: no Model Zoo model (the Space has no converter, no IR of one)."""
    from gradio_client import Client, handle_file

    client = Client(running_space[0], verbose=False)
    image, table, json_path, summary, card = client.predict(
        handle_file(str(space / "examples" / "my_photo_0.jpg")), api_name="/detect"
    )
    labels = {row[0] for row in table["data"]}
    assert labels and labels <= set(MY_CLASSES), table
    assert json.loads(Path(json_path).read_text())["model"]["task"] == "detection"
    assert card.startswith(f"**{MY_NAME}**") and "checked against Detectron2 on 3 images: " in card, card
    api = client.view_api(return_format="dict", print_info=False)
    params = api["named_endpoints"]["/detect"]["parameters"]
    model = next(p for p in params if p["parameter_name"] == "model")
    offered = model["type"]["enum"]
    assert model["parameter_default"] == MY_NAME and MY_NAME in offered
    assert not [n for n in offered if n.startswith("COCO")], offered
    assert {n for n in offered if n.startswith("demo/")} == {
        "demo/faster_rcnn_shapes",
        "demo/mask_rcnn_shapes",
        "demo/keypoint_rcnn_figures",
        "demo/panoptic_fpn_shapes",
    }
    assert ZOO_NAME in offered


def test_the_model_zoo_model_converted_for_the_space_detects_on_a_photo_there(running_space):
    """The Model Zoo Mask R-CNN that d2ov space converted on this machine runs on the Space (which has no
    converter), offline, on a real photo: instance masks in the JSON, the card names its source."""
    from gradio_client import Client, handle_file

    from ..conftest import real_photo

    client = Client(running_space[0], verbose=False)
    image, table, json_path, summary, card = client.predict(
        handle_file(str(real_photo())), ZOO_NAME, "CPU", 0.5, api_name="/detect"
    )
    doc = json.loads(Path(json_path).read_text())
    assert doc["model"]["task"] == "instance_segmentation" and doc["model"]["random_weights"] is True
    instances = doc["results"][0]["instances"]
    assert len(table["data"]) == len(instances) > 0 and all("mask" in i for i in instances), summary
    assert card.startswith(f"**{ZOO_NAME}**") and "random weights" in card, card


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (D2OV_BROWSER=1 tools/setup.sh)")
def test_in_a_browser_the_space_opens_on_the_users_model(running_space):
    """At 1280x800 the first screen holds the input, Detect, the user's three examples and the result;
    one click on an example and one on Detect give detections labelled with the user's classes; the card
    shows the recorded check against Detectron2; no text on the page mentions pip."""
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with browser_page(800) as page:
        page.set_viewport_size({"width": 1280, "height": 800})
        page.goto(running_space[0])
        expect(page.get_by_role("heading", name=MY_TITLE)).to_be_visible(timeout=60_000)
        assert page.title() == MY_TITLE
        examples = page.locator("img[src*='my_photo_']")
        expect(examples).to_have_count(3, timeout=30_000)
        expect(page.get_by_label("Model")).to_have_value(MY_NAME)
        expect(page.get_by_label("Object detection")).to_be_checked()
        expect(page.get_by_label("Auto · FP16")).to_be_checked()
        examples.first.click()
        page.get_by_role("button", name="Detect").click()
        expect(page.get_by_text("detections at threshold 0.50")).to_be_visible(timeout=120_000)
        page.screenshot(path=str(ARTIFACTS / "space_first_screen.png"))
        for box in (
            examples.last,
            page.get_by_role("button", name="Detect"),
            page.get_by_text("detections at threshold"),
        ):
            b = box.bounding_box()
            assert b and b["y"] + b["height"] <= 800, (box, b)  # on the first screen
        # the detections table (Gradio draws its rows beside the header's <table>): its words are the labels
        grid = page.locator("table", has_text="label").first.evaluate("t => t.parentElement.parentElement.innerText")
        labels = {w for w in grid.split() if w.isalpha()} - {"label", "score"}
        assert labels and labels <= set(MY_CLASSES), grid
        expect(page.get_by_text("checked against Detectron2 on 3 images:")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "space_page.png"), full_page=True)
        text = page.locator("body").inner_text()
        assert not re.search(r"\bpip\b", text, re.IGNORECASE), text
