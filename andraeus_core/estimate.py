"""What a training run will cost before it starts: examples, tokens, steps, time on this device and money.

The time comes from a throughput figure: the one measured by an earlier run of the same base model and settings on
this machine (kept in ``$ANDRAEUS_HOME/cache/throughput.json``, written by :func:`record_throughput` after each
run), else a default guess scaled by the model's parameter count.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .config import TrainConfig, andraeus_home
from .dataset import tokenize_example
from .fsutil import atomic_write
from .models import device_type, load_tokenizer, model_dir, resolve_model
from .recipe import prepare_dataset

# Throughput used by estimate() before this machine has trained anything, as (parameter count × tokens/s): the
# product is roughly constant across model sizes on one device. CPU: measured with bench/train_speed.py on the
# 2-core dev machine (SmolLM2-135M, cpu preset); CUDA: a conservative H100 bf16 figure (~30% MFU).
_DEFAULT_PARAM_TOKENS_PER_S = {"cpu": 135e6 * 350, "cuda": 3e13}
_FIXED_OVERHEAD_S = {"cpu": 10.0, "cuda": 60.0}


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
    gpu_cost_per_hour: float = Field(description="Price used for the cost figure (US dollars per hour).")
    cost_usd: float = Field(description="expected_seconds at gpu_cost_per_hour.")

    def summary(self) -> str:
        """One paragraph for a terminal or a UI."""
        source = "measured here" if self.calibrated else "default guess"
        return (
            f"{self.train_examples} training examples ({self.heldout_examples} held out), "
            f"{self.tokens_per_epoch:,} tokens/epoch × {self.epochs} epochs = {self.steps} steps on {self.device} "
            f"with {self.base_model}; expected ~{_fmt_seconds(self.expected_seconds)} "
            f"at ~{self.tokens_per_second:,.0f} tokens/s ({source}); "
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


def _assumed_throughput(base_model: str, config: TrainConfig) -> tuple[float, bool]:
    try:
        measured = json.loads(_throughput_file().read_text()).get(_throughput_key(base_model, config))
    except (OSError, ValueError):
        measured = None
    if measured:
        return float(measured), True
    return _DEFAULT_PARAM_TOKENS_PER_S[device_type()] / max(_param_count(base_model), 1e6), False


# --------------------------------------------------------------------------------------------------------------
# The estimate


def estimate(profile_or_dataset: Any, config: TrainConfig, *, tokenizer: Any = None) -> TrainEstimate:
    """Examples, tokens, steps, expected wall time on this device and cost — without loading the model weights.

    For a profile, the dataset is built with placeholder guard answers (the real ones need the model): token counts
    differ from the real run by a few percent at most.

    Args:
        profile_or_dataset: a ChatDataset, a Profile or a profile file path.
        config: the training settings.
        tokenizer: the base model's tokenizer, if already loaded.
    """
    dataset = prepare_dataset(profile_or_dataset, config)
    base = resolve_model(config.base_model).name
    tok = tokenizer if tokenizer is not None else load_tokenizer(config.base_model)
    tokens = sum(len(tokenize_example(tok, ex, max_length=config.max_length)["input_ids"]) for ex in dataset.train)
    n = len(dataset.train)
    steps = math.ceil(n / (config.batch_size * config.grad_accum)) * config.epochs
    tps, calibrated = _assumed_throughput(base, config)
    device = device_type()
    probes = config.epochs * min(config.early_stop_probe_size, n) * 0.05 if config.early_stop else 0.0
    seconds = round(tokens * config.epochs / max(tps, 1e-9) + _FIXED_OVERHEAD_S[device] + probes, 1)
    return TrainEstimate(
        base_model=base,
        device=device,
        train_examples=n,
        heldout_examples=len(dataset.heldout),
        tokens_per_epoch=tokens,
        epochs=config.epochs,
        steps=steps,
        tokens_per_second=round(tps, 1),
        calibrated=calibrated,
        expected_seconds=seconds,
        gpu_cost_per_hour=config.gpu_cost_per_hour,
        cost_usd=round(seconds / 3600 * config.gpu_cost_per_hour, 6),
    )


__all__ = ["TrainEstimate", "estimate", "record_throughput"]
