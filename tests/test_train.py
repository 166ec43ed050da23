"""Training mechanics on tiny-random: the recipe, masking, learning, cancel, NaN, QLoRA, reload, atomic writes."""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from andraeus_core.config import TrainConfig, adapters_dir, cpu_has_bf16
from andraeus_core.errors import ConfigError, ProfileError, TrainingCancelled, TrainingError

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = ROOT / "examples" / "minimal.csv"


def tiny_config(**overrides) -> TrainConfig:
    values = {
        "base_model": "tiny-random",
        "epochs": 2,
        "per_fact": 8,
        "lora_r": 8,
        "lora_alpha": 16,
        "early_stop": False,
        "learning_rate": 5e-3,
    }
    values.update(overrides)
    return TrainConfig.preset("cpu", **values)


def tiny_profile():
    from andraeus_core.profile import load_profile

    return load_profile(MINIMAL, user_name="Sam Rivera")


def tiny_dataset(config: TrainConfig):
    from andraeus_core.recipe import prepare_dataset

    return prepare_dataset(tiny_profile(), config)


# ---------------------------------------------------------------------------------------------------------------
# Config and its translation


def test_seed_preset_is_exactly_the_seed_recipe():
    from andraeus_core.recipe import lora_config, sft_config

    seed = TrainConfig.preset("seed")
    assert (seed.lora_r, seed.lora_alpha, seed.lora_dropout) == (64, 128, 0.05)
    assert seed.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert (seed.learning_rate, seed.lr_scheduler, seed.warmup_ratio, seed.epochs) == (3e-4, "cosine", 0.03, 5)
    assert (seed.batch_size, seed.grad_accum, seed.gradient_checkpointing, seed.bf16) == (2, 4, True, None)
    assert seed.gpu_cost_per_hour == 11.058
    lora = lora_config(seed)
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (64, 128, 0.05)
    assert set(lora.target_modules) == set(seed.target_modules)
    sft = sft_config(seed, "/tmp/unused")
    assert sft.learning_rate == 3e-4 and sft.warmup_steps == 0.03 and sft.num_train_epochs == 5
    assert sft.per_device_train_batch_size == 2 and sft.gradient_accumulation_steps == 4
    assert getattr(sft.lr_scheduler_type, "value", sft.lr_scheduler_type) == "cosine"
    assert sft.bf16 is False and sft.use_cpu is True  # no CUDA here: bf16 "where supported" means off


def test_cpu_preset_keeps_the_lora_science():
    seed, cpu = TrainConfig.preset("seed"), TrainConfig.preset("cpu")
    same = ("lora_r", "lora_alpha", "target_modules", "lr_scheduler", "warmup_ratio", "gradient_checkpointing")
    assert all(getattr(seed, f) == getattr(cpu, f) for f in same)
    assert cpu.batch_size * cpu.grad_accum == seed.batch_size * seed.grad_accum  # same effective batch
    assert 1 <= cpu.epochs <= seed.epochs
    assert cpu.lora_dropout == 0.0
    assert cpu.bf16 is (True if cpu_has_bf16() else None)  # bf16 where this CPU computes it natively
    assert cpu.early_stop and cpu.batching == "grouped"
    assert seed.typo_augment == 0 and cpu.typo_augment > 0  # the seed recipe's data is the seed's


def test_cpu_preset_takes_its_rank_from_the_profile_size():
    from andraeus_core.config import CPU_RANK_LARGE, CPU_RANKS, cpu_rank
    from andraeus_core.jobs import resolve_hyperparameters

    small, large = CPU_RANKS[0][0], CPU_RANKS[-1][0] + 1
    assert cpu_rank(1) == CPU_RANKS[0][1] and cpu_rank(small) == CPU_RANKS[0][1] and cpu_rank(large) == CPU_RANK_LARGE
    for facts in (1, small, large, 200):
        config = TrainConfig.preset("cpu", facts=facts)
        assert (config.lora_r, config.lora_alpha) == (cpu_rank(facts), 2 * cpu_rank(facts))
    assert TrainConfig.preset("cpu").lora_r == 64  # no profile known: the seed's rank
    assert TrainConfig.preset("cpu", facts=small, lora_r=32).lora_r == 32  # an explicit rank wins
    assert TrainConfig.preset("seed", facts=small).lora_r == 64  # the seed's recipe is the seed's
    config, _ = resolve_hyperparameters("tiny-random", {}, 0, facts=small)  # the API's jobs, profile files
    assert config.lora_r == cpu_rank(small) or config.preset_name == "seed"


