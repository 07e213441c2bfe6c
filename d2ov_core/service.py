"""Models for a long-running server (the Gradio app): where each model's IR comes from, its state,
and one shared predictor per (model, device, precision).

An IR of a given precision (``FP16``: FP16-compressed weights, FP32 compute, the default; ``FP32``;
``INT8``: NNCF-quantized) is looked for, in order: the bundled IRs in ``models/ir/<name>/<precision>/``,
IRs dropped into the models folder (any ``model.xml`` with d2ov metadata; ``D2OV_MODELS_DIR``,
default the repo's ``models/``), the local conversion cache, the Hugging Face Hub
(:mod:`d2ov_core.hub`), and last (FP16/FP32 only) a weights download + conversion. Preparation runs in
a background thread, so a server comes up at once and reports ``preparing`` / ``ready`` /
``unavailable`` per (model, precision).

Untrusted callers (a public web app) can only name models, never paths: a name is a catalog name
or one of the local IRs found at start, anything else is an unknown model. Local IRs whose files do
not match their ``d2ov.json`` are listed as rejected, with the reason. At most
``D2OV_MAX_PREDICTORS`` (default 4) compiled models are kept (least recently used dropped first),
and at most one conversion runs at a time.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable

from . import cache, catalog, runtime
from .convert import BUNDLED_IR_DIR, bundled_ir, cached_ir_dir
from .errors import D2ovError, InputError, IRError, ModelNotFoundError

__all__ = ["PRECISIONS", "DEFAULT_PRECISION", "ModelState", "ModelService", "find_local_irs", "bundled_ir",
           "models_dir", "metadata", "check_precision"]

log = logging.getLogger("d2ov")
PRECISIONS = ("FP16", "FP32", "INT8")
DEFAULT_PRECISION = "FP16"


def models_dir() -> Path:
    """Folder scanned for IRs you drop in: ``$D2OV_MODELS_DIR`` or the repo's ``models/``."""
    return Path(os.environ.get("D2OV_MODELS_DIR") or catalog.REPO_ROOT / "models")


@functools.lru_cache(maxsize=256)
def _metadata(xml: str, mtime_ns: int) -> dict[str, Any]:
    return runtime.read_metadata(xml)


def metadata(xml: str | os.PathLike) -> dict[str, Any]:
    """``runtime.read_metadata`` remembered per (file, mtime): reading an IR takes ~50 ms and a
    server asks on every request (model cards). Do not modify the returned dict."""
    return _metadata(str(xml), os.stat(xml).st_mtime_ns)


def check_precision(precision: Any) -> str:
    p = str(precision or DEFAULT_PRECISION).upper()
    if p not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    return p


def find_local_irs(root: Path | None = None) -> tuple[dict[str, dict[str, Path]], dict[str, str]]:
    """d2ov IRs under ``root`` that are not bundled demo IRs.

    Returns ``({name: {precision: xml}}, {name: why an IR of it was rejected})``. The name is
    ``local/<folder>``, where a trailing precision folder (``.../FP16/model.xml``) is not part of it,
    so one model's FP16 and INT8 IRs are one name. Hidden folders (leftovers) are skipped.
    """
    root = Path(root) if root is not None else models_dir()
    found: dict[str, dict[str, Path]] = {}
    rejected: dict[str, str] = {}
    if not root.is_dir():
        return found, rejected
    for xml in sorted(root.rglob("model.xml")):
        rel = xml.relative_to(root)
        if BUNDLED_IR_DIR in xml.parents or any(part.startswith(".") for part in rel.parts):
            continue
        folder = xml.parent
        named = folder.parent if folder.name in PRECISIONS else folder
        name = "local/" + (named.relative_to(root).as_posix() if named != root else root.name)
        problem = cache.ir_problem(folder) if (folder / "d2ov.json").is_file() else None
        if problem is None:
            try:
                meta = metadata(xml)
            except D2ovError as e:
                problem = str(e)
        if problem is not None:
            log.warning("local IR %s not offered: %s", xml, problem)
            rejected[name] = f"{xml.relative_to(root)}: {problem}"
            continue
        found.setdefault(name, {})[meta["precision"]] = xml
    return found, rejected


