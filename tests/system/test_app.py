"""The Gradio app, running for real on 127.0.0.1: launch offline, the API through gradio_client, and a
real browser (Debian's chromium driven by Playwright)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from d2ov_core.runtime.detections import rle_decode
from d2ov_core.store import catalog

from ..conftest import ROOT, SAMPLES
from ..helpers import wait_until_up
from ..pagecheck import (
    check_detection_rows,
    check_instances_drawn,
    check_precision_labels,
    check_screenshot,
    check_segment_rows,
    check_segments_drawn,
    output_image,
    precision_labels,
    screenshot_masks,
    shown_precision,
    table_rows,
)

ARTIFACTS = ROOT / "tests" / "_artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@contextlib.contextmanager
def browser_page(height: int = 1300, camera: Path | None = None):
    """A page of Debian's chromium (driven by Playwright), closed afterwards; with ``camera``, a Y4M
    file its fake webcam plays (camera access granted)."""
    from playwright.sync_api import sync_playwright

    fake_camera = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={camera}",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                *(fake_camera if camera else []),
            ],
        )
        try:
            context = browser.new_context(
                viewport={"width": 1400, "height": height}, permissions=["camera"] if camera else []
            )
            yield context.new_page()
        finally:
            browser.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    port = free_port()
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        D2OV_CACHE=str(tmp_path_factory.mktemp("app_cache")),
        HF_HOME=str(tmp_path_factory.mktemp("hf_home")),
        GRADIO_ANALYTICS_ENABLED="False",
    )
    log_path = tmp_path_factory.mktemp("app_log") / "app.log"
    log = open(log_path, "w")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_up(proc, url, log_path, timeout=120)
        startup = time.perf_counter() - t0
        yield url, startup, proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_launches_offline_at_once_and_only_on_loopback(app_url):
    url, startup, proc = app_url
    assert startup < 60, f"launch took {startup:.0f} s"
    assert url.startswith("http://127.0.0.1:")
    port = int(url.rsplit(":", 1)[1].strip("/"))
    # not reachable on another interface address of this machine
    other = socket.gethostbyname(socket.gethostname())
    if not other.startswith("127."):
        with pytest.raises(OSError):
            socket.create_connection((other, port), timeout=2)


def test_api_detect_matches_the_library(app_url):
    from gradio_client import Client, handle_file

    from d2ov_core.runtime.predictor import Predictor
    from d2ov_core.store.lookup import bundled_ir

    url, _, _ = app_url
    client = Client(url, verbose=False)
    sample = sorted(SAMPLES.glob("shapes_*.jpg"))[0]
    image, table, json_path, summary, card = client.predict(
        handle_file(str(sample)), "demo/mask_rcnn_shapes", "CPU", 0.5, api_name="/detect"
    )
    doc = json.loads(Path(json_path).read_text())
    inst = doc["results"][0]["instances"]
    # no precision given: the model's measured default ("auto"), which for the demo model is INT8
    assert doc["model"]["precision"] == "INT8" and doc["model"]["ir"].endswith("INT8/model.xml")
    assert "selected: INT8" in card
    ref = Predictor(bundled_ir("demo/mask_rcnn_shapes", "INT8")).predict(sample, threshold=0.5)
    assert len(inst) == len(ref) > 0
    np.testing.assert_allclose([i["box"] for i in inst], ref.boxes, atol=0.01)
    assert [i["label"] for i in inst] == list(ref.labels)
    assert rle_decode(inst[0]["mask"]).shape == ref.image_size
    assert len(table["data"]) == len(ref)
    assert f"**{len(ref)}** detections" in summary
    # every stage a person waited for, in order: reading the file, the pipeline, drawing, the JSON
    assert re.search(
        r"decode \d+ ms \| preprocess \d+ ms \| .* \| total \d+ ms \| drawing \d+ ms \| JSON \d+ ms$", summary
    )
    assert Path(image).is_file()


def test_api_bad_inputs_are_readable_errors_and_server_survives(app_url, tmp_path):
    from gradio_client import Client, handle_file

    url, _, proc = app_url
    client = Client(url, verbose=False)
    bad = tmp_path / "fake.jpg"
    bad.write_text("<html>hello</html>")
    with pytest.raises(Exception, match="not an image"):
        client.predict(handle_file(str(bad)), "demo/mask_rcnn_shapes", "CPU", 0.5, api_name="/detect")
    # an unreachable model-zoo model: first "being prepared", then "unavailable" with the reason
    sample = handle_file(str(sorted(SAMPLES.glob("shapes_*.jpg"))[0]))
    messages = []
    for _ in range(90):
        try:
            client.predict(sample, "COCO-Detection/faster_rcnn_R_50_FPN_1x", "CPU", 0.5, api_name="/detect")
        except Exception as e:  # gradio_client re-raises the server's gr.Error text
            messages.append(str(e))
            if "unavailable" in str(e):
                break
        time.sleep(1)
    assert "faster_rcnn_R_50_FPN_1x" in messages[0] and (
        "being prepared" in messages[0] or "unavailable" in messages[0]
    )
    assert "unavailable" in messages[-1] and "offline" in messages[-1], messages[-1]
    assert proc.poll() is None
    out = client.predict(
        handle_file(str(sorted(SAMPLES.glob("shapes_*.jpg"))[0])),
        "demo/faster_rcnn_shapes",
        "CPU",
        0.5,
        api_name="/detect",
    )
    assert len(out[1]["data"]) > 0


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (D2OV_BROWSER=1 tools/setup.sh)")
def test_real_browser_detect_and_threshold(app_url):
    """What a person sees after Detect, read back from the page: the result image is the input with
    the library's detections drawn (same size, every box's pixels changed, the rest the input's), the
    table is the library's answer row by row, the first screen looks like the reference; moving the
    threshold redraws both for the library's answer at the new threshold."""
    from playwright.sync_api import expect

    from d2ov_core.runtime.images import load_image
    from d2ov_core.runtime.predictor import Predictor
    from d2ov_core.store.lookup import bundled_ir

    url, _, _ = app_url
    name = "demo/mask_rcnn_shapes"
    sample = sorted(SAMPLES.glob("shapes_*.jpg"))[0]
    rgb = load_image(sample)
    with browser_page(1100) as page:
        page.goto(url)
        page.get_by_text("Examples").first.wait_for(timeout=60_000)
        expect(page.get_by_label("Model")).to_have_value(name, timeout=30_000)
        page.locator("input[type=file]").first.set_input_files(str(sample))
        page.get_by_role("button", name="Detect").click()
        expect(page.get_by_text("detections at threshold 0.50")).to_be_visible(timeout=120_000)
        precision = shown_precision(page)
        ref = Predictor(bundled_ir(name, precision)).predict(rgb, threshold=0.5)
        check_instances_drawn(output_image(page), rgb, ref)
        check_detection_rows(*table_rows(page), ref)
        check_screenshot(page, "detect", screenshot_masks(page))
        number = page.get_by_label("number input for Confidence threshold").or_(
            page.locator("input[type=number]").first
        )
        number.fill("0.95")
        number.press("Enter")
        expect(page.get_by_text("detections at threshold 0.95")).to_be_visible(timeout=60_000)
        high = ref.filter(0.95)
        assert 0 < len(high) < len(ref)
        expect(page.get_by_role("grid", name="Detections table")).to_have_attribute("aria-rowcount", str(len(high) + 1))
        check_detection_rows(*table_rows(page), high)
        check_instances_drawn(output_image(page), rgb, high)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (D2OV_BROWSER=1 tools/setup.sh)")
