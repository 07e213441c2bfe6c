"""Faults, for real: `kill -9` of a `python -m d2ov_core convert` while it downloads weights from a
slow local HTTP server, while it writes the IR, and while NNCF calibrates for INT8; then the next
run detects the leftovers, never uses a partial file, and completes. Plus cached files that no
longer match their recorded sha256 (IR and weights): rebuilt / fetched again, with a warning."""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from d2ov_core.store import cache
from d2ov_core.store import weights as W

from .. import helpers
from ..conftest import ROOT, real_photo, run_cli

CLASSES = ",".join(helpers.CLASSES)


def leftovers(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if cache.is_leftover(p.name))


def popen_cli(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "d2ov_core", *args],
        cwd=ROOT,
        env=dict(os.environ, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill9(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return err


def wait_for(cond, proc: subprocess.Popen, timeout: float, poll: float = 0.002):
    """Poll ``cond()`` until it returns something truthy; None if the process ended first."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        found = cond()
        if found:
            return found
        if proc.poll() is not None:
            return None
        time.sleep(poll)
    raise AssertionError(f"condition not met within {timeout} s")


# ----------------------------------------------------------------------------- download


class SlowServer(http.server.BaseHTTPRequestHandler):
    payload = b""
    delay = 0.0  # seconds between 64 KB chunks

    def log_message(self, *a):
        pass

    def do_GET(self):
        if not self.path.endswith("/tiny_sparse.pth"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        try:
            for i in range(0, len(self.payload), 1 << 16):
                self.wfile.write(self.payload[i : i + (1 << 16)])
                self.wfile.flush()
                time.sleep(self.delay)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture()
def slow_server():
    SlowServer.payload = helpers.sparse_weights().read_bytes()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowServer)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}/zoo/tiny_sparse.pth"
    srv.shutdown()


def test_kill_during_download_then_rerun_completes(slow_server, tmp_path, local_downloads):
    srv, url = slow_server
    env = {"D2OV_CACHE": str(tmp_path / "cache")}
    cfg = helpers.sparse_spec().config
    args = ("convert", cfg, "--weights", url, "--classes", CLASSES, "--sample", str(real_photo()))
    final = tmp_path / "cache" / "weights" / f"127.0.0.1:{srv.server_address[1]}" / "zoo" / "tiny_sparse.pth"

    SlowServer.delay = 0.05  # ~10 s for the whole file
    proc = popen_cli(*args, env=env)
    part = wait_for(
        lambda: (
            next((p for p in final.parent.glob(".tiny_sparse.pth.part-*") if p.stat().st_size > 200_000), None)
            if final.parent.is_dir()
            else None
        ),
        proc,
        timeout=120,
        poll=0.01,
    )
    assert part is not None, "the download finished before it could be killed"
    kill9(proc)
    assert part.exists() and part.stat().st_size < len(SlowServer.payload)  # what a kill leaves
    assert not final.exists() and not Path(str(final) + ".sha256").exists()  # never a partial file under the final name

    SlowServer.delay = 0.0
    res = run_cli(*args, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "left by an interrupted run" in res.stderr and part.name in res.stderr, res.stderr[-2000:]
    assert leftovers(tmp_path / "cache") == []
    digest = hashlib.sha256(SlowServer.payload).hexdigest()
    assert W.sha256_file(final) == digest
    assert Path(str(final) + ".sha256").read_text().split()[0] == digest
    from d2ov_core.runtime import ir as runtime

    xml = Path(res.stdout.split()[0])
    assert runtime.read_metadata(xml).weights_sha256 == digest


def test_cached_weights_that_no_longer_match_are_fetched_again(
    slow_server, tmp_path, monkeypatch, caplog, local_downloads
):
    srv, url = slow_server
    SlowServer.delay = 0.0
    monkeypatch.setenv("D2OV_CACHE", str(tmp_path))
    path = W.download(url, progress=False)
    with open(path, "r+b") as f:  # bit rot / a half-restored backup
        f.seek(1000)
        f.write(b"\xff\xfe\xfd")
    with caplog.at_level(logging.WARNING, logger="d2ov"):
        again = W.download(url, progress=False)
    assert again == path and path.read_bytes() == SlowServer.payload
    assert "does not match" in caplog.text and "downloading it again" in caplog.text


# ----------------------------------------------------------------------------- conversion


def _ir_root(cache_root: Path) -> Path:
    return cache_root / "ir"


def test_kill_while_writing_the_ir_then_rerun_cleans_and_completes(tmp_path):
    env = {"D2OV_CACHE": str(tmp_path / "cache")}
    cfg = helpers.sparse_spec().config
    args = ("convert", cfg, "--weights", "random", "--classes", CLASSES, "--sample", str(real_photo()))
    ir_root = _ir_root(tmp_path / "cache")

    left = None
    for _attempt in range(3):  # the IR is written in well under a second: poll for its temporary folder
        proc = popen_cli(*args, env=env)
        left = wait_for(lambda: leftovers(ir_root) if ir_root.is_dir() else None, proc, timeout=300)
        if left:
            kill9(proc)
            break
        proc.communicate()
        shutil.rmtree(ir_root, ignore_errors=True)  # missed the window: start over
    assert left, "could not catch the conversion while it wrote its temporary folder (3 attempts)"
    key_dir = left[0].parent
    finals = [p for p in key_dir.iterdir() if not p.name.startswith(".")]
    assert finals == [], finals  # nothing under a final name
    assert left[0].name.startswith(".") and ".tmp-" in left[0].name

    # the next run: leftovers detected, removed (not used), conversion completed
    res = run_cli(*args, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "left by an interrupted run" in res.stderr and left[0].name in res.stderr, res.stderr[-2000:]
    assert leftovers(ir_root) == []
    xml = Path(res.stdout.split()[0])
    assert xml.parent.parent == key_dir and cache.ir_problem(xml.parent) is None

    # a cached IR that no longer matches its recorded sha256: removed with a warning, rebuilt
    with open(xml.with_suffix(".bin"), "r+b") as f:
        f.seek(4096)
        f.write(b"\x00" * 16)
    res = run_cli(*args, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "does not match" in res.stderr and "it will be rebuilt" in res.stderr, res.stderr[-2000:]
    assert Path(res.stdout.split()[0]) == xml and cache.ir_problem(xml.parent) is None
    assert "using cached IR" not in res.stderr

    # and then it is used as is
    res = run_cli(*args, env=env)
    assert res.returncode == 0 and "using cached IR" in res.stderr, res.stderr[-2000:]


@pytest.fixture()
def calibration_dir(tmp_path) -> Path:
    d = tmp_path / "calib"
    d.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(d / f"c{i}.jpg")
    return d


def test_kill_during_int8_calibration_then_rerun_completes(tmp_path, calibration_dir):
    env = {"D2OV_CACHE": str(tmp_path / "cache")}
    cfg = helpers.sparse_spec().config
    args = (
        "convert",
        cfg,
        "--weights",
        "random",
        "--classes",
        CLASSES,
        "--precision",
        "int8",
        "--calibration",
        str(calibration_dir),
        "--sample",
        str(real_photo()),
    )
    proc = popen_cli(*args, env=env)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    assert wait_for(lambda: any("quantizing to INT8" in line for line in seen), proc, timeout=300, poll=0.05), "".join(
        seen
    )[-2000:]
    time.sleep(1.0)  # NNCF is building its graph / collecting statistics
    assert proc.poll() is None, "calibration ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    ir_root = _ir_root(tmp_path / "cache")
    assert not any(p.name == "model.xml" for p in ir_root.rglob("*") if not cache.is_leftover(p.parent.name))

    res = run_cli(*args, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert leftovers(ir_root) == []
    from d2ov_core.runtime import ir as runtime

    xml = Path(res.stdout.split()[0])
    assert runtime.read_metadata(xml).precision == "INT8" and cache.ir_problem(xml.parent) is None


# ----------------------------------------------------------------------------- lookups (no conversion needed)


def test_lookups_skip_leftovers_and_drop_mismatched_irs(tmp_path, caplog):
    """What the app (ModelService) and `resolve_ir` read from the cache: cache.cached_irs."""
    src = helpers.sparse_ir()
    root = tmp_path / "ir" / "some_model"
    good = helpers.copy_ir(src, root / "aaaa")
    bad = helpers.copy_ir(src, root / "bbbb")
    with open(bad.with_suffix(".bin"), "r+b") as f:
        f.seek(100)
        f.write(b"\x01\x02")
    partial = helpers.copy_ir(src, root / ".cccc.tmp-k1ll3d")  # a killed writer's folder (complete-looking files)
    (partial.parent / "d2ov.json").unlink()
    no_card = helpers.copy_ir(src, root / "dddd")
    (no_card.parent / "d2ov.json").unlink()
    with caplog.at_level(logging.WARNING, logger="d2ov"):
        found = cache.cached_irs(root)
    assert found == [good]
    assert not bad.parent.exists() and not partial.parent.exists() and not no_card.parent.exists()
    assert "does not match" in caplog.text and "left by an interrupted run" in caplog.text
    assert "d2ov.json is missing" in caplog.text


def test_a_live_writer_keeps_its_temporary_files(tmp_path):
    """Leftovers are removed only when no live process holds the target's lock."""
    target = tmp_path / "weights" / "model.pkl"
    target.parent.mkdir(parents=True)
    part = target.with_name(".model.pkl.part-123")
    code = f"""
import sys, time
from d2ov_core.store import cache
with cache.writing({str(target)!r}):
    open({str(part)!r}, "wb").write(b"x")
    print("writing", flush=True)
    time.sleep(60)
"""
    writer = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        assert cache.clean_leftovers(target) == [] and part.exists()  # alive: kept
        assert cache.sweep(tmp_path) == [] and part.exists()
        writer.send_signal(signal.SIGKILL)
        writer.wait(30)
        assert cache.sweep(tmp_path) == [part] and not part.exists()  # dead: removed
    finally:
        if writer.poll() is None:
            writer.kill()


_EVERY_MODEL = r"""
import contextlib, io, json, sys, traceback
from d2ov_core.cli import main
from d2ov_core.store import catalog
sample, bad_json = sys.argv[1], sys.argv[2]
rows = []
for name in catalog.names():
    heavy = [] if name.startswith("demo/") else [["-q", "convert", name, "--precision", "FP32"], ["-q", "verify", name, sample]]
    for argv in [["-q", "predict", name, sample], ["-q", "eval", name, "--annotations", bad_json, "--images", "."], *heavy]:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(argv)
            except SystemExit as e:
                code = e.code
            except BaseException:
                code, err = "traceback", io.StringIO(traceback.format_exc())
        rows.append({"argv": argv, "code": code, "stderr": err.getvalue()})
print(json.dumps(rows))
"""


@pytest.mark.slow
def test_no_command_prints_a_traceback_for_any_catalog_model(tmp_path):
    """predict and eval (a broken annotation file) on every catalog model, convert and verify on every
    Model Zoo model, offline with an empty cache: the demo models predict from their bundled IRs and
    refuse the annotation file in one line; every Model Zoo model says in one line that its weights
    cannot be downloaded; nothing raises."""
    from d2ov_core.store import catalog

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    sample = sorted((ROOT / "d2ov_core" / "data" / "samples").glob("shapes_*.jpg"))[0]
    env = dict(os.environ, D2OV_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-c", _EVERY_MODEL, str(sample), str(bad)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(rows) == 2 * len(catalog.names()) + 2 * sum(1 for n in catalog.names() if not n.startswith("demo/"))
    for row in rows:
        name, command = row["argv"][2], row["argv"][1]
        assert row["code"] in (0, 1, 2), (row["argv"], row["stderr"][-2000:])
        assert "Traceback" not in row["stderr"], (row["argv"], row["stderr"][-2000:])
        if row["code"] == 2:
            lines = row["stderr"].strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("d2ov: error: "), (row["argv"], lines)
        if name.startswith("COCO-") and command in ("predict", "convert", "verify"):
            assert row["code"] == 2 and "cannot download" in row["stderr"], (row["argv"], row["stderr"])
        if name.startswith("demo/"):
            expected = 0 if command == "predict" else 2
            assert row["code"] == expected, (row["argv"], row["stderr"][-2000:])
            if command == "eval":
                assert "not a COCO annotation file" in row["stderr"], (row["argv"], row["stderr"])
