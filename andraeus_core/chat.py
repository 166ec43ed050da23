"""Generation with a base model, optionally with a LoRA adapter: streaming, greedy or sampled, with history.

With an adapter that has a gate (:mod:`.gate`), every question is routed first: about the user -> the adapter;
an unknown personal topic -> "I don't know ..."; anything else -> the base model with the adapter disabled.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .adapter import Adapter
from .errors import AdapterError, ConfigError
from .family import DisclosureGuard, disclosure_guard, resolve_speaker, speaker_choices, speaker_system_prompt
from .gate import ABSTENTION_PREFIX, Route, abstention
from .hub import resolve_adapter
from .lora_rows import lora_rows
from .models import LoadedModel, Quantize, get_cached_model, load_model
from .profile import Profile

logger = logging.getLogger(__name__)

Role = Literal["system", "user", "assistant"]


class Message(BaseModel):
    """One chat turn."""

    model_config = ConfigDict(extra="forbid")

    role: Role = Field(description="Who speaks: system, user or assistant.")
    content: str = Field(description="What is said.")


#: Longest stop string: each one is matched against the decoded answer after every token.
MAX_STOP_CHARS = 64
#: Tokens a generation runs while another request waits before it hands the model over (it resumes later).
SLICE_TOKENS = 32
#: Text pieces an answer may run ahead of its reader before it pauses: a client that stops reading costs no model time.
BUFFER_PIECES = 64
#: Answers one chat model decodes together by default (``ANDRAEUS_CHAT_BATCH`` overrides it; 1 = one at a time).
MAX_BATCH = 8
#: The longest an exiting process waits for the generation thread to put its work down (see :func:`_drain_at_exit`).
EXIT_WAIT_S = 10.0


class GenerationConfig(BaseModel):
    """How to decode. ``temperature == 0`` means greedy decoding (deterministic)."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature; 0 = greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass (only when sampling).")
    max_new_tokens: int = Field(256, ge=1, le=4096, description="Upper bound on generated tokens.")
    stop: list[Annotated[str, Field(max_length=MAX_STOP_CHARS)]] = Field(
        default_factory=list,
        max_length=8,
        description=f"Strings (up to {MAX_STOP_CHARS} characters) that end the answer.",
    )
    repetition_penalty: float = Field(1.0, ge=1.0, le=2.0, description="Penalty on repeated tokens (1 = none).")
    seed: int | None = Field(
        None, ge=-(2**63), le=2**64 - 1, description="Seed for sampling (what torch.manual_seed takes)."
    )


class _Scheduler:
    """The one long-lived thread that runs every generation in this process, a slice at a time.

    One thread: torch's CPU backend (OpenMP) gives each OS thread that runs parallel work its own thread team, and two
    teams contended for the 2 cores (decoding fell from ~29 to ~17 tokens/s, bench/chat_latency.py). Slices: a
    generation hands the model over after :data:`SLICE_TOKENS` tokens when another request is waiting, and pauses
    whenever its reader is :data:`BUFFER_PIECES` pieces behind, so a long answer, or one nobody reads, never holds
    the model while others wait. A paused generation keeps only its token ids and resumes by reading its prompt and
    answer so far again (no cache is kept for it).
    """

    def __init__(self) -> None:
        self._ready: deque[_Task] = deque()
        self._cond = threading.Condition()
        self._pid = os.getpid()
        #: Set when the process exits: running work ends at its next token, nothing new starts.
        self.closing = False
        self._thread = threading.Thread(target=self._loop, name="andraeus-generate", daemon=True)
        self._thread.start()

    def submit(self, task: _Task) -> None:
        with self._cond:
            self._ready.append(task)
            self._cond.notify()

    def waiting(self) -> bool:
        """Whether another generation is ready to run (read without the lock: a hint, checked after every token)."""
        return bool(self._ready)

    def waiting_elsewhere(self, batch: _Batch) -> bool:
        """Whether work is waiting that ``batch`` can never take in (another model, another adapter state where rows
        cannot be mixed, a plain call): answers that can join it only wait for a row to free up."""
        with self._cond:
            return any(not batch.accepts(task) for task in self._ready)

    def take_joinable(self, batch: _Batch, room: int) -> list[_Task]:
        """Up to ``room`` waiting answers that can join ``batch`` at its next step, in the order they came."""
        taken: list[_Task] = []
        with self._cond:
            kept: deque[Any] = deque()
            while self._ready:
                task = self._ready.popleft()
                if len(taken) < room and batch.accepts(task):
                    taken.append(task)
                else:
                    kept.append(task)
            self._ready = kept
        return taken

    def drain(self, timeout_s: float) -> bool:
        """Stop taking work, let what runs end at its next token, and wait (bounded) for the thread to end.

        A daemon thread that is inside torch, or merely parked, while the interpreter finalises can abort the process
        ("terminate called without an active exception": pytorch/pytorch#38228), as ``andraeus chat --once`` did in
        CI right after printing its answer. A thread that has returned cannot. Returns whether it ended in time.
        """
        with self._cond:
            self.closing = True
            self._ready.clear()  # their readers are gone with the process
            self._cond.notify_all()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._ready:
                    if self.closing:
                        return  # the process exits (drain)
                    self._cond.wait()
                task = self._ready.popleft()
            if self.closing and isinstance(task, _Task):
                task.leave("stop", self)  # submitted while the process exits: its reader gets its end, no model work
            elif isinstance(task, _Task) and task.chat.max_batch > 1:
                _Batch(task.chat).run(task, self)
            else:
                task.run_slice(self)


_scheduler: _Scheduler | None = None
_scheduler_lock = threading.Lock()


def generation_scheduler() -> _Scheduler:
    """This process's generation thread (a new one after a fork: threads do not survive it, e.g. on ZeroGPU)."""
    global _scheduler
    with _scheduler_lock:
        if _scheduler is None or _scheduler._pid != os.getpid():
            _scheduler = _Scheduler()
        return _scheduler


@atexit.register
def _drain_at_exit() -> None:
    """At interpreter exit (atexit runs before daemon threads are frozen): end the generation thread (see drain)."""
    scheduler = _scheduler
    if scheduler is not None and scheduler._pid == os.getpid() and not scheduler.drain(EXIT_WAIT_S):
        logger.warning("The generation thread was still running %.0f s after exit began", EXIT_WAIT_S)