def test_real_browser_video_plays_with_its_summary(app_url, tmp_path):
    """The Video section: upload a clip, Detect in video; the annotated video plays in the page
    (readyState >= 2, the clip's duration) and the summary counts its frames."""
    from playwright.sync_api import expect

    from ..helpers import make_clip

    url, _, _ = app_url
    clip = make_clip(tmp_path / "clip.mp4", frames=10, fps=10)
    with browser_page(1300) as page:
        page.goto(url)
        page.get_by_text("Examples").first.wait_for(timeout=60_000)
        page.get_by_text("Video: a file or the webcam, frame by frame").click()
        section = page.locator(".block").filter(has=page.get_by_test_id("block-label").get_by_text("Input video"))
        section.locator("input[type=file]").set_input_files(str(clip))
        page.get_by_role("button", name="Detect in video").click()
        expect(page.get_by_text(re.compile(r"clip\.mp4: 10 frames in"))).to_be_visible(timeout=120_000)
        video = page.get_by_test_id("Detections (video)-player")
        video.wait_for(timeout=30_000)
        page.wait_for_function("v => v.readyState >= 2 && v.duration > 0", arg=video.element_handle(), timeout=30_000)
        state = video.evaluate("v => [v.readyState, v.duration, v.videoWidth, v.videoHeight]")
        assert state[0] >= 2 and abs(state[1] - 1.0) < 0.15 and state[2:] == [302, 418], state
        page.screenshot(path=str(ARTIFACTS / "app_video.png"), full_page=True)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (D2OV_BROWSER=1 tools/setup.sh)")
