"""What a training run will cost before it starts: examples, tokens, steps, time on this device and money — and, for
a Hugging Face ZeroGPU Space, the GPU seconds it needs against ZeroGPU's per-call and daily limits.

The time comes from a throughput figure: the one measured by an earlier run of the same base model and settings on
this machine (kept in ``$ANDRAEUS_HOME/cache/throughput.json``, written by :func:`record_throughput` after each
run), else a default guess scaled by the model's parameter count.

The GPU budget (:func:`gpu_budget`) models one training run on the Space's GPU class step by step — loading the model
in every call, the base model's guard answers, the optimiser steps, the early-stop probes, checkpoints — from a
small table of model shapes and GPU figures. These are *estimates* (no run on a Space has calibrated them yet) and
say so wherever they are shown; a throughput measured on the Space itself replaces the modelled one.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .adapter import Adapter
from .config import TrainConfig, andraeus_home, cpu_bf16_kind
from .dataset import tokenize_example
from .errors import ConfigError, ModelLoadError, ModelNotAvailableError
from .fsutil import atomic_write
from .gate import gate_data
from .models import PRESETS, device_type, first_load_work, load_tokenizer, model_dir, resolve_model
from .probes import GUARD_MAX_NEW_TOKENS, guard_cache_file, uncached_guards
from .recipe import is_chat_dataset, load_source, pause_reserve_s, prepare_dataset, use_bf16

# Throughput used by estimate() before this machine has trained anything, as (parameter count × tokens/s) of the
# frozen base alone (LoRA rank -> 0): the product is roughly constant across model sizes on one device. CPU: fitted
# to bench/capacity.py on the 2-core dev machine (SmolLM2-135M, cpu preset: 395 tokens/s at r=16, 331 at r=64);
# CUDA: a conservative H100 bf16 figure (~30% MFU).
_DEFAULT_PARAM_TOKENS_PER_S = {"cpu": 6.2e10, "cuda": 3e13}
#: Extra cost per token of each unit of LoRA rank, relative to the base's (the seven projections' A and B matmuls,
#: forward and backward): r=64 costs ~27% more per token than the base alone on CPU (the fit above). On a GPU the
#: small matmuls hide in the kernel-launch overhead.
_RANK_COST = {"cpu": 0.0042, "cuda": 0.001}
#: bf16 vs float32 training step on the dev machine's AMX CPU (the cpu preset's measurement, see TrainConfig.preset).
_CPU_BF16_SPEEDUP = 1.45
#: Speed of a CPU's training run (steps, guard answers, gate, probes alike) relative to the AMX CPU the defaults above
#: were fitted on, by how the CPU computes bf16 (:func:`~.config.cpu_bf16_kind`). AVX512-BF16 without AMX: a 2-core
#: AMD EPYC (Zen 4), 2026-12-05, bench/capacity.py 25 facts at r=16 from an empty home: 243 tokens/s against 393
#: assumed (0.62), preparing 54 s against 34 (0.63). A CPU without native bf16 trains in float32 (the 1.45 above);
#: its speed relative to the AMX CPU's float32 was not measured and is taken as 1.
_CPU_BF16_KIND_SPEED = {"amx": 1.0, "avx512-bf16": 0.62}
#: The default model's guard answers average this share of GUARD_MAX_NEW_TOKENS (bench/capacity.py's profile: 58/64).
_GUARD_ANSWER_SHARE = 0.9


@dataclass(frozen=True)
class _PhaseCosts:
    """Seconds of a run's phases besides the optimiser steps, for a 135M-parameter model (scaled by parameters).

    CPU: measured by bench/capacity.py on the 2-core dev machine (SmolLM2-135M, cpu preset, 10-100 facts; the
    adapter's ``timings`` split prepare into loading, data and gate). CUDA: rough guesses (loading a model onto a GPU
    and starting CUDA dominate there).
    """

    load_s: float  # loading the base model (converted once; not the first-use conversion)
    guard_s: float  # per guard question the base model answers (not cached yet), batched greedy generation
    gate_s: float  # per question the gate reads through the base model (a prefill) and the fit
    probe_s: float  # per training phrasing an early-stop probe asks
    save_s: float  # writing the adapter, the gate and the held-out split


_PHASES = {
    "cpu": _PhaseCosts(load_s=2.0, guard_s=0.25, gate_s=0.0035, probe_s=0.065, save_s=2.0),
    "cuda": _PhaseCosts(load_s=45.0, guard_s=0.02, gate_s=0.002, probe_s=0.02, save_s=5.0),
}


class TrainEstimate(BaseModel):
    """What a training run will cost, shown before it starts."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(description="The base model that will be trained.")
    device: str = Field(description="'cpu' or 'cuda'.")
    train_examples: int = Field(description="Training chat examples.")
    heldout_examples: int = Field(description="Held-out examples (never trained on).")
    tokens_per_epoch: int = Field(description="Tokens in one pass over the training examples (no padding).")
    epochs: int = Field(description="Planned epochs (an upper bound with early stop).")
    steps: int = Field(description="Planned optimiser steps.")
    tokens_per_second: float = Field(description="Assumed training throughput on this device.")
    calibrated: bool = Field(description="True when the throughput was measured by an earlier run on this machine.")
    expected_seconds: float = Field(description="Expected wall time, including model loading and probes.")
    prepare_seconds: float = Field(
        0.0, description="Of expected_seconds: loading the model, the guard answers not cached yet, the gate's fit."
    )
    guard_questions: int = Field(0, description="Guard questions the base model will answer (not cached yet).")
    probe_seconds: float = Field(0.0, description="Of expected_seconds: the early-stop probes between epochs.")
    early_stop_seconds: float | None = Field(
        None,
        description="Expected wall time if the early stop ends the run one epoch before the last (None: no early "
        "stop, or one epoch).",
    )
    dtype: str = Field(
        "float32", description="The base weights' training dtype ('bfloat16' where the device computes it natively)."
    )
    cpu_bf16: str | None = Field(
        None,
        description="On CPU: how it computes bf16 ('amx', 'avx512-bf16' or 'none'), which the default throughput "
        "guess follows; None on a GPU.",
    )
    gpu_cost_per_hour: float = Field(description="Price used for the cost figure (US dollars per hour).")
    cost_usd: float = Field(description="expected_seconds at gpu_cost_per_hour.")

    def summary(self) -> str:
        """One paragraph for a terminal or a UI."""
        source = "measured here" if self.calibrated else "default guess"
        return (
            f"{self.train_examples} training examples ({self.heldout_examples} held out), "
            f"{self.tokens_per_epoch:,} tokens/epoch × {self.epochs} epochs = {self.steps} steps on {self.device} "
            f"in {self.dtype}"
            + (f" (bf16: {self.cpu_bf16})" if self.cpu_bf16 and self.dtype == "bfloat16" else "")
            + " "
            f"with {self.base_model}; expected ~{_fmt_seconds(self.expected_seconds)} "
            + (
                f"(~{_fmt_seconds(self.early_stop_seconds)} if the facts are learned by epoch {self.epochs - 1}) "
                if self.early_stop_seconds is not None
                else ""
            )
            + f"at ~{self.tokens_per_second:,.0f} tokens/s ({source}; preparing ~{_fmt_seconds(self.prepare_seconds)}"
            + (f" with {self.guard_questions} guard answers to generate" if self.guard_questions else "")
            + (f", early-stop probes ~{_fmt_seconds(self.probe_seconds)}" if self.probe_seconds else "")
            + "); "
            f"cost at ${self.gpu_cost_per_hour:.3f}/h: ${self.cost_usd:.4f}"
        )


