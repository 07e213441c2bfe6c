"""Many images at once: uploaded files (images and ``.zip`` archives of them) through a predictor's
pipeline, into per-image results, rendered images, one COCO-results JSON and one CSV.

Flow: :func:`list_inputs` names the images (nothing is decoded; the limits on the number of files and
the archives' sizes are checked here, before any model work) -> :func:`predict_batch` decodes them
one at a time and streams them through the predictor's own pipeline (several requests in flight,
:meth:`~d2ov_core.runtime.predictor.Predictor.stream_frames`), yielding one :class:`BatchItem` per
image in input order -> :func:`run_batch` renders each to a JPEG on disk and gathers the COCO results
and CSV rows. Only the images in flight are held in memory; the gallery is file paths.

Untrusted archives: members are read into memory with a bounded read and decoded from bytes
(:func:`~d2ov_core.runtime.images.load_image`), never extracted by their names (``../x.png`` or
``/etc/x.png`` are only labels). Declared sizes are checked first and not trusted: the read stops at
the per-member limit (``D2OV_MAX_FILE_BYTES``), at the batch's total (``D2OV_MAX_BATCH_BYTES``) and at
a compression ratio beyond ``D2OV_MAX_ZIP_RATIO`` (zip bombs: the whole batch is refused). Members that
are not images (by suffix), hidden files, archives inside the archive and encrypted members are
skipped and listed. An image that does not decode is an error of that file (in the summary, the CSV
and the JSON's ``failed``), not of the batch.

COCO results (:func:`coco_document`): ``results`` is the standard list ``COCO.loadRes`` reads
(``image_id``, ``category_id``, ``bbox`` ``[x, y, w, h]``, ``score``; ``segmentation`` as COCO RLE for
mask models; ``keypoints`` ``[x, y, score] * K`` for keypoint models), built by the task
(:meth:`~d2ov_core.runtime.tasks.Task.coco_results`, the code ``d2ov eval`` scores with);
``images`` maps file names to ids (1, 2, ... in input order), ``categories`` category ids to class
names (``category_id`` = the model's class id + 1). A task whose answer holds more than COCO's results
format carries (a map of segments) says so in ``note`` (:attr:`~d2ov_core.runtime.tasks.Task.coco_results_note`);
``d2ov predict --json`` and ``/detect`` give all of it.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import dataclasses
import json
import os
import shutil
import struct
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ImageError, InputError
from ..runtime import images as I
from ..runtime.detections import Detections
from ..runtime.images import IMAGE_SUFFIXES, load_image
from ..runtime.tasks import get_task
from ..runtime.video import Frame
from .render import for_display, render
from .video import frames_through

__all__ = [
    "Entry",
    "Inputs",
    "BatchItem",
    "BatchRun",
    "list_inputs",
    "predict_batch",
    "run_batch",
    "coco_document",
    "CSV_COLUMNS",
    "SKIP_REASONS",
    "max_batch_files",
    "max_batch_bytes",
    "max_zip_ratio",
]

#: the CSV's columns: one row per detection; an image that could not be read has one row with its error
CSV_COLUMNS = ("file", "image_id", "label", "score", "x1", "y1", "x2", "y2", "error")
#: members smaller than this are never refused for their compression ratio (a tiny flat image may
#: compress well; it cannot be a bomb)
RATIO_FLOOR_BYTES = 1 << 20
_CHUNK = 1 << 20
#: archive members listed at most (the skipped ones included), as a multiple of the file limit
_ENTRIES_PER_FILE = 10


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise InputError(f"{name} must be a whole number, got {raw!r}") from None
    if value < 1:
        raise InputError(f"{name} must be >= 1, got {raw!r}")
    return value


def max_batch_files() -> int:
    """Most images in one batch: ``D2OV_MAX_BATCH_FILES`` (default 500)."""
    return _env_int("D2OV_MAX_BATCH_FILES", 500)


def max_batch_bytes() -> int:
    """Most bytes one batch reads (files, plus archive members uncompressed): ``D2OV_MAX_BATCH_BYTES``
    (default 1 GiB)."""
    return _env_int("D2OV_MAX_BATCH_BYTES", 1 << 30)


def max_zip_ratio() -> int:
    """Largest compression ratio (uncompressed / compressed) of an archive member of 1 MiB or more:
    ``D2OV_MAX_ZIP_RATIO`` (default 100; JPEG and PNG hardly compress)."""
    return _env_int("D2OV_MAX_ZIP_RATIO", 100)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One image of a batch: an uploaded file, or a member of an uploaded archive (never extracted)."""

    name: str  # how it is shown: the file's name, or "<archive>/<member>"
    path: Path  # the uploaded file, or the archive
    member: zipfile.ZipInfo | None = None


