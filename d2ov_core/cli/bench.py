"""``d2ov bench`` (Detectron2 eager vs OpenVINO variants, one run) and ``d2ov profile`` (where the
time goes inside one model call)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import InputError
from ..store import catalog
from .common import add_ir_options, is_ir_path, make_predictor, static_shape_type, write_json


def register(sub) -> None:
    from ..measure.bench import PEERS, VARIANTS

    p = sub.add_parser("bench", help="Detectron2 eager vs OpenVINO variants, one run, same images and threads")
    p.add_argument("model", help="catalog name")
    p.add_argument("--weights", help="weights (e.g. 'random' for the Model Zoo architectures offline)")
    p.add_argument("--images", nargs="+", help="images to run on (default: the model's sample image)")
    p.add_argument("--runs", type=int, default=5, help="timed passes over the images (default 5)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, help="threads for every variant (default: all cores)")
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
    p.add_argument("--out", help="folder for bench.md, bench.json, bench.png")
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
    from ..export.convert import default_sample
    from ..measure.bench import PEERS, markdown
    from ..measure.bench import run_bench as bench

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
        runs=args.runs,
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


def run_profile(args) -> int:
    from ..export.convert import default_sample

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