def _fmt_seconds(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# --------------------------------------------------------------------------------------------------------------
# The throughput cache


def _throughput_file() -> Path:
    return andraeus_home() / "cache" / "throughput.json"


def _throughput_key(base_model: str, config: TrainConfig) -> str:
    return "|".join(
        [
            base_model,
            device_type(),
            str(config.quantize),
            config.batching,
            f"gc={int(config.gradient_checkpointing)}",
            f"bs={config.batch_size}",
            f"r={config.lora_r}",
        ]
    )


def record_throughput(base_model: str, config: TrainConfig, tokens_per_second: float) -> None:
    """Remember the training throughput a run measured, for later estimates with the same model and settings."""
    path = _throughput_file()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data[_throughput_key(base_model, config)] = round(tokens_per_second, 1)
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True))


def _param_count(base_model: str) -> float:
    """Rough parameter count from config.json (no weights loaded)."""
    try:
        cfg = json.loads((model_dir(base_model) / "config.json").read_text())
        cfg = cfg.get("text_config", cfg)
        h, n = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"])
        inter = int(cfg.get("intermediate_size", 4 * h))
        return n * (4 * h * h + 3 * h * inter) + int(cfg.get("vocab_size", 32000)) * h
    except (OSError, ValueError, KeyError, TypeError):
        return 135e6


