"""``d2ov convert``: a Detectron2 model -> OpenVINO IR (FP16, FP32, or INT8 with calibration images)."""

from __future__ import annotations

import time

from ..errors import InputError
from ..export.convert import convert
from ..export.quantize import DEFAULT_RECIPE, RECIPES
from ..measure.accuracy import AccuracyCheck
from ..measure.evaluate import task_measures
from ..measure.proof import MAX_IMAGES, check, proof_text, record
from ..runtime import settings as S
from ..runtime.images import image_files
from ..runtime.ir import read_metadata
from ..runtime.settings import ap_text
from .common import add_model_options, add_precision_option, spec_from_args


def register(sub) -> None:
    p = sub.add_parser("convert", help="convert a Detectron2 model to OpenVINO IR")
    p.add_argument("model", help="catalog name (see `d2ov list`) or a Detectron2 config .yaml")
    add_model_options(p)
    p.add_argument("--out", help="output folder for model.xml/.bin (default: the cache)")
    add_precision_option(p, choices=S.IR_PRECISIONS, default=S.DEFAULT_PRECISION)
    p.add_argument("--calibration", help="folder of calibration images (of the model's domain) for --precision INT8")
    p.add_argument("--calibration-size", type=int, default=16, help="calibration images used (default 16)")
    p.add_argument(
        "--recipe",
        choices=list(RECIPES),
        help=f"INT8 recipe (default {DEFAULT_RECIPE.name}: {DEFAULT_RECIPE.describe()})",
    )
    p.add_argument("--sample", help="image to trace on (default: a bundled sample)")
    g = p.add_argument_group(
        "accuracy",
        "measure COCO AP at conversion (stored in the IR and d2ov.json, shown "
        "by the app); for INT8, keep it within --max-ap-drop of the float model; and check "
        "the IR against Detectron2 (d2ov verify) on the first 12 images, recorded likewise",
    )
    g.add_argument("--annotations", help="COCO instances JSON of a validation set (not your test set)")
    g.add_argument("--images", help="folder of that set's images")
    for m in task_measures():  # a task's own measure on that set (its other inputs at their defaults)
        g.add_argument("--" + m.first.replace("_", "-"), help=f"{m.options[m.first]}, of that set")
    g.add_argument("--eval-limit", type=int, help="measure on the first N images only")
    g.add_argument(
        "--max-ap-drop",
        type=float,
        default=None,
        help="INT8: most AP (box, mask, keypoint) and PQ points the IR may lose against the float model on that set "
        "(default 1.0 when --annotations is given); recipes are tried until one holds",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    spec = spec_from_args(args.model, args.weights, args.classes)
    t0 = time.perf_counter()
    if args.precision == "INT8" and not args.calibration:
        raise InputError("--precision INT8 needs --calibration DIR (images of the model's domain)")
    if args.calibration and args.precision != "INT8":
        raise InputError("--calibration is for --precision INT8")
    if args.calibration_size < 1:
        raise InputError(f"--calibration-size must be at least 1, got {args.calibration_size}")
    if bool(args.annotations) != bool(args.images):
        raise InputError("--annotations and --images go together (a COCO JSON and its images folder)")
    own = {m.first: getattr(args, m.first) for m in task_measures() if getattr(args, m.first)}
    if own and not args.annotations:
        flag = "--" + next(iter(own)).replace("_", "-")
        raise InputError(f"{flag} goes with --annotations and --images (the same set's instances JSON and images)")
    if args.max_ap_drop is not None and not (args.annotations and args.precision == "INT8"):
        raise InputError("--max-ap-drop needs --precision INT8 and a validation set (--annotations, --images)")
    if args.recipe and args.precision != "INT8":
        raise InputError("--recipe is for --precision INT8")
    measure, recipes = None, [RECIPES[args.recipe]] if args.recipe else None
    if args.annotations:
        max_drop = args.max_ap_drop if args.max_ap_drop is not None else (1.0 if args.precision == "INT8" else None)
        measure = AccuracyCheck(
            args.annotations,
            args.images,
            limit=args.eval_limit,
            max_drop=max_drop,
            progress=not args.quiet,
            task_annotations=own,
        )
        if args.precision == "INT8" and not args.recipe:  # d2ov's recipes in order until one holds
            recipes = [r for r in RECIPES.values() if r.name.startswith("d2ov")]
    xml = convert(
        spec,
        weights=args.weights,
        out=args.out,
        fp16=args.precision == "FP16",
        sample=args.sample,
        calibration=args.calibration,
        calibration_size=args.calibration_size,
        recipes=recipes,
        measure=measure,
    )
    size = sum(p.stat().st_size for p in xml.parent.glob("model.*"))
    print(f"{xml}  ({size / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s)")
    if measure is not None:
        meta = read_metadata(xml)
        for p, row in meta.accuracy.items():
            print(f"  {p:<5} {ap_text(row, 2)}  ({row.ms:.0f} ms/image, {row.images} images of {row.set})")
        if meta.quantization:
            print(f"  recipe {meta.quantization}")
        # the proof that travels with the IR: d2ov verify on the first images of that set, in its metadata
        verification = check(spec, xml, image_files(args.images, recursive=True)[:MAX_IMAGES], weights=args.weights)
        record(xml, verification)
        print(f"  {proof_text(verification)}")
    return 0
