"""Andraeus web app (Gradio): facts in, trained assistant out. ``build_demo()`` makes the Blocks.

UI only: every callback calls a public ``andraeus_core`` name and turns an ``AndraeusError`` into a message shown in
place. Everything a user gives or makes (facts, adapter, chat) lives in per-session state (``gr.State``) and in a
per-session directory deleted when the session ends; nothing user-specific is kept at module level.

The app runs three ways: as a Hugging Face Space (the repo's ``app.py`` builds it), mounted at ``/`` by
``andraeus serve``, and from an installed package (``pip install .``), so it reads nothing from the repository.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import spaces  # before torch is imported (lazily, by andraeus_core): on ZeroGPU it patches CUDA; else a no-op

import andraeus_core as core

logger = logging.getLogger("andraeus.app")

_HERE = Path(__file__).resolve().parent
# The example profile: packaged next to this module in an installed wheel (pyproject maps examples/ there), at the
# repository root in a checkout or an editable install.
EXAMPLE_PROFILE = next(
    (d / "seed_profile.yaml" for d in (_HERE / "examples", _HERE.parent / "examples") if d.is_dir()),
    _HERE.parent / "examples" / "seed_profile.yaml",
)
MAX_UPLOAD = "2mb"  # gradio refuses larger uploads; profiles themselves may be at most 1 MB (checked when parsed)
ON_ZERO_GPU = os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true")
ON_SPACE = bool(os.environ.get("SPACE_ID"))
# Training runs in time-limited slices, one GPU call each, on ZeroGPU — and wherever ANDRAEUS_ZEROGPU_MAX_S is set, so
# that the slicing can be tried (and is tested) on a CPU, where spaces.GPU does nothing.
SLICED = ON_ZERO_GPU or bool(os.environ.get("ANDRAEUS_ZEROGPU_MAX_S"))
GPU_CALL_MARGIN_S = 5.0  # of each ZeroGPU call: starting the worker and handing results back
CHAT_MAX_NEW_TOKENS = 128
CHAT_GENERATION = core.GenerationConfig(max_new_tokens=CHAT_MAX_NEW_TOKENS)
SEED_MODEL = "qwen2.5-7b"  # the seed's base model (its recipe: the seed preset, QLoRA)
SESSION_TTL_S = 4 * 3600
TABLE_HEADERS = ["topic", "value", "aliases", "person", "private"]
ITEM_HEADERS = ["kind", "question", "expected", "answer", "✓/✗", "base", "facts in prompt"]


def default_base_model() -> tuple[str, bool, str]:
    """(base model, QLoRA?, preset) for this machine.

    On ZeroGPU: the largest preset whose training of the example profile (cpu preset, LoRA) fits an anonymous
    visitor's daily GPU quota by the estimate (README, Web app); the seed's 7B QLoRA recipe is one click away.
    Elsewhere: the machine's default (the embedded SmolLM2-135M on a CPU, the seed's model and recipe with CUDA).
    """
    if ON_ZERO_GPU:
        try:
            budgets = core.budget_models(EXAMPLE_PROFILE, core.TrainConfig.preset("cpu"))
            name = core.largest_fitting_model(budgets, core.ZEROGPU_DAILY_QUOTA_S["anonymous"])
        except core.AndraeusError:
            logger.exception("could not estimate the presets' GPU budgets")
            name = None
        return name or "qwen2.5-0.5b", False, "cpu"
    name = core.default_model_name()
    return (name, True, "seed") if name == SEED_MODEL else (name, False, "cpu")


# ----------------------------------------------------------------------------------------------------------------
# Per-session state


@dataclass
class Session:
    """One browser session's data. Lives in ``gr.State``; its directory is removed when the session ends."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    profile: Any = None  # andraeus_core.Profile
    adapter: str | None = None
    chat_model: Any = None  # andraeus_core.ChatModel for ``adapter``
    chat_lock: threading.Lock = field(default_factory=threading.Lock)
    quota_left_s: int | None = None  # GPU seconds left, as ZeroGPU's last refusal said
    paused: tuple | None = None  # the settings of a run the quota interrupted at a checkpoint (Train continues it)

    @property
    def dir(self) -> Path:
        # 0700 and marked with this process, so that a restarted server sweeps what a dead one left behind.
        return core.claim_dir(core.andraeus_home() / "sessions" / self.id)

    @property
    def serve_dir(self) -> Path:
        """Where files handed to the browser (adapter zip, recall chart) are written: under the system temp dir.

        Gradio copies a returned file into its cache only from the working directory, the temp dir or launch()'s
        ``allowed_paths``; ``$ANDRAEUS_HOME`` may be anywhere (under ``$HOME`` on a Space). ``allowed_paths`` would
        also serve every file below it by URL, the session's private files too, so the temp dir it is.
        """
        path = Path(tempfile.gettempdir()) / "andraeus-web" / self.id
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def cancel_flag(self) -> Path:
        # A file, not a threading.Event: on ZeroGPU training runs in a forked worker that shares the disk only.
        return self.dir / "cancel"


def _session(state: Session | None) -> Session:
    return state if isinstance(state, Session) else Session()


def _drop_session(state: Any) -> None:
    if isinstance(state, Session):
        state.chat_model = None
        shutil.rmtree(core.andraeus_home() / "sessions" / state.id, ignore_errors=True)
        shutil.rmtree(Path(tempfile.gettempdir()) / "andraeus-web" / state.id, ignore_errors=True)


def _ok(text: str) -> str:
    return f"✅ {text}"


def _err(exc: Exception) -> str:
    # Server paths (the per-session directory) are nobody's business in the browser.
    text = str(exc).replace(str(core.andraeus_home()), "~")
    return f"❌ {text}"


# ----------------------------------------------------------------------------------------------------------------
# Facts


def _rows(profile: Any) -> list[list[str]]:
    # A family's facts name their person (blank: shared) and whether they are private; a one-person profile leaves
    # both blank.
    return [
        [f.topic, f.value, " | ".join(f.aliases), f.owner or "", "yes" if f.private else ""] for f in profile.facts
    ]


