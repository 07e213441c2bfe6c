"""d2ov web app: Detectron2 models on OpenVINO in the browser (local, Hugging Face Space, shared link).

    python app.py [--host 127.0.0.1] [--port 7860] [--share]

Wiring only: every handler is a few lines calling ``d2ov_core``; user mistakes become ``gr.Error``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import gradio as gr

from d2ov_core import catalog, runtime
from d2ov_core import settings as S
from d2ov_core.errors import D2ovError
from d2ov_core.images import load_image
from d2ov_core.render import render
from d2ov_core.service import ModelService

TASKS = {"Object detection": "detection", "Instance segmentation": "instance_segmentation"}
TABLE_HEADERS = ["label", "score", "x0", "y0", "x1", "y1"]
OUT_DIR = Path(tempfile.mkdtemp(prefix="d2ov-app-"))


def example_images() -> list[str]:
    samples = sorted((catalog.DEMO_DIR / "samples").glob("*.jpg"))
    import matplotlib

    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return [str(p) for p in samples] + ([str(photo)] if photo.is_file() else [])


def model_card(service: ModelService, name: str) -> str:
    try:
        info = service.spec_info(name)
        st = service.state(name)
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
        meta = runtime.read_metadata(st.xml)
        lines.append(f"- IR: {size:.1f} MB, {meta['precision']}, input {meta['min_size']}/{meta['max_size']} px")
    return "\n".join(lines)


def build_demo(service: ModelService | None = None) -> gr.Blocks:
    service = service or ModelService()
    devices = runtime.available_devices() + ["AUTO"]
    thr = S.SETTINGS["confidence_threshold"]

    def models_for(task_label: str) -> list[str]:
        return service.models(TASKS[task_label])

    def on_task(task_label):
        default = catalog.DEFAULTS[TASKS[task_label]]
        service.prepare(default)
        return gr.Dropdown(choices=models_for(task_label), value=default), model_card(service, default)

    def on_model(name):
        service.prepare(name)
        return model_card(service, name)

    def detect(image_path, name, device, threshold):
        if not image_path:
            raise gr.Error("Upload an image first (or pick an example).")
        try:
            rgb = load_image(image_path, name=Path(image_path).name)
            det = service.predictor(name, device).predict(rgb, threshold=0.0)
            state = {"rgb": rgb, "det": det, "model": name, "device": device, "image": Path(image_path).name}
            return (*present(state, threshold), state, model_card(service, name))
        except D2ovError as e:
            raise gr.Error(str(e)) from None

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
        labels = service.predictor(state["model"], state["device"]).labels
        image = render(state["rgb"], det, labels)
        rows = [[str(l), round(float(s), 3), *[round(float(v), 1) for v in b]] for l, s, b in zip(det.labels, det.scores, det.boxes)]
        doc = {"model": service.predictor(state["model"], state["device"]).describe(), "backend": "openvino",
               "device": state["device"], "threshold": threshold, "results": [{"image": state["image"], **det.to_dict()}]}
        path = OUT_DIR / f"predictions-{uuid.uuid4().hex[:8]}.json"
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
                threshold = gr.Slider(0.05, 1.0, value=thr.default, step=0.01, label="Confidence threshold",
                                      info="0.05 is frozen into the graph: lower scores never come out")
                image = gr.Image(type="filepath", label="Input image", sources=["upload", "clipboard"])
                run = gr.Button("Detect", variant="primary")
                gr.Examples(example_images(), inputs=[image], label="Examples")
            with gr.Column(scale=1):
                output = gr.Image(type="numpy", label="Detections", interactive=False, format="png")
                summary = gr.Markdown("")
                table = gr.Dataframe(headers=TABLE_HEADERS, label="Detections table", interactive=False)
                json_file = gr.File(label="JSON (same schema as d2ov predict --json)", interactive=False)
                card = gr.Markdown(model_card(service, catalog.DEFAULTS["instance_segmentation"]))
        task.change(on_task, task, [model, card], api_visibility="private")
        model.change(on_model, model, card, api_visibility="private")
        run.click(detect, [image, model, device, threshold], [output, table, json_file, summary, state, card],
                  api_name="detect")
        threshold.release(refilter, [state, threshold], [output, table, json_file, summary], api_visibility="private")
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
    ensure_detectron2()
    demo = build_demo()
    demo.queue(default_concurrency_limit=max(1, (os.cpu_count() or 2) // 2 + 1), max_size=64)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size="20mb",
                allowed_paths=[str(OUT_DIR)])


if __name__ == "__main__":
    main()