def test_real_browser_batch_shows_one_result_per_image(app_url, tmp_path):
    """The Batch section: upload three images, Detect in all; the gallery shows exactly three results,
    captioned with the files' names in upload order, each the rendered image of that file, and the
    summary counts the library's detections."""
    from playwright.sync_api import expect

    from d2ov_core.runtime.predictor import Predictor
    from d2ov_core.store.lookup import bundled_ir

    url, _, _ = app_url
    shapes = sorted(SAMPLES.glob("shapes_*.jpg"))[:3]
    with browser_page(1300) as page:
        page.goto(url)
        page.get_by_text("Examples").first.wait_for(timeout=60_000)
        page.get_by_text("Batch: several images or a .zip").click()
        section = page.locator(".block").filter(
            has=page.get_by_test_id("block-label").get_by_text("Images or .zip archives of images")
        )
        section.locator("input[type=file]").set_input_files([str(p) for p in shapes])
        page.get_by_role("button", name="Detect in all").click()
        expect(page.get_by_text(re.compile(r"3 images, \d+ detections")).first).to_be_visible(timeout=180_000)
        gallery = page.locator(".block").filter(
            has=page.get_by_test_id("block-label").get_by_text("Detections (batch)")
        )
        thumbs = gallery.locator("button.thumbnail-item")
        expect(thumbs).to_have_count(3, timeout=30_000)
        assert gallery.locator(".caption-label").all_inner_texts() == [p.name for p in shapes]
        assert thumbs.first.get_attribute("aria-label") == "Thumbnail 1 of 3"
        summary = page.get_by_text(re.compile(r"3 images, \d+ detections")).first.inner_text()
        precision = re.search(r"— (\w+) on CPU", summary).group(1)
        pred = Predictor(bundled_ir("demo/mask_rcnn_shapes", precision))
        n = sum(len(pred.predict(p, threshold=0.5)) for p in shapes)
        assert f"3 images, {n} detections" in summary, summary
        page.screenshot(path=str(ARTIFACTS / "app_batch.png"), full_page=True)


