"""The Gradio app, running for real on 127.0.0.1: launch offline, the API through gradio_client, and a
real browser (Debian's chromium driven by Playwright)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from d2ov_core import catalog
from d2ov_core.detections import rle_decode

from .conftest import ROOT, SAMPLES

ARTIFACTS = ROOT / "tests" / "_artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not (catalog.DEMO_DIR / "mask_rcnn_shapes" / "model.json").is_file(),
                                reason="demo models not built (tools/train_demo_models.py)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", D2OV_CACHE=str(tmp_path_factory.mktemp("app_cache")),
               HF_HOME=str(tmp_path_factory.mktemp("hf_home")), GRADIO_ANALYTICS_ENABLED="False")
    log = open(tmp_path_factory.mktemp("app_log") / "app.log", "w+")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail("app exited at launch:\n" + log.read()[-3000:])
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("app did not come up within 120 s")
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

    from d2ov_core.predictor import Predictor
    from d2ov_core.service import bundled_ir

    url, _, _ = app_url
    client = Client(url, verbose=False)
    sample = sorted(SAMPLES.glob("*.jpg"))[0]
    image, table, json_path, summary, card = client.predict(handle_file(str(sample)), "demo/mask_rcnn_shapes", "CPU", 0.5,
                                                              api_name="/detect")
    doc = json.loads(Path(json_path).read_text())
    inst = doc["results"][0]["instances"]
    ref = Predictor(bundled_ir("demo/mask_rcnn_shapes")).predict(sample, threshold=0.5)
    assert len(inst) == len(ref) > 0
    np.testing.assert_allclose([i["box"] for i in inst], ref.boxes, atol=0.01)
    assert [i["label"] for i in inst] == list(ref.labels)
    assert rle_decode(inst[0]["mask"]).shape == ref.image_size
    assert len(table["data"]) == len(ref)
    assert f"**{len(ref)}** detections" in summary
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
    sample = handle_file(str(sorted(SAMPLES.glob("*.jpg"))[0]))
    messages = []
    for _ in range(90):
        try:
            client.predict(sample, "COCO-Detection/faster_rcnn_R_50_FPN_1x", "CPU", 0.5, api_name="/detect")
        except Exception as e:  # gradio_client re-raises the server's gr.Error text
            messages.append(str(e))
            if "unavailable" in str(e):
                break
        time.sleep(1)
    assert "faster_rcnn_R_50_FPN_1x" in messages[0] and ("being prepared" in messages[0] or "unavailable" in messages[0])
    assert "unavailable" in messages[-1] and "offline" in messages[-1], messages[-1]
    assert proc.poll() is None
    out = client.predict(handle_file(str(sorted(SAMPLES.glob("*.jpg"))[0])), "demo/faster_rcnn_shapes", "CPU", 0.5,
                         api_name="/detect")
    assert len(out[1]["data"]) > 0


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (D2OV_BROWSER=1 tools/setup.sh)")
def test_real_browser_detect_and_threshold(app_url):
    from playwright.sync_api import expect, sync_playwright

    url, _, _ = app_url
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                    "--disable-background-networking", "--disable-component-update", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        page.get_by_text("Examples").first.wait_for(timeout=60_000)
        page.locator("input[type=file]").first.set_input_files(str(sorted(SAMPLES.glob("*.jpg"))[0]))
        page.get_by_role("button", name="Detect").click()
        out = page.locator("img[src*='/file=']").or_(page.locator("img[src*='gradio_api/file']"))
        expect(page.get_by_text("detections at threshold 0.50")).to_be_visible(timeout=120_000)
        rows_before = page.locator("table tbody tr").count()
        assert rows_before > 0
        page.screenshot(path=str(ARTIFACTS / "app_detect.png"), full_page=True)
        number = page.get_by_label("number input for Confidence threshold").or_(page.locator("input[type=number]").first)
        number.fill("0.95")
        number.press("Enter")
        expect(page.get_by_text("detections at threshold 0.95")).to_be_visible(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "app_threshold.png"), full_page=True)
        assert page.locator("table tbody tr").count() <= rows_before
        assert out.count() >= 1
        browser.close()