@dataclasses.dataclass
class Inputs:
    """What :func:`list_inputs` found: the images, in order, and what it skipped, ``(name, reason)``."""

    images: list[Entry]
    skipped: list[tuple[str, str]]

    def skipped_text(self) -> str:
        """``skipped 2 files that are not images: a.txt, b.pdf; ...`` (empty when nothing was skipped)."""
        by_reason: dict[str, list[str]] = collections.defaultdict(list)
        for name, reason in self.skipped:
            by_reason[reason].append(name)
        parts = []
        for reason, names in by_reason.items():
            one, many = SKIP_REASONS[reason]
            shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
            parts.append(f"skipped {len(names)} {one if len(names) == 1 else many}: {shown}")
        return "; ".join(parts)


#: why a file is skipped -> how the summary says it of one file, of several
SKIP_REASONS = {
    "not an image": ("file that is not an image", "files that are not images"),
    "hidden": ("file that is hidden (or macOS metadata)", "files that are hidden (or macOS metadata)"),
    "archive in an archive": (
        "archive inside an archive (not opened)",
        "archives inside an archive (not opened)",
    ),
    "encrypted": ("file that is encrypted", "files that are encrypted"),
}


def _is_hidden(name: str) -> bool:
    parts = [p for p in name.replace("\\", "/").split("/") if p]
    return any((p.startswith(".") and p not in (".", "..")) or p == "__MACOSX" for p in parts)


def _reason_to_skip(name: str) -> str | None:
    """Why a file or member ``name`` is not an image of the batch (by its name), or ``None``."""
    suffix = Path(name).suffix.lower()
    if _is_hidden(name):
        return "hidden"
    if suffix == ".zip":
        return "archive in an archive"
    if suffix not in IMAGE_SUFFIXES:
        return "not an image"
    return None


def list_inputs(files: Sequence[tuple[str | os.PathLike, str]]) -> Inputs:
    """The images of ``files`` (``(path, shown name)`` pairs: images and ``.zip`` archives of images),
    in order, without decoding any. Raises a one-line :class:`~d2ov_core.errors.InputError` for no
    images at all, more than :func:`max_batch_files`, archives whose declared sizes exceed
    :func:`max_batch_bytes` or a compression ratio beyond :func:`max_zip_ratio`, or a file that says
    ``.zip`` and is not one."""
    limit, total_limit, ratio = max_batch_files(), max_batch_bytes(), max_zip_ratio()
    if len(files) > limit:
        raise InputError(f"too many files: {len(files)}, at most {limit} images a batch (D2OV_MAX_BATCH_FILES)")
    images: list[Entry] = []
    skipped: list[tuple[str, str]] = []
    declared = 0
    for k, (src, shown) in enumerate(files):
        path = Path(src)
        if Path(shown).suffix.lower() != ".zip":
            reason = _reason_to_skip(shown)
            if reason:
                skipped.append((shown, reason))
            else:
                images.append(Entry(shown, path))
                declared += path.stat().st_size
        else:
            declared += _list_archive(path, shown, limit, ratio, images, skipped)
        if declared > total_limit:
            raise InputError(
                f"{shown}: the batch would read {declared / 1e6:.0f} MB, at most {total_limit / 1e6:.0f} MB "
                "(D2OV_MAX_BATCH_BYTES)"
            )
        if len(images) > limit and k < len(files) - 1:
            raise InputError(f"too many images: {len(images)} and more, at most {limit} a batch (D2OV_MAX_BATCH_FILES)")
    if len(images) > limit:
        raise InputError(f"too many images: {len(images)}, at most {limit} a batch (D2OV_MAX_BATCH_FILES)")
    if not images:
        found = Inputs([], skipped).skipped_text() or "no files"
        raise InputError(
            f"no images to run on: expected JPEG, PNG, BMP, GIF, WebP or TIFF files or .zip archives of them, "
            f"found {found}"
        )
    return Inputs(images, skipped)


