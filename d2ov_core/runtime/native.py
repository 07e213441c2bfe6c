"""Whether the numba-compiled kernels (:mod:`~d2ov_core.runtime.kernels`) can run here: numba is
the ``fast`` extra (in ``d2ov[app]``, ``d2ov[serve]``, a Space and the development venv), not a
dependency of the base install, whose numpy code gives the same answers more slowly.

The kernels are imported on first use only: importing numba takes about 0.3 s, which a process
that never runs them does not pay.
"""

from __future__ import annotations

import functools
from types import ModuleType

__all__ = ["kernels", "require"]


def kernels() -> ModuleType | None:
    """:mod:`~d2ov_core.runtime.kernels`, or None when numba cannot be imported."""
    return _load()[0]


def require() -> ModuleType:
    """:mod:`~d2ov_core.runtime.kernels`, or ``ImportError`` saying what to install."""
    module, why = _load()
    if module is None:
        raise ImportError(f"the compiled kernels need numba (pip install 'd2ov[fast]'): {why}")
    return module


@functools.cache
def _load() -> tuple[ModuleType | None, str]:
    """The kernels module and '', or None and why not; tried once per process."""
    try:
        from . import kernels as module
    except ImportError as e:  # numba missing, or too old or new for this numpy
        return None, str(e)
    return module, ""
