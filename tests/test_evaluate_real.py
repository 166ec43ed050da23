"""Evaluation on an adapter of the real default model trained on examples/minimal.csv (slow: the training is the
session's ``minimal_adapter``, the evaluation about two minutes on 2 CPU cores)."""

from __future__ import annotations

import json

import pytest

from andraeus_core.evaluate import KINDS, evaluate, heldout_questions, score_answer


@pytest.mark.slow
def test_trained_adapter_beats_the_base_model_on_heldout_questions(minimal_adapter) -> None:
    adapter = minimal_adapter  # examples/minimal.csv, cpu preset (shared with test_train_real)
    report = evaluate(adapter, None, max_new_tokens=32, batch_size=32)
    data = report.to_json()
    assert data["base_model"] == "smollm2-135m"
    assert data["n"] == len(heldout_questions(adapter.path)) == len(data["items"])
    assert set(data["by_kind"]) <= set(KINDS)
    assert {"paraphrase", "reverse"} <= set(data["by_kind"])
    # The facts are not something the bare base model knows; the adapter learned them from phrasings alone and
    # answers held-out phrasings it never saw. The in-context baseline is told the facts in its prompt.
    base = report.baselines["base"]
    assert base.recall is not None and base.recall <= 0.1
    assert report.recall is not None and report.recall >= base.recall + 0.4, report.table()
    assert report.baselines["in_context"].recall is not None
    assert report.baselines["in_context"].recall > base.recall
    # The verdicts in the report follow the scoring rules for the recorded answers.
    values = json.loads((adapter.path / "private.json").read_text())["profile"]
    flat = [t for f in values["facts"] for t in [f["value"], *f.get("aliases", [])]]
    questions = heldout_questions(adapter.path)
    for question, item in zip(questions, report.items, strict=True):
        assert item.correct == score_answer(question, item.answer, flat)
    # The time is recorded (the report shows it); its speed is bench/eval_prefix.py's to measure, not a timed test's:
    # a bound of 120 s failed at 125 s on a machine decoding at half the usual speed.
    assert report.seconds > 0
