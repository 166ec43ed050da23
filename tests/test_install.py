"""A non-editable install (a built wheel in a fresh venv) runs `andraeus serve` from anywhere and serves both the REST
API at /v1 and the web app at /: every package the command needs ships in the wheel, examples included.

Offline: the wheel is built from a copy of the working tree with this environment's setuptools, and the fresh venv
borrows this environment's third-party packages through a .pth file (which does not run this environment's
editable-install hook, so the project itself can only come from the wheel).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.helpers import free_port, http_get, stop, wait_for_server

ROOT = Path(__file__).resolve().parents[1]


def _run(*argv: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_wheel_install_serves_the_api_and_the_web_app(tmp_path: Path) -> None:
    # The project's files as git would ship them (tracked or new, never ignored build output).
    listed = _run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    source = tmp_path / "src"
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run(*pip, "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", wheels, source)
    (wheel,) = wheels.glob("andraeus-*.whl")

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    _run(*pip, "--python", python, "install", "--quiet", "--no-deps", "--no-index", wheel)
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    here = sysconfig.get_paths()
    (site / "_andraeus_test_dependencies.pth").write_text(f"{here['purelib']}\n{here['platlib']}\n")

    home = tmp_path / "home"
    outside = tmp_path / "elsewhere"  # not the repository: nothing may be found through the working directory
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(ANDRAEUS_HOME=str(home), HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    where = json.loads(
        _run(
            python,
            "-c",
            "import json, andraeus_cli, andraeus_core, andraeus_web, api\n"
            "from andraeus_web import ui\n"
            "mods = [andraeus_cli, andraeus_core, andraeus_web, api]\n"
            "print(json.dumps([m.__file__ for m in mods] + [str(ui.EXAMPLE_PROFILE)]))",
            cwd=outside,
            env=env,
        )
    )
    assert all(Path(p).is_relative_to(site) for p in where), where
    assert Path(where[-1]).is_file()  # the example profile of the web app's "Load example" ships too

    port = free_port()
    argv = [venv / "bin" / "andraeus", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "0"]
    log_file = tmp_path / "serve.log"
    with log_file.open("w") as log:
        proc = subprocess.Popen([str(a) for a in argv], cwd=outside, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            health = wait_for_server(f"http://127.0.0.1:{port}/healthz", proc, timeout=180)
            if health is None:
                proc.kill()
                pytest.fail("andraeus serve did not come up: " + log_file.read_text()[-3000:])
            assert health[0] == 200 and json.loads(health[1])["status"] == "ok"
            status, body = http_get(f"http://127.0.0.1:{port}/v1/models")
            assert status == 200 and "smollm2-135m" in [m["id"] for m in json.loads(body)["data"]]
            status, body = http_get(f"http://127.0.0.1:{port}/")
            assert status == 200 and "<html" in body.lower()
            status, config = http_get(f"http://127.0.0.1:{port}/config")
            assert status == 200 and '"Facts"' in config and '"Share"' in config  # the web app's tabs
        finally:
            stop(proc)
    assert "Web app not mounted" not in log_file.read_text()
