"""Generation with a base model, optionally with a LoRA adapter: streaming, greedy or sampled, with history.

With an adapter that has a gate (:mod:`.gate`), every question is routed first: about the user -> the adapter;
an unknown personal topic -> "I don't know ..."; anything else -> the base model with the adapter disabled.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

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


class GenerationConfig(BaseModel):
    """How to decode. ``temperature == 0`` means greedy decoding (deterministic)."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature; 0 = greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass (only when sampling).")
    max_new_tokens: int = Field(256, ge=1, le=4096, description="Upper bound on generated tokens.")
    stop: list[str] = Field(default_factory=list, max_length=8, description="Strings that end the answer.")
    repetition_penalty: float = Field(1.0, ge=1.0, le=2.0, description="Penalty on repeated tokens (1 = none).")
    seed: int | None = Field(None, description="Seed for sampling, for reproducible sampled answers.")


_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def generation_executor() -> ThreadPoolExecutor:
    """The one long-lived thread that runs every streamed generation in this process.

    torch's CPU backend (OpenMP) gives each OS thread that runs parallel work its own thread team; once two threads
    have done so, the two teams contend for the cores and decoding on 2 cores fell from ~29 to ~17 tokens/s
    (measured with bench/chat_latency.py). Reusing one thread keeps a single team. Generations are serialised, which
    costs nothing on a CPU whose cores one generation already fills.
    """
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="andraeus-generate")
        return _executor


class _StopFlag:
    """A transformers StoppingCriteria that ends generation when the consumer goes away.

    It is called after every generated token, so it also records the sequence length (prompt + tokens so far).
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.length = 0

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
        self.length = int(input_ids.shape[-1])
        return self.event.is_set()


class ChatModel:
    """A base model with an optional LoRA adapter, for chatting.

    Generation is serialised per model (one at a time): toggling the adapter on/off is model-wide state.

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
        self._lock = threading.Lock()
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
        kwargs: dict[str, Any] = {
            "max_new_tokens": config.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "repetition_penalty": config.repetition_penalty,
        }
        if config.temperature > 0:
            kwargs.update(do_sample=True, temperature=config.temperature, top_p=config.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if config.stop:
            kwargs.update(stop_strings=list(config.stop), tokenizer=self.tokenizer)
        return kwargs

    def stream(
        self,
        messages: Sequence[Message | dict[str, str]],
        config: GenerationConfig | None = None,
        *,
        system: str | None = None,
        use_adapter: bool = True,
        usage: dict[str, int] | None = None,
        gate: bool = True,
        trace: dict[str, Any] | None = None,
    ) -> Iterator[str]:
        """Yield the answer piece by piece as it is generated.

        Args:
            messages: the conversation so far, ending with the user's message.
            config: decoding settings (greedy by default).
            system: a system prompt overriding the adapter's/conversation's.
            use_adapter: ``False`` asks the bare base model (same weights, adapter disabled).
            usage: when given, ``usage["completion_tokens"]`` is set to the number of tokens generated (at most
                ``config.max_new_tokens``) once the generation ends.
            gate: route the question through the adapter's gate (when it has one); ``False`` always asks the
                adapter.
            trace: when given, ``trace["route"]`` is set to who answered: ``adapter``, ``abstain`` or ``base``.
        """
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        config = config or GenerationConfig()
        inputs = self.prompt_ids(messages, system)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        stop_flag = _StopFlag()
        kwargs = self._generate_kwargs(config)
        errors: list[BaseException] = []
        gating = self.gate is not None and gate and use_adapter
        question = str(self.build_messages(messages, system)[-1]["content"]) if gating else ""

        def run() -> None:
            try:
                with torch.inference_mode():
                    # The gate runs here, on the generation thread, like every other forward pass (one OpenMP team).
                    route: Route = self.gate.route(self.model, self.tokenizer, [question])[0] if gating else "adapter"
                    if trace is not None:
                        trace["route"] = route if self.has_adapter and use_adapter else "base"
                    if route == "abstain":
                        text, n_tokens = self._abstain(messages, system, question, config.max_new_tokens)
                        stop_flag.length = int(inputs["input_ids"].shape[-1]) + n_tokens
                        streamer.on_finalized_text(text, stream_end=True)
                        return
                    if config.seed is not None:
                        torch.manual_seed(config.seed)
                    if self.has_adapter and (not use_adapter or route == "base"):
                        with self.model.disable_adapter():
                            self.model.generate(
                                **inputs,
                                streamer=streamer,
                                stopping_criteria=StoppingCriteriaList([stop_flag]),
                                **kwargs,
                            )
                    else:
                        self.model.generate(
                            **inputs, streamer=streamer, stopping_criteria=StoppingCriteriaList([stop_flag]), **kwargs
                        )
            except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
                errors.append(exc)
                streamer.end()

        with self._lock:
            future = generation_executor().submit(run)
            try:
                text = ""
                for piece in streamer:
                    if not piece:
                        continue
                    text += piece
                    # transformers' stop_strings end generation but the streamer may already hold the stop text.
                    cut = _first_stop(text, config.stop)
                    if cut is not None:
                        remaining = text[:cut][len(text) - len(piece) :]
                        if remaining:
                            yield remaining
                        break
                    yield piece
            finally:
                stop_flag.event.set()
                future.result()
                if usage is not None:
                    usage["completion_tokens"] = max(0, stop_flag.length - int(inputs["input_ids"].shape[-1]))
        if errors:
            raise errors[0]

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
