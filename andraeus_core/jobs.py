"""The service behind the REST API: uploads, a training job queue with worker threads, and chat model caching.

The API (``api/``) is a thin HTTP layer over :class:`Service`; everything it can do is here, so the CLI or another
front end could drive the same rooms. State lives in :class:`~andraeus_core.store.Store` (SQLite, WAL).

Jobs run in ``workers`` threads (one by default: training already uses every core). The queue is the ``jobs`` table,
so it survives restarts: on start, queued jobs simply run, and a job that was ``running`` when the process died is
finished if its adapter was already written, resumed from its last epoch checkpoint if it had completed an epoch,
and otherwise marked ``failed`` with code ``server_restart`` — never left ``running``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .adapter import Adapter
from .chat import AdapterHost, load_chat_model
from .config import TrainConfig
from .dataset import ChatDataset, read_jsonl
from .errors import (
    AndraeusError,
    ConfigError,
    ConflictError,
    ContextLengthError,
    EvaluationError,
    NotFoundError,
    ProfileError,
    QueueFullError,
    QuotaError,
    TrainingCancelled,
)
from .evaluate import BASELINES, evaluate
from .export import EXPORT_FORMATS, MARKER_FILE, export_adapter, export_download, export_vllm
from .fsutil import atomic_write, safe_name
from .hub import adapter_zip, push_adapter
from .models import load_model, served_base_models
from .profile import FORMATS as PROFILE_FORMATS
from .profile import parse_profile
from .recipe import default_preset
from .remote import RemoteCompletion, RemoteEngine
from .store import FINISHED, Store, new_id
from .train import train
from .update import UPDATE_EPOCHS, update_config
from .variations import generate_variations

logger = logging.getLogger(__name__)

CHAT_FORMATS = {".jsonl": "jsonl"}
MAX_RESTARTS = 2  # a job the server died under this many times is failed rather than retried forever
#: Longest upload file name (characters): most filesystems refuse names over 255 bytes.
MAX_FILENAME_CHARS = 255
#: Most conversations in one chat JSONL training file (a profile is bounded by its 200 facts).
MAX_CHAT_EXAMPLES = 10_000
#: Job metadata, as OpenAI bounds it: at most 16 pairs, keys up to 64 characters, values up to 512.
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
#: Exports waiting or running at once (all tenants); one runs at a time (each loads and merges a model).
MAX_PENDING_EXPORTS = 4
#: Most models in one vLLM bundle (POST /v1/exports): each is a LoRA file copied, and vLLM's --max-loras grows.
MAX_BUNDLE_MODELS = 64


def fine_tuned_model_id(base: str, suffix: str | None, job_id: str) -> str:
    """OpenAI's naming: ``ft:<base>:<suffix>:<job id>``."""
    return f"ft:{base}:{suffix or 'andraeus'}:{job_id}"


def resolve_hyperparameters(
    model: str, hyper: dict[str, Any], seed: int, *, facts: int | None = None
) -> tuple[Any, dict[str, Any]]:
    """Turn OpenAI's hyperparameters (``n_epochs``, ``learning_rate_multiplier``, ``batch_size``; each may be
    ``"auto"``) into a :class:`TrainConfig` and the resolved values reported on the job. ``facts``: the training
    profile's number of facts, when it is one (the cpu preset takes its LoRA rank from it).

    Raises:
        ConfigError: a value is out of range (the message names the hyperparameter and value).
    """
    preset = default_preset()
    base = TrainConfig.preset(preset, base_model=model, seed=seed, facts=facts)
    overrides: dict[str, Any] = {}
    epochs = hyper.get("n_epochs", "auto")
    if epochs != "auto":
        if not isinstance(epochs, int) or isinstance(epochs, bool) or not 1 <= epochs <= 50:
            raise ConfigError(f"hyperparameters.n_epochs must be 'auto' or 1..50, got {epochs!r}.", param="n_epochs")
        overrides["epochs"] = epochs
    mult = hyper.get("learning_rate_multiplier", "auto")
    if mult != "auto":
        if isinstance(mult, bool) or not isinstance(mult, (int, float)) or not 0 < mult <= 10:
            raise ConfigError(
                f"hyperparameters.learning_rate_multiplier must be 'auto' or in (0, 10], got {mult!r}.",
                param="learning_rate_multiplier",
            )
        overrides["learning_rate"] = base.learning_rate * float(mult)
    batch = hyper.get("batch_size", "auto")
    if batch != "auto":
        if not isinstance(batch, int) or isinstance(batch, bool) or not 1 <= batch <= 256:
            raise ConfigError(
                f"hyperparameters.batch_size must be 'auto' or 1..256, got {batch!r}.", param="batch_size"
            )
        overrides["batch_size"] = batch
    config = TrainConfig.preset(preset, base_model=model, seed=seed, facts=facts, **overrides)
    resolved = {
        "n_epochs": config.epochs,
        "batch_size": config.batch_size,
        "learning_rate_multiplier": round(config.learning_rate / base.learning_rate, 6),
    }
    return config, resolved


def parse_training_file(filename: str, data: bytes, *, user_name: str | None = None) -> tuple[str, str, Any]:
    """Validate an uploaded training file; returns ``(kind, fmt, parsed)``.

    ``kind`` is ``"profile"`` (YAML/JSON/CSV facts) or ``"chat"`` (OpenAI chat JSONL, one ``{"messages": [...]}``
    per line).

    Raises:
        ProfileError: unknown type or malformed content; the message names file, line/row, field and value.
    """
    suffix = Path(filename).suffix.lower()
    if suffix in PROFILE_FORMATS:
        fmt = PROFILE_FORMATS[suffix]
        return "profile", fmt, parse_profile(data, fmt=fmt, source=filename, user_name=user_name)  # type: ignore[arg-type]
    if suffix in CHAT_FORMATS:
        return "chat", "jsonl", _read_chat_jsonl(filename, data)
    raise ProfileError(
        f"{filename}: unknown training file type {suffix or '(no suffix)'!r}; upload a profile "
        f"({', '.join(PROFILE_FORMATS)}) or OpenAI chat JSONL (.jsonl).",
        source=filename,
        param="file",
    )