def _list_archive(
    path: Path, shown: str, limit: int, ratio: int, images: list[Entry], skipped: list[tuple[str, str]]
) -> int:
    """Add the archive's images to ``images`` and what it skips to ``skipped``; the bytes its images
    declare (each counted up to the per-file limit, beyond which it is not read)."""
    declared = 0
    for info in _members(path, shown, limit * _ENTRIES_PER_FILE):
        name = f"{shown}/{info.filename}"
        reason = _reason_to_skip(info.filename)
        if reason is None and info.flag_bits & 0x1:
            reason = "encrypted"
        if reason:
            skipped.append((name, reason))
            continue
        if info.file_size >= RATIO_FLOOR_BYTES and info.file_size > ratio * max(info.compress_size, 1):
            raise InputError(
                f"{name}: compressed {info.file_size / max(info.compress_size, 1):.0f} to 1, "
                f"expected at most {ratio} to 1 (a zip bomb?): the batch is refused"
            )
        images.append(Entry(name, path, info))
        declared += min(info.file_size, I.MAX_FILE_BYTES + 1)
    return declared


def _members(path: Path, shown: str, most: int) -> list[zipfile.ZipInfo]:
    """The file members of the archive at ``path`` (directories left out), at most ``most``: an archive
    whose end record declares more entries is refused before its directory is parsed."""
    declared = _declared_entries(path)
    if declared is not None and declared > most:
        raise InputError(f"{shown}: {declared} entries in the archive, at most {most} are read")
    try:
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise InputError(f"{shown}: not a readable .zip archive ({e})") from None
    if len(members) > most:
        raise InputError(f"{shown}: {len(members)} files in the archive, at most {most} are read")
    return members


def _declared_entries(path: Path) -> int | None:
    """How many entries the archive's end-of-central-directory record declares (``None``: no record
    found, or ZIP64, whose count zipfile reads)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - (22 + 0xFFFF)))  # the record (22 bytes) and its comment (< 64 KiB)
        tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) < at + 22:
        return None
    n = int(struct.unpack_from("<H", tail, at + 10)[0])
    return None if n == 0xFFFF else n


class _Reader:
    """Reads the batch's files and members with bounded reads, counting the batch's total."""

    def __init__(self) -> None:
        self.total = 0
        self.total_limit = max_batch_bytes()
        self.ratio = max_zip_ratio()
        self._archives: dict[Path, zipfile.ZipFile] = {}
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    def read(self, entry: Entry) -> bytes:
        """The bytes of ``entry``: :class:`~d2ov_core.errors.ImageError` for a file over the per-file
        limit (that file only); :class:`~d2ov_core.errors.InputError` when the batch's total or a
        member's compression ratio goes beyond its limit (the batch)."""
        per_file = I.MAX_FILE_BYTES
        if entry.member is None:
            size = entry.path.stat().st_size
            if size > per_file:
                raise ImageError(f"{entry.name}: file is {size / 1e6:.1f} MB, the limit is {per_file / 1e6:.0f} MB")
            self._count(size, entry.name)
            return entry.path.read_bytes()
        info = entry.member
        if info.file_size > per_file:
            raise ImageError(
                f"{entry.name}: file is {info.file_size / 1e6:.1f} MB, the limit is {per_file / 1e6:.0f} MB"
            )
        zf = self._archives.get(entry.path)
        if zf is None:
            zf = self._archives[entry.path] = self._stack.enter_context(zipfile.ZipFile(entry.path))
        chunks, n = [], 0
        try:
            with zf.open(info) as f:
                while chunk := f.read(_CHUNK):
                    n += len(chunk)
                    if n >= RATIO_FLOOR_BYTES and n > self.ratio * max(info.compress_size, 1):
                        raise InputError(
                            f"{entry.name}: decompresses beyond {self.ratio} to 1 (a zip bomb?): the batch is refused"
                        )
                    if n > per_file:
                        raise ImageError(f"{entry.name}: more than {per_file / 1e6:.0f} MB uncompressed, the limit")
                    self._count(len(chunk), entry.name)
                    chunks.append(chunk)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as e:
            raise ImageError(f"{entry.name}: cannot read it from the archive ({e})") from None
        return b"".join(chunks)

    def _count(self, n: int, name: str) -> None:
        self.total += n
        if self.total > self.total_limit:
            raise InputError(
                f"{name}: the batch read more than {self.total_limit / 1e6:.0f} MB, the limit (D2OV_MAX_BATCH_BYTES)"
            )


