"""LoRA/QLoRA training with TRL + PEFT: progress, cancel, checkpoints/resume, early stop, atomic adapter writes.

The order of a run is fixed: seed → load the base model → build the dataset (over-trigger guard answers come from
the base model before any LoRA is attached) → tokenise → attach LoRA → train with TRL's ``SFTTrainer`` → write the
adapter directory atomically. Our :class:`~andraeus_core.config.TrainConfig` is *translated* into PEFT's
``LoraConfig``, transformers' ``BitsAndBytesConfig`` and TRL's ``SFTConfig`` by three small functions; TRL does the
training. The loss covers assistant tokens only: examples are pre-tokenised by ``dataset.tokenize_example`` whose
``labels`` are -100 everywhere but the assistant's answer, and TRL keeps a ``labels`` column as it is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .config import ADAPTER_HELDOUT, ADAPTER_META, ADAPTER_PRIVATE, TrainConfig, adapters_dir, andraeus_home
from .errors import AndraeusError, ConfigError, TrainingCancelled, TrainingError
from .models import LoadedModel, bnb_config, cuda_available, generate_batch, load_model, load_tokenizer, model_dir

if TYPE_CHECKING:
    from peft import LoraConfig
    from trl import SFTConfig

logger = logging.getLogger(__name__)

GUARD_MAX_NEW_TOKENS = 64

# Throughput used by estimate() before this machine has trained anything, as (parameter count × tokens/s): the
# product is roughly constant across model sizes on one device. CPU: measured with bench/train_speed.py on the
# 2-core dev machine (SmolLM2-135M, cpu preset); CUDA: a conservative H100 bf16 figure (~30% MFU).
_DEFAULT_PARAM_TOKENS_PER_S = {"cpu": 135e6 * 350, "cuda": 3e13}
_FIXED_OVERHEAD_S = {"cpu": 10.0, "cuda": 60.0}


# --------------------------------------------------------------------------------------------------------------
# Public result types


class ProgressEvent(BaseModel):
    """One progress report, sent after every optimiser step (and at phase changes)."""

    model_config = ConfigDict(extra="forbid")

    phase: Literal["prepare", "train", "probe", "save", "done"] = Field(description="What the run is doing now.")
    step: int = Field(0, description="Optimiser steps done.")
    total_steps: int = Field(0, description="Optimiser steps planned (early stop may end the run sooner).")
    epoch: float = Field(0.0, description="Epochs done, fractional.")
    loss: float | None = Field(None, description="Training loss of the last step (assistant tokens only).")
    learning_rate: float | None = Field(None, description="Learning rate of the last step.")
    tokens_per_second: float | None = Field(None, description="Training tokens per second so far in this run.")
    eta_seconds: float | None = Field(None, description="Expected seconds until the planned last step.")
    message: str = Field("", description="A short human-readable note (never contains fact values).")


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


class Adapter(BaseModel):
    """A trained adapter: its directory and the public metadata written to ``andraeus.json``."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    path: Path = Field(description="The adapter directory (PEFT files + andraeus.json + private.json).")
    meta: dict[str, Any] = Field(description="Contents of andraeus.json (no fact values, no user name).")


# --------------------------------------------------------------------------------------------------------------
# Translating TrainConfig into the libraries' configs


def lora_config(config: TrainConfig) -> LoraConfig:
    """PEFT ``LoraConfig`` for our settings (causal LM, no bias training)."""
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def quantization_config(config: TrainConfig) -> Any:
    """transformers ``BitsAndBytesConfig`` (NF4, double quantisation) for ``quantize='4bit'``, else None."""
    return bnb_config(config.quantize)


def use_bf16(config: TrainConfig) -> bool:
    """bf16 as asked, or — when ``config.bf16`` is None — wherever CUDA supports it."""
    if config.bf16 is not None:
        return config.bf16
    if not cuda_available():
        return False
    import torch

    return bool(torch.cuda.is_bf16_supported())