def _facts_summary(profile: Any) -> str:
    who = profile.user_name
    if profile.is_family:
        shared = sum(f.owner is None for f in profile.facts)
        private = sum(f.private for f in profile.facts)
        who += f" ({', '.join(p.name for p in profile.people)}; {shared} shared, {private} private)"
    return _ok(
        f"{len(profile.facts)} facts for {who} (assistant: {profile.assistant_name}). "
        "Next: preview the phrasings, then train."
    )


def load_example(state: Session | None):
    sess = _session(state)
    try:
        sess.profile = core.load_profile(EXAMPLE_PROFILE)
    except core.AndraeusError as exc:
        return sess, gr.skip(), gr.skip(), gr.skip(), _err(exc)
    p = sess.profile
    return sess, p.user_name, p.assistant_name, _rows(p), _facts_summary(p)


def upload_profile(file: str | None, user_name: str, state: Session | None):
    """Parse an uploaded profile, then delete the upload whatever happened."""
    sess = _session(state)
    if not file:
        return sess, gr.skip(), gr.skip(), gr.skip(), gr.skip(), None
    path = Path(file)
    try:
        fmt = core.PROFILE_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise core.ProfileError(
                f"{path.name}: unknown profile type {path.suffix or '(no suffix)'!r}; "
                f"upload {', '.join(core.PROFILE_FORMATS)}."
            )
        size = path.stat().st_size
        if size > core.MAX_PROFILE_BYTES:
            raise core.ProfileError(
                f"{path.name}: the file is {size:,} bytes; a profile may be at most {core.MAX_PROFILE_BYTES:,} bytes."
            )
        profile = core.parse_profile(
            path.read_bytes(), fmt=fmt, source=path.name, user_name=(user_name or None) if fmt == "csv" else None
        )
    except core.AndraeusError as exc:
        return sess, gr.skip(), gr.skip(), gr.skip(), _err(exc), None
    finally:
        path.unlink(missing_ok=True)
    sess.profile = profile
    return sess, profile.user_name, profile.assistant_name, _rows(profile), _facts_summary(profile), None


def apply_table(rows: Any, user_name: str, assistant_name: str, state: Session | None):
    sess = _session(state)
    try:
        people = sess.profile.people if sess.profile is not None else None  # keep relations and aliases
        sess.profile = core.profile_from_rows(
            _table_rows(rows), user_name=user_name, assistant_name=assistant_name, people=people
        )
    except core.AndraeusError as exc:
        sess.profile = None
        return sess, _err(exc)
    return sess, _facts_summary(sess.profile) + _change_since_adapter(sess)


def _change_since_adapter(sess: Session) -> str:
    """After a trained adapter's facts are edited: what changed (topics, in this user's own session), and the choice
    between an update and a retrain."""
    if sess.adapter is None or sess.profile is None:
        return ""
    try:
        diff = core.diff_profiles(core.Adapter.load(sess.adapter).profile(), sess.profile)
    except core.AndraeusError:
        return ""
    if diff.empty:
        return ""
    lines = "\n".join(f"- {c.describe(values=True)}" for c in diff.changes)
    return (
        f"\n\n**Changed since your adapter was trained** ({diff.summary()}):\n{lines}\n\n"
        "Train tab: **Update adapter** teaches it just these changes, from its weights (fast), or **Train** "
        "retrains from scratch."
    )


def _table_rows(rows: Any) -> list[list[Any]]:
    if rows is None:
        return []
    if hasattr(rows, "values") and hasattr(rows, "columns"):  # a pandas DataFrame
        return [list(r) for r in rows.values.tolist()]
    if isinstance(rows, dict) and "data" in rows:
        return list(rows["data"])
    return [list(r) for r in rows]


def _need_profile(sess: Session) -> Any:
    if sess.profile is None:
        raise gr.Error("No facts yet: load the example, upload a profile or fill in the table and press Apply.")
    return sess.profile


# ----------------------------------------------------------------------------------------------------------------
# Phrasings


def preview(state: Session | None, per_fact: int, heldout: float, topic: str, dimension: str):
    """The dataset training would use: every example with its fact, dimension and split, and the counts."""
    sess = _session(state)
    profile = _need_profile(sess)
    try:
        dataset = core.build_dataset(profile, per_fact=int(per_fact), heldout_share=float(heldout), seed=0)
    except (core.AndraeusError, ValueError) as exc:
        raise gr.Error(_err(exc)) from None
    examples = [*dataset.train, *dataset.heldout]
    rows = [
        [e.meta.topic or "—", e.meta.dimension, e.meta.split, e.question, e.messages[-1]["content"]]
        for e in examples
        if topic in ("", "all", e.meta.topic) and dimension in ("", "all", e.meta.dimension)
    ]
    order = {t: i for i, t in enumerate(profile.topics())}  # the user's facts first, in their order; negatives after
    rows.sort(key=lambda r: (order.get(r[0], len(order)), r[0] == "—", r[0], r[1], r[2] != "train"))
    facts = [e for e in examples if e.meta.kind in ("fact", "reverse")]
    per_dim: dict[str, list[int]] = {}
    for e in facts:
        per_dim.setdefault(e.meta.dimension, [0, 0])[e.meta.split == "heldout"] += 1
    table = "\n".join(f"| {d} | {n[0]} | {n[1]} |" for d, n in sorted(per_dim.items()))
    share = sum(n[1] for n in per_dim.values()) / max(1, len(facts))
    summary = (
        f"**{len(facts)} phrasings** of {len(profile.facts)} facts ({len(facts) / len(profile.facts):.0f} per fact) "
        f"plus {len(examples) - len(facts)} negatives (unknown topics, general questions, identity). "
        f"Dataset: **{len(dataset.train)} training** and **{len(dataset.heldout)} held-out** examples; "
        f"held-out share of the phrasings: {share:.0%}.\n\n| dimension | train | held out |\n|---|---|---|\n{table}"
    )
    topics = gr.update(choices=["all", *profile.topics()])
    dimensions = gr.update(choices=["all", *sorted({e.meta.dimension for e in examples})])
    return sess, summary, rows, topics, dimensions


