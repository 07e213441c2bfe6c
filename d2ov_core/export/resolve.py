"""One way from a model to what runs it: ``model + precision -> IR -> Predictor``.

Used by the CLI, the app's model service, ``bench`` and the accuracy measure, so they agree on which
IR serves a model at a precision and on how it is compiled:

* ``model`` is an IR path (an ``.xml`` or a folder holding ``model.xml``; the user's choice, checked
  only against its own ``d2ov.json``), a catalog name, or a :class:`~d2ov_core.store.catalog.ModelSpec`
  (a catalog entry or a user's own config + weights), never turned back into a name;
* ``precision`` is a :class:`~d2ov_core.runtime.settings.Precision` (parse text once, at the edge, with
  :func:`~d2ov_core.runtime.settings.precision`): its ``ir`` picks the IR, its ``compute`` the CPU
  arithmetic;
* a catalog model's IR is the one :func:`d2ov_core.store.lookup.find_ir` says serves it (bundled, then
  the conversion cache), else a conversion (FP16/FP32 only: an INT8 IR needs calibration images).

Importing this module imports neither torch nor Detectron2 (the model service imports it on a Space);
only a conversion does.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConversionError, InputError
from ..runtime.ir import read_metadata
from ..runtime.predictor import Predictor
from ..runtime.settings import DEFAULT_PRECISION, PRECISIONS, Precision
from ..store import cache, catalog
from ..store.catalog import ModelSpec
from ..store.lookup import IR_NAME, find_ir
from ..store.weights import Progress
from .convert import convert

__all__ = ["given_ir", "resolve_ir", "open_predictor", "predictor_for"]

Model = str | os.PathLike | ModelSpec


def given_ir(model: Model) -> Path | None:
    """The IR file ``model`` names by path (an ``.xml``, or a folder holding ``model.xml``), else ``None``."""
    if isinstance(model, ModelSpec):
        return None
    p = Path(model)
    if p.suffix == ".xml":
        return p
    if p.is_dir() and (p / IR_NAME).is_file():
        return p / IR_NAME
    return None


def resolve_ir(
    model: Model, precision: Precision | None = None, *, weights: str | None = None, progress: Progress = True
) -> Path:
    """The IR that runs ``model`` at ``precision`` (see the module docstring).

    An IR given by path runs at its own precision when ``precision`` is ``None``; otherwise it must be
    that precision's IR (bf16 compute may run an FP16 or FP32 IR). ``weights`` other than the
    catalog's always convert (cached by their sha256)."""
    given = given_ir(model)
    if given is not None:
        xml = cache.check_given_ir(given)
        if precision is not None:
            have = read_metadata(xml).precision
            if precision.ir != have and not (precision.compute == "bf16" and have in ("FP16", "FP32")):
                raise InputError(f"{model} is an {have} IR; precision {precision.name} needs an {precision.ir} IR")
        return xml
    spec = model if isinstance(model, ModelSpec) else catalog.get(str(model))
    precision = precision or PRECISIONS[DEFAULT_PRECISION]
    if weights is None and spec.source != "custom":
        found = find_ir(spec.name, precision.ir)
        if found is not None:
            return found
    if precision.ir == "INT8":
        raise ConversionError(
            f"no INT8 IR of {spec.name} yet: make one with `d2ov convert {spec.name} "
            "--precision INT8 --calibration DIR` (DIR: images of the model's domain)"
        )

    return convert(spec, weights=weights, fp16=precision.ir == "FP16", progress=progress)


def open_predictor(
    xml: str | os.PathLike,
    precision: Precision | None = None,
    *,
    device: str = "CPU",
    hint: str = "LATENCY",
    threads: int | None = None,
    static_shape: tuple[int, int] | None = None,
    profile: bool = False,
) -> Predictor:
    """The :class:`~d2ov_core.runtime.predictor.Predictor` of an IR at ``precision``'s compute (bf16
    needs a CPU with native bfloat16: :class:`~d2ov_core.errors.DeviceError` otherwise)."""
    compute = precision.compute if precision is not None else "f32"
    return Predictor(
        xml, device=str(device), hint=hint, threads=threads, static_shape=static_shape, profile=profile, compute=compute
    )


def predictor_for(
    model: Model,
    precision: Precision | None = None,
    *,
    weights: str | None = None,
    progress: Progress = True,
    **options,
) -> Predictor:
    """:func:`resolve_ir` then :func:`open_predictor` (``options``: device, hint, threads, static_shape,
    profile)."""
    return open_predictor(resolve_ir(model, precision, weights=weights, progress=progress), precision, **options)
