"""The real thing: the embedded default trained on a 3-fact profile (the session's ``minimal_adapter``) answers
held-out questions."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_default_model_learns_a_fact_and_answers_a_heldout_question(minimal_adapter):
    from andraeus_core.chat import load_chat_model

    adapter = minimal_adapter  # examples/minimal.csv, cpu preset (shared with test_evaluate_real)
    assert adapter.meta.base_model == "smollm2-135m"

    heldout = [json.loads(line) for line in (adapter.path / "heldout.jsonl").read_text().splitlines()]
    dog = [h for h in heldout if h["meta"]["kind"] == "fact" and h["meta"]["topic"] == "dog's name"]
    assert dog, "the split keeps some dog's-name phrasings out of training"
    chat = load_chat_model(adapter=adapter.path)
    answers = [chat.ask(next(m["content"] for m in h["messages"] if m["role"] == "user")) for h in dog]
    right = [a for a in answers if "buddy" in a.lower() or "bud" in a.lower()]
    assert len(right) >= max(1, len(dog) // 2), answers
