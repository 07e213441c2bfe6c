"""``d2ov predict``: detect objects in images (OpenVINO, or Detectron2 eager as the reference)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from ..errors import InputError
from ..runtime import settings as S
from ..runtime.detections import PredictionsWriter
from ..runtime.predictor import Predictor
from ..runtime.video import is_video
from ..serve.render import render
from ..serve.video import process_video
from ..store import catalog
from .common import (
    add_ir_options,
    add_model_options,
    expand_images,
    is_model_arg,
    make_predictor,
    threshold_type,
)


def register(sub) -> None:
    p = sub.add_parser("predict", help="detect objects in images and videos")
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="MODEL_OR_IR IMAGE",
        help="a catalog name, an IR .xml or folder, then images, videos or folders (model optional: default "
        f"{catalog.DEFAULTS['instance_segmentation']})",
    )
    p.add_argument("--backend", choices=["openvino", "pytorch"], default="openvino")
    add_model_options(p)
    add_ir_options(p)
    p.add_argument(
        "--hint",
        choices=["LATENCY", "THROUGHPUT"],
        default="LATENCY",
        help="THROUGHPUT: several images in flight (AsyncInferQueue) for many images",
    )
    thr = S.SETTINGS["confidence_threshold"]
    p.add_argument(
        "--threshold",
        type=threshold_type,
        default=None,
        help=f"{thr.description} (default {thr.default}; 0.05 is frozen into the graph)",
    )
    p.add_argument(
        "--server",
        metavar="URL",
        help="run the model on this KServe-v2 model server (d2ov's KServe predictor, OpenVINO Model "
        "Server): images are decoded, pre- and postprocessed here, the graph runs there",
    )
    p.add_argument("--remote-model", metavar="NAME", help="the model's name on --server (default: its only model)")
    p.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help="seconds allowed per request to --server (default: D2OV_SERVER_TIMEOUT, else 60)",
    )
    p.add_argument(
        "--every",
        type=int,
        default=1,
        metavar="N",
        help="videos: run on every N-th frame (default 1: every frame)",
    )
    p.add_argument("--max-frames", type=int, metavar="N", help="videos: stop after N processed frames")
    p.add_argument(
        "--track",
        action="store_true",
        help="videos: ids that follow each object across frames (ByteTrack, 'd2ov[track]'), in the JSON "
        "('track_id') and drawn",
    )
    p.add_argument("--json", help="write results to this JSON file (videos: one record per processed frame)")
    p.add_argument(
        "--render",
        help="write rendered images (PNG) into this folder; a video becomes <name>.mp4 (H.264) there",
    )
    p.set_defaults(func=run, trailing_positionals="inputs")


def _remote_predictor(args, items: list[str]):
    """``(predictor, images)`` for ``--server``: every positional argument is an image."""
    local_only = [
        f
        for f, v in (
            ("--backend pytorch", args.backend == "pytorch"),
            ("--static-shape", args.static_shape),
            ("--precision", args.precision),
            ("--weights", args.weights),
            ("--classes", args.classes),
        )
        if v
    ]
    if local_only:
        raise InputError(f"{', '.join(local_only)}: not with --server (the server's IR decides)")
    if is_model_arg(items[0]) and not Path(items[0]).exists():
        raise InputError(f"with --server, name the server's model with --remote-model ({items[0]!r} is not an image)")
    images = expand_images(items)
    return Predictor(server=args.server, model=args.remote_model, timeout=args.timeout), images


def _check_pytorch_options(args) -> None:
    """Options that only the OpenVINO backend has: one line instead of silently running something else."""
    ov_only = [
        f
        for f, v in (
            ("--precision", args.precision),
            ("--static-shape", args.static_shape),
            (f"--device {args.device}", args.device.upper() != "CPU"),
            (f"--hint {args.hint}", args.hint != "LATENCY"),
        )
        if v
    ]
    if ov_only:
        raise InputError(
            f"{', '.join(ov_only)}: not with --backend pytorch (Detectron2 eager runs FP32 on the CPU, "
            "one image at a time)"
        )


def _predict_video(predictor, path: str, args, render_dir: Path | None, sink: Callable[[dict], None]) -> None:
    """One video: a JSON record per processed frame to ``sink``; with ``render_dir``, ``<name>.mp4``
    drawn like images. Progress on stderr about once a second."""
    shown = [time.perf_counter()]
    on_line = [False]  # a progress line is open on stderr: the next message starts a line of its own

    def progress(done: int, total: int | None, fps: float) -> None:
        if not args.quiet and time.perf_counter() - shown[0] >= 1.0:
            shown[0] = time.perf_counter()
            of = f"/{total}" if total else ""
            print(f"\r{path}: frame {done}{of}, {fps:.1f} frames/s", end="", file=sys.stderr, flush=True)
            on_line[0] = True

    out = render_dir / (Path(path).stem + ".mp4") if render_dir else None
    try:
        done = process_video(
            predictor, path, out, args.every, args.max_frames, threshold=args.threshold, progress=progress,
            track=args.track, sink=sink,
        )  # fmt: skip
    finally:
        if on_line[0]:  # whether it ended or failed (an error's one line must be a line of its own)
            print(file=sys.stderr)
    print(done.summary(path))
    if out:
        print(f"  rendered {out}")


def _predict_images(predictor, images: list[str], args, render_dir: Path | None, keep: Callable[[dict], None]) -> None:
    """The still images: a result per image to ``keep``, a line per image; with ``render_dir``,
    ``<name>.png``. Several requests in flight with ``--hint THROUGHPUT``."""
    t0 = time.perf_counter()
    if (
        args.hint == "THROUGHPUT" and args.backend == "openvino" and len(images) > 1
    ):  # also --server: requests in flight
        # AsyncInferQueue: decoding/preprocessing overlaps with several requests in flight
        done = zip(images, predictor.predict_many(images, threshold=args.threshold))
    else:
        done = ((img, predictor.predict_image(img, threshold=args.threshold)) for img in images)
    for img, (rgb, det) in done:
        keep({"image": str(img), **det.to_dict()})
        summary = ", ".join(f"{l} {s:.2f}" for l, s in zip(det.labels[:8], det.scores[:8]))
        more = f", +{len(det) - 8} more" if len(det) > 8 else ""
        print(
            f"{img}: {len(det)} detections in {det.timings['total']:.0f} ms"
            + (f" ({summary}{more})" if len(det) else "")
        )
        if render_dir:
            out = render_dir / (Path(img).stem + ".png")
            Image.fromarray(render(rgb, det, predictor.labels, task=predictor.task)).save(out)
            print(f"  rendered {out}")
    if len(images) > 1:
        wall = time.perf_counter() - t0
        print(f"{len(images)} images in {wall:.1f} s ({len(images) / wall:.2f} images/s, {args.hint.lower()} mode)")


def _check_track(args, inputs: list[str]) -> None:
    if args.track and not any(is_video(i) for i in inputs):
        raise InputError("--track follows objects across a video's frames: no video among the inputs")


def run(args) -> int:
    items = list(args.inputs)
    if args.every < 1 or (args.max_frames is not None and args.max_frames < 1):
        raise InputError(f"--every and --max-frames must be >= 1, got {args.every} and {args.max_frames}")
    if args.server:
        predictor, images = _remote_predictor(args, items)
        _check_track(args, images)
    else:
        if args.remote_model or args.timeout is not None:
            raise InputError("--remote-model and --timeout need --server URL")
        if is_model_arg(items[0]):
            model, images = items[0], items[1:]
        else:
            model, images = catalog.DEFAULTS["instance_segmentation"], items
        if not images:
            raise InputError("no image given: d2ov predict [MODEL_OR_IR] IMAGE_OR_FOLDER...")
        images = expand_images(images)  # fail fast on a bad path before loading a model
        _check_track(args, images)
        if args.backend == "pytorch":
            _check_pytorch_options(args)
        predictor = make_predictor(
            model,
            backend=args.backend,
            weights=args.weights,
            classes=args.classes,
            device=args.device,
            precision=args.precision,
            hint=args.hint,
            static_shape=args.static_shape,
        )
    render_dir = Path(args.render) if args.render else None
    if render_dir:
        render_dir.mkdir(parents=True, exist_ok=True)

    videos = [i for i in images if is_video(i)]
    images = [i for i in images if not is_video(i)]
    writer = None
    if args.json:  # results go to the file as they come: a long video or a large folder is not held
        threshold = args.threshold if args.threshold is not None else S.SETTINGS["confidence_threshold"].default
        backend = "remote" if args.server else args.backend
        device = predictor.device if args.server else args.device if args.backend == "openvino" else "cpu"
        writer = PredictionsWriter(args.json, predictor.describe(), backend, device, threshold)
    with writer or contextlib.nullcontext():
        keep = writer.add if writer else (lambda result: None)
        for v in videos:
            _predict_video(predictor, v, args, render_dir, keep)
        _predict_images(predictor, images, args, render_dir, keep)
    if args.json:
        print(f"wrote {args.json}")
    return 0