def test_cpu_preset_chooses_bf16_by_the_cpu(monkeypatch):
    import andraeus_core.config as config_module
    from andraeus_core.estimate import estimate
    from andraeus_core.recipe import use_bf16

    for native in (True, False):
        monkeypatch.setattr(config_module, "cpu_has_bf16", lambda native=native: native)
        cpu = TrainConfig.preset("cpu", base_model="tiny-random")
        assert use_bf16(cpu) is native  # no CUDA here: "where supported" is float32
        est = estimate(ROOT / "examples" / "minimal.csv", cpu)
        assert est.dtype == ("bfloat16" if native else "float32") and f"in {est.dtype}" in est.summary()


def test_train_config_typo_augment_feeds_the_dataset():
    from andraeus_core.recipe import prepare_dataset

    profile = tiny_profile()
    plain = prepare_dataset(profile, TrainConfig.preset("cpu", typo_augment=0))
    augmented = prepare_dataset(profile, TrainConfig.preset("cpu", typo_augment=2))
    assert len(augmented.train) == len(plain.train) + 2 * len(profile.facts)
    assert [e.question for e in augmented.heldout] == [e.question for e in plain.heldout]


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("lora_r", 0, "lora_r"),
        ("learning_rate", 3.0, "learning_rate"),
        ("warmup_ratio", 1.5, "warmup_ratio"),
        ("target_modules", [], "target_modules"),
        ("quantize", "8bit", "quantize"),
        ("lora_rnk", 8, "lora_rnk"),  # a typo is an error, not silently ignored
        ("typo_augment", -1, "typo_augment"),
    ],
)
def test_bad_configs_are_rejected_naming_field_and_value(field, value, fragment):
    with pytest.raises(ConfigError) as info:
        TrainConfig.preset("cpu", **{field: value})
    assert fragment in str(info.value) and repr(value) in str(info.value)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="Unknown training preset 'fast'"):
        TrainConfig.preset("fast")


def test_bad_target_modules_fail_before_training(tiny_model):
    from andraeus_core.train import train

    config = tiny_config(target_modules=["no_such_proj"])
    with pytest.raises(ConfigError, match="target_modules"):
        train(tiny_dataset(config), config)
    assert not adapters_dir().exists() or not any(adapters_dir().iterdir())


def test_bad_profile_is_a_profile_error(tmp_path):
    from andraeus_core.train import train

    bad = tmp_path / "bad.csv"
    bad.write_text("topic,value\ndog's name,\n")
    with pytest.raises(ProfileError):
        train(bad, tiny_config())


# ---------------------------------------------------------------------------------------------------------------
# Data


def test_loss_is_on_assistant_tokens_only(tiny_model):
    from andraeus_core.recipe import tokenize_examples

    config = tiny_config()
    dataset = tiny_dataset(config)
    rows = tokenize_examples(tiny_model.tokenizer, dataset.train[:5], config.max_length)
    for ex, ids, labels in zip(dataset.train[:5], rows["input_ids"], rows["labels"], strict=True):
        assert len(ids) == len(labels)
        kept = [t for t, lab in zip(ids, labels, strict=True) if lab != -100]
        assert kept and len(kept) < len(ids)
        answer = ex.messages[-1]["content"] if isinstance(ex.messages[-1], dict) else ex.messages[-1].content
        decoded = tiny_model.tokenizer.decode(kept, skip_special_tokens=True)
        assert answer.strip() in decoded  # the labels are the answer (plus the end-of-turn token)
        user = ex.messages[-2]["content"] if isinstance(ex.messages[-2], dict) else ex.messages[-2].content
        assert user not in decoded


def test_estimate_before_training(tiny_model):
    from andraeus_core.estimate import estimate

    config = tiny_config(epochs=3, gpu_cost_per_hour=10.0)
    dataset = tiny_dataset(config)
    est = estimate(dataset, config, tokenizer=tiny_model.tokenizer)
    assert est.train_examples == len(dataset.train) and est.heldout_examples == len(dataset.heldout)
    assert est.steps == math.ceil(len(dataset.train) / 8) * 3
    assert est.tokens_per_epoch > 10 * len(dataset.train)
    assert est.expected_seconds > 0 and est.cost_usd == pytest.approx(est.expected_seconds / 3600 * 10.0, rel=1e-3)
    assert "training examples" in est.summary()