@dataclasses.dataclass
class ModelState:
    name: str
    precision: str = DEFAULT_PRECISION
    status: str = "not prepared"  # not prepared | preparing | ready | unavailable
    detail: str = ""
    xml: Path | None = None


class ModelService:
    """Thread-safe registry of model states and compiled predictors.

    Args:
        use_hub: look for pre-converted IRs on the Hugging Face Hub.
        convert_fallback: download the Detectron2 weights and convert when nothing else has the IR.
        models_root: folder of dropped-in IRs (default :func:`models_dir`).
        max_predictors: compiled models kept in memory (least recently used dropped first).
    """

    def __init__(self, use_hub: bool = True, convert_fallback: bool = True, models_root: Path | None = None,
                 max_predictors: int | None = None):
        self.use_hub = use_hub
        self.convert_fallback = convert_fallback
        self.max_predictors = max(1, int(max_predictors or os.environ.get("D2OV_MAX_PREDICTORS", 4)))
        self._lock = threading.RLock()
        self._states: dict[tuple[str, str], ModelState] = {}
        self._predictors: collections.OrderedDict[tuple[str, str, str], Any] = collections.OrderedDict()
        self._compile_locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._threads: dict[tuple[str, str], threading.Thread] = {}
        self._convert_slot = threading.Semaphore(1)
        self._local, self._rejected = find_local_irs(models_root)
        cache.sweep()  # what killed runs left in the cache (never used, removed with a warning)

    # -------------------------------------------------------------- names
    def models(self, task: str | None = None) -> list[str]:
        names = list(catalog.names(task))
        for name, irs in self._local.items():
            meta = metadata(next(iter(irs.values())))
            if task is None or meta["task"] == task:
                names.append(name)
        return names

    def canonical(self, name: Any) -> str:
        """The catalog or local name ``name`` stands for; :class:`ModelNotFoundError` for anything else."""
        if not isinstance(name, str) or not name:
            raise ModelNotFoundError(f"expected a model name, got {name!r}")
        if name in self._local:
            return name
        if name in self._rejected:
            raise IRError(f"{name} is not usable: {self._rejected[name]}")
        return catalog.get(name).name

    def spec_info(self, name: str) -> dict[str, Any]:
        name = self.canonical(name)
        if name in self._local:
            irs = self._local[name]
            meta = metadata(next(iter(irs.values())))
            return {"name": name, "task": meta["task"], "classes": meta["labels"], "box_ap": None, "mask_ap": None,
                    "source": "local IR", "description": f"IR found at {', '.join(str(x) for x in irs.values())}"}
        return catalog.get(name).to_dict()

    def precisions(self, name: str) -> list[str]:
        """Precisions whose IR is on this machine now (bundled, dropped in, or cached)."""
        name = self.canonical(name)
        if name in self._local:
            return [p for p in PRECISIONS if p in self._local[name]]
        return [p for p in PRECISIONS if self._find_ready(name, p) is not None]

    # -------------------------------------------------------------- states
    def state(self, name: str, precision: str = DEFAULT_PRECISION) -> ModelState:
        name, precision = self.canonical(name), check_precision(precision)
        key = (name, precision)
        with self._lock:
            if key not in self._states:
                xml = self._find_ready(name, precision)
                self._states[key] = ModelState(name, precision, "ready" if xml else "not prepared", "", xml)
            return dataclasses.replace(self._states[key])

    def _find_ready(self, name: str, precision: str) -> Path | None:
        if name in self._local:
            xml = self._local[name].get(precision)
            if xml is None:
                have = ", ".join(self._local[name])
                raise ModelNotFoundError(f"{precision} is not available for {name}: its IRs are {have}")
            return xml
        b = bundled_ir(name, precision)
        if b.is_file():
            return b
        for xml in cache.cached_irs(cached_ir_dir(name)):  # sha256-checked, never a leftover
            try:
                meta = metadata(xml)
            except D2ovError:
                continue
            if not meta["random_weights"] and meta["precision"] == precision:
                return xml
        return None

    def _set(self, name: str, precision: str, status: str, detail: str = "", xml: Path | None = None) -> None:
        with self._lock:
            self._states[(name, precision)] = ModelState(name, precision, status, detail, xml)

    # -------------------------------------------------------------- preparation
    def prepare(self, name: str, precision: str = DEFAULT_PRECISION, on_done: Callable[[ModelState], None] | None = None,
                wait: bool = False) -> ModelState:
        """Make (``name``, ``precision``) ready in a background thread (at most one per pair); an
        unavailable one is tried again (the network may be back)."""
        st = self.state(name, precision)
        key = (st.name, st.precision)
        if st.status in ("ready", "preparing"):
            if wait and st.status == "preparing" and key in self._threads:
                self._threads[key].join()
                return self.state(*key)
            return st
        with self._lock:
            if self._states[key].status in ("ready", "preparing"):  # another thread got here first
                return dataclasses.replace(self._states[key])
            self._states[key] = ModelState(*key, "preparing", "looking for a pre-converted IR")
            t = threading.Thread(target=self._prepare, args=(*key, on_done), daemon=True, name=f"prepare {key}")
            self._threads[key] = t
            t.start()
        if wait:
            t.join()
        return self.state(*key)

    def _prepare(self, name: str, precision: str, on_done) -> None:
        errors = []
        xml = None
        if self.use_hub:
            from . import hub

            self._set(name, precision, "preparing", "fetching the pre-converted IR from the Hugging Face Hub")
            try:
                xml = hub.fetch_ir(name, precision)
            except D2ovError as e:
                errors.append(str(e))
        if xml is None and precision == "INT8":
            errors.append(f"no INT8 IR of {name} here (bundled, cache{' or Hub' if self.use_hub else ''}); make one with "
                          f"`d2ov convert {name} --precision int8 --calibration DIR`")
        elif xml is None and self.convert_fallback:
            self._set(name, precision, "preparing", "waiting for another conversion to finish")
            with self._convert_slot:  # one conversion at a time: each takes GBs and all cores
                self._set(name, precision, "preparing", "downloading the Detectron2 weights and converting (minutes)")
                try:
                    from .convert import convert

                    xml = convert(name, fp16=precision == "FP16", progress=False)
                except D2ovError as e:
                    errors.append(str(e))
                except Exception as e:  # keep the server alive whatever conversion does
                    errors.append(f"conversion failed: {type(e).__name__}: {e}")
        if xml is not None:
            self._set(name, precision, "ready", "", xml)
        else:
            self._set(name, precision, "unavailable", "; ".join(errors) or "no source for this model")
        log.info("model %s %s: %s", name, precision, self.state(name, precision).status)
        if on_done:
            on_done(self.state(name, precision))

    # -------------------------------------------------------------- predictors
    def predictor(self, name: str, device: str = "CPU", precision: str = DEFAULT_PRECISION):
        """The shared predictor of a ready model (raises a D2ovError saying why if not ready)."""
        st = self.state(name, precision)
        if st.status == "not prepared":
            st = self.prepare(st.name, st.precision)
        if st.status == "preparing":
            raise ModelNotFoundError(f"{st.name} ({st.precision}) is being prepared ({st.detail}); try again in a moment")
        if st.status == "unavailable":
            raise ModelNotFoundError(f"{st.name} ({st.precision}) is unavailable: {st.detail}")
        key = (st.name, str(device), st.precision)
        with self._lock:
            if key in self._predictors:
                self._predictors.move_to_end(key)
                return self._predictors[key]
            compile_lock = self._compile_locks.setdefault(key, threading.Lock())
        with compile_lock:  # one compilation per key; other models keep serving meanwhile
            with self._lock:
                if key in self._predictors:
                    return self._predictors[key]
            from .predictor import Predictor

            pred = Predictor(st.xml, device=str(device))
            with self._lock:
                self._predictors[key] = pred
                while len(self._predictors) > self.max_predictors:
                    old, _ = self._predictors.popitem(last=False)
                    log.info("dropped compiled model %s (keeping %d)", old, self.max_predictors)
            return pred