class _Call:
    """A plain function run once on the generation thread (see :func:`on_generation_thread`)."""

    def __init__(self, fn: Any):
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def run_slice(self, scheduler: _Scheduler) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            self.error = exc
        finally:
            self.done.set()


def on_generation_thread(fn: Any) -> Any:
    """Run ``fn()`` on the generation thread, after the slices already waiting, and return its result.

    For torch work that must not start a second OpenMP thread team (bench/chat_latency.py's reference generate).
    """
    call = _Call(fn)
    generation_scheduler().submit(call)  # type: ignore[arg-type]
    call.done.wait()
    if call.error is not None:
        raise call.error
    return call.result


_END = object()


def _streamer_class() -> Any:
    from transformers import TextStreamer

    class TaskStreamer(TextStreamer):
        """transformers' TextStreamer (word-wise decoding) that hands its text to a task and keeps the token ids.

        ``end()`` is called by every ``generate`` call; a task may continue in another, so the text is only flushed
        by :meth:`finish`.
        """

        def __init__(self, task: _Task, tokenizer: Any):
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
            self.task = task

        def put(self, value: Any) -> None:
            if not (self.skip_prompt and self.next_tokens_are_prompt):
                self.task.token_ids.extend(int(t) for t in value.reshape(-1).tolist())
            super().put(value)

        def end(self) -> None:
            self.next_tokens_are_prompt = True  # the next generate call starts with the prompt + answer so far

        def finish(self) -> None:
            super().end()

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            self.task.emit(text)

    return TaskStreamer


class _SliceStop:
    """A StoppingCriteria, called after every token: ends this slice for a reason, or lets generation go on."""

    def __init__(self, task: _Task, scheduler: _Scheduler):
        self.task = task
        self.scheduler = scheduler
        self.tokens = 0
        self.reason: str | None = None

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
        self.tokens += 1
        self.reason = self.task.stop_reason(self.tokens, self.scheduler)
        return self.reason is not None


class _Task:
    """One answer being generated: its inputs, the token ids so far, and the bounded queue its reader takes text from.

    The scheduler thread runs :meth:`run_slice`; the reader (``ChatModel.stream``) takes pieces with :meth:`next`.
    """

    def __init__(
        self,
        chat: ChatModel,
        run: Any,
        config: GenerationConfig,
        deadline: float | None,
        cancel: Any,
        *,
        route: Any = None,
        prompt_ids: list[int] | None = None,
    ):
        self.chat = chat
        self.run = run  # (task, scheduler, first: bool) -> None: one generate call (see ChatModel.stream)
        self.route = route  # (task) -> bool: route the question once; True when that answered it (abstain)
        self.prompt_ids = prompt_ids or []
        self.disabled: bool | None = None  # the adapter is off for this answer (known once routed)
        self.generator: Any = None  # a sampled answer's own random stream in a batch (seeded per request)
        self.config = config
        self.deadline = deadline
        self.cancel = cancel if cancel is not None else threading.Event()
        self.pieces: queue.Queue[Any] = queue.Queue()
        self.token_ids: list[int] = []
        self.abstain_tokens = 0  # the abstain route's answer, generated outside the streamer
        self.abstain_finish = "stop"  # "length" when that answer was cut by the token limit
        self.text = ""
        self.sent = 0  # how much of ``text`` the reader has been given
        self.stopped = False  # a stop string was met
        self.finish_reason = "stop"
        self.error: BaseException | None = None
        self.done = False
        self.started = False
        self.paused = False
        self.rng_state: Any = None
        self.lock = threading.Lock()
        self.streamer = _streamer_class()(self, chat.tokenizer)

    # -- the scheduler's side

    def emit(self, text: str) -> None:
        """Hand decoded text to the reader, cut at the first stop string.

        A tail of the text that could be the start of a stop string is held back until the next text shows whether
        it is one: once a piece has reached the reader it cannot be taken back (a stop "t e" must not leak the "t").
        """
        if not text or self.stopped:
            return
        self.text += text
        cut = _first_stop(self.text, self.config.stop)
        if cut is not None:
            self.stopped = True
            self.text = self.text[:cut]
        self._release(final=self.stopped)

    def _release(self, *, final: bool) -> None:
        end = len(self.text) if final else len(self.text) - _stop_prefix_len(self.text, self.config.stop)
        if end > self.sent:
            self.pieces.put(self.text[self.sent : end])
            self.sent = end

    def stop_reason(self, tokens: int, scheduler: _Scheduler) -> str | None:
        if self.cancel.is_set() or scheduler.closing:
            return "cancelled"
        if self.stopped:
            return "stop"
        if self.deadline is not None and time.monotonic() > self.deadline:
            return "deadline"
        if self.pieces.qsize() >= BUFFER_PIECES:
            return "pause"
        if tokens >= SLICE_TOKENS and scheduler.waiting():
            return "yield"
        return None

    def run_slice(self, scheduler: _Scheduler) -> None:
        try:
            blocked = self.check_start()
            if blocked is not None:
                self._finish(blocked)
                return
            first = not self.started
            self.started = True
            reason = self.run(self, scheduler, first)
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, which raises it
            self.error = exc
            self._finish("stop")
            return
        if reason in ("pause", "yield"):
            self.leave(reason, scheduler)
            return
        if reason in ("deadline", "length") or (reason is None and len(self.token_ids) >= self.config.max_new_tokens):
            self._finish("length")
        else:
            self._finish("stop")

    def check_start(self) -> str | None:
        """Why this answer must not run (again): ``"stop"`` or ``"length"``; None when it may."""
        if self.cancel.is_set():
            return "stop"
        if self.deadline is not None and time.monotonic() > self.deadline:
            return "length"
        if self.config.max_new_tokens - len(self.token_ids) <= 0:
            return "length"
        return None

    def leave(self, reason: str, scheduler: _Scheduler) -> None:
        """Stop running for now (``"pause"``, ``"yield"``) or for good (``"stop"``, ``"length"``)."""
        if reason not in ("pause", "yield"):
            self._finish(reason)
            return
        with self.lock:
            if reason == "yield" or self.pieces.qsize() < BUFFER_PIECES // 2:
                scheduler.submit(self)
            else:
                self.paused = True  # the reader resubmits it once it has caught up

    def _finish(self, reason: str) -> None:
        with contextlib.suppress(Exception):
            self.streamer.finish()  # the text held back for a word boundary
        self._release(final=True)  # and what was held back as a possible stop string's start
        self.finish_reason = reason
        self.done = True
        # Torch objects are let go here, on the generation thread, not by the reader that drops the task last (see
        # ChatModel._stream: freeing them on a daemon reader's thread at exit can abort the process).
        self.generator = self.rng_state = None
        self.pieces.put(_END)

    # -- the reader's side

    def next(self) -> Any:
        """The next piece of text, or ``_END``; resumes a paused generation once the reader has caught up."""
        while True:
            with self.lock:
                if self.paused and self.cancel.is_set():
                    return _END  # cancelled while paused: nothing will run it again
                if self.paused and self.pieces.qsize() < BUFFER_PIECES // 2:
                    self.paused = False
                    generation_scheduler().submit(self)
            try:
                return self.pieces.get(timeout=1.0)
            except queue.Empty:
                continue


