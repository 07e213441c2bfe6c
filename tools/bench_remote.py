"""Throughput of ONE local KServe server with N concurrent clients against the in-process predictor,
on the same machine (the numbers docs/serving.md pastes from docs/kserve/bench.md).

    .venv/bin/python -m tools.bench_remote [--model demo/mask_rcnn_shapes] [--clients 1 2 4]
        [--requests 32] [--out docs/kserve] [--serve-python .venv-serve/bin/python] [--no-stock]

For each backend and each N: N client threads share one predictor and take the bundled samples
(decoded once, so disk and JPEG decoding are not measured) in turn until ``--requests`` images are
done, after N warm-up requests. A request is the whole pipeline (preprocess, inference, postprocess);
``remote`` sends the preprocessed tensor to the KServe predictor (``python -m d2ov_core.serve.kserve``,
127.0.0.1, LATENCY hint, d2ov's binary decoding) and postprocesses its answer here; ``remote (kserve
decoding)`` is the same server with ``--kserve-decoding`` (kserve 0.21's own handler). The servers start first and the backends take turns at each N. Reported: wall time, images/s
(requests / wall), median and 90th-percentile latency per request. One run; the machine's load
average before and after is recorded because other work may share its cores.
Writes ``OUT/bench.json`` and ``OUT/bench.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from d2ov_core.runtime import ir as runtime
from d2ov_core.runtime.images import load_image
from d2ov_core.runtime.predictor import Predictor
from d2ov_core.store import catalog
from d2ov_core.store.lookup import bundled_ir

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(serve_python: Path, xml: Path, log: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [str(serve_python), "-m", "d2ov_core.serve.kserve", "--ir", str(xml), "--http-port", str(port), *extra],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        if proc.poll() is not None:
            raise SystemExit("the KServe predictor exited:\n" + log.read_text()[-2000:])
        try:
            urllib.request.urlopen(url + "/v2/health/ready", timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the KServe predictor did not become ready")


def run(predictor: Predictor, images: list, clients: int, requests: int) -> dict:
    """``requests`` predictions from ``clients`` threads sharing ``predictor``."""
    for i in range(clients):  # warm-up: one request per client
        predictor.predict(images[i % len(images)])
    latencies: list[float] = []
    counter = iter(range(requests))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def client():
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t = time.perf_counter()
            try:
                predictor.predict(images[i % len(images)])
            except BaseException as e:  # reported, not swallowed
                errors.append(e)
                return
            with lock:
                latencies.append((time.perf_counter() - t) * 1e3)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    lat = sorted(latencies)
    return {
        "clients": clients,
        "requests": requests,
        "wall_s": round(wall, 2),
        "images_per_s": round(requests / wall, 2),
        "median_ms": round(statistics.median(lat), 1),
        "p90_ms": round(lat[int(0.9 * (len(lat) - 1))], 1),
    }


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "openvino": runtime.openvino_version(),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="demo/mask_rcnn_shapes")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--out", default=str(ROOT / "docs" / "kserve"))
    p.add_argument("--serve-python", default=os.environ.get("D2OV_SERVE_PYTHON", str(ROOT / ".venv-serve/bin/python")))
    p.add_argument("--no-stock", action="store_true", help="skip the server with kserve's own decoding")
    args = p.parse_args(argv)

    xml = bundled_ir(catalog.get(args.model).name)
    images = [load_image(f) for f in catalog.sample_images()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    serve_python = Path(args.serve_python)
    kserve_version = subprocess.run(
        [str(serve_python), "-c", "import kserve, importlib.metadata as m; print(m.version('kserve'))"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    load_before = os.getloadavg()
    rows = []

    servers = [("remote (KServe predictor)", ())] + (
        [] if args.no_stock else [("remote (kserve decoding)", ("--kserve-decoding",))]
    )
    procs, predictors = [], {"in-process": Predictor(xml)}
    try:
        for i, (backend, extra) in enumerate(servers):  # both servers up first (idle ones cost nothing) ...
            proc, url = start_server(serve_python, xml, out / f".server{i}.log", *extra)
            procs.append(proc)
            predictors[backend] = Predictor(server=url, timeout=120)
        for n in args.clients:  # ... so that the backends take turns at each N: load drift hits them alike
            for backend, predictor in predictors.items():
                row = {"backend": backend, **run(predictor, images, n, args.requests)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
    for log in out.glob(".server*.log"):
        log.unlink()
    doc = {
        "model": args.model,
        "ir": str(xml.relative_to(ROOT)),
        "images": [p.name for p in catalog.sample_images()],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "kserve": kserve_version,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "rows": rows,
        "command": "python -m tools.bench_remote " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    (out / "bench.json").write_text(json.dumps(doc, indent=1) + "\n")
    base = {r["clients"]: r["images_per_s"] for r in rows if r["backend"] == "in-process"}
    lines = [
        f"`{doc['command'].strip()}`: {args.model}, {len(images)} samples, {args.requests} requests per row "
        f"after warm-up; {doc['date']}, {doc['machine']['cpu']}, {doc['machine']['cores']} cores, OpenVINO "
        f"{doc['machine']['openvino']}, kserve {kserve_version}; load average before/after "
        f"{doc['load_average_before'][0]} / {doc['load_average_after'][0]} (1 min). One run.",
        "",
        "| backend | clients | images/s | vs in-process | median ms | p90 ms | wall s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    order = list(predictors)
    for r in sorted(rows, key=lambda r: (order.index(r["backend"]), r["clients"])):
        lines.append(
            f"| {r['backend']} | {r['clients']} | {r['images_per_s']:.2f} | "
            f"{r['images_per_s'] / base[r['clients']]:.2f}x | {r['median_ms']:.0f} | {r['p90_ms']:.0f} | "
            f"{r['wall_s']:.1f} |"
        )
    (out / "bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
