"""Drawing time, d2ov's renderer against Detectron2's Visualizer, on the same detections:

    .venv/bin/python -m tools.bench_render [--repeat 3] [--styles plain detectron2]

For each of the four demo models (its bundled FP16 IR) on its first bundled sample and on a 12 MP
photo (``tools.bench_app``'s: grace_hopper.jpg resized to 4000x3000, a JPEG): predict
once, then time ``render`` in each style ``--repeat`` times and print the median, with the number of
detections drawn. ``detectron2`` needs torch and Detectron2 importable (the repository's environment).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from d2ov_core.runtime.predictor import Predictor
from d2ov_core.serve.render import STYLES, render
from d2ov_core.store.lookup import bundled_ir

from .bench_app import MODELS, SAMPLES, big_photo


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="timed drawings per row and style (3)")
    ap.add_argument("--styles", nargs="+", choices=list(STYLES), default=list(STYLES))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:  # the photo bench_app uploads, decoded as the app does
        big = np.asarray(Image.open(big_photo(Path(tmp))).convert("RGB"))
    for model, sample in MODELS.items():
        pred = Predictor(bundled_ir(model, "FP16"))
        for name, rgb in ((sample, np.asarray(Image.open(SAMPLES / sample).convert("RGB"))), ("12 MP photo", big)):
            det = pred.predict(rgb)
            cells = []
            for style in args.styles:
                times = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    render(rgb, det, pred.labels, task=pred.task, style=style)
                    times.append((time.perf_counter() - t0) * 1000)
                cells.append(f"{style} {statistics.median(times):8.1f} ms")
            size = f"{rgb.shape[1]}x{rgb.shape[0]}"
            print(f"{model:28s} {name:14s} {size:>9s} {len(det):3d} detections  " + "  ".join(cells), flush=True)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}; medians of {args.repeat}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
