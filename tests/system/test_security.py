"""Security rules that are not about the web app (that is tests/test_app_reliability.py): pickles are
unpickled only from catalog URLs or a path the user typed, and Hub fetches pin a revision."""

from __future__ import annotations

import http.server
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from d2ov_core.errors import ConversionError
from d2ov_core.export.checkpoint import load_into
from d2ov_core.runtime import ir as runtime
from d2ov_core.store import catalog, hub
from d2ov_core.store import weights as W

from .. import helpers
from ..conftest import ROOT


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Files(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def log_message(self, *a):
        pass

    def do_GET(self):
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_a_pkl_from_a_url_outside_the_catalog_is_never_unpickled(server, tmp_path, monkeypatch, local_downloads):
    from d2ov_core.export import model as d2model

    monkeypatch.setenv("D2OV_CACHE", str(tmp_path / "cache"))
    marker = tmp_path / "pwned"
    payload = {"model": {"x": _Evil(marker)}, "__author__": "someone"}
    _Files.files = {"/evil/model_final.pkl": pickle.dumps(payload)}
    spec = helpers.sparse_spec()
    with pytest.raises(ConversionError, match="outside the catalog is not unpickled") as exc:
        d2model.build(spec, weights=server + "/evil/model_final.pkl", progress=False)
    assert "\n" not in str(exc.value)
    assert not marker.exists(), "the pickle ran"
    downloaded = next((tmp_path / "cache" / "weights").rglob("model_final.pkl"))
    assert not W.may_unpickle(downloaded)


def test_catalog_downloads_and_typed_paths_may_be_unpickled(tmp_path, monkeypatch):
    import numpy as np
    import torch

    from d2ov_core.export import model as d2model

    monkeypatch.setenv("D2OV_CACHE", str(tmp_path / "cache"))
    zoo = next(s for s in catalog.CATALOG.values() if W.is_url(s.weights))
    assert W.may_unpickle(W._cache_path(zoo.weights))
    assert W.may_unpickle(tmp_path / "mine" / "model_final.pkl")  # a path the user typed
    # a real Detectron2-format .pkl at a typed path loads
    model, _, _ = d2model.build(helpers.sparse_spec(), "random")
    sd = {k: v.numpy() + 1 if v.is_floating_point() else v.numpy() for k, v in model.state_dict().items()}
    pkl = tmp_path / "mine.pkl"
    pkl.write_bytes(pickle.dumps({"model": sd, "__author__": "me"}))
    load_into(model, str(pkl))
    k = next(k for k, v in model.state_dict().items() if v.is_floating_point())
    assert np.allclose(model.state_dict()[k].numpy(), sd[k])
    assert isinstance(model.state_dict()[k], torch.Tensor)


def test_hub_fetch_uses_the_pinned_revision(tmp_path):
    from .test_hub import COMMIT, make_hf_cache

    assert hub.is_pinned(COMMIT) and not hub.is_pinned("main") and not hub.is_pinned("v1.0")
    xml = helpers.sparse_ir()
    stage = tmp_path / "stage"
    sub = hub.push_ir(xml, "me/pinned", dry_run_dir=stage)
    snap = make_hf_cache(tmp_path / "hf", "me/pinned", stage)
    name = runtime.read_metadata(xml).model_name
    code = f"""
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(message)s")
from d2ov_core.store import hub
print(hub.fetch_ir({name!r}, precision="FP32", repo_id="me/pinned", revision={COMMIT!r}))
"""
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert Path(res.stdout.strip().splitlines()[-1]) == snap / sub / "model.xml"
    assert f"snapshot {COMMIT}" in res.stderr and "sha256 checked" in res.stderr
    assert "not a pinned commit" not in res.stderr
