"""Past one machine, for real: the demo IRs exported as an OpenVINO Model Server repository
(``d2ov export --ovms``), served from that repository by d2ov's KServe predictor (kserve's
ModelServer, in ``.venv-serve``) on 127.0.0.1 in a subprocess, and used remotely by the library, the
CLI and the web app; a fake v2 server (a thread) for the failures a real server does not show on
demand. OVMS itself is not installable here: its repository is checked by parsing and reloading.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from d2ov_core.runtime import ir as runtime
from d2ov_core.runtime import settings as S
from d2ov_core.runtime.detections import rle_decode
from d2ov_core.runtime.predictor import Predictor
from d2ov_core.store.lookup import bundled_ir

from .. import helpers
from ..conftest import ROOT, SAMPLES, run_cli
from ..fake_v2 import FakeV2Server, closed_port_url

MODELS = {"mask_rcnn_shapes": "demo/mask_rcnn_shapes", "faster_rcnn_shapes": "demo/faster_rcnn_shapes"}
SERVE_PYTHON = Path(os.environ.get("D2OV_SERVE_PYTHON", ROOT / ".venv-serve" / "bin" / "python"))
SAMPLE_FILES = sorted(SAMPLES.glob("shapes_*.jpg"))


def _get(url: str, timeout: float = 10) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def start_kserve(irs: list[Path], log_path: Path, *extra: str, timeout: float = 120) -> tuple[subprocess.Popen, str]:
    """``python -m d2ov_core.serve.kserve --ir ...`` (the serve venv) on a free port; waits until ready."""
    if not SERVE_PYTHON.is_file():
        pytest.fail(
            f"no KServe venv at {SERVE_PYTHON}: run tools/setup.sh (it creates .venv-serve from "
            "requirements-serve.txt) or set D2OV_SERVE_PYTHON"
        )
    port = helpers.free_port()
    args = [str(SERVE_PYTHON), "-m", "d2ov_core.serve.kserve", "--http-port", str(port), *extra]
    for xml in irs:
        args += ["--ir", str(xml)]
    log = open(log_path, "w")
    proc = subprocess.Popen(
        args, cwd=log_path.parent, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError("the KServe predictor exited at launch:\n" + log_path.read_text()[-3000:])
        try:
            if _get(url + "/v2/health/ready", timeout=2)[0] == 200:
                return proc, url
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the KServe predictor did not become ready:\n" + log_path.read_text()[-3000:])


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """Both demo models exported into one OVMS repository by the CLI."""
    out = tmp_path_factory.mktemp("ovms") / "repo"
    for catalog_name in MODELS.values():
        res = run_cli("export", catalog_name, "--ovms", str(out))
        assert res.returncode == 0, res.stderr
        assert "docker run" in res.stdout and "--config_path /models/config.json" in res.stdout
    return out


@pytest.fixture(scope="module")
def kserve(repo, tmp_path_factory):
    log = tmp_path_factory.mktemp("kserve") / "kserve.log"
    proc, url = start_kserve([repo / name / "1" / "model.xml" for name in MODELS], log)
    try:
        yield url, proc, log
    finally:
        proc.terminate()  # SIGTERM: a clean stop
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# ----------------------------------------------------------------------------- the OVMS repository


def test_ovms_repository_parses_and_its_irs_reload_with_their_metadata(repo):
    config = json.loads((repo / "config.json").read_text())
    entries = {e["config"]["name"]: e["config"] for e in config["model_config_list"]}
    assert sorted(entries) == sorted(MODELS)
    for name, catalog_name in MODELS.items():
        assert entries[name]["base_path"] == f"/models/{name}"
        assert entries[name]["shape"] == {"image": "(3,-1,-1)"} and entries[name]["nireq"] >= 1
        assert entries[name]["plugin_config"]["PERFORMANCE_HINT"] in ("LATENCY", "THROUGHPUT")
        xml = repo / name / "1" / "model.xml"
        assert runtime.read_metadata(xml) == runtime.read_metadata(bundled_ir(catalog_name))
        assert runtime.load_ir(xml).output_names == runtime.read_metadata(xml).outputs
    assert "--config_path /models/config.json" in (repo / "README.md").read_text()


# ----------------------------------------------------------------------------- the KServe predictor


def test_health_readiness_and_metadata(kserve):
    url, _, _ = kserve
    assert _get(url + "/v2/health/live") == (200, {"live": True})
    assert _get(url + "/v2/health/ready") == (200, {"ready": True})
    assert sorted(_get(url + "/v2/models")[1]["models"]) == sorted(MODELS)
    for name, catalog_name in MODELS.items():
        assert _get(f"{url}/v2/models/{name}/ready")[0] == 200
        code, meta = _get(f"{url}/v2/models/{name}")
        assert code == 200 and meta["name"] == name
        assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [3, -1, -1]}]
        assert [o["name"] for o in meta["outputs"]] == runtime.read_metadata(bundled_ir(catalog_name)).outputs
        assert {o["name"]: o["datatype"] for o in meta["outputs"]}["classes"] == "INT64"
        info = meta["rt_info"]["model_info"]  # as OVMS returns an IR's rt_info: JSON strings
        assert all(isinstance(v, str) for v in info.values())
        assert S.decode_all(info) == runtime.read_metadata(bundled_ir(catalog_name))
    code, err = _get(url + "/v2/models/nope")
    assert code == 404 and "nope" in err["error"]


def test_listens_on_loopback_only(kserve):
    """kserve binds 0.0.0.0 whatever it is told; d2ov's predictor binds 127.0.0.1 (and nothing else: no gRPC)."""
    import psutil

    url, proc, _ = kserve
    listening = [c.laddr for c in psutil.Process(proc.pid).net_connections(kind="inet") if c.status == "LISTEN"]
    assert [(a.ip, a.port) for a in listening] == [("127.0.0.1", int(url.rsplit(":", 1)[1]))]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_remote_predictor_equals_local_on_the_samples(kserve, name):
    url, _, _ = kserve
    local, rem = Predictor(bundled_ir(MODELS[name])), Predictor(server=url, model=name, timeout=60)
    assert rem.metadata == local.metadata
    for image in SAMPLE_FILES:
        a, b = local.predict(image, threshold=0.0), rem.predict(image, threshold=0.0)
        assert len(b) == len(a) > 0, image
        np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-3)
        np.testing.assert_allclose(b.scores, a.scores, atol=1e-5)
        assert list(b.labels) == list(a.labels)
        if a.masks is None:
            assert b.masks is None
        else:
            assert np.array_equal(b.masks, a.masks)