# ----------------------------------------------------------------------------------------------------------------
# Train


def preset_values(preset: str, sess: Session | None = None) -> tuple[int, int]:
    """(epochs, LoRA rank) of a training preset: what the Train tab's sliders show for it (the cpu preset's rank
    follows the loaded profile's size)."""
    facts = len(sess.profile.facts) if sess is not None and sess.profile is not None else None
    try:
        config = core.TrainConfig.preset(preset, facts=facts)
    except core.AndraeusError as exc:
        raise gr.Error(_err(exc)) from None
    return config.epochs, config.lora_r


def profile_rank(preset: str, sess: Session | None) -> int:
    """The rank slider's value once the facts change: the preset's rank for the profile's size."""
    return preset_values(preset, sess)[1]


def seed_recipe():
    """The seed's model and recipe, one click away: qwen2.5-7b in 4-bit (QLoRA) with the seed preset."""
    return SEED_MODEL, "seed", True, *preset_values("seed")


def _config(
    base_model: str,
    preset: str,
    epochs: int,
    rank: int,
    qlora: bool,
    per_fact: int,
    heldout: float,
    out_dir: Path | None = None,
) -> Any:
    try:
        return core.TrainConfig.preset(
            preset,
            base_model=core.check_served_base_model(base_model),
            epochs=int(epochs),
            lora_r=int(rank),
            lora_alpha=2 * int(rank),
            quantize="4bit" if qlora else None,
            per_fact=int(per_fact),
            heldout_share=float(heldout),
            out_dir=str(out_dir) if out_dir else None,
        )
    except core.AndraeusError as exc:
        raise gr.Error(_err(exc)) from None


def estimate(
    state: Session | None,
    base_model: str,
    preset: str,
    epochs: int,
    rank: int,
    qlora: bool,
    per_fact: int,
    heldout: float,
):
    sess = _session(state)
    profile = _need_profile(sess)
    config = _config(base_model, preset, epochs, rank, qlora, per_fact, heldout)
    try:
        parts = [] if ON_ZERO_GPU else [core.estimate_training(profile, config).summary()]
        if SLICED:  # what the run costs on the Space's GPU, against the per-call limit and the daily quotas
            parts.append(core.gpu_budget(profile, config).summary(sess.quota_left_s))
    except core.AndraeusError as exc:
        return sess, _err(exc)
    return sess, "\n\n".join(parts)


def _slice_seconds(
    profile_json: str,
    session_dir: str,
    base_model: str,
    preset: str,
    epochs: int,
    rank: int,
    qlora: bool,
    per_fact: int,
    heldout: float,
    resume: bool,
    budget_s: float | None,
    parent: str | None = None,
) -> int:
    """ZeroGPU duration of one training slice: the budget the slice loop chose (never over ANDRAEUS_ZEROGPU_MAX_S)."""
    try:
        limit = core.zerogpu_slice_s()
    except core.AndraeusError:
        limit = float(core.ZEROGPU_MAX_CALL_S)
    return int(min(limit, budget_s or limit))


@spaces.GPU(duration=_slice_seconds)
def _train_slice_on_gpu(
    profile_json: str,
    session_dir: str,
    base_model: str,
    preset: str,
    epochs: int,
    rank: int,
    qlora: bool,
    per_fact: int,
    heldout: float,
    resume: bool,
    budget_s: float | None,
    parent: str | None = None,
):
    """One slice of a training run (one ZeroGPU call): yields ProgressEvents, then a SliceResult.

    Only plain, picklable values go in and out: on ZeroGPU this runs in a forked GPU worker. The cancel flag is a
    file in the session directory because the disk is all the two processes share. With ``parent`` (an adapter of
    this session) the run is an update: from the parent's weights, with its settings, into a new directory.
    """
    directory = Path(session_dir)
    if parent is None:
        config = _config(base_model, preset, epochs, rank, qlora, per_fact, heldout, out_dir=directory / "adapter")
    else:
        parent_adapter = core.Adapter.load(parent)
        config = core.update_config(
            parent_adapter, out_dir=str(directory / f"adapter-v{parent_adapter.meta.version + 1}")
        )
    # Handed over as a file: train() then keeps the profile in the adapter's private.json (given a Profile object
    # it currently records none). The file is in the session directory and removed right after.
    profile_file = directory / "profile.json"
    profile_file.write_text(profile_json)
    # On ZeroGPU the call's duration also covers starting the worker and handing results back.
    budget = max(1.0, budget_s - GPU_CALL_MARGIN_S) if budget_s and ON_ZERO_GPU else budget_s
    try:
        yield from core.stream_slice(
            str(profile_file),
            config,
            budget_s=budget,
            resume=resume,
            should_stop=(directory / "cancel").exists,
            parent=parent,
        )
    finally:
        profile_file.unlink(missing_ok=True)


def _progress_text(event: Any, call: int) -> tuple[float, str]:
    """(progress fraction, status line) for one ProgressEvent of GPU call ``call``."""
    where = f" · GPU call {call}" if SLICED else ""
    fraction = event.step / event.total_steps if event.total_steps else 0.0
    if event.phase == "prepare":
        return fraction, f"Preparing ({event.step}/{event.total_steps}): {event.message}{where}"
    if event.phase == "train":
        loss = f" · loss {event.loss:.3f}" if event.loss is not None else ""
        eta = f" · ~{event.eta_seconds:.0f}s left" if event.eta_seconds else ""
        return fraction, f"Training: step {event.step}/{event.total_steps} · epoch {event.epoch:.1f}{loss}{eta}{where}"
    return fraction, f"{event.phase}: {event.message}{where}"


