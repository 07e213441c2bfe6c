"""The Hugging Face Space, launched the way a Space launches it: `d2ov space --dry-run` writes the
folder; a fresh virtual environment is made from that folder's requirements.txt alone; `python app.py`
runs from the folder as a non-root user whose site-packages are read-only, with the variables a Space
sets (SPACE_ID, SYSTEM=spaces, GRADIO_SERVER_NAME=0.0.0.0, GRADIO_SERVER_PORT) and HF_HUB_OFFLINE=1.
It must listen on all interfaces at that port, answer /detect through gradio_client, render with
Detectron2's Visualizer and offer /detect as an MCP tool."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ..conftest import ROOT, SAMPLES, run_cli
from ..helpers import free_port, stop, wait_until_up

ARTIFACTS = ROOT / "tests" / "_artifacts"
NOBODY = 65534
pytestmark = pytest.mark.slow


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    folder = tmp_path_factory.mktemp("space_parent") / "space"
    res = run_cli("space", "--dry-run", str(folder), timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "wrote the Space folder" in res.stdout
    return folder


def test_the_folder_holds_what_the_app_needs_and_nothing_more(space):
    top = sorted(p.name for p in space.iterdir())
    assert top == ["README.md", "app.py", "d2ov_core", "detectron2", "requirements.txt", "space.json"]
    front = space.joinpath("README.md").read_text().split("---")[1]
    for line in ("sdk: gradio", "app_file: app.py", 'python_version: "3.11"', "sdk_version: 6.31.0"):
        assert line in front
    reqs = [l.strip() for l in space.joinpath("requirements.txt").read_text().splitlines()
            if l.strip() and not l.startswith("#")]
    names = {re.split(r"[=<>\[ ]", l)[0].lower() for l in reqs if not l.startswith("--")}
    assert {"openvino", "gradio", "torch"} <= names
    assert not names & {"nncf", "pytest", "playwright", "torchvision", "pytest-timeout", "psutil"}
    assert "torch==2.13.0+cpu" in reqs and "--extra-index-url https://download.pytorch.org/whl/cpu" in reqs
    files = [p for p in space.rglob("*") if p.is_file()]
    assert max(p.stat().st_size for p in files) <= 10 * 1024 * 1024
    assert not [p for p in files if p.suffix in (".pth", ".pkl") or "tests" in p.relative_to(space).parts]
    assert (space / "d2ov_core" / "data" / "ir" / "demo__mask_rcnn_shapes" / "FP16" / "model.bin").is_file()
    assert (space / "detectron2" / "LICENSE").read_text().startswith("Apache License")
    assert not list(space.rglob("__pycache__")) and not list(space.rglob("*.so"))


#: a system Python 3.11 (as a Space container has), not the build machine's pyenv under /root (0700: the
#: app's non-root user could not run it)
SYSTEM_PYTHON = shutil.which("python3.11", path="/usr/local/bin:/usr/bin") or sys.executable


@pytest.fixture(scope="module")
def space_env(space, tmp_path_factory):
    """A fresh venv from the Space's requirements.txt alone (PIP_RETRIES=0: this machine cannot reach
    PyTorch's CPU index, whose wheel it has on disk; a Space can)."""
    venv = tmp_path_factory.mktemp("space_venv") / "venv"
    t0 = time.perf_counter()
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True)
    env = dict(os.environ, PIP_RETRIES="0", PIP_TIMEOUT="10", PIP_DISABLE_PIP_VERSION_CHECK="1")
    res = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-r", str(space / "requirements.txt")],
                         capture_output=True, text=True, env=env, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    install_s = time.perf_counter() - t0
    size = _du(venv)
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert not (site / "torchvision").exists() and not (site / "nncf").exists() and not (site / "detectron2").exists()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "space_env.json").write_text(json.dumps({"install_s": round(install_s, 1), "venv_mb": round(size / 1e6),
                                                         "folder_mb": round(_du(space) / 1e6, 1)}, indent=1))
    # the app's user may read the venv and the folder, not write them
    for p in (venv, space):
        subprocess.run(["chmod", "-R", "a+rX,go-w", str(p)], check=True)
    subprocess.run(["chmod", "-R", "a-w", str(site)], check=True)
    for parent in list(space.parents)[:3] + list(venv.parents)[:3]:
        os.chmod(parent, os.stat(parent).st_mode | 0o005)
    return venv, site


@pytest.mark.skipif(os.geteuid() != 0, reason="starting the app as another (non-root) user needs root")
def test_the_space_starts_as_a_space_and_answers(space, space_env, tmp_path):
    from gradio_client import Client, handle_file

    venv, site = space_env
    before = sorted(str(p) for p in site.rglob("*"))
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    os.chmod(tmp_path, 0o755)
    port = free_port()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(home), "SPACE_ID": "someone/d2ov-demo",
           "SYSTEM": "spaces", "GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": str(port),
           "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(home / "gradio")}
    log_path = tmp_path / "space.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([str(venv / "bin" / "python"), "app.py"], cwd=space, env=env, stdout=log,
                            stderr=subprocess.STDOUT, user=NOBODY, group=NOBODY)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_up(proc, url, log_path, timeout=180)
        import psutil

        listening = {(c.laddr.ip, c.laddr.port) for c in psutil.Process(proc.pid).net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN}
        assert ("0.0.0.0", port) in listening, listening  # all interfaces, the Space's port

        client = Client(url, verbose=False)
        sample = sorted(SAMPLES.glob("shapes_*.jpg"))[0]
        image, table, json_path, summary, card = client.predict(handle_file(str(sample)), "demo/mask_rcnn_shapes",
                                                                "CPU", 0.5, api_name="/detect")
        doc = json.loads(Path(json_path).read_text())
        assert len(table["data"]) == len(doc["results"][0]["instances"]) > 0
        assert Path(image).is_file()
        schema = json.loads(urllib.request.urlopen(url + "gradio_api/mcp/schema", timeout=30).read())
        assert any(t["name"].endswith("detect") for t in schema), schema
        log.flush()
        text = log_path.read_text()  # while serving (shutdown noise of the event loop is not the app's)
    finally:
        stop(proc)
        log.close()
    assert "rendering with Detectron2's Visualizer" in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert sorted(str(p) for p in site.rglob("*")) == before  # nothing written into site-packages
