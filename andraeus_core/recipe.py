"""The training recipe: our TrainConfig translated into what PEFT, transformers and TRL take, and TRL's trainer with
our callback and CPU-friendly loss.

Our :class:`~andraeus_core.config.TrainConfig` is *translated* into PEFT's ``LoraConfig``, transformers'
``BitsAndBytesConfig`` and TRL's ``SFTConfig`` by small functions; TRL does the training. The loss covers assistant
tokens only: examples are pre-tokenised by :func:`tokenize_examples` whose ``labels`` are -100 everywhere but the
assistant's answer, and TRL keeps a ``labels`` column as it is.

The recipe also owns the run directory: it tells TRL what to checkpoint and where (:func:`sft_config`), so it is
also what finds those checkpoints again to resume a run (:func:`prepare_run_dir`), and what pauses a run at a
checkpoint when its time budget runs out (the callback's ``deadline``), so that a later call resumes it: training in
slices, one per ZeroGPU call (see :mod:`.slices`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .config import TrainConfig, andraeus_home
from .dataset import build_dataset, tokenize_example
from .errors import AndraeusError, ConfigError, TrainingError
from .models import LoadedModel, bnb_config, cuda_available, device_type
from .profile import load_profile

if TYPE_CHECKING:
    from peft import LoraConfig
    from trl import SFTConfig

logger = logging.getLogger(__name__)


class ProgressEvent(BaseModel):
    """One progress report, sent after every optimiser step (and at phase changes)."""

    model_config = ConfigDict(extra="forbid")

    phase: Literal["prepare", "train", "probe", "save", "done"] = Field(description="What the run is doing now.")
    step: int = Field(0, description="Optimiser steps done (while preparing: preparation steps done).")
    total_steps: int = Field(
        0, description="Optimiser steps planned; early stop may end sooner (while preparing: preparation steps)."
    )
    epoch: float = Field(0.0, description="Epochs done, fractional.")
    loss: float | None = Field(None, description="Training loss of the last step (assistant tokens only).")
    learning_rate: float | None = Field(None, description="Learning rate of the last step.")
    tokens_per_second: float | None = Field(None, description="Training tokens per second so far in this run.")
    eta_seconds: float | None = Field(None, description="Expected seconds until the planned last step.")
    message: str = Field("", description="A short human-readable note (never contains fact values).")


def default_preset() -> str:
    """The training preset for this machine: ``seed`` with CUDA, ``cpu`` otherwise."""
    return "seed" if cuda_available() else "cpu"


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
# The data: a ChatDataset from the TrainConfig, tokenised for TRL


def is_chat_dataset(obj: Any) -> bool:
    """True for a ChatDataset (or anything shaped like one: ``train``, ``heldout``, ``system_prompt``)."""
    return hasattr(obj, "train") and hasattr(obj, "heldout") and hasattr(obj, "system_prompt")


def load_source(profile_or_dataset: Any, *, user_name: str | None = None) -> Any:
    """A profile file path loaded as a Profile; a Profile or a ChatDataset as it is.

    Raises:
        ProfileError: the profile file is malformed.
    """
    if isinstance(profile_or_dataset, (str, Path)) and not is_chat_dataset(profile_or_dataset):
        return load_profile(profile_or_dataset, user_name=user_name)
    return profile_or_dataset


def prepare_dataset(
    profile_or_dataset: Any,
    config: TrainConfig,
    *,
    guard_answer_fn: Callable[[list[str]], list[str]] | None = None,
    user_name: str | None = None,
    exclude_questions: Sequence[str] = (),
) -> Any:
    """The ChatDataset to train on: given as is, or built from a Profile or a profile file path.

    Raises:
        ProfileError: the profile file is malformed (from ``profile.load_profile``).
    """
    if is_chat_dataset(profile_or_dataset):
        return profile_or_dataset
    return build_dataset(
        load_source(profile_or_dataset, user_name=user_name),
        per_fact=config.per_fact,
        heldout_share=config.heldout_share,
        seed=config.seed,
        system_prompt=config.system_prompt,
        guard_answer_fn=guard_answer_fn,
        typo_augment=config.typo_augment,
        exclude_questions=exclude_questions,
    )


def tokenize_examples(tokenizer: Any, examples: Any, max_length: int) -> Any:
    """A ``datasets.Dataset`` with ``input_ids`` and ``labels`` (-100 except the assistant's answer tokens)."""
    from datasets import Dataset

    rows = [tokenize_example(tokenizer, ex, max_length=max_length) for ex in examples]
    return Dataset.from_dict(
        {"input_ids": [list(r["input_ids"]) for r in rows], "labels": [list(r["labels"]) for r in rows]}
    )


# --------------------------------------------------------------------------------------------------------------
# Run directories and checkpoints


def runs_dir() -> Path:
    """Where in-progress runs keep their checkpoints (``$ANDRAEUS_HOME/runs``)."""
    return andraeus_home() / "runs"


def run_key(base: str, config: TrainConfig, train_ds: Any) -> str:
    """A run's identity: the base model, the settings that shape the weights, and every tokenised example."""
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


def prepare_run_dir(
    base: str, config: TrainConfig, train_ds: Any, *, resume: bool, root: Path | None = None
) -> tuple[Path, Path | None]:
    """The run's checkpoint directory (under ``root``, default :func:`runs_dir`), and the checkpoint to resume from
    (None: start afresh in an empty one)."""
    run_dir = (root if root is not None else runs_dir()) / run_key(base, config, train_ds)
    checkpoint = last_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
        logger.warning("No checkpoint found for this profile and settings; starting from the beginning")
    if checkpoint is None and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, checkpoint


# --------------------------------------------------------------------------------------------------------------
# The model: LoRA attached, attention switched for CPU training


def attach_lora(loaded: LoadedModel, config: TrainConfig, init_from: str | Path | None = None) -> Any:
    """Prepare the base model (k-bit preparation for QLoRA) and wrap it in a trainable PEFT LoRA model.

    Args:
        loaded: the base model.
        config: the settings (LoRA shape from here unless ``init_from``).
        init_from: an adapter directory to continue training (its LoRA shape and weights); None: a fresh LoRA.

    Raises:
        ConfigError: ``target_modules`` match none of the base model's layers.
        TrainingError: the adapter in ``init_from`` does not fit the base model.
    """
    from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training

    model = loaded.model
    if config.quantize:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    if init_from is not None:
        try:
            peft_model = PeftModel.from_pretrained(model, str(init_from), is_trainable=True)
        except Exception as exc:  # noqa: BLE001 - PEFT raises many kinds; the user needs one actionable message
            raise TrainingError(
                f"Could not continue the adapter in '{init_from}' on base model '{loaded.name}': {exc}"
            ) from None
        peft_model.train()
        return peft_model
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


@contextmanager
def training_attention(loaded: LoadedModel) -> Iterator[None]:
    """Eager attention while a CPU model trains, the model's own implementation again afterwards.

    For our short chat examples eager attention measured ~14% faster per step than torch's CPU SDPA kernels (whose
    backward dominates at these sizes); generation afterwards is faster with SDPA.
    """
    before = None
    if device_type() == "cpu":
        current = getattr(loaded.model.config, "_attn_implementation", None)
        if current not in (None, "eager"):
            try:
                loaded.model.set_attn_implementation("eager")
                before = current
            except (ValueError, AttributeError, ImportError):  # a model without that switch trains with what it has
                before = None
    try:
        yield
    finally:
        if before is not None:
            try:
                loaded.model.set_attn_implementation(before)
            except (ValueError, AttributeError, ImportError):
                logger.debug("Could not restore the attention implementation %s", before)


# --------------------------------------------------------------------------------------------------------------
# The trainer callback: progress, cancel, NaN guard, early stop


class NonFiniteLoss(Exception):
    """Raised by the callback when a step's loss is NaN or infinite (turned into a TrainingError)."""


# The key under which an early-stop probe is recorded in TRL's log history: the history is saved with every checkpoint,
# so a resumed run (the next slice) knows the probes and losses of the steps before it.
PROBE_LOG_KEY = "andraeus_probe_recall"


def pause_reserve_s(time_budget_s: float) -> float:
    """Seconds kept free at the end of a time budget for writing the checkpoint (or the adapter) and returning.

    5%: 14.5 s of a 290 s ZeroGPU call, enough to write a 7B model's LoRA weights and optimiser state (~2 GB); a
    tiny test budget keeps a tiny reserve.
    """
    return 0.05 * time_budget_s


def make_callback(
    *,
    on_progress: Callable[[ProgressEvent], None] | None,
    should_stop: Callable[[], bool] | None,
    tokens_per_step: float,
    probe: Callable[[Any], float] | None,
    threshold: float,
    deadline: float | None = None,
    reserve_s: float = 0.0,
) -> Any:
    """A transformers ``TrainerCallback`` that reports progress, honours ``should_stop``, refuses a non-finite loss
    and stops early once ``probe(model)`` reaches ``threshold`` after an epoch.

    With a ``deadline`` (a ``time.perf_counter()`` value) it pauses the run once the next step would end later than
    ``deadline - reserve_s``: it saves a checkpoint at the step just done, stops, and sets ``paused``; resuming from
    that checkpoint continues the same run (same data order, optimiser and scheduler state, RNG).

    The returned callback records ``cancelled``, ``paused``, ``stopped_epoch``, ``probes``, ``losses`` and
    ``tokens_per_second`` for the adapter's metadata; on a resumed run ``losses`` and ``probes`` start with those of
    the steps before the checkpoint (from the trainer's saved log history).
    """
    from transformers import TrainerCallback

    class AndraeusCallback(TrainerCallback):
        def __init__(self) -> None:
            self.cancelled = False
            self.paused = False
            self.stopped_epoch: int | None = None
            self.probes: list[dict[str, float]] = []
            self.losses: list[float] = []
            self.start = time.perf_counter()
            self.first_step = 0
            self.tokens_per_second: float | None = None
            self.model: Any = None
            self.step_end = self.start
            self.probe_seconds = 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            self.start = self.step_end = time.perf_counter()
            self.first_step = state.global_step
            self.model = model
            # Resumed: the checkpoint's log history holds the earlier steps' losses and probes (empty on a fresh run).
            self.losses = [round(float(h["loss"]), 5) for h in state.log_history if "loss" in h]
            self.probes = [
                {"epoch": round(float(h["epoch"])), "recall": float(h[PROBE_LOG_KEY])}
                for h in state.log_history
                if PROBE_LOG_KEY in h
            ]

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            now = time.perf_counter()
            last_step, self.step_end = now - self.step_end, now
            if should_stop is not None and should_stop():
                self.cancelled = True
                control.should_training_stop = True
                control.should_save = False
                control.should_log = False
                return
            if deadline is None or state.global_step >= state.max_steps:
                return
            # The next step takes about as long as the slower of the last one and the average; an epoch's end adds
            # the early-stop probe (as long as the last probe took).
            average = (now - self.start) / max(1, state.global_step - self.first_step)
            upcoming = max(last_step, average)
            if probe is not None and abs(float(state.epoch or 0.0) - round(float(state.epoch or 0.0))) < 1e-6:
                upcoming += self.probe_seconds
            if now + upcoming + reserve_s > deadline:
                self.paused = True
                control.should_save = True  # the checkpoint the next call resumes from
                control.should_training_stop = True

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any):
            if not logs or "loss" not in logs:
                return
            loss = float(logs["loss"])
            if not math.isfinite(loss):
                raise NonFiniteLoss(f"step {state.global_step}: loss is {loss}")
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
            if self.paused:
                control.should_save = False  # saved at the step it paused after; a second copy would cost time
                return
            if probe is None or self.cancelled:
                return
            epoch = round(float(state.epoch or 0.0))
            if epoch >= args.num_train_epochs:
                return  # the last epoch ends the run anyway
            probe_start = time.perf_counter()
            rate = probe(model if model is not None else self.model)
            # Probing is not training: keep it out of the tokens/s and ETA figures and the next step's duration.
            self.probe_seconds = time.perf_counter() - probe_start
            self.start += self.probe_seconds
            self.step_end += self.probe_seconds
            self.probes.append({"epoch": epoch, "recall": round(rate, 4), "seconds": round(self.probe_seconds, 2)})
            state.log_history.append({"epoch": float(epoch), "step": state.global_step, PROBE_LOG_KEY: round(rate, 4)})
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
            elif deadline is not None:
                # The probe took time the step-end check may not have known of: pause here if the next step no
                # longer fits (the trainer then saves the checkpoint, with this probe in its log history).
                now = time.perf_counter()
                average = (now - self.start) / max(1, state.global_step - self.first_step)
                if now + average + reserve_s > deadline:
                    self.paused = True
                    control.should_save = True
                    control.should_training_stop = True

    return AndraeusCallback()


