"""The task seam: one module per task, chosen by the IR's ``task``.

Each module here is named after its task (the choices of the ``task`` setting in
:mod:`d2ov_core.runtime.settings`) and defines ``TASK``, a :class:`~.base.Task` that owns what
differs between tasks on the torch-free side: decoding the graph's outputs into
:class:`~d2ov_core.runtime.detections.Detections`, the extra keys of the model block, the table the
app shows, the summary line, what it draws (through either renderer), the example images that fit
it, and how two results of the same image are compared (``verify``). The rest of the code asks the
task (:func:`get_task`, :func:`task_of`) instead of testing task names.

A new task is a module here named like it, its name among the ``task`` setting's choices, its export
and measure parts, its catalog entries and tests.
"""

from __future__ import annotations

import functools
import importlib

from ...errors import InputError
from .. import settings as S
from ..detections import Detections
from .base import Task

__all__ = ["Task", "TASK_NAMES", "get_task", "all_tasks", "task_of"]

#: every task, in the order the app lists them (the ``task`` setting's choices)
TASK_NAMES: tuple[str, ...] = tuple(S.SETTINGS["task"].choices or ())


@functools.cache
def get_task(name: str) -> Task:
    """The :class:`Task` called ``name``; :class:`~d2ov_core.errors.InputError` naming the valid
    tasks when there is none."""
    if name not in TASK_NAMES:
        raise InputError(f"unknown task {name!r}: expected one of {', '.join(TASK_NAMES)}")
    return importlib.import_module(f"{__name__}.{name}").TASK


def all_tasks() -> list[Task]:
    """Every task, in :data:`TASK_NAMES` order."""
    return [get_task(name) for name in TASK_NAMES]


def task_of(det: Detections) -> Task:
    """The task whose result ``det`` is, told by what it holds (for results that come without their
    model, e.g. read back from ``d2ov predict --json``): the most specific task that holds it."""
    return next(t for t in reversed(all_tasks()) if t.holds(det))