def _read_chat_jsonl(filename: str, data: bytes) -> Any:
    """Chat JSONL that can be trained on: every line a conversation with a user turn that ends in an answer.

    Problems a later training run would only fail on (no examples, ``{"messages": []}``, a conversation without a
    user turn or one that does not end with an assistant answer) are reported here, at upload, with their line.
    """
    with tempfile.TemporaryDirectory() as tmp:
        # A fixed name: the upload's own may be too long for the filesystem (that was a 500).
        path = Path(tmp) / "upload.jsonl"
        path.write_bytes(data)
        try:
            examples = read_jsonl(path)
        except AndraeusError as exc:
            raise ProfileError(str(exc).replace(str(path), filename), source=filename, param=exc.param) from None
        except (RecursionError, ValueError):  # json.loads: nesting too deep, or a number of thousands of digits
            raise ProfileError(
                f"{filename}, line {_bad_json_line(data)}: not valid JSON (nested too deeply or a number too long).",
                source=filename,
                param="file",
            ) from None
    if not examples:
        raise ProfileError(f"{filename}: the file holds no conversations.", source=filename, param="file")
    if len(examples) > MAX_CHAT_EXAMPLES:
        raise ProfileError(
            f"{filename}: {len(examples):,} conversations; at most {MAX_CHAT_EXAMPLES:,} may be uploaded.",
            source=filename,
            param="file",
        )
    lines = [n for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), start=1) if line.strip()]
    for number, example in zip(lines, examples, strict=False):
        roles = [m["role"] for m in example.messages]
        problem = None
        if not roles:
            problem = "'messages' is empty"
        elif "user" not in roles:
            problem = "the conversation has no user message"
        elif roles[-1] != "assistant":
            problem = "the conversation must end with an assistant message (the answer to train on)"
        elif not example.messages[-1]["content"].strip():
            problem = "the final assistant message is empty"
        if problem:
            raise ProfileError(
                f"{filename}, line {number}: {problem}.", source=filename, line=number, field="messages"
            )
    return examples


def _bad_json_line(data: bytes) -> int:
    """The first line json.loads refuses (called only once a line is known to be bad)."""
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
        try:
            json.loads(line) if line.strip() else None
        except (RecursionError, ValueError):
            return number
    return 1


def _chat_dataset(examples: list[Any], data: bytes, seed: int) -> Any:
    """A ChatDataset from uploaded chat examples: everything trains (held-out questions come from profiles)."""
    system = next((m["content"] for m in examples[0].messages if m.get("role") == "system"), "") if examples else ""
    return ChatDataset(
        train=list(examples),
        heldout=[],
        system_prompt=system,
        profile_hash=hashlib.sha256(data).hexdigest(),
        topics=[],
        seed=seed,
    )


# ----------------------------------------------------------------------------------------------------------------
# chat models


class Completion:
    """A chat completion in progress: iterate for the text pieces; usage is known once iteration ends.

    Args:
        gate: route the question through the adapter's gate (``False``: the adapter answers everything).
        timeout_s: the longest its generation may take, waiting for the model included (then it ends, "length").
    """

    def __init__(
        self,
        chat: Any,
        messages: list[dict[str, str]],
        config: Any,
        *,
        gate: bool = True,
        timeout_s: float | None = None,
    ):
        self.chat = chat
        self.messages = messages
        self.config = config
        self.gate = gate
        self.route: str | None = None  # who answered (adapter, abstain, base), once iteration ends
        self.timeout_s = timeout_s
        self._cancel = threading.Event()
        encoded = chat.prompt_ids(messages)
        self.prompt_tokens = int(encoded["input_ids"].shape[-1])
        context = context_length(chat)
        if context is not None and self.prompt_tokens + config.max_new_tokens > context:
            raise ContextLengthError(
                f"This model's context is {context} tokens; the messages take {self.prompt_tokens} and max_tokens "
                f"asks for {config.max_new_tokens} more. Shorten the messages or lower max_tokens.",
                param="messages",
            )
        self.completion_tokens = 0
        self.finish_reason = "stop"
        self.text = ""

    def __iter__(self) -> Iterator[str]:
        usage: dict[str, Any] = {}
        trace: dict[str, Any] = {}
        stream = self.chat.stream(
            self.messages,
            self.config,
            usage=usage,
            gate=self.gate,
            trace=trace,
            timeout_s=self.timeout_s,
            cancel=self._cancel,
        )
        for piece in stream:
            self.text += piece
            yield piece
        self.route = trace.get("route")
        # The tokens generated, not the answer tokenised again: re-tokenising decoded text can give more tokens
        # than were generated (and than max_tokens allowed).
        self.completion_tokens = usage.get("completion_tokens", 0)
        self.finish_reason = usage.get("finish_reason", "stop")

    def cancel(self) -> None:
        """End the generation at its next token (the client went away); safe from any thread."""
        self._cancel.set()


def context_length(chat: Any) -> int | None:
    """The longest sequence (prompt + answer) the chat model's positions cover, when its config says."""
    config = getattr(getattr(chat, "loaded", None), "model", None)
    value = getattr(getattr(config, "config", None), "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def check_metadata(metadata: dict[str, str] | None) -> None:
    """OpenAI's bounds on job metadata: 16 pairs, keys up to 64 characters, values up to 512.

    Raises:
        ConfigError: naming the first key at fault (shortened), never echoing a long value.
    """
    if metadata is None:
        return
    if len(metadata) > MAX_METADATA_PAIRS:
        raise ConfigError(
            f"metadata may hold at most {MAX_METADATA_PAIRS} pairs, got {len(metadata)}.", param="metadata"
        )
    for key, value in metadata.items():
        shown = key if len(key) <= 40 else key[:37] + "..."
        if not isinstance(key, str) or not isinstance(value, str):
            raise ConfigError(f"metadata keys and values must be text (key {shown!r}).", param="metadata")
        if len(key) > MAX_METADATA_KEY_CHARS:
            raise ConfigError(
                f"metadata key {shown!r} has {len(key)} characters; at most {MAX_METADATA_KEY_CHARS}.",
                param="metadata",
            )
        if len(value) > MAX_METADATA_VALUE_CHARS:
            raise ConfigError(
                f"metadata[{shown!r}] has {len(value):,} characters; at most {MAX_METADATA_VALUE_CHARS}.",
                param="metadata",
            )


class ChatCache:
    """Loaded chat models, least recently used evicted; base presets share the process-wide base model cache."""

    def __init__(self, size: int = 3):
        self.size = size
        self._models: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, loader: Any) -> Any:
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            model = loader()
            self._models[key] = model
            while len(self._models) > self.size:
                self._models.popitem(last=False)
            return model

    def forget(self, key: str) -> None:
        with self._lock:
            self._models.pop(key, None)


