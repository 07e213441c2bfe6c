"""d2ov as an installed package: the wheel built from this repository, installed into a fresh venv
outside it, runs `d2ov predict` on the bundled demo model with only openvino, numpy, Pillow and threadpoolctl (no
torch; without numba, keypoint and panoptic demos give the compiled kernels' answers), and with the `app` extra `d2ov serve` answers
/detect (drawn without Detectron2)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import ROOT, netguard_env
from ..helpers import assert_drawn_as_the_library, free_port, stop, uv_install, uv_venv, wait_until_up

pytestmark = pytest.mark.slow
ARTIFACTS = ROOT / "tests" / "_artifacts"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist")
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(dist)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    wheel = next(dist.glob("d2ov-*.whl"))
    venv = tmp_path_factory.mktemp("wheel_venv") / "venv"
    t0 = time.perf_counter()
    res = uv_venv(venv, sys.executable, str(wheel))  # what `pip install d2ov-*.whl` installs (helpers.uv_venv)
    assert res.returncode == 0, res.stderr[-3000:]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "wheel.json").write_text(
        json.dumps(
            {"wheel_mb": round(wheel.stat().st_size / 1e6, 1), "core_install_s": round(time.perf_counter() - t0, 1)}
        )
    )
    return wheel, venv


def run(venv: Path, *args, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(cwd),
        "D2OV_CACHE": str(cwd / "cache"),
        **netguard_env(),
    }
    return subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


def test_core_install_predicts_the_demo_model_without_torch(installed, tmp_path):
    wheel, venv = installed
    code = (
        "import importlib.util as u, json, d2ov_core.store.catalog as c; print(json.dumps({'missing': "
        "[u.find_spec(m) is None for m in ('torch', 'detectron2', 'gradio', 'numba')], 'repo': str(c.REPO_ROOT), "
        "'sample': str(c.sample_images()[0])}))"
    )
    py = run(venv, "python", "-c", code, cwd=tmp_path)
    assert py.returncode == 0, py.stderr[-2000:]
    info = json.loads(py.stdout)
    assert info["missing"] == [True] * 4 and info["repo"] == "None"  # torch-free, not a checkout
    sample = info["sample"]
    assert "site-packages" in sample
    res = run(venv, "d2ov", "predict", sample, "--json", "out.json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads((tmp_path / "out.json").read_text())
    assert doc["model"]["name"] == "demo/mask_rcnn_shapes" and len(doc["results"][0]["instances"]) > 0
    assert "site-packages/d2ov_core/data/ir/" in doc["model"]["ir"]
    # keypoints and panoptic labels without numba (the numpy paths): the same JSON as this venv's
    # compiled kernels give
    from d2ov_core.runtime import native

    assert native.kernels() is not None  # numba is in requirements.txt
    for model, image in (
        ("demo/keypoint_rcnn_figures", "figures_1.jpg"),
        ("demo/panoptic_fpn_shapes", "panoptic_1.jpg"),
    ):
        photo = str(Path(sample).with_name(image))
        res = run(venv, "d2ov", "predict", model, photo, "--json", "core.json", cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-3000:]
        here = subprocess.run(
            [sys.executable, "-m", "d2ov_core", "predict", model, photo, "--json", str(tmp_path / "here.json")],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert here.returncode == 0, here.stderr[-3000:]
        core_doc, here_doc = (json.loads((tmp_path / f).read_text())["results"][0] for f in ("core.json", "here.json"))
        for doc in (core_doc, here_doc):
            del doc["timing_ms"]
        assert core_doc == here_doc, model
        assert core_doc["instances"] and ("keypoints" in core_doc["instances"][0] or core_doc["panoptic"]["segments"])
    # what needs torch says so in one line
    res = run(venv, "d2ov", "convert", "demo/mask_rcnn_shapes", cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs PyTorch and Detectron2" in lines[0] and "d2ov[convert]" in lines[0], lines


def test_app_extra_serves_the_demo_models(installed, tmp_path):
    from gradio_client import Client, handle_file

    wheel, venv = installed
    res = uv_install(venv, f"{wheel}[app]")
    assert res.returncode == 0, res.stderr[-3000:]
    port = free_port()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "D2OV_CACHE": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        **netguard_env(),
    }
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(venv / "bin" / "d2ov"), "serve", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_until_up(proc, url, log_path, timeout=180)
            sample = next((venv / "lib").glob("python3*/site-packages/d2ov_core/data/samples/shapes_1.jpg"))
            out = Client(url, verbose=False).predict(
                handle_file(str(sample)), "demo/faster_rcnn_shapes", "CPU", 0.5, api_name="/detect"
            )
            assert len(out[1]["data"]) > 0 and Path(out[0]).is_file()
            # drawn without Detectron2, exactly as the library draws it
            precision = json.loads(Path(out[2]).read_text())["model"]["precision"]
            assert_drawn_as_the_library(out[0], sample, "demo/faster_rcnn_shapes", precision)
        finally:
            stop(proc)
    assert "Traceback" not in log_path.read_text()