def test_real_browser_live_webcam_draws_the_newest_frames(app_url, tmp_path):
    """The Live webcam section with chromium's fake camera playing the sliding shapes: after Record,
    the drawn result keeps changing (a new answer every time the model is done), each the camera's
    size with the detections drawn and the frames/s overlay in its corner; Stop ends the stream."""
    from PIL import Image

    from ..helpers import make_camera_feed

    url, _, _ = app_url
    feed = make_camera_feed(tmp_path / "camera.y4m")
    with browser_page(1300, camera=feed) as page:
        page.goto(url)
        page.get_by_text("Examples").first.wait_for(timeout=60_000)
        page.get_by_text("Live webcam: the newest frame").click()
        page.get_by_title("grant webcam access").click()
        page.get_by_role("button", name="capture photo").click()  # "Record": the stream starts
        result = (  # the innermost block with that label (the accordion's block holds it too)
            page.locator(".block")
            .filter(has=page.get_by_test_id("block-label").get_by_text("Live detections", exact=True))
            .last
        )
        answers: list[str] = []
        deadline = time.time() + 90
        while len(answers) < 4 and time.time() < deadline:
            img = result.locator("img")
            src = img.first.get_attribute("src") if img.count() else None
            if src and (not answers or answers[-1] != src):
                answers.append(src)
            time.sleep(0.05)
        if len(answers) < 4:
            page.screenshot(path=str(ARTIFACTS / "app_live_failed.png"), full_page=True)
        assert len(answers) >= 4, answers  # the answer follows the camera
        page.get_by_role("button", name="capture photo").click()  # now "Stop"
        drawn = np.asarray(Image.open(io.BytesIO(page.request.get(answers[-1]).body())).convert("RGB"))
        page.screenshot(path=str(ARTIFACTS / "app_live.png"), full_page=True)
    assert drawn.shape == (418, 302, 3)  # the camera's frame, as the fake camera plays it
    assert (drawn[2, 2] == 0).all()  # the frames/s and latency band, black, top left
    # the nearest camera frame (the preview may be mirrored) differs where detections were drawn: masks
    # and boxes over a good part of the picture, not codec noise
    from d2ov_core.runtime.video import read_frames

    changed = min(
        float((np.abs(drawn.astype(int) - view.astype(int)).max(axis=2) > 40).mean())
        for f in read_frames(feed)
        for view in (f.rgb, f.rgb[:, ::-1])
    )
    assert changed > 0.05, changed


