"""``d2ov space``: build the Hugging Face Space folder, with your models in it, and upload it (or
only write it).

    d2ov space --repo-id YOU/SPACE --model MODEL [--model MODEL ...] [--weights W] [--classes a,b,c]
               [--precision FP16,INT8 --calibration DIR] [--examples DIR_OR_FILES ...] [--title T] [--only]
               [--ir-repo YOU/IRS] [--dry-run DIR]

Each MODEL (a catalog name, a Detectron2 config with ``--weights``/``--classes``, or a d2ov IR folder) is
converted here, on this machine (the conversion cache is reused), and its IRs go into the Space; the
Space opens on the first one.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..measure.accuracy import AccuracyCheck
from ..measure.proof import MAX_IMAGES, proof_text
from ..runtime import settings as S
from ..runtime.images import image_files
from ..runtime.ir import read_metadata
from ..serve.space import DEFAULT_TITLE, MAX_FILE_MB, build_space, collect_models, publish_space
from .common import expand_images


def _precisions(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(p.strip().upper() for p in text.split(",") if p.strip()))
    bad = [p for p in names if p not in S.IR_PRECISIONS]
    if not names or bad:
        raise InputError(f"--precision: a comma list of {', '.join(S.IR_PRECISIONS)}, got {text!r}")
    return names


def register(sub) -> None:
    p = sub.add_parser(
        "space", help="publish the web app, with your models, as a Hugging Face Space (or write its folder)"
    )
    p.add_argument("--repo-id", help="the Space, USER/NAME (needs a Hub token: `hf auth login` or HF_TOKEN)")
    p.add_argument("--private", action="store_true", help="create the Space as private")
    p.add_argument("--dry-run", metavar="DIR", help="write the Space folder to DIR (new or empty) and upload nothing")
    g = p.add_argument_group("models", "what the Space holds and opens on (default: the bundled demo models)")
    g.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="MODEL",
        help="a catalog name (`d2ov list`), a Detectron2 config .yaml (with --weights and --classes) or "
        "a d2ov IR folder; repeat for more; the Space opens on the first",
    )
    g.add_argument(
        "--weights",
        action="append",
        default=[],
        help="weights of the --model in the same place (the first --weights goes with the first --model): "
        "a path, a URL or 'random'",
    )
    g.add_argument(
        "--classes",
        action="append",
        default=[],
        help="class names of the --model in the same place: comma-separated or a .txt file",
    )
    g.add_argument(
        "--precision",
        default="FP16",
        help="IR precisions, a comma list of FP16, FP32, INT8 (default FP16; INT8 needs --calibration)",
    )
    g.add_argument("--calibration", help="folder of calibration images (of the model's domain) for INT8")
    g.add_argument(
        "--annotations",
        help="COCO instances JSON of a validation set: AP measured at conversion, "
        "shown on the page (INT8: kept within 1 AP of the float model)",
    )
    g.add_argument(
        "--images",
        help="folder of that set's images (also the images each model is checked against "
        "Detectron2 on, the first 12; else the --examples)",
    )
    g.add_argument(
        "--examples",
        nargs="+",
        metavar="DIR_OR_FILE",
        help="your example images (folders or files), shown on the page; copied at most 1600 px on the long side",
    )
    g.add_argument("--title", help="the page's and the Space's title")
    g.add_argument("--only", action="store_true", help="leave the bundled demo models out")
    g.add_argument(
        "--ir-repo",
        metavar="USER/NAME",
        help="push the catalog models' IRs to this model repository (`d2ov push`) instead of the Space, "
        "and set the Space's D2OV_HUB_REPO / D2OV_HUB_REVISION (the pushed commit)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    if not args.dry_run and not args.repo_id:
        raise InputError("give --repo-id USER/NAME to publish, or --dry-run DIR to only write the folder")
    if args.dry_run and args.ir_repo:
        raise InputError("--ir-repo uploads: it goes with --repo-id, not --dry-run")
    if bool(args.annotations) != bool(args.images):
        raise InputError("--annotations and --images go together (a COCO JSON and its images folder)")
    if args.only and not args.model:
        raise InputError("--only leaves the demo models out: name at least one --model")
    for flag in ("weights", "classes", "precision", "calibration", "annotations", "examples", "ir_repo"):
        if getattr(args, flag) not in (None, [], "FP16") and not args.model:
            raise InputError(f"--{flag.replace('_', '-')} is about your models: give --model MODEL")
    if args.ir_repo and all(Path(m).suffix in (".yaml", ".yml", ".xml") or Path(m).is_dir() for m in args.model):
        raise InputError(
            "--ir-repo holds catalog models' IRs: none of the --model is one (configs and IR "
            "folders go into the Space itself)"
        )
    precisions = _precisions(args.precision)
    if args.calibration and "INT8" not in precisions:
        raise InputError("--calibration is for --precision INT8")
    examples = [Path(p) for p in expand_images(args.examples)] if args.examples else []
    if args.dry_run:  # the folder must be new before minutes of conversion go into it
        out = Path(args.dry_run)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise InputError(f"{out} exists and is not an empty folder: give a new folder for the Space")
    measure = None
    if args.annotations:
        measure = AccuracyCheck(
            args.annotations, args.images, max_drop=1.0 if "INT8" in precisions else None, progress=not args.quiet
        )
    # the proof that travels with the models: d2ov verify on the validation images, else on the examples
    # (the set's images may sit in sub-folders, as COCO file names like "val/0001.jpg" say: as d2ov convert)
    proof_images = (
        [str(p) for p in image_files(args.images, recursive=True)] if args.images else [str(p) for p in examples]
    )[:MAX_IMAGES]
    models = collect_models(
        args.model,
        weights=args.weights,
        classes=args.classes,
        precisions=precisions,
        calibration=args.calibration,
        measure=measure,
        progress=not args.quiet,
        proof_images=[Path(p) for p in proof_images],
    )
    build = dict(title=args.title or DEFAULT_TITLE, models=models, examples=examples, only=args.only)
    for m in models:
        for p, v in m.proof.items():
            print(f"{m.name} {p}: {proof_text(v)}")
        for p, xml in m.irs.items() if not m.proof else ():
            earlier = read_metadata(xml).verification  # an IR folder may carry its check from `d2ov convert`
            said = (
                proof_text(earlier) + " (recorded at conversion)"
                if earlier
                else "not checked against Detectron2 (give --examples or --images to record the check; an IR folder "
                "is used as it is)"
            )
            print(f"{m.name} {p}: {said}")
    if args.dry_run:
        folder = build_space(args.dry_run, progress=not args.quiet, **build)
        files = [p for p in folder.rglob("*") if p.is_file()]
        size = sum(p.stat().st_size for p in files)
        other = max(p.stat().st_size for p in files if p.name != "model.bin")
        held = f"; opens on {models[0].name}" if models else ""
        print(
            f"wrote the Space folder {folder}: {len(files)} files, {size / 1e6:.1f} MB "
            f"(largest besides the IRs' model.bin {other / 1e6:.1f} MB, limit {MAX_FILE_MB} MB){held}"
        )
        return 0
    url = publish_space(args.repo_id, private=args.private, progress=not args.quiet, ir_repo=args.ir_repo, **build)
    print(f"published {url} (the Space builds and starts on its own; its logs are on the Space's page)")
    return 0
