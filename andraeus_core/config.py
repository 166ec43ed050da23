"""Settings read from the environment, and the typed configuration models shared by CLI, UI and API."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = Path("~/.cache/andraeus")


def andraeus_home() -> Path:
    """Root of everything Andraeus writes: converted models, adapters, jobs (``ANDRAEUS_HOME``)."""
    return Path(os.environ.get("ANDRAEUS_HOME") or DEFAULT_HOME).expanduser()


def models_dir() -> Path:
    """Where converted/built base models are cached (``ANDRAEUS_MODELS_DIR``, default ``$ANDRAEUS_HOME/models``).

    A separate override exists so a test session can share one converted copy of the default model while every test
    still gets its own ``ANDRAEUS_HOME``.
    """
    override = os.environ.get("ANDRAEUS_MODELS_DIR")
    return Path(override).expanduser() if override else andraeus_home() / "models"


def adapters_dir() -> Path:
    """Where trained adapters are written by default (``$ANDRAEUS_HOME/adapters``)."""
    return andraeus_home() / "adapters"
