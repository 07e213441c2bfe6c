"""The one exception family of d2ov.

Every user-facing failure raises a :class:`D2ovError` subclass whose message says what was
expected and what was found, in one line. The CLI turns them into exit code 2, ``app.py`` into
``gr.Error``; nothing else catches them.
"""

__all__ = [
    "D2ovError",
    "InputError",
    "ImageError",
    "ModelNotFoundError",
    "IRError",
    "DeviceError",
    "DownloadError",
    "ConversionError",
    "first_line",
]


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (OpenVINO and others raise multi-line C++ text)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class D2ovError(Exception):
    """Base class: a problem the user can act on (bad input, missing model, bad file)."""


class InputError(D2ovError, ValueError):
    """An argument is outside its documented range (threshold, size, option)."""


class ImageError(InputError):
    """A file or array is not a usable image."""


class ModelNotFoundError(D2ovError, LookupError):
    """A model name is not in the catalog, or a path does not exist."""


class IRError(D2ovError):
    """An OpenVINO IR is missing, truncated, mismatched or lacks d2ov metadata."""


class DeviceError(D2ovError):
    """An OpenVINO device string names no available device."""


class DownloadError(D2ovError):
    """A download failed, was truncated, or did not match its expected checksum."""


class ConversionError(D2ovError):
    """Detectron2 -> OpenVINO conversion failed."""