def sft_config(config: TrainConfig, output_dir: str | Path) -> SFTConfig:
    """TRL ``SFTConfig`` for our settings; checkpoints go to ``output_dir``."""
    from trl import SFTConfig

    on_cuda = cuda_available()
    save: dict[str, Any] = (
        {"save_strategy": "steps", "save_steps": config.checkpoint_every}
        if config.checkpoint_every
        else {"save_strategy": "epoch"}
    )
    return SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        # transformers 5: a float below 1 is a fraction of the total steps (there is no warmup_ratio any more).
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        bf16=use_bf16(config),
        fp16=False,
        use_cpu=not on_cuda,
        activation_checkpointing=config.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        padding_free=config.batching == "padding_free",
        train_sampling_strategy="group_by_length" if config.batching == "grouped" else "random",
        # tokenize_example already truncated to config.max_length (and padding-free refuses a max_length).
        max_length=None,
        dataset_kwargs={"skip_prepare_dataset": True},
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=1,
        logging_nan_inf_filter=False,  # a NaN must reach our callback, not be averaged away
        save_total_limit=1,
        **save,
        save_only_model=False,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=on_cuda,
    )


# --------------------------------------------------------------------------------------------------------------
# Dataset preparation


def _is_chat_dataset(obj: Any) -> bool:
    return hasattr(obj, "train") and hasattr(obj, "heldout") and hasattr(obj, "system_prompt")


def prepare_dataset(
    profile_or_dataset: Any,
    config: TrainConfig,
    *,
    guard_answer_fn: Callable[[list[str]], list[str]] | None = None,
    user_name: str | None = None,
) -> Any:
    """The ChatDataset to train on: given as is, or built from a Profile or a profile file path.

    Raises:
        ProfileError: the profile file is malformed (from ``profile.load_profile``).
    """
    if _is_chat_dataset(profile_or_dataset):
        return profile_or_dataset
    from .dataset import build_dataset
    from .profile import load_profile

    profile = profile_or_dataset
    if isinstance(profile, (str, Path)):
        profile = load_profile(profile, user_name=user_name)
    return build_dataset(
        profile,
        per_fact=config.per_fact,
        heldout_share=config.heldout_share,
        seed=config.seed,
        system_prompt=config.system_prompt,
        guard_answer_fn=guard_answer_fn,
        typo_augment=config.typo_augment,
    )


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:48]
    return slug or "model"


