"""The remote inference engine: chat generation forwarded to an external OpenAI-compatible server.

With ``ANDRAEUS_INFERENCE_URL`` set, the REST service sends generation to an engine elsewhere — the target is vLLM
started with ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` — while everything about the tenant stays
here: API keys and tenancy (the engine only ever sees adapter names derived from hashed paths), the adapter's gate (it
needs the base model's hidden states, so the question is routed on this machine and an abstained question never
leaves it), request limits and usage accounting.

A fine-tuned model's adapter is loaded on the engine the first time it is asked (vLLM's runtime LoRA API, ``POST
/v1/load_lora_adapter``) from its path on a disk both machines share: the engine must see the same
``ANDRAEUS_HOME`` path, or the prefix ``ANDRAEUS_INFERENCE_PATH_MAP`` maps it to.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .adapter import Adapter
from .chat import ChatModel, GenerationConfig, Message, on_generation_thread
from .errors import AndraeusError, ConfigError, EngineResponseError, EngineUnavailableError
from .gate import GENERIC_ABSTENTION
from .models import load_tokenizer

logger = logging.getLogger(__name__)

ENV_URL = "ANDRAEUS_INFERENCE_URL"
ENV_KEY = "ANDRAEUS_INFERENCE_KEY"
ENV_BASE_MODEL = "ANDRAEUS_INFERENCE_BASE_MODEL"
ENV_CONNECT_TIMEOUT = "ANDRAEUS_INFERENCE_CONNECT_TIMEOUT"
ENV_READ_TIMEOUT = "ANDRAEUS_INFERENCE_READ_TIMEOUT"
ENV_PATH_MAP = "ANDRAEUS_INFERENCE_PATH_MAP"

#: Seconds a caller is told to wait when the engine is down or busy (unless the engine says otherwise).
RETRY_AFTER_S = 5
#: The longest Retry-After passed on from the engine (seconds).
MAX_RETRY_AFTER_S = 120
#: Bytes of an engine's error body read: enough for its message, and a huge body is not waited for.
MAX_ERROR_BYTES = 64 * 1024
#: Characters of the engine's own refusal message passed on to the caller (a 400: e.g. its context length).
MAX_ENGINE_MESSAGE_CHARS = 300

_UNREACHABLE = "The inference engine cannot be reached right now; retry shortly."
_TIMED_OUT = "The inference engine did not answer in time; retry shortly."


class _ModelMissing(Exception):
    """The engine answered 404 for the model asked for (an adapter it no longer has, e.g. after a restart)."""


class RemoteEngine:
    """An external OpenAI-compatible engine (vLLM with runtime LoRA loading) that generates chat answers.

    One per process: it keeps a pooled HTTP client and the names of the adapters it has loaded (each is loaded once,
    whichever thread asks first). Thread-safe.

    Args:
        url: the engine's base URL, e.g. ``http://gpu-host:8000`` (a trailing ``/v1`` is accepted).
        key: sent as ``Authorization: Bearer <key>`` (vLLM's ``--api-key``); never logged or shown.
        base_model: the name the engine serves the base model under (default: the base model's name here).
        connect_timeout_s: longest wait to connect; an engine that is down fails fast with a 503.
        read_timeout_s: longest wait for any byte of an answer (the first token included).
        path_map: ``(local prefix, engine prefix)``: adapter paths under the first are sent under the second.
    """

    def __init__(
        self,
        url: str,
        *,
        key: str | None = None,
        base_model: str | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        path_map: tuple[str, str] | None = None,
    ):
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # The URL is not echoed: it may carry credentials.
            raise ConfigError(
                f"{ENV_URL} must be an http(s) URL such as http://gpu-host:8000 (got scheme {parts.scheme!r}).",
                param=ENV_URL,
            )
        for name, value in (("connect_timeout_s", connect_timeout_s), ("read_timeout_s", read_timeout_s)):
            if not value > 0:
                raise ConfigError(f"The inference engine's {name} must be positive, got {value}.", param=name)
        self.url = url.strip().rstrip("/").removesuffix("/v1")
        self.key = key or None
        self.base_model = base_model or None
        self.connect_timeout_s = float(connect_timeout_s)
        self.read_timeout_s = float(read_timeout_s)
        self.path_map = path_map
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._loaded: set[str] = set()
        self._load_lock = threading.Lock()
        self._tokenizers: dict[str, Any] = {}
        self._tokenizer_lock = threading.Lock()

    def __repr__(self) -> str:
        return "RemoteEngine(<url hidden>)"  # the address and key stay out of logs and tracebacks

    @classmethod
    def from_env(cls) -> RemoteEngine | None:
        """The engine ``ANDRAEUS_INFERENCE_*`` variables describe, or None when ``ANDRAEUS_INFERENCE_URL`` is unset.

        Raises:
            ConfigError: a variable is invalid (named in the message).
        """
        url = os.environ.get(ENV_URL, "").strip()
        if not url:
            return None
        path_map = None
        raw_map = os.environ.get(ENV_PATH_MAP, "").strip()
        if raw_map:
            local, sep, remote = raw_map.partition("=")
            if not sep or not local.startswith("/") or not remote.startswith("/"):
                raise ConfigError(
                    f"{ENV_PATH_MAP} must be '<path here>=<same path on the engine>', both absolute, got {raw_map!r}.",
                    param=ENV_PATH_MAP,
                )
            path_map = (local, remote)
        return cls(
            url,
            key=os.environ.get(ENV_KEY, "").strip() or None,
            base_model=os.environ.get(ENV_BASE_MODEL, "").strip() or None,
            connect_timeout_s=_env_seconds(ENV_CONNECT_TIMEOUT, 5.0),
            read_timeout_s=_env_seconds(ENV_READ_TIMEOUT, 60.0),
            path_map=path_map,
        )

    # ------------------------------------------------------------------------------------------------------------
    # names

    def served_base(self, base_model: str) -> str:
        """The model name to ask the engine for the bare base model."""
        return self.base_model or base_model

    def lora_name(self, adapter_path: str | Path) -> str:
        """The adapter's name on the engine: a hash of its path (which already holds the tenant only hashed) and of
        the engine key, so that it names no tenant or job, and other servers sharing the engine and the disk agree
        on it."""
        digest = hashlib.sha256(f"{self.key or ''}\0{Path(adapter_path)}".encode()).hexdigest()
        return f"andraeus-{digest[:32]}"

    def lora_path(self, adapter_path: str | Path) -> str:
        """Where the engine reads the adapter: the same path, or the path under the mapped prefix."""
        path = str(Path(adapter_path))
        if self.path_map is not None:
            local, remote = (p.rstrip("/") for p in self.path_map)
            if path == local or path.startswith(local + "/"):
                return remote + path[len(local) :]
        return path

    # ------------------------------------------------------------------------------------------------------------
    # adapters

    def ensure_loaded(self, adapter_path: str | Path) -> str:
        """Load the adapter on the engine unless this process already did; returns its name there.

        Raises:
            EngineUnavailableError: the engine cannot be reached. EngineResponseError: it could not load it.
        """
        name = self.lora_name(adapter_path)
        if name in self._loaded:
            return name
        with self._load_lock:  # one load at a time: concurrent first requests for one adapter load it once
            if name not in self._loaded:
                self._admin("/v1/load_lora_adapter", {"lora_name": name, "lora_path": self.lora_path(adapter_path)})
                self._loaded.add(name)
                logger.info("Loaded an adapter on the inference engine")
        return name

    def forget(self, name: str) -> None:
        """Take ``name`` off the loaded list (the engine said it has no such model: it restarted)."""
        with self._load_lock:
            self._loaded.discard(name)

    def unload(self, adapter_path: str | Path) -> None:
        """Unload the adapter from the engine (its weights hold the facts), best effort: a failure is logged only,
        since the adapter's files are deleted anyway and a restarted engine forgets it."""
        name = self.lora_name(adapter_path)
        self.forget(name)
        try:
            self._admin("/v1/unload_lora_adapter", {"lora_name": name}, unloading=True)
        except AndraeusError as exc:
            logger.warning("Could not unload an adapter from the inference engine (%s)", exc.code)

    def _admin(self, path: str, body: dict[str, str], *, unloading: bool = False) -> None:
        import httpx2

        try:
            response = self._http().post(path, json=body, headers=self._headers())
        except httpx2.TimeoutException:
            raise EngineUnavailableError(_TIMED_OUT, retry_after=RETRY_AFTER_S) from None
        except httpx2.RequestError:
            raise EngineUnavailableError(_UNREACHABLE, retry_after=RETRY_AFTER_S) from None
        if response.is_success:
            return
        status = response.status_code
        message = _engine_message(response.content[:MAX_ERROR_BYTES]).lower()
        if unloading and status in (400, 404):
            return  # it was not loaded: nothing to unload
        if not unloading and status == 400 and "already" in message:
            return  # loaded by another server sharing the engine, or by an earlier life of this process
        logger.warning("The inference engine answered %d to %s", status, path)
        if status in (429, 503) or status >= 500 or status in (401, 403):
            raise _status_error(status, response.headers, "")
        raise EngineResponseError(
            f"The inference engine could not load this model's adapter (HTTP {status}). It must read the adapter "
            "from the same path (a shared ANDRAEUS_HOME) and allow its rank (--max-lora-rank)."
        )

    # ------------------------------------------------------------------------------------------------------------
    # chat

    def open_chat(self, model: str, messages: Sequence[dict[str, str]], config: GenerationConfig) -> Any:
        """Start a streamed chat completion of ``model``; returns the open response (status 200, body unread).

        Raises:
            EngineUnavailableError: unreachable, timed out, or busy (429/503).
            EngineResponseError: a server error, a refused key or an unexpected status.
            ConfigError: the engine refused the request itself (e.g. its context length).
        """
        import httpx2

        body: dict[str, Any] = {
            "model": model,
            "messages": list(messages),
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": config.max_new_tokens,
            "temperature": config.temperature,
            "top_p": config.top_p,
        }
        if config.stop:
            body["stop"] = list(config.stop)
        if config.seed is not None:
            body["seed"] = config.seed
        if config.repetition_penalty != 1.0:
            body["repetition_penalty"] = config.repetition_penalty  # vLLM's extension of the request
        # "Connection: close": a cancelled answer shuts its socket down (RemoteCompletion.cancel), and that must
        # never be a pooled connection another request has taken meanwhile.
        headers = {**self._headers(), "Accept": "text/event-stream", "Connection": "close"}
        client = self._http()
        try:
            response = client.send(
                client.build_request("POST", "/v1/chat/completions", json=body, headers=headers), stream=True
            )
        except httpx2.TimeoutException:
            raise EngineUnavailableError(_TIMED_OUT, retry_after=RETRY_AFTER_S) from None
        except httpx2.RequestError:
            raise EngineUnavailableError(_UNREACHABLE, retry_after=RETRY_AFTER_S) from None
        if response.status_code == 200:
            return response
        try:
            raw = _read_some(response)
        except httpx2.HTTPError:
            raw = b""
        finally:
            response.close()
        if response.status_code == 404:
            raise _ModelMissing
        logger.warning("The inference engine answered %d to a chat completion", response.status_code)
        raise _status_error(response.status_code, response.headers, _engine_message(raw))

    def tokenizer(self, base_model: str) -> Any:
        """The base model's tokenizer, loaded once (for counting when the engine sends no usage)."""
        with self._tokenizer_lock:
            if base_model not in self._tokenizers:
                self._tokenizers[base_model] = load_tokenizer(base_model)
            return self._tokenizers[base_model]

    def close(self) -> None:
        """Close the pooled connections (a later call opens new ones)."""
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def _http(self) -> Any:
        import httpx2

        with self._client_lock:
            if self._client is None:
                timeout = httpx2.Timeout(
                    self.read_timeout_s, connect=self.connect_timeout_s, pool=self.connect_timeout_s
                )
                # trust_env=False: conversations go to the engine directly, never through a proxy the environment
                # happens to name.
                self._client = httpx2.Client(base_url=self.url, timeout=timeout, trust_env=False)
            return self._client


class RemoteCompletion:
    """A chat completion the remote engine generates, with :class:`~andraeus_core.jobs.Completion`'s interface:
    iterate for the text pieces; ``prompt_tokens``, ``completion_tokens`` and ``finish_reason`` are known once
    iteration ends; ``route`` says who answered; :meth:`cancel` ends it from any thread.

    The gate (when the adapter has one and ``router`` is given) runs here, before anything is sent: an ``abstain``
    question is answered on this machine and never reaches the engine. The upstream request is opened in the
    constructor, so an engine that is down or refuses is an error before a stream starts.

    Args:
        engine: the engine.
        messages: the conversation, ending with the user's message.
        config: decoding settings (sent as the request's temperature, top_p, max_tokens, stop and seed).
        base_model: this server's name of the base model (the engine's is :meth:`RemoteEngine.served_base`).
        adapter: the fine-tuned model's adapter (None: the bare base model); its system prompt is used when the
            conversation has none, as locally.
        router: the adapter loaded locally, whose gate routes the question (None: no routing, the adapter answers).
        timeout_s: the longest the answer may take; then it ends with finish_reason "length", as locally.

    Raises:
        EngineUnavailableError, EngineResponseError, ConfigError: see :meth:`RemoteEngine.open_chat`.
    """

    def __init__(
        self,
        engine: RemoteEngine,
        messages: list[dict[str, str]],
        config: GenerationConfig,
        *,
        base_model: str,
        adapter: Adapter | None = None,
        router: ChatModel | None = None,
        timeout_s: float | None = None,
    ):
        self.engine = engine
        self.config = config
        self.base_model = base_model
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.finish_reason = "stop"
        self.text = ""
        self._deadline = time.monotonic() + timeout_s if timeout_s is not None else None
        self._cancel = threading.Event()
        self._lock = threading.Lock()  # guards the response's closing against cancel() from another thread
        self._response: Any = None
        self._socket: Any = None
        self._started = False
        self._closed = False
        self._abstention: str | None = None
        system = adapter.private.system_prompt if adapter is not None else None
        self.messages = router.build_messages(messages) if router is not None else conversation(messages, system)
        self.route = "base" if adapter is None else self._routed(router)
        if self.route == "abstain":
            self._abstain(router)  # type: ignore[arg-type] - only a router abstains
        else:
            self._open(adapter if self.route == "adapter" else None)

    def _routed(self, router: ChatModel | None) -> str:
        if router is None or router.gate is None:
            return "adapter"
        gate = router.gate
        question = str(self.messages[-1]["content"])

        def route() -> str:
            import torch

            with torch.inference_mode():
                return gate.route(router.model, router.tokenizer, [question])[0]

        # On the generation thread, like every forward pass of this process (one OpenMP thread team).
        return on_generation_thread(route)

    def _abstain(self, router: ChatModel) -> None:
        """The abstain route's answer, given here: the generic abstention (it states no fact, so it needs no model)."""
        tokenizer = router.tokenizer
        tokens = tokenizer(GENERIC_ABSTENTION, add_special_tokens=False)["input_ids"]
        if len(tokens) > self.config.max_new_tokens:
            tokens = tokens[: self.config.max_new_tokens]
            self.finish_reason = "length"  # cut by the token limit, as a generated answer would be
        self._abstention = tokenizer.decode(tokens)
        self.completion_tokens = len(tokens)
        self.prompt_tokens = int(router.prompt_ids(self.messages)["input_ids"].shape[-1])

    def _open(self, adapter: Adapter | None) -> None:
        for attempt in range(2):
            if adapter is None:
                model = self.engine.served_base(self.base_model)
            else:
                model = self.engine.ensure_loaded(adapter.path)
            try:
                self._response = self.engine.open_chat(model, self.messages, self.config)
                break
            except _ModelMissing:
                if adapter is None:
                    raise EngineResponseError(
                        "The inference engine does not serve this base model (the server's "
                        f"{ENV_BASE_MODEL} may name it wrongly)."
                    ) from None
                if attempt:
                    raise EngineResponseError(
                        "The inference engine does not serve this model's adapter even after loading it."
                    ) from None
                # The engine lost the adapter (it restarted): load it again, once.
                logger.info("The inference engine no longer had an adapter; loading it again")
                self.engine.forget(model)
        stream = self._response.extensions.get("network_stream")
        self._socket = stream.get_extra_info("socket") if stream is not None else None

    def __iter__(self) -> Iterator[str]:
        if self._abstention is not None:
            self.text = self._abstention
            if self._abstention:
                yield self._abstention
            return
        import httpx2

        with self._lock:
            if self._cancel.is_set():
                self._close_locked()
                return
            self._started = True
        usage: Any = None
        finish: str | None = None
        done = False
        pieces = 0
        try:
            for line in self._response.iter_lines():
                if self._cancel.is_set():
                    break
                if self._deadline is not None and time.monotonic() > self._deadline:
                    self.finish_reason = "length"  # cut by the time limit, as a local generation is
                    break
                data = _sse_data(line)
                if data is None:
                    continue
                if data == "[DONE]":
                    done = True
                    break
                chunk = _parse_chunk(data)
                if chunk.get("usage") is not None:
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    if not isinstance(choice, dict):
                        raise EngineResponseError("The inference engine sent a malformed answer.")
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        if not isinstance(piece, str):
                            raise EngineResponseError("The inference engine sent a malformed answer.")
                        self.text += piece
                        pieces += 1
                        yield piece
                    finish = choice.get("finish_reason") or finish
        except httpx2.TimeoutException:
            if not self._cancel.is_set():
                raise EngineUnavailableError(
                    "The inference engine stopped sending the answer; retry shortly.", retry_after=RETRY_AFTER_S
                ) from None
        except httpx2.TransportError:
            if not self._cancel.is_set():
                raise EngineUnavailableError(
                    "The inference engine broke off the answer; retry shortly.", retry_after=RETRY_AFTER_S
                ) from None
        except httpx2.RequestError:
            if not self._cancel.is_set():
                raise EngineResponseError("The inference engine sent a malformed answer.") from None
        finally:
            self._close()
        if self._cancel.is_set():
            self.completion_tokens = pieces  # nobody reads the usage of an answer whose client left
            return
        if self.finish_reason == "length":
            self._account(None, pieces)  # cut by the time limit: no usage chunk came, so it is counted here
            return
        if not done and finish is None:
            raise EngineUnavailableError(
                "The inference engine ended the answer before finishing it; retry shortly.", retry_after=RETRY_AFTER_S
            )
        self.finish_reason = "length" if finish == "length" else "stop"
        self._account(usage, pieces)

    def _account(self, usage: Any, pieces: int) -> None:
        """Token counts from the engine's usage chunk, else counted here with the base model's tokenizer."""
        if isinstance(usage, dict):
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
            if isinstance(prompt, int) and isinstance(completion, int) and prompt >= 0 and completion >= 0:
                self.prompt_tokens, self.completion_tokens = prompt, completion
                return
        try:
            tokenizer = self.engine.tokenizer(self.base_model)
            rendered = tokenizer.apply_chat_template(
                self.messages, add_generation_prompt=True, tokenize=True, return_dict=True
            )
            self.prompt_tokens = len(rendered["input_ids"])
            counted = len(tokenizer(self.text, add_special_tokens=False)["input_ids"])
            # Re-tokenising decoded text can give more tokens than were generated (and than max_tokens allowed).
            self.completion_tokens = min(counted, self.config.max_new_tokens)
        except Exception as exc:  # noqa: BLE001 - counting must not fail an answer already given
            logger.warning("No usage from the inference engine and no tokenizer here (%s)", type(exc).__name__)
            self.completion_tokens = pieces

    def cancel(self) -> None:
        """End the answer now (the client went away); safe from any thread. The upstream connection is shut down
        at once, so the engine stops generating, even while another thread waits on it for the next piece."""
        with self._lock:
            self._cancel.set()
            if self._closed or self._response is None:
                return
            if not self._started:
                self._close_locked()  # nobody will iterate: close it here
                return
            if self._socket is not None:
                with contextlib.suppress(OSError):
                    self._socket.shutdown(socket.SHUT_RDWR)  # wakes the reader; it closes the response

    def _close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if not self._closed and self._response is not None:
            self._closed = True
            with contextlib.suppress(Exception):  # closing a broken connection may raise; it is closed either way
                self._response.close()


def conversation(messages: Sequence[dict[str, str]], system_prompt: str | None = None) -> list[dict[str, str]]:
    """The conversation as the engine gets it: checked, with ``system_prompt`` first unless it has its own (what
    :meth:`ChatModel.build_messages` does locally, without loading a model).

    Raises:
        ConfigError: the conversation does not end with a user message.
    """
    normalised = [Message(**m).model_dump() for m in messages]
    if not normalised or normalised[-1]["role"] != "user":
        raise ConfigError("A conversation must end with a user message.", param="messages")
    if system_prompt is not None and normalised[0]["role"] != "system":
        normalised.insert(0, {"role": "system", "content": system_prompt})
    return normalised


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}.", param=name) from None
    if not 0 < value <= 3600:
        raise ConfigError(f"{name} must be between 0 and 3600 seconds, got {raw!r}.", param=name)
    return value


def _read_some(response: Any) -> bytes:
    """At most :data:`MAX_ERROR_BYTES` of a streamed response's body."""
    raw = b""
    for part in response.iter_bytes():
        raw += part
        if len(raw) >= MAX_ERROR_BYTES:
            break
    return raw[:MAX_ERROR_BYTES]


def _engine_message(raw: bytes) -> str:
    """The message of an OpenAI-shaped error body (vLLM's and ours), trimmed; empty when there is none."""
    try:
        body = json.loads(raw)
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str):
        message = body.get("message") if isinstance(body, dict) else None  # vLLM's admin routes answer flat
    if not isinstance(message, str):
        return ""
    message = " ".join(message.split())
    return message if len(message) <= MAX_ENGINE_MESSAGE_CHARS else message[: MAX_ENGINE_MESSAGE_CHARS - 3] + "..."


