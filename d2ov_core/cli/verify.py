"""``d2ov verify``: Detectron2 (PyTorch) and the OpenVINO IR on the same images, detection by
detection; exit 1 when they disagree past tolerance."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import InputError
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
    p.add_argument("--json", help="write the comparison to this JSON file")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..export.reference import ReferencePredictor
    from ..measure.verify import Tolerance, match
    from ..runtime.images import load_image

    for img in args.images:
        if not Path(img).is_file():
            raise InputError(f"image not found: {img}")
    spec = spec_from_args(args.model, args.weights, args.classes)
    tol = Tolerance(min_score=args.min_score, box_px=args.box_tol, score=args.score_tol, mask_iou=args.mask_iou)
    ref = ReferencePredictor(spec, weights=args.weights)
    ov = make_predictor(args.model, weights=args.weights, classes=args.classes, device=args.device,
                        precision=args.precision)
    rows, failures = [], 0
    for img in args.images:
        rgb = load_image(img)
        c = match(ref.predict(rgb, threshold=0.05), ov.predict(rgb, threshold=0.05), tol)
        ok = c.ok(tol)
        failures += not ok
        rows.append({"image": str(img), "ok": ok, **c.to_dict()})
        miou = "-" if c.min_mask_iou is None else f"{c.min_mask_iou:.4f}"
        print(f"{'ok  ' if ok else 'FAIL'} {img}: matched {c.matched}/{c.reference} (unmatched ref {c.unmatched_reference}, "
              f"ov {c.unmatched_candidate}), box dev {c.max_box_dev:.3f} px, score dev {c.max_score_dev:.2e}, min mask IoU {miou}")
    print(f"{len(args.images) - failures} of {len(args.images)} images within tolerance "
          f"(score >= {tol.min_score}, box <= {tol.box_px} px, score <= {tol.score}, mask IoU >= {tol.mask_iou})")
    if args.json:
        write_json(args.json, {"model": spec.name, "ir": str(ov.xml), "precision": ov.precision,
                               "tolerance": dataclasses.asdict(tol), "images": rows})
    return 1 if failures else 0