def test_mcp_schema_lists_detect_and_a_call_returns_detections(app_url):
    """/detect is also an MCP tool: its schema says what it takes, and one call through the MCP
    protocol (streamable HTTP, the mcp client library) returns the detections."""
    import asyncio
    import base64

    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    url, _, _ = app_url
    schema = json.loads(urllib.request.urlopen(url + "gradio_api/mcp/schema", timeout=30).read())
    tool = next(t for t in schema if t["name"] == "detect")
    video_tool = next(t for t in schema if t["name"] == "detect_video")  # the video endpoint is a tool too
    assert {"video", "every"} <= set(video_tool["inputSchema"]["properties"])
    batch_tool = next(t for t in schema if t["name"] == "detect_batch")  # and the batch endpoint
    assert {"files", "model", "threshold"} <= set(batch_tool["inputSchema"]["properties"])
    assert batch_tool["description"].startswith("Detect objects in many images at once")
    # its schema resolves (webapp.file_list: Gradio's own points "$ref" to nothing and MCP refuses every call)
    jsonschema.validate(
        {"files": ["https://example.com/a.jpg"], "model": "demo/mask_rcnn_shapes"}, batch_tool["inputSchema"]
    )
    props = tool["inputSchema"]["properties"]
    assert {"image", "model", "device", "threshold", "precision"} <= set(props)
    assert "demo/faster_rcnn_shapes" in props["model"]["enum"] and "demo/mask_rcnn_shapes" in props["model"]["enum"]
    assert tool["description"].startswith("Detect objects in an image")
    sample = sorted(SAMPLES.glob("shapes_*.jpg"))[0]
    data_url = "data:image/jpeg;base64," + base64.b64encode(sample.read_bytes()).decode()

    async def call():
        async with streamablehttp_client(url + "gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                assert "detect" in [t.name for t in tools.tools]
                return await session.call_tool(
                    "detect",
                    {
                        "image": data_url,
                        "model": "demo/mask_rcnn_shapes",
                        "device": "CPU",
                        "threshold": 0.5,
                        "precision": "FP16",
                    },
                )

    result = asyncio.run(asyncio.wait_for(call(), 300))
    assert not result.isError, result.content
    # one answer per output (webapp._mcp_shims; Gradio alone put a queued call's five outputs in one text,
    # as a Python repr): the drawn image and its URL, the table as JSON, the JSON file's URL, summary, card
    assert [c.type for c in result.content].count("image") == 1
    text = " ".join(c.text for c in result.content if c.type == "text")
    n = int(re.search(r"\*\*(\d+)\*\* detections at threshold 0.50", text).group(1))
    from d2ov_core.runtime.predictor import Predictor
    from d2ov_core.store.lookup import bundled_ir

    assert n == len(Predictor(bundled_ir("demo/mask_rcnn_shapes")).predict(sample, threshold=0.5)) > 0
    assert re.search(r"/gradio_api/file=\S+\.jpeg", text)  # the rendered image (JPEG), served by the app
    # the table comes as JSON (Gradio alone sends a dict's Python repr): one row per detection
    tables = [json.loads(c.text) for c in result.content if c.type == "text" and c.text.startswith('{"')]
    assert len(tables) == 1 and len(tables[0]["data"]) == n, tables


def test_mcp_detect_batch_call_returns_coco_results(app_url):
    """/detect_batch through the MCP protocol: two images as data URLs give the library's COCO results.
    Gradio 6.31's MCP server converts file URLs only at fixed positions (``files.items``, never
    ``files.0``) and answers a dict with its Python ``repr``: without the app's ``webapp._mcp_shims`` the
    list reached it as strings and failed the File component's validation (this test was a strict
    xfail until then), and the answer was not JSON."""
    import asyncio
    import base64

    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    from d2ov_core.runtime.predictor import Predictor
    from d2ov_core.store.lookup import bundled_ir

    url, _, _ = app_url
    shapes = sorted(SAMPLES.glob("shapes_*.jpg"))[:2]
    urls = ["data:image/jpeg;base64," + base64.b64encode(p.read_bytes()).decode() for p in shapes]

    async def call():
        async with streamablehttp_client(url + "gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                args = {"files": urls, "model": "demo/mask_rcnn_shapes", "device": "CPU", "threshold": 0.5}
                return await session.call_tool("detect_batch", {**args, "precision": "FP16"})

    result = asyncio.run(asyncio.wait_for(call(), 300))
    assert not result.isError, result.content
    text = " ".join(c.text for c in result.content if c.type == "text")
    doc = json.loads(text)  # the whole answer is the COCO document, as JSON
    pred = Predictor(bundled_ir("demo/mask_rcnn_shapes", "FP16"))
    n = [len(pred.predict(p, threshold=0.5)) for p in shapes]
    assert [i["id"] for i in doc["images"]] == [1, 2] and min(n) > 0
    assert [sum(r["image_id"] == k for r in doc["results"]) for k in (1, 2)] == n
    assert doc["summary"].startswith(f"**2** images, **{sum(n)}** detections")


@pytest.mark.parametrize("flags,expect_host", [([], "0.0.0.0"), (["--host", "127.0.0.1"], "127.0.0.1")])
def test_listens_where_gradio_variables_say_unless_flags_override(flags, expect_host, tmp_path):
    """What a Space sets (GRADIO_SERVER_NAME/PORT) decides where `python app.py` listens; --host and
    --port, when given, win."""
    import psutil

    from ..helpers import stop

    env_port, flag_port = free_port(), free_port()
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        D2OV_CACHE=str(tmp_path / "cache"),
        GRADIO_ANALYTICS_ENABLED="False",
        GRADIO_SERVER_NAME="0.0.0.0",
        GRADIO_SERVER_PORT=str(env_port),
        D2OV_MCP="0",
    )
    port = flag_port if flags else env_port
    args = flags + (["--port", str(flag_port)] if flags else [])
    log_path = tmp_path / "app.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "app.py", *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_until_up(proc, f"http://127.0.0.1:{port}/", log_path, timeout=120)
            listening = {
                (c.laddr.ip, c.laddr.port)
                for c in psutil.Process(proc.pid).net_connections("tcp")
                if c.status == psutil.CONN_LISTEN
            }
            assert listening == {(expect_host, port)}, listening
        finally:
            stop(proc)


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (D2OV_BROWSER=1 tools/setup.sh)")
def test_real_browser_precisions_examples_and_one_error(app_url):
    """In the browser: every precision offered for the demo model shows its measured AP (the IR's
    metadata, value by value); choosing a
    Model Zoo model that cannot be prepared offline switches the examples to photos, updates the card
    to 'unavailable' with the reason, and Detect shows that error once (not in every output box)."""
    from playwright.sync_api import expect

    url, _, _ = app_url
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    zoo = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x"
    with browser_page() as page:
        page.goto(url)
        page.get_by_text("Examples (synthetic shapes)").wait_for(timeout=60_000)
        expect(page.get_by_label("Model")).to_have_value("demo/mask_rcnn_shapes", timeout=30_000)
        labels = precision_labels(page)
        default = check_precision_labels(labels, "demo/mask_rcnn_shapes")  # the values are the IRs' metadata
        expect(page.get_by_label(f"Auto · {default}")).to_be_checked()  # "Auto · <the default>" starts selected
        model = page.get_by_label("Model")
        model.click()
        model.fill("mask_rcnn_R_50_FPN_1x")
        page.get_by_role("option", name=zoo).click()
        expect(page.get_by_text("Examples (photos)")).to_be_visible(timeout=30_000)
        expect(page.get_by_text("status: unavailable")).to_be_visible(timeout=120_000)
        page.locator("input[type=file]").first.set_input_files(str(sorted(SAMPLES.glob("shapes_*.jpg"))[0]))
        page.get_by_role("button", name="Detect").click()
        message = f"{zoo} (FP16) is unavailable"
        in_toast = page.get_by_test_id("toast-body").get_by_text(message)
        expect(in_toast.first).to_be_visible(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "app_unavailable.png"), full_page=True)
        # the error text in the error toast only, not in every output box (Gradio may stack a second toast
        # of the same error while the first fades, as seen under two test workers)
        assert page.get_by_text(message).count() == in_toast.count() >= 1
        # the toast's title and the image's status; Gradio's screen-reader announcement (sr-only) aside
        shown = [
            e for e in page.get_by_text("Error", exact=True).all() if "sr-only" not in (e.get_attribute("class") or "")
        ]
        assert len(shown) <= 2, [e.get_attribute("class") for e in shown]