def _rank_factor(rank: int, device: str) -> float:
    """Throughput at LoRA rank ``rank`` relative to the frozen base alone."""
    return 1.0 / (1.0 + _RANK_COST[device] * rank)


def _assumed_throughput(base_model: str, config: TrainConfig) -> tuple[float, bool]:
    """(tokens/s, measured here): this machine's figure for these settings; else one it measured at another LoRA
    rank, scaled by the rank's cost; else the default guess."""
    device = device_type()
    try:
        cache = json.loads(_throughput_file().read_text())
    except (OSError, ValueError):
        cache = {}
    key = _throughput_key(base_model, config)
    if cache.get(key):
        return float(cache[key]), True
    stem = key.rsplit("|r=", 1)[0] + "|r="
    for other, value in sorted(cache.items()):
        rank = other.removeprefix(stem)
        if other.startswith(stem) and rank.isdigit() and value:
            scale = _rank_factor(config.lora_r, device) / _rank_factor(int(rank), device)
            return float(value) * scale, True
    guess = _DEFAULT_PARAM_TOKENS_PER_S[device] / max(_param_count(base_model), 1e6)
    guess *= _rank_factor(config.lora_r, device)
    if device == "cpu" and not use_bf16(config):
        guess /= _CPU_BF16_SPEEDUP  # the default was measured in bf16 (the cpu preset on an AMX CPU)
    return guess * _cpu_speed(config), False


def _cpu_speed(config: TrainConfig) -> float:
    """This CPU's speed relative to the one the defaults were fitted on (1 on CUDA, or training in float32)."""
    if device_type() != "cpu" or not use_bf16(config):
        return 1.0
    return _CPU_BF16_KIND_SPEED.get(cpu_bf16_kind() or "", 1.0)


# --------------------------------------------------------------------------------------------------------------
# The estimate


def estimate(profile_or_dataset: Any, config: TrainConfig, *, tokenizer: Any = None) -> TrainEstimate:
    """Examples, tokens, steps, expected wall time on this device and cost — without loading the model weights.

    The time is the sum of the run's phases: loading the base model, its answers to the guard questions not cached
    yet, the gate's fit, the optimiser steps (tokens × epochs at the assumed throughput), the early-stop probes
    between epochs, and writing the adapter. With the early stop on, every planned epoch is counted (an upper bound:
    a run that learns its phrasings sooner stops sooner). For a profile, the dataset is built with placeholder guard
    answers (the real ones need the model): token counts differ from the real run by a few percent.

    Args:
        profile_or_dataset: a ChatDataset, a Profile or a profile file path.
        config: the training settings.
        tokenizer: the base model's tokenizer, if already loaded.
    """
    counts = _count_tokens(profile_or_dataset, config, tokenizer)
    resolved = resolve_model(config.base_model)
    base = resolved.name
    n = counts.examples
    steps = math.ceil(n / (config.batch_size * config.grad_accum)) * config.epochs
    tps, calibrated = _assumed_throughput(base, config)
    device = device_type()
    phase = _PHASES[device]
    scale = max(_param_count(base), 1e6) / 135e6
    cache = guard_cache_file(base, local=resolved.kind == "local", quantize=config.quantize)
    guards = uncached_guards(counts.guard_questions, cache) if counts.guard_questions else 0
    # Answering guard questions, the gate's reading and the probes are forward passes: as fast as the CPU's steps.
    compute = scale / (1.0 if calibrated else _cpu_speed(config))
    prepare = phase.load_s * scale + guards * phase.guard_s * compute + counts.gate_questions * phase.gate_s * compute
    probes = 0.0
    if config.early_stop and config.epochs > 1:  # none after the last epoch
        probed = min(config.early_stop_probe_size, n)
        probes = (config.epochs - 1) * probed * phase.probe_s * compute
    train = counts.tokens * config.epochs / max(tps, 1e-9)
    seconds = round(prepare + train + probes + phase.save_s, 1)
    # A run whose probe reads every phrasing learned stops early: the shipped 10-fact example did after epoch 2 of 3
    # (bench/train_speed.py seeds 2 and 3; `andraeus train` from an empty home), so that time is shown too.
    early = round(seconds - train / config.epochs, 1) if config.early_stop and config.epochs > 1 else None
    return TrainEstimate(
        base_model=base,
        device=device,
        train_examples=n,
        heldout_examples=counts.heldout,
        tokens_per_epoch=counts.tokens,
        epochs=config.epochs,
        steps=steps,
        tokens_per_second=round(tps, 1),
        calibrated=calibrated,
        expected_seconds=seconds,
        prepare_seconds=round(prepare, 1),
        guard_questions=guards,
        probe_seconds=round(probes, 1),
        early_stop_seconds=early,
        dtype="4-bit" if config.quantize else "bfloat16" if use_bf16(config) else "float32",
        cpu_bf16=(cpu_bf16_kind() or "none") if device == "cpu" else None,
        gpu_cost_per_hour=config.gpu_cost_per_hour,
        cost_usd=round(seconds / 3600 * config.gpu_cost_per_hour, 6),
    )