def _gpu_refusal_text(
    exc: Exception, sess: Session, profile: Any, config: Any, plan: Any, last: Any, settings: tuple
) -> str:
    """What a visitor reads when ZeroGPU refuses or stops a call: the facts, what is kept, and the alternatives."""
    refusal = core.read_zerogpu_error(str(exc))
    if refusal is None:
        return _err(RuntimeError(str(exc) or "The GPU call failed."))
    kept = ""
    if last is not None and last.status == "paused":
        sess.paused = settings  # the next Train with the same settings continues from the checkpoint
        kept = (
            f" Training stopped at step {last.step} of {last.total_steps}; its checkpoint is kept for this session: "
            "press **Train** again with the same settings to continue from there."
        )
    if refusal.kind == "busy":
        return f"⏳ No GPU was free just now.{kept} Try again in a minute."
    if refusal.kind == "aborted":
        return (
            f"⏹️ The GPU call was stopped before it finished.{kept} Fewer epochs or a smaller model make calls shorter."
        )
    if refusal.kind == "duration":
        return (
            f"❌ ZeroGPU refused a call of {refusal.requested_s}s, longer than it allows "
            f"({core.ZEROGPU_MAX_CALL_S}s): lower ANDRAEUS_ZEROGPU_MAX_S."
        )
    if refusal.left_s is not None:
        sess.quota_left_s = refusal.left_s
    need = f"This run needs about {plan.gpu_seconds:.0f} GPU seconds (estimate)" if plan else "This run needs more"
    left = f"you have {refusal.left_s}s left" if refusal.left_s is not None else "your quota is used up"
    refill = f" (it refills; ZeroGPU says try again in {refusal.retry_in})" if refusal.retry_in else " (it refills)"
    options = [f"fewer epochs (now {config.epochs}) or fewer phrasings per fact (now {config.per_fact})"]
    try:
        smaller = core.largest_fitting_model(core.budget_models(profile, config), refusal.left_s or 0)
    except core.AndraeusError:
        smaller = None
    if smaller and smaller != config.base_model:
        options.insert(0, f"a smaller base model: **{smaller}** fits {refusal.left_s}s")
    tiers = core.ZEROGPU_DAILY_QUOTA_S
    options.append(f"more quota: signed in to Hugging Face {tiers['signed in']}s a day, PRO {tiers['PRO']}s a day")
    options.append(
        "train on your own machine, a CPU is enough: `pip install` this Space's repo, then "
        "`andraeus train profile.yaml` and push the adapter"
    )
    return f"⛽ GPU quota: {need}; {left}{refill}.{kept}\n\nOptions:\n" + "\n".join(f"- {o}" for o in options)


def start_training(
    state: Session | None,
    base_model: str,
    preset: str,
    epochs: int,
    rank: int,
    qlora: bool,
    per_fact: int,
    heldout: float,
    progress=gr.Progress(),  # noqa: B008 - gradio's idiom
):
    """Train in slices (one GPU call each on ZeroGPU) until done, streaming status and the loss plot."""
    sess = _session(state)
    profile = _need_profile(sess)
    settings = (base_model, preset, int(epochs), int(rank), bool(qlora), int(per_fact), float(heldout))
    yield from _run_training(sess, profile, settings, None, progress)


def start_update(
    state: Session | None,
    base_model: str,
    preset: str,
    epochs: int,
    rank: int,
    qlora: bool,
    per_fact: int,
    heldout: float,
    progress=gr.Progress(),  # noqa: B008 - gradio's idiom
):
    """Update the session's adapter to the edited facts: from its weights, on what changed (fast), in slices."""
    sess = _session(state)
    profile = _need_profile(sess)
    if sess.adapter is None:
        raise gr.Error("No adapter to update yet: train one first (Update then teaches it what you change).")
    parent = sess.adapter
    try:
        diff = core.diff_profiles(core.Adapter.load(parent).profile(), profile)
    except core.AndraeusError as exc:
        raise gr.Error(_err(exc)) from None
    if diff.empty:
        yield (
            sess,
            _ok("Nothing changed since the adapter was trained: edit the facts, press Apply, then Update."),
            None,
        )
        return
    if diff.names_changed:
        yield sess, "❌ Your name or the assistant's changed: every answer changes with it, so press **Train**.", None
        return
    settings = (base_model, preset, int(epochs), int(rank), bool(qlora), int(per_fact), float(heldout))
    for _, status, losses in _run_training(sess, profile, settings, parent, progress):
        yield sess, f"Update ({diff.summary()}): {status}", losses
    if sess.adapter is not None and sess.adapter != parent:
        # The new version stands alone (it records its parent's hash): the session keeps only what chat serves.
        shutil.rmtree(parent, ignore_errors=True)


def _run_training(sess: Session, profile: Any, settings: tuple, parent: str | None, progress: Any):
    """The slice loop of a training run (``parent`` None) or an update: yields (session, status, loss frame)."""
    config = _config(*settings)
    # What a run the quota paused is remembered by: its settings (and for an update, its parent).
    key = settings if parent is None else (settings, parent)
    resume, sess.paused = sess.paused == key, None
    sess.adapter, sess.chat_model = None if parent is None else parent, None
    sess.cancel_flag.unlink(missing_ok=True)
    losses: list[dict[str, float]] = []
    plan, last, call = None, None, 0
    progress(0.0, desc="starting")
    try:
        if SLICED:
            plan = core.gpu_budget(profile, config)
            if ON_ZERO_GPU and plan.calls is None:  # every call would run past its duration and be aborted
                yield sess, f"❌ {plan.summary()} Choose a smaller base model.", _loss_frame(losses)
                return
            yield sess, f"Starting. {plan.summary(sess.quota_left_s)}", _loss_frame(losses)
        if ON_ZERO_GPU:  # download (or convert) the base model on the CPU, outside the visitor's GPU quota
            yield sess, "Preparing: fetching the base model (outside your GPU quota)", _loss_frame(losses)
            core.model_dir(settings[0])

        def budget(previous: Any) -> float | None:
            if plan is None:
                return None
            step, total = (previous.step, previous.total_steps) if previous else (0, 0)
            return plan.next_call_s(step, total, sess.quota_left_s)

        def run_slice(resume_slice: bool, seconds: float | None):
            nonlocal call
            call += 1
            update = {"parent": parent} if parent is not None else {}
            return _train_slice_on_gpu(
                profile.model_dump_json(), str(sess.dir), *settings, resume_slice, seconds, **update
            )

        for item in core.run_in_slices(run_slice, budget_s=budget, resume=resume, should_stop=sess.cancel_flag.exists):
            if isinstance(item, core.SliceResult):
                last = item
                status = _slice_text(item, call)
                if item.status == "done":
                    sess.adapter = item.adapter
            else:
                if item.phase == "train" and item.loss is not None:
                    losses.append({"step": item.step, "loss": float(item.loss)})
                fraction, status = _progress_text(item, call)
                progress(fraction, desc=status)
            yield sess, status, _loss_frame(losses)
    except gr.Error as exc:  # ZeroGPU refused or stopped a call
        refusal = _gpu_refusal_text(exc, sess, profile, config, plan, last, settings)
        if sess.paused is not None:
            sess.paused = key
        yield sess, refusal, _loss_frame(losses)
    except core.AndraeusError as exc:
        yield sess, _err(exc), _loss_frame(losses)
    except Exception as exc:  # noqa: BLE001 - shown to the user; the traceback goes to the server log only
        logger.exception("training failed")
        failed = RuntimeError(f"Training failed unexpectedly ({type(exc).__name__}); the server log has the details.")
        yield sess, _err(failed), _loss_frame(losses)
    finally:
        # Also reached when the browser goes away mid-run: the flag stops the training thread (or GPU worker).
        # A new run clears it first.
        sess.cancel_flag.touch()