def test_api_keypoint_model_returns_keypoints(app_url):
    """The keypoint demo model through /detect: instances carry 7 keypoints in the library's values."""
    from gradio_client import Client, handle_file

    from d2ov_core.runtime.predictor import Predictor
    from d2ov_core.store.lookup import bundled_ir

    url, _, _ = app_url
    client = Client(url, verbose=False)
    sample = sorted(SAMPLES.glob("figures_*.jpg"))[0]
    name = catalog.DEFAULTS["keypoints"]
    _, table, json_path, summary, card = client.predict(
        handle_file(str(sample)), name, "CPU", 0.5, "FP16", api_name="/detect"
    )
    doc = json.loads(Path(json_path).read_text())
    result = doc["results"][0]
    ref = Predictor(bundled_ir(name, "FP16")).predict(sample, threshold=0.5)
    assert result["keypoint_names"] == list(ref.keypoint_names) and len(ref.keypoint_names) == 7
    assert len(result["instances"]) == len(ref) > 0
    np.testing.assert_allclose([i["keypoints"] for i in result["instances"]], ref.keypoints, atol=0.01)
    assert "keypoints (7): head, neck" in card


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (D2OV_BROWSER=1 tools/setup.sh)")
def test_real_browser_keypoints_task(app_url):
    """The Keypoints task in the browser: the keypoint demo model with its stick-figure examples and
    its precisions' measured keypoint AP; Detect draws the library's detections and their keypoints
    on the input, the table is the library's answer, the first screen looks like the reference."""
    from playwright.sync_api import expect

    from d2ov_core.runtime.images import load_image
    from d2ov_core.runtime.predictor import Predictor
    from d2ov_core.store.lookup import bundled_ir

    url, _, _ = app_url
    name = catalog.DEFAULTS["keypoints"]
    sample = sorted(SAMPLES.glob("figures_*.jpg"))[0]
    rgb = load_image(sample)
    with browser_page() as page:
        page.goto(url)
        page.get_by_text("Examples (synthetic shapes)").wait_for(timeout=60_000)
        page.get_by_label("Keypoints").check()
        expect(page.get_by_label("Model")).to_have_value(name, timeout=30_000)
        expect(page.get_by_text("Examples (stick figures)")).to_be_visible(timeout=30_000)
        expect(page.get_by_text("keypoints (7): head, neck")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("keypoint AP").first).to_be_visible(timeout=30_000)
        default = check_precision_labels(precision_labels(page), name)
        page.locator("input[type=file]").first.set_input_files(str(sample))
        page.get_by_role("button", name="Detect").click()
        expect(page.get_by_text("detections at threshold 0.50")).to_be_visible(timeout=120_000)
        assert shown_precision(page) == default
        ref = Predictor(bundled_ir(name, default)).predict(rgb, threshold=0.5)
        assert ref.keypoints is not None
        check_instances_drawn(output_image(page), rgb, ref)
        check_detection_rows(*table_rows(page), ref)
        check_screenshot(page, "keypoints", screenshot_masks(page))


