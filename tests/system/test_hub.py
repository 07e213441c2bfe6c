"""The Hub layout written by push is the one fetch reads, through huggingface_hub's real cache in
offline mode (the Hub itself is unreachable from the build machines)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from d2ov_core.runtime import ir as runtime
from d2ov_core.store import hub

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def make_hf_cache(hf_home: Path, repo_id: str, tree: Path) -> Path:
    """Lay out ``tree`` as huggingface_hub's cache holds a downloaded snapshot of ``repo_id``@main."""
    repo_dir = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snap = repo_dir / "snapshots" / COMMIT
    shutil.copytree(tree, snap)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(COMMIT)
    return snap


def fetch_offline(hf_home: Path, name: str, repo_id: str) -> subprocess.CompletedProcess:
    code = f"""
from d2ov_core.store import hub
from d2ov_core.errors import D2ovError
try:
    print(hub.fetch_ir({name!r}, repo_id={repo_id!r}, revision="main"))
except D2ovError as e:
    print("ERROR", e)
"""
    env = dict(os.environ, HF_HOME=str(hf_home), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture()
def real_ir():
    """A small IR made from a weights file (the Hub never serves IRs of random weights)."""
    from .. import helpers

    return helpers.sparse_ir()


@pytest.fixture()
def pushed(real_ir, tmp_path):
    stage = tmp_path / "stage"
    sub = hub.push_ir(real_ir, "me/d2ov-test", dry_run_dir=stage)
    return stage, sub


def test_push_writes_the_layout_fetch_reads(pushed, real_ir, tmp_path):
    stage, sub = pushed
    name = runtime.read_metadata(real_ir).model_name
    assert sub == hub.model_dir(name, "FP32")
    assert sorted(p.name for p in (stage / sub).iterdir()) == ["d2ov.json", "model.bin", "model.xml"]
    assert "| FP32 |" in (stage / "README.md").read_text()

    snap = make_hf_cache(tmp_path / "hf", "me/d2ov-test", stage)
    # this IR is FP32 (the tiny test IR is converted without FP16 compression)
    code = f"""
from d2ov_core.store import hub
print(hub.fetch_ir({name!r}, precision="FP32", repo_id="me/d2ov-test", revision="main"))
"""
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    xml = Path(res.stdout.strip().splitlines()[-1])
    assert xml == snap / sub / "model.xml"
    assert runtime.read_metadata(xml).model_name == name


def test_tampered_bin_is_refused(pushed, real_ir, tmp_path):
    stage, sub = pushed
    with open(stage / sub / "model.bin", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02\x03")
    make_hf_cache(tmp_path / "hf", "me/d2ov-test", stage)
    name = runtime.read_metadata(real_ir).model_name
    code = f"""
from d2ov_core.store import hub
from d2ov_core.errors import D2ovError
try:
    hub.fetch_ir({name!r}, precision="FP32", repo_id="me/d2ov-test", revision="main")
except D2ovError as e:
    print("ERROR", e)
"""
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "ERROR" in res.stdout and "sha256 does not match" in res.stdout, res.stdout + res.stderr[-1000:]


def test_offline_without_cache_says_so(tmp_path):
    res = fetch_offline(tmp_path / "empty_hf", "COCO-Detection/faster_rcnn_R_50_FPN_1x", "d2ov/detectron2-openvino")
    line = res.stdout.strip().splitlines()[-1]
    assert line.startswith("ERROR") and "offline" in line and "faster_rcnn_R_50_FPN_1x" in line