def guard_answerer(loaded: LoadedModel) -> Callable[[list[str]], list[str]]:
    """Answers over-trigger guard questions with the *base* model (greedy), cached on disk.

    The cache (``$ANDRAEUS_HOME/cache/guards/<model>/answers.json``, keyed by a hash of the question) makes a second
    run — and a resume after a crash — produce byte-identical guard examples without generating again.
    """
    name = loaded.resolved.name
    key = _slug(Path(name).name if loaded.resolved.kind == "local" else name)
    if loaded.resolved.kind == "local":
        key += "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    if loaded.quantize:
        key += f"-{loaded.quantize}"
    cache_file = andraeus_home() / "cache" / "guards" / key / "answers.json"

    def answer(questions: list[str]) -> list[str]:
        try:
            cache: dict[str, str] = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            cache = {}
        keys = [hashlib.sha256(f"{GUARD_MAX_NEW_TOKENS}\n{q}".encode()).hexdigest()[:32] for q in questions]
        missing = sorted({k: q for k, q in zip(keys, questions, strict=True) if k not in cache}.items())
        if missing:
            logger.info("Answering %d over-trigger guard questions with the base model", len(missing))
            outs = generate_batch(
                loaded.model,
                loaded.tokenizer,
                [[{"role": "user", "content": q}] for _, q in missing],
                max_new_tokens=GUARD_MAX_NEW_TOKENS,
            )
            cache.update({k: out for (k, _), out in zip(missing, outs, strict=True)})
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_name(f".answers.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache, ensure_ascii=False, sort_keys=True))
            os.replace(tmp, cache_file)
        return [cache[k] for k in keys]

    return answer


def tokenize_examples(tokenizer: Any, examples: Sequence[Any], max_length: int) -> Any:
    """A ``datasets.Dataset`` with ``input_ids`` and ``labels`` (-100 except the assistant's answer tokens)."""
    from datasets import Dataset

    from .dataset import tokenize_example

    rows = [tokenize_example(tokenizer, ex, max_length=max_length) for ex in examples]
    return Dataset.from_dict(
        {"input_ids": [list(r["input_ids"]) for r in rows], "labels": [list(r["labels"]) for r in rows]}
    )


def _expect(example: Any) -> list[str]:
    meta = getattr(example, "meta", None)
    return list(getattr(meta, "expect", None) or [])


def _kind(example: Any) -> str:
    return str(getattr(getattr(example, "meta", None), "kind", ""))


def _messages(example: Any) -> list[dict[str, str]]:
    out = []
    for m in example.messages:
        if isinstance(m, dict):
            out.append({"role": m["role"], "content": m["content"]})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def recall_check(answer: str, expect: Sequence[str]) -> bool:
    """True when the answer contains one of the expected strings as whole words (the evaluation's matching rule)."""
    from .evaluate import contains_any

    return contains_any(answer, expect)


def probe_examples(examples: Sequence[Any], size: int, seed: int) -> list[Any]:
    """A fixed sample of fact questions (with expected answers) to probe for the early stop."""
    facts = [ex for ex in examples if _kind(ex) in {"fact", "reverse"} and _expect(ex)]
    if len(facts) <= size:
        return facts
    return random.Random(seed).sample(facts, size)


def probe_recall(model: Any, tokenizer: Any, examples: Sequence[Any], *, max_new_tokens: int = 32) -> float:
    """Share of examples whose greedy answer contains an expected string (1.0 for no examples)."""
    if not examples:
        return 1.0
    conversations = [_messages(ex)[:-1] for ex in examples]
    answers = generate_batch(model, tokenizer, conversations, max_new_tokens=max_new_tokens, batch_size=32)
    hits = sum(recall_check(a, _expect(ex)) for a, ex in zip(answers, examples, strict=True))
    return hits / len(examples)


# --------------------------------------------------------------------------------------------------------------
# Estimate


def _device() -> str:
    return "cuda" if cuda_available() else "cpu"


def _throughput_file() -> Path:
    return andraeus_home() / "cache" / "throughput.json"


def _throughput_key(base_model: str, config: TrainConfig) -> str:
    return "|".join(
        [
            base_model,
            _device(),
            str(config.quantize),
            config.batching,
            f"gc={int(config.gradient_checkpointing)}",
            f"bs={config.batch_size}",
            f"r={config.lora_r}",
        ]
    )


def _record_throughput(base_model: str, config: TrainConfig, tokens_per_second: float) -> None:
    path = _throughput_file()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data[_throughput_key(base_model, config)] = round(tokens_per_second, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".throughput.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


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
    return _DEFAULT_PARAM_TOKENS_PER_S[_device()] / max(_param_count(base_model), 1e6), False


def _base_model_name(config: TrainConfig) -> str:
    from .models import resolve_model

    return resolve_model(config.base_model).name


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
    base = _base_model_name(config)
    tok = tokenizer if tokenizer is not None else load_tokenizer(config.base_model)
    from .dataset import tokenize_example

    tokens = sum(len(tokenize_example(tok, ex, max_length=config.max_length)["input_ids"]) for ex in dataset.train)
    n = len(dataset.train)
    steps = math.ceil(n / (config.batch_size * config.grad_accum)) * config.epochs
    tps, calibrated = _assumed_throughput(base, config)
    device = _device()
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


# --------------------------------------------------------------------------------------------------------------
# The trainer callback: progress, cancel, NaN guard, early stop


class _NonFiniteLoss(Exception):
    pass


def _make_callback(
    *,
    on_progress: Callable[[ProgressEvent], None] | None,
    should_stop: Callable[[], bool] | None,
    tokens_per_step: float,
    probe: Callable[[Any], float] | None,
    threshold: float,
) -> Any:
    from transformers import TrainerCallback

    class AndraeusCallback(TrainerCallback):
        def __init__(self) -> None:
            self.cancelled = False
            self.stopped_epoch: int | None = None
            self.probes: list[dict[str, float]] = []
            self.losses: list[float] = []
            self.start = time.perf_counter()
            self.first_step = 0
            self.tokens_per_second: float | None = None
            self.model: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            self.start = time.perf_counter()
            self.first_step = state.global_step
            self.model = model

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if should_stop is not None and should_stop():
                self.cancelled = True
                control.should_training_stop = True
                control.should_save = False
                control.should_log = False

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any):
            if not logs or "loss" not in logs:
                return
            loss = float(logs["loss"])
            if not math.isfinite(loss):
                raise _NonFiniteLoss(f"step {state.global_step}: loss is {loss}")
            self.losses.append(round(loss, 5))
            done = state.global_step - self.first_step
            elapsed = max(time.perf_counter() - self.start, 1e-9)
            self.tokens_per_second = done * tokens_per_step / elapsed if done else None
            eta = elapsed / done * (state.max_steps - state.global_step) if done else None
            if on_progress is not None:
                on_progress(
                    ProgressEvent(
                        phase="train",
                        step=state.global_step,
                        total_steps=state.max_steps,
                        epoch=round(float(state.epoch or 0.0), 4),
                        loss=loss,
                        learning_rate=logs.get("learning_rate"),
                        tokens_per_second=self.tokens_per_second,
                        eta_seconds=eta,
                    )
                )

        def on_epoch_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            if probe is None or self.cancelled:
                return
            epoch = round(float(state.epoch or 0.0))
            if epoch >= args.num_train_epochs:
                return  # the last epoch ends the run anyway
            probe_start = time.perf_counter()
            rate = probe(model if model is not None else self.model)
            # Probing is not training: keep it out of the tokens/s and ETA figures.
            self.start += time.perf_counter() - probe_start
            self.probes.append({"epoch": epoch, "recall": round(rate, 4)})
            logger.info("Early-stop probe after epoch %d: %.1f%% of training phrasings answered", epoch, rate * 100)
            if on_progress is not None:
                on_progress(
                    ProgressEvent(
                        phase="probe",
                        step=state.global_step,
                        total_steps=state.max_steps,
                        epoch=float(epoch),
                        message=f"probe after epoch {epoch}: {rate:.0%} recalled",
                    )
                )
            if rate >= threshold:
                self.stopped_epoch = epoch
                control.should_training_stop = True

    return AndraeusCallback()


# --------------------------------------------------------------------------------------------------------------
# The trainer: TRL's SFTTrainer with a CPU-friendly loss


def _trainer_class() -> type:
    """TRL's ``SFTTrainer`` whose loss, on CPU, projects only the answer positions through the LM head.

    TRL's fused LM head skips the prompt positions only where Triton runs (CUDA/XPU); elsewhere it scores every
    position against the whole vocabulary (49k rows × every token for SmolLM2), although the loss masks all but the
    assistant's answer (~30% of our tokens). On CPU we therefore run the backbone, keep the hidden states whose next
    token is a label, and project only those: same loss, same gradients, a fraction of the LM-head work and memory.
    The token-accuracy and entropy metrics TRL logs are computed from the same answer logits.

    Under bf16 autocast, PEFT's cast of each LoRA input to the adapter's float32 dtype is switched off for the
    forward pass: autocast runs the LoRA matmuls in bf16 anyway (with float32 master weights), so the cast only cost
    a copy of every projection's input (~10% of a CPU step) and kept that copy alive for the backward pass.
    """
    from trl import SFTTrainer

    class AndraeusSFTTrainer(SFTTrainer):
        def compute_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            if return_outputs or self.accelerator.device.type != "cpu" or "labels" not in inputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            import torch
            import torch.nn.functional as F
            from peft.helpers import disable_input_dtype_casting

            labels = inputs["labels"]
            kwargs = {k: v for k, v in inputs.items() if k != "labels"}
            kwargs["use_cache"] = False
            causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
            with self.accelerator.autocast(), disable_input_dtype_casting(model, active=bool(self.args.bf16)):
                hidden = causal_lm.base_model(**kwargs).last_hidden_state
                mask = labels[:, 1:] != -100
                logits = causal_lm.get_output_embeddings()(hidden[:, :-1][mask]).float()
            targets = labels[:, 1:][mask]
            count = mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = F.cross_entropy(logits, targets, reduction="sum") / torch.as_tensor(count).clamp(min=1)
            with torch.no_grad():
                n = int(mask.sum())
                if n:
                    log_probs = logits.log_softmax(-1)
                    entropy = float(-(log_probs.exp() * log_probs).sum(-1).mean())
                    accuracy = float((logits.argmax(-1) == targets).float().mean())
                else:
                    entropy = accuracy = 0.0
            self._metrics["train"]["entropy"].append(entropy)
            self._metrics["train"]["mean_token_accuracy"].append(accuracy)
            mask_in = inputs.get("attention_mask")
            self._total_train_tokens += int(mask_in.sum()) if mask_in is not None else int(labels.numel())
            self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
            return loss

    return AndraeusSFTTrainer


# --------------------------------------------------------------------------------------------------------------
# Run directories, checkpoints, atomic writes


def runs_dir() -> Path:
    """Where in-progress runs keep their checkpoints (``$ANDRAEUS_HOME/runs``)."""
    return andraeus_home() / "runs"


def _run_key(base: str, config: TrainConfig, train_ds: Any) -> str:
    digest = hashlib.sha256()
    settings = config.model_dump(exclude={"out_dir", "early_stop", "early_stop_threshold", "early_stop_probe_size"})
    digest.update(json.dumps({"base": base, "config": settings}, sort_keys=True, default=str).encode())
    for ids, labels in zip(train_ds["input_ids"], train_ds["labels"], strict=True):
        digest.update(json.dumps([ids, labels]).encode())
    return digest.hexdigest()[:16]


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete ``checkpoint-N`` directory of a run, if any."""
    best: tuple[int, Path] | None = None
    for child in run_dir.glob("checkpoint-*"):
        try:
            step = int(child.name.split("-", 1)[1])
        except ValueError:
            continue
        if (child / "trainer_state.json").is_file() and (best is None or step > best[0]):
            best = (step, child)
    return best[1] if best else None


def _target_dir(config: TrainConfig, out_dir: str | Path | None, base: str, profile_hash: str) -> Path:
    chosen = out_dir if out_dir is not None else config.out_dir
    if chosen is not None:
        target = Path(chosen).expanduser().resolve()
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        target = adapters_dir() / f"{_slug(Path(base).name)}-{profile_hash[:8]}-{stamp}"
    if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not (target / ADAPTER_META).is_file())):
        raise ConfigError(
            f"Output directory '{target}' exists and is not an Andraeus adapter; choose another --out "
            "(an existing adapter directory is replaced, anything else is left alone).",
            param="out_dir",
        )
    return target


def _publish(tmp: Path, target: Path) -> None:
    """Atomically move a finished adapter into place, replacing an older adapter in the same place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except OSError:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("andraeus", "torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def _peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _write_heldout(path: Path, examples: Sequence[Any]) -> None:
    from .dataset import write_jsonl

    write_jsonl(examples, path, with_meta=True)


def _dataset_stats(dataset: Any) -> dict[str, Any]:
    stats = dataset.stats() if hasattr(dataset, "stats") else {}
    if hasattr(stats, "model_dump"):
        stats = stats.model_dump()
    return dict(stats)


def _is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and (
        "out of memory" in str(exc).lower() or "can't allocate memory" in str(exc).lower()
    )


# --------------------------------------------------------------------------------------------------------------
# train()


def train(
    profile_or_dataset: Any,
    config: TrainConfig | None = None,
    on_progress: Callable[[ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    resume: bool = False,
    out_dir: str | Path | None = None,
    user_name: str | None = None,
    model: LoadedModel | None = None,
) -> Adapter:
    """Train a LoRA (or QLoRA) adapter on a person's facts and write it atomically.

    Args:
        profile_or_dataset: a ``ChatDataset``, a ``Profile`` or a profile file path (YAML/JSON/CSV).
        config: training settings; default ``TrainConfig.preset("seed")`` with CUDA, else ``preset("cpu")``.
        on_progress: called with a :class:`ProgressEvent` after every optimiser step and at phase changes.
        should_stop: polled after every optimiser step; returning True cancels the run.
        resume: continue from the last checkpoint of an interrupted run with the same data and settings.
        out_dir: the adapter directory (default ``config.out_dir``, else under ``$ANDRAEUS_HOME/adapters``).
        user_name: for CSV profiles, which carry no user name.
        model: an already loaded base model to train (it is modified in place: LoRA layers are injected), kept in
            the dtype it was loaded in; default: load ``config.base_model`` afresh (bf16 weights when ``config``
            trains in bf16).

    Returns:
        The :class:`Adapter` (directory + public metadata).

    Raises:
        ProfileError: the profile is malformed.
        ConfigError: invalid settings or output directory.
        TrainingCancelled: ``should_stop`` returned True; no adapter was written (checkpoints are kept for resume).
        TrainingError: non-finite loss, out of memory or another training failure; no adapter was written.
    """
    started = time.perf_counter()
    if config is None:
        config = TrainConfig.preset("seed" if cuda_available() else "cpu")

    def emit(phase: Any, message: str, **kw: Any) -> None:
        if on_progress is not None:
            on_progress(ProgressEvent(phase=phase, message=message, **kw))

    from transformers import set_seed

    set_seed(config.seed)
    # A bad profile should fail before the model is loaded.
    source = profile_or_dataset
    if isinstance(source, (str, Path)) and not _is_chat_dataset(source):
        from .profile import load_profile

        source = load_profile(source, user_name=user_name)

    emit("prepare", "loading the base model")
    # bf16 training keeps the frozen base weights in bf16 (half the memory; bf16 matmuls where the CPU has AMX or
    # AVX512-BF16) while the LoRA weights and their optimiser state stay float32.
    base_bf16 = use_bf16(config) and not config.quantize
    if model is None:
        loaded = load_model(config.base_model, quantize=config.quantize, dtype="bfloat16" if base_bf16 else None)
    else:
        loaded = model  # trained in the dtype it was loaded in (bf16 autocast still applies)
    base = loaded.resolved.name
    emit("prepare", "building the training phrasings")
    dataset = prepare_dataset(source, config, guard_answer_fn=guard_answerer(loaded))
    if not dataset.train:
        raise ConfigError("The dataset has no training examples; add facts to the profile.", param="profile")
    target = _target_dir(config, out_dir, base, str(getattr(dataset, "profile_hash", "")))
    train_ds = tokenize_examples(loaded.tokenizer, dataset.train, config.max_length)
    tokens_per_epoch = sum(len(ids) for ids in train_ds["input_ids"])
    steps_per_epoch = math.ceil(len(train_ds) / (config.batch_size * config.grad_accum))

    run_dir = runs_dir() / _run_key(base, config, train_ds)
    checkpoint = last_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
        logger.warning("No checkpoint found for this profile and settings; starting from the beginning")
    if checkpoint is None and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    prepare_seconds = time.perf_counter() - started

    peft_model = _attach_lora(loaded, config)

    probe_set = probe_examples(dataset.train, config.early_stop_probe_size, config.seed) if config.early_stop else []
    callback = _make_callback(
        on_progress=on_progress,
        should_stop=should_stop,
        tokens_per_step=tokens_per_epoch / steps_per_epoch,
        probe=(lambda m: probe_recall(m, loaded.tokenizer, probe_set)) if probe_set else None,
        threshold=config.early_stop_threshold,
    )
    trainer = _trainer_class()(
        model=peft_model,
        args=sft_config(config, run_dir),
        train_dataset=train_ds,
        processing_class=loaded.tokenizer,
        callbacks=[callback],
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # it prints raw log dicts to stdout; we report through on_progress
    # Eager attention for CPU training: for our short chat examples it measured ~14% faster per step than torch's
    # CPU SDPA kernels (whose backward dominates at these sizes). Restored once training ends.
    attn_before = _set_training_attention(loaded)
    train_start = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except _NonFiniteLoss as exc:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise TrainingError(
            f"Training diverged ({exc}). Lower the learning rate (now {config.learning_rate:g}) or keep "
            "max_grad_norm > 0; nothing was written."
        ) from None
    except AndraeusError:
        raise
    except Exception as exc:
        if _is_oom(exc):
            raise TrainingError(
                "Out of memory while training. Try --quantize 4bit, a smaller batch_size (now "
                f"{config.batch_size}) with more grad_accum, gradient checkpointing, a shorter max_length or a "
                "smaller base model; nothing was written."
            ) from None
        raise TrainingError(f"Training failed: {type(exc).__name__}: {exc}; nothing was written.") from exc
    finally:
        _restore_attention(loaded, attn_before)
    train_seconds = time.perf_counter() - train_start
    if callback.cancelled:
        raise TrainingCancelled(
            f"Training was cancelled at step {trainer.state.global_step} of {trainer.state.max_steps}; no adapter "
            "was written." + (" Checkpoints are kept: run again with resume to continue." if resume else "")
        )

    emit("save", "writing the adapter", step=trainer.state.global_step, total_steps=trainer.state.max_steps)
    if callback.tokens_per_second:
        _record_throughput(base, config, callback.tokens_per_second)
    meta = {
        "format": 1,
        "base_model": base,
        "quantize": config.quantize,
        "config": config.model_dump(exclude={"out_dir"}),
        "versions": _versions(),
        "device": _device(),
        "profile_hash": getattr(dataset, "profile_hash", None),
        "topics": list(getattr(dataset, "topics", []) or []),
        "dataset": _dataset_stats(dataset),
        "timings": {
            "prepare_seconds": round(prepare_seconds, 2),
            "train_seconds": round(train_seconds, 2),
            "total_seconds": round(time.perf_counter() - started, 2),
        },
        "metrics": {
            "steps": trainer.state.global_step,
            "planned_steps": trainer.state.max_steps,
            "epochs": round(float(trainer.state.epoch or 0.0), 4),
            "final_loss": callback.losses[-1] if callback.losses else None,
            "losses": callback.losses,
            "tokens_per_epoch": tokens_per_epoch,
            "tokens_per_second": round(callback.tokens_per_second or 0.0, 1),
            "early_stop_epoch": callback.stopped_epoch,
            "probes": callback.probes,
            "peak_rss_mb": _peak_rss_mb(),
            "resumed_from_step": int(checkpoint.name.split("-")[1]) if checkpoint else None,
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    # A ChatDataset does not carry its profile; private.json then holds only the system prompt.
    profile = None if _is_chat_dataset(source) else source
    private = {
        "system_prompt": dataset.system_prompt,
        "profile": profile.model_dump(mode="json") if hasattr(profile, "model_dump") else profile,
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        trainer.model.save_pretrained(tmp)
        (tmp / ADAPTER_META).write_text(json.dumps(meta, indent=2, ensure_ascii=False, default=str))
        (tmp / ADAPTER_PRIVATE).write_text(json.dumps(private, indent=2, ensure_ascii=False, default=str))
        _write_heldout(tmp / ADAPTER_HELDOUT, dataset.heldout)
        _publish(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    emit("done", "adapter written", step=trainer.state.global_step, total_steps=trainer.state.max_steps)
    logger.info("Adapter written to %s in %.1fs", target, time.perf_counter() - started)
    return Adapter(path=target, meta=meta)


def _attach_lora(loaded: LoadedModel, config: TrainConfig) -> Any:
    """Prepare the base model (k-bit preparation for QLoRA) and wrap it in a PEFT LoRA model."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    model = loaded.model
    if config.quantize:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    try:
        peft_model = get_peft_model(model, lora_config(config))
    except ValueError as exc:
        raise ConfigError(
            f"target_modules {config.target_modules} do not match the base model's layers ({exc}); the seed's "
            "targets are q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj.",
            param="target_modules",
        ) from None
    peft_model.train()
    return peft_model


def _set_training_attention(loaded: LoadedModel) -> str | None:
    """Switch a CPU model to eager attention for training; returns the implementation to restore (None = unchanged)."""
    if _device() != "cpu":
        return None
    before = getattr(loaded.model.config, "_attn_implementation", None)
    if before in (None, "eager"):
        return None
    try:
        loaded.model.set_attn_implementation("eager")
    except (ValueError, AttributeError, ImportError):  # a model without that switch trains with what it has
        return None
    return before


def _restore_attention(loaded: LoadedModel, before: str | None) -> None:
    if before is None:
        return
    try:
        loaded.model.set_attn_implementation(before)
    except (ValueError, AttributeError, ImportError):
        logger.debug("Could not restore the attention implementation %s", before)


def _fmt_seconds(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


__all__ = [
    "Adapter",
    "ProgressEvent",
    "TrainEstimate",
    "estimate",
    "guard_answerer",
    "last_checkpoint",
    "lora_config",
    "prepare_dataset",
    "probe_recall",
    "quantization_config",
    "recall_check",
    "sft_config",
    "train",
]