def test_estimate_models_the_phases_and_the_rank(tiny_model, isolated_home):
    from andraeus_core.estimate import estimate, record_throughput
    from andraeus_core.probes import guard_answerer

    profile = tiny_profile()
    r64 = tiny_config(lora_r=64, lora_alpha=128, early_stop=True, epochs=3, early_stop_probe_size=64)
    r16 = r64.model_copy(update={"lora_r": 16, "lora_alpha": 32})
    fresh64, fresh16 = estimate(profile, r64), estimate(profile, r16)
    # Default guess: a smaller rank trains faster per token; same data, same phases besides the steps.
    assert not fresh64.calibrated and fresh16.tokens_per_second > fresh64.tokens_per_second
    assert fresh16.tokens_per_epoch == fresh64.tokens_per_epoch
    assert fresh64.guard_questions > 0 and fresh64.prepare_seconds > 0
    assert fresh64.probe_seconds > 0 and estimate(profile, r64.model_copy(update={"epochs": 1})).probe_seconds == 0
    train_part = fresh64.tokens_per_epoch * 3 / fresh64.tokens_per_second
    assert fresh64.expected_seconds == pytest.approx(
        train_part + fresh64.prepare_seconds + fresh64.probe_seconds + 2.0,
        abs=0.5,  # + writing the adapter
    )
    # A run the early stop ends after epoch 2 of 3 saves one epoch's steps; the summary says both times.
    assert fresh64.early_stop_seconds == pytest.approx(fresh64.expected_seconds - train_part / 3, abs=0.5)
    assert "if the facts are learned by epoch 2" in fresh64.summary()
    no_stop = estimate(profile, r64.model_copy(update={"early_stop": False}))
    assert no_stop.early_stop_seconds is None and "learned by epoch" not in no_stop.summary()
    # Guard answers already cached are not counted again (the run will not generate them).
    questions: list[str] = []

    def collect(qs: list[str]) -> list[str]:
        questions.extend(qs)
        return ["x"] * len(qs)

    from andraeus_core.recipe import prepare_dataset

    prepare_dataset(profile, r64, guard_answer_fn=collect)
    guard_answerer(tiny_model)(questions)
    cached = estimate(profile, r64)
    assert cached.guard_questions == 0 and cached.prepare_seconds < fresh64.prepare_seconds
    # A throughput measured here at r=64 calibrates r=16 too, scaled by the rank's cost.
    record_throughput("tiny-random", r64, 100.0)
    assert estimate(profile, r64).tokens_per_second == 100.0 and estimate(profile, r64).calibrated
    scaled = estimate(profile, r16)
    assert scaled.calibrated and scaled.tokens_per_second == pytest.approx(
        100.0 * fresh16.tokens_per_second / fresh64.tokens_per_second, rel=0.01
    )


def test_the_default_guess_follows_how_the_cpu_computes_bf16(monkeypatch, isolated_home):
    """Measured 2026-12-05: a CPU with AVX512-BF16 but no AMX trained at 0.62x the AMX CPU the default was fitted on;
    the estimate shown before a first run there was 0.61x the measured time until the guess followed the CPU."""
    from andraeus_core import estimate as est_mod
    from andraeus_core.estimate import estimate, record_throughput

    profile = tiny_profile()
    config = tiny_config(bf16=True, early_stop=True, epochs=3, early_stop_probe_size=64)
    monkeypatch.setattr(est_mod, "cpu_bf16_kind", lambda: "amx")
    amx = estimate(profile, config)
    monkeypatch.setattr(est_mod, "cpu_bf16_kind", lambda: "avx512-bf16")
    zen = estimate(profile, config)
    assert zen.tokens_per_second == pytest.approx(amx.tokens_per_second * 0.62, rel=0.01)
    assert zen.probe_seconds == pytest.approx(amx.probe_seconds / 0.62, abs=0.1)  # rounded to 0.1 s
    assert zen.prepare_seconds > amx.prepare_seconds and zen.expected_seconds > amx.expected_seconds
    steps = zen.tokens_per_epoch * zen.epochs / zen.tokens_per_second  # the slower throughput is what the time uses
    assert zen.expected_seconds == pytest.approx(steps + zen.prepare_seconds + zen.probe_seconds + 2.0, abs=0.5)
    assert zen.cpu_bf16 == "avx512-bf16" and "(bf16: avx512-bf16)" in zen.summary()
    # training in float32 (no bf16 asked) is not scaled by the bf16 kind
    f32 = config.model_copy(update={"bf16": False})
    assert estimate(profile, f32).tokens_per_second == pytest.approx(
        amx.tokens_per_second / est_mod._CPU_BF16_SPEEDUP, rel=0.01
    )
    assert "bf16:" not in estimate(profile, f32).summary()
    # a throughput measured on this machine wins over any guess
    record_throughput("tiny-random", config, 100.0)
    measured = estimate(profile, config)
    assert measured.calibrated and measured.tokens_per_second == 100.0
    assert measured.probe_seconds == pytest.approx(amx.probe_seconds, abs=0.1)


