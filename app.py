"""d2ov web app: Detectron2 models on OpenVINO in the browser (local, Hugging Face Space, shared link).

    python app.py [--host 127.0.0.1] [--port 7860] [--share]

Wiring only: every handler is a few lines calling ``d2ov_core``; user mistakes become ``gr.Error``.

Untrusted input: ``/detect`` runs with Gradio's preprocessing off, so nothing decodes an upload
before :func:`d2ov_core.images.load_image` (file-size and pixel limits checked from the header). The
image must be a file Gradio received (its upload folder); the model is a name from the list, the
device one of the listed devices, the precision FP16/FP32/INT8: no value from the web reaches a
file-loading call as a path. Uploads are capped at ``D2OV_MAX_UPLOAD_MB`` (default 20 MB).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from d2ov_core import catalog, runtime
from d2ov_core import settings as S
from d2ov_core.errors import D2ovError, DeviceError, ImageError, first_line
from d2ov_core.images import MAX_PIXELS, load_image
from d2ov_core.render import render
from d2ov_core.service import DEFAULT_PRECISION, ModelService, check_precision, metadata

TASKS = {"Object detection": "detection", "Instance segmentation": "instance_segmentation"}
TABLE_HEADERS = ["label", "score", "x0", "y0", "x1", "y1"]
UI_PRECISIONS = ["FP16", "INT8"]  # the API also takes FP32
OUT_DIR = Path(tempfile.mkdtemp(prefix="d2ov-app-"))
OUT_MAX_AGE_S = 3600  # prediction JSON files older than this are deleted
#: Largest upload the server accepts (Gradio refuses bigger ones before they reach a handler).
MAX_UPLOAD_MB = float(os.environ.get("D2OV_MAX_UPLOAD_MB", 20))
log = logging.getLogger("d2ov")


def upload_path(image) -> tuple[str, str]:
    """``(path, display name)`` of the uploaded image as Gradio hands it over with preprocessing
    off (a FileData dict); only files inside Gradio's upload folder are accepted."""
    if isinstance(image, dict):
        path, shown = image.get("path"), image.get("orig_name")
    elif isinstance(image, str):
        path, shown = image, None
    elif image is None:
        path, shown = None, None
    else:
        raise ImageError(f"expected an uploaded image, got {type(image).__name__}")
    if not path:
        raise ImageError("Upload an image first (or pick an example).")
    real = Path(path).resolve()
    if not real.is_relative_to(Path(get_upload_folder()).resolve()):
        raise ImageError("only uploaded images are read (not files on the server)")
    return str(real), Path(str(shown or real.name)).name


def _prune_outputs(now: float) -> None:
    for old in OUT_DIR.glob("predictions-*.json"):
        try:
            if now - old.stat().st_mtime > OUT_MAX_AGE_S:
                old.unlink()
        except OSError:
            pass


def example_images() -> list[str]:
    samples = sorted((catalog.DEMO_DIR / "samples").glob("*.jpg"))
    import matplotlib

    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return [str(p) for p in samples] + ([str(photo)] if photo.is_file() else [])


def model_card(service: ModelService, name: str, precision: str = DEFAULT_PRECISION) -> str:
    try:
        info = service.spec_info(name)
        st = service.state(name, precision)
    except D2ovError as e:
        return f"**{name}**: {e}"
    status = {"ready": "ready", "preparing": f"preparing: {st.detail}", "unavailable": f"unavailable: {st.detail}",
              "not prepared": "not prepared yet (prepared when selected)"}[st.status]
    lines = [f"**{info['name']}** ({info.get('source', '')})", f"- status: {status}", f"- {info.get('description', '')}"]
    classes = info.get("classes", [])
    lines.append(f"- classes ({len(classes)}): {', '.join(classes[:12])}{' ...' if len(classes) > 12 else ''}")
    if info.get("box_ap") is not None:
        ap = f"- COCO box AP {info['box_ap']}" + (f", mask AP {info['mask_ap']}" if info.get("mask_ap") else "")
        lines.append(ap + (" (its own test split)" if info.get("source") == "demo" else " (Detectron2 Model Zoo)"))
    if st.xml is not None:
        size = sum(p.stat().st_size for p in st.xml.parent.glob("model.*")) / 1e6
        meta = metadata(st.xml)
        lines.append(f"- IR: {size:.1f} MB, {meta['precision']}, input {meta['min_size']}/{meta['max_size']} px")
    try:
        here = service.precisions(name)
    except D2ovError:
        here = []
    lines.append(f"- precisions on this server: {', '.join(here) or 'none yet'}"
                 + ("" if "INT8" in here else " (INT8 needs an INT8 IR: `d2ov convert MODEL --precision int8 --calibration DIR`)"))
    return "\n".join(lines)