def _status_error(status: int, headers: Any, message: str) -> AndraeusError:
    """The error a non-200 answer of the engine becomes (never naming the engine's address or key)."""
    if status in (429, 503):
        retry = RETRY_AFTER_S
        with contextlib.suppress(TypeError, ValueError):
            retry = max(1, min(int(float(headers.get("retry-after"))), MAX_RETRY_AFTER_S))
        return EngineUnavailableError("The inference engine is busy; retry shortly.", retry_after=retry)
    if status in (401, 403):
        return EngineResponseError("The inference engine refused this server's key (ANDRAEUS_INFERENCE_KEY).")
    if status >= 500:
        return EngineResponseError(
            f"The inference engine failed (HTTP {status}); retry, or tell the server's operator."
        )
    if status in (400, 413, 422):
        detail = f": {message}" if message else "."
        return ConfigError(f"The inference engine refused the request{detail}", param="messages")
    return EngineResponseError(f"The inference engine answered HTTP {status}.")


def _sse_data(line: str) -> str | None:
    """The data of a server-sent-events line; None for blank lines, comments and other fields."""
    if not line.startswith("data:"):
        return None
    return line[5:].strip()


def _parse_chunk(data: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except ValueError:
        raise EngineResponseError("The inference engine sent a malformed answer.") from None
    if not isinstance(chunk, dict):
        raise EngineResponseError("The inference engine sent a malformed answer.")
    if "error" in chunk:  # an in-band error: the engine failed after the stream began
        logger.warning("The inference engine reported an error mid-answer")
        raise EngineResponseError("The inference engine failed while answering; retry.")
    return chunk
