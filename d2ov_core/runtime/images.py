"""Reading user images into one form: RGB ``uint8`` numpy ``(H, W, 3)``, EXIF orientation applied.

Accepts a path, raw bytes, a ``PIL.Image`` or a numpy array. Every failure is an
:class:`~d2ov_core.errors.ImageError` with one readable line; the pixel limit is checked from the
header, before any pixel is decoded (decompression bombs).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError, first_line

__all__ = ["load_image", "image_files", "IMAGE_SUFFIXES", "MAX_PIXELS", "MAX_FILE_BYTES"]

#: Largest image accepted, in pixels (width * height); override with D2OV_MAX_PIXELS.
MAX_PIXELS = int(os.environ.get("D2OV_MAX_PIXELS", 40_000_000))
#: Largest image file accepted, in bytes; override with D2OV_MAX_FILE_BYTES.
MAX_FILE_BYTES = int(os.environ.get("D2OV_MAX_FILE_BYTES", 50 * 1024 * 1024))
#: File suffixes d2ov treats as images when it lists a folder (what :func:`load_image` decodes).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def image_files(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """The image files in ``folder`` (by suffix, case-insensitive), sorted by path; hidden files skipped."""
    root = Path(folder)
    found = root.rglob("*") if recursive else root.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def load_image(src: Any, name: str | None = None) -> np.ndarray:
    """Return the image as RGB uint8 ``(H, W, 3)``.

    Args:
        src: a path (str / Path), bytes, a PIL image, or a numpy array ``(H, W)``, ``(H, W, 3)``
            (taken as RGB) or ``(H, W, 4)`` (RGBA, alpha dropped), dtype uint8.
        name: how to call the image in error messages (defaults to the path).
    """
    if isinstance(src, np.ndarray):
        return _from_array(src, name or "array")
    if isinstance(src, Image.Image):
        return _from_pil(src, name or "image")
    if isinstance(src, (bytes, bytearray)):
        return _open_bytes(bytes(src), name or "upload")
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        label = name or str(path)
        if not path.exists():
            raise ImageError(f"image not found: {label}")
        if not path.is_file():
            raise ImageError(f"not a file: {label}")
        size = path.stat().st_size
        if size == 0:
            raise ImageError(f"{label}: empty file (0 bytes), expected an image")
        if size > MAX_FILE_BYTES:
            raise ImageError(f"{label}: file is {size / 1e6:.1f} MB, the limit is {MAX_FILE_BYTES / 1e6:.0f} MB")
        return _open_bytes(path.read_bytes(), label)
    raise ImageError(f"expected an image path, bytes, PIL image or numpy array, got {type(src).__name__}")


def _open_bytes(data: bytes, label: str) -> np.ndarray:
    if not data:
        raise ImageError(f"{label}: empty file (0 bytes), expected an image")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{label}: file is {len(data) / 1e6:.1f} MB, the limit is {MAX_FILE_BYTES / 1e6:.0f} MB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not an image (expected JPEG, PNG, BMP, GIF, WebP or TIFF)") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{label}: too many pixels (limit {MAX_PIXELS:,})") from None
    except Exception as e:
        raise ImageError(f"{label}: cannot read image ({e})") from None
    return _from_pil(img, label)


def _from_pil(img: Image.Image, label: str) -> np.ndarray:
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise ImageError(f"{label}: image is {w}x{h} = {w * h:,} pixels, the limit is {MAX_PIXELS:,}")
    if w < 1 or h < 1:
        raise ImageError(f"{label}: image has no pixels ({w}x{h})")
    try:
        if getattr(img, "is_animated", False):
            img.seek(0)  # first frame of an animation
        img.load()
        ImageOps.exif_transpose(img, in_place=True)  # a copy only where the EXIF orientation turns it
        return _to_rgb(img)
    except ImageError:
        raise
    except Exception as e:  # truncated / corrupt data surfaces at decode time
        msg = first_line(e)
        raise ImageError(f"{label}: corrupt or truncated image ({msg})") from None


def _to_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = float(arr.max()) if arr.size else 0.0
        scale = 255.0 / (65535.0 if mode.startswith("I;16") or hi > 255 else max(hi, 1.0))
        gray = np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    if mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img)


def _from_array(arr: np.ndarray, label: str) -> np.ndarray:
    if arr.dtype != np.uint8:
        raise ImageError(f"{label}: expected a uint8 array, found {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageError(f"{label}: expected shape (H, W, 3) RGB, found {arr.shape}")
    h, w = arr.shape[:2]
    if h < 1 or w < 1:
        raise ImageError(f"{label}: image has no pixels ({w}x{h})")
    if h * w > MAX_PIXELS:
        raise ImageError(f"{label}: image is {w}x{h} = {w * h:,} pixels, the limit is {MAX_PIXELS:,}")
    return np.ascontiguousarray(arr[:, :, :3])
