"""Settings read from the environment, and the typed configuration models shared by CLI, UI and API."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

DEFAULT_HOME = Path("~/.cache/andraeus")


def andraeus_home() -> Path:
    """Root of everything Andraeus writes: converted models, adapters, jobs (``ANDRAEUS_HOME``)."""
    return Path(os.environ.get("ANDRAEUS_HOME") or DEFAULT_HOME).expanduser()


def models_dir() -> Path:
    """Where converted/built base models are cached (``ANDRAEUS_MODELS_DIR``, default ``$ANDRAEUS_HOME/models``).

    A separate override exists so a test session can share one converted copy of the default model while every test
    still gets its own ``ANDRAEUS_HOME``.
    """
    override = os.environ.get("ANDRAEUS_MODELS_DIR")
    return Path(override).expanduser() if override else andraeus_home() / "models"


def adapters_dir() -> Path:
    """Where trained adapters are written by default (``$ANDRAEUS_HOME/adapters``)."""
    return andraeus_home() / "adapters"


# ----------------------------------------------------------------------------------------------------------------
# Training configuration

SEED_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEFAULT_GPU_COST_PER_HOUR = 11.058  # the seed's §8 price (an 8×H100 hour on a public cloud)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), as torch's CPU capability checks report."""
    return cpu_bf16_kind() is not None


def cpu_bf16_kind() -> str | None:
    """How this CPU computes bfloat16, as torch's CPU capability checks report: ``"amx"`` (matrix tiles, e.g. Intel
    Sapphire Rapids), ``"avx512-bf16"`` (vector dot products only, e.g. AMD Zen 4), or None (not natively)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return None
    for kind, name in (("amx", "_is_amx_tile_supported"), ("avx512-bf16", "_is_avx512_bf16_supported")):
        check = getattr(torch.cpu, name, None)
        if callable(check) and check():
            return kind
    return None


#: The dtype base models are loaded in on CPU to answer (chat, API, evaluation): ``float32`` (the default),
#: ``bfloat16``, or ``auto`` (bfloat16 where the CPU computes it natively, else float32).
CPU_DTYPE_ENV = "ANDRAEUS_CPU_DTYPE"


def cpu_inference_dtype() -> str:
    """The dtype a base model is loaded in on CPU to answer (chat, API, evaluation): ``"float32"`` or ``"bfloat16"``.

    Decoding one token reads every weight once, so on a 2-core CPU it is bound by memory, not arithmetic: bf16 weights
    are half the bytes, and where the CPU computes bf16 natively (:func:`cpu_has_bf16`) one stream decoded 45.9
    instead of 32.5 tokens/s (float32 stored column-major, ``models._column_major_weights``) and its first token came
    in 63 instead of 122 ms (README, Command line). float32 stays the
    default because bf16 rounding makes a greedy answer depend on the batch it was decoded in (11 of 16 batched
    answers equalled the same request alone, against 16 of 16 in float32), so an answer would change with the
    server's load and evaluation would no longer score exactly what chat says. ``ANDRAEUS_CPU_DTYPE=bfloat16`` (or
    ``auto``: bf16 only where native; emulated bf16 is several times slower than float32) trades that for the speed.
    Training is not affected: the cpu preset's bf16 base follows the CPU on its own.
    """
    value = (os.environ.get(CPU_DTYPE_ENV) or "float32").strip().lower()
    if value == "auto":
        return "bfloat16" if cpu_has_bf16() else "float32"
    if value not in ("float32", "bfloat16"):
        raise ConfigError(f"{CPU_DTYPE_ENV} must be float32, bfloat16 or auto, got {value!r}.", param=CPU_DTYPE_ENV)
    return value


#: The cpu preset's LoRA rank by profile size: (most facts, rank), first match; measured with bench/capacity.py (see
#: README "Capacity"): at 10 and 50 facts r=16 recalled as well as r=64 on held-out phrasings (within the runs'
#: noise) while training ~1.2x faster with a 4x smaller adapter; past 50 facts only r=64 was measured.
CPU_RANKS: tuple[tuple[int, int], ...] = ((50, 16),)
CPU_RANK_LARGE = 64


def cpu_rank(facts: int) -> int:
    """The cpu preset's LoRA rank for a profile of ``facts`` facts (:data:`CPU_RANKS`)."""
    for most, rank in CPU_RANKS:
        if facts <= most:
            return rank
    return CPU_RANK_LARGE


