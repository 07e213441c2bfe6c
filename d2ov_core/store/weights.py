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

Two environment variables make downloads hermetic (the test suite sets them):
  * ``D2OV_ZOO_URL``: a mirror of the Detectron2 Model Zoo (``https://dl.fbaipublicfiles.com/detectron2/``):
    catalog weights are fetched from ``$D2OV_ZOO_URL/<model id>/<file>`` instead (same files, same md5
    check; cached under the Model Zoo URL, so a mirrored download is the catalog's file);
  * ``D2OV_OFFLINE=1`` (or huggingface_hub's ``HF_HUB_OFFLINE=1``): no download is attempted; a file
    not already in the cache fails at once with one line.

A cached download is reused only while it still matches the sha256 recorded beside it (otherwise
it is downloaded again, with a warning); ``.part-<pid>`` files of killed downloads are removed by the
next download of the same file (see :mod:`d2ov_core.cache`).

Security: ``.pkl`` checkpoints are pickles and loading one runs code. :func:`may_unpickle` says which
may be unpickled (a catalog URL's download or a local path the user gave);
:func:`d2ov_core.export.checkpoint.load_into` loads everything else with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Union

from ..errors import DownloadError, ModelNotFoundError
from . import cache, catalog
from .cache import cache_dir, sha256_file, write_atomic
from .catalog import MODEL_ZOO_URL

__all__ = ["cache_dir", "resolve", "download", "sha256_file", "may_unpickle", "offline", "source_url", "RANDOM"]

RANDOM = "random"
_CHUNK = 1 << 20
#: how a long step reports progress: a progress bar (True), a callable taking one-line messages, or nothing
Progress = Union[bool, Callable[[str], None]]  # noqa: UP007 (a runtime alias: X | Y of a Callable needs 3.10+ typing)


_TRUE = ("1", "true", "yes", "on")


def offline() -> bool:
    """Whether downloads are switched off (``D2OV_OFFLINE`` or ``HF_HUB_OFFLINE`` set to 1/true/yes/on)."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("D2OV_OFFLINE", "HF_HUB_OFFLINE"))


def source_url(url: str) -> str:
    """Where ``url`` is fetched from: under ``D2OV_ZOO_URL`` for a Model Zoo URL when that is set,
    else ``url`` itself."""
    mirror = os.environ.get("D2OV_ZOO_URL", "").strip()
    if mirror and url.startswith(MODEL_ZOO_URL):
        if not is_url(mirror):
            raise DownloadError(f"D2OV_ZOO_URL: expected an http(s):// URL of a Model Zoo mirror, got {mirror!r}")
        return mirror.rstrip("/") + "/" + url[len(MODEL_ZOO_URL) :]
    return url


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def resolve(spec: str, progress: Progress = True) -> tuple[str, str]:
    """Weights spec -> ``(local_path_or_'random', sha256)``. Downloads URLs into the cache.

    ``progress``: ``True`` draws a progress bar on stderr, a callable receives one-line status
    messages (``"downloading x.pkl: 12 of 170 MB"``) about once a second, ``False`` is silent."""
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
    write_atomic(side, (digest + "\n").encode())
    return digest


def _cache_path(url: str) -> Path:
    parsed = urllib.parse.urlparse(url)
    parts = [p for p in (parsed.netloc + parsed.path).split("/") if p not in ("", ".", "..")]
    return cache_dir().joinpath("weights", *parts)


_MD5_IN_NAME = re.compile(r"_([0-9a-f]{6})\.pkl$")


def download(
    url: str,
    dest: Path | None = None,
    progress: Progress = True,
    expected_sha256: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` (default: the cache) atomically; reuse a complete earlier copy.

    ``url`` names the file (and its cache path); it is fetched from :func:`source_url` (a Model Zoo
    mirror when ``D2OV_ZOO_URL`` is set). Raises :class:`DownloadError` on a network failure, a
    truncated body or a checksum mismatch, and at once when :func:`offline`; in every case nothing is
    left under the final name.
    """
    dest = Path(dest) if dest else _cache_path(url)
    source = source_url(url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with cache.writing(dest):  # removes .part files of killed downloads; ours is safe while we live
        if _reusable(dest, expected_sha256):
            return dest
        if offline():
            var = "D2OV_OFFLINE" if os.environ.get("D2OV_OFFLINE", "").strip().lower() in _TRUE else "HF_HUB_OFFLINE"
            raise DownloadError(f"cannot download {source}: offline ({var} is set) and not in the cache")
        return _fetch(source, dest, progress, expected_sha256, timeout)


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

        logging.getLogger("d2ov").warning(
            "%s: sha256 %s... does not match the %s... recorded when it was downloaded "
            "(corrupt or modified); downloading it again",
            dest,
            actual[:12],
            recorded[:12],
        )
        return False
    return True


def _fetch(url: str, dest: Path, progress: Progress, expected_sha256: str | None, timeout: float) -> Path:
    side = Path(str(dest) + ".sha256")
    tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    sha, md5 = hashlib.sha256(), hashlib.md5()
    received = 0
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "d2ov"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            bar = _progress_bar(total, dest.name) if progress is True else None
            tell = progress if callable(progress) else None
            told = 0.0
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
                    if tell is not None and time.monotonic() - told >= 1.0:
                        told = time.monotonic()
                        of = f" of {total / 1e6:.0f}" if total else ""
                        tell(f"downloading {dest.name}: {received / 1e6:.0f}{of} MB")
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
        write_atomic(side, (digest + "\n").encode())
        return dest
    except DownloadError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"cannot download {url}: {reason} (offline?)") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _progress_bar(total: int | None, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, file=sys.stderr, mininterval=1.0)


def may_unpickle(path: str | os.PathLike) -> bool:
    """Whether d2ov may unpickle ``path``: a local file the user named (anything outside the download
    cache), or the download of a catalog URL. Not: a download from any other URL."""
    p = Path(path).absolute()
    downloads = (cache_dir() / "weights").absolute()
    if not p.is_relative_to(downloads):
        return True
    return any(p == _cache_path(s.weights).absolute() for s in catalog.CATALOG.values() if is_url(s.weights))