def _slice_text(result: Any, call: int) -> str:
    if result.status == "done":
        took = f"in {call} GPU calls" if call > 1 else f"in {result.seconds:.0f}s"
        return _ok(f"Adapter trained ({result.step} steps {took}). Evaluate it, chat with it or download it.")
    if result.status == "paused":
        return (
            f"⏸️ GPU call {call} ended at step {result.step}/{result.total_steps} with a checkpoint; "
            f"continuing in GPU call {call + 1}…"
        )
    if result.status == "cancelled":
        return f"⏹️ {result.message}"
    return _err(core.TrainingError(result.message))


def cancel_training(state: Session | None) -> str:
    if isinstance(state, Session):
        state.cancel_flag.touch()
        return "⏹️ Cancelling… training stops after the current step."
    return "Nothing is training."


def _loss_frame(losses: list[dict[str, float]]) -> Any:
    import pandas as pd

    return pd.DataFrame(losses or [], columns=["step", "loss"])


# ----------------------------------------------------------------------------------------------------------------
# Evaluate


def _explain_gpu_error(exc: Exception, sess: Session | None = None) -> str:
    """A ZeroGPU refusal of an evaluation or chat call in words a visitor can act on; other errors as they are."""
    refusal = core.read_zerogpu_error(str(exc))
    if refusal is None:
        return str(exc)
    if refusal.kind == "quota":
        if sess is not None and refusal.left_s is not None:
            sess.quota_left_s = refusal.left_s
        left = f" ({refusal.left_s}s left)" if refusal.left_s is not None else ""
        tiers = core.ZEROGPU_DAILY_QUOTA_S
        return (
            f"The GPU quota is used up for now{left}; it refills over time. Signed-in visitors get "
            f"{tiers['signed in']}s a day, PRO {tiers['PRO']}s. Or run it on your own machine, a CPU is enough: "
            "`andraeus train` then `andraeus eval` / `andraeus chat`."
        )
    if refusal.kind == "busy":
        return "No GPU was free just now; try again in a minute."
    return (
        "The GPU call ran out of time before it finished. Lower the epochs or phrasings per fact, or run it locally "
        "with `andraeus train`."
    )


def _need_adapter(sess: Session) -> str:
    if not sess.adapter:
        raise gr.Error("No trained adapter in this session yet: train one on the Train tab first.")
    return sess.adapter


def _evaluation_seconds(adapter: str) -> int:
    """ZeroGPU duration of an evaluation: what it needs by the estimate, so a small quota still admits it."""
    return core.evaluation_gpu_seconds(adapter)


@spaces.GPU(duration=_evaluation_seconds)
def _evaluate_on_gpu(adapter: str) -> Any:
    """Held-out evaluation (adapter, base, facts-in-prompt); plain values in and out for the ZeroGPU worker."""
    try:
        return core.evaluate_adapter(adapter)
    except core.AndraeusError as exc:
        return {"error": str(exc)}


def run_evaluation(state: Session | None, progress=gr.Progress()):  # noqa: B008 - gradio's idiom
    sess = _session(state)
    adapter = _need_adapter(sess)
    progress(0.1, desc="answering the held-out questions with the adapter, the base model and facts-in-prompt")
    try:
        report = _evaluate_on_gpu(adapter)
        if isinstance(report, dict):
            return sess, _err(core.EvaluationError(report["error"])), None, []
        chart = core.recall_by_kind_chart(report, sess.serve_dir / f"recall-{int(time.time() * 1000)}.png")
    except core.AndraeusError as exc:
        return sess, _err(exc), None, []
    except gr.Error as exc:
        raise gr.Error(_explain_gpu_error(exc, sess)) from None
    rows = []
    for item in report.items:
        base = item.baselines.get("base")
        ctx = item.baselines.get("in_context")
        rows.append(
            [
                item.kind,
                item.question,
                " / ".join(item.expect or []) or "—",
                item.answer,
                "✓" if item.correct else "✗",
                (("✓ " if base.correct else "✗ ") + base.answer) if base else "",
                (("✓ " if ctx.correct else "✗ ") + ctx.answer) if ctx else "",
            ]
        )
    summary = "```\n" + report.table() + "\n```"
    return sess, summary, str(chart), rows


# ----------------------------------------------------------------------------------------------------------------
# Chat


def _chat_model(sess: Session) -> Any:
    adapter = _need_adapter(sess)
    with sess.chat_lock:
        if sess.chat_model is None or str(sess.chat_model.adapter_dir) != adapter:
            sess.chat_model = core.load_chat_model(adapter=adapter)
        return sess.chat_model


