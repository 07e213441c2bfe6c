"""Which IR serves (model, precision)? One answer for the CLI, the app, ``bench`` and the Hub path.

An IR serves a catalog model only when it is *current*: made from the catalog's weights (their
sha256) and, where the catalog records one, its config file (sha256), not random, of the asked precision, by this converter's graph revision for the model's architecture
family (:data:`GRAPH_REVISIONS`, :func:`graph_revision`). Places looked at, in order:

  1. the IRs bundled with the package (``d2ov_core/data/ir/<name>/<precision>/model.xml``);
  2. the conversion cache (``$D2OV_CACHE/ir/<name>/<key>/``, newest first; leftovers of killed runs
     and folders whose files no longer match their ``d2ov.json`` are never returned).

Callers then fall back to the Hugging Face Hub (:mod:`d2ov_core.store.hub`, whose IRs pass
:func:`problem` too) and to a conversion (:func:`d2ov_core.export.resolve.resolve_ir`). An IR the user
names by path is theirs to choose and is only checked against its own ``d2ov.json``
(:func:`d2ov_core.store.cache.check_given_ir`).

Torch-free.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from pathlib import Path

from ..errors import D2ovError
from ..runtime.ir import read_metadata
from ..runtime.settings import IRMetadata
from . import cache
from .catalog import CATALOG, DATA_DIR, GRAPH_REVISIONS, get

__all__ = [
    "GRAPH_REVISIONS",
    "graph_revision",
    "IR_NAME",
    "BUNDLED_IR_DIR",
    "bundled_ir",
    "cached_ir_dir",
    "folder_name",
    "problem",
    "find_ir",
    "metadata",
]


def graph_revision(meta_architecture: str) -> int:
    """The current graph revision of an architecture family (``MODEL.META_ARCHITECTURE``)."""
    try:
        return GRAPH_REVISIONS[meta_architecture]
    except KeyError:
        raise D2ovError(
            f"no graph revision for architecture {meta_architecture!r}; d2ov converts {', '.join(GRAPH_REVISIONS)}"
        ) from None


log = logging.getLogger("d2ov")
IR_NAME = "model.xml"
BUNDLED_IR_DIR = DATA_DIR / "ir"


def bundled_ir(name: str, precision: str = "FP16") -> Path:
    """Where a pre-converted IR shipped with d2ov lives: ``data/ir/<name with __>/<precision>/model.xml``."""
    return BUNDLED_IR_DIR / name.replace("/", "__") / precision / IR_NAME


def folder_name(name: str) -> str:
    """``name`` (a catalog name like ``COCO-Detection/faster_rcnn_R_50_FPN_1x``) as one folder name
    of the cache: runs of anything but letters, digits, ``_ . -`` become ``__``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "__", name).strip("_.") or "model"


def cached_ir_dir(name: str) -> Path:
    """The cache folder of ``name``'s conversions (one subfolder per cache key)."""
    return cache.cache_dir() / "ir" / folder_name(name)


@functools.lru_cache(maxsize=256)
def _metadata(xml: str, mtime_ns: int) -> IRMetadata:
    return read_metadata(xml)


def metadata(xml: str | os.PathLike) -> IRMetadata:
    """``read_metadata`` remembered per (file, mtime): reading an IR takes ~50 ms and a server asks
    on every request (model cards). The record is frozen, so callers share it safely."""
    return _metadata(str(xml), os.stat(xml).st_mtime_ns)


def problem(xml: str | os.PathLike, name: str, precision: str) -> str | None:
    """Why the IR at ``xml`` must not serve model ``name`` at ``precision`` (``None``: it may). For a
    catalog model its weights must be the catalog's (sha256); for any model the IR must be of that
    model and precision, made from real weights by this converter's graph revision."""
    try:
        meta = metadata(xml)
    except D2ovError as e:
        return str(e)
    spec = CATALOG.get(name)
    if meta.model_name != name:
        return f"it is an IR of {meta.model_name}, not {name}"
    if meta.random_weights:
        return "it was converted with random weights (for tests and speed measurements only)"
    if meta.precision != precision:
        return f"its precision is {meta.precision}, not {precision}"
    current = GRAPH_REVISIONS.get(meta.meta_architecture)
    if current is None:
        return f"d2ov does not convert architecture {meta.meta_architecture!r}"
    if meta.graph_revision != current:
        return (
            f"it was made by an older converter ({meta.meta_architecture} graph revision {meta.graph_revision}, "
            f"current {current}); convert the model again"
        )
    if spec is not None and spec.weights_sha256 and meta.weights_sha256 != spec.weights_sha256:
        return f"its weights (sha256 {str(meta.weights_sha256)[:12]}...) are not the catalog's"
    if spec is not None and spec.config_sha256 and meta.config_sha256 != spec.config_sha256:
        return "it was converted from another version of the model's Detectron2 config"
    return None


def find_ir(name: str, precision: str = "FP16") -> Path | None:
    """The bundled or cached IR that serves catalog model ``name`` at ``precision``, or ``None``."""
    spec = get(name)
    shipped = bundled_ir(spec.name, precision)
    candidates = ([shipped] if shipped.is_file() else []) + cache.cached_irs(cached_ir_dir(spec.name))
    for xml in candidates:
        why = problem(xml, spec.name, precision)
        if why is None:
            return xml
        log.debug("not serving %s with %s: %s", spec.name, xml, why)
    return None
