"""The Andraeus web app (Gradio), importable from an installed package: ``build_demo()`` makes it, ``mount()`` serves
it under a FastAPI app (``andraeus serve``), and the repository's ``app.py`` launches it as a Hugging Face Space."""

from .ui import LAUNCH_KWARGS, MAX_UPLOAD, build_demo, mount

__all__ = ["LAUNCH_KWARGS", "MAX_UPLOAD", "build_demo", "mount"]
