"""`andraeus train`: estimate, progress, the adapter path as the last stdout line, errors, kill -9 and --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = ROOT / "examples" / "minimal.csv"


def test_cli_train_prints_estimate_progress_and_the_adapter_last(tmp_path, capsys):
    from andraeus_cli import main

    out = tmp_path / "adapter"
    argv = ["train", str(MINIMAL), "--base-model", "tiny-random", "--epochs", "1", "--rank", "4", "--out", str(out)]
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.strip().splitlines()
    assert lines[0].startswith("Estimate: ") and "training examples" in lines[0]
    assert lines[-1] == str(out.resolve())
    assert "step" in captured.err and "loss" in captured.err  # the progress bar
    meta = json.loads((out / "andraeus.json").read_text())
    assert meta["config"]["lora_r"] == 4 and meta["config"]["lora_alpha"] == 8 and meta["config"]["epochs"] == 1


def test_cli_train_takes_the_rank_from_the_profile_size(tmp_path, capsys):
    from andraeus_cli import main
    from andraeus_core import cpu_rank, load_profile

    out = tmp_path / "adapter"
    argv = ["train", str(MINIMAL), "--base-model", "tiny-random", "--epochs", "1", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    facts = len(load_profile(MINIMAL, user_name="Sam").facts)
    assert json.loads((out / "andraeus.json").read_text())["config"]["lora_r"] == cpu_rank(facts)


def test_cli_train_bad_input_is_one_clear_line(tmp_path, capsys):
    from andraeus_cli import main

    assert main(["train", str(MINIMAL), "--base-model", "tiny-random", "--epochs", "0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "epochs" in err and "Traceback" not in err
    missing = tmp_path / "nope.yaml"
    assert main(["train", str(missing), "--base-model", "tiny-random"]) == 1
    assert "nope.yaml" in capsys.readouterr().err


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "andraeus_cli", "train", str(MINIMAL), "--base-model", "tiny-random", *args]


def test_kill_mid_run_then_resume_finishes(tmp_path, isolated_home):
    out = tmp_path / "adapter"
    args = ("--epochs", "3", "--rank", "4", "--checkpoint-every", "3", "--no-early-stop", "--out", str(out))
    env = os.environ.copy()
    proc = subprocess.Popen(_cli(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    runs = isolated_home / "runs"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if any((c / "trainer_state.json").is_file() for c in runs.glob("*/checkpoint-*")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "training finished before it could be killed: " + proc.stderr.read().decode()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert not out.exists()  # killed before the end: nothing published

    done = subprocess.run(_cli(*args, "--resume"), env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == str(out.resolve())
    meta = json.loads((out / "andraeus.json").read_text())
    assert meta["metrics"]["resumed_from_step"] >= 3
    assert meta["metrics"]["steps"] == meta["metrics"]["planned_steps"]
    assert not list(runs.glob("*"))  # the finished run's checkpoints are cleaned up