@dataclasses.dataclass
class BatchItem:
    """One image's outcome: its detections and pixels, or why it could not be read."""

    index: int  # 0-based, input order
    name: str
    rgb: np.ndarray | None = None
    det: Detections | None = None
    error: str | None = None


def predict_batch(predictor, inputs: Inputs, threshold: float | None = None) -> Iterator[BatchItem]:
    """One :class:`BatchItem` per image of ``inputs``, in order: each decoded when the pipeline asks
    for it and run through the predictor's pipeline (requests in flight; one at a time for a predictor
    without one); an image that does not read or decode is an item with its ``error``. A batch-level
    limit (total bytes, zip bomb) raises :class:`~d2ov_core.errors.InputError`."""
    failed: collections.deque[BatchItem] = collections.deque()

    def frames(reader: _Reader) -> Iterator[Frame]:
        for i, entry in enumerate(inputs.images):
            try:
                rgb = load_image(reader.read(entry), name=entry.name)
            except InputError as e:
                if not isinstance(e, ImageError):
                    raise  # the whole batch
                failed.append(BatchItem(i, entry.name, error=str(e)))
                continue
            yield Frame(i, 0.0, rgb)

    with _Reader() as reader:
        for frame, rgb, det in frames_through(predictor, frames(reader), threshold):
            while failed and failed[0].index < frame.number:
                yield failed.popleft()
            yield BatchItem(frame.number, inputs.images[frame.number].name, rgb, det)
        yield from failed


@dataclasses.dataclass
class BatchRun:
    """What :func:`run_batch` made: the gallery (rendered JPEG, name) one per image read, the COCO
    document (:func:`coco_document`), the files written, and the numbers the summary gives."""

    gallery: list[tuple[str, str]]
    document: dict[str, Any]
    coco_json: Path | None
    csv: Path | None
    images: int
    failed: list[tuple[str, str]]
    skipped_text: str
    per_class: dict[str, int]
    wall_s: float

    @property
    def detections(self) -> int:
        return sum(self.per_class.values())

    def summary(self, where: str = "") -> str:
        """One Markdown paragraph: images, detections per class, time; what was skipped or failed."""
        classes = ", ".join(f"{k} {n}" for k, n in sorted(self.per_class.items(), key=lambda kv: (-kv[1], kv[0])))
        rate = self.images / self.wall_s if self.wall_s > 0 else 0.0
        text = (
            f"**{self.images}** image{'s' if self.images != 1 else ''}, **{self.detections}** detections"
            + (f" ({classes})" if classes else "")
            + f" in {self.wall_s:.1f} s ({rate:.1f} images/s){where}"
        )
        if self.skipped_text:
            text += f"; {self.skipped_text}"
        if self.failed:
            text += f"; {len(self.failed)} could not be read: " + "; ".join(f"{e}" for _, e in self.failed[:10])
            text += f" and {len(self.failed) - 10} more" if len(self.failed) > 10 else ""
        return text


def coco_document(
    model: dict[str, Any],
    threshold: float,
    images: list[dict[str, Any]],
    results: list[dict[str, Any]],
    failed: list[tuple[str, str]],
    skipped: list[tuple[str, str]],
) -> dict[str, Any]:
    """The batch's COCO-results JSON (one schema, built here only): ``{"model", "threshold",
    "images": [{"id", "file_name", "width", "height"}], "categories": [{"id", "name"}], "results":
    [COCO results], "failed": [{"file_name", "error"}], "skipped": [{"file_name", "reason"}]}`` (reasons: the keys
    of :data:`SKIP_REASONS`);
    ``note``: what the model's task leaves out of them, if anything."""
    doc: dict[str, Any] = {
        "model": {k: model[k] for k in ("name", "task", "precision") if k in model},
        "threshold": float(threshold),
        "images": images,
        "categories": [{"id": i + 1, "name": str(n)} for i, n in enumerate(model.get("classes", []))],
        "results": results,
        "failed": [{"file_name": n, "error": e} for n, e in failed],
        "skipped": [{"file_name": n, "reason": r} for n, r in skipped],
    }
    note = get_task(model["task"]).coco_results_note
    if note:
        doc["note"] = note
    return doc


