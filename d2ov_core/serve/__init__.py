"""Serving people: the model service behind the web app (states, predictors, IR sources), the app's
handlers as plain functions, the Gradio UI, rendering with Detectron2's ``Visualizer``, and the
Hugging Face Space builder."""
