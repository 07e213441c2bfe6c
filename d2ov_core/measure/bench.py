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
    float32 GFLOP/s of a 2048x2048 @ 2048x2048 matmul (numpy and torch, the best) with the same thread count;
  * how its detections compare with Detectron2 eager's on the same images (when ``detectron2`` runs):
    the first timed pass of every variant is matched detection by detection
    (:func:`d2ov_core.measure.verify.match`, detections with score >= 0.3): matched / reference,
    detections it adds, the largest box and score deviations, and ``exact`` when every image is within
    verify's default tolerances.

Peers (:mod:`d2ov_core.export.peers`, opt-in: ``--variants ... torchscript ort-fp32 ort-int8``) are what a
user would run instead of d2ov: the same TracingAdapter trace run by ``torch.jit``, exported to ONNX and
run by onnxruntime, and quantized by onnxruntime. A peer that cannot be made for a model (its export or
quantization fails, or the task is one Detectron2 has no postprocess for) gets a ``failed`` row with the
one-line reason; that is a result of the comparison, not a failure of the bench.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import D2ovError, InputError, first_line
from ..export.convert import calibration_files, convert
from ..export.model import build, cfg_metadata
from ..export.peers import PeerPredictor, prepare
from ..export.reference import ReferencePredictor
from ..export.resolve import open_predictor, resolve_ir
from ..export.trace import traceable
from ..runtime import ir as runtime
from ..runtime import settings as S
from ..runtime.detections import Detections
from ..runtime.images import load_image
from ..runtime.ir import usable_cpus
from ..runtime.preprocess import preprocess, resized_shape
from ..runtime.settings import PRECISIONS
from ..store.cache import cache_dir, sha256_file, write_atomic
from ..store.catalog import get
from ..store.lookup import find_ir, metadata
from .verify import Tolerance, match, ties_text

__all__ = ["run_bench", "VARIANTS", "markdown", "matmul_peak_gflops", "default_static_shape"]

VARIANTS = {
    "detectron2": "Detectron2 eager (PyTorch, reference)",
    "ov-fp32": "d2ov OpenVINO, FP32 IR, LATENCY hint",
    "ov-fp16w": "d2ov OpenVINO, FP16-compressed weights (FP32 compute), LATENCY hint",
    "ov-bf16": "d2ov OpenVINO, FP16 IR computed in bfloat16 (precision BF16; CPUs with native bf16 only), LATENCY hint",
    "ov-static": "d2ov OpenVINO, FP32 IR reshaped to a static letterboxed input, LATENCY hint",
    "ov-int8": "d2ov OpenVINO, NNCF INT8 IR, LATENCY hint",
    "ov-int8-static": "d2ov OpenVINO, NNCF INT8 IR, static letterboxed input, LATENCY hint",
    "ov-throughput": "d2ov OpenVINO, FP32 IR, THROUGHPUT hint, AsyncInferQueue over all images",
    "ov-int8-throughput": "d2ov OpenVINO, INT8 IR, THROUGHPUT hint, AsyncInferQueue over all images",
    "torchscript": "peer: Detectron2 TracingAdapter trace run by torch.jit, Detectron2 postprocess",
    "ort-fp32": "peer: the same trace exported to ONNX, onnxruntime CPUExecutionProvider, ORT_ENABLE_ALL",
    "ort-int8": "peer: that ONNX model quantized by onnxruntime quantize_static (QDQ), same provider",
}
#: the peers: run only when asked for (``variants``)
PEERS = ("torchscript", "ort-fp32", "ort-int8")
#: which IR each OpenVINO variant runs
_IR_OF = {
    "ov-fp32": "FP32",
    "ov-fp16w": "FP16",
    "ov-bf16": "FP16",
    "ov-static": "FP32",
    "ov-throughput": "FP32",
    "ov-int8": "INT8",
    "ov-int8-static": "INT8",
    "ov-int8-throughput": "INT8",
}


#: calibration images d2ov's INT8 (``convert``'s default) and the ``ort-int8`` peer use: the first ones
#: of ``--calibration`` by name
CALIBRATION_SIZE = 16