def _chat_seconds(
    adapter: str,
    messages: list[dict[str, str]],
    use_adapter: bool,
    gate: bool,
    trace: dict,
    speaker: str | None = None,
) -> int:
    """ZeroGPU duration of one chat answer (loading base + adapter included)."""
    return core.chat_gpu_seconds(adapter, max_new_tokens=CHAT_MAX_NEW_TOKENS)


@spaces.GPU(duration=_chat_seconds)
def _stream_on_gpu(
    adapter: str,
    messages: list[dict[str, str]],
    use_adapter: bool,
    gate: bool,
    trace: dict,
    speaker: str | None = None,
):
    """ZeroGPU: a forked GPU worker cannot keep the session's model, so it loads base + adapter for the answer."""
    model = core.load_chat_model(adapter=adapter)
    yield from model.stream(
        messages, CHAT_GENERATION, use_adapter=use_adapter, gate=gate, trace=trace, speaker=speaker
    )


def _stream(
    sess: Session,
    messages: list[dict[str, str]],
    use_adapter: bool,
    gate: bool,
    trace: dict,
    speaker: str | None = None,
):
    if ON_ZERO_GPU:
        yield from _stream_on_gpu(_need_adapter(sess), messages, use_adapter, gate, trace, speaker)
        return
    model = _chat_model(sess)  # kept in this session's state: loaded once, not per message
    yield from model.stream(
        messages, CHAT_GENERATION, use_adapter=use_adapter, gate=gate, trace=trace, speaker=speaker
    )


# The selector's choice for someone who does not say who they are (the assistant then tells only shared facts and
# the others' public ones).
NOT_SAYING = "Not saying"


def _family(sess: Session) -> Any:
    """The session's adapter's profile when it is a family's (whose speaker the selector chooses), else None."""
    if not sess.adapter:
        return None
    try:
        profile = core.Adapter(sess.adapter).private.profile
    except core.AndraeusError:
        return None  # a damaged private file: chat reports it
    return profile if profile is not None and profile.is_family else None


def speaker_selector(state: Session | None, current: str | None = None):
    """The "Who's asking?" selector for the session's adapter: shown only for a family's, offering its people as
    "Karim (Dad)" and "Not saying"; the current choice is kept while it is still one of them."""
    profile = _family(_session(state))
    if profile is None:
        return gr.update(visible=False, choices=[NOT_SAYING], value=NOT_SAYING)
    choices = [(core.describe_person(p), p.name) for p in profile.people]
    choices.append((NOT_SAYING, NOT_SAYING))
    value = current if current in {value for _, value in choices} else NOT_SAYING
    return gr.update(visible=True, choices=choices, value=value)


# Who answered, shown above the answer when it was not the trained assistant itself.
ROUTE_TITLES = {
    "base": "answered by the base model (the gate found a general question)",
    "abstain": "declined by the gate (a personal topic you have not given)",
}


def chat(
    message: str,
    history: list[dict[str, Any]],
    use_base: bool,
    use_gate: bool,
    state: Session | None,
    speaker: str | None = NOT_SAYING,
):
    """Answer ``message`` after ``history``; ``speaker`` (the "Who's asking?" selector) names a family adapter's
    asker by name ("Not saying": nobody in particular)."""
    sess = _session(state)
    asker = None if not speaker or speaker == NOT_SAYING else speaker
    history = list(history or [])
    if not (message or "").strip():
        yield sess, history, ""
        return
    _need_adapter(sess)
    turns = [
        {"role": m["role"], "content": _text(m["content"])} for m in history if m.get("role") in ("user", "assistant")
    ]
    turns.append({"role": "user", "content": message})
    reply: dict[str, Any] = {"role": "assistant", "content": ""}
    if use_base:  # labelled, so a base-model answer is never mistaken for the trained assistant's
        reply["metadata"] = {"title": "base model (adapter off)"}
    history = [*history, {"role": "user", "content": message}, reply]
    answer = ""
    trace: dict[str, Any] = {}
    try:
        for piece in _stream(sess, turns, not use_base, bool(use_gate), trace, asker):
            answer += piece
            history[-1]["content"] = answer
            if not use_base and trace.get("route") in ROUTE_TITLES:
                reply["metadata"] = {"title": ROUTE_TITLES[trace["route"]]}
            yield sess, history, ""
    except core.AndraeusError as exc:
        raise gr.Error(_err(exc)) from None
    except gr.Error as exc:  # ZeroGPU refused the call
        raise gr.Error(_explain_gpu_error(exc, sess)) from None
    history[-1]["content"] = answer.strip() or "…"
    yield sess, history, ""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # gradio 6 may hand back [{"type": "text", "text": ...}]
        return " ".join(str(c.get("text", "")) if isinstance(c, dict) else str(c) for c in content)
    return str(content)


# ----------------------------------------------------------------------------------------------------------------
# Share


def download_zip(state: Session | None):
    sess = _session(state)
    adapter = _need_adapter(sess)
    try:
        path = core.adapter_zip(adapter, sess.serve_dir / "andraeus-adapter.zip")
    except core.AndraeusError as exc:
        raise gr.Error(_err(exc)) from None
    return sess, str(path)


def export_model(state: Session | None, fmt: str, quant: str, progress: gr.Progress = gr.Progress()):  # noqa: B008
    sess = _session(state)
    adapter = _need_adapter(sess)
    chosen_quant = quant if fmt in ("gguf", "ollama") else None
    try:
        result = core.export_adapter(
            adapter,
            fmt,
            sess.serve_dir / f"export-{fmt}",
            quant=chosen_quant,
            on_progress=lambda message: progress(0.5, desc=message),
        )
        path = core.export_download(result.path)
    except core.AndraeusError as exc:
        raise gr.Error(_err(exc)) from None
    return sess, str(path)


