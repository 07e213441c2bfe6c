"""The architecture as rules that fail: which package may import which, no import cycles, and the
torch-free side really runs without torch, torchvision or detectron2."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import ROOT, SAMPLES

PKG = ROOT / "d2ov_core"
#: package -> the d2ov packages its modules may import (anywhere in the module, lazily included)
ALLOWED = {
    "errors": set(),
    "runtime": {"errors", "runtime"},
    "store": {"errors", "runtime", "store"},
    "export": {"errors", "runtime", "store", "export"},
    "measure": {"errors", "runtime", "store", "export", "measure"},
    "serve": {"errors", "runtime", "store", "export", "measure", "serve"},
    "cli": {"errors", "runtime", "store", "export", "measure", "serve", "cli"},
}
TORCH_FREE = ["runtime", "store"]


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PKG.rglob("*.py"):
        rel = f.relative_to(PKG).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(["d2ov_core", *parts])] = f
    return mods


def _imports(module: str, path: Path, top_level_only: bool) -> set[str]:
    """d2ov_core modules imported by ``module`` (resolved relative imports)."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    found = set()
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base[: len(base) - node.level + 1]
                target = ".".join(parent + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("d2ov_core"):
                if node.module is None or node.level and not node.module:
                    found.update(f"{target}.{a.name}" for a in node.names)
                else:
                    found.add(target)
                    found.update(f"{target}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("d2ov_core"))
    mods = _modules()
    return {m for m in found if m in mods}


def _package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_packages_import_only_what_the_layout_allows():
    bad = []
    for module, path in _modules().items():
        pkg = _package_of(module)
        if pkg not in ALLOWED:  # d2ov_core itself, __main__, data
            continue
        for target in _imports(module, path, top_level_only=False):
            tpkg = _package_of(target)
            if tpkg and tpkg not in ALLOWED[pkg] and target != "d2ov_core":
                bad.append(f"{module} imports {target}")
    assert not bad, "imports that cross the layout's boundaries:\n" + "\n".join(sorted(bad))


#: the only modules that may know Panoptic FPN by name (docs/architecture.md, "Tasks"): its runtime
#: task, its numpy decoding, its export side, its measure, the catalog, the settings table, COCO's
#: class lists and the renderer (Detectron2's ``Visualizer.draw_panoptic_seg``)
KNOWS_PANOPTIC = {
    "runtime/tasks/panoptic_segmentation.py",
    "runtime/panoptic.py",
    "export/tasks.py",
    "measure/panoptic_quality.py",
    "store/catalog.py",
    "runtime/settings.py",
    "store/coco_classes.py",
    "serve/render.py",
}


def test_one_task_is_known_by_name_only_in_its_own_modules():
    """What differs per task lives in the task's modules: the rest of the code asks the task. The
    word "panoptic" (any case, code or text) stands for every task-specific detail."""
    knowing = {
        str(f.relative_to(PKG)) for f in PKG.rglob("*.py") if "panoptic" in f.read_text(encoding="utf-8").lower()
    }
    assert knowing <= KNOWS_PANOPTIC, sorted(knowing - KNOWS_PANOPTIC)
    assert len(KNOWS_PANOPTIC) <= 8


def test_no_import_cycles():
    mods = _modules()
    graph = {m: _imports(m, p, top_level_only=True) - {m} for m, p in mods.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t) :] + [t]))
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


BLOCKER = """
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "detectron2", "nncf"):
            raise ImportError(f"blocked by the torch-boundary test: {name}")
        return None
sys.meta_path.insert(0, Blocked())
"""


def test_torch_free_side_imports_and_predicts_without_torch():
    mods = [m for m in _modules() if _package_of(m) in TORCH_FREE] + [
        "d2ov_core.serve.service",
        "d2ov_core.serve.handlers",
    ]
    xml = PKG / "data" / "ir" / "demo__mask_rcnn_shapes" / "FP16" / "model.xml"
    code = (
        BLOCKER
        + f"""
import importlib
for m in {sorted(mods)!r}:
    importlib.import_module(m)
from d2ov_core.runtime.predictor import Predictor
det = Predictor({str(xml)!r}).predict({str(sorted(SAMPLES.glob("*.jpg"))[0])!r})
assert len(det) > 0 and det.masks is not None
assert not any(k.split(".")[0] in ("torch", "torchvision", "detectron2") for k in sys.modules)
print("ok", len(det))
"""
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0 and res.stdout.startswith("ok"), res.stderr[-3000:]


def test_the_blocker_blocks():
    """The test above can fail: with the blocker, using the export side does (its modules import torch
    and Detectron2 lazily, so importing them alone would not)."""
    code = BLOCKER + (
        "from d2ov_core.export.model import load_cfg\nfrom d2ov_core.store import catalog\n"
        "load_cfg(catalog.get('COCO-Detection/faster_rcnn_R_50_FPN_1x'))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode != 0 and "blocked by the torch-boundary test" in res.stderr


@pytest.mark.parametrize("pkg", sorted(ALLOWED))
def test_every_package_says_what_it_is(pkg):
    init = PKG / pkg / "__init__.py" if pkg != "errors" else PKG / "errors.py"
    assert ast.get_docstring(ast.parse(init.read_text())), f"{init} has no docstring"


def test_running_an_ir_from_the_cli_leaves_torch_unloaded():
    """Where torch and Detectron2 ARE installed, `d2ov predict` on an IR still never imports them:
    importing torch cost every command 2-4 s (the Detectron2 shims looked for ``detectron2._C`` with
    ``find_spec``, which imports ``detectron2`` and so torch)."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("detectron2") is None:
        pytest.skip("torch or detectron2 is not installed: nothing could load them")
    sample = sorted(SAMPLES.glob("shapes_*.jpg"))[0]
    code = f"""
import sys
from d2ov_core.cli import main
code = main(["-q", "predict", "demo/faster_rcnn_shapes", {str(sample)!r}])
loaded = sorted(set(sys.modules) & {{"torch", "torchvision", "detectron2", "nncf"}})  # the packages themselves
print("exit", code, "loaded", loaded)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert "exit 0 loaded []" in res.stdout, res.stdout[-2000:] + res.stderr[-2000:]