def _median_iqr(xs: list[float]) -> tuple[float, float]:
    q = np.percentile(xs, [25, 50, 75])
    return float(q[1]), float(q[2] - q[0])


_PEAK_CODE = """
import json, sys, time
import numpy as np
n, repeats, threads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def best(fn):
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return 2 * n ** 3 / min(ts) / 1e9
a = np.random.default_rng(0).random((n, n), dtype=np.float32)
b = np.random.default_rng(1).random((n, n), dtype=np.float32)
out = {"numpy": best(lambda: a @ b)}
try:
    import torch
    torch.set_num_threads(threads)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    out["torch"] = best(lambda: ta @ tb)
except ImportError:
    pass
print(json.dumps(out))
"""


#: the matmul the peak is measured with (n x n @ n x n): 2048 (best of 5) finds what 4096 (best of 3)
#: does, in half the time (2 Xeon cores, three alternating runs: 184-212 against 201-205 GFLOP/s, 4-5 s
#: against 9 s)
PEAK_N = 2048


def matmul_peak_gflops(threads: int, n: int = PEAK_N, repeats: int = 5) -> dict[str, float]:
    """The machine's practical float32 peak: GFLOP/s (2 n^3 / s) of an ``n x n @ n x n`` matmul with
    ``threads`` threads, best of ``repeats``, by numpy (OpenBLAS) and torch (MKL/oneDNN) in a fresh
    process (so the thread count applies). Returns ``{"numpy": ..., "torch": ..., "peak": max}``."""
    env = dict(
        os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads)
    )
    res = subprocess.run(
        [sys.executable, "-c", _PEAK_CODE, str(n), str(repeats), str(threads)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["peak"] = max(out.values())
    return out


def _peak_rss_kb() -> int:
    """This process's peak resident memory. ``VmHWM`` starts afresh at exec; ``ru_maxrss`` does not
    (a worker started by a big parent would report the parent's peak)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _worker(
    variant: str,
    model: str,
    weights: str | None,
    images: list[str],
    runs: int,
    warmup: int,
    threads: int,
    xml: str | None,
    static_shape: tuple[int, int] | None = None,
    dets_out: str | None = None,
) -> dict[str, Any]:
    rgbs = [load_image(p) for p in images]
    e2e, model_ms = [], []
    if variant == "detectron2":
        pred = ReferencePredictor(model, weights=weights, threads=threads, progress=False)
    elif variant in PEERS:
        pred = PeerPredictor(variant, model, xml, threads=threads)
    else:
        hint = "THROUGHPUT" if variant.endswith("throughput") else "LATENCY"
        pred = open_predictor(
            xml,
            PRECISIONS["BF16"] if "bf16" in variant else None,
            hint=hint,
            threads=threads,
            static_shape=static_shape if "static" in variant else None,
        )
    for _ in range(warmup):
        pred.predict(rgbs[0], threshold=0.05)
    extra: dict[str, Any] = {}
    if variant.endswith("throughput"):
        n_req = pred._ir.optimal_requests
        work = [rgbs[i % len(rgbs)] for i in range(max(runs * len(rgbs), 2 * n_req))]
        list(pred.predict_many(work[: 2 * n_req], threshold=0.05))  # warm every request
        t0 = time.perf_counter()
        dets = [d for _, d in pred.predict_many(work, threshold=0.05)]
        wall = time.perf_counter() - t0
        e2e = [d.timings["total"] for d in dets]
        model_ms = [d.timings["inference"] for d in dets]
        throughput = len(work) / wall
        extra = {"requests_in_flight": n_req, "streams": int(pred._ir._compiled.get_property("NUM_STREAMS"))}
        detections = [len(d) for d in dets]
        first = dets[: len(rgbs)]
    else:
        detections = []
        stages: dict[str, list[float]] = {"preprocess": [], "postprocess": []}
        firsts = []
        for run in range(runs):
            for im in rgbs:
                d = pred.predict(im, threshold=0.05)
                if run == 0:
                    firsts.append(d)
                e2e.append(d.timings["total"])
                model_ms.append(d.timings["inference"])
                detections.append(len(d))
                for k in stages:
                    stages[k].append(d.timings[k])
        first = firsts
        throughput = 1000.0 / statistics.median(e2e)
        extra = {f"{k}_ms": statistics.median(v) for k, v in stages.items()}
    rss_kb = _peak_rss_kb()
    if dets_out:  # the first timed pass, for the comparison with Detectron2 eager
        Path(dets_out).write_text(json.dumps([d.to_dict() for d in first]))
        if variant == "detectron2":  # and, untimed, its boxes before its last NMS: near ties (verify.match)
            before = [pred.predict_before_nms(im) for im in rgbs]
            Path(dets_out).with_suffix(".before_nms.json").write_text(
                json.dumps([{"nms_iou": nms, "detections": d.to_dict()} for d, nms in before])
            )
    med, iqr = _median_iqr(e2e)
    mmed, miqr = _median_iqr(model_ms)
    return {
        "variant": variant,
        "e2e_ms": med,
        "e2e_iqr_ms": iqr,
        "model_ms": mmed,
        "model_iqr_ms": miqr,
        "images_per_s": throughput,
        "peak_rss_mb": rss_kb / 1024,
        "samples": len(e2e),
        "detections_median": float(statistics.median(detections)) if detections else 0.0,
        **extra,
    }


def _flops_key(model: str, weights: str | None, image: str) -> str:
    """What a FLOP count depends on: the model (its config and weights as files), the image, d2ov."""
    spec = get(model)
    files = [f for f in (spec.config, weights or spec.weights) if f and os.path.isfile(f)]
    stamp = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
    parts = [model, weights, spec.weights, spec.weights_sha256, spec.config_sha256, stamp, sha256_file(image)]
    return hashlib.sha256(json.dumps([*parts, __version__]).encode()).hexdigest()[:32]


def model_gflops(model: str, weights: str | None, image: str) -> float:
    """GFLOPs (2 x multiply-adds, fvcore count) of the Detectron2 model on ``image`` at its test size.

    Counted once per model, weights and image: the count is kept in the cache (``flops/``), as
    counting builds the PyTorch model and traces it (3-7 s for a small model)."""
    kept = cache_dir() / "flops" / f"{_flops_key(model, weights, image)}.json"
    try:
        return float(json.loads(kept.read_text())["gflops"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not counted yet (or an unreadable record): count
    gflops = _count_gflops(model, weights, image)
    write_atomic(kept, json.dumps({"model": model, "weights": weights, "image": image, "gflops": gflops}).encode())
    return gflops


def _count_gflops(model: str, weights: str | None, image: str) -> float:
    import torch

    spec = get(model)
    net, cfg, _ = build(spec, weights, progress=False)
    meta = cfg_metadata(cfg, spec)
    chw, _ = preprocess(load_image(image), meta)
    from fvcore.nn import FlopCountAnalysis

    adapter, _, _ = traceable(net, chw)
    with torch.no_grad():
        fca = FlopCountAnalysis(adapter, (torch.as_tensor(chw),))
        fca.unsupported_ops_warnings(False)
        fca.uncalled_modules_warnings(False)
        total = fca.total()
    return 2 * total / 1e9


def default_static_shape(meta: S.IRMetadata, image: str) -> tuple[int, int]:
    """The static input for benchmarking: ``image``'s resized shape, padded up to multiples of 32
    (the size Detectron2 itself pads to), so letterboxing adds no pixels for that image."""
    h, w = load_image(image).shape[:2]
    rh, rw = resized_shape(h, w, int(meta.min_size), int(meta.max_size))
    return -(-rh // 32) * 32, -(-rw // 32) * 32


def run_bench(
    model: str,
    images: list[str],
    weights: str | None = None,
    runs: int = 5,
    warmup: int = 2,
    threads: int | None = None,
    variants: list[str] | None = None,
    out_dir: str | None = None,
    calibration: str | None = None,
    static_shape: tuple[int, int] | None = None,
    log=print,
) -> dict[str, Any]:
    """Benchmark ``variants`` of ``model`` on ``images``; returns the report (also written to ``out_dir``
    as bench.md / bench.json / bench.png). INT8 variants need ``calibration`` (a folder of images of
    the model's domain), except for catalog models that ship an INT8 IR; the ``ort-int8`` peer always
    does (it is calibrated on the same first images of it as d2ov's INT8)."""
    threads = threads or usable_cpus()
    have_int8 = calibration is not None or (weights is None and find_ir(model, "INT8") is not None)
    variants = variants or [
        v
        for v in VARIANTS
        if v not in PEERS and (have_int8 or "int8" not in v) and ("bf16" not in v or runtime.bf16_available())
    ]
    xml_of: dict[str, str] = {}
    for precision in sorted({_IR_OF[v] for v in variants if v in _IR_OF}):
        log(f"[bench] preparing the {precision} IR of {model} ...")
        if precision == "INT8" and calibration:
            xml_of[precision] = str(
                convert(
                    model, weights=weights, calibration=calibration, calibration_size=CALIBRATION_SIZE, progress=False
                )
            )
        elif precision == "INT8" and not have_int8:
            raise InputError(f"INT8 variants of {model} need --calibration DIR (images of the model's domain)")
        else:
            xml_of[precision] = str(resolve_ir(model, PRECISIONS[precision], weights=weights, progress=False))
    if static_shape is None and any("static" in v for v in variants):
        static_shape = default_static_shape(runtime.read_metadata(next(iter(xml_of.values()))), images[0])
    failed: list[dict[str, Any]] = []
    for v in [v for v in variants if v in PEERS]:
        log(f"[bench] preparing the {v} peer of {model} ...")
        try:
            xml_of[v] = str(_prepare_peer(v, model, weights, calibration))
        except D2ovError as e:  # a peer that cannot be made is a row of the table, not the end of the bench
            failed.append({"variant": v, "exit_code": None, "error": first_line(e)})
            log(f"[bench]   FAILED: {first_line(e)}")
    to_run = [v for v in variants if not any(f["variant"] == v for f in failed)]
    gflops, peak = 0.0, {"peak": 0.0}
    if to_run:  # nothing to time when every variant asked for could not be made
        log(f"[bench] counting FLOPs of {model} ...")
        gflops = model_gflops(model, weights, images[0])
        log(f"[bench] measuring the matmul peak with {threads} threads ...")
        peak = matmul_peak_gflops(threads)
    rows: list[dict[str, Any]] = []
    dets_dir = Path(tempfile.mkdtemp(prefix="d2ov-bench-"))
    for v in to_run:
        log(f"[bench] {v}: {VARIANTS[v]} ({runs} runs x {len(images)} images after {warmup} warm-up)")
        args = json.dumps(
            {
                "variant": v,
                "model": model,
                "weights": weights,
                "images": images,
                "runs": runs,
                "warmup": warmup,
                "threads": threads,
                "xml": xml_of.get(v, xml_of.get(_IR_OF.get(v, ""))),
                "static_shape": static_shape,
                "dets_out": str(dets_dir / f"{v}.json"),
            }
        )
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        res = subprocess.run(
            [sys.executable, "-m", "d2ov_core.measure.bench", args], capture_output=True, text=True, env=env
        )
        if res.returncode != 0:  # a crashed variant is reported, the others still run
            why = first_line(res.stderr.strip().splitlines()[-1]) if res.stderr.strip() else "no message"
            failed.append({"variant": v, "exit_code": res.returncode, "error": why})
            log(f"[bench]   FAILED: exit code {res.returncode} ({why})")
            continue
        row = json.loads(res.stdout.strip().splitlines()[-1])
        # throughput rows: requests overlap, so the achieved rate comes from images/s, not latency
        row["gflop_per_s"] = (
            gflops * row["images_per_s"] if v.endswith("throughput") else gflops / (row["model_ms"] / 1e3)
        )
        row["peak_fraction"] = row["gflop_per_s"] / peak["peak"]
        rows.append(row)
        log(
            f"[bench]   e2e {row['e2e_ms']:.0f} ms, model {row['model_ms']:.0f} ms, {row['images_per_s']:.2f} img/s, "
            f"{row['detections_median']:.0f} detections"
        )
    by = {r["variant"]: r for r in rows}
    if "detectron2" in by:
        ref = _read_dets(dets_dir / "detectron2.json")
        before = _read_before_nms(dets_dir / "detectron2.before_nms.json")
        for r in rows:
            if r["variant"] != "detectron2":
                r["match"] = compare_detections(ref, _read_dets(dets_dir / f"{r['variant']}.json"), before)
    shutil.rmtree(dets_dir, ignore_errors=True)
    for r in rows:
        for ref, key in (("detectron2", "speedup_vs_detectron2"), ("ov-fp32", "speedup_vs_ov_fp32")):
            r[key] = r["images_per_s"] / by[ref]["images_per_s"] if ref in by else None
    report = {
        "model": model,
        "weights": weights or "catalog",
        "images": images,
        "threads": threads,
        "runs": runs,
        "warmup": warmup,
        "static_shape": list(static_shape) if static_shape else None,
        "calibration": calibration,
        "model_gflops": gflops,
        "matmul_peak_gflops": peak["peak"],
        "matmul_gflops": peak,
        "matmul_size": PEAK_N,
        "machine": _machine(),
        "rows": rows,
        "failed": failed,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if out_dir:
        _write_outputs(report, Path(out_dir))
    return report


def _prepare_peer(variant: str, model: str, weights: str | None, calibration: str | None) -> Path:
    """The peer's model file (:func:`d2ov_core.export.peers.prepare`); ``ort-int8`` is calibrated on the
    images d2ov's INT8 is: the first :data:`CALIBRATION_SIZE` of ``calibration``."""
    files = calibration_files(calibration, CALIBRATION_SIZE) if calibration else []
    if variant == "ort-int8" and not files:
        bundled = find_ir(model, "INT8") if weights is None else None
        made = f": {model}'s INT8 IR was calibrated on {metadata(bundled).calibration}" if bundled else ""
        raise InputError(f"ort-int8 needs --calibration DIR{made}")
    return prepare(variant, model, weights, calibration=files)


def _read_dets(path: Path) -> list[Any]:
    return [Detections.from_dict(d) for d in json.loads(path.read_text())]


def _read_before_nms(path: Path) -> list[tuple[Any, float]] | None:
    if not path.is_file():
        return None
    return [(Detections.from_dict(d["detections"]), float(d["nms_iou"])) for d in json.loads(path.read_text())]


def compare_detections(
    reference: list[Any], candidate: list[Any], before_nms: list[tuple[Any, float]] | None = None
) -> dict[str, Any]:
    """Detection-level agreement of ``candidate`` with ``reference`` (one :class:`Detections` per image,
    same images): :func:`~d2ov_core.measure.verify.match` per image, summed. ``exact``: every image
    within verify's default tolerances (f32-level: 0.5 px, 1e-3 score). ``before_nms``: the reference's
    detections before its last NMS and that NMS's IoU threshold, per image: near ties there are
    counted as ``ties``, not as a miss and an extra detection."""
    tol = Tolerance()
    befores: list[tuple[Any, float] | tuple[()]] = list(before_nms) if before_nms else [()] * len(reference)
    cs = [match(r, c, tol, *b) for r, c, b in zip(reference, candidate, befores)]
    ious = [c.min_mask_iou for c in cs if c.min_mask_iou is not None]
    reference_n = sum(c.reference for c in cs)
    ties = sum(c.ties for c in cs)
    found = sum(c.reference - c.unmatched_reference for c in cs) - ties
    return {
        "reference": reference_n,
        "matched": found,
        "ties": ties,
        "matched_fraction": found / reference_n if reference_n else 1.0,
        "extra": sum(c.unmatched_candidate for c in cs),
        "max_box_dev": max((c.max_box_dev for c in cs), default=0.0),
        "max_score_dev": max((c.max_score_dev for c in cs), default=0.0),
        "min_mask_iou": min(ious) if ious else None,
        "exact": all(c.ok(tol) for c in cs),
    }


def match_text(m: dict[str, Any] | None) -> str:
    """The table cell of a row's comparison with Detectron2 eager."""
    if not m:
        return "-"
    verdict = "exact" if m["exact"] else "differs"
    extra = f" +{m['extra']}" if m["extra"] else ""
    extra = ties_text(m.get("ties", 0)) + extra
    mask = f", mask IoU >= {m['min_mask_iou']:.2f}" if m.get("min_mask_iou") is not None else ""
    return (
        f"{verdict}: {m['matched']}/{m['reference']}{extra}, box {m['max_box_dev']:.2f} px, "
        f"score {m['max_score_dev']:.3f}{mask}"
    )


def _machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "openvino": runtime.openvino_version(),
    }


def markdown(report: dict[str, Any]) -> str:
    def ratio(x):
        return f"{x:.2f}x" if x else "-"

    # the comparison with Detectron2's detections (reports since peers; earlier ones have none)
    matched = any("match" in r for r in report["rows"])
    static = (
        f", static shape {report['static_shape'][0]}x{report['static_shape'][1]}" if report.get("static_shape") else ""
    )
    lines = [
        f"`d2ov bench {report['model']}` (weights: {report['weights']}) — {report['date']}, "
        f"{report['machine']['cpu']}, {report['machine']['cores']} cores, {report['threads']} threads, "
        f"OpenVINO {report['machine']['openvino']}; {len(report['images'])} image(s) x {report['runs']} runs"
        f"{static}; model {report['model_gflops']:.1f} GFLOPs per image (fvcore, 2 FLOPs per MAC); "
        f"matmul peak {report['matmul_peak_gflops']:.0f} GFLOP/s (float32 {report.get('matmul_size', 4096)}^3, "
        "best of numpy/torch)",
        "",
        "| variant | end-to-end ms (IQR) | model ms | pre + post ms | images/s | detections | vs Detectron2 | "
        "vs OV FP32 | GFLOP/s | % of peak | peak RSS MB |" + (" detections vs Detectron2 |" if matched else ""),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if matched else ""),
    ]
    for r in report["rows"]:
        prepost = f"{r['preprocess_ms']:.0f} + {r['postprocess_ms']:.0f}" if "preprocess_ms" in r else "-"
        lines.append(
            f"| {r['variant']} | {r['e2e_ms']:.0f} ({r['e2e_iqr_ms']:.0f}) | {r['model_ms']:.0f} | {prepost} | "
            f"{r['images_per_s']:.2f} | {r['detections_median']:.0f} | {ratio(r.get('speedup_vs_detectron2'))} | "
            f"{ratio(r.get('speedup_vs_ov_fp32'))} | {r['gflop_per_s']:.0f} | {100 * r['peak_fraction']:.0f}% | "
            f"{r['peak_rss_mb']:.0f} |"
            + (f" {match_text(r.get('match')) if r['variant'] != 'detectron2' else 'reference'} |" if matched else "")
        )
    for f in report.get("failed", []):
        why = f"exit code {f['exit_code']} ({f['error']})" if f["exit_code"] is not None else f["error"]
        lines.append(f"| {f['variant']} | failed: {why} | | | | | | | | | |" + (" |" if matched else ""))
    lines += [
        "",
        "Ratios compare images/s (latency rows: 1 / median end-to-end). Throughput rows: images/s over "
        "the wall time with several requests in flight; their latency columns include queueing."
        + (
            " Detections vs Detectron2: the first timed pass matched to Detectron2 eager's by IoU >= 0.9 in the "
            "same class (score >= 0.3): matched/reference, near ties (two overlapping boxes Detectron2 scores within "
            "1e-3; its NMS kept one, the variant the other, as `d2ov verify` counts them), +detections Detectron2 "
            "does not have, largest box and "
            "score deviations; exact = within 0.5 px and 1e-3 score on every image."
            if matched
            else ""
        ),
    ]
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
    print(
        json.dumps(
            _worker(
                a["variant"],
                a["model"],
                a["weights"],
                a["images"],
                a["runs"],
                a["warmup"],
                a["threads"],
                a["xml"],
                tuple(a["static_shape"]) if a.get("static_shape") else None,
                a.get("dets_out"),
            )
        )
    )
