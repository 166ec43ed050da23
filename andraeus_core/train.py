"""train(): one LoRA/QLoRA training run, in a fixed order.

Setup: seed → read the profile (a bad one fails before any model loads) → load the base model → build the dataset
(over-trigger guard answers come from the base model before any LoRA is attached) → tokenise → find or make the run's
checkpoint directory → fit the gate (:mod:`.gate`, on the bare base model) → attach LoRA. Train: TRL's
``SFTTrainer`` with our callback (progress, cancel, NaN guard, early stop). Save: the adapter directory, published
atomically. What each step does lives in :mod:`.recipe` (the library configs, trainer and callback), :mod:`.probes`
(guard answers, early-stop probe), :mod:`.gate`, :mod:`.estimate` and :mod:`.adapter`.
"""

from __future__ import annotations

import logging
import math
import resource
import shutil
import time
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from .adapter import Adapter, AdapterMeta, AdapterPrivate, Timings, TrainMetrics
from .config import TrainConfig
from .errors import ConfigError, TrainingCancelled, TrainingPaused
from .estimate import record_throughput
from .gate import calibrated_gate_meta, fit_gate, gate_data
from .models import LoadedModel, cuda_available, device_type, first_load_work, load_model, resolve_model
from .probes import guard_answerer, probe_examples, probe_recall
from .recipe import (
    ProgressEvent,
    attach_lora,
    default_preset,
    is_chat_dataset,
    load_source,
    make_callback,
    make_trainer,
    pause_reserve_s,
    prepare_dataset,
    prepare_run_dir,
    tokenize_examples,
    training_attention,
    training_errors,
    use_bf16,
)
from .update import (
    REPLAY_SHARE,
    ProfileDiff,
    build_update_dataset,
    check_parent,
    diff_profiles,
    lineage_fields,
    parent_heldout_examples,
    parent_profile,
)

