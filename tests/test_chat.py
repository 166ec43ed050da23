"""Chat: chat template, streaming, greedy/sampled decoding, history, stop strings, adapters on and off."""

from __future__ import annotations

from pathlib import Path

import pytest

from andraeus_core.chat import ChatModel, GenerationConfig, load_chat_model
from andraeus_core.errors import AdapterError, ConfigError


@pytest.fixture
def tiny_chat(tiny_model) -> ChatModel:
    return ChatModel(tiny_model)


def test_stream_yields_pieces_that_join_to_the_reply(tiny_chat: ChatModel):
    config = GenerationConfig(max_new_tokens=12)
    pieces = list(tiny_chat.stream([{"role": "user", "content": "hello"}], config))
    assert len(pieces) > 1
    assert "".join(pieces).strip() == tiny_chat.ask("hello", config)


def test_greedy_is_deterministic_and_sampling_is_seeded(tiny_chat: ChatModel):
    greedy = GenerationConfig(max_new_tokens=10)
    assert tiny_chat.ask("tell me something", greedy) == tiny_chat.ask("tell me something", greedy)
    sampled = GenerationConfig(max_new_tokens=10, temperature=1.5, top_p=0.95, seed=3)
    assert tiny_chat.ask("tell me something", sampled) == tiny_chat.ask("tell me something", sampled)


def test_max_new_tokens_bounds_the_answer(tiny_chat: ChatModel):
    raw = "".join(tiny_chat.stream([{"role": "user", "content": "hello"}], GenerationConfig(max_new_tokens=3)))
    longer = "".join(tiny_chat.stream([{"role": "user", "content": "hello"}], GenerationConfig(max_new_tokens=12)))
    assert raw and longer.startswith(raw) and len(longer) > len(raw)
    assert len(tiny_chat.tokenizer(raw, add_special_tokens=False)["input_ids"]) <= 4


def test_usage_counts_the_tokens_generated(tiny_chat: ChatModel):
    import torch

    messages = [{"role": "user", "content": "hello"}]
    inputs = tiny_chat.prompt_ids(messages)
    for limit in (1, 6):
        usage: dict[str, int] = {}
        list(tiny_chat.stream(messages, GenerationConfig(max_new_tokens=limit), usage=usage))
        with torch.inference_mode():
            out = tiny_chat.model.generate(
                **inputs, max_new_tokens=limit, do_sample=False, pad_token_id=tiny_chat.tokenizer.pad_token_id
            )
        assert usage["completion_tokens"] == out.shape[-1] - inputs["input_ids"].shape[-1] <= limit


def test_stop_string_cuts_the_answer(tiny_chat: ChatModel):
    full = tiny_chat.ask("hello", GenerationConfig(max_new_tokens=20))
    stop = full[4:7]
    assert stop.strip(), "the tiny model's greedy answer should be long enough to cut"
    cut = tiny_chat.ask("hello", GenerationConfig(max_new_tokens=20, stop=[stop]))
    assert stop not in cut
    assert full.startswith(cut)


def test_history_and_system_prompt_reach_the_template(tiny_chat: ChatModel):
    history = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ]
    rendered = tiny_chat.tokenizer.decode(tiny_chat.prompt_ids(history, system="Be brief.")["input_ids"][0])
    assert rendered.index("Be brief.") < rendered.index("first question") < rendered.index("first answer")
    assert rendered.rstrip().endswith("<|im_start|>assistant")


def test_system_prompt_precedence(tiny_model):
    chat = ChatModel(tiny_model, system_prompt="adapter default")
    user = [{"role": "user", "content": "q"}]
    assert chat.build_messages(user)[0] == {"role": "system", "content": "adapter default"}
    assert chat.build_messages(user, system="explicit")[0]["content"] == "explicit"
    own = [{"role": "system", "content": "from conversation"}, *user]
    assert chat.build_messages(own)[0]["content"] == "from conversation"


@pytest.mark.parametrize(
    "messages",
    [[], [{"role": "assistant", "content": "hi"}], [{"role": "robot", "content": "x"}], [{"role": "user"}]],
)
def test_malformed_conversations_are_rejected(tiny_chat: ChatModel, messages):
    with pytest.raises((ConfigError, ValueError)):
        list(tiny_chat.stream(messages))


def test_generation_config_validates_ranges():
    with pytest.raises(ValueError):
        GenerationConfig(temperature=-1)
    with pytest.raises(ValueError):
        GenerationConfig(max_new_tokens=0)
    with pytest.raises(ValueError):
        GenerationConfig(unknown_field=1)


def test_missing_or_unsafe_adapter_dirs_are_clear_errors(tmp_path: Path):
    with pytest.raises(AdapterError, match="does not exist"):
        load_chat_model("tiny-random", tmp_path / "nope")
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(AdapterError, match="safetensors"):
        load_chat_model("tiny-random", tmp_path)


def test_adapter_changes_answers_and_can_be_switched_off(tmp_path: Path, tiny_model, make_adapter):
    adapter = make_adapter(tmp_path / "adapter", profile=None, system_prompt="You are Nova.")
    chat = load_chat_model(None, adapter)  # base model read from andraeus.json
    assert chat.loaded.name == "tiny-random" and chat.system_prompt == "You are Nova."
    config = GenerationConfig(max_new_tokens=8)
    base_answer = ChatModel(tiny_model, system_prompt="You are Nova.").ask("hello there", config)
    with_adapter = chat.ask("hello there", config)
    without_adapter = chat.ask("hello there", config, use_adapter=False)
    assert without_adapter == base_answer
    assert with_adapter != base_answer


@pytest.mark.slow
def test_default_model_knows_the_capital_of_france(default_model):
    answer = ChatModel(default_model).ask("What is the capital of France?", GenerationConfig(max_new_tokens=40))
    assert "Paris" in answer
