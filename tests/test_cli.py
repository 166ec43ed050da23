"""The `andraeus` command: instant help, one-shot and REPL chat, clear errors without tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from andraeus_cli import main


def _run(*args: str, stdin: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "andraeus_cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
    )


def test_help_imports_no_heavy_library():
    code = (
        "import sys; import andraeus_cli; andraeus_cli.build_parser().format_help();"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'trl', 'gradio') if m in sys.modules];"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "chat" in capsys.readouterr().out


def test_models_lists_presets_and_marks_the_default(capsys: pytest.CaptureFixture[str], monkeypatch):
    monkeypatch.setenv("ANDRAEUS_BASE_MODEL", "tiny-random")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "qwen2.5-7b" in out
    assert "* tiny-random" in out


def test_chat_once_prints_one_answer(tiny_model):
    result = _run("chat", "--base-model", "tiny-random", "--once", "hello", "--max-new-tokens", "5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "Traceback" not in result.stderr


def test_chat_repl_reads_lines_until_eof(tiny_model):
    result = _run("chat", "--base-model", "tiny-random", "--max-new-tokens", "4", stdin="hello\n/reset\nagain\n")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert "(conversation cleared)" in lines
    assert len(lines) == 3  # answer, reset notice, answer


def test_unavailable_model_is_a_clear_error_not_a_traceback():
    result = _run("chat", "--base-model", "qwen2.5-3b", "--once", "hi", timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("error: Base model 'qwen2.5-3b'")
    assert "smollm2-135m" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_generation_setting_is_a_clear_error():
    result = _run("chat", "--base-model", "tiny-random", "--once", "hi", "--temperature", "9", timeout=60)
    assert result.returncode == 1
    assert "temperature" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_chat_once_on_the_default_model(default_model):
    result = _run("chat", "--once", "What is the capital of France?", "--max-new-tokens", "30")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