def build_demo(service: ModelService | None = None) -> gr.Blocks:
    service = service or ModelService()
    devices = runtime.available_devices() + ["AUTO"]
    thr = S.SETTINGS["confidence_threshold"]

    def models_for(task_label: str) -> list[str]:
        return service.models(TASKS[task_label])

    def on_task(task_label):
        default = catalog.DEFAULTS[TASKS[task_label]]
        try:
            service.prepare(default)
        except D2ovError:
            pass  # the card says why
        return gr.Dropdown(choices=models_for(task_label), value=default), model_card(service, default)

    def on_model(name, precision=DEFAULT_PRECISION):
        try:
            service.prepare(name, precision)
        except D2ovError:
            pass  # the card says why
        return model_card(service, name, precision)

    def detect(image, name, device, threshold, precision=DEFAULT_PRECISION):
        """The /detect API. Preprocessing is off: every value arrives raw and is checked here."""
        try:
            path, shown = upload_path(image)
            threshold = S.check_value("confidence_threshold", threshold)
            precision = check_precision(precision)
            if device not in devices:
                raise DeviceError(f"unknown device {device!r}: expected one of {', '.join(devices)}")
            name = service.canonical(name)  # unknown names first; then the image, then the model's state
            rgb = load_image(path, name=shown)
            predictor = service.predictor(name, device, precision)
            det = predictor.predict(rgb, threshold=0.0)
            state = {"rgb": rgb, "det": det, "model": predictor.name, "device": device, "image": shown,
                     "labels": predictor.labels, "describe": predictor.describe()}
            return (*present(state, threshold), state, model_card(service, name, precision))
        except D2ovError as e:
            raise gr.Error(str(e)) from None
        except Exception as e:  # a bug, not the user's fault: say so in one line, keep serving
            log.exception("detect failed")
            raise gr.Error(f"internal error ({type(e).__name__}: {first_line(e)})") from None

    def refilter(state, threshold):
        if not state:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        try:
            return present(state, threshold)
        except D2ovError as e:
            raise gr.Error(str(e)) from None

    def present(state, threshold):
        threshold = S.check_value("confidence_threshold", threshold)
        det = state["det"].filter(threshold)
        image = render(state["rgb"], det, state["labels"])
        rows = [[str(l), round(float(s), 3), *[round(float(v), 1) for v in b]] for l, s, b in zip(det.labels, det.scores, det.boxes)]
        doc = {"model": state["describe"], "backend": "openvino",
               "device": state["device"], "threshold": threshold, "results": [{"image": state["image"], **det.to_dict()}]}
        now = time.time()
        _prune_outputs(now)
        path = OUT_DIR / f"predictions-{uuid.uuid4().hex}.json"
        path.write_text(json.dumps(doc))
        t = det.timings
        timing = " | ".join(f"{k} {t[k]:.0f} ms" for k in ("preprocess", "inference", "postprocess", "total") if k in t)
        summary = f"**{len(det)}** detections at threshold {threshold:.2f} on {state['device']} — {timing}"
        return image, rows, str(path), summary

    with gr.Blocks(title="d2ov — Detectron2 on OpenVINO") as demo:
        gr.Markdown("# d2ov — Detectron2 on OpenVINO\nDetect objects with Detectron2 R-CNN models converted to "
                    "OpenVINO IR, running on this server's CPU. Pick a task and a model, upload an image or click "
                    "an example, then **Detect**.")
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                task = gr.Radio(list(TASKS), value="Instance segmentation", label="Task")
                model = gr.Dropdown(models_for("Instance segmentation"), value=catalog.DEFAULTS["instance_segmentation"],
                                    label="Model", allow_custom_value=False)
                device = gr.Dropdown(devices, value="CPU", label="Device")
                precision = gr.Radio(UI_PRECISIONS, value=DEFAULT_PRECISION, label="Precision",
                                     info="FP16: FP16-compressed weights, FP32 compute. INT8: NNCF-quantized "
                                          "(when an INT8 IR exists for the model)")
                threshold = gr.Slider(0.05, 1.0, value=thr.default, step=0.01, label="Confidence threshold",
                                      info="0.05 is frozen into the graph: lower scores never come out")
                image = gr.Image(type="filepath", label="Input image", sources=["upload", "clipboard"],
                                 image_mode=None)
                gr.Markdown(f"Uploads up to {MAX_UPLOAD_MB:g} MB and {MAX_PIXELS / 1e6:g} megapixels.")
                run = gr.Button("Detect", variant="primary")
                gr.Examples(example_images(), inputs=[image], label="Examples")
            with gr.Column(scale=1):
                output = gr.Image(type="numpy", label="Detections", interactive=False, format="png")
                summary = gr.Markdown("")
                table = gr.Dataframe(headers=TABLE_HEADERS, label="Detections table", interactive=False)
                json_file = gr.File(label="JSON (same schema as d2ov predict --json)", interactive=False)
                card = gr.Markdown(model_card(service, catalog.DEFAULTS["instance_segmentation"]))
        task.change(on_task, task, [model, card], api_visibility="private")
        model.change(on_model, [model, precision], card, api_visibility="private")
        precision.change(on_model, [model, precision], card, api_visibility="private")
        run.click(detect, [image, model, device, threshold, precision], [output, table, json_file, summary, state, card],
                  api_name="detect", preprocess=False)
        # typing in the number box or dragging the slider: re-filter the last result, the model does not run
        threshold.input(refilter, [state, threshold], [output, table, json_file, summary], api_visibility="private",
                        trigger_mode="always_last")
    return demo


def ensure_detectron2() -> None:
    """On a Hugging Face Space (no setup script runs there) install Detectron2 the way tools/setup.sh does."""
    if os.environ.get("SPACE_ID") and importlib.util.find_spec("detectron2") is None:
        subprocess.run([sys.executable, str(Path(__file__).parent / "tools" / "install_detectron2.py")], check=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="d2ov web app")
    p.add_argument("--host", default=os.environ.get("D2OV_HOST", "127.0.0.1"), help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=int(os.environ.get("D2OV_PORT", 7860)))
    p.add_argument("--share", action="store_true", help="create a public gradio.live link")
    args = p.parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[d2ov] %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    ensure_detectron2()
    demo = build_demo()
    demo.queue(default_concurrency_limit=max(1, (os.cpu_count() or 2) // 2 + 1), max_size=64)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                max_file_size=int(MAX_UPLOAD_MB * 1024 * 1024), allowed_paths=[str(OUT_DIR)])


if __name__ == "__main__":
    main()
