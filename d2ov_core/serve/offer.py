"""What a long-running server (the Gradio app) offers: the model names it answers to, where each
comes from, and what a model is (its card).

Sources: IRs dropped into the models folder (any ``model.xml`` with d2ov metadata; ``D2OV_MODELS_DIR``,
default the repository's ``models/``), offered as ``local/<folder>``; catalog models; and, with
``server=URL`` (``python app.py --server URL`` / ``D2OV_SERVER_URL``), the d2ov models a KServe-v2
model server serves (d2ov's KServe predictor, OpenVINO Model Server), listed at start as
``remote/<name>``. A server that cannot be reached at start is an error (one line).

A server offers only what it can run: where it cannot convert (no torch, torchvision or Detectron2
installed, as on a Hugging Face Space; ``D2OV_CONVERT=0``; or ``convert_fallback=False``), a catalog
model is listed only when one of its IRs is in reach: bundled, in the conversion cache, or in the
configured Hub repository (``D2OV_HUB_REPO``, whose file list is read once at start). ``D2OV_ONLY=1``
leaves the demo models out (what ``d2ov space --only`` sets).

Untrusted callers (a public web app) can only name models, never paths: a name is a catalog name,
one of the local IRs found at start or a remote model listed at start, anything else is an unknown
model. Local IRs whose files do not match their ``d2ov.json`` are listed as rejected, with the reason.
Torch-free.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import D2ovError, DownloadError, IRError, ModelNotFoundError, NotReadyError, ServerError
from ..export.compat import has_real_torchvision
from ..export.resolve import resolve_ir
from ..runtime import remote
from ..runtime.settings import IR_PRECISIONS, PRECISIONS, IRMetadata
from ..store import cache, catalog, hub, lookup
from ..store.lookup import BUNDLED_IR_DIR, metadata

__all__ = ["ModelOffer", "find_local_irs", "models_dir", "converter_installed", "metadata"]

log = logging.getLogger("d2ov")
#: one conversion at a time in this process: each takes GBs and all cores
_CONVERT_SLOT = threading.Semaphore(1)


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
        found.setdefault(name, {})[meta.precision] = xml
    return found, rejected


def converter_installed() -> bool:
    """Whether this machine can convert Detectron2 models: torch, a real torchvision (not d2ov's
    stand-in) and Detectron2 importable."""
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
            log.warning(
                "Hub repository %s@%s cannot be listed (%s): its models are not offered",
                repo,
                revision,
                str(e).splitlines()[0] if str(e) else type(e).__name__,
            )
            return folders
    for f in files:
        parts = f.split("/")
        if len(parts) == 3 and parts[2] == "model.xml" and parts[1] in IR_PRECISIONS:
            folders.add(parts[0])
    return {n for n in catalog.names() if n.replace("/", "__") in folders}


class ModelOffer:
    """The models a server offers and what each is (see the module docstring); :class:`ModelService`
    adds their states and compiled predictors."""

    def __init__(
        self,
        use_hub: bool | None = None,
        convert_fallback: bool = True,
        models_root: Path | None = None,
        server: str | None = None,
    ):
        self.use_hub = hub.configured() if use_hub is None else use_hub
        self.convert_fallback = (
            convert_fallback
            and converter_installed()  # D2OV_CONVERT=0: never convert here
            and os.environ.get("D2OV_CONVERT", "1").lower() not in ("0", "false", "no", "off")
        )
        self.only = os.environ.get("D2OV_ONLY", "").lower() in ("1", "true", "yes", "on")
        self._local, self._rejected = find_local_irs(models_root)
        self.server, self._remote = (None, {}) if not server else self._find_remote(server)
        cache.sweep()  # what killed runs left in the cache (never used, removed with a warning)
        self._catalog = [n for n in catalog.names() if not self.only or n in _named_models()]
        if not self.convert_fallback:  # offer only the catalog models whose IR is in reach
            on_hub = _hub_models(*hub.repo_settings()) if self.use_hub else set()
            self._catalog = [
                n for n in self._catalog if n in on_hub or any(lookup.find_ir(n, p) is not None for p in IR_PRECISIONS)
            ]

    def obtain_ir(self, name: str, precision: str, report: Callable[[str], None]) -> Path:
        """An IR of ``name`` at ``precision`` (an IR precision) from where this server may get one: the
        Hugging Face Hub (when configured), else (FP16/FP32, where the converter is installed) its
        Detectron2 weights downloaded and converted, one conversion at a time. ``report``: what it is
        doing. A :class:`~d2ov_core.errors.D2ovError` saying why each source failed."""
        errors = []
        if self.use_hub:
            report("fetching the pre-converted IR from the Hugging Face Hub")
            try:
                return hub.fetch_ir(name, precision)
            except D2ovError as e:
                errors.append(str(e))
        if precision == "INT8":
            errors.append(
                f"no INT8 IR of {name} on this server; an INT8 IR is made with calibration images "
                f"(`d2ov convert {name} --precision INT8 --calibration DIR`)"
            )
        elif not self.convert_fallback:
            errors.append(f"this server holds no {precision} IR of {name} and does not convert models")
        else:
            report("waiting for another conversion to finish")
            with _CONVERT_SLOT:
                report("downloading the Detectron2 weights")
                try:
                    return resolve_ir(name, PRECISIONS[precision], progress=report)
                except DownloadError as e:
                    errors.append(
                        f"this server cannot download the model's Detectron2 weights ({e}); choose a "
                        "demo model, or ask the server's owner to convert this one beforehand "
                        f"(`d2ov convert {name}`) or to publish converted IRs (D2OV_HUB_REPO)"
                    )
                except D2ovError as e:
                    errors.append(str(e))
                except Exception as e:  # keep the server alive whatever conversion does
                    errors.append(f"conversion failed: {type(e).__name__}: {e}")
        raise NotReadyError("; ".join(errors) or "no source for this model")

    def ir_at_hand(self, name: str, precision: str) -> Path | None:
        """The IR of ``name`` at ``precision`` (an IR precision) that is here now: dropped in, else
        bundled or in the conversion cache (:func:`~d2ov_core.store.lookup.find_ir`)."""
        return self._local[name].get(precision) if name in self._local else lookup.find_ir(name, precision)

    def _find_remote(self, server: str) -> tuple[str, dict[str, tuple[str, IRMetadata]]]:
        """``(server, {"remote/<name>": (name on the server, d2ov metadata)})``; models that are not d2ov
        IRs are listed as rejected (with the reason). :class:`ServerError` if the server cannot be reached."""
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
        remote = [n for n, (_, meta) in self._remote.items() if meta.task == task]
        if remote:
            return remote[0]
        offered = self.models(task)
        return catalog.DEFAULTS[task] if catalog.DEFAULTS[task] in offered else next(iter(offered), None)

    def source_name(self, name: str) -> str:
        """The model a name stands for (a remote model's IR says which), e.g. for picking examples."""
        return self._remote[name][1].model_name if name in self._remote else name

    # -------------------------------------------------------------- names
    def models(self, task: str | None = None) -> list[str]:
        """The models this server offers (for ``task``): catalog models it can run or prepare, local IRs,
        remote models."""
        names = [n for n in self._catalog if task is None or catalog.CATALOG[n].task == task]
        for name, irs in self._local.items():
            meta = metadata(next(iter(irs.values())))
            if task is None or meta.task == task:
                names.append(name)
        names += [n for n, (_, meta) in self._remote.items() if task is None or meta.task == task]
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

    def spec_info(self, name: str) -> catalog.ModelSpec:
        """What is known of ``name``: its catalog entry, or for a local or remote IR what its metadata
        says (no config or weights here: the IR is the model)."""
        name = self.canonical(name)
        if name in self._remote:
            model, meta = self._remote[name]
            description = (
                f"{meta.model_name} ({meta.precision} IR) served by {self.server} as {model!r}: "
                "inference there, pre- and postprocessing here"
            )
            return _ir_card(name, meta, "model server", description)
        if name in self._local:
            irs = self._local[name]
            meta = metadata(next(iter(irs.values())))
            description = (
                f"converted from {Path(meta.model_name).name}"
                + (" with random weights" if meta.random_weights else f" with weights {Path(meta.weights_source).name}")
                + f" ({', '.join(irs)} IR{'s' * (len(irs) > 1)} in this server's models folder)"
            )
            return _ir_card(name, meta, "local IR", description)
        return catalog.get(name)


def _ir_card(name: str, meta: IRMetadata, source: str, description: str) -> catalog.ModelSpec:
    """The entry of a model known only by its IR's metadata (a local or a remote IR)."""
    return catalog.ModelSpec(
        name=name,
        task=meta.task,
        config="",
        weights="",
        classes=tuple(meta.labels),
        source=source,
        description=description,
        keypoint_names=tuple(meta.keypoint_names),
        stuff_classes=tuple(meta.stuff_classes),
    )
