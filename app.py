"""d2ov web app: ``python app.py`` (what a Hugging Face Space runs), same as ``d2ov serve``.

The UI is built by :func:`d2ov_core.serve.webapp.build_demo` (Gradio wiring of the handlers in
:mod:`d2ov_core.serve.handlers`); options: ``--host``, ``--port``, ``--share``, ``--no-mcp``. Without
``--host``/``--port`` Gradio's own settings apply (``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT``,
default 127.0.0.1:7860).
"""

from d2ov_core.serve.webapp import build_demo, main

__all__ = ["build_demo", "main"]

if __name__ == "__main__":
    main()
