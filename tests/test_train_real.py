"""The real thing, briefly: train the embedded default on a 3-fact profile, then ask held-out questions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_default_model_learns_a_fact_and_answers_a_heldout_question(tmp_path, default_model):
    from andraeus_core.chat import load_chat_model
    from andraeus_core.config import TrainConfig
    from andraeus_core.profile import load_profile
    from andraeus_core.train import train

    profile = load_profile(ROOT / "examples" / "minimal.csv", user_name="Sam Rivera")
    config = TrainConfig.preset("cpu", base_model="smollm2-135m", per_fact=20, epochs=4)
    adapter = train(profile, config, out_dir=tmp_path / "adapter")
    assert adapter.meta.base_model == "smollm2-135m"

    heldout = [json.loads(line) for line in (adapter.path / "heldout.jsonl").read_text().splitlines()]
    dog = [h for h in heldout if h["meta"]["kind"] == "fact" and h["meta"]["topic"] == "dog's name"]
    assert dog, "the split keeps some dog's-name phrasings out of training"
    chat = load_chat_model(adapter=adapter.path)
    answers = [chat.ask(next(m["content"] for m in h["messages"] if m["role"] == "user")) for h in dog]
    right = [a for a in answers if "buddy" in a.lower() or "bud" in a.lower()]
    assert len(right) >= max(1, len(dog) // 2), answers
