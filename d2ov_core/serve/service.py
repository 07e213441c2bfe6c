"""Model states and compiled predictors for a long-running server (the Gradio app), on top of what it
offers (:mod:`d2ov_core.serve.offer`).

Precisions are the table in :mod:`d2ov_core.runtime.settings` (``FP16``, ``FP32``, ``BF16``: the FP16
IR computed in bfloat16, ``INT8``); states are kept per (model, IR), so FP16 and BF16 share one IR.
An IR is looked for, in order: the local IR dropped in, then for catalog models
:func:`d2ov_core.store.lookup.find_ir` (bundled, then the conversion cache), the Hugging Face Hub when
``D2OV_HUB_REPO`` names a repository (:mod:`d2ov_core.store.hub`), and last (FP16/FP32 only) a weights
download + conversion (:func:`d2ov_core.export.resolve.resolve_ir`). Preparation runs in a background
thread, so a server comes up at once and reports ``preparing`` (with what it is doing) / ``ready`` /
``unavailable`` (with why) per (model, IR). Remote models are ready at the precision of the IR their
server holds; their predictors run pre- and postprocessing here and the graph there. At most
``D2OV_MAX_PREDICTORS`` (default 4) compiled models are kept (least recently used dropped first), and
at most one conversion runs at a time.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import D2ovError, DeviceError, NotReadyError
from ..export.resolve import open_predictor
from ..runtime.ir import compute_runs_on
from ..runtime.predictor import Predictor
from ..runtime.settings import DEFAULT_PRECISION, IR_PRECISIONS, PRECISIONS, accuracy_by_precision
from ..runtime.settings import precision as get_precision
from ..store.lookup import metadata
from .offer import ModelOffer, converter_installed, find_local_irs, models_dir

__all__ = [
    "ModelState",
    "ModelService",
    "CompiledModels",
    "ModelOffer",
    "find_local_irs",
    "models_dir",
    "metadata",
    "converter_installed",
]

log = logging.getLogger("d2ov")


@dataclasses.dataclass
class ModelState:
    """Where one IR of a model stands. ``precision`` is the IR's weight precision (FP16/FP32/INT8)."""

    name: str
    precision: str = DEFAULT_PRECISION
    status: str = "not prepared"  # not prepared | preparing | ready | unavailable
    detail: str = ""  # preparing: what it is doing; unavailable: why
    xml: Path | None = None

    def ready_xml(self, shown: str) -> Path | None:
        """The IR of a ready state; :class:`NotReadyError` saying why otherwise (``shown``: the
        precision the person asked for)."""
        if self.status == "preparing":
            raise NotReadyError(f"{self.name} ({shown}) is being prepared ({self.detail}); try again in a moment")
        if self.status != "ready":
            raise NotReadyError(f"{self.name} ({shown}) is unavailable: {self.detail or self.status}")
        return self.xml


