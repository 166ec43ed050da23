"""The Space's GPU budget: GPU seconds per run against ZeroGPU's per-call and daily limits, the model chosen by
budget, ZeroGPU's refusal messages read, and bench/space_budget.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from andraeus_core import (
    ZEROGPU_DAILY_QUOTA_S,
    ConfigError,
    TrainConfig,
    budget_models,
    gpu_budget,
    largest_fitting_model,
    read_zerogpu_error,
    zerogpu_slice_s,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "seed_profile.yaml"


@pytest.fixture(scope="module")
def cpu_budgets(tmp_path_factory: pytest.TempPathFactory) -> dict:
    # Module-scoped, so set up before the autouse isolation: isolate it here, with no base model on disk (tokens are
    # then counted with the default's tokenizer, as on a fresh Space), whatever the developer's home holds.
    home = tmp_path_factory.mktemp("budget-home")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("ANDRAEUS_HOME", "HF_HOME", "ANDRAEUS_MODELS_DIR"):
            mp.setenv(name, str(home / name.lower()))
        mp.delenv("ANDRAEUS_BASE_MODEL", raising=False)
        return budget_models(EXAMPLE, TrainConfig.preset("cpu"), per_call_s=290)


def test_the_budget_adds_loading_per_call_guards_steps_probes_and_saves(cpu_budgets):
    b = cpu_budgets["qwen2.5-7b"]
    assert b.calls == 1 and b.steps == 177 and b.proxy_tokens and not b.measured
    parts = b.load_seconds + b.gate_seconds + b.guard_seconds + b.train_seconds + b.probe_seconds + b.save_seconds
    assert b.gpu_seconds == pytest.approx(parts, abs=0.5)
    assert b.tokens_per_second == pytest.approx(b.tokens_per_epoch * 3 / b.train_seconds, rel=0.01)
    text = b.summary()
    assert "estimate, not yet measured" in text and f"{b.gpu_seconds:.0f} GPU seconds" in text
    assert "anonymous 120s/day ✓" in text
    # The bigger model loads longer and steps slower.
    small = cpu_budgets["smollm2-135m"]
    assert small.load_seconds < b.load_seconds and small.gpu_seconds < b.gpu_seconds


def test_a_run_longer_than_one_call_needs_several_each_reloading_the_model():
    config = TrainConfig.preset("seed", quantize="4bit", base_model="qwen2.5-7b")
    one = gpu_budget(EXAMPLE, config, per_call_s=290)
    short = gpu_budget(EXAMPLE, config, per_call_s=90)
    assert short.calls is not None and short.calls > one.calls
    assert short.gpu_seconds == pytest.approx(
        one.gpu_seconds + (short.calls - one.calls) * (short.load_seconds + short.gate_seconds + short.save_seconds),
        abs=1.0,
    )
    impossible = gpu_budget(EXAMPLE, config, per_call_s=20)  # loading alone takes longer than a call
    assert impossible.calls is None and not impossible.fits(10_000)
    assert "does not fit one GPU call" in impossible.summary()


def test_the_next_call_asks_for_what_the_rest_needs_within_the_limits(cpu_budgets):
    b = cpu_budgets["qwen2.5-7b"]
    first = b.next_call_s()
    assert b.gpu_seconds < first <= 290  # the whole run with the margin, not the full 290 s
    later = b.next_call_s(100, 135)
    assert 30 <= later < first
    # Near the end a small model needs less than the 30 s floor: a visitor with less left than that still gets a call
    # when it covers the need; with too little left, ZeroGPU's refusal tells the visitor.
    small = cpu_budgets["smollm2-135m"]
    assert small.next_call_s(134, 135) == 30
    assert small.next_call_s(134, 135, quota_left_s=20) == 20
    assert small.next_call_s(134, 135, quota_left_s=5) == 30
    long = gpu_budget(EXAMPLE, TrainConfig.preset("seed", quantize="4bit", base_model="qwen2.5-7b"), per_call_s=120)
    assert long.next_call_s() == 120


def test_the_space_default_is_the_largest_preset_that_fits_an_anonymous_quota(cpu_budgets):
    anonymous = ZEROGPU_DAILY_QUOTA_S["anonymous"]
    chosen = largest_fitting_model(cpu_budgets, anonymous)
    names = list(cpu_budgets)
    assert chosen in names and cpu_budgets[chosen].fits(anonymous)
    assert cpu_budgets[chosen].gpu_seconds * 1.25 <= anonymous
    assert all(not cpu_budgets[n].fits(anonymous) for n in names[names.index(chosen) + 1 :])
    assert largest_fitting_model(cpu_budgets, 1) is None
    # More quota never chooses a smaller model.
    picks = [largest_fitting_model(cpu_budgets, s) for s in (40, 120, 210, 1500)]
    sizes = [names.index(p) if p else -1 for p in picks]
    assert sizes == sorted(sizes)


def test_zerogpu_messages_are_read():
    # The texts of spaces 0.51 (spaces/zero/client.py) and of older releases.
    new = read_zerogpu_error(
        "You have exceeded your free ZeroGPU quota (290s requested vs. 84s left). Try again in 0:05:12."
    )
    assert (new.kind, new.left_s, new.requested_s, new.retry_in) == ("quota", 84, 290, "0:05:12")
    old = read_zerogpu_error("You have exceeded your GPU quota (59s left vs. 60s requested). Please retry in 0:00:56")
    assert (old.kind, old.left_s, old.requested_s, old.retry_in) == ("quota", 59, 60, "0:00:56")
    anonymous = read_zerogpu_error("Space app has reached its GPU limit. Try re-running outside of examples")
    assert anonymous.kind == "quota" and anonymous.left_s is None
    duration = read_zerogpu_error("The requested GPU duration (400s) is larger than the maximum allowed")
    assert (duration.kind, duration.requested_s) == ("duration", 400)
    assert read_zerogpu_error("GPU task aborted").kind == "aborted"
    assert read_zerogpu_error("No GPU was available after 60s").kind == "busy"
    assert read_zerogpu_error("CUDA error: device-side assert") is None


def test_the_per_call_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("ANDRAEUS_ZEROGPU_MAX_S", raising=False)
    assert zerogpu_slice_s() == 290
    monkeypatch.setenv("ANDRAEUS_ZEROGPU_MAX_S", "12.5")
    assert zerogpu_slice_s() == 12.5
    for bad in ("0", "301", "soon"):
        monkeypatch.setenv("ANDRAEUS_ZEROGPU_MAX_S", bad)
        with pytest.raises(ConfigError, match=f"ANDRAEUS_ZEROGPU_MAX_S.*{bad!r}"):
            zerogpu_slice_s()


def test_bench_space_budget_prints_estimates_per_preset():
    done = subprocess.run(
        [sys.executable, "bench/space_budget.py", "--json"], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["estimate"] is True and result["per_call_s"] == 290
    assert result["daily_quota_s"] == ZEROGPU_DAILY_QUOTA_S
    for recipe in result["recipes"].values():
        assert "qwen2.5-7b" in recipe["models"] and "tiny-random" not in recipe["models"]
        assert set(recipe["largest_fitting"]) == set(ZEROGPU_DAILY_QUOTA_S)
    table = subprocess.run(
        [sys.executable, "bench/space_budget.py"], capture_output=True, text=True, cwd=ROOT, timeout=300
    ).stdout
    assert table.startswith("ESTIMATES (not measured)") and "| seed (QLoRA) | qwen2.5-7b |" in table
