"""A tiny KServe-v2 REST server for tests (``http.server`` in a thread on 127.0.0.1): serves one real
d2ov IR (metadata with ``rt_info`` as OVMS returns it, inference with OpenVINO in-process), and can be
told to misbehave: answer slowly, with a wrong output shape or dtype, without d2ov metadata, with an
HTTP error, or with JSON instead of binary outputs. The real KServe predictor is tested in
``tests/system/test_kserve.py``; this one is for the failure modes a real server does not show on
demand."""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np

from d2ov_core.runtime import ir as runtime
from d2ov_core.runtime import settings as S

from .local_server import LocalServer

V2_TYPES = {np.dtype("float32"): "FP32", np.dtype("int64"): "INT64", np.dtype("int32"): "INT32"}


class FakeV2Server(LocalServer):
    """``with FakeV2Server(xml, name) as srv: srv.url ...``; set ``srv.mode`` to one of
    ``ok``, ``json`` (JSON outputs), ``slow`` (infer sleeps ``srv.delay`` s), ``wrong_shape`` (boxes
    ``[N, 3]``), ``wrong_dtype`` (boxes INT64), ``missing`` (no scores), ``no_rt_info``, ``error``
    (HTTP 500 with a KServe error body), ``garbage`` (not JSON)."""

    def __init__(self, xml: str | Path, name: str = "fake"):
        self.ir = runtime.load_ir(xml)
        self.name = name
        self.mode = "ok"
        self.delay = 5.0
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, body: bytes, headers: dict | None = None):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                    pass

            def do_GET(self):
                server.requests.append(f"GET {self.path}")
                if self.path == "/v2/models":
                    return self._send(200, json.dumps({"models": [server.name]}).encode())
                if self.path == f"/v2/models/{server.name}":
                    return self._send(200, json.dumps(server.metadata()).encode())
                if self.path in ("/v2/health/ready", "/v2/health/live"):
                    return self._send(200, b"{}")
                self._send(404, json.dumps({"error": f"Model with name {self.path} does not exist."}).encode())

            def do_POST(self):
                server.requests.append(f"POST {self.path}")
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != f"/v2/models/{server.name}/infer":
                    return self._send(404, b'{"error": "no such model"}')
                if server.mode == "slow":
                    time.sleep(server.delay)
                if server.mode == "error":
                    return self._send(500, b'{"error": "fake: inference failed on purpose"}')
                if server.mode == "garbage":
                    return self._send(200, b"<html>proxy error</html>")
                n = int(self.headers.get("Inference-Header-Content-Length", len(body)))
                doc = json.loads(body[:n])
                inp = doc["inputs"][0]
                chw = np.frombuffer(body[n:], dtype="<f4").reshape(inp["shape"])
                outs = server.ir.infer(chw)
                if server.mode == "wrong_shape":
                    outs["boxes"] = outs["boxes"][:, :3]
                if server.mode == "wrong_dtype":
                    outs["boxes"] = outs["boxes"].astype(np.int64)
                if server.mode == "missing":
                    outs.pop("scores")
                binary = server.mode != "json" and (doc.get("parameters") or {}).get("binary_data_output")
                header, raws = [], []
                for name, arr in outs.items():
                    arr = np.ascontiguousarray(arr)
                    out = {"name": name, "shape": list(arr.shape), "datatype": V2_TYPES[arr.dtype]}
                    if binary:
                        raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
                        out["parameters"] = {"binary_data_size": len(raw)}
                        raws.append(raw)
                    else:
                        out["data"] = arr.reshape(-1).tolist()
                    header.append(out)
                head = json.dumps({"model_name": server.name, "outputs": header}).encode()
                if binary:
                    return self._send(200, head + b"".join(raws), {"Inference-Header-Content-Length": str(len(head))})
                self._send(200, head)

        self._serve(Handler)

    def metadata(self) -> dict:
        doc = {
            "name": self.name,
            "versions": ["1"],
            "platform": "fake",
            "inputs": [{"name": "image", "datatype": "FP32", "shape": [3, -1, -1]}],
            "outputs": [],
        }
        if self.mode != "no_rt_info":
            doc["rt_info"] = {S.RT_INFO_SECTION: {k: S.encode(k, v) for k, v in self.ir.metadata.to_dict().items()}}
        return doc


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (a server that is down)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
