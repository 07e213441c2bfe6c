"""``d2ov bench`` (Detectron2 eager vs OpenVINO variants, one run; with ``--video``, a video end to
end: the app's pipeline against a plain loop) and ``d2ov profile`` (where the time goes inside one
model call)."""

from __future__ import annotations

import functools
import json
import sys
import tempfile
from pathlib import Path

from ..errors import InputError
from ..export.convert import default_sample
from ..measure import bench_video
from ..measure.bench import PEERS, VARIANTS, markdown
from ..measure.bench import run_bench as bench
from ..runtime import settings as S
from ..serve.render import STYLES, checked_style, render
from ..serve.video import process_video
from ..store import catalog
from .common import add_ir_options, add_precision_option, is_ir_path, make_predictor, static_shape_type, write_json


def register(sub) -> None:
    p = sub.add_parser("bench", help="Detectron2 eager vs OpenVINO variants, one run, same images and threads")
    p.add_argument("model", help="catalog name")
    p.add_argument("--weights", help="weights (e.g. 'random' for the Model Zoo architectures offline)")
    p.add_argument("--images", nargs="+", help="images to run on (default: the model's sample image)")
    p.add_argument(
        "--runs", type=int, help="timed passes over the images (default 5); with --video: runs of each variant (1)"
    )
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, help="threads for every variant (default: the CPUs this process may use)")
    p.add_argument(
        "--variants",
        nargs="+",
        default=None,
        choices=list(VARIANTS),
        metavar="VARIANT",
        help=f"subset of {', '.join(VARIANTS)} (default: all d2ov ones; INT8 ones only with --calibration or an "
        f"INT8 IR of the model). The peers ({', '.join(PEERS)}: what a user would run instead, needs "
        "'d2ov[bench]') run only when named; ort-int8 needs --calibration",
    )
    p.add_argument("--calibration", help="folder of calibration images for the INT8 variants (the first 16 by name)")
    p.add_argument(
        "--static-shape",
        type=static_shape_type,
        metavar="HxW",
        help="input of the static variants (default: the first image's resized size, padded to 32)",
    )
    p.add_argument("--out", help="folder for bench.md, bench.json, bench.png (with --video: bench_video.md/.json)")
    v = p.add_argument_group(
        "video",
        "--video CLIP (or --frames N: a synthetic 640x480 clip of N frames of the model's sample image) times the "
        "app's video pipeline against a plain loop over the same frames, decoding, drawing and encoding included, "
        "each in its own process; several --frames compare peak RSS across lengths",
    )
    v.add_argument("--video", help="video file to run on (.mp4, .mov, .webm, ...)")
    v.add_argument("--frames", type=int, nargs="+", metavar="N", help="synthetic 640x480 clip(s) of N frames")
    add_precision_option(v)
    v.add_argument("--every", type=int, default=1, help="process every N-th frame (default 1)")
    v.add_argument("--max-frames", type=int, help="stop after this many processed frames")
    v.add_argument(
        "--renderer",
        choices=list(STYLES),
        help="how frames are drawn: plain (default; what the app and predict use) or Detectron2's Visualizer",
    )
    p.set_defaults(func=run_bench)

    p = sub.add_parser("profile", help="where the time goes: OpenVINO per-op counters and the Python stages")
    p.add_argument("model", help="catalog name or an IR .xml/folder")
    p.add_argument("image", nargs="?", help="image (default: the model's sample image)")
    p.add_argument("--weights", help="weights (e.g. 'random')")
    add_ir_options(p)
    p.add_argument("--threads", type=int, help="inference threads (default: OpenVINO's choice)")
    p.add_argument("--top", type=int, default=15, help="slowest single ops to list (15)")
    p.add_argument("--json", help="write the profile to this JSON file")
    p.set_defaults(func=run_profile)


