"""`make demo` serves the web app: the Makefile's demo command, run on a free port, answers with the app at / and
the REST API at /v1."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import free_port, http_get, stop, wait_for_server

ROOT = Path(__file__).resolve().parents[1]


def _demo_command() -> list[str]:
    text = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^demo:.*\n\t(.+)$", text, re.M)
    assert recipe, "the Makefile has a demo target"
    return shlex.split(recipe.group(1))


@pytest.mark.timeout(180)
def test_make_demo_serves_the_app_and_the_api(tmp_path: Path):
    words = _demo_command()
    env_words = [w for w in words if re.match(r"^[A-Z_]+=", w)]
    command = words[len(env_words) :]
    assert command[1:4] == ["serve", "--host", "127.0.0.1"] and command[-2:] == ["--port", "7860"]
    bin_dir = Path(sys.executable).parent
    andraeus = shutil.which("andraeus", path=str(bin_dir)) or shutil.which("andraeus")
    if andraeus is None:
        pytest.skip("the andraeus console script is not installed (pip install -e .)")
    port = free_port()
    env = {**os.environ, "ANDRAEUS_HOME": str(tmp_path / "home"), "HF_HOME": str(tmp_path / "hf")}
    for word in env_words:
        key, value = word.split("=", 1)
        env[key] = value.replace("$(CURDIR)", str(ROOT))
    argv = [andraeus, *command[1:-1], str(port)]
    proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = wait_for_server(f"http://127.0.0.1:{port}/", proc)
        if first is None:
            proc.kill()
            pytest.fail(f"andraeus serve did not come up: {proc.stdout.read()[-2000:]}")
        assert first[0] == 200
        status, config = http_get(f"http://127.0.0.1:{port}/config")
        assert status == 200 and '"Facts"' in config and '"Share"' in config  # the app's tabs, so the UI is mounted
        assert '"max_file_size": 2097152' in config.replace('"max_file_size":2097152', '"max_file_size": 2097152')
        status, _ = http_get(f"http://127.0.0.1:{port}/v1/models")
        assert status == 200
    finally:
        stop(proc)