def _preload_libraries() -> None:
    """Import the heavy libraries once, in this thread.

    transformers resolves its names lazily on first use, and that is not thread-safe: a training worker and a chat
    request importing it at the same moment can see ``cannot import name 'AutoModelForCausalLM'``.
    """
    import peft  # noqa: F401
    import transformers
    import trl  # noqa: F401

    for name in (
        "AutoModelForCausalLM",
        "AutoTokenizer",
        "TextIteratorStreamer",
        "StoppingCriteriaList",
        "TrainerCallback",
        "set_seed",
    ):
        getattr(transformers, name)


# ----------------------------------------------------------------------------------------------------------------
# the service


class Service:
    """Uploads, jobs, models and chat for many tenants, backed by a :class:`Store`.

    Args:
        store: the state (default: a Store under ``$ANDRAEUS_HOME/api``).
        workers: training worker threads (0 = accept jobs but never run them, e.g. for schema tests).
        max_queued: queued jobs allowed (all tenants) before new jobs get :class:`QueueFullError`.
        max_queued_per_tenant: queued jobs one tenant may have (its share of the queue).
        chat_cache_size: fine-tuned chat models kept loaded (adapters on one base share its weights: AdapterHost).
        base_models: model names jobs and chat accept (default: :func:`~andraeus_core.models.served_base_models`).
        storage_quota_bytes: bytes of uploads and adapters one tenant may keep.
        max_files_per_tenant: uploaded files one tenant may keep.
        max_evaluations: evaluations running at once (each loads a model and fills the CPU).
        inference: an external engine that generates chat answers (None: this process generates them). Gating,
            tenancy and usage accounting stay here either way.
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        workers: int = 1,
        max_queued: int = 16,
        max_queued_per_tenant: int = 4,
        chat_cache_size: int = 8,
        base_models: list[str] | None = None,
        storage_quota_bytes: int = 1024**3,
        max_files_per_tenant: int = 500,
        max_evaluations: int = 1,
        inference: RemoteEngine | None = None,
    ):
        self.store = store or Store()
        self.inference = inference
        self.workers = workers
        self.max_queued = max_queued
        self.max_queued_per_tenant = max_queued_per_tenant
        self.base_models = base_models or served_base_models()
        self.storage_quota_bytes = storage_quota_bytes
        self.max_files_per_tenant = max_files_per_tenant
        self.chats = ChatCache(chat_cache_size)
        self._hosts: dict[str, AdapterHost] = {}  # base model -> its adapters (see _host)
        self._hosts_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._cancel: dict[str, threading.Event] = {}
        self._busy: dict[str, str] = {}  # thread name -> job id
        self._evaluating: set[str] = set()  # job ids with an evaluation running (one per adapter at a time)
        self._evaluating_lock = threading.Lock()
        self._evaluation_slots = threading.BoundedSemaphore(max(1, max_evaluations))
        self._exports: dict[str, dict[str, Any]] = {}  # export id -> its record (kept in memory, see start_export)
        self._exports_lock = threading.Lock()
        self._export_runner = threading.Lock()  # one export at a time

    # ------------------------------------------------------------------------------------------------------------
    # lifecycle

    def start(self) -> None:
        """Recover jobs left by a previous process, then start the worker threads."""
        self._stop.clear()  # a stopped service may be started again (e.g. an app whose lifespan runs twice)
        self.recover()
        if self.workers:
            _preload_libraries()
        for i in range(self.workers):
            thread = threading.Thread(target=self._worker, name=f"andraeus-job-worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask running jobs to stop at their next step and the workers to exit (their jobs recover on restart)."""
        self._stop.set()
        for event in list(self._cancel.values()):
            event.set()
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        if self.inference is not None:
            self.inference.close()

    def ready(self) -> bool:
        """True when the database answers and every worker thread is alive."""
        return self.store.ping() and all(t.is_alive() for t in self._threads) and not self._stop.is_set()

    def recover(self) -> None:
        """Make every job left ``running`` by a dead process finished, resumable or failed (never stuck)."""
        for job in self.store.jobs_with_status("running"):
            adapter = Adapter(job["adapter_path"])
            if adapter.is_complete():
                self._finish_success(job, adapter)
                self.store.add_event(job, "The adapter had been written before the server restarted; job finished.")
            elif job["progress_epoch"] >= 1 and job["restarts"] < MAX_RESTARTS:
                self.store.update_job(job["id"], status="queued", resume=1, restarts=job["restarts"] + 1)
                self.store.add_event(
                    job, "The server restarted during training; the job resumes from its last epoch checkpoint."
                )
                logger.info("Job %s re-queued to resume from its checkpoint", job["id"])
            else:
                if job["progress_epoch"] >= 1:
                    message = (
                        f"The server stopped while this job was training {job['restarts'] + 1} times; it is not "
                        "resumed again. Create the job again."
                    )
                else:
                    message = (
                        "The server stopped while this job was training, before a checkpoint was saved; create the "
                        "job again."
                    )
                error = {"code": "server_restart", "message": message, "param": None}
                self.store.update_job(job["id"], status="failed", error=error, finished_at=int(time.time()))
                self.store.add_event(job, error["message"], level="error")
                shutil.rmtree(self.store.run_path(job["tenant"], job["id"]), ignore_errors=True)
                logger.info("Job %s failed after a server restart", job["id"])

    # ------------------------------------------------------------------------------------------------------------
    # files

    def upload_file(self, tenant: str, filename: str, purpose: str, data: bytes) -> dict[str, Any]:
        """Validate and store a training file.

        Raises:
            ProfileError: malformed content (message names line/field) or unsupported type.
            ConfigError: unsupported purpose.
        """
        if purpose != "fine-tune":
            raise ConfigError(f"purpose must be 'fine-tune', got {purpose!r}.", param="purpose")
        name = Path(filename or "upload").name
        if len(name) > MAX_FILENAME_CHARS:
            raise ProfileError(
                f"The file name has {len(name)} characters; at most {MAX_FILENAME_CHARS} are allowed.", param="file"
            )
        count, _ = self.store.file_usage(tenant)
        if count >= self.max_files_per_tenant:
            raise QuotaError(
                f"You have {count} files; the limit is {self.max_files_per_tenant}. Delete files you no longer need.",
                param="file",
            )
        self._check_storage(tenant, len(data))
        kind, fmt, _ = parse_training_file(name, data)
        return self.store.add_file(tenant, name, purpose, data, kind, fmt)

    def storage_used(self, tenant: str) -> int:
        """Bytes a tenant keeps: uploaded files plus the adapters of its fine-tuned models."""
        _, used = self.store.file_usage(tenant)
        for model in self.store.list_models(tenant):
            used += sum(f.stat().st_size for f in Path(model["path"]).rglob("*") if f.is_file())
        used += sum(f.stat().st_size for f in self._exports_dir(tenant).rglob("*") if f.is_file())
        return used

    def _check_storage(self, tenant: str, adding: int) -> None:
        used = self.storage_used(tenant)
        if used + adding > self.storage_quota_bytes:
            raise QuotaError(
                f"Your storage quota is {self.storage_quota_bytes:,} bytes and {used:,} are used"
                + (f"; this upload needs {adding:,} more" if adding else "")
                + ". Delete files or models you no longer need.",
                param="file" if adding else None,
            )

    def get_file(self, tenant: str, file_id: str) -> dict[str, Any]:
        record = self.store.get_file(tenant, file_id)
        if record is None:
            raise NotFoundError(f"No file with id '{file_id}'.", param="file_id")
        return record

    def delete_file(self, tenant: str, file_id: str) -> None:
        """Delete a file and everything derived from it: its unfinished jobs are cancelled and the models trained
        from it (adapters, evaluations, downloads; they hold copies of its facts) are deleted. Job records stay.

        Raises:
            NotFoundError: no such file for this tenant.
        """
        self.get_file(tenant, file_id)
        for job in self.store.jobs_for_file(tenant, file_id):
            if job["status"] not in FINISHED:
                self.cancel_job(tenant, job["id"])
            self._delete_job_outputs(tenant, job["id"])
        if not self.store.delete_file(tenant, file_id):
            raise NotFoundError(f"No file with id '{file_id}'.", param="file_id")

    # ------------------------------------------------------------------------------------------------------------
    # jobs

    def create_job(
        self,
        tenant: str,
        *,
        model: str,
        training_file: str,
        hyperparameters: dict[str, Any] | None = None,
        suffix: str | None = None,
        seed: int | None = None,
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Queue a fine-tuning job; returns ``(job, created)`` (``created`` False for an idempotent replay).

        Raises:
            NotFoundError: the training file does not exist for this tenant.
            ConfigError: unknown base model or invalid hyperparameters.
            ConflictError: the Idempotency-Key was used for a different request.
            QueueFullError: too many jobs waiting.
        """
        request = {
            "model": model,
            "training_file": training_file,
            "hyperparameters": hyperparameters or {},
            "suffix": suffix,
            "seed": seed,
            "metadata": metadata,
        }
        request_hash = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
        if idempotency_key:
            existing = self.store.job_by_idempotency_key(tenant, idempotency_key)
            if existing is not None:
                if existing["request_hash"] != request_hash:
                    raise ConflictError(
                        "This Idempotency-Key was already used for a different job request; use a new key.",
                        param="Idempotency-Key",
                    )
                return existing, False
        base = self._base_of(tenant, model)
        file = self.store.get_file(tenant, training_file)
        if file is None:
            raise NotFoundError(f"No file with id '{training_file}'.", param="training_file")
        if base != model and file.get("kind") != "profile":
            raise ConfigError(
                f"Continuing from '{model}' needs a profile (YAML, JSON or CSV facts): the update is computed from "
                "the facts that changed. Fine-tune a base model with a chat-JSONL file.",
                param="training_file",
            )
        seed = 0 if seed is None else seed
        if not 0 <= seed < 2**31:
            raise ConfigError(f"seed must be between 0 and 2147483647, got {seed}.", param="seed")
        check_metadata(metadata)
        hyper = dict(hyperparameters or {})
        if base != model and hyper.get("n_epochs", "auto") == "auto":
            hyper["n_epochs"] = UPDATE_EPOCHS  # continuing from a fine-tuned model: an update's fewer epochs
        _, resolved = resolve_hyperparameters(base, hyper, seed)
        self._check_storage(tenant, 0)
        mine = self.store.count_jobs(("queued",), tenant=tenant)
        if mine >= self.max_queued_per_tenant:
            raise QueueFullError(
                f"You have {mine} jobs waiting, the most one key may queue; retry when one has started.",
                retry_after=self._retry_after(),
            )
        queued = self.store.count_jobs(("queued",))
        if queued >= self.max_queued:
            raise QueueFullError(
                f"The training queue is full ({queued} jobs waiting); retry later.", retry_after=self._retry_after()
            )
        try:
            job = self.store.add_job(
                {
                    "id": new_id("ftjob-"),
                    "tenant": tenant,
                    "model": model,
                    "training_file": training_file,
                    "hyperparameters": resolved,
                    "suffix": suffix,
                    "seed": seed,
                    "metadata": metadata,
                    "idempotency_key": idempotency_key,
                    "request_hash": request_hash,
                }
            )
        except Exception as exc:  # a concurrent request with the same Idempotency-Key won the insert
            if idempotency_key and "UNIQUE" in str(exc):
                again = self.store.job_by_idempotency_key(tenant, idempotency_key)
                if again is not None and again["request_hash"] == request_hash:
                    return again, False
                raise ConflictError("This Idempotency-Key is in use.", param="Idempotency-Key") from None
            raise
        self.store.add_event(job, "Fine-tuning job created and queued.")
        with self._wake:
            self._wake.notify()
        return job, True

    def _retry_after(self) -> int:
        return 30

    def _base_of(self, tenant: str, model: str) -> str:
        """The base model a job on ``model`` trains: itself, or a fine-tuned model's base (the job then continues
        from that model's adapter, as OpenAI fine-tunes a fine-tuned model named in ``model``).

        Raises:
            NotFoundError: an ``ft:`` model this tenant does not have (another tenant's is not found either).
            ConfigError: an unknown base model.
        """
        if model in self.base_models:
            return model
        if model.startswith("ft:"):
            record = self.store.get_model(tenant, model)
            if record is None:
                raise NotFoundError(f"The model '{model}' does not exist.", param="model")
            return str(record["base_model"])
        raise ConfigError(
            f"Unknown base model {model!r}; fine-tune one of: {', '.join(self.base_models)}, or one of your ft: "
            "models.",
            param="model",
        )

    def get_job(self, tenant: str, job_id: str) -> dict[str, Any]:
        job = self.store.get_job(tenant, job_id)
        if job is None:
            raise NotFoundError(f"No fine-tuning job with id '{job_id}'.", param="fine_tuning_job_id")
        return job

    def cancel_job(self, tenant: str, job_id: str) -> dict[str, Any]:
        """Cancel a queued or running job (a running one stops after its current step).

        Raises:
            NotFoundError, ConflictError: unknown job, or it already finished.
        """
        job = self.get_job(tenant, job_id)
        if job["status"] in FINISHED:
            raise ConflictError(f"Job '{job_id}' already {job['status']}; it cannot be cancelled.", param="job_id")
        if self.store.update_job(
            job_id,
            only_if_status=("validating_files", "queued", "running"),
            status="cancelled",
            finished_at=int(time.time()),
        ):
            self.store.add_event(job, "Job cancelled.")
        event = self._cancel.get(job_id)
        if event is not None:
            event.set()
        return self.get_job(tenant, job_id)

    # ------------------------------------------------------------------------------------------------------------
    # the worker

    def _worker(self) -> None:
        name = threading.current_thread().name
        while not self._stop.is_set():
            job = self.store.claim_next_job()
            if job is None:
                with self._wake:
                    self._wake.wait(timeout=1.0)
                continue
            self._busy[name] = job["id"]
            try:
                self.run_job(job)
            except Exception:  # noqa: BLE001 - a worker must survive any job
                logger.exception("Job %s crashed the worker loop", job["id"])
            finally:
                self._busy.pop(name, None)

    def run_job(self, job: dict[str, Any]) -> None:
        """Train one claimed job to the end (succeeded, failed or cancelled)."""
        cancel = self._cancel.setdefault(job["id"], threading.Event())
        run_path = self.store.run_path(job["tenant"], job["id"])
        self.store.add_event(job, "Training resumed." if job["resume"] else "Training started.")
        try:
            file = self.store.get_file(job["tenant"], job["training_file"])
            if file is None:
                raise NotFoundError(f"The training file '{job['training_file']}' was deleted.", param="training_file")
            data = Path(file["path"]).read_bytes()
            kind, _, parsed = parse_training_file(file["filename"], data)
            # A profile goes in as its file so train() records it in private.json (needed by the evaluation).
            source = Path(file["path"]) if kind == "profile" else _chat_dataset(parsed, data, job["seed"])
            parent = None
            if job["model"] not in self.base_models:  # a fine-tuned model: continue from its adapter
                record = self.store.get_model(job["tenant"], job["model"])
                if record is None:
                    raise NotFoundError(
                        f"The model '{job['model']}' this job continues from was deleted.", param="model"
                    )
                parent = record["path"]
            config, _ = resolve_hyperparameters(
                self._base_of(job["tenant"], job["model"]),
                job["hyperparameters"],
                job["seed"],
                facts=len(parsed.facts) if kind == "profile" else None,
            )
            if parent is not None:
                # An update trains with the parent's settings (its LoRA shape) and the job's resolved epochs (the
                # update's fewer by default, see create_job) and batch size; its learning rate is the update's own
                # (update.UPDATE_LEARNING_RATE) unless the job set a multiplier.
                chosen = job["hyperparameters"].get("learning_rate_multiplier", "auto") != "auto"
                config = update_config(
                    Adapter.load(parent),
                    seed=job["seed"],
                    epochs=config.epochs,
                    batch_size=config.batch_size,
                    learning_rate=config.learning_rate if chosen else None,
                )
            last = {"t": 0.0}

            def on_progress(event: Any) -> None:
                self._progress(job, event, last)

            def should_stop() -> bool:
                return cancel.is_set() or self._stop.is_set()

            adapter = train(
                source,
                config,
                on_progress=on_progress,
                should_stop=should_stop,
                resume=bool(job["resume"]),
                out_dir=job["adapter_path"],
                runs_root=run_path,
                parent=parent,
            )
        except TrainingCancelled:
            if self._stop.is_set() and not cancel.is_set():
                logger.info("Job %s interrupted by shutdown; it recovers on the next start", job["id"])
                return  # its checkpoints stay for the resume
            self.store.add_event(job, "Training stopped: the job was cancelled.")
            shutil.rmtree(run_path, ignore_errors=True)
            return
        except AndraeusError as exc:
            self._fail(job, exc.code, self._without_paths(exc.message), exc.param)
            return
        except Exception as exc:  # noqa: BLE001
            logger.exception("Job %s failed unexpectedly", job["id"])
            self._fail(job, "internal_error", f"Training failed unexpectedly ({type(exc).__name__}).", None)
            return
        finally:
            self._cancel.pop(job["id"], None)
        shutil.rmtree(run_path, ignore_errors=True)
        self._finish_success(job, adapter)

    def _progress(self, job: dict[str, Any], event: Any, last: dict[str, float]) -> None:
        if event.phase == "train":
            eta = int(time.time() + event.eta_seconds) if event.eta_seconds is not None else None
            self.store.update_job(job["id"], estimated_finish=eta, progress_epoch=float(event.epoch))
            data = {
                "step": event.step,
                "total_steps": event.total_steps,
                "epoch": event.epoch,
                "train_loss": event.loss,
                "learning_rate": event.learning_rate,
                "tokens_per_second": event.tokens_per_second,
            }
            loss = f"{event.loss:.4f}" if event.loss is not None else "?"
            self.store.add_event(
                job, f"Step {event.step}/{event.total_steps}: training loss={loss}", type="metrics", data=data
            )
        elif event.message:
            self.store.add_event(job, f"[{event.phase}] {event.message}")

    def _fail(self, job: dict[str, Any], code: str, message: str, param: str | None) -> None:
        error = {"code": code, "message": message, "param": param}
        if self.store.update_job(
            job["id"], only_if_status=("running",), status="failed", error=error, finished_at=int(time.time())
        ):
            self.store.add_event(job, f"Job failed: {message}", level="error")
        # A failed job is never resumed (only one the server died under is): its checkpoints are of no use.
        shutil.rmtree(self.store.run_path(job["tenant"], job["id"]), ignore_errors=True)

    def _without_paths(self, message: str) -> str:
        """``message`` with this server's directories replaced: a job's error is shown to its tenant."""
        return message.replace(str(self.store.root), "<server>")

    def _finish_success(self, job: dict[str, Any], adapter: Adapter) -> None:
        metrics = adapter.meta.metrics
        base = adapter.meta.base_model
        model_id = fine_tuned_model_id(base, job["suffix"], job["id"])
        trained_tokens = int((metrics.tokens_per_epoch or 0) * (metrics.epochs or 0))
        finished = self.store.update_job(
            job["id"],
            only_if_status=("running",),
            status="succeeded",
            fine_tuned_model=model_id,
            trained_tokens=trained_tokens,
            finished_at=int(time.time()),
            estimated_finish=None,
        )
        if not finished:  # cancelled while the adapter was being written
            shutil.rmtree(adapter.path, ignore_errors=True)
            return
        self.store.add_model(job["tenant"], model_id, job["id"], base, str(adapter.path))
        self.store.add_checkpoint(
            job,
            int(metrics.steps or 0),
            model_id,
            {"step": metrics.steps, "train_loss": metrics.final_loss, "epochs": metrics.epochs},
        )
        self.store.add_event(job, f"New fine-tuned model created: {model_id}")
        self.store.add_event(job, "The job has successfully completed.")

    # ------------------------------------------------------------------------------------------------------------
    # models and chat

    def list_models(self, tenant: str) -> list[dict[str, Any]]:
        """Base presets (``owned_by`` "andraeus") then the tenant's fine-tuned models."""
        out = [{"id": name, "created": 0, "owned_by": "andraeus"} for name in self.base_models]
        out += [self._model_object(tenant, m) for m in self.store.list_models(tenant)]
        return out

    def _model_object(self, tenant: str, record: dict[str, Any]) -> dict[str, Any]:
        """A fine-tuned model as the API shows it; one continued from another names it as ``parent``."""
        job = self.store.get_job(tenant, record["job_id"])
        parent = job["model"] if job is not None and job["model"] not in self.base_models else None
        return {"id": record["id"], "created": record["created_at"], "owned_by": "user", "parent": parent}

    def get_model(self, tenant: str, model_id: str) -> dict[str, Any]:
        if model_id in self.base_models:
            return {"id": model_id, "created": 0, "owned_by": "andraeus"}
        record = self.store.get_model(tenant, model_id)
        if record is None:
            raise NotFoundError(f"The model '{model_id}' does not exist.", param="model")
        return self._model_object(tenant, record)

    def _fine_tuned(self, tenant: str, model_id: str) -> dict[str, Any]:
        record = self.store.get_model(tenant, model_id)
        if record is None:
            if model_id in self.base_models:
                raise ConfigError(f"'{model_id}' is a base model, not a fine-tuned one.", param="model")
            raise NotFoundError(f"The model '{model_id}' does not exist.", param="model")
        return record

    def delete_model(self, tenant: str, model_id: str) -> None:
        """Delete a fine-tuned model and its adapter files.

        Raises:
            ConfigError: a base model cannot be deleted. NotFoundError: no such model for this tenant.
        """
        record = self._fine_tuned(tenant, model_id)
        self._delete_job_outputs(tenant, record["job_id"])

    def delete_job(self, tenant: str, job_id: str) -> None:
        """Delete a finished job and everything it made: its model, adapter, checkpoints, evaluations, downloads,
        events.

        Raises:
            NotFoundError: no such job for this tenant. ConflictError: the job is queued or running (cancel it).
        """
        job = self.get_job(tenant, job_id)
        if job["status"] not in FINISHED:
            raise ConflictError(
                f"Job '{job_id}' is {job['status']}; cancel it before deleting it.", param="fine_tuning_job_id"
            )
        self._delete_job_outputs(tenant, job_id)
        self.store.delete_job(tenant, job_id)

    def _delete_job_outputs(self, tenant: str, job_id: str) -> None:
        """Remove what a job produced: its model and adapter, checkpoints, evaluation reports and download zip."""
        record = self.store.model_of_job(tenant, job_id)
        if record is not None:
            self.store.delete_model(tenant, record["id"])
            self.chats.forget(record["path"])
            with self._hosts_lock:
                hosts = list(self._hosts.values())
            for host in hosts:
                host.remove(record["path"])  # its weights leave memory too
            if self.inference is not None:
                self.inference.unload(record["path"])  # the engine's copy of the weights holds the facts too
        shutil.rmtree(self.store.adapter_path(tenant, job_id), ignore_errors=True)
        shutil.rmtree(self.store.run_path(tenant, job_id), ignore_errors=True)
        for report in (self.store.root / "evals").glob(f"{job_id}-*.json"):
            report.unlink(missing_ok=True)
        (self.store.root / "exports" / f"{job_id}.zip").unlink(missing_ok=True)
        for export in self._exports_dir(tenant).glob(f"{job_id}-*"):  # merged models and GGUF hold the facts
            if export.is_dir():
                shutil.rmtree(export, ignore_errors=True)
            else:
                export.unlink(missing_ok=True)
        for bundle in self._exports_dir(tenant).glob("bundle-*"):  # a vLLM bundle holds a copy of each adapter
            if not bundle.is_dir():
                continue
            try:
                jobs = json.loads((bundle / MARKER_FILE).read_text(encoding="utf-8")).get("adapters", [])
            except (OSError, ValueError):
                jobs = None  # unreadable: an unfinished bundle is never published, so this one is damaged
            if jobs is None or job_id in jobs:
                shutil.rmtree(bundle, ignore_errors=True)
                bundle.with_name(f"{bundle.name}.zip").unlink(missing_ok=True)  # its download
        with self._exports_lock:
            for key in [k for k, e in self._exports.items() if e["tenant"] == tenant and job_id in e["job_ids"]]:
                del self._exports[key]

    def chat_model(self, tenant: str, model_id: str) -> Any:
        """The loaded ChatModel for a base preset or one of the tenant's fine-tuned models."""
        if model_id in self.base_models:
            return self.chats.get(f"base:{model_id}", lambda: load_chat_model(model_id, cached=True))
        record = self._fine_tuned(tenant, model_id)
        return self.chats.get(
            record["path"],
            lambda: load_chat_model(record["base_model"], record["path"], host=self._host(record["base_model"])),
        )

    def _host(self, base_model: str) -> AdapterHost:
        """The AdapterHost of a base model: every tenant's adapters on it share one copy of its weights and one
        batch (their rows name their adapters), as many loaded as fine-tuned chat models are kept."""
        with self._hosts_lock:
            if base_model not in self._hosts:
                self._hosts[base_model] = AdapterHost(load_model(base_model), capacity=self.chats.size)
            return self._hosts[base_model]

    def complete(
        self,
        tenant: str,
        model_id: str,
        messages: list[dict[str, str]],
        config: Any,
        *,
        gate: bool = True,
        timeout_s: float | None = None,
    ) -> Completion | RemoteCompletion:
        """Start a chat completion (iterate the result for the text); ``gate=False`` bypasses the adapter's gate,
        ``timeout_s`` bounds its generation. With an external engine (``inference``) it generates the answer."""
        if self.inference is not None:
            return self._complete_remote(
                self.inference, tenant, model_id, messages, config, gate=gate, timeout_s=timeout_s
            )
        return Completion(self.chat_model(tenant, model_id), messages, config, gate=gate, timeout_s=timeout_s)

    def _complete_remote(
        self,
        engine: RemoteEngine,
        tenant: str,
        model_id: str,
        messages: list[dict[str, str]],
        config: Any,
        *,
        gate: bool,
        timeout_s: float | None,
    ) -> RemoteCompletion:
        if model_id in self.base_models:
            return RemoteCompletion(engine, messages, config, base_model=model_id, timeout_s=timeout_s)
        record = self._fine_tuned(tenant, model_id)
        adapter = Adapter.load(record["path"])
        # The gate routes on the base model's hidden states, so a gated adapter is loaded here too (once, cached
        # like any chat model); an adapter without a gate needs no model on this machine.
        router = self.chat_model(tenant, model_id) if gate and adapter.meta.gate is not None else None
        return RemoteCompletion(
            engine,
            messages,
            config,
            base_model=record["base_model"],
            adapter=adapter,
            router=router,
            timeout_s=timeout_s,
        )

    def model_zip(self, tenant: str, model_id: str) -> Path:
        """A zip of the fine-tuned model's shareable files (nothing private)."""
        record = self._fine_tuned(tenant, model_id)
        dest = self.store.root / "exports" / f"{record['job_id']}.zip"
        return adapter_zip(record["path"], dest)

    # ------------------------------------------------------------------------------------------------------------
    # exports (merged model, GGUF, Ollama, vLLM)

    def _exports_dir(self, tenant: str) -> Path:
        """Where a tenant's exports live: ``model-exports/<the tenant's hash, as for adapters>``."""
        return self.store.root / "model-exports" / self.store.adapter_path(tenant, "-").parent.name

    def start_export(self, tenant: str, model_id: str, fmt: str, quant: str | None = None) -> dict[str, Any]:
        """Start exporting one of the tenant's fine-tuned models in a background thread; returns the export record
        (``status`` queued, then running, succeeded or failed). One export runs at a time.

        Records live in memory: a restarted server forgets them (the files of an unfinished export never appear).

        Raises:
            NotFoundError: no such model. ConfigError: an unknown format or quant.
            QueueFullError: too many exports are waiting. QuotaError: the tenant's storage is used up.
        """
        record = self._fine_tuned(tenant, model_id)
        if fmt not in EXPORT_FORMATS:
            raise ConfigError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}.", param="format")
        self._check_storage(tenant, 0)
        return self._queue_export(tenant, [record], fmt, quant)

    def start_vllm_bundle(self, tenant: str, model_ids: Sequence[str] | None = None) -> dict[str, Any]:
        """Start a vLLM multi-LoRA bundle of several of the tenant's fine-tuned models (default: every one), all on
        one base model; each adapter is served under its model id made URL-safe. See :meth:`start_export`.

        Raises:
            ConfigError: no models, too many, a repeated id, or models on different base models (named).
            NotFoundError: a model does not exist. QueueFullError, QuotaError: as for :meth:`start_export`.
        """
        if model_ids is None:
            records = self.store.list_models(tenant)
            if not records:
                raise ConfigError("You have no fine-tuned models to bundle.", param="models")
        else:
            if not model_ids:
                raise ConfigError("models is empty; name at least one model, or leave it out for all.", param="models")
            if len(set(model_ids)) != len(model_ids):
                raise ConfigError("models names a model twice.", param="models")
            records = [self._fine_tuned(tenant, m) for m in model_ids]
        if len(records) > MAX_BUNDLE_MODELS:
            raise ConfigError(
                f"A bundle holds at most {MAX_BUNDLE_MODELS} models; you have {len(records)}: name some in 'models'.",
                param="models",
            )
        bases = sorted({r["base_model"] for r in records})
        if len(bases) > 1:
            raise ConfigError(
                f"vLLM serves adapters of one base model; these models are on {', '.join(bases)}: name the models "
                "of one base in 'models'.",
                param="models",
            )
        needed = 0
        for r in records:
            needed += sum(f.stat().st_size for f in Path(r["path"]).glob("adapter_*") if f.is_file())
        self._check_storage(tenant, needed)
        return self._queue_export(tenant, records, "vllm", None, bundle=True)

    def _queue_export(
        self, tenant: str, records: list[dict[str, Any]], fmt: str, quant: str | None, *, bundle: bool = False
    ) -> dict[str, Any]:
        with self._exports_lock:
            pending = [e for e in self._exports.values() if e["status"] in ("queued", "running")]
            if len(pending) >= MAX_PENDING_EXPORTS:
                raise QueueFullError("Other exports are waiting; retry later.", retry_after=60)
            export = {
                "id": new_id("export-"),
                "object": "model.export",
                "tenant": tenant,
                "job_id": records[0]["job_id"],
                "job_ids": [r["job_id"] for r in records],
                "model": records[0]["id"],
                "models": [r["id"] for r in records],
                "bundle": bundle,
                "format": fmt,
                "quant": quant,
                "status": "queued",
                "created_at": int(time.time()),
                "finished_at": None,
                "error": None,
                "bytes": None,
                "files": [],
                "commands": [],
                "path": None,
                "main_file": None,
            }
            self._exports[export["id"]] = export
        paths = [r["path"] for r in records]
        thread = threading.Thread(target=self._run_export, args=(export, paths), name="andraeus-export", daemon=True)
        thread.start()
        return dict(export)

    def _run_export(self, export: dict[str, Any], adapter_paths: list[str]) -> None:
        tenant = export["tenant"]
        suffix = f"-{export['quant']}" if export["quant"] else ""
        if export["bundle"]:
            # a bundle is named by its export; its marker lists the jobs, so deleting any of them deletes it
            out = self._exports_dir(tenant) / f"bundle-{export['id']}"
        else:
            out = self._exports_dir(tenant) / f"{export['job_id']}-{export['format']}{suffix}"
        with self._export_runner:
            export["status"] = "running"
            try:
                room = max(0, self.storage_quota_bytes - self.storage_used(tenant))
                if export["bundle"]:
                    names = [safe_name(m, limit=64) for m in export["models"]]
                    result = export_vllm(adapter_paths, out, names=names)
                else:
                    result = export_adapter(
                        adapter_paths[0], export["format"], out, quant=export["quant"], max_bytes=room
                    )
                if not all(self.store.model_of_job(tenant, j) for j in export["job_ids"]):
                    shutil.rmtree(result.path, ignore_errors=True)  # a model was deleted meanwhile: so is this
                    raise NotFoundError("A model of this export was deleted while it ran.", param="model")
            except AndraeusError as exc:
                message = exc.message
                for path in adapter_paths:
                    message = message.replace(str(path), "the model's adapter")
                message = self._without_paths(message)
                export.update(status="failed", error={"code": exc.code, "message": message, "param": exc.param})
            except Exception as exc:  # noqa: BLE001 - a background thread must record every failure
                logger.exception("Export %s failed", export["id"])
                message = f"The export failed: {type(exc).__name__}."
                export.update(status="failed", error={"code": "export_failed", "message": message, "param": None})
            else:
                export.update(
                    status="succeeded",
                    bytes=result.bytes,
                    files=result.files,
                    commands=result.commands[1:] if export["format"] == "ollama" else [],
                    path=str(result.path),
                    main_file=result.main_file,
                )
            export["finished_at"] = int(time.time())

    def get_export(self, tenant: str, export_id: str) -> dict[str, Any]:
        """An export record of this tenant.

        Raises:
            NotFoundError: no such export for this tenant (or the server restarted since).
        """
        with self._exports_lock:
            export = self._exports.get(export_id)
            if export is None or export["tenant"] != tenant:
                raise NotFoundError(f"No export '{export_id}'.", param="export_id")
            return dict(export)

    def export_file(self, tenant: str, export_id: str) -> Path:
        """The download of a finished export: the GGUF file itself, else a zip of the export directory.

        Raises:
            NotFoundError: no such export. ConflictError: the export has not succeeded.
        """
        export = self.get_export(tenant, export_id)
        if export["status"] != "succeeded" or not export["path"] or not Path(export["path"]).is_dir():
            raise ConflictError(f"Export '{export_id}' is {export['status']}; download it once it succeeded.")
        return export_download(export["path"])

    def push_model(self, tenant: str, model_id: str, repo_id: str, token: str, private: bool = True) -> str:
        """Push a fine-tuned model to the user's Hub repo with their token (used once, never kept)."""
        record = self._fine_tuned(tenant, model_id)
        return push_adapter(record["path"], repo_id, token, private=private)

    def evaluation(self, tenant: str, job_id: str, baselines: tuple[str, ...], refresh: bool = False) -> Any:
        """The evaluation report (JSON dict) of a succeeded job, computed once per set of baselines and kept.

        One evaluation of an adapter runs at a time, and at most ``max_evaluations`` in all: each loads a model.

        Raises:
            EvaluationError: an unknown baseline name.
            ConflictError: the job has not succeeded, its model was deleted, or it is being evaluated right now.
            QueueFullError: as many evaluations as allowed are running (retry after ``retry_after`` seconds).
        """
        unknown = [b for b in baselines if b not in BASELINES]
        if unknown:
            shown = unknown[0] if len(unknown[0]) <= 40 else unknown[0][:37] + "..."
            raise EvaluationError(
                f"Unknown baseline {shown!r}; choose from {', '.join(BASELINES)} (or 'none').", param="baselines"
            )
        chosen = tuple(b for b in BASELINES if b in baselines)  # one order and no repeats: one cache entry per set
        job = self.get_job(tenant, job_id)
        if job["status"] != "succeeded":
            raise ConflictError(
                f"Job '{job_id}' is {job['status']}; an evaluation needs a succeeded job.", param="job_id"
            )
        if self.store.model_of_job(tenant, job_id) is None:
            raise ConflictError(
                f"The model of job '{job_id}' was deleted, and its evaluation with it.", param="job_id"
            )
        cache = self.store.root / "evals" / f"{job_id}-{'-'.join(chosen) or 'adapter'}.json"
        if cache.is_file() and not refresh:
            return json.loads(cache.read_text())
        with self._evaluating_lock:
            if job_id in self._evaluating:
                raise ConflictError(
                    f"Job '{job_id}' is being evaluated right now; ask again when that evaluation ends.",
                    param="job_id",
                )
            self._evaluating.add(job_id)
        try:
            if not self._evaluation_slots.acquire(blocking=False):
                raise QueueFullError("Other evaluations are running; retry later.", retry_after=self._retry_after())
            try:
                report = evaluate(job["adapter_path"], None, chosen).to_json()
            except AndraeusError as exc:
                # The adapter's directory is this server's business; the tenant knows the job.
                exc.message = exc.message.replace(str(job["adapter_path"]), f"job {job_id}'s adapter")
                exc.message = self._without_paths(exc.message)
                exc.args = (exc.message,)
                raise
            finally:
                self._evaluation_slots.release()
            if self.store.model_of_job(tenant, job_id) is None:  # deleted while it was being evaluated
                raise ConflictError(f"The model of job '{job_id}' was deleted.", param="job_id")
            atomic_write(cache, json.dumps(report, ensure_ascii=False, default=str).encode(), private=True)
            return report
        finally:
            with self._evaluating_lock:
                self._evaluating.discard(job_id)

    def variations(self, data: bytes, filename: str, per_fact: int, seed: int) -> list[dict[str, Any]]:
        """Preview the question phrasings generated for a profile (nothing is stored)."""
        kind, _, profile = parse_training_file(filename, data)
        if kind != "profile":
            raise ProfileError(f"{filename}: variations need a profile (.yaml, .json or .csv).", param="file")
        out = []
        for phrasings in generate_variations(profile, per_fact=per_fact, seed=seed).values():
            out.extend(p.model_dump(mode="json") for p in phrasings)
        return out