class TrainConfig(BaseModel):
    """Everything that decides how an adapter is trained.

    Two presets: ``TrainConfig.preset("seed")`` is exactly the seed's recipe; ``TrainConfig.preset("cpu")`` is the
    same science tuned for a 2-core CPU (see :meth:`preset` for the measured reasons).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    preset_name: Literal["seed", "cpu", "custom"] = Field(
        "custom",
        description="Which preset these values started from (informational; recorded in the adapter's metadata).",
    )
    base_model: str | None = Field(
        None, description="Base model preset, local directory or Hub id; None = the default for this machine."
    )
    quantize: Literal["4bit"] | None = Field(
        None, description="'4bit' = QLoRA (bitsandbytes NF4 + double quantisation); None = full-precision LoRA."
    )
    lora_r: int = Field(64, description="LoRA rank r.")
    lora_alpha: int = Field(128, description="LoRA scaling alpha (the update is scaled by alpha / r).")
    lora_dropout: float = Field(0.05, description="Dropout on the LoRA input, 0 <= p < 1.")
    target_modules: list[str] = Field(
        default_factory=lambda: list(SEED_TARGET_MODULES),
        description="Module names that get LoRA adapters (all attention and MLP projections in the seed).",
    )
    learning_rate: float = Field(3e-4, description="Peak learning rate (AdamW).")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule after warm-up."
    )
    warmup_ratio: float = Field(0.03, description="Share of the optimiser steps spent warming up, 0 <= x < 1.")
    weight_decay: float = Field(0.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, description="Gradient clipping norm (0 = no clipping).")
    epochs: int = Field(5, description="Passes over the training phrasings (an upper bound when early_stop is on).")
    batch_size: int = Field(2, description="Examples per micro-batch.")
    grad_accum: int = Field(4, description="Micro-batches per optimiser step (effective batch = batch_size × this).")
    bf16: bool | None = Field(
        None, description="bfloat16 mixed precision; None = where supported (CUDA with bf16), float32 otherwise."
    )
    gradient_checkpointing: bool = Field(
        True, description="Recompute activations in the backward pass: less memory, about 30% more compute."
    )
    batching: Literal["padded", "grouped", "padding_free"] = Field(
        "padded",
        description="How micro-batches are formed: 'padded' (random order, padded to the longest), 'grouped' "
        "(similar lengths together, little padding) or 'padding_free' (sequences concatenated, no padding).",
    )
    per_fact: int = Field(
        30, description="Question phrasings per fact to train on (the held-out ones are generated on top)."
    )
    typo_augment: int = Field(
        0,
        description="Extra typo'd questions per fact, for training only (the held-out split is unchanged), 0-500.",
        ge=0,
        le=500,
    )
    heldout_share: float = Field(0.2, description="Share of phrasings held out for evaluation, 0 <= x < 1.")
    system_prompt: str = Field(
        "identity",
        description="System prompt of the chat examples: 'identity', 'facts' or a literal prompt text.",
    )
    gate: bool = Field(
        True,
        description="Fit the gate next to the adapter: a router over the frozen base model that sends general "
        "questions to the base model and declines unknown personal ones (profiles only, not chat files).",
    )
    seed: int = Field(0, description="Random seed for phrasings, the split and training.")
    max_length: int = Field(512, description="Longest tokenised example; longer ones are truncated.")
    early_stop: bool = Field(
        False, description="After each epoch probe training phrasings greedily; stop once they are learned."
    )
    early_stop_threshold: float = Field(
        0.99, description="Share of probed phrasings that must be answered right to stop early, 0 < x <= 1."
    )
    early_stop_probe_size: int = Field(64, description="Training phrasings probed after each epoch (a sample).")
    checkpoint_every: int = Field(
        0, description="Save a resumable checkpoint every N optimiser steps (0 = only at the end of each epoch)."
    )
    gpu_cost_per_hour: float = Field(
        DEFAULT_GPU_COST_PER_HOUR, description="US dollars per hour used for the cost estimate (seed §8: 11.058)."
    )
    out_dir: str | None = Field(
        None, description="Where the adapter directory is written; None = $ANDRAEUS_HOME/adapters/<name>."
    )

    @field_validator("lora_r", "lora_alpha", "epochs", "batch_size", "grad_accum", "per_fact")
    @classmethod
    def _positive_int(cls, value: int, info: Any) -> int:
        if value < 1:
            raise ValueError(f"{info.field_name} must be at least 1, got {value}")
        return value

    @field_validator("learning_rate")
    @classmethod
    def _lr(cls, value: float) -> float:
        if not (0 < value < 1):
            raise ValueError(f"learning_rate must be between 0 and 1 (e.g. 3e-4), got {value}")
        return value

    @field_validator("lora_dropout", "warmup_ratio", "heldout_share")
    @classmethod
    def _fraction(cls, value: float, info: Any) -> float:
        if not (0 <= value < 1):
            raise ValueError(f"{info.field_name} must be in [0, 1), got {value}")
        return value

    @field_validator("early_stop_threshold")
    @classmethod
    def _threshold(cls, value: float) -> float:
        if not (0 < value <= 1):
            raise ValueError(f"early_stop_threshold must be in (0, 1], got {value}")
        return value

    @field_validator("weight_decay", "max_grad_norm", "gpu_cost_per_hour")
    @classmethod
    def _non_negative(cls, value: float, info: Any) -> float:
        if value < 0 or value != value:
            raise ValueError(f"{info.field_name} must be a non-negative number, got {value}")
        return value

    @field_validator("checkpoint_every", "seed")
    @classmethod
    def _non_negative_int(cls, value: int, info: Any) -> int:
        if value < 0:
            raise ValueError(f"{info.field_name} must be 0 or more, got {value}")
        return value

    @field_validator("max_length")
    @classmethod
    def _max_length(cls, value: int) -> int:
        if value < 32:
            raise ValueError(f"max_length must be at least 32 tokens, got {value}")
        return value

    @field_validator("early_stop_probe_size")
    @classmethod
    def _probe(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"early_stop_probe_size must be at least 1, got {value}")
        return value

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, value: list[str]) -> list[str]:
        cleaned = [v.strip() for v in value if v.strip()]
        if not cleaned:
            raise ValueError(f"target_modules must name at least one module (e.g. q_proj), got {value!r}")
        return cleaned

    @field_validator("system_prompt")
    @classmethod
    def _system(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("system_prompt must be 'identity', 'facts' or a non-empty prompt text, got ''")
        return value

    @model_validator(mode="after")
    def _combination(self) -> TrainConfig:
        if self.batching == "padding_free" and self.batch_size == 1:
            # Nothing to concatenate; say so rather than silently do padded training.
            raise ValueError("batching='padding_free' needs batch_size >= 2 (it concatenates a micro-batch)")
        return self

    @classmethod
    def preset(cls, name: str, *, facts: int | None = None, **overrides: Any) -> TrainConfig:
        """A named recipe, optionally with some fields overridden.

        ``facts``: the profile's number of facts, when known: the ``cpu`` preset then takes its LoRA rank from it
        (:func:`cpu_rank`, alpha = 2r), unless ``lora_r`` is overridden. The ``seed`` preset keeps r=64 whatever.

        ``seed``: exactly the seed's recipe — r=64, α=128, dropout 0.05, all attention+MLP projections, lr 3e-4,
        cosine, warm-up 3%, 5 epochs, batch 2 × grad-accum 4, bf16 where supported, gradient checkpointing.

        ``cpu``: the same LoRA science (the same targets, AdamW, cosine, warm-up 3%, gradient checkpointing,
        effective batch 8), tuned for a 2-core CPU with bench/train_speed.py and bench/capacity.py (figures in the
        README):
          * r=64, α=128 — or, given ``facts``, r from :func:`cpu_rank` (16 up to 50 facts) and α = 2r: r=16 recalled
            as well as r=64 at 10, 25 and 50 facts, ~1.2x faster with a 4x smaller adapter;
          * batch 8 × grad-accum 1 — the seed's effective batch in one micro-batch: one bigger matmul is cheaper
            per token on CPU than four small ones, and there is no accumulation overhead;
          * bf16 — the frozen base weights are stored in bf16 and the step runs under bf16 autocast, while the LoRA
            weights and AdamW state stay float32. On a CPU with AMX/AVX512-BF16 this measured ~1.45x faster per step
            than float32 (with eager attention and the answer-only LM head, see ``train``), and it halves the base
            model's memory. A CPU without bf16 instructions emulates it, several times slower than float32: there
            the preset leaves ``bf16`` to "where supported" (:func:`cpu_has_bf16`; CUDA's bf16 on a GPU);
          * gradient checkpointing kept — without it peak RSS was 3.2–3.9 GB (activations, and glibc keeping the
            freed activation memory of ever-changing batch shapes); with it 2.7 GB, for ~25% of the throughput;
          * length-grouped batches — little padding;
          * LoRA dropout 0 — profiling showed the dropout masks (``bernoulli_``) take ~14% of a CPU step; with a
            few epochs and the early stop there is nothing for dropout to regularise;
          * lr 1e-3 and 3 epochs — ~40 steps per epoch for a 10-fact profile; the seed's 3e-4 was tuned for a 7B
            model. Measured on the seed example: 3 epochs reached 94.4% held-out recall at lr 1e-3, 1.5e-3 and 2e-3
            alike, 5 epochs 96.3% but 3.5 minutes, past the 3-minute budget;
          * early stop on (threshold 0.99) — stops as soon as the training phrasings are learned;
          * typo_augment 4 — four more misspelt training questions per fact (the held-out split is unchanged). A
            misspelt key word ("Whats the nae of my dog?") was the commonest held-out miss; over seeds 0–2 held-out
            recall went from 163/175 (93.1%) to 169/175 (96.6%) for ~12% more training time (8 extra: 168/175).

        Raises:
            ConfigError: unknown preset name or an invalid override.
        """
        presets: dict[str, dict[str, Any]] = {
            "seed": {"preset_name": "seed"},
            "cpu": {
                "preset_name": "cpu",
                "batch_size": 8,
                "grad_accum": 1,
                "epochs": 3,
                # bf16 where the CPU computes it natively (else "where supported": CUDA's bf16, or float32).
                "bf16": True if cpu_has_bf16() else None,
                "batching": "grouped",
                "learning_rate": 1e-3,
                "lora_dropout": 0.0,
                "early_stop": True,
                "typo_augment": 4,
            },
        }
        if name not in presets:
            choices = ", ".join(presets)
            raise ConfigError(f"Unknown training preset {name!r}; choose one of: {choices}.", param="preset")
        values = dict(presets[name])
        if name == "cpu" and facts is not None and "lora_r" not in overrides:
            values["lora_r"] = cpu_rank(facts)
            values["lora_alpha"] = 2 * values["lora_r"]
        try:
            return cls(**{**values, **overrides})
        except ValidationError as exc:
            raise ConfigError(validation_message(exc), param=_first_loc(exc)) from None


def validation_message(exc: Exception) -> str:
    """One readable line from a pydantic ValidationError: field, problem and the value given."""
    errors = getattr(exc, "errors", lambda: [])()
    parts = []
    for e in errors:
        loc = ".".join(str(p) for p in e.get("loc", ())) or "config"
        msg = str(e.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg} (got {e.get('input')!r})")
    return "Invalid training settings: " + "; ".join(parts) if parts else str(exc)


def _first_loc(exc: Exception) -> str | None:
    errors = getattr(exc, "errors", lambda: [])()
    if errors and errors[0].get("loc"):
        return str(errors[0]["loc"][0])
    return None


def make_train_config(**values: Any) -> TrainConfig:
    """Build a :class:`TrainConfig`, turning validation problems into a :class:`ConfigError` naming field and value."""
    try:
        return TrainConfig(**values)
    except ValidationError as exc:
        raise ConfigError(validation_message(exc), param=_first_loc(exc)) from None