class ModelService(ModelOffer):
    """Thread-safe registry of model states and compiled predictors.

    Args:
        use_hub: look for pre-converted IRs on the Hugging Face Hub (default: when ``D2OV_HUB_REPO``
            names a repository; there is no default repository).
        convert_fallback: download the Detectron2 weights and convert when nothing else has the IR
            (only where the converter is installed; without it, catalog models without an IR in
            reach are not offered).
        models_root: folder of dropped-in IRs (default :func:`models_dir`).
        max_predictors: compiled models kept in memory (least recently used dropped first).
        server: a KServe-v2 model server whose d2ov models are offered as ``remote/<name>``.
    """

    def __init__(
        self,
        use_hub: bool | None = None,
        convert_fallback: bool = True,
        models_root: Path | None = None,
        max_predictors: int | None = None,
        server: str | None = None,
    ):
        super().__init__(use_hub=use_hub, convert_fallback=convert_fallback, models_root=models_root, server=server)
        self.max_predictors = max(1, int(max_predictors or os.environ.get("D2OV_MAX_PREDICTORS", 4)))
        self._lock = threading.RLock()
        self._states: dict[tuple[str, str], ModelState] = {}
        self._compiled = CompiledModels(self.max_predictors)
        self._threads: dict[tuple[str, str], threading.Thread] = {}

    def precisions(self, name: str, device: str = "CPU") -> list[str]:
        """Precisions (of :data:`~d2ov_core.runtime.settings.PRECISIONS`) ready to run now on
        ``device``: their IR is here (dropped in, bundled or cached), and ``BF16`` only on a CPU with
        native bfloat16."""
        name = self.canonical(name)
        if name in self._remote:
            return [self._remote[name][1].precision]
        have = {p for p in IR_PRECISIONS if self.state(name, p).status == "ready"}
        return [p.name for p in PRECISIONS.values() if p.ir in have and compute_runs_on(p.compute, device)]

    def accuracy(self, name: str) -> dict[str, Any]:
        """Accuracy measured at conversion (see :mod:`d2ov_core.measure.accuracy`), per precision, each
        from the metadata of the IR that precision runs (BF16: the FP16 IR), plus the float reference
        (FP32) from whichever IR measured it; a remote model's from its server; empty when none was
        measured."""
        if name in self._remote:
            return dict(self._remote[name][1].accuracy)
        ready = [st for st in (self.state(name, ir) for ir in IR_PRECISIONS) if st.status == "ready" and st.xml]
        return accuracy_by_precision({st.precision: metadata(st.xml).accuracy for st in ready})

    # -------------------------------------------------------------- states
    def state(self, name: str, precision: str = DEFAULT_PRECISION) -> ModelState:
        """The state of ``name``'s IR for ``precision`` (a precision name; BF16 shares FP16's IR)."""
        name, ir = self.canonical(name), get_precision(precision).ir
        if name in self._remote:
            have = self._remote[name][1].precision
            why = "" if ir == have else f"the model server holds its {have} IR only"
            return ModelState(name, ir, "unavailable" if why else "ready", why)
        key = (name, ir)
        with self._lock:
            if key not in self._states:
                xml = self.ir_at_hand(name, ir)
                self._states[key] = ModelState(name, ir, "ready" if xml else "not prepared", "", xml)
            return dataclasses.replace(self._states[key])

    def _set(self, name: str, precision: str, status: str, detail: str = "", xml: Path | None = None) -> None:
        with self._lock:
            self._states[(name, precision)] = ModelState(name, precision, status, detail, xml)

    # -------------------------------------------------------------- preparation
    def prepare(
        self,
        name: str,
        precision: str = DEFAULT_PRECISION,
        on_done: Callable[[ModelState], None] | None = None,
        wait: bool = False,
    ) -> ModelState:
        """Make (``name``, ``precision``) ready in a background thread (at most one per pair); an
        unavailable one is tried again (the network may be back)."""
        st = self.state(name, precision)
        key = (st.name, st.precision)
        if st.name in self._remote or st.status == "ready":  # remote: the server has it or has not
            return st
        if st.name in self._local:  # a dropped-in model has the IRs it came with
            have = ", ".join(self._local[st.name])
            self._set(*key, "unavailable", f"{st.name} has no {st.precision} IR (its IRs: {have})")
            return self.state(*key)
        with self._lock:
            if self._states[key].status != "preparing":  # else another thread got here first
                self._set(*key, "preparing", "looking for a pre-converted IR")
                t = threading.Thread(target=self._prepare, args=(*key, on_done), daemon=True, name=f"prepare {key}")
                self._threads[key] = t
                t.start()
        if wait:
            self._threads[key].join()
        return self.state(*key)

    def _prepare(self, name: str, precision: str, on_done) -> None:
        try:
            xml = self.obtain_ir(name, precision, report=lambda m: self._set(name, precision, "preparing", m))
            self._set(name, precision, "ready", "", xml)
        except D2ovError as e:
            self._set(name, precision, "unavailable", str(e))
        log.info("model %s %s: %s", name, precision, self.state(name, precision).status)
        if on_done:
            on_done(self.state(name, precision))

    # -------------------------------------------------------------- predictors
    def predictor(self, name: str, device: str = "CPU", precision: str = DEFAULT_PRECISION):
        """The shared predictor of a ready model at ``precision`` on ``device``; a
        :class:`~d2ov_core.errors.NotReadyError` saying why when the model is not ready."""
        p, name = get_precision(precision), self.canonical(name)
        if name in self._remote:
            if p.name not in self.precisions(name):
                raise NotReadyError(f"{name} runs {self.precisions(name)[0]} on the model server, not {p.name}")
            model = self._remote[name][0]  # the server decides the device: one predictor per model
            return self._compiled.get((name, "remote", p.name), lambda: Predictor(server=self.server, model=model))
        if not compute_runs_on(p.compute, device):
            raise DeviceError(
                f"{p.name} needs a CPU with native bfloat16 (AVX512_BF16 or AMX); "
                f"{device} on this server has none: choose FP16"
            )
        st = self.state(name, p.name)
        xml = (self.prepare(name, p.name) if st.status == "not prepared" else st).ready_xml(p.name)
        return self._compiled.get((name, str(device), p.name), lambda: open_predictor(xml, p, device=str(device)))


class CompiledModels:
    """At most ``limit`` compiled predictors, the least recently used dropped first; each key is
    compiled once however many threads ask for it at the same time (other keys keep serving)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._lock = threading.Lock()
        self._items: collections.OrderedDict[tuple[str, ...], Any] = collections.OrderedDict()
        self._making: dict[tuple[str, ...], threading.Lock] = {}

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: tuple[str, ...], make: Callable[[], Any]) -> Any:
        """The predictor kept for ``key``, else ``make()``'s, kept."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            making = self._making.setdefault(key, threading.Lock())
        with making:
            with self._lock:
                if key in self._items:
                    return self._items[key]
            item = make()
            with self._lock:
                self._items[key] = item
                while len(self._items) > self.limit:
                    old, _ = self._items.popitem(last=False)
                    log.info("dropped compiled model %s (keeping %d)", old, self.limit)
            return item
