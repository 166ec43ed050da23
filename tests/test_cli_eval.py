"""`andraeus eval`: the table, exactly one JSON object with --json, --no-baselines, and errors as messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from andraeus_cli import main

QUESTIONS = [
    {"question": "What's my dog's name?", "expect": ["Buddy", "Bud"], "kind": "paraphrase"},
    {"question": "who is Buddy", "expect": "dog", "kind": "reverse"},
    {"question": "What's my blood type?", "expect": None, "kind": "unknown"},
    {"question": "Write a haiku about rain.", "expect": None, "kind": "unrelated"},
    {"question": "What is the capital of France?", "expect": "Paris", "kind": "general"},
]


@pytest.fixture
def adapter(tmp_path: Path, make_adapter) -> Path:
    """A LoRA adapter on tiny-random laid out like training writes one (no held-out split)."""
    profile = {"user_name": "Sam Rivera", "facts": [{"topic": "dog's name", "value": "Buddy", "aliases": ["Bud"]}]}
    return make_adapter(tmp_path / "adapter", weights="zero", profile=profile, system_prompt="You are Nova.")


@pytest.fixture
def questions(tmp_path: Path) -> Path:
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return path


def test_eval_json_prints_exactly_one_object_on_stdout(adapter: Path, questions: Path, tmp_path: Path) -> None:
    # A real process: nothing but the JSON object may reach stdout (library chatter, progress and warnings go to
    # stderr), so `andraeus eval --json | jq` works.
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "andraeus_cli",
            "eval",
            str(adapter),
            "--questions",
            str(questions),
            "--json",
            "--max-new-tokens",
            "4",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)  # the whole of stdout is one JSON document
    assert out.stdout.count("\n") == 1
    assert data["n"] == len(QUESTIONS) and data["base_model"] == "tiny-random"
    assert set(data["baselines"]) == {"base", "in_context"}
    assert {"recall", "by_kind", "over_trigger_rate", "abstention_rate", "retention", "items", "seconds"} <= set(data)
    assert [i["question"] for i in data["items"]] == [q["question"] for q in QUESTIONS]


def test_eval_table_and_no_baselines(adapter: Path, questions: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(adapter), "--questions", str(questions), "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr()
    header = out.out.splitlines()[0]
    assert "adapter" in header and "base" in header and "in-context" in header
    assert "reverse" in out.out and "recall" in out.out
    assert "%] answering" in out.err  # progress goes to stderr
    assert (
        main(
            ["eval", str(adapter), "--questions", str(questions), "--no-baselines", "--json", "--max-new-tokens", "4"]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["baselines"] == {} and data["retention"]["delta"] is None


def test_eval_errors_are_messages_not_tracebacks(
    adapter: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "expect": "x", "kind": "trivia"}\n')
    assert main(["eval", str(adapter), "--questions", str(bad), "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "bad.jsonl:1" in captured.err and "kind" in captured.err and "Traceback" not in captured.err
    # No --questions and no held-out split: the message says what to do.
    assert main(["eval", str(adapter)]) == 1
    assert "--questions" in capsys.readouterr().err