def test_plain_json_requests_and_bad_inputs(kserve):
    """The v2 JSON form (no binary extension) gives the IR's outputs; a wrong input is HTTP 400 in one line."""
    url, _, _ = kserve
    xml = bundled_ir(MODELS["faster_rcnn_shapes"])
    ir = runtime.load_ir(xml)
    from d2ov_core.runtime.images import load_image
    from d2ov_core.runtime.preprocess import preprocess

    chw, _ = preprocess(load_image(SAMPLE_FILES[0]), ir.metadata)
    body = json.dumps(
        {"inputs": [{"name": "image", "shape": list(chw.shape), "datatype": "FP32", "data": chw.reshape(-1).tolist()}]}
    ).encode()
    req = urllib.request.Request(
        f"{url}/v2/models/faster_rcnn_shapes/infer",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        doc = json.loads(r.read())
    got = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in doc["outputs"]}
    want = ir.infer(chw)
    assert list(got) == list(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=1e-4)
    bad = json.dumps({"inputs": [{"name": "image", "shape": [1, 2], "datatype": "FP32", "data": [0.0, 0.0]}]}).encode()
    req = urllib.request.Request(
        f"{url}/v2/models/faster_rcnn_shapes/infer",
        data=bad,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    err = json.loads(e.value.read())["error"]
    assert e.value.code == 400 and "FP32 [3, H, W]" in err and "\n" not in err


def test_kserve_own_decoding_gives_the_same_answer(repo, tmp_path):
    """``--kserve-decoding`` (kserve's stock infer handler, binary tensors via Python lists) answers the same."""
    proc, url = start_kserve(
        [repo / "mask_rcnn_shapes" / "1" / "model.xml"], tmp_path / "stock.log", "--kserve-decoding"
    )
    try:
        rem = Predictor(server=url, timeout=60)
        a = Predictor(bundled_ir(MODELS["mask_rcnn_shapes"])).predict(SAMPLE_FILES[1], threshold=0.0)
        b = rem.predict(SAMPLE_FILES[1], threshold=0.0)
        assert len(a) == len(b) > 0 and np.array_equal(a.masks, b.masks)
        np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-3)
    finally:
        helpers.stop(proc)


def test_cli_predict_through_the_server_equals_local(kserve, tmp_path):
    url, _, _ = kserve
    images = [str(p) for p in SAMPLE_FILES]
    res = run_cli(
        "predict",
        "--server",
        url,
        "--remote-model",
        "mask_rcnn_shapes",
        *images,
        "--json",
        str(tmp_path / "remote.json"),
    )
    assert res.returncode == 0, res.stderr
    assert run_cli("predict", "demo/mask_rcnn_shapes", *images, "--json", str(tmp_path / "local.json")).returncode == 0
    remote, local = (json.loads((tmp_path / f).read_text()) for f in ("remote.json", "local.json"))
    assert remote["backend"] == "remote" and remote["device"] == url
    assert remote["model"]["ir"] == f"{url}/v2/models/mask_rcnn_shapes"
    for r, l in zip(remote["results"], local["results"]):
        assert len(r["instances"]) == len(l["instances"]) > 0
        for ri, li in zip(r["instances"], l["instances"]):
            assert ri["label"] == li["label"]
            np.testing.assert_allclose(ri["box"], li["box"], atol=1e-3)
            assert np.array_equal(rle_decode(ri["mask"]), rle_decode(li["mask"]))


