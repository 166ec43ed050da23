"""The app started exactly as a Hugging Face Space starts it, driven over HTTP with gradio_client.

A Space runs ``python app.py`` from the repository with the port in ``GRADIO_SERVER_PORT`` and everything under
``$HOME`` (``ANDRAEUS_HOME`` unset: ``~/.cache/andraeus``). Here ``$HOME`` is a fresh directory *outside* the
process's temp dir (``TMPDIR`` points elsewhere), so a file the UI serves from ``$ANDRAEUS_HOME`` would be refused by
Gradio (``InvalidPathError``) as on a Space — the review that found Download zip and Evaluate failing there had a
home under /tmp in its tests. ``ANDRAEUS_ZEROGPU_MAX_S`` makes training run in GPU-call-sized slices as on ZeroGPU
(where ``spaces.GPU`` wraps each call; here it is a no-op), small enough for several slices of tiny-random.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

from tests.helpers import free_port, stop, wait_for_server

ROOT = Path(__file__).resolve().parents[1]
SLICE_S = 4  # seconds per "GPU call": loading tiny-random and a few steps
SETTINGS = {
    "base_model": "tiny-random",
    "preset": "cpu",
    "epochs": 3,
    "rank": 8,
    "qlora": False,
    "per_fact": 12,
    "heldout": 0.2,
}


@pytest.fixture
def space(tmp_path: Path):
    home, system_tmp = tmp_path / "home", tmp_path / "system-tmp"
    home.mkdir()
    system_tmp.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANDRAEUS_", "GRADIO_", "HF_"))}
    env.update(
        HOME=str(home),
        TMPDIR=str(system_tmp),
        GRADIO_SERVER_PORT=str(port),
        GRADIO_SERVER_NAME="127.0.0.1",  # a Space uses 0.0.0.0; tests stay on the loopback
        HF_HUB_OFFLINE="1",  # no network in tests; a Space has one
        ANDRAEUS_ZEROGPU_MAX_S=str(SLICE_S),
        PYTHONUNBUFFERED="1",
    )
    log = (tmp_path / "app.log").open("w")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        answered = wait_for_server(f"http://127.0.0.1:{port}/", proc, timeout=180)
        assert answered and answered[0] == 200, (tmp_path / "app.log").read_text()[-3000:]
        yield f"http://127.0.0.1:{port}/", home, tmp_path / "app.log"
    finally:
        stop(proc)
        log.close()


@pytest.mark.timeout(600)
def test_python_app_py_as_a_space_runs_example_train_in_slices_evaluate_and_zip(space):
    from gradio_client import Client

    url, home, log = space
    client = Client(url, verbose=False, download_files=tempfile.mkdtemp(prefix="andraeus-space-client-"))
    user, _assistant, _table, status = client.predict(api_name="/load_example")
    assert user == "Sam Rivera" and status.startswith("✅"), status

    estimate = client.predict(*SETTINGS.values(), api_name="/estimate")
    assert "GPU seconds" in estimate and "anonymous 120s/day" in estimate, estimate

    job = client.submit(*SETTINGS.values(), api_name="/train")
    deadline = time.monotonic() + 420
    while not job.done() and time.monotonic() < deadline:
        time.sleep(0.2)
    status, plot = job.result(timeout=30)
    statuses = [o[0] for o in job.outputs()]
    assert status.startswith("✅ Adapter trained") and "GPU calls" in status, (status, log.read_text()[-3000:])
    assert any(s.startswith("Preparing (1/4): loading the base model") for s in statuses)
    assert not any("step 0/0" in s for s in statuses)
    assert sum(s.startswith("⏸️ GPU call") for s in statuses) >= 1  # slices ended with a checkpoint, then resumed
    steps = [row[0] for row in plot["data"]]
    assert steps == list(range(1, len(steps) + 1)), "the loss plot is continuous across the GPU calls"

    summary, chart, items = client.predict(api_name="/evaluate")
    assert "recall" in summary and Path(chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert items["data"]

    zip_path = client.predict(api_name="/download_zip")
    with zipfile.ZipFile(zip_path) as archive:
        names = set(archive.namelist())
    assert "adapter_model.safetensors" in names and not names & {"private.json", "heldout.jsonl"}

    # Everything Andraeus keeps lives under $HOME, as on a Space; served copies went through Gradio's cache.
    assert list((home / ".cache" / "andraeus" / "sessions").iterdir())
    assert "InvalidPathError" not in log.read_text()
