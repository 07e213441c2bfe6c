"""``d2ov eval``: COCO box/mask/keypoint AP of a model over a COCO-format data set."""

from __future__ import annotations

from ..measure.evaluate import evaluate, task_measure, task_measures
from .common import add_ir_options, add_model_options, make_predictor, write_json


def register(sub) -> None:
    measures = task_measures()
    own = "".join(f" (and {m.title})" for m in measures)
    p = sub.add_parser("eval", help=f"COCO box/mask/keypoint AP{own} over a COCO-format data set")
    p.add_argument("model", help="catalog name, IR .xml/folder (openvino) or config .yaml")
    p.add_argument("--annotations", required=True, help="COCO instances JSON")
    p.add_argument("--images", required=True, help="folder of the images named in the JSON")
    for m in measures:  # a task's own measure: its annotation inputs
        for name, text in m.options.items():
            p.add_argument("--" + name.replace("_", "-"), help=text)
    p.add_argument("--backend", choices=["openvino", "pytorch"], default="openvino")
    add_model_options(p)
    add_ir_options(p)
    p.add_argument("--limit", type=int, help="evaluate only the first N images")
    p.add_argument("--json", help="write the metrics to this JSON file")
    p.set_defaults(func=run)


def run(args) -> int:
    predictor = make_predictor(
        args.model,
        backend=args.backend,
        weights=args.weights,
        classes=args.classes,
        device=args.device,
        precision=args.precision,
        static_shape=args.static_shape,
    )
    res = evaluate(
        predictor,
        args.annotations,
        args.images,
        limit=args.limit,
        progress=not args.quiet,
        task_annotations={k: getattr(args, k) for m in task_measures() for k in m.options},
    )
    where = args.backend if args.backend == "pytorch" else f"openvino {predictor.precision}"
    print(
        f"{predictor.name} [{where}] on {res['images']} images ({res['detections']} detections, "
        f"median {res['per_image_ms']:.0f} ms/image)"
    )
    for iou_type in ("bbox", "segm", "keypoints"):
        if iou_type in res:
            stats = "  ".join(f"{k} {v:5.2f}" for k, v in res[iou_type].items())
            print(f"  {iou_type:<9}  {stats}")
    own = task_measure(predictor.task)
    if own is not None and own.key in res:
        print("\n".join(own.lines(res[own.key])))
    if args.json:
        write_json(
            args.json,
            {"model": predictor.describe(), "backend": args.backend, "annotations": str(args.annotations), **res},
        )
    return 0