def run_batch(
    predictor,
    inputs: Inputs,
    out_dir: str | os.PathLike,
    threshold: float | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    model: dict[str, Any] | None = None,
) -> BatchRun:
    """Run ``predictor`` on every image of ``inputs`` (:func:`predict_batch`) and write, in a new folder
    ``batch-<id>`` of ``out_dir``: one rendered JPEG per image read (``images/0001.jpg``, ...; a photo
    over 2048 px drawn on its display copy, :func:`~d2ov_core.serve.render.for_display`),
    ``coco.json`` (:func:`coco_document`) and ``detections.csv`` (:data:`CSV_COLUMNS`: box in
    original-image pixels to 1e-3 px, score to 1e-6, as ``d2ov predict --json``). The folder appears
    under that name only when complete. ``progress(done, total, images/s)`` after each image;
    ``model``: the model block (default ``predictor.describe()``)."""
    model = model or predictor.describe()
    thr = float(predictor.metadata.confidence_threshold if threshold is None else threshold)
    category_of = {i: i + 1 for i in range(len(predictor.labels))}
    task = get_task(predictor.task)
    out_dir = Path(out_dir)
    key = uuid.uuid4().hex
    final, tmp = out_dir / f"batch-{key}", out_dir / f".batch-{key}.part-{os.getpid()}"
    (tmp / "images").mkdir(parents=True)
    gallery: list[tuple[str, str]] = []
    images: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    failed: list[tuple[str, str]] = []
    per_class: collections.Counter[str] = collections.Counter()
    total = len(inputs.images)
    t0 = time.perf_counter()
    try:
        with open(tmp / "detections.csv", "w", newline="") as f:
            rows = csv.writer(f)
            rows.writerow(CSV_COLUMNS)
            for done, item in enumerate(predict_batch(predictor, inputs, threshold), 1):
                if item.det is None or item.rgb is None:
                    failed.append((item.name, item.error or "not read"))
                    rows.writerow([item.name, "", "", "", "", "", "", "", item.error])
                else:
                    image_id = len(images) + 1
                    h, w = item.det.image_size
                    images.append({"id": image_id, "file_name": item.name, "width": w, "height": h})
                    results.extend(task.coco_results(item.det, image_id, category_of))
                    rows.writerows(csv_rows(item.name, image_id, item.det))
                    per_class.update(item.det.labels.tolist())
                    rel = Path("images") / f"{image_id:04d}.jpg"
                    drawn = render(*for_display(item.rgb, item.det), predictor.labels, task=predictor.task)
                    Image.fromarray(drawn).save(tmp / rel, quality=90)
                    gallery.append((str(final / rel), item.name))
                if progress:
                    progress(done, total, done / (time.perf_counter() - t0))
        doc = coco_document(model, thr, images, results, failed, inputs.skipped)
        (tmp / "coco.json").write_text(json.dumps(doc))
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BatchRun(
        gallery=gallery,
        document=doc,
        coco_json=final / "coco.json",
        csv=final / "detections.csv",
        images=len(images),
        failed=failed,
        skipped_text=Inputs([], inputs.skipped).skipped_text(),
        per_class=dict(per_class),
        wall_s=time.perf_counter() - t0,
    )


def csv_rows(name: str, image_id: int, det: Detections) -> list[list[Any]]:
    """The CSV rows of one image (:data:`CSV_COLUMNS`), values as ``Detections.to_dict`` rounds them."""
    return [
        [name, image_id, inst["label"], inst["score"], *inst["box"], ""]
        for inst in det.to_dict(with_masks=False)["instances"]
    ]