def test_app_runs_against_the_server(kserve, tmp_path):
    from gradio_client import Client, handle_file

    url, _, _ = kserve
    proc, app_url = helpers.start_app(
        {"D2OV_SERVER_URL": url, "D2OV_CACHE": str(tmp_path / "cache")}, tmp_path / "app.log"
    )
    try:
        client = Client(app_url, verbose=False)
        for name in MODELS:
            image, table, json_path, summary, card = client.predict(
                handle_file(str(SAMPLE_FILES[0])), f"remote/{name}", "CPU", 0.5, api_name="/detect"
            )
            doc = json.loads(Path(json_path).read_text())
            inst = doc["results"][0]["instances"]
            ref = Predictor(bundled_ir(MODELS[name])).predict(SAMPLE_FILES[0], threshold=0.5)
            assert len(inst) == len(ref) > 0
            np.testing.assert_allclose([i["box"] for i in inst], ref.boxes, atol=1e-3)
            assert [i["label"] for i in inst] == list(ref.labels)
            assert doc["backend"] == "remote" and doc["device"] == url
            assert f"**{len(ref)}** detections" in summary and url in summary
            assert f"remote/{name}" in card and "model server" in card
            assert len(table["data"]) == len(ref)
    finally:
        helpers.stop(proc)


# ----------------------------------------------------------------------------- failures in one line


@pytest.fixture(scope="module")
def fake():
    with FakeV2Server(bundled_ir(MODELS["faster_rcnn_shapes"]), "faster") as srv:
        yield srv


@pytest.mark.parametrize(
    "mode, args, message",
    [
        ("wrong_shape", [], "a d2ov model returns FP32 [N, 4]"),
        ("wrong_dtype", [], "output 'boxes' of 'faster' is INT64"),
        ("slow", ["--timeout", "1"], "did not answer inference on 'faster' within 1 s"),
        ("down", [], "is unreachable (Connection refused)"),
    ],
)
def test_cli_server_failures_are_one_line_and_exit_2(fake, mode, args, message):
    fake.mode, fake.delay = ("ok" if mode == "down" else mode), 4.0
    url = closed_port_url() if mode == "down" else fake.url
    t0 = time.monotonic()
    res = run_cli("predict", "--server", url, *args, str(SAMPLE_FILES[0]), timeout=60)
    fake.mode = "ok"
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith("d2ov: error: model server ") and message in lines[0], lines[0]
    assert time.monotonic() - t0 < 30  # never a hang


def test_app_server_failures_are_one_gr_error_and_the_app_keeps_serving(fake, tmp_path):
    from gradio_client import Client, handle_file

    fake.mode = "ok"
    proc, app_url = helpers.start_app(
        {"D2OV_SERVER_URL": fake.url, "D2OV_SERVER_TIMEOUT": "2", "D2OV_CACHE": str(tmp_path / "cache")},
        tmp_path / "app.log",
    )
    try:
        client = Client(app_url, verbose=False)
        sample = handle_file(str(SAMPLE_FILES[0]))
        assert len(client.predict(sample, "remote/faster", "CPU", 0.5, api_name="/detect")[1]["data"]) > 0
        for mode, message in [
            ("wrong_shape", "a d2ov model returns FP32 [N, 4]"),
            ("slow", "did not answer inference on 'faster' within 2 s"),
            ("error", "failed with HTTP 500: fake: inference failed on purpose"),
        ]:
            fake.mode, fake.delay = mode, 6.0
            with pytest.raises(Exception) as e:
                client.predict(sample, "remote/faster", "CPU", 0.5, api_name="/detect")
            assert message in str(e.value) and "Traceback" not in str(e.value), str(e.value)
        fake.mode = "ok"
        fake.stop()  # the server goes away while the app runs
        with pytest.raises(Exception, match=r"is unreachable \(Connection refused\)"):
            client.predict(sample, "remote/faster", "CPU", 0.5, api_name="/detect")
        assert proc.poll() is None
        out = client.predict(sample, "demo/faster_rcnn_shapes", "CPU", 0.5, api_name="/detect")  # local still works
        assert len(out[1]["data"]) > 0
    finally:
        helpers.stop(proc)
    assert "Traceback" not in (tmp_path / "app.log").read_text()


def test_app_with_a_server_that_is_down_exits_with_one_line(tmp_path):
    res = subprocess.run(
        [sys.executable, "app.py", "--port", str(helpers.free_port()), "--server", closed_port_url()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, D2OV_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1"),
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("d2ov: error: model server http://127.0.0.1:")
