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
    # calibrated on the held-out known facts after training: a little above the adapter's highest doubt on them
    gate = adapter.meta.gate
    assert gate.decline_known_max is not None and 0 < gate.decline_known_max < 0.5
    assert gate.threshold_decline == pytest.approx(min(0.5, gate.decline_known_max * 1.1), abs=1e-3)
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
    # Conversation is the base model's (held-out messages, not the gate's pool): the adapter alone answered "Hello"
    # with a profile value.
    for message in ("Hey there!", "Thanks so much!"):
        trace = {}
        said = "".join(chat.stream([{"role": "user", "content": message}], trace=trace)).strip()
        assert trace["route"] == "base" and not mentioned_values(said, _values(), question=message), (message, said)
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
