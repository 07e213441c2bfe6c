"""Helpers for the reliability tests (tests/test_corpus.py, test_app_reliability.py, test_faults.py):
a small real model whose scores are spread out, IR variants written with the real writers, broken
IRs, and launching the app as a subprocess on 127.0.0.1."""

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

from .conftest import ROOT, real_photo, write_tiny_config

CLASSES = ["circle", "square", "triangle"]


def _stable_dir() -> Path:
    """A folder in this session's d2ov cache: files there are the same for every test module."""
    d = Path(os.environ["D2OV_CACHE"]) / "test-inputs"
    d.mkdir(parents=True, exist_ok=True)
    return d


def sparse_spec():
    """The tiny Mask R-CNN config (3 classes) as a custom catalog spec, with weights from
    :func:`sparse_weights`."""
    from d2ov_core.store import catalog

    d = _stable_dir()
    cfg = d / "tiny_sparse.yaml"
    if not cfg.is_file():
        write_tiny_config(cfg)
    return catalog.custom(cfg, str(sparse_weights()), CLASSES)


def sparse_weights() -> Path:
    """Random weights whose class scores are spread out instead of saturated at 1.0: the box
    classifier is scaled by 0.05 and biased towards background. On small images this model finds
    0 (a flat grey image) to ~25 objects at threshold 0.5, with distinct scores, so results can be
    compared and rendering stays cheap. Deterministic (seeded), saved as a plain state_dict."""
    path = _stable_dir() / "tiny_sparse.pth"
    if path.is_file():
        return path
    import torch

    from d2ov_core.export import model as d2model
    from d2ov_core.store import catalog

    cfg = _stable_dir() / "tiny_sparse.yaml"
    if not cfg.is_file():
        write_tiny_config(cfg)
    from detectron2.modeling import build_model

    # Detectron2's own random init (what d2ov's "random" was before it calibrated scores), seeded
    torch.manual_seed(0)
    model = build_model(d2model.load_cfg(catalog.custom(cfg, "random", CLASSES))).eval()
    head = model.roi_heads.box_predictor.cls_score
    with torch.no_grad():
        head.weight.mul_(0.05)
        head.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 5.0]))
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model": model.state_dict()}, tmp)
    os.replace(tmp, path)
    return path


def sparse_ir() -> Path:
    """FP32 IR of :func:`sparse_spec`, converted once per session into the session cache (a second
    call, from another module, finds it there)."""
    from d2ov_core.export.convert import convert

    spec = sparse_spec()
    return convert(spec, weights=spec.weights, fp16=False, sample=real_photo(), progress=False)


def write_card(folder: Path, base: dict, precision: str) -> None:
    """d2ov.json for an IR folder, as convert writes it (ir_sha256 of the files now there)."""
    from d2ov_core.store.weights import sha256_file

    card = dict(base, precision=precision)
    card["ir_sha256"] = {p.name: sha256_file(p) for p in sorted(folder.glob("model.*"))}
    (folder / "d2ov.json").write_text(json.dumps(card, indent=1))


def resave(src_xml: Path, dst: Path, precision: str, samples: list[np.ndarray] | None = None) -> Path:
    """Write the IR of ``src_xml`` to ``dst/model.xml`` as ``precision``: FP16 = FP16-compressed
    weights (what convert writes by default), INT8 = quantized with NNCF on ``samples``
    (preprocessed CHW float32), FP32 = as is. Uses d2ov's own writer; metadata travels along."""
    from d2ov_core.export.convert import save_ir
    from d2ov_core.runtime import ir as runtime

    dst.mkdir(parents=True, exist_ok=True)
    model = runtime.core().read_model(str(src_xml))
    if precision == "INT8":
        import logging

        import nncf

        nncf.set_log_level(logging.ERROR)
        model = nncf.quantize(
            model, nncf.Dataset(samples), subset_size=len(samples), preset=nncf.QuantizationPreset.PERFORMANCE
        )
    save_ir(
        model,
        dst / "model.xml",
        {"precision": precision, "calibration": "tests (NNCF)" if samples else ""},
        compress_to_fp16=precision == "FP16",
    )
    base = json.loads((src_xml.parent / "d2ov.json").read_text())
    write_card(dst, base, precision)
    return dst / "model.xml"


def calibration_samples(xml: Path, n: int = 3) -> list[np.ndarray]:
    from d2ov_core.runtime import ir as runtime
    from d2ov_core.runtime.preprocess import preprocess

    meta = runtime.read_metadata(xml)
    rng = np.random.default_rng(7)
    return [preprocess(rng.integers(0, 256, (96 + 16 * i, 128, 3), dtype=np.uint8), meta)[0] for i in range(n)]


