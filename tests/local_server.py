"""A threaded HTTP server on 127.0.0.1 (a free port) for the tests' stand-ins: the fake model
server (:mod:`tests.fake_v2`) and the fake Hugging Face Hub (:mod:`tests.fake_hub`)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LocalServer:
    """Base of a stand-in server: ``_serve(Handler)`` in ``__init__``, then ``start()``/``stop()`` or
    ``with``; ``url`` is ``http://127.0.0.1:PORT``."""

    url: str

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
