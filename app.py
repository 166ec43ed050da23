"""The Hugging Face Space's entry point (README front matter: ``app_file: app.py``): the web app of ``andraeus_web``.

``demo`` is what a Space (and ``gradio app.py`` reloading) looks for; the UI itself lives in ``andraeus_web`` so that
an installed package serves it too (``andraeus serve``). ``python app.py`` listens where a Space tells it to:
``GRADIO_SERVER_NAME`` (default 127.0.0.1) and ``GRADIO_SERVER_PORT`` (default 7860), Gradio's own variables.
"""

from __future__ import annotations

import logging
import os

from andraeus_web import LAUNCH_KWARGS, build_demo

demo = build_demo()

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        **LAUNCH_KWARGS,
    )