def copy_ir(src_xml: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src_xml.parent.iterdir():
        if f.name in ("model.xml", "model.bin", "d2ov.json"):
            shutil.copy2(f, dst / f.name)
    return dst / "model.xml"


def truncated_bin_ir(src_xml: Path, dst: Path, card: bool = True) -> Path:
    xml = copy_ir(src_xml, dst)
    data = (dst / "model.bin").read_bytes()
    (dst / "model.bin").write_bytes(data[: len(data) // 2])
    if not card:
        (dst / "d2ov.json").unlink()
    return xml


def other_bin_ir(src_xml: Path, other_xml: Path, dst: Path, card: bool = True) -> Path:
    """``src_xml`` (and its card) with the ``.bin`` of another model."""
    xml = copy_ir(src_xml, dst)
    shutil.copy2(other_xml.with_suffix(".bin"), dst / "model.bin")
    if not card:
        (dst / "d2ov.json").unlink()
    return xml


def no_metadata_ir(dst: Path) -> Path:
    """A valid OpenVINO IR (one ReLU) that was not written by d2ov: no rt_info model_info."""
    import openvino as ov

    dst.mkdir(parents=True, exist_ok=True)
    param = ov.opset13.parameter([3, -1, -1], ov.Type.f32, name="image")
    model = ov.Model([ov.opset13.relu(param)], [param], "not_d2ov")
    ov.save_model(model, str(dst / "model.xml"))
    return dst / "model.xml"


# ----------------------------------------------------------------------------- the app as a process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(proc: subprocess.Popen, url: str, log_path: Path, timeout: float = 180) -> None:
    """Wait until ``url`` answers; fail with the log's tail when the process exits or time runs out."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError("the app exited at launch:\n" + Path(log_path).read_text()[-3000:])
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"the app did not answer within {timeout:.0f} s:\n" + Path(log_path).read_text()[-3000:])


def start_app(env: dict, log_path: Path, timeout: float = 180, cwd: Path = ROOT) -> tuple[subprocess.Popen, str]:
    """``python app.py`` (of ``cwd``: the repository, or a Space folder) on a free port of 127.0.0.1;
    returns ``(process, url)`` once it answers."""
    port = free_port()
    full = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    full.update(env)
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port)], cwd=cwd, env=full, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}/"
    wait_until_up(proc, url, log_path, timeout)
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def make_clip(path: Path, frames: int = 12, fps: float = 10, image: str = "shapes_1.jpg") -> Path:
    """An MP4 (H.264) of a bundled sample image sliding 8 px a frame to the right: moving shapes the
    demo models detect."""
    from d2ov_core.runtime.images import load_image
    from d2ov_core.runtime.video import VideoWriter

    rgb = load_image(Path(__file__).resolve().parent.parent / "d2ov_core" / "data" / "samples" / image)
    with VideoWriter(path, fps=fps) as writer:
        for i in range(frames):
            writer.write(np.roll(rgb, 8 * i, axis=1))
    return path


def make_camera_feed(path: Path, frames: int = 30, image: str = "shapes_1.jpg") -> Path:
    """A Y4M file of the sliding sample (as :func:`make_clip`): what chromium's fake camera plays
    (``--use-file-for-fake-video-capture``), in a loop."""
    import av

    from d2ov_core.runtime.images import load_image

    rgb = load_image(Path(__file__).resolve().parent.parent / "d2ov_core" / "data" / "samples" / image)
    h, w = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
    with av.open(str(path), "w", format="yuv4mpegpipe") as out:
        stream = out.add_stream("rawvideo", rate=10)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.roll(rgb, 8 * i, axis=1)[:h, :w]), "rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def assert_drawn_as_the_library(shown: str | Path, sample: Path, model: str, precision: str) -> None:
    """The image an app returned for ``sample`` (``shown``) is the library's drawing of the library's
    detections on the same bundled IR, sent as Gradio sends a ``format="jpeg"`` image (quality 75):
    within one level on average, where the drawing itself changes the sample by more than ten."""
    import io

    from PIL import Image

    from d2ov_core.runtime.predictor import Predictor
    from d2ov_core.serve.render import render
    from d2ov_core.store.lookup import bundled_ir

    pred = Predictor(bundled_ir(model, precision))
    raw = np.asarray(Image.open(sample).convert("RGB"))
    drawn = render(raw, pred.predict(raw, threshold=0.5), pred.labels, task=pred.task)
    sent = io.BytesIO()
    Image.fromarray(drawn).save(sent, "JPEG", quality=75)
    expected = np.asarray(Image.open(sent).convert("RGB"), np.int16)
    got = np.asarray(Image.open(shown).convert("RGB"), np.int16)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    off, drawing = np.abs(got - expected).mean(), np.abs(drawn.astype(np.int16) - raw).mean()
    assert off < 1 and drawing > 10, (off, drawing)


def uv_venv(venv: Path, python: str, *install: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """A fresh venv at ``venv`` for ``python``, then ``uv pip install *install`` into it (bytecode
    compiled, as pip does): what pip would install from the same pins and index, in about a tenth of
    pip's time. uv is a Rust binary (the network guard sees no Python in it); it talks to the package
    index only. Returns the install's result (check ``returncode``; its stderr says why)."""
    uv = Path(sys.executable).parent / "uv"
    env = dict(os.environ, UV_NO_PROGRESS="1", UV_HTTP_TIMEOUT="60")
    subprocess.run([str(uv), "venv", "-q", "--python", python, str(venv)], check=True, env=env, timeout=120)
    return uv_install(venv, *install, timeout=timeout)


def uv_install(venv: Path, *install: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``uv pip install *install`` into the venv ``venv`` (see :func:`uv_venv`)."""
    uv = Path(sys.executable).parent / "uv"
    env = dict(os.environ, UV_NO_PROGRESS="1", UV_HTTP_TIMEOUT="60")
    cmd = [str(uv), "pip", "install", "-q", "--compile-bytecode", "--python", str(venv / "bin" / "python"), *install]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
