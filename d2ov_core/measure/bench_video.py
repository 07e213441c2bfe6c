"""``d2ov bench MODEL --video CLIP``: a video end to end, the app's pipeline against a plain loop.

Two variants run the same IR on the same decoded frames, with the same renderer and encoder, each in
its own process (spawned: a fresh interpreter, so its peak RSS is its own):

  * ``pipeline``: what ``d2ov predict clip.mp4 --render`` and the app run, the ``pipeline`` callable
    given to :func:`run_bench_video` (the CLI passes :func:`d2ov_core.serve.video.process_video`):
    frames stream from the decoder through the predictor's ``AsyncInferQueue`` (decoding, pre- and
    postprocessing, drawing and encoding overlap with inference) into the renderer and the encoder;
  * ``loop``: one frame at a time, nothing overlapped: decode, ``predictor.predict_image``, render,
    encode, and the frame's JSON record (``Detections.to_dict``, masks as RLE) written to a file as it
    is made, as ``process_video`` does for ``d2ov predict --json`` and the app (its ``sink``): both
    variants do the same work, and neither keeps a record in memory.

Reported per variant (median over ``runs`` processes, each after ``warmup`` untimed predictions, one
untimed drawing and, for the pipeline, one untimed pass of two frames through its queue): frames, wall
seconds from opening the video to the encoded file being complete, frames/s end to end, the model's
milliseconds per frame (median of ``Detections.timings["inference"]``; in the pipeline that is
submission to result, so it includes queueing), where the time goes (mean milliseconds per frame:
decode, preprocess, inference, postprocess, render, encode; in the pipeline the stages overlap, so
only decode, pre/postprocess, the time waiting on the pipeline and the time drawing and encoding are
separable; ``record``: the JSON record), the peak RSS of the process (``VmHWM``), and whether its
detections are the loop's: class, box and score of every detection of every frame compared exactly (a
benchmark whose variants disagree says so).

This module does not import :mod:`d2ov_core.serve` (the layout keeps measure below serve): the
pipeline and the renderer are passed in, and reach the worker processes by reference (spawn pickles
functions by module and name).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import InputError, first_line
from ..export.convert import convert
from ..export.resolve import given_ir, open_predictor, resolve_ir
from ..runtime.detections import PredictionsWriter
from ..runtime.images import load_image
from ..runtime.ir import usable_cpus
from ..runtime.settings import PRECISIONS, Precision
from ..runtime.video import VIDEO_SUFFIXES, Frame, VideoWriter, is_video, read_frames, video_info
from ..store import catalog
from ..store.lookup import find_ir
from .bench import CALIBRATION_SIZE, _machine, _peak_rss_kb

__all__ = ["VIDEO_VARIANTS", "run_bench_video", "synthetic_clip", "check_video", "markdown_video"]

VIDEO_VARIANTS = {
    "pipeline": "process_video: requests in flight, decode / draw / encode overlapped with inference",
    "loop": "one frame at a time: decode, predict, render, encode, JSON record",
}
#: the size of the synthetic clips (``--frames N``): what a webcam or a phone's small video is
SYNTHETIC_SIZE = (640, 480)

Pipeline = Callable[..., Any]
Render = Callable[..., np.ndarray]


# ----------------------------------------------------------------------------------------- inputs


def check_video(path: str | os.PathLike) -> dict[str, Any]:
    """``path`` is a readable video: its :func:`~d2ov_core.runtime.video.video_info`; else a one-line
    :class:`InputError` (missing file, a suffix that is not a video's, a file PyAV cannot read)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"video not found: {path}")
    if not is_video(p):
        raise InputError(f"not a video: {path} (expected one of {', '.join(VIDEO_SUFFIXES)})")
    info = video_info(p)
    if not info["width"] or not info["height"]:
        raise InputError(f"{path}: the video stream has no frame size")
    return info


def synthetic_clip(
    path: str | os.PathLike,
    frames: int,
    image: str | os.PathLike,
    size: tuple[int, int] = SYNTHETIC_SIZE,
    fps: float = 30.0,
) -> Path:
    """An H.264 MP4 of ``frames`` frames of ``size`` (W, H): ``image`` scaled to cover ``size`` and
    centre-cropped, sliding 8 px a frame to the right (wrapping), so a model keeps detecting moving
    objects and the encoder has motion to encode. Written once per (frames, size, image): an existing
    file is reused."""
    if frames < 1:
        raise InputError(f"a synthetic clip needs >= 1 frame, got {frames}")
    out = Path(path)
    if out.is_file():
        return out
    w, h = size
    im = Image.fromarray(load_image(image))
    scale = max(w / im.width, h / im.height)
    im = im.resize((max(w, round(im.width * scale)), max(h, round(im.height * scale))), Image.BILINEAR)
    left, top = (im.width - w) // 2, (im.height - h) // 2
    rgb = np.asarray(im.crop((left, top, left + w, top + h)))
    with VideoWriter(out, fps=fps) as writer:
        for i in range(frames):
            writer.write(np.roll(rgb, 8 * i, axis=1))
    return out


def _resolve(
    model: str, precision: Precision, weights: str | None, calibration: str | None, log: Callable[[str], None]
) -> Path:
    """The IR the bench runs: an IR path as given; a catalog model's IR at ``precision`` (INT8 of a
    model without one, or with other weights: converted with ``calibration``, cached)."""
    if given_ir(model) is not None:
        return resolve_ir(model, precision)
    spec = catalog.get(model)
    if precision.ir == "INT8" and (weights is not None or find_ir(spec.name, "INT8") is None):
        if not calibration:
            raise InputError(f"INT8 of {spec.name} needs --calibration DIR (images of the model's domain)")
        log(f"[bench] preparing the INT8 IR of {spec.name} (calibration {calibration}, cached) ...")
        return convert(
            spec, weights=weights, calibration=calibration, calibration_size=CALIBRATION_SIZE, progress=False
        )
    log(f"[bench] preparing the {precision.ir} IR of {spec.name} ...")
    return resolve_ir(spec, precision, weights=weights, progress=False)


# ---------------------------------------------------------------------------------- the workers


class _DetectionLog:
    """Each frame's detections, one JSON line per frame (class ids, scores and boxes as float32
    values written exactly), streamed to a file so the worker's memory does not grow with the video."""

    def __init__(self, path: Path):
        self._f = open(path, "w")

    def add(self, frame: int, det: Any) -> None:
        self._f.write(
            json.dumps(
                {
                    "frame": frame,
                    "class_ids": det.class_ids.tolist(),
                    "scores": det.scores.tolist(),
                    "boxes": det.boxes.tolist(),
                }
            )
            + "\n"
        )

    def close(self) -> None:
        self._f.close()


class _Records:
    """Each frame's JSON record written as it is made, never kept: ``process_video``'s ``sink`` as
    ``d2ov predict --json`` and the app give it (a :class:`PredictionsWriter`, the same bytes), so
    that memory does not grow with the video; the timings the bench reports are summed on the way.
    A context manager (the writer's)."""

    def __init__(self, path: Path, predictor: Any):
        threshold = float(predictor.confidence_threshold)
        self._writer = PredictionsWriter(path, predictor.describe(), "openvino", str(predictor.device), threshold)
        self.inference: list[float] = []
        self.sums = {"preprocess": 0.0, "postprocess": 0.0}

    def __enter__(self) -> _Records:
        self._writer.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._writer.__exit__(*exc)

    def __call__(self, record: dict[str, Any]) -> None:
        t = record["timing_ms"]
        self.inference.append(t.get("inference", 0.0))
        for k in self.sums:
            self.sums[k] += t.get(k, 0.0)
        self._writer.add(record)


class _Tap:
    """The predictor as ``pipeline`` sees it (``labels``, ``task``, ``stream_frames``), timing what the
    pipeline cannot report itself: decoding (pulling frames), the time spent waiting on the pipeline
    (pre/postprocessing and inference not hidden behind the caller's work) and the time the caller
    keeps each frame (drawing, encoding, its record); and logging each frame's detections. A
    generator around the predictor's own: the pipeline runs as it does in the app."""

    def __init__(self, predictor: Any, log: _DetectionLog):
        self._predictor, self._log = predictor, log
        self.labels, self.task = predictor.labels, predictor.task
        self.seconds = {"decode": 0.0, "in_pipeline": 0.0, "caller": 0.0}

    def _frames(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        it = iter(frames)
        while True:
            t = time.perf_counter()
            frame = next(it, None)
            self.seconds["decode"] += time.perf_counter() - t
            if frame is None:
                return
            yield frame

    def stream_frames(self, frames: Iterable[Frame], threshold: float | None = None, mask_threshold=None):
        it = self._predictor.stream_frames(self._frames(frames), threshold, mask_threshold)
        while True:
            t = time.perf_counter()
            item = next(it, None)
            self.seconds["in_pipeline"] += time.perf_counter() - t
            if item is None:
                return
            self._log.add(item[0].number, item[2])
            t = time.perf_counter()
            yield item
            self.seconds["caller"] += time.perf_counter() - t


class _Progress:
    """``progress(done, total, frames/s)`` on stderr about once a second, on one line."""

    def __init__(self, variant: str, quiet: bool):
        self.variant, self.quiet = variant, quiet
        self.last, self.shown = time.perf_counter(), False

    def __call__(self, done: int, total: int | None, fps: float) -> None:
        if not self.quiet and time.perf_counter() - self.last >= 1.0:
            self.last, self.shown = time.perf_counter(), True
            print(
                f"\r[bench]   {self.variant}: frame {done}/{total or '?'}, {fps:.1f} frames/s",
                end="",
                file=sys.stderr,
                flush=True,
            )

    def end(self) -> None:
        if self.shown:
            print(file=sys.stderr)


def _run_pipeline(
    job: dict[str, Any], predictor: Any, pipeline: Pipeline, render: Render, work: Path
) -> dict[str, Any]:
    log = _DetectionLog(Path(job["dets_out"]))
    tap = _Tap(predictor, log)
    progress = _Progress("pipeline", job["quiet"])
    with _Records(work / "pipeline.json", predictor) as records:
        t0 = time.perf_counter()
        run = pipeline(
            tap,
            job["video"],
            render_to=work / "pipeline.mp4",
            every=job["every"],
            max_frames=job["max_frames"],
            progress=progress,
            renderer=render,
            sink=records,
        )
        wall = time.perf_counter() - t0
    log.close()
    progress.end()
    n = max(run.frames, 1)
    inference = records.inference
    pre, post = records.sums["preprocess"] / n, records.sums["postprocess"] / n
    s = tap.seconds
    stages = {
        "decode": 1e3 * s["decode"] / n,
        "preprocess": pre,
        "postprocess": post,
        # pulling a result, decoding and pre/postprocessing excluded: inference not hidden behind the caller
        "waiting": max(0.0, 1e3 * (s["in_pipeline"] - s["decode"]) / n - pre - post),
        "render_encode": 1e3 * s["caller"] / n,
    }
    return {
        "frames": run.frames,
        "wall_s": wall,
        "model_ms": statistics.median(inference) if inference else 0.0,
        "stages_ms": stages,
        "encoded": (work / "pipeline.mp4").is_file(),
    }


def _run_loop(job: dict[str, Any], predictor: Any, render: Render, work: Path) -> dict[str, Any]:
    log = _DetectionLog(Path(job["dets_out"]))
    show = _Progress("loop", job["quiet"])
    total = {k: 0.0 for k in ("decode", "render", "encode", "record")}
    timings = {k: 0.0 for k in ("preprocess", "inference", "postprocess")}
    inference: list[float] = []
    n = 0
    info = video_info(job["video"])
    t0 = time.perf_counter()
    with (
        _Records(work / "loop.json", predictor) as records,  # written as made, as the pipeline's
        VideoWriter(work / "loop.mp4", fps=info["fps"] / job["every"]) as writer,
    ):
        frames = read_frames(job["video"], job["every"], job["max_frames"])
        while True:
            t = time.perf_counter()
            frame = next(frames, None)
            t1 = time.perf_counter()
            total["decode"] += t1 - t
            if frame is None:
                break
            rgb, det = predictor.predict_image(frame.rgb)
            t2 = time.perf_counter()
            drawn = render(rgb, det, predictor.labels, task=predictor.task)
            t3 = time.perf_counter()
            writer.write(drawn)
            t4 = time.perf_counter()
            records({"source": job["video"], "frame": frame.number, "time_s": round(frame.time_s, 4), **det.to_dict()})
            t5 = time.perf_counter()
            total["render"] += t3 - t2
            total["encode"] += t4 - t3
            total["record"] += t5 - t4
            for k in timings:
                timings[k] += det.timings[k]
            inference.append(det.timings["inference"])
            log.add(frame.number, det)
            n += 1
            show(n, None, n / (time.perf_counter() - t0))
        t = time.perf_counter()
    total["encode"] += time.perf_counter() - t  # flushing the encoder, closing the file
    wall = time.perf_counter() - t0
    log.close()
    show.end()
    d = max(n, 1)
    stages = {
        "decode": 1e3 * total["decode"] / d,
        **{k: v / d for k, v in timings.items()},
        "render": 1e3 * total["render"] / d,
        "encode": 1e3 * total["encode"] / d,
        "record": 1e3 * total["record"] / d,
    }
    return {
        "frames": n,
        "wall_s": wall,
        "model_ms": statistics.median(inference) if inference else 0.0,
        "stages_ms": stages,
        "encoded": (work / "loop.mp4").is_file(),
    }


def _worker(job: dict[str, Any], pipeline: Pipeline, render: Render, out: str) -> None:
    """One variant, one run, in a fresh process: warm up, time, write the row (or the error) to ``out``
    as JSON."""
    os.environ["OMP_NUM_THREADS"] = str(job["threads"])  # torch (Detectron2's Visualizer), before it loads
    work = Path(tempfile.mkdtemp(prefix=f"d2ov-bench-{job['variant']}-"))
    try:
        predictor = open_predictor(job["xml"], PRECISIONS[job["precision"]], threads=job["threads"])
        first = next(read_frames(job["video"], 1, 1)).rgb
        for _ in range(job["warmup"]):
            predictor.predict(first)
        render(first, predictor.predict(first), predictor.labels, task=predictor.task)  # the renderer's imports
        warm_peak_kb = _peak_rss_kb()
        if job["variant"] == "pipeline":
            row = _run_pipeline(job, predictor, pipeline, render, work)
        else:
            row = _run_loop(job, predictor, render, work)
        row.update(
            variant=job["variant"], run=job["run"], peak_rss_mb=_peak_rss_kb() / 1024, warm_rss_mb=warm_peak_kb / 1024
        )
        Path(out).write_text(json.dumps(row))
    except BaseException as e:
        Path(out).write_text(json.dumps({"error": f"{type(e).__name__}: {first_line(e)}"}))
        raise SystemExit(1) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------------------------ the runner


def _read_dets(path: Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def compare_frames(reference: list[dict[str, Any]], candidate: list[dict[str, Any]]) -> dict[str, Any]:
    """Frame by frame, exactly: frames whose detections (class, box, score, in order) are identical,
    frames that differ (of them, those whose detection counts or classes differ), and the largest box /
    score deviation where counts and classes agree."""
    same = differ = recount = 0
    box_dev = score_dev = 0.0
    for r, c in zip(reference, candidate):
        if r == c:
            same += 1
            continue
        differ += 1
        if r["frame"] == c["frame"] and r["class_ids"] == c["class_ids"] and r["boxes"]:
            box_dev = max(box_dev, float(np.abs(np.subtract(r["boxes"], c["boxes"])).max()))
            score_dev = max(score_dev, float(np.abs(np.subtract(r["scores"], c["scores"])).max()))
        else:
            recount += 1
    missing = abs(len(reference) - len(candidate))
    return {
        "frames": max(len(reference), len(candidate)),
        "identical": same,
        "differ": differ + missing,
        "counts_differ": recount + missing,
        "detections": sum(len(r["scores"]) for r in reference),
        "max_box_dev": box_dev,
        "max_score_dev": score_dev,
    }


def run_bench_video(
    model: str,
    videos: list[str],
    pipeline: Pipeline,
    render: Render,
    *,
    precision: Precision | None = None,
    weights: str | None = None,
    calibration: str | None = None,
    threads: int | None = None,
    every: int = 1,
    max_frames: int | None = None,
    runs: int = 1,
    warmup: int = 2,
    renderer: str = "",
    quiet: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Time ``pipeline`` against the plain loop on each of ``videos`` (see the module docstring).

    ``pipeline(predictor, path, render_to=, every=, max_frames=, progress=)`` returns an object with
    ``frames``, ``records`` (each with ``timing_ms``): :func:`d2ov_core.serve.video.process_video`.
    ``render(rgb, detections, labels, task=)`` draws a frame (:func:`d2ov_core.serve.render.render`);
    ``renderer`` names it in the report. Runs alternate (pipeline, loop, pipeline, ...) so a change
    of the machine's load hits both. Returns the report (:func:`markdown_video` formats it)."""
    if every < 1 or (max_frames is not None and max_frames < 1) or runs < 1 or warmup < 0:
        raise InputError(
            f"every, max_frames and runs must be >= 1 and warmup >= 0, got {every}, {max_frames}, {runs}, {warmup}"
        )
    infos = {v: check_video(v) for v in videos}
    precision = precision or PRECISIONS["FP16"]
    threads = threads or usable_cpus()
    xml = _resolve(model, precision, weights, calibration, log)
    load_before = os.getloadavg()
    ctx = multiprocessing.get_context("spawn")
    scratch = Path(tempfile.mkdtemp(prefix="d2ov-bench-video-"))
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    try:
        for video in videos:
            info = infos[video]
            log(
                f"[bench] {Path(video).name}: {info['width']}x{info['height']}, {info['frames'] or '?'} frames, "
                f"{runs} run(s) of each variant after {warmup} warm-up prediction(s)"
            )
            by_variant: dict[str, list[dict[str, Any]]] = {v: [] for v in VIDEO_VARIANTS}
            for run in range(runs):
                for variant in VIDEO_VARIANTS:
                    out = scratch / f"{variant}-{run}.json"
                    job = {
                        "variant": variant,
                        "run": run,
                        "xml": str(xml),
                        "precision": precision.name,
                        "video": str(video),
                        "every": every,
                        "max_frames": max_frames,
                        "warmup": warmup,
                        "threads": threads,
                        "quiet": quiet,
                        "dets_out": str(scratch / f"{variant}-{run}.dets.jsonl"),
                    }
                    p = ctx.Process(target=_worker, args=(job, pipeline, render, str(out)))
                    p.start()
                    p.join()
                    row = json.loads(out.read_text()) if out.is_file() else {}
                    if p.exitcode != 0 or "error" in row:
                        why = row.get("error", f"exit code {p.exitcode}")
                        failed.append({"video": str(video), "variant": variant, "run": run, "error": why})
                        log(f"[bench]   {variant} run {run + 1}: FAILED ({why})")
                        continue
                    row["agreement"] = None
                    by_variant[variant].append(row)
                    log(
                        f"[bench]   {variant} run {run + 1}: {row['frames']} frames in {row['wall_s']:.1f} s, "
                        f"{row['frames'] / row['wall_s']:.2f} frames/s, model {row['model_ms']:.0f} ms, "
                        f"peak RSS {row['peak_rss_mb']:.0f} MB"
                    )
            reference = _read_dets(scratch / "loop-0.dets.jsonl") if by_variant["loop"] else None
            for variant, done in by_variant.items():
                if not done:
                    continue
                if reference is not None:
                    for r in done:
                        r["agreement"] = compare_frames(
                            reference, _read_dets(scratch / f"{variant}-{r['run']}.dets.jsonl")
                        )
                rows.append(_summarize(str(video), info, variant, done))
            pipe = next((r for r in rows if r["video"] == str(video) and r["variant"] == "pipeline"), None)
            loop = next((r for r in rows if r["video"] == str(video) and r["variant"] == "loop"), None)
            if pipe and loop:
                pipe["vs_loop"] = pipe["fps"] / loop["fps"]
                loop["vs_loop"] = 1.0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "model": model,
        "xml": str(xml),
        "precision": precision.name,
        "weights": weights or "catalog",
        "threads": threads,
        "every": every,
        "max_frames": max_frames,
        "runs": runs,
        "warmup": warmup,
        "renderer": renderer,
        "videos": [{"path": str(v), **infos[v]} for v in videos],
        "machine": _machine(),
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "rows": rows,
        "failed": failed,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def _summarize(video: str, info: dict[str, Any], variant: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One table row from a variant's runs: medians of frames/s, wall and model time; the largest peak
    RSS; the mean stage split over runs; agreement summed over runs."""
    fps = [r["frames"] / r["wall_s"] for r in runs]
    stages = {k: statistics.fmean(r["stages_ms"][k] for r in runs) for k in runs[0]["stages_ms"]}
    agreements = [r["agreement"] for r in runs if r["agreement"] is not None]
    agreement = None
    if agreements:
        agreement = {
            "runs": len(agreements),
            "frames": sum(a["frames"] for a in agreements),
            "identical": sum(a["identical"] for a in agreements),
            "differ": sum(a["differ"] for a in agreements),
            "counts_differ": sum(a["counts_differ"] for a in agreements),
            "detections": agreements[0]["detections"],
            "max_box_dev": max(a["max_box_dev"] for a in agreements),
            "max_score_dev": max(a["max_score_dev"] for a in agreements),
        }
    return {
        "video": video,
        "size": f"{info['width']}x{info['height']}",
        "variant": variant,
        "frames": [r["frames"] for r in runs],
        "wall_s": statistics.median(r["wall_s"] for r in runs),
        "fps": statistics.median(fps),
        "fps_runs": fps,
        "model_ms": statistics.median(r["model_ms"] for r in runs),
        "stages_ms": stages,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "peak_rss_mb_runs": [r["peak_rss_mb"] for r in runs],
        "encoded": all(r["encoded"] for r in runs),
        "agreement": agreement,
    }


# ------------------------------------------------------------------------------------ the report


def agreement_text(a: dict[str, Any] | None, variant: str) -> str:
    if variant == "loop" and a and a["differ"] == 0 and a["runs"] == 1:
        return "reference"
    if a is None:
        return "-"
    if a["differ"] == 0:
        return f"identical: {a['identical']}/{a['frames']} frames ({a['detections']} detections)"
    dev = f"box up to {a['max_box_dev']:.3g} px, score up to {a['max_score_dev']:.3g}"
    if a["counts_differ"]:
        dev += f"; {a['counts_differ']} frame(s) with other detections or frames"
    return f"DIFFER: {a['differ']}/{a['frames']} frames ({dev})"


def _stage_text(variant: str, s: dict[str, float]) -> str:
    if variant == "pipeline":
        return (
            f"decode {s['decode']:.1f}, pre {s['preprocess']:.1f} + post {s['postprocess']:.1f}, "
            f"waiting {s['waiting']:.1f}, render+encode+record {s['render_encode']:.1f}"
        )
    return (
        f"decode {s['decode']:.1f}, pre {s['preprocess']:.1f}, infer {s['inference']:.1f}, "
        f"post {s['postprocess']:.1f}, render {s['render']:.1f}, encode {s['encode']:.1f}"
        + (f", record {s['record']:.1f}" if "record" in s else "")
    )


def markdown_video(report: dict[str, Any]) -> str:
    m = report["machine"]
    lb, la = report["load_average"]["before"], report["load_average"]["after"]
    options = f", every {report['every']}" if report["every"] > 1 else ""
    options += f", at most {report['max_frames']} frames" if report["max_frames"] else ""
    lines = [
        f"`d2ov bench {report['model']} --video` ({report['precision']}, weights: {report['weights']}) — "
        f"{report['date']}, {m['cpu']}, {m['cores']} cores, {report['threads']} threads, OpenVINO {m['openvino']}, "
        f"renderer {report['renderer'] or '?'}; {report['runs']} run(s) per variant after {report['warmup']} "
        f"warm-up prediction(s){options}; load average {lb[0]:.2f} before, {la[0]:.2f} after",
        "",
        "| video | variant | frames | wall s | frames/s end to end | vs loop | model ms/frame (median) | "
        "ms/frame: where the time goes (mean) | peak RSS MB | detections vs loop |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["rows"]:
        runs = r["fps_runs"]
        spread = f" ({min(runs):.2f}-{max(runs):.2f})" if len(runs) > 1 else ""
        frames = "/".join(str(f) for f in sorted(set(r["frames"])))
        ratio = f"{r['vs_loop']:.2f}x" if r.get("vs_loop") else "-"
        lines.append(
            f"| {Path(r['video']).name} {r['size']} | {r['variant']} | {frames} | {r['wall_s']:.1f} | "
            f"{r['fps']:.2f}{spread} | {ratio} | {r['model_ms']:.0f} | {_stage_text(r['variant'], r['stages_ms'])} | "
            f"{r['peak_rss_mb']:.0f} | {agreement_text(r['agreement'], r['variant'])} |"
        )
    for f in report["failed"]:
        lines.append(
            f"| {Path(f['video']).name} | {f['variant']} | failed (run {f['run'] + 1}): {f['error']} | | | | | | | |"
        )
    lines += ["", *rss_lines(report)]
    lines.append(
        "End to end: from opening the video to the annotated MP4 being complete (decode, model, drawing, "
        "H.264 encoding). Pipeline model ms: submission to result (includes queueing); its stages overlap, "
        "`waiting` is the time the caller waited on results beyond decoding and pre/postprocessing; "
        "record: the frame's JSON record (masks as RLE), written to a file as it is made (as predict --json "
        "and the app do; none is kept in memory). "
        "Detections: every frame's classes, boxes and scores compared exactly with the loop's first run."
    )
    return "\n".join(lines) + "\n"


def rss_lines(report: dict[str, Any]) -> list[str]:
    """With several videos: each variant's peak RSS on the shortest and the longest, and the change."""
    lines = []
    for variant in VIDEO_VARIANTS:
        rows = sorted((r for r in report["rows"] if r["variant"] == variant), key=lambda r: max(r["frames"]))
        if len(rows) > 1:
            a, b = rows[0], rows[-1]
            lines.append(
                f"Peak RSS, {variant}: {a['peak_rss_mb']:.0f} MB over {max(a['frames'])} frames, "
                f"{b['peak_rss_mb']:.0f} MB over {max(b['frames'])} frames "
                f"({100 * (b['peak_rss_mb'] / a['peak_rss_mb'] - 1):+.1f}%)."
            )
    return [*lines, ""] if lines else []