# --------------------------------------------------------------------------------------------------------------
# ZeroGPU: the Space's GPU budget

#: What one ``@spaces.GPU`` call may request at most; longer requests are refused before they start.
ZEROGPU_MAX_CALL_S = 300
#: Our default per-call budget: under the maximum, so that starting the worker and returning fit too.
DEFAULT_ZEROGPU_SLICE_S = 290
#: Daily ZeroGPU quota per visitor, in GPU seconds (public figures as of 2026; Hugging Face changes them). The quota
#: refills gradually; ZeroGPU's refusal says how much is left ("... (300s requested vs. 84s left)").
ZEROGPU_DAILY_QUOTA_S: dict[str, int] = {"anonymous": 120, "signed in": 210, "PRO": 1500}
#: An unmeasured estimate "fits" a quota only with this much room to spare.
ESTIMATE_MARGIN = 1.25
#: The GPU class the budget models: ZeroGPU's default "large" size.
SPACE_GPU = "ZeroGPU 'large' (half an NVIDIA H200, 70 GB)"


@dataclass(frozen=True)
class _SpaceGpu:
    """Assumed figures of :data:`SPACE_GPU` for our small-batch LoRA training (estimates, not measurements)."""

    flops: float = 150e12  # bf16 FLOP/s sustained on small LoRA matmuls: ~1/3 of the slice's ~420 TFLOP/s peak
    bandwidth: float = 1.5e12  # bytes/s of weights streamed: ~60% of the slice's ~2.4 TB/s
    # Fixed cost per decoder layer and micro-batch: the kernel launches of forward, recomputation and backward with
    # seven LoRA-wrapped projections dominate at our ~70-token examples; bitsandbytes' 4-bit layers add half again.
    layer_s: float = 5e-3
    qlora_layer_factor: float = 1.5
    decode_layer_s: float = 0.25e-3  # per layer and generated token (guard answers, early-stop probes)
    disk: float = 1e9  # bytes/s: safetensors from the Space's disk onto the GPU
    call_s: float = 8.0  # every call: the worker starts, CUDA initialises, the tokenizer loads
    optimizer_step_s: float = 0.01


_GPU = _SpaceGpu()
# (parameters, decoder layers) of the presets, so the budget needs no download.
_MODEL_SHAPES: dict[str, tuple[float, int]] = {
    "smollm2-135m": (135e6, 30),
    "smollm2-360m": (362e6, 32),
    "smollm2-1.7b": (1.71e9, 24),
    "qwen2.5-0.5b": (494e6, 24),
    "qwen2.5-1.5b": (1.54e9, 28),
    "qwen2.5-3b": (3.09e9, 36),
    "qwen2.5-7b": (7.62e9, 28),
    "tiny-random": (3.2e6, 2),
}


def zerogpu_slice_s() -> float:
    """Seconds one ZeroGPU call may take, model loading included: ``ANDRAEUS_ZEROGPU_MAX_S`` (default 290).

    Raises:
        ConfigError: the variable is not a number in (0, 300].
    """
    raw = os.environ.get("ANDRAEUS_ZEROGPU_MAX_S", "").strip()
    if not raw:
        return float(DEFAULT_ZEROGPU_SLICE_S)
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (0 < value <= ZEROGPU_MAX_CALL_S):
        raise ConfigError(
            f"ANDRAEUS_ZEROGPU_MAX_S must be a number of seconds in (0, {ZEROGPU_MAX_CALL_S}] (ZeroGPU refuses longer "
            f"calls), got {raw!r}.",
            param="ANDRAEUS_ZEROGPU_MAX_S",
        )
    return value


