"""``d2ov export``: write a model's IR where a model server reads it (``--ovms DIR``: an OpenVINO
Model Server repository, see :mod:`d2ov_core.serve.ovms`)."""

from __future__ import annotations

from ..export.resolve import resolve_ir
from ..runtime.settings import precision
from ..serve.ovms import check_name, write_repository
from .common import add_precision_option


def register(sub) -> None:
    p = sub.add_parser("export", help="write an IR as a model-server repository (OpenVINO Model Server)")
    p.add_argument("model", help="catalog name (its bundled or cached IR) or an IR .xml/folder")
    p.add_argument(
        "--ovms",
        metavar="DIR",
        required=True,
        help="OVMS repository: DIR/<name>/1/model.xml|bin + DIR/config.json + DIR/README.md "
        "(other models already in DIR are kept)",
    )
    p.add_argument("--name", help="the model's name on the server (default: the last part of its model name)")
    add_precision_option(p, choices=("FP16", "FP32", "INT8"))
    p.add_argument("--nireq", type=int, default=2, help="OVMS inference requests in flight (default 2)")
    p.add_argument("--hint", choices=["LATENCY", "THROUGHPUT"], default="LATENCY", help="OpenVINO performance hint")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.name is not None:
        check_name(args.name)  # before finding (or converting) the IR
    xml = resolve_ir(args.model, precision(args.precision) if args.precision else None)
    name, text = write_repository(xml, args.ovms, name=args.name, nireq=args.nireq, hint=args.hint)
    print(f"exported {xml} to {args.ovms}/{name}/1/ (config: {args.ovms}/config.json)\n")
    print(text)
    return 0
