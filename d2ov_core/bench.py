"""``d2ov bench``: Detectron2 eager vs d2ov OpenVINO variants, same images, same threads, one run.

Each variant runs in its own subprocess (clean peak RSS, no cross-talk), warms up, then times N runs
over the images. Reported per variant:
  * end-to-end latency (preprocess + inference + postprocess; image decoding excluded), median and
    interquartile range, in ms;
  * model-only latency (the OpenVINO ``infer`` call; for Detectron2 the eager forward, which includes
    its own postprocessing);
  * throughput in images/s (latency mode: 1 / median end-to-end; throughput mode: images / wall time
    with OpenVINO's THROUGHPUT hint and several requests in flight);
  * peak RSS of the worker process;
  * GFLOP/s achieved by the model = model GFLOPs (counted once with fvcore on Detectron2, 2 FLOPs per
    multiply-add) / model-only median, and that as a fraction of the machine's peak, measured as the
    float32 GFLOP/s of a 4096x4096 @ 4096x4096 numpy matmul with the same thread count.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run_bench", "VARIANTS"]

VARIANTS = {
    "detectron2": "Detectron2 eager (PyTorch, reference)",
    "ov-fp32": "d2ov OpenVINO, FP32 IR, LATENCY hint",
    "ov-fp16w": "d2ov OpenVINO, FP16-compressed weights (FP32 compute), LATENCY hint",
    "ov-throughput": "d2ov OpenVINO, FP16-compressed weights, THROUGHPUT hint, async requests",
}


def _median_iqr(xs: list[float]) -> tuple[float, float]:
    q = np.percentile(xs, [25, 50, 75])
    return float(q[1]), float(q[2] - q[0])


def matmul_peak_gflops(threads: int, n: int = 4096, repeats: int = 3) -> float:
    """float32 GFLOP/s of an n^3 numpy matmul (the machine's practical peak)."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(threads))
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = np.random.default_rng(1).random((n, n), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _worker(variant: str, model: str, weights: str | None, images: list[str], runs: int, warmup: int,
            threads: int, xml: str | None) -> dict[str, Any]:
    from .images import load_image

    rgbs = [load_image(p) for p in images]
    e2e, model_ms = [], []
    if variant == "detectron2":
        from .reference import ReferencePredictor

        pred = ReferencePredictor(model, weights=weights, threads=threads, progress=False)
    else:
        from .predictor import Predictor

        hint = "THROUGHPUT" if variant == "ov-throughput" else "LATENCY"
        pred = Predictor(xml, hint=hint, threads=threads)
    for _ in range(warmup):
        pred.predict(rgbs[0], threshold=0.05)
    if variant == "ov-throughput":
        import concurrent.futures as cf

        n_req = max(2, pred._ir.optimal_requests)
        work = [rgbs[i % len(rgbs)] for i in range(runs * len(rgbs))]
        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(n_req) as pool:
            dets = list(pool.map(lambda im: pred.predict(im, threshold=0.05), work))
        wall = time.perf_counter() - t0
        e2e = [d.timings["total"] for d in dets]
        model_ms = [d.timings["inference"] for d in dets]
        throughput = len(work) / wall
        extra = {"requests_in_flight": n_req}
    else:
        for _ in range(runs):
            for im in rgbs:
                d = pred.predict(im, threshold=0.05)
                e2e.append(d.timings["total"])
                model_ms.append(d.timings["inference"])
        throughput = 1000.0 / statistics.median(e2e)
        extra = {}
    med, iqr = _median_iqr(e2e)
    mmed, miqr = _median_iqr(model_ms)
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"variant": variant, "e2e_ms": med, "e2e_iqr_ms": iqr, "model_ms": mmed, "model_iqr_ms": miqr,
            "images_per_s": throughput, "peak_rss_mb": rss_kb / 1024, "samples": len(e2e), **extra}


def model_gflops(model: str, weights: str | None, image: str) -> float:
    """GFLOPs (2 x multiply-adds, fvcore count) of the Detectron2 model on ``image`` at its test size."""
    import torch

    from . import d2model
    from .catalog import get
    from .images import load_image
    from .preprocess import preprocess

    spec = get(model)
    net, cfg, _ = d2model.build(spec, weights, progress=False)
    meta = d2model.cfg_metadata(cfg, spec)
    chw, _ = preprocess(load_image(image), meta)
    from fvcore.nn import FlopCountAnalysis

    adapter, _, _ = d2model.traceable(net, chw)
    with torch.no_grad():
        fca = FlopCountAnalysis(adapter, (torch.as_tensor(chw),))
        fca.unsupported_ops_warnings(False)
        fca.uncalled_modules_warnings(False)
        total = fca.total()
    return 2 * total / 1e9


def run_bench(model: str, images: list[str], weights: str | None = None, runs: int = 5, warmup: int = 2,
              threads: int | None = None, variants: list[str] | None = None, out_dir: str | None = None,
              log=print) -> dict[str, Any]:
    from .convert import convert

    threads = threads or os.cpu_count() or 1
    variants = variants or list(VARIANTS)
    xmls = {}
    if any(v.startswith("ov-fp32") for v in variants):
        xmls["ov-fp32"] = str(convert(model, weights=weights, fp16=False, progress=False))
    if any(v in ("ov-fp16w", "ov-throughput") for v in variants):
        xmls["ov-fp16w"] = xmls["ov-throughput"] = str(convert(model, weights=weights, fp16=True, progress=False))
    log(f"[bench] counting FLOPs of {model} ...")
    gflops = model_gflops(model, weights, images[0])
    log(f"[bench] measuring the matmul peak with {threads} threads ...")
    peak = matmul_peak_gflops(threads)
    rows = []
    for v in variants:
        log(f"[bench] {v}: {VARIANTS[v]} ({runs} runs x {len(images)} images after {warmup} warm-up)")
        args = json.dumps({"variant": v, "model": model, "weights": weights, "images": images, "runs": runs,
                           "warmup": warmup, "threads": threads, "xml": xmls.get(v)})
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        res = subprocess.run([sys.executable, "-m", "d2ov_core.bench", args], capture_output=True, text=True, env=env)
        if res.returncode != 0:
            raise RuntimeError(f"bench worker {v} failed:\n{res.stderr[-3000:]}")
        row = json.loads(res.stdout.strip().splitlines()[-1])
        row["gflop_per_s"] = gflops / (row["model_ms"] / 1000.0)
        row["peak_fraction"] = row["gflop_per_s"] / peak
        rows.append(row)
        log(f"[bench]   e2e {row['e2e_ms']:.0f} ms, model {row['model_ms']:.0f} ms, {row['images_per_s']:.2f} img/s")
    base = next((r for r in rows if r["variant"] == "detectron2"), None)
    for r in rows:
        r["speedup_vs_detectron2"] = (base["e2e_ms"] / r["e2e_ms"]) if base else None
    report = {"model": model, "weights": weights or "catalog", "images": images, "threads": threads, "runs": runs,
              "model_gflops": gflops, "matmul_peak_gflops": peak, "machine": _machine(), "rows": rows,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if out_dir:
        _write_outputs(report, Path(out_dir))
    return report


def _machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from . import runtime

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "openvino": runtime.openvino_version()}


def markdown(report: dict[str, Any]) -> str:
    lines = [f"`d2ov bench {report['model']}` — {report['date']}, {report['machine']['cpu']}, "
             f"{report['threads']} threads, OpenVINO {report['machine']['openvino']}; model {report['model_gflops']:.1f} "
             f"GFLOPs per image, matmul peak {report['matmul_peak_gflops']:.0f} GFLOP/s",
             "",
             "| variant | end-to-end ms (IQR) | model ms | images/s | vs Detectron2 | GFLOP/s | % of peak | peak RSS MB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["rows"]:
        sp = f"{r['speedup_vs_detectron2']:.2f}x" if r.get("speedup_vs_detectron2") else "-"
        lines.append(f"| {r['variant']} | {r['e2e_ms']:.0f} ({r['e2e_iqr_ms']:.0f}) | {r['model_ms']:.0f} | "
                     f"{r['images_per_s']:.2f} | {sp} | {r['gflop_per_s']:.0f} | {100 * r['peak_fraction']:.0f}% | "
                     f"{r['peak_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def _write_outputs(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=1))
    (out / "bench.md").write_text(markdown(report))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = [r["variant"] for r in rows]
    ax.barh(names, [r["e2e_ms"] for r in rows], xerr=[r["e2e_iqr_ms"] / 2 for r in rows], color="#4c72b0")
    ax.set_xlabel("end-to-end latency, ms (median, IQR)")
    ax.set_title(f"{report['model']} — {report['threads']} threads")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(out / "bench.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":  # worker entry point
    a = json.loads(sys.argv[1])
    print(json.dumps(_worker(a["variant"], a["model"], a["weights"], a["images"], a["runs"], a["warmup"],
                             a["threads"], a["xml"])))