class GpuBudget(BaseModel):
    """GPU seconds a training run needs on the Space's GPU, in calls of at most ``per_call_s`` (an estimate)."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(description="The base model that will be trained.")
    quantize: str | None = Field(description="'4bit' for QLoRA, else None.")
    gpu: str = Field(SPACE_GPU, description="The GPU class the figures are for.")
    steps: int = Field(description="Planned optimiser steps.")
    tokens_per_epoch: int = Field(description="Training tokens per epoch.")
    proxy_tokens: bool = Field(
        description="True when the tokens were counted with the default model's tokenizer (the base model's own was "
        "not on disk): a few percent off."
    )
    measured: bool = Field(description="True when the training throughput was measured by an earlier run here.")
    tokens_per_second: float = Field(description="Training throughput assumed.")
    load_seconds: float = Field(description="Every call: start the GPU worker and load the base model.")
    guard_seconds: float = Field(description="First call: the base model answers the over-trigger guard questions.")
    gate_seconds: float = Field(
        0.0, description="Every call, with the gate on: its questions through the base model, then the fit."
    )
    train_seconds: float = Field(description="The optimiser steps.")
    probe_seconds: float = Field(description="Early-stop probes after the epochs (0 without early stop).")
    save_seconds: float = Field(description="Writing one checkpoint or the adapter.")
    per_call_s: float = Field(description="The most one call may take (ANDRAEUS_ZEROGPU_MAX_S).")
    calls: int | None = Field(description="GPU calls needed; None when loading alone does not fit one call.")
    gpu_seconds: float = Field(description="GPU seconds for the whole run, every call's loading included.")

    def fits(self, quota_s: float) -> bool:
        """Whether the run fits ``quota_s`` GPU seconds (an unmeasured estimate needs ESTIMATE_MARGIN to spare)."""
        if self.calls is None:
            return False
        return self.gpu_seconds * (1.0 if self.measured else ESTIMATE_MARGIN) <= quota_s

    def tiers(self) -> dict[str, bool]:
        """For each ZeroGPU visitor tier, whether a full daily quota fits this run."""
        return {tier: self.fits(seconds) for tier, seconds in ZEROGPU_DAILY_QUOTA_S.items()}

    def next_call_s(self, step: int = 0, total_steps: int = 0, quota_left_s: float | None = None) -> int:
        """The duration to request for the next call, ``step`` of ``total_steps`` being done.

        As much as the rest of the run needs (with the estimate's margin), never more than ``per_call_s``: ZeroGPU
        admits a call only when the visitor's quota covers the whole request, so asking for 290 s when 60 s do
        would refuse a visitor with 100 s left. A known ``quota_left_s`` that still covers the need caps it too.
        """
        done = step / total_steps if total_steps else 0.0
        rest = (1 - done) * (self.train_seconds + self.probe_seconds) + (0 if step else self.guard_seconds)
        need = (self.load_seconds + self.gate_seconds + rest + self.save_seconds) * ESTIMATE_MARGIN
        need = need / (1 - pause_reserve_s(1.0))  # train() keeps that share of the budget free
        request = min(self.per_call_s, max(need, 30.0))
        if quota_left_s is not None and need <= quota_left_s < request:
            request = quota_left_s
        return max(1, math.ceil(request))

    def summary(self, quota_left_s: float | None = None) -> str:
        """A short paragraph for the web app: the GPU seconds, the calls, and what fits."""
        label = "measured throughput" if self.measured else "estimate, not yet measured on a Space"
        head = (
            f"On {self.gpu} this run needs about **{self.gpu_seconds:.0f} GPU seconds** ({label}): {self.steps} "
            f"steps at ~{self.tokens_per_second:,.0f} tokens/s"
        )
        if self.calls is None:
            head += (
                f"; but loading {self.base_model} alone (~{self.load_seconds:.0f}s) does not fit one GPU call of "
                f"{self.per_call_s:.0f}s."
            )
        else:
            calls = "one GPU call" if self.calls == 1 else f"{self.calls} GPU calls of at most {self.per_call_s:.0f}s"
            head += f", in {calls}, each loading the model (~{self.load_seconds:.0f}s)."
        tiers = ", ".join(
            f"{tier} {seconds}s/day {'✓' if ok else '✗'}"
            for (tier, seconds), ok in zip(ZEROGPU_DAILY_QUOTA_S.items(), self.tiers().values(), strict=True)
        )
        text = f"{head} Daily ZeroGPU quotas: {tiers}."
        if quota_left_s is not None:
            verdict = "fits" if self.fits(quota_left_s) else "does **not** fit"
            text += f" You have {quota_left_s:.0f}s of GPU quota left (ZeroGPU's last answer): it {verdict}."
        return text


def _shape(base: str) -> tuple[float, int]:
    if base in _MODEL_SHAPES:
        return _MODEL_SHAPES[base]
    try:
        cfg = json.loads((model_dir(base) / "config.json").read_text())
        cfg = cfg.get("text_config", cfg)
        return _param_count(base), int(cfg["num_hidden_layers"])
    except (OSError, ValueError, KeyError, TypeError, ConfigError, ModelNotAvailableError):
        return _param_count(base), 32


@dataclass(frozen=True)
class _Counts:
    """What an estimate counts without loading the model's weights."""

    examples: int
    heldout: int
    tokens: int  # per epoch, no padding
    guard_questions: tuple[str, ...]  # answered by the base model while the dataset is built (cached ones too)
    gate_questions: int  # read by the base model when the gate is fitted
    proxy: bool  # counted with the default model's tokenizer (the base model's own is not on disk)

    @property
    def guards(self) -> int:
        return len(self.guard_questions)


def _count_tokens(profile_or_dataset: Any, config: TrainConfig, tokenizer: Any) -> _Counts:
    """Examples, tokens per epoch, guard and gate questions of a run, as it would build them."""
    guards: list[str] = []
    # Guard answers take the base model's words (up to GUARD_MAX_NEW_TOKENS; the default model's average ~58 of 64,
    # measured on bench/capacity.py's profile): a placeholder of that length keeps the token count within a few
    # percent without generating anything.
    placeholder = " ".join(["word"] * int(GUARD_MAX_NEW_TOKENS * _GUARD_ANSWER_SHARE))

    def count_guards(questions: list[str]) -> list[str]:
        guards.extend(questions)
        return [placeholder] * len(questions)

    dataset = prepare_dataset(profile_or_dataset, config, guard_answer_fn=count_guards)
    gate_questions = 0
    source = load_source(profile_or_dataset)
    if config.gate and not is_chat_dataset(source):  # as train() fits it: training questions (capped), then held out
        data = gate_data(source, dataset, seed=config.seed)
        gate_questions = sum(min(len(set(qs)), 600) for qs in data.train.values())
        gate_questions += sum(len(set(qs)) for qs in data.heldout.values())
    proxy = False
    if tokenizer is None:
        if first_load_work(config.base_model) is None:
            try:
                tokenizer = load_tokenizer(config.base_model)
            except (ModelNotAvailableError, ModelLoadError):
                tokenizer = None
        if tokenizer is None:  # not on disk: never download gigabytes for an estimate
            tokenizer, proxy = load_tokenizer("tiny-random"), True  # the default's tokenizer, read without converting
    tokens = sum(
        len(tokenize_example(tokenizer, ex, max_length=config.max_length)["input_ids"]) for ex in dataset.train
    )
    return _Counts(len(dataset.train), len(dataset.heldout), tokens, tuple(guards), gate_questions, proxy)


def _budget_from_counts(base: str, config: TrainConfig, counts: _Counts, per_call_s: float) -> GpuBudget:
    examples, tokens, guards, gate_questions = counts.examples, counts.tokens, counts.guards, counts.gate_questions
    params, layers = _shape(base)
    four_bit = config.quantize == "4bit"
    weight_bytes = (0.55 if four_bit else 2.0) * params
    passes = 3 if config.gradient_checkpointing else 2  # forward (+ recomputation) + backward (activations only)
    # Padding: random batches pad to their longest example, length-grouped ones hardly at all.
    padding = 1.03 if config.batching in ("grouped", "padding_free") else 1.15
    micro_tokens = tokens / max(examples, 1) * config.batch_size * padding
    flop_s = 2 * params * micro_tokens * passes / _GPU.flops
    # 4-bit layers are dequantised to bf16 on every pass: read the packed weights, write and read bf16 copies.
    stream_s = (4.5 if four_bit else 2.0) * params * passes / _GPU.bandwidth
    layer_s = layers * _GPU.layer_s * (_GPU.qlora_layer_factor if four_bit else 1.0)
    micro_s = max(flop_s, stream_s) + layer_s
    steps = math.ceil(examples / (config.batch_size * config.grad_accum)) * config.epochs
    train_s = steps * (config.grad_accum * micro_s + _GPU.optimizer_step_s)
    measured = False
    if device_type() == "cuda":  # a run on this GPU (the Space itself) measured its own throughput
        tps, calibrated = _assumed_throughput(base, config)
        if calibrated:
            train_s, measured = tokens * config.epochs / tps, True
    decode_s = layers * _GPU.decode_layer_s + weight_bytes / _GPU.bandwidth
    guard_s = math.ceil(guards / 16) * GUARD_MAX_NEW_TOKENS * decode_s
    probes = max(0, config.epochs - 1) if config.early_stop else 0
    probe_s = probes * math.ceil(min(config.early_stop_probe_size, examples) / 32) * 32 * decode_s
    load_s = _GPU.call_s + 2.0 * params / _GPU.disk + (params * 0.5e-9 if four_bit else 0.0)
    # The gate: batches of 64 short questions (~16 tokens) through the base model, then a small fit (~1 s).
    prefill_s = layers * _GPU.layer_s + max(2 * params * 64 * 16 / _GPU.flops, weight_bytes / _GPU.bandwidth)
    gate_s = math.ceil(gate_questions / 64) * prefill_s + 1.0 if gate_questions else 0.0
    hidden = math.sqrt(params / (12 * layers))
    lora_params = config.lora_r * layers * 20 * hidden  # A and B of the seven projections, ~20 hidden sizes per layer
    save_s = 1.0 + lora_params * 4 * 3 / _GPU.disk  # float32 weights and two AdamW moments
    # Every call loads the model and fits the gate again (a call that pauses writes a checkpoint, not the gate).
    per_call_setup = load_s + gate_s
    usable = per_call_s - pause_reserve_s(per_call_s) - per_call_setup
    work = guard_s + train_s + probe_s
    calls: int | None = None
    gpu_s = per_call_setup + work + save_s
    if usable > save_s:
        calls = max(1, math.ceil((work + save_s) / usable))
        gpu_s = calls * per_call_setup + work + calls * save_s
    return GpuBudget(
        base_model=base,
        quantize=config.quantize,
        steps=steps,
        tokens_per_epoch=tokens,
        proxy_tokens=counts.proxy,
        measured=measured,
        tokens_per_second=round(tokens * config.epochs / max(train_s, 1e-9), 1),
        load_seconds=round(load_s, 1),
        guard_seconds=round(guard_s, 1),
        gate_seconds=round(gate_s, 1),
        train_seconds=round(train_s, 1),
        probe_seconds=round(probe_s, 1),
        save_seconds=round(save_s, 1),
        per_call_s=per_call_s,
        calls=calls,
        gpu_seconds=round(gpu_s, 1),
    )


def gpu_budget(
    profile_or_dataset: Any, config: TrainConfig, *, per_call_s: float | None = None, tokenizer: Any = None
) -> GpuBudget:
    """GPU seconds this training run needs on the Space's GPU (:data:`SPACE_GPU`), without loading the model.

    Args:
        profile_or_dataset: a ChatDataset, a Profile or a profile file path.
        config: the training settings (``config.base_model`` is the model trained).
        per_call_s: the most one GPU call may take; default :func:`zerogpu_slice_s`.
        tokenizer: the base model's tokenizer, if loaded; else read from disk, or the default's as a proxy.
    """
    per_call = zerogpu_slice_s() if per_call_s is None else per_call_s
    counts = _count_tokens(profile_or_dataset, config, tokenizer)
    return _budget_from_counts(resolve_model(config.base_model).name, config, counts, per_call)


def space_models() -> list[str]:
    """The presets a Space may train, smallest first (tiny-random is for tests)."""
    names = [name for name, preset in PRESETS.items() if preset.kind != "random"]
    return sorted(names, key=lambda n: _MODEL_SHAPES.get(n, (0.0, 0))[0])


def budget_models(
    profile_or_dataset: Any, config: TrainConfig, *, per_call_s: float | None = None
) -> dict[str, GpuBudget]:
    """:func:`gpu_budget` of ``config`` for every preset of :func:`space_models`, smallest first.

    Tokens are counted once, with ``config.base_model``'s tokenizer when on disk (else the default's): the presets'
    tokenizers differ by a few percent, which the estimate's margin covers.
    """
    per_call = zerogpu_slice_s() if per_call_s is None else per_call_s
    counts = _count_tokens(profile_or_dataset, config, None)
    return {
        name: _budget_from_counts(name, config.model_copy(update={"base_model": name}), counts, per_call)
        for name in space_models()
    }


def largest_fitting_model(budgets: dict[str, GpuBudget], quota_s: float) -> str | None:
    """The largest model of ``budgets`` (smallest first, as :func:`budget_models` gives them) that fits ``quota_s``."""
    fitting = [name for name, budget in budgets.items() if budget.fits(quota_s)]
    return fitting[-1] if fitting else None


def gpu_call_seconds(
    base_model: str | None, *, quantize: str | None = None, decode_steps: int = 0, per_call_s: float | None = None
) -> int:
    """The duration to request for a GPU call that loads ``base_model`` and runs ``decode_steps`` batched decoding
    steps (an evaluation, a chat answer): the estimate with its margin, at least 20 s, at most one call.

    A request no larger than needed matters on ZeroGPU: a call is admitted only if the visitor's quota covers all of
    it (an anonymous visitor has 120 s a day).
    """
    params, layers = _shape(resolve_model(base_model).name)
    weight_bytes = (0.55 if quantize == "4bit" else 2.0) * params
    load_s = _GPU.call_s + 2.0 * params / _GPU.disk + (params * 0.5e-9 if quantize == "4bit" else 0.0)
    decode_s = layers * _GPU.decode_layer_s + weight_bytes / _GPU.bandwidth
    seconds = (load_s + decode_steps * decode_s) * ESTIMATE_MARGIN
    limit = zerogpu_slice_s() if per_call_s is None else per_call_s
    return max(1, math.ceil(min(limit, max(20.0, seconds))))


def evaluation_gpu_seconds(adapter_dir: str | Path, *, max_new_tokens: int = 48, batch_size: int = 64) -> int:
    """:func:`gpu_call_seconds` of evaluating an adapter's held-out split with the adapter, the base model and
    facts-in-prompt (three answers per question; ``evaluate``'s defaults for length and batch)."""
    adapter = Adapter.load(adapter_dir)
    questions = int(adapter.meta.dataset.get("heldout", 100) or 100)
    steps = 3 * math.ceil(questions / batch_size) * max_new_tokens
    return gpu_call_seconds(adapter.base_model, quantize=adapter.meta.quantize, decode_steps=steps)


def chat_gpu_seconds(adapter_dir: str | Path, *, max_new_tokens: int = 128) -> int:
    """:func:`gpu_call_seconds` of one chat answer of ``max_new_tokens`` with an adapter (loading it included)."""
    adapter = Adapter.load(adapter_dir)
    return gpu_call_seconds(adapter.base_model, quantize=adapter.meta.quantize, decode_steps=max_new_tokens)


class ZeroGpuRefusal(BaseModel):
    """What a ZeroGPU error message says, read from its text (the ``spaces`` package raises gr.Error with it)."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="'quota', 'duration' (request over the per-call maximum), 'busy' or 'aborted'.")
    left_s: int | None = Field(None, description="GPU seconds the visitor has left, when the message says.")
    requested_s: int | None = Field(None, description="GPU seconds the call requested, when the message says.")
    retry_in: str | None = Field(None, description="When to retry, as the message gives it (e.g. '0:05:12').")


def read_zerogpu_error(text: str) -> ZeroGpuRefusal | None:
    """Read a ZeroGPU error message ("You have exceeded your GPU quota (290s requested vs. 84s left). Try again in
    0:05:12.", also the older "(84s left vs. 290s requested)"); None when the text is not one of ZeroGPU's."""
    low = text.lower()
    left = re.search(r"(\d+)\s*s\s+left", low)
    requested = re.search(r"(\d+)\s*s\s+requested", low) or re.search(r"duration \((\d+)\s*s\)", low)
    retry = re.search(r"(?:try again|retry) in ([0-9:]+(?: days?,? [0-9:]+)?)", low)
    fields = {
        "left_s": int(left.group(1)) if left else None,
        "requested_s": int(requested.group(1)) if requested else None,
        "retry_in": retry.group(1) if retry else None,
    }
    if "larger than the maximum" in low:
        return ZeroGpuRefusal(kind="duration", **fields)
    if "quota" in low or "gpu limit" in low or "runs limit" in low or left:
        return ZeroGpuRefusal(kind="quota", **fields)
    if "no gpu was available" in low or "pending credits" in low:
        return ZeroGpuRefusal(kind="busy", **fields)
    if "aborted" in low or "timed out" in low:
        return ZeroGpuRefusal(kind="aborted", **fields)
    return None


__all__ = [
    "DEFAULT_ZEROGPU_SLICE_S",
    "ESTIMATE_MARGIN",
    "SPACE_GPU",
    "ZEROGPU_DAILY_QUOTA_S",
    "ZEROGPU_MAX_CALL_S",
    "GpuBudget",
    "TrainEstimate",
    "ZeroGpuRefusal",
    "budget_models",
    "chat_gpu_seconds",
    "estimate",
    "evaluation_gpu_seconds",
    "gpu_budget",
    "gpu_call_seconds",
    "largest_fitting_model",
    "read_zerogpu_error",
    "record_throughput",
    "space_models",
    "zerogpu_slice_s",
]