def test_guard_answers_are_cached_on_disk(tiny_model, monkeypatch, isolated_home):
    probes = importlib.import_module("andraeus_core.probes")

    answer = probes.guard_answerer(tiny_model)
    first = answer(["What is the capital of France?", "Tell me a joke."])
    assert len(first) == 2
    assert list((isolated_home / "cache" / "guards").rglob("answers.json"))

    def boom(*a, **k):
        raise AssertionError("regenerated although cached")

    monkeypatch.setattr(probes, "generate_batch", boom)
    assert answer(["Tell me a joke.", "What is the capital of France?"]) == first[::-1]


# ---------------------------------------------------------------------------------------------------------------
# Training


def test_train_learns_writes_a_complete_adapter_and_reloads_identically(isolated_home):
    import torch
    from peft import PeftModel

    from andraeus_core.models import load_model
    from andraeus_core.train import train

    loaded = load_model("tiny-random")
    base_before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    events = []
    config = tiny_config(epochs=4, learning_rate=1e-2)
    dataset = tiny_dataset(config)
    # A question of a hand-written evaluation set is never trained on: it moves to the held-out split.
    unseen = next(e for e in dataset.train if e.meta.kind == "fact").question
    adapter = train(tiny_profile(), config, on_progress=events.append, model=loaded, exclude_questions=[unseen])

    # Learning: loss goes down, LoRA weights moved, base weights did not.
    losses = adapter.meta.metrics.losses
    assert len(losses) == adapter.meta.metrics.steps > 4
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5
    state = loaded.model.state_dict()
    lora_b = [v for k, v in state.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # lora_B starts at zero
    for name, before in base_before.items():
        key = next(k for k in state if k.endswith(name.replace(".weight", ".base_layer.weight")) or k.endswith(name))
        assert torch.equal(state[key], before), name

    # Progress: every step reported with the fields the UI needs.
    steps = [e for e in events if e.phase == "train"]
    assert [e.step for e in steps] == list(range(1, len(steps) + 1))
    assert all(e.total_steps == len(steps) and e.loss is not None and e.learning_rate is not None for e in steps)
    assert steps[-1].tokens_per_second > 0 and steps[-1].eta_seconds == pytest.approx(0, abs=1e-6)
    assert events[-1].phase == "done"

    # Files: PEFT's, ours, nothing private in the public metadata.
    path = adapter.path
    for name in ("adapter_config.json", "adapter_model.safetensors", "andraeus.json", "private.json"):
        assert (path / name).is_file(), name
    meta_text = (path / "andraeus.json").read_text()
    meta = json.loads(meta_text)
    assert meta["base_model"] == "tiny-random" and meta["profile_hash"] == dataset.profile_hash
    assert meta["config"]["lora_r"] == 8 and "torch" in meta["versions"] and meta["topics"]
    for secret in ("Buddy", "Portland", "March 14", "Sam Rivera"):
        assert secret not in meta_text
    private = json.loads((path / "private.json").read_text())
    assert private["system_prompt"] == dataset.system_prompt
    assert private["profile"]["user_name"] == "Sam Rivera" and len(private["profile"]["facts"]) == 3
    heldout = (path / "heldout.jsonl").read_text().splitlines()
    moved = sum(e.question == unseen for e in dataset.train)
    assert len(heldout) == len(dataset.heldout) + moved and "meta" in json.loads(heldout[0])
    assert unseen in {json.loads(line)["messages"][1]["content"] for line in heldout}
    assert not list(path.parent.glob(".*tmp*"))

    # Reload: same logits as the trained model in memory.
    ids = loaded.tokenizer("What is my dog's name?", return_tensors="pt")["input_ids"]
    loaded.model.eval()
    with torch.no_grad():
        trained_logits = loaded.model(input_ids=ids).logits
    fresh = load_model("tiny-random")
    reloaded = PeftModel.from_pretrained(fresh.model, str(path)).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, trained_logits, atol=1e-5)


