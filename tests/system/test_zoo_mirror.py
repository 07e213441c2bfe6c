"""Hermetic Model Zoo downloads: ``D2OV_ZOO_URL`` (a mirror) and ``D2OV_OFFLINE`` / ``HF_HUB_OFFLINE``.

A local HTTP server on 127.0.0.1 plays the Model Zoo: it serves one catalog model's checkpoint, in
the Model Zoo's own format (a pickle of ``{"model": {name: ndarray}, "__author__": ...}``) and
under the Model Zoo's file name, whose md5 prefix d2ov checks. The weights are seeded random numbers
(no Model Zoo checkpoint is reachable from these machines); a few bytes after the pickle's end
(which unpickling ignores) give the file the md5 prefix its name promises.
"""

from __future__ import annotations

import hashlib
import http.server
import pickle
import threading
import time

import numpy as np
import pytest

from d2ov_core.cli import main
from d2ov_core.runtime import ir as runtime
from d2ov_core.store import catalog
from d2ov_core.store import weights as W

from ..conftest import run_cli

NAME = "COCO-Detection/retinanet_R_50_FPN_1x"  # the smallest Model Zoo checkpoint (~145 MB)


#: what :func:`_md5_suffix` finds for the fixture's bytes (numpy 2's pickles of the seeded weights);
#: searched again (about a minute) if they ever pickle differently
KNOWN_SUFFIX = bytes.fromhex("4827cf0000000000")


def _md5_suffix(data: bytes, prefix: str) -> bytes:
    """Bytes to append so that md5(data + suffix) starts with ``prefix`` (6 hex digits: ~16 M tries
    on average, from the md5 state after ``data``)."""
    head = hashlib.md5(data)
    target = bytes.fromhex(prefix)
    known = head.copy()
    known.update(KNOWN_SUFFIX)
    if known.digest()[:3] == target:
        return KNOWN_SUFFIX
    for i in range(1 << 28):
        tail = i.to_bytes(8, "little")
        h = head.copy()
        h.update(tail)
        if h.digest()[:3] == target:
            return tail
    raise AssertionError("no suffix found")  # pragma: no cover


def stand_in_checkpoint() -> tuple[str, bytes]:
    """``(path under the Model Zoo URL, file bytes)`` of NAME's stand-in checkpoint, without the md5
    suffix: seeded random weights of the exact architecture, in the Model Zoo's pickle format."""
    import d2ov_core.export.compat as compat

    compat.apply()
    from detectron2.modeling import build_model

    from d2ov_core.export.model import load_cfg

    spec = catalog.get(NAME)
    cfg = load_cfg(spec)
    cfg.MODEL.DEVICE = "cpu"
    rng = np.random.default_rng(0)
    state = {}
    for k, v in build_model(cfg).state_dict().items():
        if v.is_floating_point():
            # small weights, unit norm scales and variances: a network that computes finite numbers
            state[k] = (
                np.ones(v.shape, np.float32)
                if k.endswith(("running_var", "weight")) and v.ndim == 1
                else (0.01 * rng.standard_normal(v.shape)).astype(np.float32)
            )
        else:
            state[k] = v.numpy()
    data = pickle.dumps({"model": state, "__author__": "Detectron2 Model Zoo (d2ov test stand-in)"}, protocol=4)
    return spec.weights[len(catalog.MODEL_ZOO_URL) :], data


@pytest.fixture(scope="module")
def zoo():
    """``(mirror URL, served bytes, request log)``: a Model Zoo mirror on 127.0.0.1 with NAME's file."""
    path, data = stand_in_checkpoint()  # <model id>/model_final_<md5 prefix>.pkl
    prefix = path.rsplit("_", 1)[1].split(".")[0]
    data += _md5_suffix(data, prefix)
    assert hashlib.md5(data).hexdigest().startswith(prefix)
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            requests.append(self.path)
            if self.path == "/detectron2/" + path:
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self.send_error(404)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/detectron2/", data, requests
    srv.shutdown()
    srv.server_close()


@pytest.mark.slow
def test_convert_downloads_from_the_zoo_mirror(zoo, tmp_path):
    url, data, requests = zoo
    env = {"D2OV_ZOO_URL": url, "D2OV_CACHE": str(tmp_path / "cache"), "D2OV_OFFLINE": ""}
    res = run_cli("-q", "convert", NAME, "--precision", "FP32", env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    spec = catalog.get(NAME)
    assert requests == ["/detectron2/" + spec.weights[len(catalog.MODEL_ZOO_URL) :]]
    digest = hashlib.sha256(data).hexdigest()
    meta = runtime.read_metadata(res.stdout.split()[0])
    assert meta.weights_sha256 == digest and meta.random_weights is False
    # cached under the Model Zoo's URL: the catalog's file, used again offline without a request
    cached = (
        tmp_path
        / "cache"
        / "weights"
        / "dl.fbaipublicfiles.com"
        / "detectron2"
        / spec.weights.split("detectron2/", 1)[1]
    )
    assert W.sha256_file(cached) == digest
    with pytest.MonkeyPatch.context() as mp:  # offline now: the cached file serves, no request
        mp.setenv("D2OV_CACHE", str(tmp_path / "cache"))
        mp.setenv("D2OV_OFFLINE", "1")
        assert W.resolve(spec.weights, progress=False) == (str(cached), digest)
    assert len(requests) == 1


def test_offline_fails_every_zoo_model_at_once_in_one_line(tmp_path, monkeypatch, capsys):
    """``D2OV_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``): no connection is tried, even to a mirror."""
    monkeypatch.setenv("D2OV_CACHE", str(tmp_path))
    monkeypatch.setenv("D2OV_ZOO_URL", "http://192.0.2.1/detectron2/")  # TEST-NET-1: would hang if tried
    for var in ("D2OV_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv("D2OV_OFFLINE", raising=False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv(var, "1")
        for name in [n for n in catalog.names() if W.is_url(catalog.get(n).weights)]:
            t0 = time.monotonic()
            code = main(["convert", name])
            took = time.monotonic() - t0
            err = capsys.readouterr().err.strip().splitlines()
            assert code == 2 and len(err) == 1 and f"offline ({var} is set)" in err[0], (name, err)
            assert "192.0.2.1" in err[0] and took < 5, (name, took)


def test_zoo_url_must_be_a_url(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("D2OV_CACHE", str(tmp_path))
    monkeypatch.delenv("D2OV_OFFLINE", raising=False)
    monkeypatch.setenv("D2OV_ZOO_URL", "/srv/mirror")
    assert main(["convert", NAME]) == 2
    assert "D2OV_ZOO_URL: expected an http(s):// URL" in capsys.readouterr().err
