"""d2ov web app: Detectron2 models on OpenVINO in the browser (local, Hugging Face Space, shared link).

    python app.py [--host H] [--port P] [--share] [--no-mcp] [--server URL]      (or: d2ov serve ...)
                  [--model NAME ...] [--examples DIR] [--title TITLE]

The page opens on the first ``--model`` (``D2OV_DEFAULT_MODEL``, a comma list): its task, that model,
``Auto`` precision; ``--examples`` (``D2OV_EXAMPLES``) are the examples shown with those models;
``--title`` (``D2OV_TITLE``) is the page's title. A ``/detect`` call that names no model runs the
first. ``d2ov space`` writes these into the Space's ``space.json``.

Gradio wiring only: every handler is a few lines calling :mod:`d2ov_core.serve.handlers`; a
:class:`~d2ov_core.errors.D2ovError` becomes one ``gr.Error`` with the same sentence.

Where it listens: ``--host``/``--port`` (or ``D2OV_HOST``/``D2OV_PORT``) when given; otherwise Gradio
decides, which honours ``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT`` (what a Hugging Face Space sets)
and defaults to 127.0.0.1:7860.

Remote models: ``--server URL`` (or ``D2OV_SERVER_URL``) adds the d2ov models of that KServe-v2
model server (d2ov's KServe predictor, OpenVINO Model Server) as ``remote/<name>``: inference there,
everything else here (see :class:`~d2ov_core.serve.service.ModelService`).

MCP: the ``/detect``, ``/detect_video`` and ``/detect_batch`` endpoints are also MCP tools (Gradio's
MCP server at ``/gradio_api/mcp/``), on by default; ``--no-mcp`` or ``D2OV_MCP=0`` turns it off.

Untrusted input: ``/detect`` runs with Gradio's preprocessing off, so nothing decodes an upload
before :func:`d2ov_core.runtime.images.load_image` (file-size and pixel limits checked from the
header); see :mod:`d2ov_core.serve.handlers`. Uploads are capped at ``D2OV_MAX_UPLOAD_MB`` (20 MB).
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder

from ..errors import D2ovError, InputError, NotReadyError, first_line
from ..runtime import ir as runtime
from ..runtime import settings as S
from ..runtime.images import MAX_PIXELS, image_files
from ..runtime.tasks import Task, all_tasks, get_task
from ..store import catalog
from . import batch
from . import handlers as H
from .live import LiveSessions
from .service import ModelService
from .track import tracking_available

__all__ = ["build_demo", "main", "MAX_UPLOAD_MB"]

OUT_DIR = Path(tempfile.mkdtemp(prefix="d2ov-app-"))
#: the demo models' example sets: kind of sample images (:attr:`~d2ov_core.runtime.tasks.Task.examples`)
#: -> the first task that shows them
DEMO_EXAMPLES: dict[str, Task] = {}
for _task in all_tasks():
    DEMO_EXAMPLES.setdefault(_task.examples, _task)
#: the example sets the page shows, one visible at a time (see ``examples_visibility``); "user": the
#: ``--examples`` given for the ``--model`` models
EXAMPLE_KINDS = (*DEMO_EXAMPLES, "photos", "user")
DEFAULT_TITLE = "d2ov — Detectron2 on OpenVINO"
#: height of the input and result images, so both fit a 1280x800 screen beside each other with the examples
IMAGE_HEIGHT = 380
#: Largest upload the server accepts (Gradio refuses bigger ones before they reach a handler).
MAX_UPLOAD_MB = float(os.environ.get("D2OV_MAX_UPLOAD_MB", 20))
#: last results kept (one per browser session, least recently used dropped) to show again at another
#: threshold: each its image and the graph's outputs (not its masks: those are pasted when shown)
KEEP_RESULTS = 32
#: the live webcam: a frame every LIVE_EVERY_S seconds from the browser; a stream lasts LIVE_SECONDS
LIVE_EVERY_S = 0.1
LIVE_SECONDS = 120
log = logging.getLogger("d2ov")


def _web_error(e: Exception) -> gr.Error:
    """One readable error for the person using the page (and for API clients)."""
    if isinstance(e, D2ovError):
        return gr.Error(str(e), print_exception=False)
    log.exception("internal error")  # a bug, not the user's fault: say so in one line, keep serving
    return gr.Error(f"internal error ({type(e).__name__}: {first_line(e)})", print_exception=False)


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every ``{"$ref": "#/$defs/X"}`` replaced by X's definition and ``$defs`` dropped."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/") and ref.split("/")[-1] in defs:
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return walk({**defs[ref.split("/")[-1]], **rest})
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def file_list(**kwargs: Any) -> gr.File:
    """``gr.File(file_count="multiple")`` whose API schema has its file definition inlined. Gradio 6
    leaves ``"items": {"$ref": "#/$defs/FileData"}`` in the MCP tool's input schema with ``$defs``
    nested under the parameter, so the reference resolves from the tool's root to nothing and the MCP
    server refuses every call (``PointerToNowhere``). (Not a subclass: Gradio writes a ``.pyi`` stub
    beside the module of every Component subclass.)"""
    files = gr.File(file_count="multiple", **kwargs)
    files.api_info_as_input = lambda: _inline_refs(gr.File.api_info_as_input(files))  # type: ignore[method-assign]
    return files


def build_demo(
    service: ModelService | None = None,
    models: list[str] | None = None,
    examples: list[str] | None = None,
    title: str | None = None,
) -> gr.Blocks:
    """The page. ``models``: the page opens on the first (its task, ``Auto`` precision); ``examples``:
    image files shown as the examples of those models; ``title``: the page's title."""
    service = service or ModelService()
    devices = runtime.available_devices() + ["AUTO"]
    thr = S.SETTINGS["confidence_threshold"]
    title = title or DEFAULT_TITLE
    chosen = [service.canonical(m) for m in models or []]  # an unknown name stops the start, in one line
    tasks = [label for label, task in H.TASKS.items() if service.models(task)]  # only what this server offers
    if not tasks:
        raise NotReadyError("this server offers no model: give it an IR (--model, D2OV_MODELS_DIR, D2OV_HUB_REPO)")
    start_task = "Instance segmentation" if "Instance segmentation" in tasks else tasks[0]
    if chosen:
        start_task = next(label for label, task in H.TASKS.items() if task == service.spec_info(chosen[0]).task)
    start_model = chosen[0] if chosen else service.default_model(H.TASKS[start_task])
    user_examples = list(examples or [])
    try:  # the model the page opens on is fetched (Hub) or found now, not at the first request
        service.prepare(start_model)
    except D2ovError:
        pass  # its card says why

    def precision_control(name, current=None, device="CPU", **kwargs):
        """``(Radio, value)``: "Auto" (the model's default, named) then the model's precisions, each
        labelled with its measured AP; the current one if it is offered, else "Auto"."""
        choices, default, _ = H.precision_choices(service, name, device)
        choices = [(f"Auto · {default}", H.AUTO), *choices]
        value = current if current in [v for _, v in choices] else H.AUTO
        return gr.Radio(choices=choices, value=value, **kwargs), value

    def example_kind(name):
        """Which examples fit ``name``: the --examples of the --model models, the demo samples of its
        task (:attr:`~d2ov_core.runtime.tasks.Task.examples`) for a demo model, or photos."""
        source = service.source_name(name)
        if user_examples and name in chosen:
            return "user"
        if source.startswith("demo/"):
            spec = catalog.CATALOG.get(source)
            return get_task(spec.task).examples if spec is not None else all_tasks()[0].examples
        return "photos"

    def examples_visibility(name):
        kind = example_kind(name)
        return tuple(gr.Column(visible=kind == k) for k in EXAMPLE_KINDS)

    def card_and_timer(name, precision, device="CPU"):
        preparing = service.state(name, H.resolve_precision(service, name, precision, device)).status == "preparing"
        return H.model_card(service, name, precision, device), gr.Timer(active=preparing)

    def on_task(task_label, current=None):
        task = H.TASKS[task_label]
        offered = service.models(task)
        name = (
            current
            if current in offered
            else next((m for m in chosen if m in offered), None) or service.default_model(task)
        )
        return gr.Dropdown(choices=offered, value=name)

    def on_model(name, device):
        """Another model or device: prepare it, offer its precisions (its default selected)."""
        try:
            service.prepare(name)
        except D2ovError:
            pass  # the card says why
        control, value = precision_control(name, None, device)
        return (control, *examples_visibility(name), *card_and_timer(name, value, device))

    def on_precision(name, precision, device):
        try:
            service.prepare(name, H.resolve_precision(service, name, precision, device))
        except D2ovError:
            pass  # the card says why
        return card_and_timer(name, precision, device)

    def on_tick(name, precision, device):
        return card_and_timer(name, precision, device)

    last: collections.OrderedDict[str, H.Result] = collections.OrderedDict()  # session -> its last result
    last_lock = threading.Lock()

    def remember(request: gr.Request | None, result: H.Result) -> None:
        key = getattr(request, "session_hash", None)
        if key is None:
            return
        with last_lock:
            last[key] = result
            last.move_to_end(key)
            while len(last) > KEEP_RESULTS:
                last.popitem(last=False)

    def detect(image, model=None, device="CPU", threshold=thr.default, precision=H.AUTO, request: gr.Request = None):
        """Detect objects in an image with a Detectron2 model converted to OpenVINO, running on this server's CPU.

        Args:
            image: the image to analyse (JPEG, PNG, WebP, BMP, GIF or TIFF, up to 40 megapixels).
            model: model name (default: the model the page opens on): one of this server's models, e.g. "demo/mask_rcnn_shapes" or "demo/faster_rcnn_shapes" (circles, squares, triangles), a Detectron2 Model Zoo name such as "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x" (80 COCO classes) where this server has it, "local/<name>" for an IR this server holds, or "remote/<name>" for a model of the model server the app was started with.
            device: OpenVINO device, e.g. "CPU".
            threshold: confidence threshold between 0.05 and 1; detections scoring lower are dropped.
            precision: "auto" (default: the model's fastest precision within 0.5 AP of its float model), "FP16", "FP32", "BF16" (CPUs with bfloat16) or "INT8" (where the model has an INT8 IR).

        Returns:
            the image with the detections drawn
            a table of the detections: label, score, box x0 y0 x1 y1 in pixels (models whose answer is a map of segments: one row per segment: id, class, thing or stuff, area in pixels, score)
            a JSON file with every detection: boxes, scores, masks as COCO RLE (a map of segments: also every segment with its pixels as COCO RLE)
            a summary line with the number of detections and the timings
            the model's card
        """
        model = start_model if model in (None, "") else model
        try:
            result = H.detect(service, image, model, device, threshold, precision, devices, get_upload_folder())
            card = H.model_card(service, model, precision, device)
            shown = H.present(result, threshold, OUT_DIR)
            remember(request, result)
            return (*shown, card)
        except Exception as e:
            raise _web_error(e) from None

    def detect_video(
        video,
        model=None,
        device="CPU",
        threshold=thr.default,
        precision=H.AUTO,
        every=1,
        track=False,
        progress=gr.Progress(),  # noqa: B008 (how Gradio hands a handler its progress bar)
    ):
        """Detect objects in every frame (or every N-th frame) of a video with a Detectron2 model converted to OpenVINO, running on this server's CPU.

        Args:
            video: the video to analyse (MP4, WebM, MOV, MKV or AVI; only its first D2OV_MAX_VIDEO_SECONDS seconds, default 60, are processed).
            model: model name (default: the model the page opens on), as for detect.
            device: OpenVINO device, e.g. "CPU".
            threshold: confidence threshold between 0.05 and 1; detections scoring lower are dropped.
            precision: "auto" (default), "FP16", "FP32", "BF16" or "INT8", as for detect.
            every: run on every N-th frame (1: every frame).
            track: give each object an id that follows it from frame to frame (ByteTrack), in the JSON ("track_id") and drawn.

        Returns:
            the video with the detections drawn (H.264 MP4, one frame per processed frame)
            a JSON file with one record per processed frame: source, frame number, time in seconds, and every detection
            a summary line: frames, frames per second end to end, model time per frame, detections per class
        """
        model = start_model if model in (None, "") else model

        def tell(done, total, fps):
            left = f", {(total - done) / fps:.0f} s left" if total and fps > 0 else ""
            progress(
                (done, total) if total else None,
                desc=f"frame {done}{f'/{total}' if total else ''}, {fps:.1f} frames/s{left}",
            )

        try:
            return H.detect_video(
                service, video, model, device, threshold, precision, every, devices, get_upload_folder(), OUT_DIR, tell,
                track,
            )  # fmt: skip
        except Exception as e:
            raise _web_error(e) from None

    def run_batch(files, model, device, threshold, precision, progress):
        model = start_model if model in (None, "") else model

        def tell(done, total, rate):
            progress((done, total), desc=f"image {done}/{total}, {rate:.1f} images/s")

        try:
            return H.detect_batch(
                service, files, model, device, threshold, precision, devices, get_upload_folder(), OUT_DIR, tell
            )
        except Exception as e:
            raise _web_error(e) from None

    def detect_batch_page(files, model, device, threshold, precision, progress=gr.Progress()):  # noqa: B008
        return run_batch(files, model, device, threshold, precision, progress)[:4]

    def detect_batch(
        files,
        model=None,
        device="CPU",
        threshold=thr.default,
        precision=H.AUTO,
        progress=gr.Progress(),  # noqa: B008 (how Gradio hands a handler its progress bar)
    ):
        """Detect objects in many images at once (image files and .zip archives of images) with a Detectron2 model converted to OpenVINO, running on this server's CPU.

        Args:
            files: the images (JPEG, PNG, WebP, BMP, GIF or TIFF) and/or .zip archives of images; at most D2OV_MAX_BATCH_FILES images (default 500); files that are not images are skipped and listed.
            model: model name (default: the model the page opens on), as for detect.
            device: OpenVINO device, e.g. "CPU".
            threshold: confidence threshold between 0.05 and 1; detections scoring lower are dropped.
            precision: "auto" (default), "FP16", "FP32", "BF16" or "INT8", as for detect.

        Returns:
            a COCO-results JSON document: "results" (the list COCO.loadRes reads: image_id, category_id, bbox [x, y, w, h], score; segmentation as COCO RLE for mask models, keypoints for keypoint models), "images" (id, file_name, width, height), "categories" (id, name), "failed" (files that could not be read and why), "skipped" (files that are not images), "summary"
        """
        return run_batch(files, model, device, threshold, precision, progress)[4]

    live_sessions = LiveSessions()

    def live(frame, model=None, device="CPU", threshold=thr.default, precision=H.AUTO, request: gr.Request = None):
        model = start_model if model in (None, "") else model
        session = getattr(request, "session_hash", None) or "api"
        try:
            out = H.live_frame(service, frame, model, device, threshold, precision, devices, live_sessions, session)
        except Exception as e:
            raise _web_error(e) from None
        return gr.skip() if out is None else out

    def refilter(threshold, request: gr.Request = None):
        with last_lock:
            result = last.get(getattr(request, "session_hash", None))
        if result is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        try:
            return H.present(result, threshold, OUT_DIR)
        except Exception as e:
            raise _web_error(e) from None

    with gr.Blocks(title=title) as demo:
        gr.Markdown(
            f"# {title}\nDetectron2 R-CNN models converted to OpenVINO IR, running on this server's CPU: "
            "upload an image or click an example, then **Detect**. The model, device, precision and "
            "threshold are below the result."
        )
        # first screen (1280x800): the input, Detect and the examples beside the result
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(
                    type="filepath",
                    label="Input image",
                    sources=["upload", "clipboard"],
                    image_mode=None,
                    height=IMAGE_HEIGHT,
                )
                run = gr.Button("Detect", variant="primary")
                kind = example_kind(start_model)
                with gr.Column(visible=kind == "user") as user_example_set:
                    gr.Examples(user_examples or H.example_images("demo/"), inputs=[image], label="Examples")
                demo_examples = {}
                for examples, t in DEMO_EXAMPLES.items():
                    with gr.Column(visible=kind == examples) as demo_examples[examples]:
                        gr.Examples(
                            H.example_images(catalog.DEFAULTS[t.name]),
                            inputs=[image],
                            label=f"Examples ({t.examples_label})",
                        )
                with gr.Column(visible=kind == "photos") as photo_examples:
                    gr.Examples(H.example_images("COCO"), inputs=[image], label="Examples (photos)")
            with gr.Column(scale=1):
                output = gr.Image(
                    type="filepath", label="Detections", interactive=False, format="jpeg", height=IMAGE_HEIGHT
                )
                summary = gr.Markdown("")
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Accordion("Model, device, precision, threshold", open=True):
                    task = gr.Radio(tasks, value=start_task, label="Task")
                    # every model at launch, so the API (and MCP) schema names them all; the page shows the task's
                    model = gr.Dropdown(service.models(), value=start_model, label="Model", allow_custom_value=False)
                    device = gr.Dropdown(devices, value="CPU", label="Device")
                    precision, start_precision = precision_control(
                        start_model,
                        label="Precision (AP measured on the model's evaluation set, model time per image)",
                        info="; ".join(f"{p.name}: {p.description}" for p in S.PRECISIONS.values()),
                    )
                    threshold = gr.Slider(
                        0.05,
                        1.0,
                        value=thr.default,
                        step=0.01,
                        label="Confidence threshold",
                        info="0.05 is frozen into the graph: lower scores never come out",
                    )
                gr.Markdown(f"Uploads up to {MAX_UPLOAD_MB:g} MB and {MAX_PIXELS / 1e6:g} megapixels.")
            with gr.Column(scale=1):
                card = gr.Markdown(H.model_card(service, start_model, start_precision))
                table = gr.Dataframe(headers=H.TABLE_HEADERS, label="Detections table", interactive=False)
                json_file = gr.File(label="JSON (same schema as d2ov predict --json)", interactive=False)
        with gr.Accordion("Video: a file or the webcam, frame by frame", open=False):
            with gr.Row():
                with gr.Column(scale=1):
                    video_in = gr.Video(sources=["upload", "webcam"], label="Input video", height=IMAGE_HEIGHT // 2)
                    every = gr.Slider(1, 30, value=1, step=1, label="Every N-th frame")
                    track = gr.Checkbox(
                        value=False,
                        label="Track objects (an id that follows each object from frame to frame)",
                        visible=tracking_available(),
                    )
                    run_video = gr.Button("Detect in video", variant="primary")
                    gr.Markdown(
                        f"The model, device, precision and threshold above apply. Only the first "
                        f"{H.max_video_seconds():g} s of a video are processed."
                    )
                with gr.Column(scale=1):
                    video_out = gr.Video(
                        label="Detections (video)", interactive=False, format="mp4", height=IMAGE_HEIGHT // 2
                    )
                    video_summary = gr.Markdown("")
                    video_json = gr.File(label="JSON, one record per frame", interactive=False)
        with gr.Accordion("Batch: several images or a .zip", open=False):
            with gr.Row():
                with gr.Column(scale=1):
                    batch_in = file_list(
                        file_types=["image", ".zip"],
                        label="Images or .zip archives of images",
                        height=IMAGE_HEIGHT // 2,
                    )
                    run_batch_button = gr.Button("Detect in all", variant="primary")
                    gr.Markdown(
                        f"The model, device, precision and threshold above apply. At most "
                        f"{batch.max_batch_files()} images a batch; files that are not images are skipped."
                    )
                    batch_summary = gr.Markdown("")
                    batch_coco = gr.File(label="COCO results (JSON)", interactive=False)
                    batch_csv = gr.File(label="Detections (CSV)", interactive=False)
                with gr.Column(scale=1):
                    batch_gallery = gr.Gallery(
                        label="Detections (batch)", columns=3, height=IMAGE_HEIGHT, format="jpeg", interactive=False
                    )
            batch_api = gr.Button(visible=False)  # the API's /detect_batch: the same run, JSON out
            batch_json = gr.JSON(visible=False)
        with gr.Accordion("Live webcam: the newest frame, as fast as the model goes", open=False):
            with gr.Row():
                webcam = gr.Image(
                    sources=["webcam"], streaming=True, type="numpy", label="Webcam", height=IMAGE_HEIGHT // 2
                )
                live_out = gr.Image(label="Live detections", interactive=False, height=IMAGE_HEIGHT // 2)
            gr.Markdown(
                "Press record: each frame goes to the model above (its device, precision and threshold); when "
                f"the model is slower than the camera, stale frames are dropped, never queued. A stream stops "
                f"after {LIVE_SECONDS} s (press record again)."
            )
        timer = gr.Timer(2.0, active=False)  # refreshes the card while a model is being prepared

        task.change(on_task, task, model, api_visibility="private")
        demo.load(on_task, [task, model], model, api_visibility="private")
        example_sets = [*demo_examples.values(), photo_examples, user_example_set]
        for control in (model, device):
            control.change(on_model, [model, device], [precision, *example_sets, card, timer], api_visibility="private")
        precision.input(on_precision, [model, precision, device], [card, timer], api_visibility="private")
        timer.tick(on_tick, [model, precision, device], [card, timer], api_visibility="private", show_progress="hidden")
        run.click(
            detect,
            [image, model, device, threshold, precision],
            [output, table, json_file, summary, card],
            api_name="detect",
            preprocess=False,
            show_progress_on=[output],
        )
        run_video.click(
            detect_video,
            [video_in, model, device, threshold, precision, every, track],
            [video_out, video_json, video_summary],
            api_name="detect_video",
            preprocess=False,
            show_progress_on=[video_out],
        )
        batch_inputs = [batch_in, model, device, threshold, precision]
        run_batch_button.click(
            detect_batch_page,
            batch_inputs,
            [batch_gallery, batch_coco, batch_csv, batch_summary],
            api_visibility="private",
            preprocess=False,
            show_progress_on=[batch_gallery],
        )
        batch_api.click(detect_batch, batch_inputs, [batch_json], api_name="detect_batch", preprocess=False)
        webcam.stream(
            live,
            [webcam, model, device, threshold, precision],
            [live_out],
            api_name="live",
            api_visibility="undocumented",  # a frame at a time: for the page (and tests), not an MCP tool
            stream_every=LIVE_EVERY_S,
            time_limit=LIVE_SECONDS,
            concurrency_limit=None,  # every frame enters live(): LiveSessions drops the overtaken ones
        )
        # typing in the number box or dragging the slider: the last result at that threshold (no model run)
        threshold.input(
            refilter,
            [threshold],
            [output, table, json_file, summary],
            api_visibility="private",
            trigger_mode="always_last",
            show_progress_on=[output],
        )
    return demo


def _env_port() -> int | None:
    value = os.environ.get("D2OV_PORT")
    return int(value) if value else None


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="d2ov web app")
    p.add_argument(
        "--host",
        default=os.environ.get("D2OV_HOST") or None,
        help="bind address (default: GRADIO_SERVER_NAME, else 127.0.0.1)",
    )
    p.add_argument("--port", type=int, default=_env_port(), help="port (default: GRADIO_SERVER_PORT, else 7860)")
    p.add_argument("--share", action="store_true", help="create a public gradio.live link")
    p.add_argument(
        "--server",
        default=os.environ.get("D2OV_SERVER_URL") or None,
        metavar="URL",
        help="also offer the d2ov models of this KServe-v2 model server (d2ov's KServe predictor, "
        "OpenVINO Model Server) as remote/<name> (also D2OV_SERVER_URL)",
    )
    p.add_argument(
        "--model",
        action="append",
        metavar="NAME",
        help="the model the page opens on (repeat: the models whose --examples are shown; the first opens; "
        "also D2OV_DEFAULT_MODEL, a comma list)",
    )
    p.add_argument(
        "--examples",
        default=os.environ.get("D2OV_EXAMPLES") or None,
        metavar="DIR",
        help="a folder of example images for the --model models (also D2OV_EXAMPLES)",
    )
    p.add_argument("--title", default=os.environ.get("D2OV_TITLE") or None, help="the page's title (also D2OV_TITLE)")
    p.add_argument(
        "--no-mcp",
        action="store_true",
        default=os.environ.get("D2OV_MCP", "1").lower() in ("0", "false", "no", "off"),
        help="do not serve /detect as an MCP tool (also D2OV_MCP=0)",
    )
    args = p.parse_args(argv)
    if args.model is None:  # flags win over the variable
        args.model = [m.strip() for m in os.environ.get("D2OV_DEFAULT_MODEL", "").split(",") if m.strip()]
    return args


def _mcp_installed() -> bool:
    import importlib.util

    if importlib.util.find_spec("mcp") is None:
        log.warning("MCP server off: the mcp package is not installed (pip install 'gradio[mcp]')")
        return False
    return True


def _mcp_shims() -> None:
    """Two mends of Gradio 6.31's MCP server, installed once per process when MCP is on:

    * lists of files in (``/detect_batch``'s ``files``): it turns a tool's file URLs (``data:`` or
      ``http(s)://``) into files only at fixed positions of its input schema; a list's position is
      ``files.items``, so a call's ``files.0``, ``files.1`` ... stayed strings and failed the File
      component's validation. Every ``items`` of such a position is expanded into the indices the
      call's list has, before Gradio's own conversion (the same for every file);
    * one answer per output, JSON where structured: a queued call's outputs came back as one tuple,
      answered with its Python ``repr`` in one text (``/detect``'s five outputs), and any output that
      is not a file with ``str(value)``, a ``repr`` for a dict or a list (``/detect_batch``'s COCO
      document, ``/detect``'s table). Each output is now its own answer, as Gradio's unqueued path
      gives them (the drawn image as an image and its URL), and dicts and lists are sent as JSON.
    """
    import json

    from gradio.mcp import GradioMCPServer
    from gradio_client import utils as client_utils

    convert = GradioMCPServer.convert_strings_to_filedata
    if getattr(convert, "d2ov_lists", False):
        return
    answer = GradioMCPServer.postprocess_output_data

    def expand(value: Any, position: list) -> list[list]:
        if not position:
            return [[]]
        head, rest = position[0], position[1:]
        if head == "items" and isinstance(value, list):
            return [[i, *tail] for i, item in enumerate(value) for tail in expand(item, rest)]
        if isinstance(value, dict) and head in value:
            return [[head, *tail] for tail in expand(value[head], rest)]
        return [position]

    def with_lists(self, value: Any, positions: list) -> Any:
        return convert(self, value, [p for position in positions for p in expand(value, position)])

    def as_json(self, data: Any, root_url: str) -> Any:
        def text(value: Any) -> Any:
            structured = isinstance(value, (dict, list)) and not client_utils.is_file_obj_with_meta(value)
            return json.dumps(value) if structured else value

        if len(data) == 1 and isinstance(data[0], tuple):  # a queued call's outputs, as one tuple
            data = list(data[0])
        return answer(self, [text(v) for v in data], root_url)

    with_lists.d2ov_lists = True  # type: ignore[attr-defined]
    GradioMCPServer.convert_strings_to_filedata = with_lists  # type: ignore[method-assign]
    GradioMCPServer.postprocess_output_data = as_json  # type: ignore[method-assign]


def _start_quietly(service: ModelService, args: argparse.Namespace, mcp: bool, examples: list[str]) -> gr.Blocks:
    """Build, queue and launch the app inside one short-lived running event loop; return the running
    app. Outside a running loop, every Gradio lock and event made while building and launching creates
    a new event loop and drops the previous one unclosed; the garbage collector later finalises some
    of them after their sockets and prints "Exception ignored in BaseEventLoop.__del__ ... Invalid file
    descriptor: -1" tracebacks into the log (seen in the Space's log at start). Gradio's locks bind to
    a loop only when first used, i.e. to the server's own loop in its thread."""
    import asyncio

    async def start() -> gr.Blocks:
        demo = build_demo(service, models=args.model, examples=examples, title=args.title)
        demo.queue(default_concurrency_limit=runtime.usable_cpus() // 2 + 1, max_size=64)
        # server_name/server_port None: Gradio reads GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (a Space's)
        demo.launch(
            server_name=args.host,
            server_port=args.port,
            share=args.share,
            mcp_server=mcp,
            max_file_size=int(MAX_UPLOAD_MB * 1024 * 1024),
            allowed_paths=[str(OUT_DIR)],
            prevent_thread_lock=True,
        )
        return demo

    return asyncio.run(start())


def main(argv=None) -> None:
    args = parse_args(argv)
    if not logging.getLogger().handlers and not log.handlers:  # `d2ov serve` has set up logging already
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[d2ov] %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    mcp = not args.no_mcp and _mcp_installed()
    if mcp:
        _mcp_shims()
    try:
        service = ModelService(server=args.server)
        examples = (
            [str(p) for p in image_files(args.examples)] if args.examples and Path(args.examples).is_dir() else []
        )
        if args.examples and not examples:
            raise InputError(f"--examples {args.examples}: not a folder with images in it")
        for name in args.model:  # an unknown --model, or one this server cannot run, stops the start in one line
            if service.canonical(name) not in service.models():
                raise NotReadyError(f"--model {name}: this server has no IR of it and does not convert models")
        app = _start_quietly(service, args, mcp, examples)
    except D2ovError as e:  # e.g. the model server is down: one line, not a traceback
        print(f"d2ov: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    app.block_thread()
