"""What the web app does, as plain functions (no Gradio here): check what a request names, run the
model, and turn the result into what the page shows (image, table, JSON file, summary, model card).

:mod:`d2ov_core.serve.webapp` wires these into Gradio and turns every
:class:`~d2ov_core.errors.D2ovError` into one ``gr.Error``. Untrusted input: the image must be a file
Gradio received (its upload folder), the model a name from the list, the device one of the listed
devices, the precision one of :data:`~d2ov_core.runtime.settings.PRECISIONS`: no value from the web
reaches a file-loading call as a path.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import D2ovError, DeviceError, ImageError, InputError
from ..measure.accuracy import fastest_within, reference_row
from ..measure.proof import proof_text
from ..runtime import settings as S
from ..runtime.detections import Detections, PredictionsWriter, predictions_document
from ..runtime.images import load_image
from ..runtime.tasks import Task, all_tasks, get_task, task_of
from ..store import catalog
from .batch import list_inputs, run_batch
from .live import LiveSessions, overlay
from .render import for_display, render
from .service import ModelService, metadata
from .video import process_video

__all__ = [
    "TASKS",
    "TABLE_HEADERS",
    "Result",
    "upload_path",
    "example_images",
    "model_card",
    "precision_choices",
    "AUTO",
    "resolve_precision",
    "detect",
    "detect_video",
    "detect_batch",
    "live_frame",
    "max_video_seconds",
    "present",
    "prune_outputs",
    "table",
]

#: UI label -> task
TASKS = {t.label: t.name for t in all_tasks()}
#: the table's columns before the first result (a detection table)
TABLE_HEADERS = list(Task.table_columns)
OUT_MAX_AGE_S = 3600  # prediction JSON files older than this are deleted


@dataclasses.dataclass
class Result:
    """One /detect result, kept by the page so that moving the threshold shows the model's answer at
    it without running the model again."""

    rgb: np.ndarray
    detections: Callable[[float], Detections]  # the graph's answer at a threshold (Predictor.run)
    model: dict[str, Any]  # Predictor.describe()
    device: str
    image: str  # the name shown for the image
    labels: list[str]
    backend: str = "openvino"  # "remote": the graph ran on a model server (``device`` is its URL)


def upload_path(image: Any, upload_root: str | Path, what: str = "image") -> tuple[str, str]:
    """``(path, display name)`` of an uploaded image (or ``what``) as Gradio hands it over with
    preprocessing off (a FileData dict or a path); only files inside ``upload_root`` (Gradio's upload
    folder) are read."""
    if isinstance(image, dict):
        path, shown = image.get("path"), image.get("orig_name")
    elif isinstance(image, str):
        path, shown = image, None
    elif image is None:
        path, shown = None, None
    else:
        raise ImageError(f"expected an uploaded {what}, got {type(image).__name__}")
    if not path:
        raise ImageError(f"Upload {'an' if what[0] in 'aeiou' else 'a'} {what} first (or pick an example).")
    real = Path(path).resolve()
    if not real.is_relative_to(Path(upload_root).resolve()):
        raise ImageError(f"only uploaded {what}s are read (not files on the server)")
    return str(real), Path(str(shown or real.name)).name


def example_images(model: str | None = None) -> list[str]:
    """Examples that fit ``model``: the demo models' own samples (those that fit its task:
    :func:`~d2ov_core.store.catalog.sample_images`), real photos for everything else (COCO models)."""
    import matplotlib  # a Detectron2 dependency: its sample photo is on every install that renders

    photos = [Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"]
    demo = model is None or model.startswith("demo/")
    task = catalog.CATALOG[model].task if demo and model in catalog.CATALOG else None
    shapes = catalog.sample_images(task)
    chosen = shapes if demo else [p for p in photos if p.is_file()]
    return [str(p) for p in chosen or shapes]


#: a precision is the default only if its AP is within this many points of the float model's
DEFAULT_AP_TOLERANCE = 0.5


def precision_choices(service: ModelService, name: str, device: str = "CPU") -> tuple[list[tuple[str, str]], str, str]:
    """The precisions this server can run for ``name`` on ``device``, each labelled with its measured
    accuracy and model time, or "AP not measured"; the default (the fastest whose AP is
    within :data:`DEFAULT_AP_TOLERANCE` of the float model's); and why it is the default.

    Returns ``([(label, precision)], default, reason)``."""
    offered = service.precisions(name, device)
    acc = service.accuracy(name)
    ref = reference_row(acc)
    choices = []
    for p in offered:
        row = acc.get(p)
        if row is None:
            label = f"{p} · AP not measured"
        else:
            key = S.primary_metric(row)
            delta = (
                f" ({row.value(key) - ref.value(key):+.1f} {key.replace('_', ' ')})"
                if ref is not None and row is not ref and key and ref.value(key) is not None
                else ""
            )
            label = f"{p} · {S.ap_text(row)}{delta} · {row.ms:.0f} ms"
        choices.append((label, p))
    best = fastest_within(acc, offered, DEFAULT_AP_TOLERANCE)
    if best is not None:
        row = acc[best]
        why = (
            f"{best} runs by default: the fastest precision within {DEFAULT_AP_TOLERANCE} AP of the float model "
            f"({S.ap_text(row)}, {row.ms:.0f} ms per image on {row.images} images of {row.set})"
        )
        return choices, best, why
    default = (
        S.DEFAULT_PRECISION if S.DEFAULT_PRECISION in offered else (offered[0] if offered else S.DEFAULT_PRECISION)
    )
    return choices, default, f"{default} runs by default (no precision of this model has a measured accuracy)"


#: The precision value that means "this model's default" (the app's initial choice; API callers that omit it).
AUTO = "auto"


def resolve_precision(service: ModelService, name: str, precision: Any, device: str = "CPU") -> str:
    """``precision``'s name; ``"auto"`` (or nothing) is the model's default from :func:`precision_choices`."""
    if precision is None or str(precision).strip().lower() in ("", AUTO):
        try:
            return precision_choices(service, name, device)[1]
        except D2ovError:
            return S.DEFAULT_PRECISION
    return S.precision(precision).name


def model_card(service: ModelService, name: str, precision: str = AUTO, device: str = "CPU") -> str:
    """Markdown card of ``name``: source, status (what preparation is doing, or why it failed),
    classes, accuracy, the IR, and the precisions this server can run."""
    try:
        info = service.spec_info(name)
        precision = resolve_precision(service, name, precision, device)
        st = service.state(name, precision)
    except D2ovError as e:
        return f"**{name}**: {e}"
    status = {
        "ready": "ready",
        "preparing": f"preparing: {st.detail}",
        "unavailable": f"unavailable: {st.detail}",
        "not prepared": "not prepared yet (prepared when selected)",
    }[st.status]
    lines = [f"**{info.name}** ({info.source})", f"- status: {status}", f"- {info.description}"]
    classes = info.classes
    lines.append(f"- classes ({len(classes)}): {', '.join(classes[:12])}{' ...' if len(classes) > 12 else ''}")
    if info.keypoint_names:
        lines.append(f"- keypoints ({len(info.keypoint_names)}): {', '.join(info.keypoint_names)}")
    stuff = info.stuff_classes[1:]
    if stuff:
        lines.append(f"- stuff classes ({len(stuff)}): {', '.join(stuff[:12])}{' ...' if len(stuff) > 12 else ''}")
    if info.box_ap is not None:
        ap = (
            f"- {'PQ ' + str(info.pq) + ', ' if info.pq is not None else ''}COCO box AP {info.box_ap}"
            + (f", mask AP {info.mask_ap}" if info.mask_ap else "")
            + (f", keypoint AP {info.keypoint_ap}" if info.keypoint_ap else "")
        )
        lines.append(ap + (" (its own test split)" if info.source == "demo" else " (Detectron2 Model Zoo)"))
    if st.xml is not None:
        size = sum(p.stat().st_size for p in st.xml.parent.glob("model.*")) / 1e6
        meta = metadata(st.xml)
        lines.append(f"- IR: {size:.1f} MB, {meta.precision} weights, input {meta.min_size}/{meta.max_size} px")
        if meta.verification:
            lines.append(f"- {proof_text(meta.verification)}")
    try:
        choices, _, why = precision_choices(service, name, device)
    except D2ovError:
        choices, why = [], ""
    lines.append(f"- precisions on this server: {'; '.join(label for label, _ in choices) or 'none yet'}")
    if choices:
        lines.append(f"- {why}; selected: {precision}")
    return "\n".join(lines)


def detect(
    service: ModelService,
    image: Any,
    name: Any,
    device: Any,
    threshold: Any,
    precision: Any,
    devices: list[str],
    upload_root: str | Path,
) -> Result:
    """Check every value of a /detect request, then run the model (its outputs kept: :func:`present`
    postprocesses them at the threshold, again when it moves). Cheap checks come first, so a bad
    file is reported as such even while the model is still being prepared."""
    path, shown = upload_path(image, upload_root)
    name, p = _checked_request(service, name, device, threshold, precision, devices)
    t0 = time.perf_counter()
    rgb = load_image(path, name=shown)
    decode_ms = (time.perf_counter() - t0) * 1000
    predictor = service.predictor(name, device, p.name)
    _, outputs = predictor.run(rgb)

    def detections(threshold: float) -> Detections:
        det = outputs(threshold)
        det.timings["decode"] = decode_ms  # the file read here, before the model could run
        return det

    return Result(
        rgb=rgb,
        detections=detections,
        model=predictor.describe(),
        device=str(predictor.device),
        image=shown,
        labels=list(predictor.labels),
        backend="openvino" if predictor.xml is not None else "remote",
    )


def _checked_request(service: ModelService, name: Any, device: Any, threshold: Any, precision: Any, devices: list[str]):
    """``(model name, Precision)`` of a request whose threshold, precision, device and model are valid."""
    S.check_value("confidence_threshold", threshold)
    if precision is not None and str(precision).strip().lower() not in ("", AUTO):
        S.precision(precision)  # an unknown precision is reported before the model is looked up
    if device not in devices:
        raise DeviceError(f"unknown device {device!r}: expected one of {', '.join(devices)}")
    name = service.canonical(name)
    return name, S.precision(resolve_precision(service, name, precision, device))


def max_video_seconds() -> float:
    """How much of an uploaded video the app processes: ``D2OV_MAX_VIDEO_SECONDS`` (default 60)."""
    raw = os.environ.get("D2OV_MAX_VIDEO_SECONDS", "60")
    try:
        value = float(raw)
    except ValueError:
        raise InputError(f"D2OV_MAX_VIDEO_SECONDS must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise InputError(f"D2OV_MAX_VIDEO_SECONDS must be > 0, got {raw!r}")
    return value


def detect_video(
    service: ModelService,
    video: Any,
    name: Any,
    device: Any,
    threshold: Any,
    precision: Any,
    every: Any,
    devices: list[str],
    upload_root: str | Path,
    out_dir: Path,
    progress: Any = None,
    track: Any = False,
) -> tuple[str, str, str]:
    """A /detect_video request: ``(annotated MP4, JSON file with one record per frame, summary)``.
    Every value is checked first, as in :func:`detect`; only the first :func:`max_video_seconds` of
    the video are processed (the summary says so). ``progress(done, total, frames/s)`` per frame.
    ``track``: ids that follow objects across frames (:mod:`.track`)."""
    path, shown = upload_path(video, upload_root, what="video")
    if track not in (True, False, None):
        raise InputError(f"track must be true or false, got {track!r}")
    try:
        every = int(every)
    except (TypeError, ValueError):
        raise InputError(f"every must be a whole number of frames, got {every!r}") from None
    if every < 1:
        raise InputError(f"every must be >= 1, got {every}")
    name, p = _checked_request(service, name, device, threshold, precision, devices)
    predictor = service.predictor(name, device, p.name)
    prune_outputs(out_dir)
    out = out_dir / f"video-{uuid.uuid4().hex}.mp4"
    backend = "openvino" if predictor.xml is not None else "remote"
    json_path = out_dir / f"predictions-{uuid.uuid4().hex}.json"
    with PredictionsWriter(
        json_path, predictor.describe(), backend, str(predictor.device), float(threshold), indent=None
    ) as records:  # one record per frame, written as it comes
        done = process_video(
            predictor, path, out, every, max_seconds=max_video_seconds(), threshold=float(threshold),
            progress=progress, source=shown, track=bool(track), sink=records.add,
        )  # fmt: skip
    return str(out), str(json_path), done.summary(shown) + f" — {p.name} on {predictor.device}"


def detect_batch(
    service: ModelService,
    files: Any,
    name: Any,
    device: Any,
    threshold: Any,
    precision: Any,
    devices: list[str],
    upload_root: str | Path,
    out_dir: Path,
    progress: Any = None,
) -> tuple[list[tuple[str, str]], str, str, str, dict[str, Any]]:
    """A /detect_batch request (uploaded images and ``.zip`` archives of images, see
    :mod:`d2ov_core.serve.batch`): ``(gallery of (rendered JPEG, file name), COCO-results JSON file,
    CSV file, summary, the COCO document with the summary under "summary")``. Every value is checked
    first, as in :func:`detect`, and the files are listed (their number and sizes checked) before the
    model is prepared. ``progress(done, total, images/s)`` per image."""
    if files is None or (isinstance(files, (list, tuple)) and not files):
        raise ImageError("Upload images or a .zip archive of images first.")
    uploads = [
        upload_path(f, upload_root, what="file") for f in (files if isinstance(files, (list, tuple)) else [files])
    ]
    name, p = _checked_request(service, name, device, threshold, precision, devices)
    inputs = list_inputs(uploads)
    predictor = service.predictor(name, device, p.name)
    prune_outputs(out_dir)
    run = run_batch(predictor, inputs, out_dir, float(threshold), progress)
    summary = run.summary(f" — {p.name} on {predictor.device}")
    return run.gallery, str(run.coco_json), str(run.csv), summary, {**run.document, "summary": summary}


def live_frame(
    service: ModelService,
    frame: Any,
    name: Any,
    device: Any,
    threshold: Any,
    precision: Any,
    devices: list[str],
    sessions: LiveSessions,
    session: str,
) -> np.ndarray | None:
    """A frame of the live webcam: drawn with its detections and ``frames/s · latency`` in a corner;
    ``None`` when a newer frame of the same ``session`` overtook it (dropped: see :mod:`.live`)."""
    if frame is None:
        return None  # the stream has not started (or the camera was switched off)
    name, p = _checked_request(service, name, device, threshold, precision, devices)
    rgb = load_image(frame, name="webcam frame")
    predictor = service.predictor(name, device, p.name)

    def work() -> tuple[np.ndarray, Detections]:
        det = predictor.predict(rgb, threshold=float(threshold))
        return render(rgb, det, predictor.labels, task=predictor.task), det

    done = sessions.submit(session, work)
    if done is None:
        return None
    (drawn, det), stats = done
    return overlay(
        drawn,
        f"{len(det)} detections · {stats.fps:.1f} frames/s · {stats.latency_ms:.0f} ms "
        f"(model {det.timings.get('inference', 0):.0f} ms) · {stats.dropped} stale frames dropped",
    )


def table(det: Detections, task: str | None = None):
    """The page's table of ``det`` as its task lays it out (:meth:`~d2ov_core.runtime.tasks.Task.table_rows`:
    one row per detection, label, score, box; or one per segment of a map); ``task``: the model's
    (default: the task whose result ``det`` is). A pandas DataFrame, its columns the headers."""
    import pandas as pd

    t = get_task(task) if task else task_of(det)
    return pd.DataFrame(t.table_rows(det), columns=list(t.table_columns))


def present(result: Result, threshold: Any, out_dir: Path) -> tuple[str, Any, str, str]:
    """``(rendered image file, table, JSON file path, summary)`` of ``result`` at ``threshold``, as
    the model's task presents it (a map of segments, e.g., which the threshold does not change).
    The rendered image is a JPEG of its own in ``out_dir`` (Pillow's default quality, as Gradio
    writes one), so that two requests drawing the same image never share a file: Gradio writes an
    array it is given to a file named by its content, in place, and a download of that file by
    one request could read it while another rewrote it. The summary's timings: reading the file,
    the pipeline's stages and its total (which, as everywhere, leaves reading out), then drawing
    (and writing the JPEG) and the table with the JSON file: what the page adds before Gradio sends
    them."""
    threshold = S.check_value("confidence_threshold", threshold)
    det = result.detections(threshold)
    task = get_task(result.model["task"])
    prune_outputs(out_dir)
    key = uuid.uuid4().hex
    t0 = time.perf_counter()
    drawn = out_dir / f"drawn-{key}.jpeg"
    Image.fromarray(render(*for_display(result.rgb, det), result.labels, task=task.name)).save(drawn, "JPEG")
    t1 = time.perf_counter()
    rows = table(det, task.name)
    doc = predictions_document(
        result.model, result.backend, result.device, threshold, [{"image": result.image, **det.to_dict()}]
    )
    path = out_dir / f"predictions-{key}.json"
    path.write_text(json.dumps(doc))
    t = {**det.timings, "drawing": (t1 - t0) * 1000, "JSON": (time.perf_counter() - t1) * 1000}
    stages = ("decode", "preprocess", "inference", "postprocess", "total", "drawing", "JSON")
    timing = " | ".join(f"{k} {t[k]:.0f} ms" for k in stages if k in t)
    found = task.summary(det, result.model, threshold)
    summary = f"{found} on {result.device}, {result.model['precision']} — {timing}"
    return str(drawn), rows, str(path), summary


def prune_outputs(out_dir: Path, now: float | None = None) -> None:
    """Delete drawn images, prediction JSON files, annotated videos and batch folders (complete, or
    left by an interrupted run) older than an hour."""
    now = time.time() if now is None else now
    kinds = ("drawn-*.jpeg", "predictions-*.json", "video-*.mp4", "batch-*", ".batch-*.part-*")
    for old in [p for kind in kinds for p in out_dir.glob(kind)]:
        try:
            if now - old.stat().st_mtime <= OUT_MAX_AGE_S:
                continue
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink()
        except OSError:
            pass
