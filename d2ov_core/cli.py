"""``d2ov`` command line (also ``python -m d2ov_core``).

Every :class:`~d2ov_core.errors.D2ovError` becomes one line on stderr and exit code 2; argparse
usage errors are exit code 2 too. ``verify`` exits 1 when the backends disagree past tolerance.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from . import __version__, catalog
from . import settings as S
from .errors import D2ovError, InputError

log = logging.getLogger("d2ov")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


# ----------------------------------------------------------------------------- helpers

def _threshold(text: str) -> float:
    try:
        return S.check_value("confidence_threshold", float(text))
    except (ValueError, InputError) as e:
        raise argparse.ArgumentTypeError(str(e) if isinstance(e, InputError) else f"not a number: {text!r}")


def _spec_from_args(model: str, args) -> catalog.ModelSpec:
    """A catalog name, or a config file (+ --classes, --weights) for a user's own model."""
    p = Path(model)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        if not getattr(args, "classes", None):
            raise InputError(f"{model}: a custom config needs --classes (comma-separated names or a .txt file)")
        if not args.weights:
            raise InputError(f"{model}: a custom config needs --weights (a path, a URL or 'random')")
        return catalog.custom(p, args.weights, _read_classes(args.classes))
    return catalog.get(model)


def _static_shape(text: str) -> tuple[int, int]:
    """``HxW`` (multiples of 32) -> ``(H, W)``."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 800x1344, got {text!r}") from None
    if h < 32 or w < 32 or h % 32 or w % 32:
        raise argparse.ArgumentTypeError(f"static shape must be multiples of 32 (and >= 32), got {h}x{w}")
    return h, w


def _read_classes(text: str) -> list[str]:
    p = Path(text)
    if p.suffix == ".txt" and p.is_file():
        names = [line.strip() for line in p.read_text().splitlines() if line.strip()]
    else:
        names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise InputError(f"--classes: expected comma-separated class names or a .txt file, got {text!r}")
    return names


def _is_model_arg(text: str) -> bool:
    p = Path(text)
    if p.suffix == ".xml" or (p.is_dir() and (p / "model.xml").is_file()):
        return True
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return False
    return True


def _make_predictor(model: str, args):
    if args.backend == "pytorch":
        from .reference import ReferencePredictor

        if Path(model).suffix == ".xml":
            raise InputError("--backend pytorch needs a catalog name or a config file, not an IR")
        return ReferencePredictor(_spec_from_args(model, args), weights=args.weights)
    from .convert import ensure_ir
    from .predictor import Predictor

    if Path(model).suffix == ".xml" or Path(model).is_dir():
        xml = ensure_ir(model)
    else:
        spec = _spec_from_args(model, args)
        if spec.source == "custom":
            from .convert import convert

            xml = convert(spec, weights=args.weights)
        else:
            xml = ensure_ir(spec.name, weights=args.weights, precision=getattr(args, "precision", None))
    return Predictor(xml, device=args.device, hint=getattr(args, "hint", "LATENCY"),
                     static_shape=getattr(args, "static_shape", None), profile=getattr(args, "profile_ops", False),
                     compute=getattr(args, "compute", "f32"))


# ----------------------------------------------------------------------------- commands

def cmd_list(args) -> int:
    specs = [catalog.CATALOG[n] for n in catalog.names(args.task)]
    if args.json:
        print(json.dumps([s.to_dict() for s in specs], indent=1))
        return 0
    width = max(len(s.name) for s in specs)
    print(f"{'name':<{width}}  {'task':<21}  box AP  mask AP  source")
    for s in specs:
        box = f"{s.box_ap:6.1f}" if s.box_ap is not None else "     -"
        mask = f"{s.mask_ap:7.1f}" if s.mask_ap is not None else "      -"
        print(f"{s.name:<{width}}  {s.task:<21}  {box}  {mask}  {s.source}")
    return 0


def cmd_convert(args) -> int:
    from .convert import convert

    spec = _spec_from_args(args.model, args)
    t0 = time.perf_counter()
    if args.precision == "INT8" and not args.calibration:
        raise InputError("--precision INT8 needs --calibration DIR (images of the model's domain)")
    if args.calibration and args.precision != "INT8":
        raise InputError("--calibration is for --precision INT8")
    if args.calibration_size < 1:
        raise InputError(f"--calibration-size must be at least 1, got {args.calibration_size}")
    xml = convert(spec, weights=args.weights, out=args.out, fp16=args.precision == "FP16" and not args.fp32,
                  sample=args.sample, calibration=args.calibration, calibration_size=args.calibration_size)
    size = sum(p.stat().st_size for p in xml.parent.glob("model.*"))
    print(f"{xml}  ({size / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s)")
    return 0


def _expand_images(items: list[str]) -> list[str]:
    out = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InputError(f"no images (.jpg, .png, ...) in folder {item}")
            out += found
        elif not p.is_file():
            raise InputError(f"image not found: {item}")
        else:
            out.append(item)
    return out


def _predict_one(predictor, img, threshold):
    from .images import load_image

    rgb = load_image(img)
    return rgb, predictor.predict(rgb, threshold=threshold)


def cmd_predict(args) -> int:
    items = list(args.inputs)
    if _is_model_arg(items[0]) and not Path(items[0]).is_dir() or Path(items[0], "model.xml").is_file():
        model, images = items[0], items[1:]
    else:
        model, images = catalog.DEFAULTS["instance_segmentation"], items
    if not images:
        raise InputError("no image given: d2ov predict [MODEL_OR_IR] IMAGE_OR_FOLDER...")
    images = _expand_images(images)  # fail fast on a bad path before loading a model
    predictor = _make_predictor(model, args)
    render_dir = Path(args.render) if args.render else None
    if render_dir:
        render_dir.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    if args.hint == "THROUGHPUT" and args.backend == "openvino" and len(images) > 1:
        # AsyncInferQueue: decoding/preprocessing overlaps with several requests in flight
        done = zip(images, predictor.predict_many(images, threshold=args.threshold))
    else:
        done = ((img, _predict_one(predictor, img, args.threshold)) for img in images)
    results = []
    for img, (rgb, det) in done:
        results.append({"image": str(img), **det.to_dict()})
        summary = ", ".join(f"{l} {s:.2f}" for l, s in zip(det.labels[:8], det.scores[:8]))
        more = f", +{len(det) - 8} more" if len(det) > 8 else ""
        print(f"{img}: {len(det)} detections in {det.timings['total']:.0f} ms" + (f" ({summary}{more})" if len(det) else ""))
        if render_dir:
            from PIL import Image

            from .render import render

            out = render_dir / (Path(img).stem + ".png")
            Image.fromarray(render(rgb, det, predictor.labels)).save(out)
            print(f"  rendered {out}")
    if len(images) > 1:
        wall = time.perf_counter() - t0
        print(f"{len(images)} images in {wall:.1f} s ({len(images) / wall:.2f} images/s, {args.hint.lower()} mode)")
    doc = {"model": predictor.describe(), "backend": args.backend, "device": args.device if args.backend == "openvino" else "cpu",
           "threshold": args.threshold if args.threshold is not None else S.SETTINGS["confidence_threshold"].default,
           "results": results}
    if args.json:
        _write_json(args.json, doc)
        print(f"wrote {args.json}")
    return 0


def cmd_verify(args) -> int:
    from .convert import ensure_ir
    from .predictor import Predictor
    from .reference import ReferencePredictor
    from .verify import Tolerance, match

    for img in args.images:
        if not Path(img).is_file():
            raise InputError(f"image not found: {img}")
    spec = _spec_from_args(args.model, args)
    tol = Tolerance(min_score=args.min_score, box_px=args.box_tol, score=args.score_tol, mask_iou=args.mask_iou)
    ref = ReferencePredictor(spec, weights=args.weights)
    if spec.source == "custom":
        from .convert import convert

        xml = convert(spec, weights=args.weights, fp16=not args.fp32)
    else:
        xml = ensure_ir(spec.name, weights=args.weights, fp16=not args.fp32)
    ov = Predictor(xml, device=args.device)
    from .images import load_image

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
        _write_json(args.json, {"model": spec.name, "ir": str(xml), "tolerance": vars(tol) if hasattr(tol, "__dict__") else {}, "images": rows})
    return 1 if failures else 0


def cmd_eval(args) -> int:
    from .evaluate import evaluate

    predictor = _make_predictor(args.model, args)
    res = evaluate(predictor, args.annotations, args.images, limit=args.limit, progress=not args.quiet)
    print(f"{predictor.name} [{args.backend}] on {res['images']} images ({res['detections']} detections, "
          f"median {res['per_image_ms']:.0f} ms/image)")
    for iou_type in ("bbox", "segm"):
        if iou_type in res:
            stats = "  ".join(f"{k} {v:5.2f}" for k, v in res[iou_type].items())
            print(f"  {iou_type:<4}  {stats}")
    if args.json:
        _write_json(args.json, {"model": predictor.describe(), "backend": args.backend, "annotations": str(args.annotations),
                                **res})
    return 0


def cmd_bench(args) -> int:
    from .bench import VARIANTS, markdown, run_bench
    from .convert import default_sample

    spec = catalog.get(args.model)
    images = args.images or [str(default_sample(spec))]
    for img in images:
        if not Path(img).is_file():
            raise InputError(f"image not found: {img}")
    unknown = [v for v in args.variants or [] if v not in VARIANTS]
    if unknown:
        raise InputError(f"unknown variant {unknown[0]!r}: expected {', '.join(VARIANTS)}")
    if args.calibration and not Path(args.calibration).is_dir():
        raise InputError(f"calibration folder not found: {args.calibration}")
    report = run_bench(spec.name, images, weights=args.weights, runs=args.runs, warmup=args.warmup,
                       threads=args.threads, variants=args.variants, out_dir=args.out,
                       calibration=args.calibration, static_shape=args.static_shape,
                       log=(lambda *_: None) if args.quiet else (lambda m: print(m, file=sys.stderr)))
    print(markdown(report))
    if args.out:
        print(f"wrote {args.out}/bench.md, bench.json, bench.png")
    return 0


def cmd_profile(args) -> int:
    from .convert import default_sample
    from .predictor import Predictor

    image = args.image
    if image is None:
        spec = catalog.get(args.model) if not Path(args.model).suffix == ".xml" and not Path(args.model).is_dir() else None
        image = str(default_sample(spec) if spec else default_sample(catalog.get(catalog.DEFAULTS["detection"])))
    if not Path(image).is_file():
        raise InputError(f"image not found: {image}")
    predictor = _make_predictor(args.model, args)
    if args.threads:
        predictor = Predictor(predictor.xml, device=args.device, threads=args.threads, static_shape=args.static_shape,
                              profile=True, compute=args.compute)
    predictor.predict(image, threshold=0.05)  # warm-up (first inference allocates)
    prof = predictor.profile(image, top=args.top)
    total = prof["ops_ms"]
    print(f"{predictor.name} on {Path(image).name}, input {prof['input_shape']}, {prof['detections']} raw detections")
    print("stages: " + ", ".join(f"{k} {v:.1f} ms" for k, v in prof["stages_ms"].items()))
    print(f"OpenVINO ops: {total:.1f} ms in all (sum of per-op real time)")
    print(f"  {'op type':<28} {'ms':>9} {'share':>6} {'ops':>5}")
    for kind, agg in list(prof["by_type"].items())[:20]:
        print(f"  {kind:<28} {agg['ms']:9.1f} {100 * agg['ms'] / max(total, 1e-9):5.1f}% {agg['count']:5d}")
    print(f"slowest ops:")
    for r in prof["slowest"]:
        print(f"  {r['ms']:8.2f} ms  {r['type']:<18} {r['exec_type']:<22} {r['name'][:70]}")
    if args.json:
        _write_json(args.json, {"model": predictor.describe(), "image": image, **prof})
    return 0


def cmd_push(args) -> int:
    from . import hub
    from .convert import ensure_ir

    xml = ensure_ir(args.model)
    sub = hub.push_ir(xml, args.repo_id, revision=args.revision, dry_run_dir=Path(args.dry_run) if args.dry_run else None)
    where = args.dry_run or f"https://huggingface.co/{args.repo_id}"
    print(f"pushed {xml.parent} to {where} as {sub}/")
    return 0


def cmd_serve(args) -> int:
    import runpy

    app = runpy.run_path(str(catalog.REPO_ROOT / "app.py"), run_name="d2ov_app")
    argv = ["--host", args.host, "--port", str(args.port)] + (["--share"] if args.share else [])
    app["main"](argv)
    return 0


def _write_json(path: str, doc: dict[str, Any]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, p)


# ----------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="d2ov", description="Detectron2 models on OpenVINO: convert, predict, verify.")
    parser.add_argument("--version", action="version", version=f"d2ov {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list the model catalog")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--task", choices=["detection", "instance_segmentation"])
    p.set_defaults(func=cmd_list)

    def ir_opts(p):
        p.add_argument("--precision", type=str.upper, choices=["FP16", "FP32", "INT8"], default=None,
                       help="which IR of a catalog model: FP16 (FP16-compressed weights, FP32 compute; default), "
                            "FP32 or INT8 (made by `d2ov convert --precision int8`)")
        p.add_argument("--static-shape", type=_static_shape, metavar="HxW",
                       help="reshape the IR to this fixed input (multiples of 32) and letterbox images into it")
        p.add_argument("--compute", type=str.lower, choices=["f32", "bf16"], default="f32",
                       help="CPU floating-point compute: f32 (default, exact) or bf16 (faster on CPUs with "
                            "native bfloat16, less exact)")

    def model_opts(p, weights_help="weights: a path, a URL or 'random' (default: the catalog's)"):
        p.add_argument("--weights", help=weights_help)
        p.add_argument("--classes", help="class names for a custom config: comma-separated or a .txt file")

    p = sub.add_parser("convert", help="convert a Detectron2 model to OpenVINO IR")
    p.add_argument("model", help="catalog name (see `d2ov list`) or a Detectron2 config .yaml")
    model_opts(p)
    p.add_argument("--out", help="output folder for model.xml/.bin (default: the cache)")
    p.add_argument("--precision", type=str.upper, choices=["FP16", "FP32", "INT8"], default="FP16",
                   help="FP16: FP16-compressed weights, FP32 compute (default); FP32; INT8: NNCF post-training "
                        "quantization on --calibration images (case-insensitive)")
    p.add_argument("--fp32", action="store_true", help="same as --precision FP32")
    p.add_argument("--calibration", help="folder of calibration images (of the model's domain) for --precision INT8")
    p.add_argument("--calibration-size", type=int, default=16, help="calibration images used (default 16)")
    p.add_argument("--sample", help="image to trace on (default: a bundled sample)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("predict", help="detect objects in images")
    p.add_argument("inputs", nargs="+", metavar="MODEL_OR_IR IMAGE",
                   help="a catalog name, an IR .xml or folder, then images (model optional: default "
                        f"{catalog.DEFAULTS['instance_segmentation']})")
    p.add_argument("--backend", choices=["openvino", "pytorch"], default="openvino")
    model_opts(p)
    p.add_argument("--device", default="CPU", help="OpenVINO device: CPU, GPU, AUTO, ... (default CPU)")
    p.add_argument("--hint", choices=["LATENCY", "THROUGHPUT"], default="LATENCY",
                   help="THROUGHPUT: several images in flight (AsyncInferQueue) for many images")
    ir_opts(p)
    thr = S.SETTINGS["confidence_threshold"]
    p.add_argument("--threshold", type=_threshold, default=None,
                   help=f"{thr.description} (default {thr.default}; 0.05 is frozen into the graph)")
    p.add_argument("--json", help="write results to this JSON file")
    p.add_argument("--render", help="write rendered images (PNG) into this folder")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("verify", help="compare PyTorch and OpenVINO on the same images")
    p.add_argument("model", help="catalog name or a Detectron2 config .yaml")
    p.add_argument("images", nargs="+")
    model_opts(p)
    p.add_argument("--device", default="CPU")
    p.add_argument("--fp32", action="store_true", help="verify an FP32 IR (default: FP16-compressed)")
    p.add_argument("--min-score", type=float, default=0.3, help="compare detections scoring at least this (0.3)")
    p.add_argument("--box-tol", type=float, default=0.5, help="max box deviation, px (0.5)")
    p.add_argument("--score-tol", type=float, default=1e-3, help="max score deviation (1e-3)")
    p.add_argument("--mask-iou", type=float, default=0.98, help="min mask IoU (0.98)")
    p.add_argument("--json", help="write the comparison to this JSON file")
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("eval", help="COCO box/mask AP over a COCO-format data set")
    p.add_argument("model", help="catalog name, IR .xml/folder (openvino) or config .yaml")
    p.add_argument("--annotations", required=True, help="COCO instances JSON")
    p.add_argument("--images", required=True, help="folder of the images named in the JSON")
    p.add_argument("--backend", choices=["openvino", "pytorch"], default="openvino")
    model_opts(p)
    p.add_argument("--device", default="CPU")
    p.add_argument("--limit", type=int, help="evaluate only the first N images")
    ir_opts(p)
    p.add_argument("--json", help="write the metrics to this JSON file")
    p.set_defaults(func=cmd_eval)

    from .bench import VARIANTS

    p = sub.add_parser("bench", help="Detectron2 eager vs OpenVINO variants, one run, same images and threads")
    p.add_argument("model", help="catalog name")
    p.add_argument("--weights", help="weights (e.g. 'random' for the Model Zoo architectures offline)")
    p.add_argument("--images", nargs="+", help="images to run on (default: the model's sample image)")
    p.add_argument("--runs", type=int, default=5, help="timed passes over the images (default 5)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, help="threads for every variant (default: all cores)")
    p.add_argument("--variants", nargs="+", default=None,
                   help=f"subset of {', '.join(VARIANTS)} (default: all; INT8 ones only with --calibration or a "
                        "shipped INT8 IR)")
    p.add_argument("--calibration", help="folder of calibration images for the INT8 variants")
    p.add_argument("--static-shape", type=_static_shape, metavar="HxW",
                   help="input of the static variants (default: the first image's resized size, padded to 32)")
    p.add_argument("--out", help="folder for bench.md, bench.json, bench.png")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("profile", help="where the time goes: OpenVINO per-op counters and the Python stages")
    p.add_argument("model", help="catalog name or an IR .xml/folder")
    p.add_argument("image", nargs="?", help="image (default: the model's sample image)")
    p.add_argument("--weights", help="weights (e.g. 'random')")
    p.add_argument("--device", default="CPU")
    p.add_argument("--threads", type=int, help="inference threads (default: OpenVINO's choice)")
    p.add_argument("--top", type=int, default=15, help="slowest single ops to list (15)")
    p.add_argument("--json", help="write the profile to this JSON file")
    ir_opts(p)
    p.set_defaults(func=cmd_profile, profile_ops=True, backend="openvino", classes=None)

    p = sub.add_parser("push", help="publish an IR to the Hugging Face Hub in the layout the app fetches")
    p.add_argument("model", help="catalog name (its cached IR) or an IR .xml/folder")
    p.add_argument("--repo-id", required=True, help="Hub repository, e.g. you/detectron2-openvino")
    p.add_argument("--revision", help="branch to push to (default: main)")
    p.add_argument("--dry-run", metavar="DIR", help="write the repository tree to DIR instead of uploading")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("serve", help="run the web app (same as python app.py)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="create a public gradio.live link")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.INFO, format="[d2ov] %(message)s")
    if hasattr(args, "device") and getattr(args, "backend", "openvino") == "openvino":
        from .runtime import _check_device

        try:
            _check_device(args.device)
        except D2ovError as e:
            print(f"d2ov: error: {e}", file=sys.stderr)
            return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `d2ov list | head`
        return 0
    except D2ovError as e:
        print(f"d2ov: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("d2ov: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
