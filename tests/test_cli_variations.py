"""`andraeus variations`: counts per fact and dimension, a sample, JSONL out; bad input is a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from andraeus_cli import main
from andraeus_core.dataset import read_jsonl

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_variations_prints_counts_and_writes_jsonl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data.jsonl"
    held = tmp_path / "heldout.jsonl"
    code = main(["variations", str(EXAMPLES / "seed_profile.yaml"), "--out", str(out), "--heldout-out", str(held),
                 "--seed", "4", "--sample", "3"])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    header = text.splitlines()[0].split()
    assert header[:6] == ["fact", "punctuation", "formality", "directness", "reverse", "typo"]
    row = next(line for line in text.splitlines() if line.startswith("dog's name"))
    # distinct phrasings generated (--per-fact 30, the held-out ones on top), and those trained on: the split holds
    # out whole groups (a phrasing with its typos), so a little under --per-fact, never far under
    distinct, trained = map(int, row.split()[-2:])
    assert distinct == 38 and 24 <= trained <= 30
    assert "sample:" in text and text.count("  ->  ") == 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and all(set(r) == {"messages"} for r in rows)
    assert f"wrote {out} ({len(rows)} training examples)" in text
    heldout = read_jsonl(held)
    assert heldout and all(e.meta.split == "heldout" for e in heldout)
    assert not {e.question for e in heldout} & {r["messages"][1]["content"] for r in rows}


def test_readme_command_csv_with_user_name_and_per_fact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The README's second example, verbatim (run from the repository root, writing into a temporary directory).
    monkeypatch.chdir(EXAMPLES.parent)
    out, held = tmp_path / "train.jsonl", tmp_path / "heldout.jsonl"
    argv = "variations examples/minimal.csv --user-name Sam --per-fact 40 --out OUT --heldout-out HELD".split()
    assert main([{"OUT": str(out), "HELD": str(held)}.get(a, a) for a in argv]) == 0
    text = capsys.readouterr().out
    assert "You are Andraeus, Sam's personal assistant." in text
    distinct, trained = map(int, next(line for line in text.splitlines() if line.startswith("birthday")).split()[-2:])
    assert distinct == 50 and 32 <= trained <= 40
    assert out.is_file() and held.is_file()
    assert main(["variations", "examples/minimal.csv", "--sample", "0"]) == 0
    assert "sample:" not in capsys.readouterr().out


def test_variations_bad_profile_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("user_name: Sam\nfacts:\n  - topic: dog's name\n    vaule: Buddy\n")
    assert main(["variations", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "line 4" in err and "Did you mean 'value'" in err
    assert "Traceback" not in err
    assert main(["variations", str(EXAMPLES / "seed_profile.yaml"), "--per-fact", "0"]) == 1
