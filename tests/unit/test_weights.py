"""Weights resolution and downloads against a real HTTP server on 127.0.0.1."""

import copy
import hashlib
import http.server
import os
import threading
from pathlib import Path

import pytest
import torch

from d2ov_core.errors import ConversionError, DownloadError, ModelNotFoundError
from d2ov_core.export.checkpoint import load_into
from d2ov_core.store import weights as W

PAYLOAD = os.urandom(3 * (1 << 20) + 123)
pytestmark = pytest.mark.usefixtures("local_downloads")  # downloads from the server below


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.path.endswith("/ok.bin") or self.path.endswith("_" + hashlib.md5(PAYLOAD).hexdigest()[:6] + ".pkl"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
        elif self.path.endswith("/truncated.bin"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
        elif self.path.endswith("_abcdef.pkl"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_download_is_complete_and_records_sha256(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("D2OV_CACHE", str(tmp_path))
    path, digest = W.resolve(server + "/zoo/ok.bin")
    assert Path(path).read_bytes() == PAYLOAD
    assert digest == hashlib.sha256(PAYLOAD).hexdigest()
    assert Path(path + ".sha256").read_text().strip() == digest
    assert Path(path).is_relative_to(tmp_path / "weights")
    assert "ok.bin" in capsys.readouterr().err  # progress bar on stderr
    # second call reuses the file
    mtime = Path(path).stat().st_mtime_ns
    assert W.resolve(server + "/zoo/ok.bin") == (path, digest)
    assert Path(path).stat().st_mtime_ns == mtime


def test_truncated_download_leaves_nothing(server, tmp_path, monkeypatch):
    monkeypatch.setenv("D2OV_CACHE", str(tmp_path))
    with pytest.raises(DownloadError, match="truncated"):
        W.download(server + "/truncated.bin", progress=False)
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == []


def test_model_zoo_md5_prefix_is_checked(server, tmp_path):
    good = hashlib.md5(PAYLOAD).hexdigest()[:6]
    assert W.download(
        f"{server}/m/model_final_{good}.pkl", dest=tmp_path / f"model_final_{good}.pkl", progress=False
    ).is_file()
    with pytest.raises(DownloadError, match="corrupt: md5"):
        W.download(server + "/m/model_final_abcdef.pkl", dest=tmp_path / "model_final_abcdef.pkl", progress=False)
    assert not (tmp_path / "model_final_abcdef.pkl").exists()


def test_expected_sha256_mismatch_is_refused(server, tmp_path):
    with pytest.raises(DownloadError, match="does not match the expected"):
        W.download(server + "/ok.bin", dest=tmp_path / "x.bin", progress=False, expected_sha256="0" * 64)
    assert not (tmp_path / "x.bin").exists()


def test_http_error_and_unreachable_host_give_one_line(server, tmp_path):
    with pytest.raises(DownloadError, match="cannot download .*missing.bin"):
        W.download(server + "/missing.bin", dest=tmp_path / "m.bin", progress=False)
    with pytest.raises(DownloadError, match="offline\\?"):
        W.download("http://127.0.0.1:9/nothing.pkl", dest=tmp_path / "n.pkl", progress=False, timeout=5)


def test_local_paths_and_random(tmp_path):
    f = tmp_path / "w.pth"
    f.write_bytes(b"abc")
    assert W.resolve(str(f)) == (str(f), hashlib.sha256(b"abc").hexdigest())
    assert W.resolve("random") == ("random", "")
    with pytest.raises(ModelNotFoundError, match="weights file not found"):
        W.resolve(str(tmp_path / "nope.pth"))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pth_is_loaded_weights_only_and_pickles_are_refused(tmp_path, tiny_spec):
    from d2ov_core.export import model as d2model

    model = copy.deepcopy(d2model.build(tiny_spec, "random")[0])  # build's model is shared: load into a copy
    good = tmp_path / "good.pth"
    sd = {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({"model": sd}, good)
    load_into(model, str(good))
    k = next(k for k, v in sd.items() if v.is_floating_point())
    assert torch.equal(model.state_dict()[k], sd[k])

    evil = tmp_path / "evil.pth"
    torch.save({"model": sd, "x": _Evil()}, evil)
    with pytest.raises(ConversionError, match="weights_only"):
        load_into(model, str(evil))

    partial = tmp_path / "partial.pth"
    torch.save({"model": {k: v for i, (k, v) in enumerate(sd.items()) if i % 2}}, partial)
    with pytest.raises(ConversionError, match="parameters missing"):
        load_into(model, str(partial))
