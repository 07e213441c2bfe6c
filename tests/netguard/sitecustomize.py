"""The test suite's network guard: Python processes started by the tests load this module (the suite
puts this folder on ``PYTHONPATH``), the test process itself calls :func:`install`.

Allowed: loopback (127.0.0.0/8, ::1, ``localhost``), Unix sockets, and the package registries pip
reaches (``D2OV_NET_GUARD_ALLOW``: host names, e.g. pypi.org, for the tests that build a venv the way
a Space or a wheel user does). Anything else is refused at name resolution or connect time with
``ConnectionRefusedError`` and recorded (one line: pid, host, port, program) in the file named by
``D2OV_NET_GUARD_LOG``; ``tests/conftest.py`` fails the test during which a line appeared, so code
that catches the error still cannot reach out unnoticed.

Standard library only: it runs in every interpreter the tests start, including other venvs.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys

_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


def _is_loopback(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _caller() -> str:
    """The innermost frames outside the standard library and the HTTP stacks: who asked for the connection."""
    import traceback

    skip = (
        "/socket.py",
        "/ssl.py",
        "/urllib/",
        "/http/",
        "/httpx/",
        "/httpcore/",
        "/anyio/",
        "/urllib3/",
        "/requests/",
        "/httpx2/",
        "/httpcore2/",
        "/h11/",
        "/asyncio/",
        "/concurrent/",
        "/threading.py",
        "sitecustomize.py",
    )
    frames = [f for f in traceback.extract_stack() if not any(s in f.filename for s in skip)]
    return " <- ".join(f"{f.filename.rsplit('site-packages/', 1)[-1]}:{f.lineno}" for f in frames[-4:][::-1])


def install(log_path: str, allow: str = "") -> None:
    """Guard this interpreter's sockets (idempotent)."""
    if getattr(socket, "_d2ov_guarded", False):
        return
    allowed_names = {h.strip().lower() for h in allow.split(",") if h.strip()}
    allowed_ips: set[str] = set()
    real_getaddrinfo, real_connect, real_connect_ex = (
        socket.getaddrinfo,
        socket.socket.connect,
        socket.socket.connect_ex,
    )

    def refuse(host: object, port: object) -> ConnectionRefusedError:
        line = f"{os.getpid()} {host}:{port} {' '.join(sys.argv)[:200]} (via {_caller()})\n"
        try:
            with open(log_path, "a") as f:
                f.write(line)
        except OSError:
            pass
        return ConnectionRefusedError(
            f"d2ov test network guard: connection to {host}:{port} refused (tests may only reach 127.0.0.1)"
        )

    def getaddrinfo(host, port, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name is None or _is_loopback(name):
            return real_getaddrinfo(host, port, *args, **kwargs)
        if isinstance(name, str) and name.lower() in allowed_names:
            infos = real_getaddrinfo(host, port, *args, **kwargs)
            allowed_ips.update(str(info[4][0]) for info in infos)
            return infos
        try:  # a literal address resolves to itself: judged at connect time
            ipaddress.ip_address(str(name).split("%")[0])
            return real_getaddrinfo(host, port, *args, **kwargs)
        except ValueError:
            raise refuse(name, port) from None

    def check(sock: socket.socket, address) -> None:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        host, port = address[0], address[1]
        if not _is_loopback(host) and str(host) not in allowed_ips:
            raise refuse(host, port)

    def connect(self, address):
        check(self, address)
        return real_connect(self, address)

    def connect_ex(self, address):
        check(self, address)
        return real_connect_ex(self, address)

    socket.getaddrinfo = getaddrinfo
    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket._d2ov_guarded = True  # type: ignore[attr-defined]


if os.environ.get("D2OV_NET_GUARD_LOG"):
    install(os.environ["D2OV_NET_GUARD_LOG"], os.environ.get("D2OV_NET_GUARD_ALLOW", ""))
