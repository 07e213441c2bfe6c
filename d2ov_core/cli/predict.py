"""``d2ov predict``: detect objects in images (OpenVINO, or Detectron2 eager as the reference)."""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import InputError
from ..runtime import settings as S
from ..runtime.detections import predictions_document
from ..store import catalog
from .common import add_ir_options, add_model_options, expand_images, is_model_arg, make_predictor, threshold_type, \
    write_json


def register(sub) -> None:
    p = sub.add_parser("predict", help="detect objects in images")
    p.add_argument("inputs", nargs="+", metavar="MODEL_OR_IR IMAGE",
                   help="a catalog name, an IR .xml or folder, then images or folders (model optional: default "
                        f"{catalog.DEFAULTS['instance_segmentation']})")
    p.add_argument("--backend", choices=["openvino", "pytorch"], default="openvino")
    add_model_options(p)
    add_ir_options(p)
    p.add_argument("--hint", choices=["LATENCY", "THROUGHPUT"], default="LATENCY",
                   help="THROUGHPUT: several images in flight (AsyncInferQueue) for many images")
    thr = S.SETTINGS["confidence_threshold"]
    p.add_argument("--threshold", type=threshold_type, default=None,
                   help=f"{thr.description} (default {thr.default}; 0.05 is frozen into the graph)")
    p.add_argument("--json", help="write results to this JSON file")
    p.add_argument("--render", help="write rendered images (PNG) into this folder")
    p.set_defaults(func=run)


def run(args) -> int:
    items = list(args.inputs)
    if is_model_arg(items[0]):
        model, images = items[0], items[1:]
    else:
        model, images = catalog.DEFAULTS["instance_segmentation"], items
    if not images:
        raise InputError("no image given: d2ov predict [MODEL_OR_IR] IMAGE_OR_FOLDER...")
    images = expand_images(images)  # fail fast on a bad path before loading a model
    predictor = make_predictor(model, backend=args.backend, weights=args.weights, classes=args.classes,
                               device=args.device, precision=args.precision, hint=args.hint,
                               static_shape=args.static_shape)
    render_dir = Path(args.render) if args.render else None
    if render_dir:
        render_dir.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    if args.hint == "THROUGHPUT" and args.backend == "openvino" and len(images) > 1:
        # AsyncInferQueue: decoding/preprocessing overlaps with several requests in flight
        done = zip(images, predictor.predict_many(images, threshold=args.threshold))
    else:
        done = ((img, predictor.predict_image(img, threshold=args.threshold)) for img in images)
    results = []
    for img, (rgb, det) in done:
        results.append({"image": str(img), **det.to_dict()})
        summary = ", ".join(f"{l} {s:.2f}" for l, s in zip(det.labels[:8], det.scores[:8]))
        more = f", +{len(det) - 8} more" if len(det) > 8 else ""
        print(f"{img}: {len(det)} detections in {det.timings['total']:.0f} ms" + (f" ({summary}{more})" if len(det) else ""))
        if render_dir:
            from PIL import Image

            from ..serve.render import render

            out = render_dir / (Path(img).stem + ".png")
            Image.fromarray(render(rgb, det, predictor.labels)).save(out)
            print(f"  rendered {out}")
    if len(images) > 1:
        wall = time.perf_counter() - t0
        print(f"{len(images)} images in {wall:.1f} s ({len(images) / wall:.2f} images/s, {args.hint.lower()} mode)")
    if args.json:
        threshold = args.threshold if args.threshold is not None else S.SETTINGS["confidence_threshold"].default
        device = args.device if args.backend == "openvino" else "cpu"
        write_json(args.json, predictions_document(predictor.describe(), args.backend, device, threshold, results))
        print(f"wrote {args.json}")
    return 0
