"""Cache hygiene: what an interrupted run leaves behind, and cached IRs that no longer match their card.

Everything d2ov writes into its cache (``$D2OV_CACHE``, default ``~/.cache/d2ov``) is written under a
temporary name and renamed when complete:

  * ``weights/<host>/<path>``: downloads, written as ``.<name>.part-<pid>``;
  * ``ir/<model>/<key>/``: conversions, written into ``.<key>.tmp-*``;
  * small side files (``<file>.sha256``), written as ``.<name>.tmp-<pid>``.

A process killed mid-way (``kill -9``, out of memory, power loss) leaves the temporary name behind.
It is never used: lookups skip names that start with ``.``. The next run that looks at the same
target removes it, with a warning.

Who is still writing: a writer holds a shared ``flock`` on ``<tmp>/d2ov-locks-<uid>/<hash of target>.lock``
while it writes (a conversion: until its process exits). Leftovers are removed only under the
exclusive lock, so a live writer's temporary files are never touched, and a killed writer's lock
disappears with its process (the kernel drops it): no pid files, no guessing from ages.

Integrity: every cached IR folder holds ``d2ov.json`` with the sha256 of ``model.xml`` and
``model.bin`` (``ir_sha256``). :func:`ir_problem` compares them; a cached folder that no longer
matches (truncated, edited, half-restored from a backup) is removed with a warning and rebuilt by
the caller (conversion, or a fresh Hub fetch).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from ..errors import IRError

__all__ = [
    "cache_dir",
    "sha256_file",
    "write_atomic",
    "LEFTOVER_MARKERS",
    "is_leftover",
    "clean_leftovers",
    "sweep",
    "writing",
    "hold",
    "ir_problem",
    "discard",
    "claim_ir",
    "check_given_ir",
    "cached_irs",
]

log = logging.getLogger("d2ov")
_CHUNK = 1 << 20


def cache_dir() -> Path:
    """Root of d2ov's cache: ``$D2OV_CACHE`` or ``~/.cache/d2ov``."""
    root = os.environ.get("D2OV_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "d2ov")
    return Path(root)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` under a temporary name (``.<name>.tmp-<pid>``) and rename it: a reader
    finds the old file or the whole new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


#: What a temporary name contains: ``.<target>.tmp-...`` (folders, side files), ``.<target>.part-<pid>`` (downloads)
LEFTOVER_MARKERS = (".tmp-", ".part-")
IR_FILES = ("model.xml", "model.bin")

_held: dict[str, int] = {}  # lock path -> fd held until the process exits (see hold)
_held_lock = threading.Lock()
_verified: dict[tuple, str | None] = {}  # (folder, sizes, mtimes) -> ir_problem result


# ----------------------------------------------------------------------------- locks


def _lock_path(target: Path) -> Path:
    """Lock files live outside the cache (nothing extra in it), one folder per user."""
    target = Path(target)
    digest = hashlib.sha256(str(target.parent.resolve() / target.name).encode()).hexdigest()[:24]
    locks = Path(tempfile.gettempdir()) / f"d2ov-locks-{os.getuid()}"
    locks.mkdir(mode=0o700, exist_ok=True)
    return locks / f"{digest}.lock"


def _open_lock(target: Path) -> int:
    return os.open(_lock_path(target), os.O_RDWR | os.O_CREAT, 0o644)


@contextlib.contextmanager
def writing(target: str | os.PathLike) -> Iterator[None]:
    """Hold the shared lock of ``target`` while writing its temporary files (after cleaning
    any leftovers of earlier, dead writers)."""
    target = Path(target)
    clean_leftovers(target)
    fd = _open_lock(target)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # waits only for a cleaner (milliseconds)
        yield
    finally:
        os.close(fd)


def hold(target: str | os.PathLike) -> None:
    """Hold the shared lock of ``target`` until this process exits (for writers that cannot say
    when they are done, such as :func:`d2ov_core.convert.convert`)."""
    path = str(_lock_path(Path(target)))
    with _held_lock:
        if path in _held:
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_SH)
        _held[path] = fd


# ----------------------------------------------------------------------------- leftovers


def is_leftover(name: str) -> bool:
    """Whether a file or folder name is a temporary name of d2ov's atomic writes."""
    return name.startswith(".") and any(m in name for m in LEFTOVER_MARKERS)


def _target_of(leftover: Path) -> Path:
    name = leftover.name[1:]
    cut = min(i for i in (name.find(m) for m in LEFTOVER_MARKERS) if i >= 0)
    return leftover.with_name(name[:cut])


def _leftovers_of(target: Path) -> list[Path]:
    parent = target.parent
    if not parent.is_dir():
        return []
    prefixes = tuple(f".{target.name}{m}" for m in LEFTOVER_MARKERS)
    return sorted(p for p in parent.iterdir() if p.name.startswith(prefixes))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def clean_leftovers(target: str | os.PathLike) -> list[Path]:
    """Remove what interrupted writers of ``target`` left beside it (``.<name>.tmp-*``,
    ``.<name>.part-*``), unless a live process is writing it. Returns the removed paths."""
    target = Path(target)
    found = _leftovers_of(target)
    if not found:
        return []
    fd = _open_lock(target)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a live writer: its files are not leftovers
            log.debug("%s is being written by another process; leftovers kept", target)
            return []
        removed = []
        for path in _leftovers_of(target):  # listed again under the lock
            log.warning("removed %s: left by an interrupted run (killed mid-way?), never used", path)
            _remove(path)
            removed.append(path)
        return removed
    finally:
        os.close(fd)


def sweep(root: str | os.PathLike | None = None) -> list[Path]:
    """Clean the leftovers of dead writers everywhere under ``root`` (default: the whole cache)."""
    root = Path(root) if root is not None else cache_dir()
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    targets = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in list(dirnames) + filenames:
            if is_leftover(name):
                targets.add(_target_of(Path(dirpath) / name))
        dirnames[:] = [d for d in dirnames if not is_leftover(d)]
    for target in sorted(targets):
        removed += clean_leftovers(target)
    return removed


# ----------------------------------------------------------------------------- IR integrity


def ir_problem(folder: str | os.PathLike) -> str | None:
    """Why the IR in ``folder`` cannot be trusted (``None`` when ``model.xml``/``model.bin`` match
    the sha256 recorded in ``d2ov.json``)."""
    folder = Path(folder)
    card = folder / "d2ov.json"
    try:
        stats = tuple(
            (f, os.stat(folder / f).st_size, os.stat(folder / f).st_mtime_ns) for f in (*IR_FILES, "d2ov.json")
        )
    except FileNotFoundError as e:
        return f"{Path(e.filename).name} is missing"
    key = (str(folder.absolute()), stats)
    if key in _verified:
        return _verified[key]
    try:
        recorded = json.loads(card.read_text()).get("ir_sha256") or {}
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded is None:
        problem = "d2ov.json is unreadable"
    elif not all(recorded.get(f) for f in IR_FILES):
        problem = "d2ov.json records no sha256 for model.xml and model.bin"
    else:
        problem = None
        for f in IR_FILES:
            digest = sha256_file(folder / f)
            if digest != recorded[f]:
                problem = (
                    f"{f} sha256 {digest[:12]}... does not match the {recorded[f][:12]}... recorded in d2ov.json "
                    "(truncated, corrupt, or from another model)"
                )
                break
    _verified[key] = problem
    return problem


def discard(folder: Path, reason: str) -> None:
    """Move a bad cached IR folder out of the way (renamed to a leftover name first, so no reader
    ever sees it half-deleted) and delete it."""
    log.warning("cached IR %s: %s; removed, it will be rebuilt", folder, reason)
    trash = folder.with_name(f".{folder.name}.tmp-discarded-{os.getpid()}")
    try:
        os.replace(folder, trash)
    except OSError:
        return
    _remove(trash)


def claim_ir(final_dir: str | os.PathLike, reuse: bool = True) -> bool:
    """The cache step of a conversion into ``final_dir``: clean leftovers of killed conversions of
    the same target, and return ``True`` when ``reuse`` and ``final_dir`` holds an IR that matches
    its ``d2ov.json`` (a mismatching one is removed with a warning). On ``False`` the caller is
    about to convert: this process holds the target's lock until it exits."""
    final_dir = Path(final_dir)
    clean_leftovers(final_dir)
    if reuse and (final_dir / "model.xml").is_file():
        problem = ir_problem(final_dir)
        if problem is None:
            return True
        discard(final_dir, problem)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    hold(final_dir)
    return False


def check_given_ir(xml: str | os.PathLike) -> Path:
    """An IR the user named: when a ``d2ov.json`` card sits beside its ``model.xml``, the files must
    match it (a truncated ``.bin``, or the ``.bin`` of another model, is refused with one line)."""
    xml = Path(xml)
    if xml.name == "model.xml" and (xml.parent / "d2ov.json").is_file():
        problem = ir_problem(xml.parent)
        if problem is not None:
            raise IRError(f"{xml.parent}: {problem}")
    return xml


def cached_irs(root: str | os.PathLike) -> list[Path]:
    """``model.xml`` of every sound conversion under ``root/<key>/``, newest first.

    Leftovers of killed conversions are cleaned (never returned); folders whose files do not match
    their ``d2ov.json`` are removed with a warning (so the caller converts or fetches again).
    """
    root = Path(root)
    if not root.is_dir():
        return []
    good = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            if is_leftover(entry.name):
                clean_leftovers(_target_of(entry))
            continue
        if not entry.is_dir() or not (entry / "model.xml").is_file():
            continue
        problem = ir_problem(entry)
        if problem is not None:
            discard(entry, problem)
            continue
        good.append(entry / "model.xml")
    return sorted(good, key=lambda p: p.stat().st_mtime, reverse=True)
