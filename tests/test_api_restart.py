"""Kill the API server (SIGKILL) while a job trains, start it again on the same ANDRAEUS_HOME, and check the state:
the running job resumes from its epoch checkpoint, the queued job still runs, nothing is left ``running``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
KEY = "restart-test-key-0123456789"
H = {"Authorization": f"Bearer {KEY}"}


def _start(port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "ANDRAEUS_API_KEYS": KEY, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "andraeus_cli", "serve", "--port", str(port), "--no-ui"],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline, "server did not become ready"
        time.sleep(0.2)


def _wait(predicate, timeout: float, what: str):  # noqa: ANN001, ANN202
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_kill_mid_job_and_restart(tmp_path: Path, isolated_home: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    base = f"http://127.0.0.1:{port}/v1"
    proc = _start(port, log)
    try:
        with open(ROOT / "examples" / "minimal.csv", "rb") as fh:
            fid = httpx.post(
                f"{base}/files", headers=H, files={"file": ("minimal.csv", fh)}, data={"purpose": "fine-tune"}
            ).json()["id"]
        body = {"model": "tiny-random", "training_file": fid, "hyperparameters": {"n_epochs": 3}}
        first = httpx.post(f"{base}/fine_tuning/jobs", headers=H, json=body).json()["id"]
        short = {**body, "hyperparameters": {"n_epochs": 1}}
        second = httpx.post(f"{base}/fine_tuning/jobs", headers=H, json=short).json()["id"]

        def past_first_epoch() -> bool:
            events = httpx.get(f"{base}/fine_tuning/jobs/{first}/events?limit=5", headers=H).json()["data"]
            return any(e["type"] == "metrics" and e["data"]["epoch"] >= 1.2 for e in events)

        _wait(past_first_epoch, 180, "the first epoch")
        assert httpx.get(f"{base}/fine_tuning/jobs/{first}", headers=H).json()["status"] == "running"
        assert httpx.get(f"{base}/fine_tuning/jobs/{second}", headers=H).json()["status"] == "queued"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    proc = _start(port, log)
    try:

        def finished(job_id: str):  # noqa: ANN202
            job = httpx.get(f"{base}/fine_tuning/jobs/{job_id}", headers=H).json()
            return job if job["status"] in ("succeeded", "failed", "cancelled") else None

        one = _wait(lambda: finished(first), 300, "the interrupted job")
        two = _wait(lambda: finished(second), 300, "the queued job")
        assert one["status"] == "succeeded", one["error"]
        assert two["status"] == "succeeded", two["error"]
        messages = [
            e["message"]
            for e in httpx.get(f"{base}/fine_tuning/jobs/{first}/events?limit=500", headers=H).json()["data"]
        ]
        assert any("resumes from its last epoch checkpoint" in m for m in messages)
        assert "Training resumed." in messages
        # It really continued from the checkpoint rather than starting over.
        meta = json.loads(next(isolated_home.glob(f"api/adapters/*/{first}/andraeus.json")).read_text())
        assert meta["metrics"]["resumed_from_step"] and meta["metrics"]["resumed_from_step"] > 0
        assert "No checkpoint found" not in log.read_text()
        models = [m["id"] for m in httpx.get(f"{base}/models", headers=H).json()["data"]]
        assert one["fine_tuned_model"] in models and two["fine_tuned_model"] in models
        chat = httpx.post(
            f"{base}/chat/completions",
            headers=H,
            json={"model": one["fine_tuned_model"], "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
            timeout=60,
        )
        assert chat.status_code == 200, chat.text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
