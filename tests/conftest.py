"""Test isolation: every test gets its own ANDRAEUS_HOME and HF_HOME, and the Hub is offline.

Converted base models are shared across the tests of one session (converting the embedded default takes ~15 s);
set ANDRAEUS_TEST_MODELS_DIR to keep them across sessions while developing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port

# Before anything imports huggingface_hub (it reads these once, at import time).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def shared_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keep = os.environ.get("ANDRAEUS_TEST_MODELS_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        return Path(keep)
    return tmp_path_factory.mktemp("models")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_models_dir: Path) -> Path:
    home = tmp_path / "andraeus-home"
    monkeypatch.setenv("ANDRAEUS_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ANDRAEUS_MODELS_DIR", str(shared_models_dir))
    monkeypatch.delenv("ANDRAEUS_BASE_MODEL", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return home


@pytest.fixture(scope="session")
def tiny_model(shared_models_dir: Path):
    """The tiny random Llama, loaded once per session (mechanics only: its answers are noise)."""
    os.environ["ANDRAEUS_MODELS_DIR"] = str(shared_models_dir)
    from andraeus_core.models import load_model

    return load_model("tiny-random")


@pytest.fixture(scope="session")
def default_model(shared_models_dir: Path):
    """The real embedded default (SmolLM2-135M-Instruct), loaded once per session."""
    os.environ["ANDRAEUS_MODELS_DIR"] = str(shared_models_dir)
    from andraeus_core.models import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    """The web app (app.py's ``demo``) served on 127.0.0.1 for one test module."""
    import app

    port = free_port()
    app.demo.launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **app.LAUNCH_KWARGS
    )
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.demo.close()
