"""The suite's network guard (tests/netguard/sitecustomize.py): a Python process started by a test may
reach 127.0.0.1 and nothing else, and every refused attempt is logged (so the test fails even when the
code under test swallowed the error)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ..conftest import NETGUARD_DIR

PROBE = """
import socket, sys, urllib.request
host, port = sys.argv[1], int(sys.argv[2])
try:
    with urllib.request.urlopen(f"http://{host}:{port}/", timeout=5) as r:
        print("OK", r.read().decode())
except Exception as e:
    print("ERR", type(e).__name__, e)
"""


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def local_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def probe(tmp_path, host: str, port: int, allow: str = "") -> tuple[str, str]:
    """Run PROBE in a fresh interpreter under the guard with its own log; (its output, the log)."""
    log = tmp_path / f"refused-{host}.log"
    env = dict(os.environ, PYTHONPATH=str(NETGUARD_DIR), D2OV_NET_GUARD_LOG=str(log), D2OV_NET_GUARD_ALLOW=allow)
    out = subprocess.run(
        [sys.executable, "-c", PROBE, host, str(port)], capture_output=True, text=True, env=env, timeout=60
    ).stdout.strip()
    return out, log.read_text() if log.exists() else ""


def test_a_started_process_reaches_loopback(tmp_path, local_server):
    out, log = probe(tmp_path, "127.0.0.1", local_server)
    assert out == "OK hello" and log == ""
    out, log = probe(tmp_path, "localhost", local_server)
    assert out == "OK hello" and log == ""


@pytest.mark.parametrize("host", ["192.0.2.1", "example.com", "dl.fbaipublicfiles.com", "huggingface.co"])
def test_a_started_process_is_refused_anything_else_and_it_is_logged(tmp_path, host):
    out, log = probe(tmp_path, host, 80)
    assert out.startswith("ERR") and "network guard: connection to" in out and host in out
    assert f" {host}:80 " in log and "-c" in log  # pid host:port program


def test_the_test_process_itself_is_guarded():
    assert getattr(socket, "_d2ov_guarded", False)
    assert os.environ["PYTHONPATH"].split(os.pathsep)[0] == str(NETGUARD_DIR)  # inherited by subprocesses
