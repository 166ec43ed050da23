"""Generation with a base model, optionally with a LoRA adapter: streaming, greedy or sampled, with history.

With an adapter that has a gate (:mod:`.gate`), every question is routed first: about the user -> the adapter;
an unknown personal topic -> "I don't know ..."; anything else -> the base model with the adapter disabled.
"""

from __future__ import annotations

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
from .errors import ConfigError
from .gate import ABSTENTION_PREFIX, Route, abstention
from .hub import resolve_adapter
from .models import LoadedModel, Quantize, get_cached_model, load_model

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
        self._thread = threading.Thread(target=self._loop, name="andraeus-generate", daemon=True)
        self._thread.start()

    def submit(self, task: _Task) -> None:
        with self._cond:
            self._ready.append(task)
            self._cond.notify()

    def waiting(self) -> bool:
        """Whether another generation is ready to run (read without the lock: a hint, checked after every token)."""
        return bool(self._ready)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._ready:
                    self._cond.wait()
                task = self._ready.popleft()
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

    def __init__(self, chat: ChatModel, run: Any, config: GenerationConfig, deadline: float | None, cancel: Any):
        self.chat = chat
        self.run = run  # (task, scheduler, first: bool) -> None: one generate call (see ChatModel.stream)
        self.config = config
        self.deadline = deadline
        self.cancel = cancel if cancel is not None else threading.Event()
        self.pieces: queue.Queue[Any] = queue.Queue()
        self.token_ids: list[int] = []
        self.abstain_tokens = 0  # the abstain route's answer, generated outside the streamer
        self.text = ""
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
        """Hand decoded text to the reader, cut at the first stop string."""
        if not text or self.stopped:
            return
        before = len(self.text)
        self.text += text
        cut = _first_stop(self.text, self.config.stop)
        if cut is not None:
            self.stopped = True
            self.text = self.text[:cut]
            text = self.text[before:]
        if text:
            self.pieces.put(text)

    def stop_reason(self, tokens: int, scheduler: _Scheduler) -> str | None:
        if self.cancel.is_set():
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
            if self.cancel.is_set():
                self._finish("stop")
                return
            if self.deadline is not None and time.monotonic() > self.deadline:
                self._finish("length")
                return
            remaining = self.config.max_new_tokens - len(self.token_ids)
            if remaining <= 0:
                self._finish("length")
                return
            first = not self.started
            self.started = True
            reason = self.run(self, scheduler, first)
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, which raises it
            self.error = exc
            self._finish("stop")
            return
        if reason in ("pause", "yield"):
            with self.lock:
                if reason == "yield" or self.pieces.qsize() < BUFFER_PIECES // 2:
                    scheduler.submit(self)
                else:
                    self.paused = True  # the reader resubmits it once it has caught up
            return
        if reason == "deadline" or (reason is None and len(self.token_ids) >= self.config.max_new_tokens):
            self._finish("length")
        else:
            self._finish("stop")

    def _finish(self, reason: str) -> None:
        with contextlib.suppress(Exception):
            self.streamer.finish()  # the text held back for a word boundary
        self.finish_reason = reason
        self.done = True
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


