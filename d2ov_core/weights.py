"""Where weights come from, and getting them onto disk safely. No torch import at module level.

A weights spec is one of:
  * ``"random"``: the exact architecture with seeded random init, its norms and output layers
    calibrated on one photo so that it proposes and scores like a trained model (100 spread-out
    detections on a photo: full head work) -- for tests and speed only, never a detector;
  * a URL (``http(s)://``): downloaded once into the cache (a catalog entry's URL, or one the user typed);
  * a local path the user gave.

Downloads show a progress bar, go to ``$D2OV_CACHE/weights`` (default ``~/.cache/d2ov``), are written
to a temporary name and renamed only when complete (never a partial file under the final name),
are checked against Content-Length (truncation) and, for Model Zoo files, against the md5 prefix in
their name; the sha256 is recorded beside the file (``<file>.sha256``).

A cached download is reused only while it still matches the sha256 recorded beside it (otherwise
it is downloaded again, with a warning); ``.part-<pid>`` files of killed downloads are removed by the
next download of the same file (see :mod:`d2ov_core.cache`).

Security: ``.pkl`` checkpoints are pickles and loading one runs code. :func:`load_into` unpickles a
``.pkl`` only when it is a catalog URL's download or a local path the user gave (the CLI / Python
API); a ``.pkl`` downloaded from any other URL, and every ``.pth``, goes through
``torch.load(weights_only=True)`` and is refused, not retried unsafely, if that fails.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .errors import ConversionError, DownloadError, ModelNotFoundError, first_line

__all__ = ["cache_dir", "resolve", "download", "sha256_file", "load_into", "may_unpickle", "RANDOM"]

RANDOM = "random"
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


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def resolve(spec: str, progress: bool = True) -> tuple[str, str]:
    """Weights spec -> ``(local_path_or_'random', sha256)``. Downloads URLs into the cache."""
    if spec == RANDOM:
        return RANDOM, ""
    if is_url(spec):
        path = download(spec, progress=progress)
        return str(path), _recorded_sha256(path)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(f"weights file not found: {spec} (expected a path, a URL or 'random')")
    return str(path), sha256_file(path)


def _recorded_sha256(path: Path) -> str:
    side = Path(str(path) + ".sha256")
    if side.is_file():
        return side.read_text().split()[0]
    digest = sha256_file(path)
    _write_atomic(side, (digest + "\n").encode())
    return digest


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _cache_path(url: str) -> Path:
    parsed = urllib.parse.urlparse(url)
    parts = [p for p in (parsed.netloc + parsed.path).split("/") if p not in ("", ".", "..")]
    return cache_dir().joinpath("weights", *parts)


_MD5_IN_NAME = re.compile(r"_([0-9a-f]{6})\.pkl$")


def download(url: str, dest: Path | None = None, progress: bool = True, expected_sha256: str | None = None,
             timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` (default: the cache) atomically; reuse a complete earlier copy.

    Raises :class:`DownloadError` on a network failure, a truncated body or a checksum mismatch; in
    every case nothing is left under the final name.
    """
    from . import cache

    dest = Path(dest) if dest else _cache_path(url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with cache.writing(dest):  # removes .part files of killed downloads; ours is safe while we live
        if _reusable(dest, expected_sha256):
            return dest
        return _fetch(url, dest, progress, expected_sha256, timeout)


def _reusable(dest: Path, expected_sha256: str | None) -> bool:
    """An earlier complete download that still matches its recorded sha256 (and the expected one)."""
    side = Path(str(dest) + ".sha256")
    if not (dest.is_file() and side.is_file()):
        return False
    recorded = (side.read_text().split() or [""])[0]
    if expected_sha256 is not None and recorded != expected_sha256:
        return False
    actual = sha256_file(dest)
    if actual != recorded:
        import logging

        logging.getLogger("d2ov").warning("%s: sha256 %s... does not match the %s... recorded when it was downloaded "
                                          "(corrupt or modified); downloading it again", dest, actual[:12], recorded[:12])
        return False
    return True


def _fetch(url: str, dest: Path, progress: bool, expected_sha256: str | None, timeout: float) -> Path:
    side = Path(str(dest) + ".sha256")
    tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    sha, md5 = hashlib.sha256(), hashlib.md5()
    received = 0
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "d2ov"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            bar = _progress_bar(total, dest.name) if progress else None
            with open(tmp, "wb") as f:
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    sha.update(chunk)
                    md5.update(chunk)
                    received += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            if bar is not None:
                bar.close()
        if total is not None and received != total:
            raise DownloadError(f"download of {url} truncated: got {received:,} of {total:,} bytes")
        m = _MD5_IN_NAME.search(dest.name)
        if m and not md5.hexdigest().startswith(m.group(1)):
            raise DownloadError(f"download of {url} is corrupt: md5 {md5.hexdigest()[:6]}..., name says {m.group(1)}")
        digest = sha.hexdigest()
        if expected_sha256 and digest != expected_sha256:
            raise DownloadError(f"download of {url}: sha256 {digest} does not match the expected {expected_sha256}")
        os.replace(tmp, dest)
        _write_atomic(side, (digest + "\n").encode())
        return dest
    except DownloadError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(
            f"cannot download {url}: {reason} (offline? pass a local file with --weights PATH)"
        ) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _progress_bar(total: int | None, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, file=sys.stderr,
                mininterval=1.0)


def may_unpickle(path: str | os.PathLike) -> bool:
    """Whether d2ov may unpickle ``path``: a local file the user named (anything outside the download
    cache), or the download of a catalog URL. Not: a download from any other URL."""
    from . import catalog

    p = Path(path).absolute()
    downloads = (cache_dir() / "weights").absolute()
    if not p.is_relative_to(downloads):
        return True
    return any(p == _cache_path(s.weights).absolute() for s in catalog.CATALOG.values() if is_url(s.weights))


def load_into(model, path: str) -> None:
    """Load the checkpoint at ``path`` (from :func:`resolve`) into a Detectron2 model.

    ``.pkl`` (Detectron2 / Detectron model zoo format) goes through Detectron2's checkpointer,
    which unpickles: only ever call this with a catalog URL's download or a path the user named.
    Anything else goes through ``torch.load(weights_only=True)``.
    """
    import torch
    from detectron2.checkpoint import DetectionCheckpointer

    checkpointer = DetectionCheckpointer(model)
    if path.endswith(".pkl") and may_unpickle(path):
        checkpoint = checkpointer._load_file(path)  # noqa: SLF001  (pickle; see docstring)
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            first = first_line(e)
            if path.endswith(".pkl"):
                raise ConversionError(
                    f"{path}: a .pkl downloaded from a URL outside the catalog is not unpickled (unpickling runs code) "
                    f"and torch.load(weights_only=True) refuses it ({first}); if you trust it, pass its local path"
                ) from None
            raise ConversionError(
                f"{path}: not a plain tensor checkpoint that torch.load(weights_only=True) accepts ({first}); "
                "save the state_dict only: torch.save({'model': model.state_dict()}, path)"
            ) from None
        if not isinstance(obj, dict):
            raise ConversionError(f"{path}: expected a dict checkpoint, found {type(obj).__name__}")
        checkpoint = obj if "model" in obj else {"model": obj}
        checkpoint.setdefault("__author__", "d2ov")
        checkpoint["matching_heuristics"] = False
    incompatible = checkpointer._load_model(checkpoint)  # noqa: SLF001
    if incompatible.incorrect_shapes:
        key, got, want = incompatible.incorrect_shapes[0]
        raise ConversionError(
            f"{path}: weights do not fit the config: {key} has shape {tuple(got)} in the checkpoint, "
            f"{tuple(want)} in the model ({len(incompatible.incorrect_shapes)} mismatches)"
        )
    missing = [k for k in (incompatible.missing_keys or []) if not k.endswith(("pixel_mean", "pixel_std"))]
    if missing:
        raise ConversionError(
            f"{path}: weights do not fit the config: {len(missing)} parameters missing "
            f"(e.g. {', '.join(missing[:3])}); check the config matches the checkpoint"
        )