class _Row:
    """One answer in a batch: its task, the real tokens it has in the batch's cache, the token it feeds next."""

    def __init__(self, task: _Task, length: int, pending: int):
        self.task = task
        self.length = length
        self.pending = pending


class _Batch:
    """Answers of one chat model decoded together, one token per row per forward pass, on the generation thread.

    The prompts of the answers that arrive together are read in one forward pass, left-padded to the longest, and
    their KV cache then joins the batch's, both left-padded to the longer length; the attention mask hides the padding
    and each row's positions count only its own tokens, so every row sees what it would see alone. Rows join and
    leave between steps: a new answer that arrives mid-way joins at the next step, and one that ends, is cancelled or
    whose reader falls behind leaves at once (its cache rows are dropped). Decoding one token for 8 rows costs little
    more than for one on a CPU (the weights are read once per step), which is where the throughput comes from.

    Rows with the adapter on and off (the gate's base route, ``use_adapter=False``) and rows of different adapters
    share a batch through :meth:`LoraRows.rows` (or PEFT's per-row ``adapter_names``, "__base__" for off). Where
    PEFT cannot do that (DoRA), the on/off switch is model-wide, so a batch holds rows of one state and answers routed
    the other way wait. Work waiting that the batch cannot take in (another model; a plain call) makes the whole batch
    yield after :data:`SLICE_TOKENS` steps, like a slice; answers that could join a full batch wait for its next free
    row.
    """

    def __init__(self, chat: ChatModel):
        self.chat = chat
        self.rows: list[_Row] = []
        self.cache: Any = None
        self.mask: Any = None  # (rows, cached positions): 1 for a row's real tokens, 0 for its left padding
        self.model = chat.model  # answers of every ChatModel on this model (one AdapterHost's adapters) may join
        self.key: Any = _UNROUTED  # the rows' one adapter (None: off), when they cannot be mixed
        self.mixed = chat.has_adapter and _per_row_adapters(chat.model)
        self.eos_ids = _eos_ids(chat.model, chat.tokenizer)
        top_k = getattr(getattr(chat.model, "generation_config", None), "top_k", None)
        self.top_k = top_k if isinstance(top_k, int) and top_k > 0 else None

    def accepts(self, task: Any) -> bool:
        """Whether a waiting task may join now (same model; the adapter, once routed, matches where rows of
        different adapters cannot be mixed)."""
        return (
            isinstance(task, _Task)
            and task.chat.model is self.model
            and (self.mixed or self.key is _UNROUTED or task.disabled is None or _row_key(task) == self.key)
        )

    def run(self, first: _Task, scheduler: _Scheduler) -> None:
        """Decode until no row is left, admitting newcomers at every step; yield to other waiting work as a slice."""
        import torch

        pending = [first]
        steps = 0
        try:
            with torch.inference_mode():
                while True:
                    room = max(self.chat.max_batch - len(self.rows) - len(pending), 0)
                    pending += scheduler.take_joinable(self, room)
                    if pending:
                        self._admit(pending, scheduler)
                        pending = []
                    if not self.rows:
                        if _has_adapters(self.model):
                            lora_rows(self.model).release()  # the stacked copy of the adapters is not kept idle
                        return
                    if scheduler.closing:
                        for row in self.rows:
                            row.task.leave("stop", scheduler)
                        return
                    # Work the batch cannot take in gets the model after a slice; an answer that can join waits for a
                    # row instead (the batch yielding to it would make every row read its text again to rejoin).
                    if steps >= SLICE_TOKENS and scheduler.waiting() and scheduler.waiting_elsewhere(self):
                        for row in self.rows:
                            row.task.leave("yield", scheduler)
                        return
                    self._step(scheduler)
                    steps += 1
        except Exception as exc:  # noqa: BLE001 - e.g. decoding a token: the generation thread must live on
            logger.error("Batched generation failed: %s", type(exc).__name__, exc_info=exc)
            for task in [row.task for row in self.rows] + pending:
                if not task.done:
                    task.error = exc
                    task.leave("stop", scheduler)

    # -- joining and leaving

    def _admit(self, tasks: list[_Task], scheduler: _Scheduler) -> None:
        """Route the newcomers, read the prompts of those that go on in one forward pass, and join the rows that do
        not end at their first token."""
        ready = [task for task in tasks if self._ready(task, scheduler)]
        if not self.mixed and ready:
            # One adapter state per batch where rows cannot mix: the others run in a later batch.
            key = self.key if self.key is not _UNROUTED else _row_key(ready[0])
            for task in [t for t in ready if _row_key(t) != key]:
                scheduler.submit(task)
            ready = [t for t in ready if _row_key(t) == key]
        if not ready:
            return
        try:
            try:
                out, mask = self._prefill(ready)
            except Exception:
                if len(ready) == 1:
                    raise
                # One newcomer's failure (its adapter file broken since it was last loaded) must not fail the answers
                # of other users read in the same pass: each is read again alone, and only the failing one fails.
                # Nothing was streamed or picked yet, so reading again changes nothing for the others.
                for task in ready:
                    self._admit([task], scheduler)
                return
            cache = out.past_key_values
            if not _plain_cache(cache):
                raise ConfigError(
                    f"Batched chat needs a model with a plain KV cache; {type(self.model).__name__} has "
                    f"{type(cache).__name__}. Set ANDRAEUS_CHAT_BATCH=1."
                )
            tokens = [self._pick(task, out.logits[r, -1]) for r, task in enumerate(ready)]
            reasons = [self._emit(task, token) for task, token in zip(ready, tokens, strict=True)]
        except BaseException as exc:  # noqa: BLE001 - handed to the readers, which raise it
            for task in ready:
                task.error = exc
                task.leave("stop", scheduler)
            return
        going = [r for r, reason in enumerate(reasons) if reason is None]
        if going:
            lengths = mask.sum(-1).tolist()
            if len(going) < len(ready):
                cache, mask = _select_rows(cache, mask, going)
            self.key = _row_key(ready[going[0]])
            self._join([_Row(ready[r], int(lengths[r]), tokens[r]) for r in going], cache, mask)
        # After the cache is trimmed (see _step): a reader that was the process's last work may exit at once.
        for task, reason in zip(ready, reasons, strict=True):
            if reason is not None:
                task.leave(reason, scheduler)

    def _ready(self, task: _Task, scheduler: _Scheduler) -> bool:
        """Route a newcomer (first time only) and check it may run; False when it has left (answered by the abstain
        route, cancelled, out of tokens or time, or failed)."""
        import torch

        try:
            if not task.started:
                task.started = True
                if task.route(task):
                    task.leave(task.abstain_finish, scheduler)
                    return False
            blocked = task.check_start()
            if blocked is not None:
                task.leave(blocked, scheduler)
                return False
            if task.config.temperature > 0 and task.generator is None:
                task.generator = torch.Generator(device=_model_device(self.chat.model))
                if task.config.seed is not None:
                    task.generator.manual_seed(task.config.seed)
                else:
                    task.generator.seed()
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, which raises it
            task.error = exc
            task.leave("stop", scheduler)
            return False
        return True

    def _prefill(self, tasks: list[_Task]) -> tuple[Any, Any]:
        """One forward pass over the newcomers' prompts (and answers so far, for a resumed one), left-padded to the
        longest, each row with its own adapter; returns the model output (last position's logits, the cache) and the
        mask of real tokens."""
        import torch

        device = _model_device(self.chat.model)
        sequences = [task.prompt_ids + task.token_ids for task in tasks]
        width = max(len(seq) for seq in sequences)
        pad = self.chat.tokenizer.pad_token_id
        ids = torch.full((len(tasks), width), pad if pad is not None else 0, dtype=torch.long, device=device)
        mask = torch.zeros((len(tasks), width), dtype=torch.long, device=device)
        for r, seq in enumerate(sequences):
            ids[r, width - len(seq) :] = torch.tensor(seq, dtype=torch.long, device=device)
            mask[r, width - len(seq) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # each row counts its own tokens, as alone
        extra: dict[str, Any] = {}
        with self._adapter_state([_row_key(task) for task in tasks], [task.chat for task in tasks], extra):
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
                **extra,
            )
        return out, mask

    def _join(self, rows: list[_Row], cache: Any, mask: Any) -> None:
        """Add rows, their cache and their mask (left-padded to a common width) to the batch."""
        import torch

        if not self.rows:
            self.rows, self.cache, self.mask = rows, cache, mask
            return
        width = max(self.mask.shape[-1], mask.shape[-1])
        self.mask = torch.cat([_pad_left(self.mask, width, -1), _pad_left(mask, width, -1)], dim=0)
        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([_pad_left(mine.keys, width, -2), _pad_left(theirs.keys, width, -2)], dim=0)
            mine.values = torch.cat([_pad_left(mine.values, width, -2), _pad_left(theirs.values, width, -2)], dim=0)
        self.rows += rows

    def _drop(self, gone: list[int]) -> None:
        """Remove rows (by index) from the cache, then the leading positions that are padding in every row left."""
        if not gone:
            return
        keep = [i for i in range(len(self.rows)) if i not in gone]
        self.rows = [self.rows[i] for i in keep]
        if not self.rows:
            self.cache = self.mask = None
            self.key = _UNROUTED
            return
        self.cache, self.mask = _select_rows(self.cache, self.mask, keep)

    # -- one step

    def _step(self, scheduler: _Scheduler) -> None:
        import torch

        device = self.mask.device
        tokens = torch.tensor([[row.pending] for row in self.rows], dtype=torch.long, device=device)
        positions = torch.tensor([[row.length] for row in self.rows], dtype=torch.long, device=device)
        mask = torch.cat([self.mask, torch.ones((len(self.rows), 1), dtype=self.mask.dtype, device=device)], dim=-1)
        keys = [_row_key(row.task) for row in self.rows]
        extra: dict[str, Any] = {}
        try:
            # Several keys only when self.mixed: one forward pass, each row with its own adapter or none.
            with self._adapter_state(keys, [row.task.chat for row in self.rows], extra):
                out = self.model(
                    input_ids=tokens,
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=self.cache,
                    use_cache=True,
                    **extra,
                )
        except BaseException as exc:  # noqa: BLE001 - every row's reader raises it
            for row in self.rows:
                row.task.error = exc
                row.task.leave("stop", scheduler)
            self.rows, self.cache, self.mask, self.key = [], None, None, _UNROUTED
            return
        self.mask = mask
        gone: list[int] = []
        leaving: list[tuple[_Task, str]] = []
        for i, row in enumerate(self.rows):
            row.length += 1
            reason = self._emit(row.task, self._pick(row.task, out.logits[i, -1]))
            if reason is None and row.task.cancel.is_set():
                reason = "stop"
            if reason is not None:
                leaving.append((row.task, reason))
                gone.append(i)
            else:
                row.pending = row.task.token_ids[-1]
        # The cache is trimmed before the leaving rows' readers get their end: a reader that was the process's last
        # work may exit at once, and no torch op of this step should still be running then.
        self._drop(gone)
        for task, reason in leaving:
            task.leave(reason, scheduler)

    def _emit(self, task: _Task, token: int) -> str | None:
        """Hand one generated token to the task's streamer; returns why the row must leave now (None: it goes on)."""
        import torch

        task.streamer.next_tokens_are_prompt = False  # the prompt was read by this batch, not by generate
        task.streamer.put(torch.tensor([token]))
        task.streamer.next_tokens_are_prompt = True  # as generate leaves it, should a later slice run through it
        if token in self.eos_ids:
            return "stop"
        if task.cancel.is_set() or task.stopped:
            return "stop"
        if len(task.token_ids) >= task.config.max_new_tokens:
            return "length"
        if task.deadline is not None and time.monotonic() > task.deadline:
            return "length"
        if task.pieces.qsize() >= BUFFER_PIECES:
            return "pause"
        return None

    def _pick(self, task: _Task, logits: Any) -> int:
        """The next token from one row's logits, as ``generate`` picks it (transformers' own logits processors:
        repetition penalty, then greedy or temperature / top-k / top-p sampling from the row's own generator)."""
        import torch
        from transformers.generation.logits_process import (
            LogitsProcessorList,
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        config = task.config
        scores = logits.float().unsqueeze(0)
        if config.temperature <= 0 and config.repetition_penalty == 1.0:
            return int(scores.argmax())  # greedy, nothing to process
        seen = torch.tensor([task.prompt_ids + task.token_ids], dtype=torch.long, device=scores.device)
        steps = LogitsProcessorList()
        if config.repetition_penalty != 1.0:
            steps.append(RepetitionPenaltyLogitsProcessor(float(config.repetition_penalty)))
        if config.temperature > 0:
            steps.append(TemperatureLogitsWarper(float(config.temperature)))
            if self.top_k is not None:
                steps.append(TopKLogitsWarper(self.top_k))
            if config.top_p < 1.0:
                steps.append(TopPLogitsWarper(float(config.top_p)))
        scores = steps(seen, scores)[0]
        if config.temperature <= 0:
            return int(scores.argmax())
        return int(torch.multinomial(scores.softmax(dim=-1), 1, generator=task.generator))

    def _names(self) -> set[str]:
        """The adapters the batch's rows use (an AdapterHost must not evict them)."""
        return {key for key in (_row_key(row.task) for row in self.rows) if key is not None}

    def _adapter_state(self, keys: list[str | None], chats: list[ChatModel], extra: dict[str, Any]) -> Any:
        """A context for one forward pass over rows with these adapter keys (of these chat models): the adapter off
        (all None), the one adapter active, or each row with its own. Rows of several adapters (and rows with it off)
        go through :meth:`LoraRows.rows` (stacked, one pass), or where it cannot stack them through PEFT's per-row
        ``adapter_names``, which it then adds to ``extra``. The batch's rows' adapters and these stay loaded."""
        keep = self._names() | {key for key in keys if key is not None}
        if len(set(keys)) > 1:
            for chat in chats:
                chat.activate(keep=keep, switch=False)  # loaded (it may load, so before the layers are read)
            rows = lora_rows(self.model)
            if rows.supports(keys):
                return rows.rows(keys)
            extra["adapter_names"] = ["__base__" if key is None else key for key in keys]
            return contextlib.nullcontext()
        if keys[0] is None:
            return lora_rows(self.model).off() if _has_adapters(self.model) else contextlib.nullcontext()
        chats[0].activate(keep=keep)
        return contextlib.nullcontext()


_UNROUTED = object()  # a batch's adapter key before its first row


def _row_key(task: _Task) -> str | None:
    """The adapter a row decodes with: its ChatModel's adapter name, or None for the adapter off (base route)."""
    return None if task.disabled or not task.chat.has_adapter else task.chat.adapter_name


def _select_rows(cache: Any, mask: Any, keep: list[int]) -> tuple[Any, Any]:
    """Only these rows of a cache and its mask, without the leading positions that are padding in all of them."""
    import torch

    index = torch.tensor(keep, device=mask.device)
    mask = mask[index]
    start = int(mask.any(dim=0).nonzero()[0])  # the first position some row still uses
    for layer in cache.layers:
        layer.keys = layer.keys[index, :, start:]
        layer.values = layer.values[index, :, start:]
    return cache, mask[:, start:]


def _has_adapters(model: Any) -> bool:
    return bool(getattr(model, "peft_config", None))


def _pad_left(tensor: Any, width: int, dim: int) -> Any:
    """``tensor`` with zeros prepended along ``dim`` up to ``width`` (zeros: masked out, never attended to)."""
    import torch

    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _per_row_adapters(model: Any) -> bool:
    """Whether PEFT can switch the adapter per row (``adapter_names``): LoRA without DoRA, in eval mode."""
    configs = getattr(model, "peft_config", None)
    if not configs or getattr(model, "training", True):
        return False
    return all(getattr(c, "peft_type", None) == "LORA" and not getattr(c, "use_dora", False) for c in configs.values())


def _plain_cache(cache: Any) -> bool:
    """Whether every layer of the cache is a plain growing one (keys/values ``[batch, heads, seq, dim]``)."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def _model_device(model: Any) -> Any:
    device = getattr(model, "device", None)
    if device is None:
        device = next(model.parameters()).device
    return device


class AdapterHost:
    """One base model carrying several LoRA adapters, each under its own name (PEFT's multi-adapter model), so that
    the answers of different adapters share one batch: each row names its adapter (``adapter_names``), and the gate's
    base route is ``"__base__"``. One copy of the base weights serves every adapter, and an adapter costs only its own
    weights (about 80 MB for r=64 on smollm2-135m), so many more stay loaded than whole models would.

    At most ``capacity`` adapters stay loaded; the least recently used one is unloaded to make room (never one a
    running batch uses) and loaded again when asked for. Adding, unloading and switching change the model, so they run
    on the generation thread (:func:`on_generation_thread`), between forward passes.

    The host owns its base model: PEFT injects the LoRA layers into it, so it must not be a model others use bare.
    """

    def __init__(self, loaded: LoadedModel, capacity: int = 8):
        if capacity < 1:
            raise ConfigError(f"An adapter host holds at least one adapter, got capacity {capacity}.")
        self.loaded = loaded
        self.capacity = capacity
        self.model: Any = None  # the PeftModel, from the first adapter on
        self._loaded: dict[str, Path] = {}  # name -> adapter directory, least recently used first

    @staticmethod
    def name_of(adapter: Adapter) -> str:
        """The adapter's name in the model: a hash of its directory (never the tenant's or the user's words)."""
        import hashlib

        return "a" + hashlib.sha256(str(adapter.path.resolve()).encode()).hexdigest()[:16]

    def add(self, adapter: Adapter) -> str:
        """Load ``adapter`` (from any thread; the work runs on the generation thread) and return its name.

        Raises:
            AdapterError: the adapter is incomplete or does not fit the base model.
        """
        return on_generation_thread(lambda: self.ensure(adapter, keep=set()))

    def remove(self, path: str | Path) -> None:
        """Unload the adapter of directory ``path`` if it is loaded (its model was deleted)."""
        resolved = Path(path).resolve()
        on_generation_thread(lambda: [self._unload(n) for n, p in list(self._loaded.items()) if p == resolved])

    def loaded_names(self) -> list[str]:
        """The adapters loaded now, least recently used first."""
        return list(self._loaded)

    def ensure(self, adapter: Adapter, *, keep: set[str]) -> str:
        """On the generation thread: ``adapter`` loaded (loading it, and unloading the least recently used one not
        in ``keep`` past the capacity); returns its name."""
        name = self.name_of(adapter)
        if name in self._loaded:
            self._loaded[name] = self._loaded.pop(name)  # most recently used
            return name
        from peft import PeftModel

        adapter.check()
        try:
            if self.model is None:
                self.model = PeftModel.from_pretrained(
                    self.loaded.model, str(adapter.path), adapter_name=name, is_trainable=False
                )
                self.model.eval()
            else:
                self.model.load_adapter(str(adapter.path), adapter_name=name, is_trainable=False)
        except Exception as exc:  # noqa: BLE001 - PEFT raises many kinds; the user needs one actionable message
            if self.model is not None and name in getattr(self.model, "peft_config", {}):
                with contextlib.suppress(Exception):
                    self.model.delete_adapter(name)  # half loaded: nothing of it may stay
            raise AdapterError(
                f"Could not load the adapter in '{adapter.path}' onto base model '{self.loaded.name}': {exc}",
                param="adapter",
            ) from None
        self._loaded[name] = adapter.path.resolve()
        lora_rows(self.model).invalidate()  # new layers may have been wrapped
        for old in list(self._loaded):
            if len(self._loaded) <= self.capacity:
                break
            if old != name and old not in keep:
                self._unload(old)
        return name

    def _unload(self, name: str) -> None:
        if name in self._loaded:
            del self._loaded[name]
            self.model.delete_adapter(name)
            lora_rows(self.model).invalidate()


class ChatModel:
    """A base model with an optional LoRA adapter, for chatting.

    Every generation runs on the process's one generation thread (:func:`generation_scheduler`). Answers that arrive
    while others run join them in one batch (up to :attr:`max_batch` rows, :class:`_Batch`); otherwise they take
    turns a slice at a time. Toggling the adapter on/off is model-wide state, so a batch holds only answers with the
    adapter in the same state, and slices never overlap.

    Attributes:
        gate: the adapter's gate, or None (no adapter, an adapter without one, or ``gate=False``).
    """

    def __init__(
        self,
        loaded: LoadedModel,
        adapter: Adapter | str | Path | None = None,
        system_prompt: str | None = None,
        *,
        gate: bool = True,
        max_batch: int | None = None,
        host: AdapterHost | None = None,
    ):
        #: Answers decoded together in one batch (1: one at a time, in slices); settable, read at every batch start.
        self.max_batch = max_batch if max_batch is not None else default_max_batch()
        self.adapter = adapter if isinstance(adapter, Adapter) or adapter is None else Adapter(adapter)
        self.system_prompt = system_prompt
        #: The AdapterHost this model's adapter lives in, beside others (None: the adapter has the model to itself).
        #: Without an adapter the host is not used: its base model carries other adapters' layers.
        self.host = host if self.adapter is not None else None
        self.loaded = self.host.loaded if self.host is not None else loaded
        #: The adapter's name in the PEFT model ("default" when it has the model to itself).
        self.adapter_name: str | None = None
        if self.host is not None and self.adapter is not None:
            self.adapter_name = self.host.add(self.adapter)
            self.model = self.host.model
        else:
            self.model = self.adapter.attach(loaded) if self.adapter is not None else loaded.model
            self.adapter_name = "default" if self.adapter is not None else None
        self.gate = self.adapter.gate() if self.adapter is not None and gate else None
        # Values the abstain route must never state (from private.json; a pulled adapter has none to leak).
        profile = self.adapter.private.profile if self.adapter is not None else None
        self._values = [v for v in profile.values() if v] if profile is not None else []

    def activate(self, *, keep: set[str] | None = None, switch: bool = True) -> None:
        """Make sure this model's adapter is loaded in its host (again, if it was evicted) and, with ``switch``, is
        the active one. On the generation thread only; nothing to do for an adapter that has the model to itself."""
        if self.host is None or self.adapter is None or self.adapter_name is None:
            return
        self.host.ensure(self.adapter, keep=keep or set())
        if switch and self.model.active_adapter != self.adapter_name:
            self.model.set_adapter(self.adapter_name, inference_mode=True)

    @property
    def adapter_dir(self) -> Path | None:
        """The adapter's directory (None for the bare base model)."""
        return self.adapter.path if self.adapter is not None else None

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer

    @property
    def has_adapter(self) -> bool:
        return self.adapter_dir is not None

    def build_messages(
        self,
        messages: Sequence[Message | dict[str, str]],
        system: str | None = None,
    ) -> list[dict[str, str]]:
        """Normalise a conversation and put the system prompt first (explicit > conversation's > adapter's)."""
        normalised = [m.model_dump() if isinstance(m, Message) else dict(Message(**m).model_dump()) for m in messages]
        if not normalised or normalised[-1]["role"] != "user":
            raise ConfigError("A conversation must end with a user message.", param="messages")
        has_system = normalised[0]["role"] == "system"
        chosen = system if system is not None else (None if has_system else self.system_prompt)
        if chosen is not None:
            if has_system:
                normalised = normalised[1:]
            normalised = [{"role": "system", "content": chosen}, *normalised]
        return normalised

    def prompt_ids(self, messages: Sequence[Message | dict[str, str]], system: str | None = None) -> Any:
        """Token ids of the conversation rendered with the model's chat template, ready for generation."""
        rendered = self.build_messages(messages, system)
        return self.tokenizer.apply_chat_template(
            rendered, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )

    def _generate_kwargs(self, config: GenerationConfig) -> dict[str, Any]:
        # No stop_strings: transformers precomputes a table over the whole vocabulary per stop string (5,000
        # characters took 42 s and 1.8 GB); the decoded answer is matched instead (_Task.emit).
        kwargs: dict[str, Any] = {
            "pad_token_id": self.tokenizer.pad_token_id,
            "repetition_penalty": config.repetition_penalty,
        }
        if config.temperature > 0:
            kwargs.update(do_sample=True, temperature=config.temperature, top_p=config.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    @property
    def profile(self) -> Profile | None:
        """The profile the adapter was trained on (None: no adapter, or a pulled one without its private file)."""
        return self.adapter.private.profile if self.adapter is not None else None

    @property
    def speakers(self) -> list[str]:
        """A family adapter's people, who may say who is asking (empty for a one-person adapter)."""
        return speaker_choices(self.profile)

    def speaker_prompt(self, speaker: str | None, system: str | None = None) -> tuple[str | None, DisclosureGuard]:
        """The system prompt for ``speaker`` and the rule that keeps others' private facts from them.

        For a family adapter the speaker's prompt replaces any other when a speaker is named, and is the default
        otherwise; what is withheld depends on ``speaker`` alone, never on a prompt a caller wrote. For a one-person
        adapter ``system`` is returned as it is, and naming a speaker is an error.

        Raises:
            ConfigError: a speaker for a one-person adapter, or a name that is no one in the family.
        """
        profile = self.profile
        person = resolve_speaker(profile, speaker)  # raises for a one-person adapter or an unknown name
        if profile is None or not profile.is_family:
            return system, disclosure_guard(None, None)
        if person is not None or system is None:
            system = speaker_system_prompt(profile, person)
        return system, disclosure_guard(profile, person)

    def stream(
        self,
        messages: Sequence[Message | dict[str, str]],
        config: GenerationConfig | None = None,
        *,
        system: str | None = None,
        use_adapter: bool = True,
        usage: dict[str, Any] | None = None,
        gate: bool = True,
        trace: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        cancel: threading.Event | None = None,
        speaker: str | None = None,
    ) -> Iterator[str]:
        """Yield the answer piece by piece as it is generated.

        For a family adapter ``speaker`` (a name, relation or alias) says who is asking: the answer is theirs
        ("my birthday" is the speaker's), and a value of someone else's private fact is never sent — the answer is
        replaced by a refusal. Where such a value could be said (a speaker, or no speaker, with private facts of others
        in the profile) the answer is checked whole and sent as one piece.

        Generation runs on this process's generation thread, never waiting for the reader: it pauses when the reader
        falls :data:`BUFFER_PIECES` pieces behind and ends when the reader goes away (the iterator is closed) or
        ``cancel`` is set, so a slow or vanished client holds no model time.

        Args:
            messages: the conversation so far, ending with the user's message.
            config: decoding settings (greedy by default).
            system: a system prompt overriding the adapter's/conversation's.
            use_adapter: ``False`` asks the bare base model (same weights, adapter disabled).
            usage: when given, set once the generation ends: ``completion_tokens`` (the tokens generated, at most
                ``config.max_new_tokens``) and ``finish_reason`` (``"length"``: cut by the token or time limit).
            gate: route the question through the adapter's gate (when it has one); ``False`` always asks the
                adapter.
            trace: when given, ``trace["route"]`` is set to who answered: ``adapter``, ``abstain`` or ``base``.
            timeout_s: the longest the generation may run (queueing included); then it ends as if cut by length.
            cancel: set it from another thread to end the generation at its next token.
            speaker: who is asking, for a family adapter (see above); an error for a one-person adapter.

        Raises:
            ConfigError: a malformed conversation, or a ``speaker`` that is not one of the family.
        """
        system, guard = self.speaker_prompt(speaker, system)
        trace = trace if trace is not None else {}  # the route decides which of the guard's rules apply
        pieces = self._stream(
            messages,
            config,
            system=system,
            use_adapter=use_adapter,
            usage=usage,
            gate=gate,
            trace=trace,
            timeout_s=timeout_s,
            cancel=cancel,
        )
        if not guard:
            yield from pieces
            return
        question = str(self.build_messages(messages, system)[-1]["content"])
        try:
            text = "".join(pieces)
        finally:
            pieces.close()
        refused = guard.check(text, question) if use_adapter else None
        if refused is not None:
            logger.info("an answer stated a private fact the speaker may not be told; sent the refusal instead")
            trace["withheld"] = True
        elif use_adapter and trace.get("route", "adapter") == "adapter":
            refused = guard.check_first_person(text, question)
            if refused is not None:
                logger.info("an answer about the speaker stated another person's fact; sent 'I don't know' instead")
                trace["withheld"] = True
        yield refused if refused is not None else text

    def _stream(
        self,
        messages: Sequence[Message | dict[str, str]],
        config: GenerationConfig | None = None,
        *,
        system: str | None = None,
        use_adapter: bool = True,
        usage: dict[str, Any] | None = None,
        gate: bool = True,
        trace: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[str]:
        config = config or GenerationConfig()
        # Plain ints, not a tensor: this generator runs on the reader's thread, and a tensor freed there while the
        # interpreter finalises (a daemon reader woken by the exit's drain) aborts the process: freeing a tensor lets
        # go of the GIL, and a daemon thread that wants it back then is ended mid C++ frame (std::terminate).
        prompt_ids: list[int] = self.prompt_ids(messages, system)["input_ids"][0].tolist()
        kwargs = self._generate_kwargs(config)
        gating = self.gate is not None and gate and use_adapter
        question = str(self.build_messages(messages, system)[-1]["content"]) if gating else ""
        state: dict[str, Any] = {"route": "adapter"}
        eos_ids = _eos_ids(self.model, self.tokenizer)

        def route_once(task: _Task) -> bool:
            """Route the question (on the generation thread); True when the abstain route has answered it."""
            import torch

            with torch.inference_mode():
                # The gate runs here, on the generation thread, like every other forward pass (one OpenMP team).
                route: Route = self.gate.route(self.model, self.tokenizer, [question])[0] if gating else "adapter"
                if route == "adapter" and gating and self.gate.meta.threshold_decline is not None:
                    self.activate()
                    if self.gate.declined(self.model, self.tokenizer, [self.build_messages(messages, system)])[0]:
                        route = "abstain"
                state["route"] = route
                if trace is not None:
                    trace["route"] = route if self.has_adapter and use_adapter else "base"
                if route == "abstain":
                    text, n_tokens, cut = self._abstain(messages, system, question, config.max_new_tokens)
                    task.abstain_tokens = n_tokens
                    task.abstain_finish = "length" if cut else "stop"
                    task.emit(text)
                    return True
            task.disabled = self.has_adapter and (not use_adapter or route == "base")
            return False

        def run(task: _Task, scheduler: _Scheduler, first: bool) -> str | None:
            """One slice of generation, on the scheduler's thread; returns why it stopped (None: the model ended)."""
            import torch
            from transformers import StoppingCriteriaList

            with torch.inference_mode():
                if first:
                    if route_once(task):
                        return task.abstain_finish
                    if config.seed is not None:
                        torch.manual_seed(config.seed)
                elif task.rng_state is not None:
                    _set_rng_state(task.rng_state)  # a resumed sampled answer goes on as if alone
                device = _model_device(self.model)
                ids = torch.tensor([task.prompt_ids + task.token_ids], dtype=torch.long, device=device)
                stop = _SliceStop(task, scheduler)
                if not task.disabled:
                    self.activate()
                with lora_rows(self.model).off() if task.disabled else contextlib.nullcontext():
                    self.model.generate(
                        input_ids=ids,
                        attention_mask=torch.ones_like(ids),
                        max_new_tokens=config.max_new_tokens - len(task.token_ids),
                        streamer=task.streamer,
                        stopping_criteria=StoppingCriteriaList([stop]),
                        **kwargs,
                    )
                if stop.reason in ("pause", "yield") and task.token_ids and task.token_ids[-1] in eos_ids:
                    return None  # the slice ended on the model's own end token: nothing to resume
                if config.temperature > 0 and stop.reason in ("pause", "yield"):
                    task.rng_state = _rng_state(ids.device)
                return stop.reason

        deadline = time.monotonic() + timeout_s if timeout_s is not None else None
        task = _Task(self, run, config, deadline, cancel, route=route_once, prompt_ids=prompt_ids)
        generation_scheduler().submit(task)
        try:
            while True:
                piece = task.next()
                if piece is _END:
                    break
                yield piece
        finally:
            task.cancel.set()  # the reader is gone (or done): a generation still running ends at its next token
        if task.error is not None:
            raise task.error
        if usage is not None:
            usage["completion_tokens"] = min(len(task.token_ids) + task.abstain_tokens, config.max_new_tokens)
            usage["finish_reason"] = task.finish_reason

    def reply(
        self,
        messages: Sequence[Message | dict[str, str]],
        config: GenerationConfig | None = None,
        *,
        system: str | None = None,
        use_adapter: bool = True,
        gate: bool = True,
        speaker: str | None = None,
    ) -> str:
        """The whole answer as one string (see :meth:`stream`)."""
        pieces = self.stream(messages, config, system=system, use_adapter=use_adapter, gate=gate, speaker=speaker)
        return "".join(pieces).strip()

    def _abstain(
        self, messages: Sequence[Message | dict[str, str]], system: str | None, question: str, max_tokens: int
    ) -> tuple[str, int, bool]:
        """The abstain route's answer: the adapter continues "I don't know" (it was trained to name the topic) and
        the first sentence is kept unless it states a profile value. Returns the text, its token count, and whether
        ``max_tokens`` cut it."""
        rendered = self.build_messages(messages, system)
        prompt = self.tokenizer.apply_chat_template(rendered, add_generation_prompt=True, tokenize=False)
        ids = self.tokenizer(prompt + ABSTENTION_PREFIX, add_special_tokens=False, return_tensors="pt")
        self.activate()
        out = self.model.generate(
            **ids,
            max_new_tokens=32,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        continuation = self.tokenizer.decode(out[0, ids["input_ids"].shape[-1] :], skip_special_tokens=True)
        text = abstention(continuation, self._values, question=question)
        tokens = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self.tokenizer.decode(tokens[:max_tokens]), min(len(tokens), max_tokens), len(tokens) > max_tokens

    def ask(self, question: str, config: GenerationConfig | None = None, **kwargs: Any) -> str:
        """One question, no history."""
        return self.reply([{"role": "user", "content": question}], config, **kwargs)


def default_max_batch() -> int:
    """Rows per chat batch: ``ANDRAEUS_CHAT_BATCH`` when set (1 turns batching off), else :data:`MAX_BATCH`."""
    raw = os.environ.get("ANDRAEUS_CHAT_BATCH", "").strip()
    if not raw:
        return MAX_BATCH
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"ANDRAEUS_CHAT_BATCH must be a whole number of rows, got {raw!r}.") from None
    if value < 1:
        raise ConfigError(f"ANDRAEUS_CHAT_BATCH must be at least 1 (1 = no batching), got {value}.")
    return value


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """The token ids that end an answer (generate stops at any of them)."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(tokenizer.eos_token_id)
    return {int(i) for i in ids if i is not None}


def _rng_state(device: Any) -> Any:
    """The sampler's random state on ``device`` (sampling on a GPU draws from that GPU's generator)."""
    import torch

    if device.type == "cuda":
        return device, torch.cuda.get_rng_state(device)
    return device, torch.random.get_rng_state()


def _set_rng_state(saved: Any) -> None:
    import torch

    device, state = saved
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.random.set_rng_state(state)


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    positions = [text.find(s) for s in stops if s and s in text]
    return min(positions) if positions else None


def _stop_prefix_len(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that is the beginning of a stop string (0: none)."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best


def load_chat_model(
    base_model: str | None = None,
    adapter: str | Path | None = None,
    *,
    quantize: Quantize = None,
    system_prompt: str | None = None,
    cached: bool = False,
    gate: bool = True,
    host: AdapterHost | None = None,
) -> ChatModel:
    """Load a model for chatting.

    Args:
        base_model: preset, directory or Hub id; default: the adapter's base model, else the automatic default.
        adapter: a LoRA adapter directory (PEFT format, safetensors weights), or a Hub repo id
            ``owner/name[@revision]`` (pulled anonymously with :func:`andraeus_core.hub.resolve_adapter`).
        quantize: ``"4bit"`` to load the base model in NF4.
        system_prompt: default system prompt; default: the one the adapter was trained with, if known.
        cached: reuse a process-wide copy of the base model (servers); the adapter is then loaded on top of it
            only when none is given, because PEFT mutates the base model it wraps.
        gate: load the adapter's gate, if it has one (``False``: the adapter answers everything).
        host: load the adapter into this :class:`AdapterHost` (its base model, beside other adapters, so that their
            answers share batches) instead of onto a base model of its own; ``base_model`` is then the host's.

    Raises:
        AdapterError: the adapter directory is missing, incomplete or does not fit the base model.
        ModelNotAvailableError: the base model cannot be found.
    """
    found = Adapter.load(resolve_adapter(adapter)) if adapter is not None else None
    if found is not None:
        base_model = base_model or found.base_model
        if system_prompt is None:
            system_prompt = found.private.system_prompt or None
    if host is not None and found is not None:
        return ChatModel(host.loaded, found, system_prompt, gate=gate, host=host)
    if cached and found is None:
        loaded = get_cached_model(base_model, quantize=quantize)
    else:
        loaded = load_model(base_model, quantize=quantize)
    return ChatModel(loaded, found, system_prompt, gate=gate)