class ChatModel:
    """A base model with an optional LoRA adapter, for chatting.

    Every generation runs on the process's one generation thread (:func:`generation_scheduler`), a slice at a time:
    toggling the adapter on/off is model-wide state, so slices never overlap.

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
    ):
        self.loaded = loaded
        self.adapter = adapter if isinstance(adapter, Adapter) or adapter is None else Adapter(adapter)
        self.system_prompt = system_prompt
        self.model = self.adapter.attach(loaded) if self.adapter is not None else loaded.model
        self.gate = self.adapter.gate() if self.adapter is not None and gate else None
        # Values the abstain route must never state (from private.json; a pulled adapter has none to leak).
        profile = self.adapter.private.profile if self.adapter is not None else None
        self._values = [v for v in profile.values() if v] if profile is not None else []

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
    ) -> Iterator[str]:
        """Yield the answer piece by piece as it is generated.

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
        """
        config = config or GenerationConfig()
        inputs = self.prompt_ids(messages, system)
        prompt = inputs["input_ids"]
        kwargs = self._generate_kwargs(config)
        gating = self.gate is not None and gate and use_adapter
        question = str(self.build_messages(messages, system)[-1]["content"]) if gating else ""
        state: dict[str, Any] = {"route": "adapter"}
        eos_ids = _eos_ids(self.model, self.tokenizer)

        def run(task: _Task, scheduler: _Scheduler, first: bool) -> str | None:
            """One slice of generation, on the scheduler's thread; returns why it stopped (None: the model ended)."""
            import torch
            from transformers import StoppingCriteriaList

            with torch.inference_mode():
                if first:
                    # The gate runs here, on the generation thread, like every other forward pass (one OpenMP team).
                    route: Route = self.gate.route(self.model, self.tokenizer, [question])[0] if gating else "adapter"
                    state["route"] = route
                    if trace is not None:
                        trace["route"] = route if self.has_adapter and use_adapter else "base"
                    if route == "abstain":
                        text, n_tokens = self._abstain(messages, system, question, config.max_new_tokens)
                        task.abstain_tokens = n_tokens
                        task.emit(text)
                        return "stop"
                    if config.seed is not None:
                        torch.manual_seed(config.seed)
                elif task.rng_state is not None:
                    _set_rng_state(task.rng_state)  # a resumed sampled answer goes on as if alone
                device = getattr(self.model, "device", prompt.device)
                ids = prompt
                if task.token_ids:
                    ids = torch.cat([prompt, torch.tensor([task.token_ids], dtype=prompt.dtype)], dim=-1)
                ids = ids.to(device)
                stop = _SliceStop(task, scheduler)
                disabled = self.has_adapter and (not use_adapter or state["route"] == "base")
                with self.model.disable_adapter() if disabled else contextlib.nullcontext():
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
        task = _Task(self, run, config, deadline, cancel)
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
    ) -> str:
        """The whole answer as one string (see :meth:`stream`)."""
        return "".join(self.stream(messages, config, system=system, use_adapter=use_adapter, gate=gate)).strip()

    def _abstain(
        self, messages: Sequence[Message | dict[str, str]], system: str | None, question: str, max_tokens: int
    ) -> tuple[str, int]:
        """The abstain route's answer: the adapter continues "I don't know" (it was trained to name the topic) and
        the first sentence is kept unless it states a profile value. Returns the text and its token count."""
        rendered = self.build_messages(messages, system)
        prompt = self.tokenizer.apply_chat_template(rendered, add_generation_prompt=True, tokenize=False)
        ids = self.tokenizer(prompt + ABSTENTION_PREFIX, add_special_tokens=False, return_tensors="pt")
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
        tokens = self.tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
        return self.tokenizer.decode(tokens), len(tokens)

    def ask(self, question: str, config: GenerationConfig | None = None, **kwargs: Any) -> str:
        """One question, no history."""
        return self.reply([{"role": "user", "content": question}], config, **kwargs)


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


def load_chat_model(
    base_model: str | None = None,
    adapter: str | Path | None = None,
    *,
    quantize: Quantize = None,
    system_prompt: str | None = None,
    cached: bool = False,
    gate: bool = True,
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

    Raises:
        AdapterError: the adapter directory is missing, incomplete or does not fit the base model.
        ModelNotAvailableError: the base model cannot be found.
    """
    found = Adapter.load(resolve_adapter(adapter)) if adapter is not None else None
    if found is not None:
        base_model = base_model or found.base_model
        if system_prompt is None:
            system_prompt = found.private.system_prompt or None
    if cached and found is None:
        loaded = get_cached_model(base_model, quantize=quantize)
    else:
        loaded = load_model(base_model, quantize=quantize)
    return ChatModel(loaded, found, system_prompt, gate=gate)