def run_bench(args) -> int:
    if args.video or args.frames:
        return run_bench_video(args)
    video_only = [
        f"--{k.replace('_', '-')}" for k in ("precision", "max_frames", "renderer") if getattr(args, k) is not None
    ]
    if video_only or args.every != 1:
        raise InputError(f"{', '.join(video_only or ['--every'])}: only with --video or --frames")
    spec = catalog.get(args.model)
    images = args.images or [str(default_sample(spec))]
    for img in images:
        if not Path(img).is_file():
            raise InputError(f"image not found: {img}")
    if args.calibration and not Path(args.calibration).is_dir():
        raise InputError(f"calibration folder not found: {args.calibration}")
    report = bench(
        spec.name,
        images,
        weights=args.weights,
        runs=args.runs or 5,
        warmup=args.warmup,
        threads=args.threads,
        variants=args.variants,
        out_dir=args.out,
        calibration=args.calibration,
        static_shape=args.static_shape,
        log=(lambda *_: None) if args.quiet else (lambda m: print(m, file=sys.stderr)),
    )
    print(markdown(report))
    if args.out:
        print(f"wrote {args.out}/bench.md, bench.json, bench.png")
    # a peer that cannot run the model is a finding of the comparison; a d2ov variant that fails is an error
    failed = [f["variant"] for f in report["failed"] if f["variant"] not in PEERS]
    if failed:
        print(f"d2ov: {len(failed)} variant(s) failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


def run_bench_video(args) -> int:
    """``d2ov bench MODEL --video CLIP`` / ``--frames N [M ...]``: :mod:`d2ov_core.measure.bench_video`
    with the app's pipeline (:func:`~d2ov_core.serve.video.process_video`) and renderer."""
    if args.video and args.frames:
        raise InputError("--video or --frames, not both")
    wrong = [
        o
        for o, v in (("--images", args.images), ("--variants", args.variants), ("--static-shape", args.static_shape))
        if v
    ]
    if wrong:
        raise InputError(
            f"{', '.join(wrong)}: not with --video (the variants are: {', '.join(bench_video.VIDEO_VARIANTS)})"
        )
    if (
        args.every < 1
        or (args.max_frames is not None and args.max_frames < 1)
        or (args.runs is not None and args.runs < 1)
    ):
        raise InputError(
            f"--every, --max-frames and --runs must be >= 1, got {args.every}, {args.max_frames}, {args.runs}"
        )
    if args.calibration and not Path(args.calibration).is_dir():
        raise InputError(f"calibration folder not found: {args.calibration}")
    style = checked_style(args.renderer)
    log = (lambda *_: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    if args.video:
        bench_video.check_video(args.video)  # a bad path fails before a model is loaded
        videos = [args.video]
    else:
        if any(n < 1 for n in args.frames):
            raise InputError(f"--frames must be >= 1, got {' '.join(map(str, args.frames))}")
        folder = Path(tempfile.gettempdir()) / "d2ov-bench-clips"  # written once per length, reused
        image = default_sample(catalog.get(catalog.DEFAULTS["detection"] if is_ir_path(args.model) else args.model))
        videos = []
        for n in args.frames:
            w, h = bench_video.SYNTHETIC_SIZE
            path = folder / f"synthetic_{Path(image).stem}_{w}x{h}_{n}.mp4"
            log(f"[bench] writing {path} ({n} frames) ..." if not path.is_file() else f"[bench] reusing {path}")
            videos.append(str(bench_video.synthetic_clip(path, n, image)))
    report = bench_video.run_bench_video(
        args.model,
        videos,
        process_video,
        functools.partial(render, style=style),
        precision=S.precision(args.precision),
        weights=args.weights,
        calibration=args.calibration,
        threads=args.threads,
        every=args.every,
        max_frames=args.max_frames,
        runs=args.runs or 1,
        warmup=args.warmup,
        renderer=style,
        quiet=args.quiet,
        log=log,
    )
    print(bench_video.markdown_video(report))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench_video.json").write_text(json.dumps(report, indent=1))
        (out / "bench_video.md").write_text(bench_video.markdown_video(report))
        print(f"wrote {out}/bench_video.md, bench_video.json")
    differ = [r for r in report["rows"] if r["agreement"] and r["agreement"]["differ"]]
    if differ:
        log(f"d2ov: the variants disagree: {', '.join(r['variant'] for r in differ)} detections differ from the loop's")
    if report["failed"]:
        print(
            f"d2ov: {len(report['failed'])} run(s) failed: " + ", ".join(f["variant"] for f in report["failed"]),
            file=sys.stderr,
        )
        return 1
    return 0


def run_profile(args) -> int:
    image = args.image
    if image is None:
        spec = catalog.get(catalog.DEFAULTS["detection"] if is_ir_path(args.model) else args.model)
        image = str(default_sample(spec))
    if not Path(image).is_file():
        raise InputError(f"image not found: {image}")
    predictor = make_predictor(
        args.model,
        weights=args.weights,
        device=args.device,
        precision=args.precision,
        static_shape=args.static_shape,
        profile=True,
        threads=args.threads,
    )
    predictor.predict(image, threshold=0.05)  # warm-up (first inference allocates)
    prof = predictor.profile(image, top=args.top)
    total = prof["ops_ms"]
    print(
        f"{predictor.name} ({predictor.precision}) on {Path(image).name}, input {prof['input_shape']}, "
        f"{prof['detections']} raw detections"
    )
    print("stages: " + ", ".join(f"{k} {v:.1f} ms" for k, v in prof["stages_ms"].items()))
    print(f"OpenVINO ops: {total:.1f} ms in all (sum of per-op real time)")
    print(f"  {'op type':<28} {'ms':>9} {'share':>6} {'ops':>5}")
    for kind, agg in list(prof["by_type"].items())[:20]:
        print(f"  {kind:<28} {agg['ms']:9.1f} {100 * agg['ms'] / max(total, 1e-9):5.1f}% {agg['count']:5d}")
    print("slowest ops:")
    for r in prof["slowest"]:
        print(f"  {r['ms']:8.2f} ms  {r['type']:<18} {r['exec_type']:<22} {r['name'][:70]}")
    if args.json:
        write_json(args.json, {"model": predictor.describe(), "image": image, **prof})
    return 0
