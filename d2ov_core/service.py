"""Models for a long-running server (the Gradio app): where each model's IR comes from, its state,
and one shared predictor per (model, device, precision).

An IR is looked for, in order: the bundled IRs in ``models/ir/``, IRs dropped into ``models/``
(any ``model.xml`` with d2ov metadata), the local conversion cache, the Hugging Face Hub
(:mod:`d2ov_core.hub`), and last a weights download + conversion. Preparation runs in a background
thread, so a server comes up at once and reports ``preparing`` / ``ready`` / ``unavailable`` per model.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path
from typing import Any, Callable

from . import catalog, runtime
from .convert import BUNDLED_IR_DIR, bundled_ir, cached_ir_dir
from .errors import D2ovError, ModelNotFoundError

__all__ = ["ModelState", "ModelService", "find_local_irs", "bundled_ir"]

log = logging.getLogger("d2ov")
MODELS_DIR = catalog.REPO_ROOT / "models"


def find_local_irs(root: Path = MODELS_DIR) -> dict[str, Path]:
    """``{display name: xml}`` of d2ov IRs under ``root`` that are not bundled demo IRs."""
    found: dict[str, Path] = {}
    if not root.is_dir():
        return found
    for xml in sorted(root.rglob("model.xml")):
        if BUNDLED_IR_DIR in xml.parents:
            continue
        try:
            meta = runtime.read_metadata(xml)
        except D2ovError:
            continue
        found[f"local/{xml.parent.relative_to(root)}"] = xml
        log.debug("found local IR %s (%s)", xml, meta["model_name"])
    return found


@dataclasses.dataclass
class ModelState:
    name: str
    status: str = "not prepared"  # not prepared | preparing | ready | unavailable
    detail: str = ""
    xml: Path | None = None


class ModelService:
    """Thread-safe registry of model states and compiled predictors."""

    def __init__(self, use_hub: bool = True, convert_fallback: bool = True):
        self.use_hub = use_hub
        self.convert_fallback = convert_fallback
        self._lock = threading.RLock()
        self._states: dict[str, ModelState] = {}
        self._predictors: dict[tuple[str, str, str], Any] = {}
        self._local = find_local_irs()
        self._threads: dict[str, threading.Thread] = {}

    # -------------------------------------------------------------- listing
    def models(self, task: str | None = None) -> list[str]:
        names = [n for n in catalog.names(task)]
        for name, xml in self._local.items():
            try:
                if task is None or runtime.read_metadata(xml)["task"] == task:
                    names.append(name)
            except D2ovError:
                pass
        return names

    def spec_info(self, name: str) -> dict[str, Any]:
        if name in self._local:
            meta = runtime.read_metadata(self._local[name])
            return {"name": name, "task": meta["task"], "classes": meta["labels"], "box_ap": None, "mask_ap": None,
                    "source": "local IR", "description": f"IR found at {self._local[name]}"}
        spec = catalog.get(name)
        return spec.to_dict()

    def state(self, name: str) -> ModelState:
        with self._lock:
            if name not in self._states:
                self._states[name] = ModelState(name)
                xml = self._find_ready(name)
                if xml is not None:
                    self._states[name] = ModelState(name, "ready", "", xml)
            return dataclasses.replace(self._states[name])

    # -------------------------------------------------------------- preparation
    def _find_ready(self, name: str) -> Path | None:
        if name in self._local:
            return self._local[name]
        if name not in catalog.CATALOG:
            raise ModelNotFoundError(f"unknown model {name!r}")
        b = bundled_ir(name)
        if b.is_file():
            return b
        for xml in sorted(cached_ir_dir(name).glob("*/model.xml"), key=lambda p: p.stat().st_mtime, reverse=True):
            try:
                if not runtime.read_metadata(xml)["random_weights"]:
                    return xml
            except D2ovError:
                continue
        return None

    def prepare(self, name: str, on_done: Callable[[ModelState], None] | None = None, wait: bool = False) -> ModelState:
        """Make ``name`` ready in a background thread (at most one per model)."""
        st = self.state(name)
        if st.status in ("ready", "preparing"):
            if wait and name in self._threads:
                self._threads[name].join()
                return self.state(name)
            return st
        with self._lock:
            self._states[name] = ModelState(name, "preparing", "looking for a pre-converted IR")
            t = threading.Thread(target=self._prepare, args=(name, on_done), daemon=True, name=f"prepare {name}")
            self._threads[name] = t
            t.start()
        if wait:
            t.join()
        return self.state(name)

    def _set(self, name: str, status: str, detail: str = "", xml: Path | None = None) -> None:
        with self._lock:
            self._states[name] = ModelState(name, status, detail, xml)

    def _prepare(self, name: str, on_done) -> None:
        errors = []
        xml = None
        if self.use_hub:
            from . import hub

            self._set(name, "preparing", "fetching the pre-converted IR from the Hugging Face Hub")
            try:
                xml = hub.fetch_ir(name)
            except D2ovError as e:
                errors.append(str(e))
        if xml is None and self.convert_fallback:
            self._set(name, "preparing", "downloading the Detectron2 weights and converting (minutes)")
            try:
                from .convert import convert

                xml = convert(name, progress=False)
            except D2ovError as e:
                errors.append(str(e))
            except Exception as e:  # keep the server alive whatever conversion does
                errors.append(f"conversion failed: {type(e).__name__}: {e}")
        if xml is not None:
            self._set(name, "ready", "", xml)
        else:
            self._set(name, "unavailable", "; ".join(errors) or "no source for this model")
        log.info("model %s: %s", name, self.state(name).status)
        if on_done:
            on_done(self.state(name))

    # -------------------------------------------------------------- predictors
    def predictor(self, name: str, device: str = "CPU", precision: str = "FP16"):
        """The shared predictor of a ready model (raises a D2ovError saying why if not ready)."""
        st = self.state(name)
        if st.status != "ready":
            if st.status == "not prepared":
                st = self.prepare(name)
            if st.status == "preparing":
                raise ModelNotFoundError(f"{name} is being prepared ({st.detail}); try again in a moment")
            if st.status == "unavailable":
                raise ModelNotFoundError(f"{name} is unavailable: {st.detail}")
        key = (name, device, precision)
        with self._lock:
            if key not in self._predictors:
                from .predictor import Predictor

                self._predictors[key] = Predictor(st.xml, device=device)
            return self._predictors[key]