def test_cancel_stops_within_one_step_and_writes_nothing(tiny_model):
    from andraeus_core.train import train

    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] >= 2

    events = []
    with pytest.raises(TrainingCancelled, match="step 2 of"):
        train(tiny_dataset(tiny_config()), tiny_config(), on_progress=events.append, should_stop=should_stop)
    assert max(e.step for e in events if e.phase == "train") <= 2  # (preparing numbers its own sub-steps)
    assert not adapters_dir().exists() or not any(adapters_dir().iterdir())


def test_nan_loss_is_a_training_error_and_writes_nothing(tmp_path):
    import torch

    from andraeus_core.models import load_model
    from andraeus_core.train import train

    loaded = load_model("tiny-random")
    with torch.no_grad():
        loaded.model.get_input_embeddings().weight.fill_(float("nan"))
    out = tmp_path / "adapter"
    config = tiny_config()
    with pytest.raises(TrainingError, match="diverged"):
        train(tiny_dataset(config), config, model=loaded, out_dir=out)
    assert not out.exists() and not list(tmp_path.glob(".*tmp*"))


def test_out_dir_that_is_not_an_adapter_is_left_alone(tmp_path, tiny_model):
    from andraeus_core.train import train

    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not an Andraeus adapter"):
        train(tiny_dataset(tiny_config()), tiny_config(), out_dir=out)
    assert (out / "notes.txt").read_text() == "keep me"


def test_qlora_4bit_trains_on_cpu(tmp_path):
    from andraeus_core.train import train

    config = tiny_config(quantize="4bit", epochs=1)
    adapter = train(tiny_dataset(config), config, out_dir=tmp_path / "q")
    assert adapter.meta.quantize == "4bit"
    assert (adapter.path / "adapter_model.safetensors").stat().st_size > 0
    assert all(math.isfinite(x) for x in adapter.meta.metrics.losses)


def test_early_stop_records_the_epoch(monkeypatch, tmp_path):
    train_mod = importlib.import_module("andraeus_core.train")

    # On tiny-random the answers are noise, so fake a probe that reports "learned" after epoch 2.
    seen = []

    def fake_probe(model, tokenizer, examples, **kw):
        seen.append(len(examples))
        return 1.0 if len(seen) >= 2 else 0.5

    monkeypatch.setattr(train_mod, "probe_recall", fake_probe)
    config = tiny_config(epochs=5, early_stop=True, early_stop_probe_size=4)
    adapter = train_mod.train(tiny_dataset(config), config, out_dir=tmp_path / "e")
    metrics = adapter.meta.metrics
    assert metrics.early_stop_epoch == 2 and metrics.epochs == pytest.approx(2.0)
    assert [p["recall"] for p in metrics.probes] == [0.5, 1.0] and seen == [4, 4]
    # The phases the estimate models are timed: the probes inside the training time, prepare split in three.
    timings = adapter.meta.timings
    assert all(p["seconds"] >= 0 for p in metrics.probes)
    assert timings.probe_seconds == pytest.approx(sum(p["seconds"] for p in metrics.probes), abs=0.02)
    assert timings.probe_seconds <= timings.train_seconds
    parts = (timings.load_seconds, timings.data_seconds, timings.gate_seconds)
    assert all(x is not None and x >= 0 for x in parts)
    assert sum(parts) == pytest.approx(timings.prepare_seconds, abs=0.05)


def test_bench_quick_runs(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "train_speed.py"), "--quick", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1].removeprefix("RESULT "))
    assert result["ours"]["tokens_per_s"] > 0 and result["reference"]["tokens_per_s"] > 0
    assert "throughput ratio" in out.stdout


# ---------------------------------------------------------------------------------------------------------------
# CPU speed/memory measures: same loss, bf16 base with float32 LoRA, eager attention only while training


