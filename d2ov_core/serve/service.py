"""Models for a long-running server (the Gradio app): where each model's IR comes from, its state,
and one shared predictor per (model, device, precision).

Precisions are the table in :mod:`d2ov_core.runtime.settings` (``FP16``, ``FP32``, ``BF16``: the FP16
IR computed in bfloat16, ``INT8``); states are kept per (model, IR), so FP16 and BF16 share one IR.
An IR is looked for, in order: IRs dropped into the models folder (any ``model.xml`` with d2ov
metadata; ``D2OV_MODELS_DIR``, default the repository's ``models/``), then for catalog models
:func:`d2ov_core.store.lookup.find_ir` (bundled, then the conversion cache), the Hugging Face Hub when
``D2OV_HUB_REPO`` names a repository (:mod:`d2ov_core.store.hub`), and last (FP16/FP32 only) a weights
download + conversion. Preparation runs in a background thread, so a server comes up at once and
reports ``preparing`` (with what it is doing) / ``ready`` / ``unavailable`` (with why) per (model, IR).

Remote models: with ``server=URL`` (``python app.py --server URL`` / ``D2OV_SERVER_URL``), the d2ov
models that KServe-v2 model server serves (d2ov's KServe predictor, OpenVINO Model Server) are listed
at start as ``remote/<name>``, ready at the precision of the IR the server holds; their predictors run
pre- and postprocessing here and the graph there (:mod:`d2ov_core.runtime.remote`). A server that
cannot be reached at start is an error (one line); one that fails later fails that request.

A server offers only what it can run: where it cannot convert (no torch, torchvision or Detectron2
installed, as on a Hugging Face Space; ``D2OV_CONVERT=0``; or ``convert_fallback=False``), a catalog model is listed only
when one of its IRs is in reach: bundled, in the conversion cache, or in the configured Hub repository
(``D2OV_HUB_REPO``, whose file list is read once at start). ``D2OV_ONLY=1`` leaves the demo models out
(what ``d2ov space --only`` sets).

Untrusted callers (a public web app) can only name models, never paths: a name is a catalog name,
one of the local IRs found at start or a remote model listed at start, anything else is an unknown
model. Local IRs whose files do
not match their ``d2ov.json`` are listed as rejected, with the reason. At most
``D2OV_MAX_PREDICTORS`` (default 4) compiled models are kept (least recently used dropped first),
and at most one conversion runs at a time.
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

from ..errors import D2ovError, DeviceError, DownloadError, IRError, ModelNotFoundError, NotReadyError, ServerError
from ..export.resolve import open_predictor, resolve_ir
from ..runtime.predictor import Predictor
from ..runtime.settings import DEFAULT_PRECISION, IR_PRECISIONS, PRECISIONS, Precision
from ..runtime.settings import precision as get_precision
from ..store import cache, catalog, lookup
from ..store.lookup import BUNDLED_IR_DIR, metadata

__all__ = ["ModelState", "ModelService", "find_local_irs", "models_dir", "metadata", "converter_installed"]

log = logging.getLogger("d2ov")


def models_dir() -> Path | None:
    """Folder scanned for IRs you drop in: ``$D2OV_MODELS_DIR``, else the repository's ``models/``
    (an installed wheel has none unless the variable is set)."""
    if os.environ.get("D2OV_MODELS_DIR"):
        return Path(os.environ["D2OV_MODELS_DIR"])
    return catalog.REPO_ROOT / "models" if catalog.REPO_ROOT else None


def find_local_irs(root: Path | None = None) -> tuple[dict[str, dict[str, Path]], dict[str, str]]:
    """d2ov IRs under ``root`` that are not bundled demo IRs.

    Returns ``({name: {precision: xml}}, {name: why an IR of it was rejected})``. The name is
    ``local/<folder>``, where a trailing precision folder (``.../FP16/model.xml``) is not part of it,
    so one model's FP16 and INT8 IRs are one name. Hidden folders (leftovers) are skipped.
    """
    root = Path(root) if root is not None else models_dir()
    found: dict[str, dict[str, Path]] = {}
    rejected: dict[str, str] = {}
    if root is None or not root.is_dir():
        return found, rejected
    for xml in sorted(root.rglob("model.xml")):
        rel = xml.relative_to(root)
        if BUNDLED_IR_DIR in xml.parents or any(part.startswith(".") for part in rel.parts):
            continue
        folder = xml.parent
        named = folder.parent if folder.name in IR_PRECISIONS else folder
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


def converter_installed() -> bool:
    """Whether this machine can convert Detectron2 models: torch, a real torchvision (not d2ov's
    stand-in) and Detectron2 importable."""
    import importlib.util

    from ..export.compat import has_real_torchvision

    return all(importlib.util.find_spec(m) is not None for m in ("torch", "detectron2")) and has_real_torchvision()


def _named_models() -> set[str]:
    """The catalog names in ``D2OV_DEFAULT_MODEL`` (a comma list; other names are skipped)."""
    named = set()
    for name in os.environ.get("D2OV_DEFAULT_MODEL", "").split(","):
        try:
            named.add(catalog.get(name.strip()).name)
        except D2ovError:
            pass
    return named


def _hub_models(repo: str, revision: str) -> set[str]:
    """Catalog names of which the Hub repository holds an IR (its file list, else the local HF cache's
    snapshot when offline); empty when neither can be read."""
    folders: set[str] = set()
    try:
        from huggingface_hub import HfApi

        files = HfApi().list_repo_files(repo, revision=revision)
    except Exception as e:  # offline, unreachable, no such repo: try the local HF cache
        try:
            from huggingface_hub import snapshot_download

            root = Path(snapshot_download(repo, revision=revision, local_files_only=True))
            files = [x.relative_to(root).as_posix() for x in root.rglob("model.xml")]
        except Exception:
            log.warning("Hub repository %s@%s cannot be listed (%s): its models are not offered", repo, revision,
                        str(e).splitlines()[0] if str(e) else type(e).__name__)
            return folders
    for f in files:
        parts = f.split("/")
        if len(parts) == 3 and parts[2] == "model.xml" and parts[1] in IR_PRECISIONS:
            folders.add(parts[0])
    return {n for n in catalog.names() if n.replace("/", "__") in folders}


@dataclasses.dataclass
class ModelState:
    """Where one IR of a model stands. ``precision`` is the IR's weight precision (FP16/FP32/INT8)."""

    name: str
    precision: str = DEFAULT_PRECISION
    status: str = "not prepared"  # not prepared | preparing | ready | unavailable
    detail: str = ""  # preparing: what it is doing; unavailable: why
    xml: Path | None = None


