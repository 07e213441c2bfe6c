"""What several commands share: option groups, argument types, resolving a model argument to a
predictor, writing JSON. Choices come from the settings table (:mod:`d2ov_core.runtime.settings`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..export.reference import ReferencePredictor
from ..export.resolve import given_ir, predictor_for
from ..runtime import settings as S
from ..runtime.images import IMAGE_SUFFIXES, image_files
from ..runtime.video import VIDEO_SUFFIXES
from ..store import catalog
from ..store.cache import write_atomic

__all__ = [
    "threshold_type",
    "static_shape_type",
    "add_model_options",
    "add_precision_option",
    "add_ir_options",
    "spec_from_args",
    "is_model_arg",
    "make_predictor",
    "expand_images",
    "write_json",
]


def threshold_type(text: str) -> float:
    try:
        return S.check_value("confidence_threshold", float(text))
    except (ValueError, InputError) as e:
        raise argparse.ArgumentTypeError(str(e) if isinstance(e, InputError) else f"not a number: {text!r}") from None


def static_shape_type(text: str) -> tuple[int, int]:
    """``HxW`` (multiples of 32) -> ``(H, W)``."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 800x1344, got {text!r}") from None
    if h < 32 or w < 32 or h % 32 or w % 32:
        raise argparse.ArgumentTypeError(f"static shape must be multiples of 32 (and >= 32), got {h}x{w}")
    return h, w


def add_model_options(
    p: argparse.ArgumentParser, weights_help: str = "weights: a path, a URL or 'random' (default: the catalog's)"
) -> None:
    p.add_argument("--weights", help=weights_help)
    p.add_argument("--classes", help="class names for a custom config: comma-separated or a .txt file")


def add_precision_option(p: argparse.ArgumentParser, choices=tuple(S.PRECISIONS), default: str | None = None) -> None:
    p.add_argument(
        "--precision",
        type=str.upper,
        choices=list(choices),
        default=default,
        help="; ".join(f"{S.PRECISIONS[c].name}: {S.PRECISIONS[c].description}" for c in choices)
        + f" (default {S.DEFAULT_PRECISION}; case-insensitive)",
    )


def add_ir_options(p: argparse.ArgumentParser) -> None:
    """Options of commands that run an IR: device, precision, static input shape."""
    p.add_argument("--device", default="CPU", help="OpenVINO device: CPU, GPU, AUTO, ... (default CPU)")
    add_precision_option(p)
    p.add_argument(
        "--static-shape",
        type=static_shape_type,
        metavar="HxW",
        help="reshape the IR to this fixed input (multiples of 32) and letterbox images into it",
    )


def spec_from_args(model: str, weights: str | None, classes: str | None) -> catalog.ModelSpec:
    """A catalog name, or a config file (+ ``--classes``, ``--weights``) for a user's own model
    (:func:`d2ov_core.store.catalog.spec_for`)."""
    return catalog.spec_for(model, weights, classes)


def is_ir_path(text: str) -> bool:
    return given_ir(text) is not None


def is_model_arg(text: str) -> bool:
    """Whether a positional argument names a model (catalog name, config, IR) rather than an image or
    a video."""
    suffix = Path(text).suffix.lower()
    return is_ir_path(text) or suffix not in IMAGE_SUFFIXES + VIDEO_SUFFIXES and not Path(text).is_dir()


def make_predictor(
    model: str,
    *,
    backend: str = "openvino",
    weights: str | None = None,
    classes: str | None = None,
    device: str = "CPU",
    precision: str | None = None,
    hint: str = "LATENCY",
    static_shape: tuple[int, int] | None = None,
    profile: bool = False,
    threads: int | None = None,
):
    """The predictor a command runs: Detectron2 eager (``backend="pytorch"``) or OpenVINO on the IR
    that serves ``model`` at ``precision`` (an IR path, a catalog name, or a config + weights)."""
    if backend == "pytorch":
        if is_ir_path(model):
            raise InputError("--backend pytorch needs a catalog name or a config file, not an IR")
        return ReferencePredictor(spec_from_args(model, weights, classes), weights=weights)
    p = S.precision(precision) if precision is not None else None  # parsed once, here at the edge
    target = model if is_ir_path(model) else spec_from_args(model, weights, classes)
    return predictor_for(
        target,
        p,
        weights=weights,
        device=device,
        hint=hint,
        threads=threads,
        static_shape=static_shape,
        profile=profile,
    )


def expand_images(items: list[str]) -> list[str]:
    """Image paths from files and folders (a folder's images by suffix, sorted); one-line errors."""
    out = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = [str(f) for f in image_files(p)]
            if not found:
                raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {item}")
            out += found
        elif not p.is_file():
            raise InputError(f"{'video' if Path(item).suffix.lower() in VIDEO_SUFFIXES else 'image'} not found: {item}")
        else:
            out.append(item)
    return out


def write_json(path: str, doc: dict[str, Any]) -> None:
    """Write ``doc`` to ``path`` atomically (a temporary name, then a rename)."""
    write_atomic(path, json.dumps(doc, indent=1).encode())
