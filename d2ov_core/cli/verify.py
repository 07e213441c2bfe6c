"""``d2ov verify``: Detectron2 (PyTorch) and the OpenVINO IR on the same images, detection by
detection; exit 1 when they disagree past tolerance. ``--stages``: stage by stage (features, RPN /
RetinaNet head, ROI heads on fixed proposals, then the detections; see
:mod:`d2ov_core.measure.stages`), which can judge a conversion with random weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import InputError
from ..export.reference import ReferencePredictor
from ..measure.stages import check, format_table
from ..measure.verify import Tolerance, match_reference, ties_text
from ..runtime.images import load_image
from ..runtime.tasks import get_task
from .common import add_model_options, add_precision_option, make_predictor, spec_from_args, write_json


def register(sub) -> None:
    p = sub.add_parser("verify", help="compare PyTorch and OpenVINO on the same images")
    p.add_argument("model", help="catalog name or a Detectron2 config .yaml")
    p.add_argument("images", nargs="+")
    add_model_options(p)
    p.add_argument("--device", default="CPU")
    add_precision_option(p)
    p.add_argument("--min-score", type=float, default=0.3, help="compare detections scoring at least this (0.3)")
    p.add_argument("--box-tol", type=float, default=0.5, help="max box deviation, px (0.5)")
    p.add_argument("--score-tol", type=float, default=1e-3, help="max score deviation (1e-3)")
    p.add_argument("--mask-iou", type=float, default=0.98, help="min mask IoU (0.98)")
    p.add_argument(
        "--keypoint-tol", type=float, default=0.5, help="max deviation of visible keypoints (score > 0.05), px (0.5)"
    )
    p.add_argument(
        "--segment-iou",
        type=float,
        default=0.98,
        help="models whose answer is a map of segments: min IoU of matched segments; every segment must match (0.98)",
    )
    p.add_argument(
        "--stages",
        action="store_true",
        help="compare stage by stage (features, RPN/head, ROI heads on the same proposals, detections): "
        "judges a conversion even with --weights random",
    )
    p.add_argument(
        "--stage-tol", type=float, default=1e-3, help="--stages: max relative deviation of a stage tensor (1e-3)"
    )
    p.add_argument("--json", help="write the comparison to this JSON file")
    p.set_defaults(func=run, trailing_positionals="images")


def run(args) -> int:
    for img in args.images:
        if not Path(img).is_file():
            raise InputError(f"image not found: {img}")
    if not 0 < args.stage_tol < 1:
        raise InputError(f"--stage-tol must be in (0, 1), got {args.stage_tol}")
    spec = spec_from_args(args.model, args.weights, args.classes)
    tol = Tolerance(
        min_score=args.min_score,
        box_px=args.box_tol,
        score=args.score_tol,
        mask_iou=args.mask_iou,
        keypoint_px=args.keypoint_tol,
        segment_iou=args.segment_iou,
    )
    if args.stages:
        return _stages(args, spec, tol)
    ref = ReferencePredictor(spec, weights=args.weights)
    ov = make_predictor(
        args.model, weights=args.weights, classes=args.classes, device=args.device, precision=args.precision
    )
    rows, failures, ties = [], 0, 0
    for img in args.images:
        rgb = load_image(img)
        c = match_reference(ref, ov, rgb, tol)
        ok = bool(c.ok(tol))
        failures += not ok
        rows.append({"image": str(img), "ok": ok, **c.to_dict()})
        miou = "" if c.min_mask_iou is None else f", min mask IoU {c.min_mask_iou:.4f}"
        kp = (
            ""
            if c.max_keypoint_dev is None
            else (f", keypoint dev {c.max_keypoint_dev:.3f} px ({c.keypoints_compared} visible keypoints)")
        )
        pan = (
            ""
            if c.min_segment_iou is None
            else (
                f", segments {c.segments_matched}/{c.segments_reference} matched (ov {c.segments_candidate}), segment IoU "
                f"min {c.min_segment_iou:.4f} mean {c.mean_segment_iou:.4f}, pixels agree {100 * c.pixel_agreement:.3f}%"
            )
        )
        ties += c.ties
        print(
            f"{'ok  ' if ok else 'FAIL'} {img}: matched {c.matched}/{c.reference}{ties_text(c.ties)} (unmatched ref "
            f"{c.unmatched_reference}, ov {c.unmatched_candidate}), box dev {c.max_box_dev:.3f} px, score dev "
            f"{c.max_score_dev:.2e}{miou}{kp}{pan}"
        )
    extra = get_task(ref.task).tolerance_text(tol)
    print(
        f"{len(args.images) - failures} of {len(args.images)} images within tolerance "
        f"(score >= {tol.min_score}, box <= {tol.box_px} px, score <= {tol.score}{extra})"
    )
    if ties:
        print(
            f"near tie: Detectron2 scores two overlapping boxes of a class within {tol.score:g} of each other; its "
            "last NMS kept one, the IR kept the other (a box Detectron2 scored alike, within the tolerances)"
        )
    if args.json:
        write_json(
            args.json,
            {
                "model": spec.name,
                "ir": str(ov.xml),
                "precision": ov.precision,
                "tolerance": dataclasses.asdict(tol),
                "images": rows,
            },
        )
    return 1 if failures else 0


def _stages(args, spec, tol) -> int:
    import time

    t = time.perf_counter()
    ov = make_predictor(
        args.model, weights=args.weights, classes=args.classes, device=args.device, precision=args.precision
    )
    converted = time.perf_counter() - t
    report = check(
        spec,
        args.images,
        weights=args.weights,
        tol=args.stage_tol,
        verify_tol=tol,
        predictor=ov,
        progress=not args.quiet,
    )
    print(format_table(report))
    print(
        f"{spec.name}: {'every stage within tolerance' if report.ok else 'FAILED'} (stage tensors: max relative "
        f"deviation {report.tensor_rel:.2e}, tolerance {args.stage_tol:g}; IR {ov.precision})"
    )
    if args.json:
        ir = ov.xml
        write_json(
            args.json,
            {
                **report.to_dict(),
                "ir": str(ir),
                "precision": ov.precision,
                "ir_mb": round(sum(p.stat().st_size for p in ir.parent.glob("model.*")) / 1e6, 1),
                "ir_seconds": round(converted, 1),
                "verify_tolerance": dataclasses.asdict(tol),
            },
        )
    return 0 if report.ok else 1