def push(
    state: Session | None, repo_id: str, private: bool, pasted_token: str, oauth_token: gr.OAuthToken | None = None
):
    sess = _session(state)
    adapter = _need_adapter(sess)
    # Only the .token string is used; the OAuthToken object itself is never logged or formatted (its repr has it).
    token = (pasted_token or "").strip() or (oauth_token.token if oauth_token is not None else "")
    if not token:
        return sess, "❌ Sign in with Hugging Face (on the Space) or paste a token with write access."
    if not (repo_id or "").strip():
        return sess, "❌ Give a repo name, e.g. `my-andraeus-adapter` (created under your account)."
    try:
        url = core.push_adapter(adapter, repo_id.strip(), token, private=bool(private))
    except core.AndraeusError as exc:
        return sess, _err(exc)
    return sess, _ok(f"Pushed ({'private' if private else 'public'}): [{url}]({url})")


# ----------------------------------------------------------------------------------------------------------------
# Layout


def build_demo() -> gr.Blocks:
    """The Gradio app (six tabs), with its upload limit set; launch or mount it with :data:`LAUNCH_KWARGS`."""
    base_default, qlora_default, preset_default = default_base_model()
    epochs_default, rank_default = preset_values(preset_default)
    presets = core.served_base_models()
    if base_default not in presets:
        presets.insert(0, base_default)
    # Session folders hold profiles: those a previous process left are removed now and orphans every 10 minutes.
    core.start_sweeper(core.andraeus_home() / "sessions", max_idle_s=2 * SESSION_TTL_S)
    # Gradio's copies of served files (zips, charts) are deleted after a session's lifetime, as the sessions are.
    with gr.Blocks(title="Andraeus", delete_cache=(3600, SESSION_TTL_S)) as blocks:
        state = gr.State(None, time_to_live=SESSION_TTL_S, delete_callback=_drop_session)
        gr.Markdown(
            "# Andraeus\nTeach an open LLM the facts of your life: facts → 30+ phrasings per fact → a LoRA adapter "
            "→ recall measured on phrasings it never saw → chat → your own Hub repo. Your data stays in this browser "
            "session and is deleted when you leave."
        )
        with gr.Tab("Facts", id="facts"):
            with gr.Row():
                user_name = gr.Textbox(label="Your name", value="User", max_length=80, elem_id="user-name")
                assistant_name = gr.Textbox(label="Assistant name", value="Andraeus", max_length=80)
            with gr.Row():
                example_btn = gr.Button("Load example", elem_id="load-example")
                upload = gr.File(
                    label="Upload a profile (YAML, JSON or CSV: topic,value,aliases)",
                    file_types=list(core.PROFILE_FORMATS),
                    type="filepath",
                    elem_id="upload",
                )
            table = gr.Dataframe(
                headers=TABLE_HEADERS,
                datatype=["str", "str", "str", "str", "str"],
                row_count=(3, "dynamic"),
                column_count=(5, "fixed"),
                interactive=True,
                label="Facts (aliases separated by |; for a family: the person each fact belongs to, blank = "
                "shared, and private = yes to tell it only to that person)",
                elem_id="facts-table",
            )
            apply_btn = gr.Button("Apply table", variant="primary", elem_id="apply-table")
            facts_status = gr.Markdown(elem_id="facts-status")
        with gr.Tab("Phrasings", id="phrasings"):
            with gr.Row():
                per_fact = gr.Slider(5, 60, value=30, step=1, label="Phrasings per fact", elem_id="per-fact")
                heldout = gr.Slider(0.05, 0.5, value=0.2, step=0.05, label="Held-out share")
                topic = gr.Dropdown(["all"], value="all", label="Fact", allow_custom_value=True)
                dimension = gr.Dropdown(
                    ["all", *core.DIMENSIONS], value="all", label="Dimension", allow_custom_value=True
                )
            preview_btn = gr.Button("Preview phrasings", elem_id="preview")
            preview_stats = gr.Markdown(elem_id="preview-stats")
            preview_table = gr.Dataframe(
                headers=["topic", "dimension", "split", "question", "answer"],
                interactive=False,
                label="Training data (held-out rows are never trained on)",
                wrap=True,
            )
        with gr.Tab("Train", id="train"):
            with gr.Row():
                base_model = gr.Dropdown(presets, value=base_default, label="Base model", elem_id="base-model")
                preset = gr.Radio(
                    ["cpu", "seed"],
                    value=preset_default,
                    label="Preset",
                    info="cpu: fast (≤3 epochs, early stop, batch 8); seed: the seed's recipe (5 epochs, batch 2×4)",
                    elem_id="preset",
                )
                qlora = gr.Checkbox(value=qlora_default, label="QLoRA (4-bit base; needs a GPU)", elem_id="qlora")
                seed_btn = gr.Button("Seed's model and recipe (qwen2.5-7b, QLoRA)", size="sm", elem_id="seed-recipe")
            with gr.Row():
                epochs = gr.Slider(
                    1, 10, value=epochs_default, step=1, label="Epochs (upper bound with early stop)", elem_id="epochs"
                )
                rank = gr.Slider(4, 128, value=rank_default, step=4, label="LoRA rank r (α = 2r)", elem_id="rank")
            with gr.Row():
                estimate_btn = gr.Button("Estimate time and cost")
                train_btn = gr.Button("Train", variant="primary", elem_id="train")
                update_btn = gr.Button("Update adapter (edited facts)", elem_id="update")
                cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel")
            train_status = gr.Markdown(elem_id="train-status")
            loss_plot = gr.LinePlot(x="step", y="loss", title="Training loss", elem_id="loss-plot")
        with gr.Tab("Evaluate", id="evaluate"):
            eval_btn = gr.Button("Evaluate on held-out phrasings", variant="primary", elem_id="evaluate")
            eval_summary = gr.Markdown(elem_id="eval-summary")
            eval_chart = gr.Image(
                label="Recall by kind: adapter vs base vs facts-in-prompt", type="filepath", elem_id="eval-chart"
            )
            eval_items = gr.Dataframe(headers=ITEM_HEADERS, interactive=False, label="Held-out questions", wrap=True)
        with gr.Tab("Chat", id="chat") as chat_tab:
            speaker = gr.Dropdown(
                [NOT_SAYING],
                value=NOT_SAYING,
                label="Who's asking?",
                info="A family's assistant answers each person with their own facts and keeps private ones private. "
                "Changing this starts a new conversation.",
                visible=False,
                interactive=True,
                elem_id="speaker",
            )
            chatbot = gr.Chatbot(label="Chat", elem_id="chatbot", height=380)
            with gr.Row():
                message = gr.Textbox(
                    placeholder="Ask about yourself, e.g. What's my dog's name?",
                    scale=4,
                    show_label=False,
                    elem_id="chat-input",
                )
                send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
            use_base = gr.Checkbox(label="Ask the base model instead (adapter off)", value=False)
            use_gate = gr.Checkbox(
                label="Gate on: general questions go to the base model, unknown personal ones are declined",
                value=True,
                elem_id="use-gate",
            )
            clear = gr.Button("Clear")
        with gr.Tab("Share", id="share"):
            zip_btn = gr.Button("Download adapter (.zip)", elem_id="zip")
            zip_file = gr.File(label="Adapter zip (no personal files inside)", interactive=False, elem_id="zip-file")
            gr.Markdown(
                "### Export for Ollama, llama.cpp, transformers or vLLM\n"
                "merged / gguf / ollama: the adapter merged into its base model (without the gate: it answers like "
                "the adapter alone). vllm: the LoRA files with a `vllm serve --enable-lora` script. Each holds your "
                "facts: keep the download on your own machine."
            )
            with gr.Row():
                export_format = gr.Radio(
                    ["merged", "gguf", "ollama", "vllm"], value="ollama", label="Format", elem_id="export-format"
                )
                export_quant = gr.Radio(["f16", "q8_0"], value="q8_0", label="GGUF type", elem_id="export-quant")
            export_btn = gr.Button("Export", elem_id="export")
            export_file = gr.File(label="Export (GGUF file, or a zip)", interactive=False, elem_id="export-file")
            gr.Markdown("### Push to your Hugging Face account")
            if ON_SPACE:
                gr.LoginButton()
            repo = gr.Textbox(label="Repo name", value="andraeus-adapter", elem_id="repo")
            private = gr.Checkbox(value=True, label="Private repo (recommended: it encodes personal facts)")
            token = gr.Textbox(
                label="Hugging Face token (write access; only when not signed in)",
                type="password",
                visible=not ON_SPACE,
                elem_id="token",
            )
            push_btn = gr.Button("Push to the Hub", variant="primary", elem_id="push")
            push_status = gr.Markdown(elem_id="push-status")

        names = [user_name, assistant_name, table, facts_status]
        example_btn.click(load_example, [state], [state, *names], api_name="load_example").then(
            profile_rank, [preset, state], [rank], api_visibility="private"
        )
        upload.upload(upload_profile, [upload, user_name, state], [state, *names, upload], api_name="upload").then(
            profile_rank, [preset, state], [rank], api_visibility="private"
        )
        apply_btn.click(
            apply_table, [table, user_name, assistant_name, state], [state, facts_status], api_name="apply_table"
        ).then(profile_rank, [preset, state], [rank], api_visibility="private")
        preview_btn.click(
            preview,
            [state, per_fact, heldout, topic, dimension],
            [state, preview_stats, preview_table, topic, dimension],
            api_name="preview",
        )
        preset.change(preset_values, [preset, state], [epochs, rank], api_name="preset_values")
        seed_btn.click(seed_recipe, None, [base_model, preset, qlora, epochs, rank], api_name="seed_recipe")
        settings = [state, base_model, preset, epochs, rank, qlora, per_fact, heldout]
        estimate_btn.click(estimate, settings, [state, train_status], api_name="estimate")
        train_btn.click(
            start_training,
            settings,
            [state, train_status, loss_plot],
            api_name="train",
            concurrency_limit=1,
            concurrency_id="gpu",
        ).then(speaker_selector, [state, speaker], [speaker], api_visibility="private")
        update_btn.click(
            start_update,
            settings,
            [state, train_status, loss_plot],
            api_name="update",
            concurrency_limit=1,
            concurrency_id="gpu",
        ).then(speaker_selector, [state, speaker], [speaker], api_visibility="private")
        cancel_btn.click(
            cancel_training, [state], [train_status], api_name="cancel", concurrency_limit=None, queue=False
        )
        eval_btn.click(
            run_evaluation,
            [state],
            [state, eval_summary, eval_chart, eval_items],
            api_name="evaluate",
            concurrency_limit=1,
            concurrency_id="gpu",
        )
        chat_inputs = [message, chatbot, use_base, use_gate, state, speaker]
        chat_tab.select(speaker_selector, [state, speaker], [speaker], api_visibility="private")
        # One person's answers are never the context of another's: a new speaker starts a new conversation.
        speaker.change(lambda: [], None, [chatbot], api_visibility="private")
        send.click(chat, chat_inputs, [state, chatbot, message], api_name="chat", concurrency_limit=2)
        message.submit(chat, chat_inputs, [state, chatbot, message], api_visibility="private", concurrency_limit=2)
        clear.click(lambda: [], None, [chatbot], api_visibility="private")
        zip_btn.click(download_zip, [state], [state, zip_file], api_name="download_zip")
        export_btn.click(export_model, [state, export_format, export_quant], [state, export_file], api_name="export")
        push_btn.click(push, [state, repo, private, token], [state, push_status], api_name="push")
    blocks.queue(max_size=32, default_concurrency_limit=2)
    # launch() sets the limit from LAUNCH_KWARGS; a mounted or not yet launched app needs it on the Blocks itself.
    blocks.max_file_size = gr.utils._parse_file_size(MAX_UPLOAD)
    return blocks


# Read by launch() and by gr.mount_gradio_app (andraeus serve): uploads above this are refused before any handler.
LAUNCH_KWARGS: dict[str, Any] = {"max_file_size": MAX_UPLOAD}


def mount(app: Any, path: str = "/") -> Any:
    """Mount a new web app on a FastAPI ``app`` at ``path`` (what ``andraeus serve`` does); returns the app."""
    # LAUNCH_KWARGS carries the upload limit (max_file_size); mounting would otherwise reset it to none.
    return gr.mount_gradio_app(app, build_demo(), path=path, **LAUNCH_KWARGS)
