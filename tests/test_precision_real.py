"""Precision on the real default model (slow: one cpu-preset training of the seed example, ~4 minutes on 2 cores).

The two questions a new user asked the web app before the gate existed, on the shipped example:
"What's my sister's name?" -> "Your partner's name is Alex." and "What color are bananas when ripe?" -> "Your
partner's color is teal." Now the first is declined and the second is the base model's own answer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SISTER = "What's my sister's name?"
BANANAS = "What color are bananas when ripe?"


@pytest.fixture(scope="module")
def seed_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from andraeus_core.config import TrainConfig
    from andraeus_core.train import train

    out = tmp_path_factory.mktemp("precision") / "adapter"
    adapter = train(ROOT / "examples" / "seed_profile.yaml", TrainConfig.preset("cpu"), out_dir=out)
    assert adapter.meta.gate is not None and (out / "gate.safetensors").is_file()
    return out


def _values() -> list[str]:
    from andraeus_core.profile import load_profile

    return load_profile(ROOT / "examples" / "seed_profile.yaml").values()


@pytest.mark.slow
def test_the_gate_declines_the_sister_and_leaves_bananas_to_the_base_model(seed_adapter: Path) -> None:
    from andraeus_core.chat import load_chat_model
    from andraeus_core.matching import is_abstention, mentioned_values

    chat = load_chat_model(adapter=seed_adapter)
    trace: dict = {}
    sister = "".join(chat.stream([{"role": "user", "content": SISTER}], trace=trace)).strip()
    assert trace["route"] == "abstain" and is_abstention(sister), sister
    assert not mentioned_values(sister, _values(), question=SISTER), sister
    trace = {}
    bananas = "".join(chat.stream([{"role": "user", "content": BANANAS}], trace=trace)).strip()
    assert trace["route"] == "base", bananas
    assert bananas == chat.reply([{"role": "user", "content": BANANAS}], use_adapter=False)
    assert not mentioned_values(bananas, _values(), question=BANANAS), bananas
    # A known fact still reaches the adapter, which answers it.
    trace = {}
    dog = "".join(chat.stream([{"role": "user", "content": "What's my dog called?"}], trace=trace))
    assert trace["route"] == "adapter" and "Buddy" in dog, dog


@pytest.mark.slow
def test_the_web_apps_chat_answers_both_and_says_who_answered(seed_adapter: Path) -> None:
    from andraeus_core.matching import is_abstention, mentioned_values
    from andraeus_web import ui

    session = ui.Session(adapter=str(seed_adapter))
    for question, title in ((SISTER, "declined"), (BANANAS, "base model")):
        *_, (state, history, cleared) = ui.chat(question, [], False, True, session)
        answer = history[-1]
        assert state is session and cleared == "" and title in answer["metadata"]["title"]
        assert not mentioned_values(answer["content"], _values(), question=question), answer
        if question == SISTER:
            assert is_abstention(answer["content"]), answer
    # With the gate off the adapter answers, and nothing is labelled.
    *_, (_, history, _) = ui.chat("What's my dog called?", [], False, False, session)
    assert "Buddy" in history[-1]["content"] and not history[-1].get("metadata")