class ModelService:
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

    def __init__(self, use_hub: bool | None = None, convert_fallback: bool = True, models_root: Path | None = None,
                 max_predictors: int | None = None, server: str | None = None):
        from ..store import hub

        self.use_hub = hub.configured() if use_hub is None else use_hub
        self.convert_fallback = (convert_fallback and converter_installed()  # D2OV_CONVERT=0: never convert here
                                 and os.environ.get("D2OV_CONVERT", "1").lower() not in ("0", "false", "no", "off"))
        self.only = os.environ.get("D2OV_ONLY", "").lower() in ("1", "true", "yes", "on")
        self.max_predictors = max(1, int(max_predictors or os.environ.get("D2OV_MAX_PREDICTORS", 4)))
        self._lock = threading.RLock()
        self._states: dict[tuple[str, str], ModelState] = {}
        self._predictors: collections.OrderedDict[tuple[str, str, str], Any] = collections.OrderedDict()
        self._compile_locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._threads: dict[tuple[str, str], threading.Thread] = {}
        self._convert_slot = threading.Semaphore(1)
        self._local, self._rejected = find_local_irs(models_root)
        self.server, self._remote = (None, {}) if not server else self._find_remote(server)
        cache.sweep()  # what killed runs left in the cache (never used, removed with a warning)
        self._catalog = [n for n in catalog.names() if not self.only or n in _named_models()]
        if not self.convert_fallback:  # offer only the catalog models whose IR is in reach
            on_hub = _hub_models(*hub.repo_settings()) if self.use_hub else set()
            self._catalog = [n for n in self._catalog
                             if n in on_hub or any(lookup.find_ir(n, p) is not None for p in IR_PRECISIONS)]

    def _find_remote(self, server: str) -> tuple[str, dict[str, tuple[str, dict[str, Any]]]]:
        """``(server, {"remote/<name>": (name on the server, d2ov metadata)})``; models that are not d2ov
        IRs are listed as rejected (with the reason). :class:`ServerError` if the server cannot be reached."""
        from ..runtime import remote

        server = remote.check_server_url(server)
        found = {}
        for model in remote.list_models(server):
            try:
                found[f"remote/{model}"] = (model, remote.fetch_metadata(server, model)[0])
            except ServerError as e:
                log.warning("remote model %s not offered: %s", model, e)
                self._rejected[f"remote/{model}"] = str(e)
        log.info("model server %s: %s", server, ", ".join(found) or "no d2ov model")
        return server, found

    def default_model(self, task: str) -> str | None:
        """The model the page starts with for ``task``: the model server's first such model, else the
        catalog's default where offered, else the first offered (``None``: this server has none)."""
        remote = [n for n, (_, meta) in self._remote.items() if meta["task"] == task]
        if remote:
            return remote[0]
        offered = self.models(task)
        return catalog.DEFAULTS[task] if catalog.DEFAULTS[task] in offered else next(iter(offered), None)

    def source_name(self, name: str) -> str:
        """The model a name stands for (a remote model's IR says which), e.g. for picking examples."""
        return self._remote[name][1]["model_name"] if name in self._remote else name

    # -------------------------------------------------------------- names
    def models(self, task: str | None = None) -> list[str]:
        """The models this server offers (for ``task``): catalog models it can run or prepare, local IRs,
        remote models."""
        names = [n for n in self._catalog if task is None or catalog.CATALOG[n].task == task]
        for name, irs in self._local.items():
            meta = metadata(next(iter(irs.values())))
            if task is None or meta["task"] == task:
                names.append(name)
        names += [n for n, (_, meta) in self._remote.items() if task is None or meta["task"] == task]
        return names

    def canonical(self, name: Any) -> str:
        """The catalog or local name ``name`` stands for; :class:`ModelNotFoundError` for anything else."""
        if not isinstance(name, str) or not name:
            raise ModelNotFoundError(f"expected a model name, got {name!r}")
        if name in self._local or name in self._remote:
            return name
        if name in self._rejected:
            raise IRError(f"{name} is not usable: {self._rejected[name]}")
        return catalog.get(name).name

    def spec_info(self, name: str) -> dict[str, Any]:
        name = self.canonical(name)
        if name in self._remote:
            model, meta = self._remote[name]
            return {"name": name, "task": meta["task"], "classes": meta["labels"], "box_ap": None, "mask_ap": None,
                    "keypoint_names": list(meta["keypoint_names"]), "stuff_classes": list(meta["stuff_classes"]),
                    "source": "model server", "description": f"{meta['model_name']} ({meta['precision']} IR) served "
                    f"by {self.server} as {model!r}: inference there, pre- and postprocessing here"}
        if name in self._local:
            irs = self._local[name]
            meta = metadata(next(iter(irs.values())))
            return {"name": name, "task": meta["task"], "classes": meta["labels"], "box_ap": None, "mask_ap": None,
                    "keypoint_names": list(meta["keypoint_names"]), "stuff_classes": list(meta["stuff_classes"]),
                    "source": "local IR", "description": f"converted from {Path(meta['model_name']).name}"
                    + (" with random weights" if meta["random_weights"] else f" with weights {Path(meta['weights_source']).name}")
                    + f" ({', '.join(irs)} IR{'s' * (len(irs) > 1)} in this server's models folder)"}
        return catalog.get(name).to_dict()

    def precisions(self, name: str, device: str = "CPU") -> list[str]:
        """Precisions (of :data:`~d2ov_core.runtime.settings.PRECISIONS`) ready to run now on
        ``device``: their IR is here (dropped in, bundled or cached), and ``BF16`` only on a CPU with
        native bfloat16."""
        name = self.canonical(name)
        if name in self._remote:
            return [self._remote[name][1]["precision"]]
        have = {p for p in IR_PRECISIONS if self.state(name, p).status == "ready"}
        return [p.name for p in PRECISIONS.values() if p.ir in have and self._runs_on(p, device)]

    def accuracy(self, name: str) -> dict[str, Any]:
        """Accuracy measured at conversion (see :mod:`d2ov_core.measure.accuracy`), per precision, each
        from the metadata of the IR that precision runs (BF16: the FP16 IR), plus the float reference
        (FP32) from whichever IR measured it; a remote model's from its server; empty when none was
        measured."""
        if name in self._remote:
            return dict(self._remote[name][1]["accuracy"])
        metas = {}
        for ir in IR_PRECISIONS:
            st = self.state(name, ir)
            if st.status == "ready" and st.xml is not None:
                metas[ir] = metadata(st.xml)["accuracy"]
        rows = {p: metas[PRECISIONS[p].ir][p] for p in PRECISIONS if p in metas.get(PRECISIONS[p].ir, {})}
        if "FP32" not in rows:
            rows.update(next(({"FP32": m["FP32"]} for m in metas.values() if "FP32" in m), {}))
        return rows

    @staticmethod
    def _runs_on(p: Precision, device: str) -> bool:
        if p.compute == "f32":
            return True
        from ..runtime.ir import bf16_available

        return str(device) == "CPU" and bf16_available()

    # -------------------------------------------------------------- states
    def state(self, name: str, precision: str = DEFAULT_PRECISION) -> ModelState:
        """The state of ``name``'s IR for ``precision`` (a precision name; BF16 shares FP16's IR)."""
        name, ir = self.canonical(name), get_precision(precision).ir
        if name in self._remote:
            have = self._remote[name][1]["precision"]
            if ir == have:
                return ModelState(name, ir, "ready")
            return ModelState(name, ir, "unavailable", f"the model server holds its {have} IR only")
        key = (name, ir)
        with self._lock:
            if key not in self._states:
                xml = self._find_ready(name, ir)
                self._states[key] = ModelState(name, ir, "ready" if xml else "not prepared", "", xml)
            return dataclasses.replace(self._states[key])

    def _find_ready(self, name: str, ir: str) -> Path | None:
        if name in self._local:
            return self._local[name].get(ir)
        return lookup.find_ir(name, ir)

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
        if st.name in self._remote:  # nothing to prepare here: the server has it or has not
            return st
        if st.name in self._local and st.status == "not prepared":
            have = ", ".join(self._local[st.name])
            self._set(*key, "unavailable", f"{st.name} has no {st.precision} IR (its IRs: {have})")
            return self.state(*key)
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

        def report(message: str) -> None:
            self._set(name, precision, "preparing", message)

        if self.use_hub:
            from ..store import hub

            report("fetching the pre-converted IR from the Hugging Face Hub")
            try:
                xml = hub.fetch_ir(name, precision)
            except D2ovError as e:
                errors.append(str(e))
        if xml is None and precision == "INT8":
            errors.append(f"no INT8 IR of {name} on this server; an INT8 IR is made with calibration images "
                          f"(`d2ov convert {name} --precision INT8 --calibration DIR`)")
        elif xml is None and self.convert_fallback:
            report("waiting for another conversion to finish")
            with self._convert_slot:  # one conversion at a time: each takes GBs and all cores
                report("downloading the Detectron2 weights")
                try:
                    xml = resolve_ir(name, PRECISIONS[precision], progress=report)
                except DownloadError as e:
                    errors.append(f"this server cannot download the model's Detectron2 weights ({e}); choose a "
                                  "demo model, or ask the server's owner to convert this one beforehand "
                                  f"(`d2ov convert {name}`) or to publish converted IRs (D2OV_HUB_REPO)")
                except D2ovError as e:
                    errors.append(str(e))
                except Exception as e:  # keep the server alive whatever conversion does
                    errors.append(f"conversion failed: {type(e).__name__}: {e}")
        if xml is None and not self.convert_fallback and precision != "INT8":
            errors.append(f"this server holds no {precision} IR of {name} and does not convert models")
        if xml is not None:
            self._set(name, precision, "ready", "", xml)
        else:
            self._set(name, precision, "unavailable", "; ".join(errors) or "no source for this model")
        log.info("model %s %s: %s", name, precision, self.state(name, precision).status)
        if on_done:
            on_done(self.state(name, precision))

    # -------------------------------------------------------------- predictors
    def predictor(self, name: str, device: str = "CPU", precision: str = DEFAULT_PRECISION):
        """The shared predictor of a ready model at ``precision`` on ``device``; a
        :class:`~d2ov_core.errors.NotReadyError` saying why when the model is not ready."""
        p = get_precision(precision)
        remote = self.canonical(name) in self._remote
        if remote:
            if p.name not in self.precisions(name):
                raise NotReadyError(f"{name} runs {self.precisions(name)[0]} on the model server, not {p.name}")
            device = "remote"  # the server decides; one predictor per model whatever the page's device
        elif not self._runs_on(p, device):
            raise DeviceError(f"{p.name} needs a CPU with native bfloat16 (AVX512_BF16 or AMX); "
                              f"{device} on this server has none: choose FP16")
        st = self.state(name, p.name)
        if st.status == "not prepared":
            st = self.prepare(st.name, p.name)
        if st.status == "preparing":
            raise NotReadyError(f"{st.name} ({p.name}) is being prepared ({st.detail}); try again in a moment")
        if st.status == "unavailable":
            raise NotReadyError(f"{st.name} ({p.name}) is unavailable: {st.detail}")
        key = (st.name, str(device), p.name)
        with self._lock:
            if key in self._predictors:
                self._predictors.move_to_end(key)
                return self._predictors[key]
            compile_lock = self._compile_locks.setdefault(key, threading.Lock())
        with compile_lock:  # one compilation per key; other models keep serving meanwhile
            with self._lock:
                if key in self._predictors:
                    return self._predictors[key]
            if remote:
                pred = Predictor(server=self.server, model=self._remote[st.name][0])
            else:
                pred = open_predictor(st.xml, p, device=str(device))
            with self._lock:
                self._predictors[key] = pred
                while len(self._predictors) > self.max_predictors:
                    old, _ = self._predictors.popitem(last=False)
                    log.info("dropped compiled model %s (keeping %d)", old, self.max_predictors)
            return pred
