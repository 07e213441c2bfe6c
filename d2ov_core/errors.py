"""The one exception family of d2ov.

Every user-facing failure raises a :class:`D2ovError` subclass whose message says what was
expected and what was found, in one line. The CLI turns them into exit code 2, ``app.py`` into
``gr.Error``; nothing else catches them.
"""

import re

__all__ = [
    "D2ovError",
    "InputError",
    "ImageError",
    "ModelNotFoundError",
    "IRError",
    "DeviceError",
    "DownloadError",
    "UploadError",
    "ConversionError",
    "NotReadyError",
    "ServerError",
    "first_line",
]


_LOCATION_LINE = re.compile(r"^(Exception from \S+:\d+:?|Check '.*' failed at \S+:\d+:?|\[ ?[A-Z_]+ ?\])\s*$")


def first_line(exc: BaseException) -> str:
    """The first informative line of an exception's message. OpenVINO raises multi-line C++ text
    whose first lines only say where in its sources it was thrown
    (``Exception from src/inference/src/cpp/core.cpp:84:``); those are skipped."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    for line in lines:
        if not _LOCATION_LINE.match(line):
            return line
    return lines[0] if lines else type(exc).__name__


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


class UploadError(D2ovError):
    """An upload to the Hugging Face Hub (``d2ov push``, ``d2ov space``) failed: refused token, no
    write access, unreachable Hub, or an answer huggingface_hub could not use."""


class ConversionError(D2ovError):
    """Detectron2 -> OpenVINO conversion failed."""


class NotReadyError(D2ovError):
    """A model the server knows is not ready: being prepared (try again soon) or unavailable (why)."""


class ServerError(D2ovError):
    """A remote model server (KServe v2 protocol: d2ov's KServe predictor, OpenVINO Model Server) is
    unreachable, did not answer in time, or answered something that is not a d2ov model's output."""
