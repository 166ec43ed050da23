"""Training in time-limited slices (one ZeroGPU call each), on a CPU: the loop, the pause at a checkpoint, and a run
over several slices that equals one uninterrupted run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from andraeus_core.config import TrainConfig
from andraeus_core.errors import TrainingCancelled, TrainingError, TrainingPaused
from andraeus_core.slices import SliceResult, run_in_slices, train_in_slices

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = ROOT / "examples" / "minimal.csv"


def _config(**overrides) -> TrainConfig:
    values = {
        "base_model": "tiny-random",
        "epochs": 6,
        "per_fact": 12,
        "lora_r": 8,
        "lora_alpha": 16,
        "early_stop": False,
        "learning_rate": 5e-3,
        "batch_size": 4,
    }
    return TrainConfig.preset("cpu", **{**values, **overrides})


def _profile():
    from andraeus_core.profile import load_profile

    return load_profile(MINIMAL, user_name="Sam Rivera")


# ---------------------------------------------------------------------------------------------------------------
# The loop, with stand-in slices (no training)


def _fake_runner(outcomes: list[SliceResult], calls: list[tuple[bool, float | None]]):
    def run_slice(resume: bool, budget: float | None):
        calls.append((resume, budget))
        yield "event"
        yield outcomes[len(calls) - 1]

    return run_slice


def _paused(step: int) -> SliceResult:
    return SliceResult(status="paused", step=step, total_steps=10)


def test_the_loop_resumes_every_slice_after_the_first_and_passes_the_previous_result_to_the_budget():
    calls: list[tuple[bool, float | None]] = []
    seen: list[SliceResult | None] = []

    def budget(previous: SliceResult | None) -> float:
        seen.append(previous)
        return 5.0 + len(seen)

    outcomes = [_paused(3), _paused(7), SliceResult(status="done", step=10, total_steps=10, adapter="/x")]
    items = list(run_in_slices(_fake_runner(outcomes, calls), budget_s=budget))
    assert calls == [(False, 6.0), (True, 7.0), (True, 8.0)]
    assert seen == [None, outcomes[0], outcomes[1]]
    assert items == ["event", outcomes[0], "event", outcomes[1], "event", outcomes[2]]

    calls.clear()
    list(run_in_slices(_fake_runner([outcomes[2]], calls), budget_s=None, resume=True))
    assert calls == [(True, None)]  # continuing an earlier paused run: the first slice resumes too


def test_the_loop_stops_on_cancel_between_slices_on_failure_and_without_progress():
    calls: list[tuple[bool, float | None]] = []
    stop = {"now": False}

    def runner(resume: bool, budget: float | None):
        calls.append((resume, budget))
        stop["now"] = True  # the user presses Cancel while this slice runs
        yield _paused(2)

    items = list(run_in_slices(runner, budget_s=3.0, should_stop=lambda: stop["now"]))
    assert len(calls) == 1 and items[-1].status == "cancelled" and "step 2 of 10" in items[-1].message

    failed = SliceResult(status="failed", message="Out of memory", code="training_failed")
    calls.clear()
    assert list(run_in_slices(_fake_runner([_paused(2), failed], calls), budget_s=3.0))[-1] == failed
    assert len(calls) == 2

    calls.clear()
    with pytest.raises(TrainingError, match="made no progress"):
        list(run_in_slices(_fake_runner([_paused(4), _paused(4)], calls), budget_s=3.0))

    with pytest.raises(TrainingError, match="without a result"):
        list(run_in_slices(lambda resume, budget: iter(["event"]), budget_s=3.0))


# ---------------------------------------------------------------------------------------------------------------
# Real slices on tiny-random


def test_a_budget_that_runs_out_pauses_at_a_checkpoint_and_resume_finishes(isolated_home):
    from andraeus_core.train import train

    config = _config(epochs=2)
    events = []
    with pytest.raises(TrainingPaused) as paused:
        # A budget shorter than loading: the callback still trains one step, then checkpoints and pauses.
        train(_profile(), config, on_progress=events.append, time_budget_s=0.01)
    assert paused.value.step == 1 and paused.value.total_steps > 2
    assert [e.step for e in events if e.phase == "train"] == [1]
    prepare = [e for e in events if e.phase == "prepare"]
    assert [(e.step, e.total_steps) for e in prepare] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert "loading the base model" in prepare[0].message and "guard answers" in prepare[1].message
    assert "a new run" in prepare[2].message and "gate" in prepare[3].message
    checkpoints = list((isolated_home / "runs").glob("*/checkpoint-1"))
    assert len(checkpoints) == 1 and (checkpoints[0] / "trainer_state.json").is_file()

    events.clear()
    adapter = train(_profile(), config, on_progress=events.append, resume=True)
    assert "resuming from step 1" in next(e.message for e in events if e.phase == "prepare" and e.step == 3)
    assert [e.step for e in events if e.phase == "train"][0] == 2
    assert adapter.meta.metrics.resumed_from_step == 1
    assert len(adapter.meta.metrics.losses) == adapter.meta.metrics.steps  # the first slice's loss is kept


def test_a_run_over_several_slices_equals_one_run(isolated_home, tmp_path):
    """A per-slice limit shorter than the run: several slices, one step sequence, the same losses and adapter."""
    import torch
    from safetensors.torch import load_file

    from andraeus_core.train import train

    config = _config()
    single_events = []
    started = time.perf_counter()
    single = train(_profile(), config, on_progress=single_events.append, out_dir=tmp_path / "single")
    total = time.perf_counter() - started
    prepare = single.meta.timings.prepare_seconds
    steps = single.meta.metrics.steps
    assert steps >= 20

    # Room for about a quarter of the steps in each slice (after loading, which every slice repeats): pauses in the
    # middle of later epochs too, whose order a resumed run must replay.
    slice_s = prepare + (total - prepare) / 4
    results: list[SliceResult] = []
    events = []
    sliced = train_in_slices(
        _profile(), config, slice_s=slice_s, on_progress=events.append, on_slice=results.append, out_dir=tmp_path / "s"
    )
    statuses = [r.status for r in results]
    assert len(results) >= 2 and statuses[-1] == "done" and set(statuses[:-1]) == {"paused"}, statuses
    paused_at = [r.step for r in results[:-1]]
    assert paused_at == sorted(set(paused_at)) and 0 < paused_at[0] and paused_at[-1] < steps

    # Continuous: every step reported exactly once across the slices, with the single run's loss.
    train_events = [e for e in events if e.phase == "train"]
    assert [e.step for e in train_events] == list(range(1, steps + 1))
    single_losses = [e.loss for e in single_events if e.phase == "train"]
    assert [e.loss for e in train_events] == pytest.approx(single_losses, rel=1e-3, abs=1e-4)
    assert sliced.meta.metrics.losses == pytest.approx(single.meta.metrics.losses, rel=1e-3, abs=1e-4)
    assert sliced.meta.metrics.steps == steps and sliced.meta.metrics.resumed_from_step == paused_at[-1]

    # The same adapter and gate (fitted again in the last slice), within float tolerance.
    for file in ("adapter_model.safetensors", "gate.safetensors"):
        a = load_file(str(single.path / file))
        b = load_file(str(sliced.path / file))
        assert a.keys() == b.keys()
        for name in a:
            assert torch.allclose(a[name], b[name], rtol=1e-3, atol=1e-5), (file, name)
    assert not list((isolated_home / "runs").glob("*"))  # the finished run's checkpoints are cleaned up


def test_cancel_within_a_slice_and_a_failing_slice_raise_the_original_errors(isolated_home):
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] >= 2

    with pytest.raises(TrainingCancelled, match="cancelled at step 2"):
        train_in_slices(_profile(), _config(epochs=1), slice_s=60, should_stop=should_stop)
    from andraeus_core.errors import ConfigError

    with pytest.raises(ConfigError, match="target_modules"):
        train_in_slices(_profile(), _config(epochs=1, target_modules=["nope_proj"]), slice_s=60)