# --------------------------------------------------------------------------------------------------------------
# The trainer: TRL's SFTTrainer with a CPU-friendly loss


def trainer_class() -> type:
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
        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return _epoch_seeded(super()._get_train_sampler(train_dataset), seed)

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


def _epoch_seeded(sampler: Any, seed: int) -> Any:
    """transformers' ``LengthGroupedSampler`` drawing each epoch's order from ``seed + epoch``; other samplers as is.

    The stock sampler shuffles with the global RNG when an epoch starts, so a run resumed in the middle of a later
    epoch (the next training slice) would replay that epoch in another order than the uninterrupted run. The trainer
    calls ``set_epoch`` before each epoch, also on the dataloader that skips the batches a resumed epoch has done.
    (Random batches need nothing: accelerate's seedable sampler already orders each epoch by its seed.)
    """
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    if not isinstance(sampler, LengthGroupedSampler):
        return sampler

    class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
        epoch = 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __iter__(self):
            self.generator = torch.Generator().manual_seed(seed + self.epoch)
            return super().__iter__()

    return EpochSeededLengthGroupedSampler(sampler.batch_size, lengths=sampler.lengths)


def make_trainer(model: Any, config: TrainConfig, run_dir: Path, train_ds: Any, tokenizer: Any, callback: Any) -> Any:
    """The trainer for one run: :func:`trainer_class` with :func:`sft_config`, reporting only through ``callback``."""
    from transformers.trainer_callback import PrinterCallback

    trainer = trainer_class()(
        model=model,
        args=sft_config(config, run_dir),
        train_dataset=train_ds,
        processing_class=tokenizer,
        callbacks=[callback],
    )
    trainer.remove_callback(PrinterCallback)  # it prints raw log dicts to stdout; we report through on_progress
    return trainer


def _is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and (
        "out of memory" in str(exc).lower() or "can't allocate memory" in str(exc).lower()
    )


@contextmanager
def training_errors(config: TrainConfig, run_dir: Path) -> Iterator[None]:
    """Turn what can go wrong inside ``trainer.train()`` into a :class:`TrainingError` the user can act on.

    A diverged run's checkpoints are deleted (resuming would diverge again); other failures keep them for a resume.
    """
    try:
        yield
    except NonFiniteLoss as exc:
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


__all__ = [
    "NonFiniteLoss",
    "PROBE_LOG_KEY",
    "ProgressEvent",
    "attach_lora",
    "default_preset",
    "is_chat_dataset",
    "last_checkpoint",
    "load_source",
    "lora_config",
    "make_callback",
    "make_trainer",
    "pause_reserve_s",
    "prepare_dataset",
    "prepare_run_dir",
    "quantization_config",
    "run_key",
    "runs_dir",
    "sft_config",
    "tokenize_examples",
    "trainer_class",
    "training_attention",
    "training_errors",
    "use_bf16",
]
