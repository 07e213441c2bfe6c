"""What a person waits for in the web app, against the pipeline time the app itself reports:

    .venv/bin/python -m tools.bench_app [--repeat 5] [--url URL] [--json out.json]

Starts ``python app.py`` on 127.0.0.1 (a free port; or uses a running app with ``--url``) and, for
each of the four demo models, calls ``/detect`` through gradio_client (what an API user and,
file for file, the browser do: upload, predict, download the drawn image and the JSON) on the
model's first bundled sample and on a 12 MP photo (matplotlib's grace_hopper.jpg resized to
4000x3000, JPEG quality 90): one warm-up call, then ``--repeat`` timed calls. Reported per row: the
median round trip, the median ``total`` of the summary line the app returns (decode, preprocess,
model, postprocess), and the overhead (round trip minus total: drawing, encoding the image, writing
the JSON, Gradio's file handling and HTTP). Issue 26's bar: overhead at most 100 ms.
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
TIMING = re.compile(r"(preprocess|inference|postprocess|total) ([0-9.]+) ms")


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


def measure(client, model: str, image: Path, repeat: int) -> dict:
    from gradio_client import handle_file

    def call() -> tuple[float, dict[str, float]]:
        t0 = time.perf_counter()
        out = client.predict(handle_file(str(image)), model, "CPU", 0.5, "auto", api_name="/detect")
        wall = (time.perf_counter() - t0) * 1000
        return wall, {k: float(v) for k, v in TIMING.findall(out[3])}

    call()  # warm-up: the model compiled, the caches filled
    walls, stages = [], []
    for _ in range(repeat):
        wall, t = call()
        walls.append(wall)
        stages.append(t)
    total = statistics.median(t["total"] for t in stages)
    wall = statistics.median(walls)
    return {
        "model": model,
        "image": image.name,
        "round_trip_ms": round(wall, 1),
        "pipeline_total_ms": round(total, 1),
        "overhead_ms": round(wall - total, 1),
        "round_trips_ms": [round(w, 1) for w in walls],
        "stages_ms": {k: statistics.median(t[k] for t in stages) for k in stages[0]},
    }


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
                    rows.append(measure(client, model, image, args.repeat))
                    r = rows[-1]
                    print(
                        f"{model:30s} {image.name:22s} round trip {r['round_trip_ms']:7.1f} ms  "
                        f"pipeline {r['pipeline_total_ms']:7.1f} ms  overhead {r['overhead_ms']:7.1f} ms",
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
