"""Serving people: the model service behind the web app (states, predictors, IR sources), the app's
handlers as plain functions, the Gradio UI, rendering with Detectron2's ``Visualizer``, the
Hugging Face Space builder; and for model servers, the KServe predictor (``kserve``, needs
``d2ov[serve]``) and the OpenVINO Model Server repository writer (``ovms``)."""