def test_api_panoptic_model_returns_segments(app_url):
    """The panoptic demo model through /detect: a segments table and JSON segments equal to the
    library's panoptic map (every segment's RLE decodes to the same pixels)."""
    from gradio_client import Client, handle_file

    from d2ov_core.runtime.predictor import Predictor
    from d2ov_core.store.lookup import bundled_ir

    url, _, _ = app_url
    client = Client(url, verbose=False)
    sample = catalog.sample_images("panoptic_segmentation")[0]
    name = catalog.DEFAULTS["panoptic_segmentation"]
    _, table, json_path, summary, card = client.predict(
        handle_file(str(sample)), name, "CPU", 0.5, "FP16", api_name="/detect"
    )
    ref = Predictor(bundled_ir(name, "FP16")).predict(sample, threshold=0.5)
    segments = json.loads(Path(json_path).read_text())["results"][0]["panoptic"]["segments"]
    assert table["headers"] == ["segment", "class", "thing/stuff", "area px", "score"]
    assert len(table["data"]) == len(segments) == len(ref.segments) > 2
    assert {r[2] for r in table["data"]} == {"thing", "stuff"}
    for seg, row in zip(segments, table["data"]):
        assert np.array_equal(rle_decode(seg["mask"]), ref.segment_map == seg["id"])
        assert [row[0], row[1], row[3]] == [seg["id"], seg["label"], seg["area"]]
    assert "panoptic segments" in summary and "stuff classes" in card


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (D2OV_BROWSER=1 tools/setup.sh)")
def test_real_browser_panoptic_task(app_url):
    """The Panoptic segmentation task in the browser: the panoptic demo model with its examples and
    its precisions' measured PQ; Detect shows the library's panoptic map drawn on the input (every
    segment) and its segments, things and stuff, row by row; the first screen looks like the reference."""
    from playwright.sync_api import expect

    from d2ov_core.runtime.images import load_image
    from d2ov_core.runtime.predictor import Predictor
    from d2ov_core.store.lookup import bundled_ir

    url, _, _ = app_url
    name = catalog.DEFAULTS["panoptic_segmentation"]
    sample = catalog.sample_images("panoptic_segmentation")[0]
    rgb = load_image(sample)
    with browser_page() as page:
        page.goto(url)
        page.get_by_text("Examples (synthetic shapes)").wait_for(timeout=60_000)
        page.get_by_label("Panoptic segmentation").check()
        expect(page.get_by_label("Model")).to_have_value(name, timeout=30_000)
        expect(page.get_by_text("Examples (shapes over textured regions)")).to_be_visible(timeout=30_000)
        expect(page.get_by_text("stuff classes (")).to_be_visible(timeout=60_000)
        expect(page.get_by_text(" · PQ ").first).to_be_visible(timeout=30_000)
        default = check_precision_labels(precision_labels(page), name)
        page.locator("input[type=file]").first.set_input_files(str(sample))
        page.get_by_role("button", name="Detect").click()
        expect(page.get_by_text("panoptic segments (")).to_be_visible(timeout=120_000)
        assert shown_precision(page) == default
        ref = Predictor(bundled_ir(name, default)).predict(rgb, threshold=0.5)
        check_segments_drawn(output_image(page), rgb, ref)
        headers, rows = table_rows(page)
        check_segment_rows(headers, rows, ref)
        assert {r[2] for r in rows} == {"thing", "stuff"}  # the segments table lists both
        check_screenshot(page, "panoptic", screenshot_masks(page))