def test_cpu_loss_projects_only_answer_positions_and_equals_the_full_loss(isolated_home, tmp_path):
    import torch

    from andraeus_core.models import load_model
    from andraeus_core.recipe import attach_lora, sft_config, tokenize_examples, trainer_class

    config = tiny_config(bf16=False)
    loaded = load_model("tiny-random")
    rows = tokenize_examples(loaded.tokenizer, tiny_dataset(config).train[:6], config.max_length)
    model = attach_lora(loaded, config)
    with torch.no_grad():  # LoRA B starts at zero; give the adapter a say in the loss
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    trainer = trainer_class()(
        model=model, args=sft_config(config, tmp_path / "run"), train_dataset=rows, processing_class=loaded.tokenizer
    )
    batch = trainer.data_collator([rows[i] for i in range(6)])
    head_rows = []
    hook = loaded.model.get_output_embeddings().register_forward_hook(
        lambda mod, args, out: head_rows.append(args[0].reshape(-1, args[0].shape[-1]).shape[0])
    )
    params = [p for p in model.parameters() if p.requires_grad]
    ours = trainer.compute_loss(model, dict(batch))
    ours.backward()
    ours_grads = [p.grad.clone() for p in params]
    model.zero_grad()
    hook.remove()
    full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    full.backward()

    answer_positions = int((batch["labels"][:, 1:] != -100).sum())
    assert head_rows == [answer_positions] and answer_positions < batch["input_ids"].numel() / 2
    assert torch.allclose(ours, full, rtol=1e-5, atol=1e-6)
    for mine, theirs in zip(ours_grads, (p.grad for p in params), strict=True):
        assert torch.allclose(mine, theirs, rtol=1e-4, atol=1e-7)
    assert trainer._metrics["train"]["mean_token_accuracy"] and trainer._metrics["train"]["entropy"][0] > 0


def test_bf16_training_keeps_a_bf16_base_float32_lora_and_restores_attention(isolated_home, monkeypatch):
    import torch
    from safetensors.torch import load_file

    import andraeus_core.train as train_module
    from andraeus_core.models import load_model

    loaded_models = []

    def loading(*args, **kwargs):
        loaded_models.append(load_model(*args, **kwargs))
        return loaded_models[-1]

    monkeypatch.setattr(train_module, "load_model", loading)
    seen = []
    config = tiny_config(epochs=1, bf16=True)  # as the cpu preset trains where the CPU has bf16
    adapter = train_module.train(
        tiny_profile(),
        config,
        on_progress=lambda e: seen.append(
            loaded_models[0].model.config._attn_implementation if loaded_models else None
        ),
    )
    model = loaded_models[0].model
    base = [p for n, p in model.named_parameters() if "lora_" not in n]
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    assert base and all(p.dtype == torch.bfloat16 for p in base)
    assert lora and all(p.dtype == torch.float32 for p in lora)
    saved = load_file(str(adapter.path / "adapter_model.safetensors"))
    assert saved and all(t.dtype == torch.float32 for t in saved.values())
    assert "eager" in seen  # while training
    assert model.config._attn_implementation == "sdpa"  # restored for generation
    assert all(math.isfinite(x) for x in adapter.meta.metrics.losses)


def test_recall_check_matches_whole_words_like_the_evaluation():
    from andraeus_core.probes import recall_check

    assert recall_check("Yes, you're a software engineer.", ["your job", "yes"])
    assert not recall_check("Your eyes are blue.", ["yes"])  # not inside another word
    assert recall_check("It's Buddy!", ["Buddy", "Bud"]) and not recall_check("It's Max.", ["Buddy", "Bud"])


def test_precision_bench_trains_with_a_set_field_and_refuses_bad_ones(tmp_path):
    bench = str(ROOT / "bench" / "precision.py")
    for bad, fragment in (("nope=1", "nope"), ("learning_rate=abc", "must be JSON"), ("seed=3", "--seeds")):
        out = subprocess.run([sys.executable, bench, "--set", bad], capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and fragment in out.stderr, out.stderr[-500:]
    out = subprocess.run(
        [sys.executable, bench, "--quick", "--no-reference", "--set", "typo_augment=0", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (run,) = json.loads((tmp_path / "r").read_text())["runs"]
    assert run["settings"] == {"typo_augment": 0}  # what the trained adapter recorded, not what was asked
    assert 'fields changed (--set): {"typo_augment": 0}' in out.stdout