logger = logging.getLogger(__name__)


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
    runs_root: str | Path | None = None,
    time_budget_s: float | None = None,
    parent: Adapter | str | Path | None = None,
    full: bool = False,
    replay_share: float = REPLAY_SHARE,
    exclude_questions: Sequence[str] = (),
) -> Adapter:
    """Train a LoRA (or QLoRA) adapter on a person's facts and write it atomically.

    Args:
        profile_or_dataset: a ``ChatDataset``, a ``Profile`` or a profile file path (YAML/JSON/CSV).
        config: training settings; default ``TrainConfig.preset("seed")`` with CUDA, else ``preset("cpu")`` with
            the rank for the profile's size.
        on_progress: called with a :class:`ProgressEvent` after every optimiser step and at phase changes.
        should_stop: polled after every optimiser step; returning True cancels the run.
        resume: continue from the last checkpoint of an interrupted run with the same data and settings.
        out_dir: the adapter directory (default ``config.out_dir``, else under ``$ANDRAEUS_HOME/adapters``).
        user_name: for CSV profiles, which carry no user name.
        model: an already loaded base model to train (it is modified in place: LoRA layers are injected), kept in
            the dtype it was loaded in; default: load ``config.base_model`` afresh (bf16 weights when ``config``
            trains in bf16).
        runs_root: where the run keeps its checkpoints until the adapter is written (default
            ``$ANDRAEUS_HOME/runs``); the REST service gives each job its own, to remove it when the job ends.
        time_budget_s: seconds this call may take, model loading included (one ZeroGPU call): once the next step
            would not end in time, the run is checkpointed and :class:`TrainingPaused` raised; calling again with
            ``resume=True`` continues it. None: no limit.
        parent: the adapter this one replaces (its facts changed; :mod:`.update`): the new adapter records it as
            its parent (version + 1, the change list, topics only). Unless ``full``, training starts from the
            parent's LoRA weights on the update's dataset (the changed facts, negatives for removed ones and old
            values, a replay sample of the rest); ``config`` should then be :func:`~.update.update_config`'s.
        full: with a parent, retrain from scratch on the whole new profile (the lineage is still recorded).
        replay_share: an update's share of each unchanged fact's training phrasings replayed.
        exclude_questions: questions never to train on (a hand-written evaluation set): a generated phrasing or
            guard question equal to one (case and punctuation aside) moves to the held-out split. Applies when the
            dataset is built here from a profile, an update's included (not to a given ``ChatDataset``).

    Returns:
        The :class:`~andraeus_core.adapter.Adapter` (directory + public metadata).

    Raises:
        ProfileError: the profile is malformed.
        ConfigError: invalid settings or output directory; with a parent, a chat dataset or nothing changed.
        AdapterError: the parent is not usable (no private profile, another base model).
        TrainingCancelled: ``should_stop`` returned True; no adapter was written (checkpoints are kept for resume).
        TrainingPaused: ``time_budget_s`` ran out; a checkpoint was written, no adapter yet.
        TrainingError: non-finite loss, out of memory or another training failure; no adapter was written.
    """
    from transformers import set_seed

    started = time.perf_counter()

    def emit(phase: Any, message: str, **kw: Any) -> None:
        if on_progress is not None:
            on_progress(ProgressEvent(phase=phase, message=message, **kw))

    # Setup
    source = load_source(profile_or_dataset, user_name=user_name)
    if config is None:
        facts = None if is_chat_dataset(source) else len(source.facts)
        config = TrainConfig.preset(default_preset(), facts=facts)
    set_seed(config.seed)
    if parent is not None:
        parent = parent if isinstance(parent, Adapter) else Adapter.load(parent)
        if is_chat_dataset(source):
            raise ConfigError("An adapter is updated from a profile, not from chat examples.", param="profile")
        check_parent(parent, model.resolved.name if model is not None else resolve_model(config.base_model).name)
        family = getattr(source, "is_family", False) or getattr(parent.private.profile, "is_family", False)
        if family and not full:
            # The update's diff and its negatives match facts by topic alone; in a family "birthday" is three facts.
            raise ConfigError(
                "A family adapter cannot be updated in place yet: retrain it on the whole profile (full=True, "
                "CLI --full); the new adapter still records its parent.",
                param="full",
            )
        # A full retrain needs no diff to train; without the parent's private profile it records no change list.
        has_profile = full and parent.private.profile is not None and not family
        diff = diff_profiles(parent_profile(parent), source) if has_profile or not full else ProfileDiff()
    # Preparing takes a while before the first step (loading, maybe converting or downloading, then the base model's
    # guard answers): numbered sub-steps let a front end show what it is doing.
    first_use = first_load_work(config.base_model) if model is None else None
    fits_gate = config.gate and not is_chat_dataset(source)
    prepare_steps = 4 if fits_gate else 3
    emit(
        "prepare",
        "loading the base model" + (f" ({first_use})" if first_use else ""),
        step=1,
        total_steps=prepare_steps,
    )
    # bf16 training keeps the frozen base weights in bf16 (half the memory; bf16 matmuls where the CPU has AMX or
    # AVX512-BF16) while the LoRA weights and their optimiser state stay float32. A given model keeps its dtype.
    # Without bf16 training a CPU base is float32 whatever chat is set to load (ANDRAEUS_CPU_DTYPE).
    bf16_base = use_bf16(config) and not config.quantize
    loaded = model
    if loaded is None:
        dtype = "bfloat16" if bf16_base else (None if cuda_available() else "float32")
        loaded = load_model(config.base_model, quantize=config.quantize, dtype=dtype)
    base = loaded.resolved.name
    loaded_at = time.perf_counter()
    emit("prepare", "building the phrasings and the base model's guard answers", step=2, total_steps=prepare_steps)
    plan = None
    if parent is not None and not full:
        plan = build_update_dataset(
            parent,
            source,
            config,
            guard_answer_fn=guard_answerer(loaded),
            replay_share=replay_share,
            exclude_questions=exclude_questions,
        )
        dataset = plan.dataset
    else:
        # A full retrain of a parent keeps the parent's held-out questions out of training too.
        held = [e.question for e in parent_heldout_examples(parent)] if parent is not None else []
        held += list(exclude_questions)
        dataset = prepare_dataset(source, config, guard_answer_fn=guard_answerer(loaded), exclude_questions=held)
    if not dataset.train:
        raise ConfigError("The dataset has no training examples; add facts to the profile.", param="profile")
    target = out_dir if out_dir is not None else config.out_dir
    target = Adapter.check_target(target or Adapter.default_path(base, str(getattr(dataset, "profile_hash", ""))))
    train_ds = tokenize_examples(loaded.tokenizer, dataset.train, config.max_length)
    tokens_per_epoch = sum(len(ids) for ids in train_ds["input_ids"])
    steps_per_epoch = math.ceil(len(train_ds) / (config.batch_size * config.grad_accum))
    run_dir, checkpoint = prepare_run_dir(
        base, config, train_ds, resume=resume, root=Path(runs_root) if runs_root is not None else None
    )
    resumed = f"resuming from step {checkpoint.name.split('-')[1]}" if checkpoint else "a new run"
    emit("prepare", f"{len(train_ds)} training examples tokenised; {resumed}", step=3, total_steps=prepare_steps)
    data_done = time.perf_counter()
    gate = None
    if fits_gate:
        # On the bare base model, before LoRA is attached: the gate reads questions through the frozen base. (A
        # resumed run fits it again, the same way: it is small, and a slice that pauses never writes it.)
        emit("prepare", "fitting the gate", step=4, total_steps=prepare_steps)
        data = gate_data(
            source,
            plan.gate_dataset if plan is not None else dataset,
            seed=config.seed,
            exclude_questions=exclude_questions,
        )
        gate = fit_gate(loaded.model, loaded.tokenizer, data, source, seed=config.seed)
    prepare_seconds = time.perf_counter() - started
    # Seeded again: loading may have drawn random numbers (building or converting the model on first use), and the
    # LoRA weights' initialisation should not depend on whether it did.
    set_seed(config.seed)
    peft_model = attach_lora(loaded, config, init_from=parent.path if plan is not None and parent else None)
    probe_set = probe_examples(dataset.train, config.early_stop_probe_size, config.seed) if config.early_stop else []
    callback = make_callback(
        on_progress=on_progress,
        should_stop=should_stop,
        tokens_per_step=tokens_per_epoch / steps_per_epoch,
        probe=(lambda m: probe_recall(m, loaded.tokenizer, probe_set)) if probe_set else None,
        threshold=config.early_stop_threshold,
        deadline=started + time_budget_s if time_budget_s else None,
        reserve_s=pause_reserve_s(time_budget_s) if time_budget_s else 0.0,
    )
    trainer = make_trainer(peft_model, config, run_dir, train_ds, loaded.tokenizer, callback)

    # Train
    with training_attention(loaded):
        train_start = time.perf_counter()
        with training_errors(config, run_dir):
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    train_seconds = time.perf_counter() - train_start
    state = trainer.state
    if callback.cancelled:
        raise TrainingCancelled(
            f"Training was cancelled at step {state.global_step} of {state.max_steps}; no adapter was written."
            + (" Checkpoints are kept: run again with resume to continue." if resume else "")
        )
    if callback.paused:
        raise TrainingPaused(
            f"Training paused at step {state.global_step} of {state.max_steps}: the {time_budget_s:.0f}s time budget "
            "ran out. A checkpoint was written; run again with resume to continue.",
            step=state.global_step,
            total_steps=state.max_steps,
        )

    if gate is not None and not source.is_family:
        # The adapter's own doubt on held-out known facts sets how doubtful it must be to decline (gate.py). A
        # family's "unknown" depends on who asks, which the adapter knows and the threshold would not.
        emit("save", "calibrating the gate on the held-out split", step=state.global_step, total_steps=state.max_steps)
        gate.meta = calibrated_gate_meta(trainer.model, loaded.tokenizer, gate.meta, dataset.heldout)

    # Save
    emit("save", "writing the adapter", step=state.global_step, total_steps=state.max_steps)
    if callback.tokens_per_second:
        record_throughput(base, config, callback.tokens_per_second)
    meta = AdapterMeta(
        base_model=base,
        quantize=config.quantize,
        config=config.model_dump(exclude={"out_dir"}),
        versions=_versions(),
        device=device_type(),
        profile_hash=getattr(dataset, "profile_hash", None),
        topics=list(getattr(dataset, "topics", []) or []),
        dataset=dict(dataset.stats()) if hasattr(dataset, "stats") else {},
        timings=Timings(
            prepare_seconds=round(prepare_seconds, 2),
            load_seconds=round(loaded_at - started, 2),
            data_seconds=round(data_done - loaded_at, 2),
            gate_seconds=round(started + prepare_seconds - data_done, 2),
            train_seconds=round(train_seconds, 2),
            probe_seconds=round(sum(p.get("seconds", 0.0) for p in callback.probes), 2),
            total_seconds=round(time.perf_counter() - started, 2),
        ),
        metrics=TrainMetrics(
            steps=state.global_step,
            planned_steps=state.max_steps,
            epochs=round(float(state.epoch or 0.0), 4),
            final_loss=callback.losses[-1] if callback.losses else None,
            losses=callback.losses,
            tokens_per_epoch=tokens_per_epoch,
            tokens_per_second=round(callback.tokens_per_second or 0.0, 1),
            early_stop_epoch=callback.stopped_epoch,
            probes=callback.probes,
            peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            resumed_from_step=int(checkpoint.name.split("-")[1]) if checkpoint else None,
        ),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        gate=gate.meta if gate is not None else None,
        **(lineage_fields(parent, diff, "full" if full else "update") if parent is not None else {"method": "train"}),
    )
    # A ChatDataset does not carry its profile; private.json then holds only the system prompt.
    private = AdapterPrivate(
        system_prompt=dataset.system_prompt,
        profile=None if is_chat_dataset(source) else source,
        # What the lineage no longer holds but these weights learnt (an update's only: a retrain starts afresh).
        former_facts=plan.former_facts if plan is not None else [],
    )
    adapter = Adapter.write(target, trainer.model, meta, private, dataset.heldout, gate)
    shutil.rmtree(run_dir, ignore_errors=True)
    emit("done", "adapter written", step=state.global_step, total_steps=state.max_steps)
    logger.info("Adapter written to %s in %.1fs", target, time.perf_counter() - started)
    return adapter


def _versions() -> dict[str, str]:
    """Versions of the libraries that shape the weights (recorded in andraeus.json)."""
    out = {}
    for pkg in ("andraeus", "torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


__all__ = ["train"]
