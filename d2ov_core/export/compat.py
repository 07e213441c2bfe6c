"""Make detectron2 v0.6 (the last release, as packaged by ``pb1-detectron2``) import on today's stack.

Each shim fills a gap only where it exists, so with a newer detectron2 (official ``main``, 2026)
or an older Pillow/setuptools, :func:`apply` changes nothing. Nothing in site-packages is edited.

Gaps filled (see ../shared/detectron2-notes.md):
  * ``detectron2._C`` (C++ ops) is not built: a stand-in module is registered whose attributes
    raise a clear error. R-CNN FPN/C4/DC5 models on CPU never call it (ROIAlign and NMS come
    from torchvision); deformable conv and rotated boxes do.
  * ``PIL.Image.LINEAR`` (removed in Pillow 10) is a default argument in detectron2.data.
  * ``detectron2/export/__init__.py`` imports caffe2, gone from torch 2.x: the ``detectron2.export``
    package is registered without running that ``__init__`` so ``detectron2.export.flatten`` imports.
  * ``pkg_resources`` (removed in setuptools >= 81) is imported by ``detectron2.model_zoo``.
  * ``torchvision`` is imported by ``detectron2.layers`` (ROIAlign, NMS, deformable conv), so by
    ``detectron2.structures`` and its ``Visualizer``. Where torchvision is not installed (a lean
    serving install such as the Hugging Face Space: torch CPU only, used for drawing), a stand-in is
    registered whose ops raise a clear error; drawing never calls them. Conversion and the PyTorch
    reference need the real torchvision (:func:`require_torch_side`).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import types
import warnings

from ..errors import ConversionError

__all__ = ["apply", "require_torch_side", "has_real_torchvision"]

_applied = False


class _MissingCExtension(types.ModuleType):
    """Stand-in for ``detectron2._C``: importable, but every op says it was not built."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(
            f"detectron2._C.{name} is not available: this detectron2 was installed without its C++ "
            "extension (deformable conv, rotated boxes). Standard R-CNN models do not need it; build "
            "detectron2 from source for models that do."
        )


def _shim_pil() -> None:
    from PIL import Image

    if not hasattr(Image, "LINEAR"):
        Image.LINEAR = Image.BILINEAR  # type: ignore[attr-defined]


def _shim_pkg_resources() -> None:
    if importlib.util.find_spec("pkg_resources") is not None:
        return
    mod = types.ModuleType("pkg_resources")

    def resource_filename(package: str, resource: str) -> str:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(package)
        return os.path.join(list(spec.submodule_search_locations)[0], resource)

    mod.resource_filename = resource_filename  # type: ignore[attr-defined]
    sys.modules["pkg_resources"] = mod


def _find_submodule(name: str) -> importlib.machinery.ModuleSpec | None:
    """The spec of ``package.module`` looked up on the package's folders WITHOUT importing the package
    (``importlib.util.find_spec`` would import it: ``detectron2/__init__`` imports torch, 2-4 s in
    every process that only runs an IR)."""
    package = name.rpartition(".")[0]
    spec = importlib.util.find_spec(package)  # a top-level package is located, not imported
    if spec is None or not spec.submodule_search_locations:
        return None
    return importlib.machinery.PathFinder.find_spec(name, list(spec.submodule_search_locations))


def _shim_c_extension() -> None:
    if "detectron2._C" in sys.modules:
        return
    if _find_submodule("detectron2._C") is None:
        sys.modules["detectron2._C"] = _MissingCExtension("detectron2._C")


class _MissingTorchvision(types.ModuleType):
    """Stand-in for ``torchvision`` / ``torchvision.ops``: importable, every op says it is missing."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def missing(*args, **kwargs):
            raise RuntimeError(
                f"torchvision is not installed, so {self.__name__}.{name} is unavailable: drawing with "
                "Detectron2's Visualizer works without it; converting and the PyTorch reference "
                "need it (pip install torchvision)"
            )

        missing.__name__ = name
        return missing


def has_real_torchvision() -> bool:
    mod = sys.modules.get("torchvision")
    if isinstance(mod, _MissingTorchvision):
        return False
    return mod is not None or importlib.util.find_spec("torchvision") is not None


def require_torch_side(what: str) -> None:
    """Raise a one-line :class:`~d2ov_core.errors.ConversionError` when torch, torchvision or
    detectron2 is missing (a torch-free install, or only the torchvision stand-in)."""
    missing = [m for m in ("torch", "detectron2") if importlib.util.find_spec(m) is None]
    if not has_real_torchvision():
        missing.append("torchvision")
    if missing:
        raise ConversionError(
            f"{what} needs PyTorch and Detectron2, and {', '.join(missing)} is not installed here: "
            "pip install 'd2ov[convert]' and python -m tools.install_detectron2 from a d2ov checkout (the bundled demo "
            "models and any d2ov IR run without them)"
        )


def _shim_torchvision() -> None:
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        return
    if importlib.util.find_spec("torch") is None:
        return
    root = _MissingTorchvision("torchvision")
    root.__version__ = "0+missing"  # type: ignore[attr-defined]
    ops = _MissingTorchvision("torchvision.ops")
    boxes = _MissingTorchvision("torchvision.ops.boxes")
    root.__path__ = []  # type: ignore[attr-defined]
    ops.__path__ = []  # type: ignore[attr-defined]
    root.ops, ops.boxes = ops, boxes  # type: ignore[attr-defined]
    sys.modules.update({"torchvision": root, "torchvision.ops": ops, "torchvision.ops.boxes": boxes})


def _shim_export_package() -> None:
    if "detectron2.export" in sys.modules:
        return
    if importlib.util.find_spec("caffe2") is not None:
        return
    spec = _find_submodule("detectron2.export")
    if spec is None or not spec.submodule_search_locations:
        return
    init = spec.origin or ""
    try:
        with open(init, encoding="utf-8") as f:
            needs_caffe2 = "from .api import" in f.read()
    except OSError:
        return
    if not needs_caffe2:  # a newer detectron2 whose __init__ imports fine
        return
    pkg = types.ModuleType("detectron2.export")
    pkg.__path__ = list(spec.submodule_search_locations)  # type: ignore[attr-defined]
    pkg.__spec__ = importlib.machinery.ModuleSpec("detectron2.export", None, is_package=True)
    pkg.__spec__.submodule_search_locations = pkg.__path__
    pkg.__file__ = init
    sys.modules["detectron2.export"] = pkg


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it); an import hook that refuses it
    (the torch-boundary test's) counts as not installed."""
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def apply() -> None:
    """Install the shims (idempotent). Call before importing anything from detectron2."""
    global _applied
    if _applied:
        return
    # detectron2 decorates a few functions with torch.jit.script at import; torch 2.10+ warns that
    # TorchScript is deprecated on each, two lines of noise before every command's own output
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
    _shim_pil()
    _shim_pkg_resources()
    if _installed("detectron2"):
        _shim_c_extension()
        _shim_export_package()
        _shim_torchvision()
    _applied = True
