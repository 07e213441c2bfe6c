"""What a person waits for in the web app, against the pipeline time the app itself reports:

    .venv/bin/python -m tools.bench_app [--repeat 5] [--url URL] [--json out.json]

Starts ``python app.py`` on 127.0.0.1 (a free port; or uses a running app with ``--url``) and, for
each of the four demo models, calls ``/detect`` (upload, predict, download the drawn image and the
JSON) on the model's first bundled sample and on a 12 MP photo (matplotlib's grace_hopper.jpg
resized to 4000x3000, JPEG quality 90), two ways: through gradio_client (what an API user does) and
over plain HTTP with httpx, as the page's own JavaScript client does (upload, start the call, read
its event stream, download). One warm-up call each, then ``--repeat`` timed calls. Reported per row:
the median round trip, the median ``total`` of the summary line the app returns (preprocess, model,
postprocess), and the overhead (round trip minus total), split into the decode (reading the
uploaded file), drawing and JSON times the summary line reports and the rest (Gradio: encoding the
image, its files, HTTP;
for gradio_client also its own waiting: it looks for new messages every 50 ms). Issue 26's bar:
overhead at most 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "d2ov_core" / "data" / "samples"
MODELS = {
    "demo/faster_rcnn_shapes": "shapes_1.jpg",
    "demo/mask_rcnn_shapes": "shapes_2.jpg",
    "demo/keypoint_rcnn_figures": "figures_1.jpg",
    "demo/panoptic_fpn_shapes": "panoptic_1.jpg",
}
TIMING = re.compile(r"(decode|preprocess|inference|postprocess|total|drawing|JSON) ([0-9.]+) ms")


def big_photo(folder: Path) -> Path:
    """A 12 MP JPEG (4000x3000) of a real photo."""
    import matplotlib
    from PIL import Image

    out = folder / "grace_hopper_12mp.jpg"
    src = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    Image.open(src).convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC).save(out, quality=90)
    return out


def start_app(log: Path) -> tuple[subprocess.Popen, str]:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(
        os.environ, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False"
    )
    proc = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}/"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 300:
        if proc.poll() is not None:
            raise SystemExit("the app exited at launch:\n" + log.read_text()[-3000:])
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the app did not answer within 300 s:\n" + log.read_text()[-3000:])


def http_call(http, url: str, model: str, image: Path, session: str) -> str:
    """One ``/detect`` the way the page makes it, over plain HTTP (``http``: an httpx client whose
    connections stay open, as a browser's do; ``session``: the page's session id): upload the image,
    start the call, read its event stream to the result, download the drawn image and the JSON.
    Returns the summary line."""
    api = url.rstrip("/") + "/gradio_api"
    with image.open("rb") as f:
        path = http.post(f"{api}/upload", files={"files": (image.name, f, "image/jpeg")}).json()[0]
    data = [{"path": path, "meta": {"_type": "gradio.FileData"}}, model, "CPU", 0.5, "auto"]
    event = http.post(f"{api}/call/detect", json={"data": data, "session_hash": session}).json()["event_id"]
    kind, out = None, None
    with http.stream("GET", f"{api}/call/detect/{event}") as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind in ("complete", "error"):
                out = json.loads(line[5:])
                break
    if kind != "complete" or not out:
        raise SystemExit(f"/detect failed over HTTP: {out}")
    for item in (out[0], out[2]):  # the drawn image, the predictions JSON
        http.get(item["url"]).raise_for_status()
    return out[3]


def measure(client, url: str, model: str, image: Path, repeat: int) -> dict:
    """``repeat`` timed ``/detect`` calls after a warm-up, through gradio_client and over plain HTTP."""
    from gradio_client import handle_file

    def with_client() -> str:
        return client.predict(handle_file(str(image)), model, "CPU", 0.5, "auto", api_name="/detect")[3]

    import uuid

    import httpx

    http, session = httpx.Client(timeout=600), uuid.uuid4().hex

    def over_http() -> str:
        return http_call(http, url, model, image, session)

    row: dict = {"model": model, "image": image.name}
    for how, call in (("client", with_client), ("http", over_http)):
        call()  # warm-up: the model compiled, the caches filled
        walls, stages = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            summary = call()
            walls.append((time.perf_counter() - t0) * 1000)
            stages.append({k: float(v) for k, v in TIMING.findall(summary)})
        total = statistics.median(t["total"] for t in stages)
        wall = statistics.median(walls)
        page = statistics.median(
            t["total"] + t.get("decode", 0) + t.get("drawing", 0) + t.get("JSON", 0) for t in stages
        )
        row[how] = {
            "round_trip_ms": round(wall, 1),
            "pipeline_total_ms": round(total, 1),
            "overhead_ms": round(wall - total, 1),
            "gradio_ms": round(wall - page, 1),
            "round_trips_ms": [round(w, 1) for w in walls],
            "stages_ms": {k: statistics.median(t[k] for t in stages) for k in stages[0]},
        }
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="timed calls per row after one warm-up (5)")
    ap.add_argument("--url", help="a running app (default: start python app.py on 127.0.0.1)")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    from gradio_client import Client

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        proc = None
        if args.url:
            url = args.url
        else:
            proc, url = start_app(folder / "app.log")
        try:
            client = Client(url, verbose=False)
            photo = big_photo(folder)
            rows = []
            for model, sample in MODELS.items():
                for image in (SAMPLES / sample, photo):
                    rows.append(measure(client, url, model, image, args.repeat))
                    for how in ("client", "http"):
                        r = rows[-1][how]
                        print(
                            f"{model:28s} {image.name:22s} {how:6s} round trip {r['round_trip_ms']:7.1f} ms  "
                            f"pipeline {r['pipeline_total_ms']:7.1f}  overhead {r['overhead_ms']:7.1f} "
                            f"(decode {r['stages_ms'].get('decode', 0):5.1f}, drawing {r['stages_ms'].get('drawing', 0):5.1f}, "
                            f"JSON {r['stages_ms'].get('JSON', 0):5.1f}, "
                            f"Gradio {r['gradio_ms']:6.1f})",
                            flush=True,
                        )
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(20)
    load = os.getloadavg()[0]
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average {load:.2f}; "
        f"medians of {args.repeat} calls after one warm-up"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "repeat": args.repeat, "load": load}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
