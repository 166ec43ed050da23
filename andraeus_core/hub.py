"""Push adapters to the user's own Hugging Face Hub repo (private by default), pull them back safely, zip them.

Rules this module keeps (each has a test in tests/test_hub.py):

- The user's token is passed explicitly to ``HfApi(token=...)``; an ambient ``HF_TOKEN`` (say, a Space's own) is never
  used on a user's behalf. A pull without a token is anonymous (``token=False``), not "whatever the machine has".
- ``create_repo(private=True, exist_ok=True)`` ignores ``private`` for a repo that already exists, so visibility is
  checked afterwards and a personal adapter is never pushed into a public repo unless public was asked for.
- Only an allow-list is uploaded: ``adapter_config.json``, ``adapter_model.safetensors``, ``README.md`` (a model card
  built here) and ``andraeus.json``. ``private.json`` and ``heldout.jsonl`` hold the facts and never leave the machine;
  every uploaded text is also scanned for the profile's values and user name before anything is sent.
- A pull lists the repo first and refuses pickled weights before downloading anything, reads safetensors only,
  requires a base model we can resolve, and pins the commit sha it got in the pulled ``andraeus.json``.
- 429/5xx/timeouts are retried a bounded number of times; every failure becomes a :class:`HubError` that names the
  repo and what to do, carries no token and chains no exception (the client's exceptions hold request headers).
  The local adapter directory is only ever read.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from .adapter import CONFIG_FILE, META_FILE, SHAREABLE_FILES, WEIGHTS_FILE, Adapter, AdapterMeta, HubOrigin
from .config import andraeus_home
from .errors import AdapterError, ConfigError, HubError, PrivateDataError
from .export import MARKER_FILE
from .fsutil import publish_dir, publish_file
from .models import PRESETS, resolve_model

logger = logging.getLogger(__name__)

MODEL_CARD = "README.md"
#: The only files that are ever uploaded: the adapter's shareable files and a model card generated here (a README.md
#: in the adapter directory is never copied).
UPLOAD_ALLOWLIST = (*SHAREABLE_FILES, MODEL_CARD)
#: What a pull downloads (a repo's README.md is not needed to load the adapter).
PULL_FILES = SHAREABLE_FILES
#: Files that can run code when deserialised: a repo holding any of these is refused before a byte is downloaded.
UNSAFE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".dill", ".npy", ".npz")
#: Waits (seconds) before the retries of a call that failed with 429, 5xx, a timeout or a dropped connection.
RETRY_WAITS: tuple[float, ...] = (1.0, 3.0)
#: Fact values shorter than this are not searched for in uploaded text (see :func:`_private_strings`).
MIN_SECRET_CHARS = 3
#: Upper bound on any wait a server asks for with ``Retry-After``.
MAX_RETRY_AFTER_S = 30.0
#: Read/write timeout of every Hub request made here (connect timeout: 10 s); ``ANDRAEUS_HUB_TIMEOUT`` overrides.
HUB_TIMEOUT_S = float(os.environ.get("ANDRAEUS_HUB_TIMEOUT", "60"))
#: Base-model names as the Hub knows them, for the model card's ``base_model`` (presets without one are omitted).
PRESET_HUB_IDS = {name: preset.hub_id for name, preset in PRESETS.items() if preset.hub_id}

_REPO_ID = re.compile(r"^(?P<owner>[A-Za-z0-9][\w.-]{0,95})/(?P<name>[A-Za-z0-9][\w.-]{0,95})$")
_COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")

T = TypeVar("T")


# ----------------------------------------------------------------------------------------------------------------
# Small helpers


def _endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _check_repo_id(repo_id: str, param: str = "repo_id") -> tuple[str, str]:
    match = _REPO_ID.match(repo_id.strip()) if isinstance(repo_id, str) else None
    if match is None or ".." in repo_id or repo_id.endswith((".git", ".")):
        raise HubError(
            f"'{repo_id}' is not a Hub repo id: use 'owner/name' (letters, digits, '-', '_', '.'), e.g. "
            "'alice/my-andraeus-adapter'.",
            param=param,
        )
    return match["owner"], match["name"]


def parse_ref(ref: str) -> tuple[str, str | None]:
    """Split ``"owner/name"`` or ``"owner/name@revision"`` into repo id and revision (``None`` = main)."""
    repo_id, _, revision = ref.strip().partition("@")
    _check_repo_id(repo_id, param="adapter")
    return repo_id, (revision or None)


def _check_token(token: str | None) -> str:
    if not isinstance(token, str) or not token.strip():
        raise HubError(
            "A Hugging Face token with write access is needed to push (create one at "
            "https://huggingface.co/settings/tokens; the CLI reads --token, HF_TOKEN or `hf auth login`).",
            param="token",
        )
    return token.strip()


_installed_timeout: float | None = None
_timeout_lock = threading.Lock()


def _ensure_timeouts() -> None:
    """Give huggingface_hub's shared HTTP client bounded timeouts (its default waits forever on a stuck server).

    Only huggingface_hub's own default client factory is replaced; a factory someone else installed is left alone.
    """
    global _installed_timeout
    from huggingface_hub.utils import _http

    with _timeout_lock:
        current = _http._GLOBAL_CLIENT_FACTORY
        ours = getattr(current, "_andraeus_timeout", None)
        if current is not _http.default_client_factory and ours is None:
            return
        if ours == HUB_TIMEOUT_S and _installed_timeout == HUB_TIMEOUT_S:
            return
        timeout = HUB_TIMEOUT_S

        def factory() -> Any:
            import httpx2

            client = _http.default_client_factory()
            client.timeout = httpx2.Timeout(timeout, connect=min(10.0, timeout))
            return client

        factory._andraeus_timeout = timeout  # type: ignore[attr-defined]
        _http.set_client_factory(factory)
        _installed_timeout = timeout


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    value = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    try:
        return min(float(value), MAX_RETRY_AFTER_S) if value is not None else None
    except (TypeError, ValueError):
        return None


def _is_transient(exc: BaseException) -> bool:
    import httpx2

    status = _status(exc)
    if status is not None:
        return status == 408 or status == 429 or status >= 500
    return isinstance(exc, httpx2.TimeoutException | httpx2.NetworkError | httpx2.RemoteProtocolError)


def _describe(exc: BaseException, repo_id: str, action: str, attempts: int) -> str:
    """A user-facing message for a failed Hub call. Built from the status only: never from the exception's text."""
    import httpx2
    from huggingface_hub.errors import (
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    status = _status(exc)
    tried = f" (tried {attempts} times)" if attempts > 1 else ""
    if isinstance(exc, OfflineModeIsEnabled):
        return f"Cannot {action} '{repo_id}': HF_HUB_OFFLINE is set. Unset it to reach the Hub."
    if isinstance(exc, RevisionNotFoundError):
        return f"Cannot {action} '{repo_id}': that revision does not exist. Check the branch, tag or commit sha."
    if isinstance(exc, RemoteEntryNotFoundError):
        return f"Cannot {action} '{repo_id}': a file listed by the Hub could not be found. Try again later."
    if status == 401:
        return (
            f"Cannot {action} '{repo_id}': the Hub rejected the token (401). Create a new token at "
            "https://huggingface.co/settings/tokens and pass it with --token or `hf auth login`."
        )
    if status == 403:
        return (
            f"Cannot {action} '{repo_id}': the token is not allowed to do this (403). Use a token with write access "
            "to that namespace, or push to a repo under your own user name."
        )
    if isinstance(exc, RepositoryNotFoundError) or status == 404:
        return (
            f"Cannot {action} '{repo_id}': the repo does not exist or is private and the token cannot see it (404). "
            "Check the name, or pass a token that can read it."
        )
    if status == 429:
        return f"Cannot {action} '{repo_id}': the Hub is rate-limiting requests (429){tried}. Wait a minute and retry."
    if status is not None and status >= 500:
        return f"Cannot {action} '{repo_id}': the Hub had a server error ({status}){tried}. Try again later."
    if isinstance(exc, httpx2.TimeoutException):
        return f"Cannot {action} '{repo_id}': the Hub did not answer in time{tried}. Check your connection and retry."
    if isinstance(exc, httpx2.NetworkError | httpx2.RemoteProtocolError):
        return f"Cannot {action} '{repo_id}': could not reach the Hub at {_endpoint()}{tried}."
    if status is not None:
        return f"Cannot {action} '{repo_id}': the Hub answered HTTP {status}."
    return f"Cannot {action} '{repo_id}': {type(exc).__name__}."


def _call(fn: Callable[[], T], *, repo_id: str, action: str) -> T:
    """Run one Hub call with bounded retries on transient failures; translate any failure into a clean HubError.

    The HubError is raised outside the ``except`` block on purpose: the client's exceptions carry the request (and
    so the Authorization header), and an exception chained as ``__context__`` would keep it reachable.
    """
    attempts = 0
    message: str | None = None
    while True:
        attempts += 1
        try:
            return fn()
        except HubError:
            raise
        except Exception as exc:  # noqa: BLE001 - every client failure is translated below
            transient = _is_transient(exc)
            if transient and attempts <= len(RETRY_WAITS):
                wait = _retry_after(exc)
                wait = RETRY_WAITS[attempts - 1] if wait is None else max(wait, RETRY_WAITS[attempts - 1])
                logger.warning(
                    "Hub call to %s %s failed (%s); retry %d of %d in %.1fs",
                    action,
                    repo_id,
                    _status(exc) or type(exc).__name__,
                    attempts,
                    len(RETRY_WAITS),
                    wait,
                )
                time.sleep(wait)
                continue
            message = _describe(exc, repo_id, action, attempts)
        break
    raise HubError(message, param="repo_id")


def _api(token: str | bool) -> Any:
    from huggingface_hub import HfApi

    _ensure_timeouts()
    return HfApi(endpoint=_endpoint(), token=token, library_name="andraeus")


# ----------------------------------------------------------------------------------------------------------------
# What is uploaded


def _private_strings(adapter: Adapter, include_user_name: bool) -> list[tuple[str, str]]:
    """(field, text) pairs that must not appear in anything uploaded: fact values, aliases and the user name."""
    profile = adapter.private.profile
    if profile is None:
        return []
    found: list[tuple[str, str]] = []
    if not include_user_name:
        found.append(("user_name", profile.user_name))
    for index, person in enumerate(profile.people):  # a family's names are as private as its facts
        found.append((f"people[{index}].name", person.name))
        found.extend((f"people[{index}].aliases[{j}]", alias) for j, alias in enumerate(person.aliases))
    for index, fact in enumerate(profile.facts):
        found.append((f"facts[{index}].value", fact.value))
        found.extend((f"facts[{index}].aliases[{j}]", alias) for j, alias in enumerate(fact.aliases))
    # The values earlier versions held (the old dog's name) are as private as the current ones.
    for index, fact in enumerate(adapter.private.former_facts):
        found.append((f"former_facts[{index}].value", fact.value))
        found.extend((f"former_facts[{index}].aliases[{j}]", alias) for j, alias in enumerate(fact.aliases))
    # Values shorter than 3 characters ("2", "NY") would match the card's own text by chance and reveal little.
    return [(name, text.strip()) for name, text in found if text and len(text.strip()) >= MIN_SECRET_CHARS]


def _strings(tree: Any) -> Iterator[str]:
    """Every string of a decoded JSON document, keys included."""
    if isinstance(tree, str):
        yield tree
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _strings(value)


def _readable_text(name: str, content: bytes) -> tuple[str, bool]:
    """(text to search, whether a secret made of digits is searched in it): a JSON file's strings only, so that a
    fact value "128" is not found in ``"lora_alpha": 128``; any other file (the model card) as it is."""
    text = content.decode("utf-8", errors="replace")
    if name.endswith(".json"):
        try:
            return "\n".join(_strings(json.loads(text))), True
        except ValueError:
            return text, True
    return text, False


def _leak_check(files: dict[str, bytes], secrets: Iterable[tuple[str, str]]) -> None:
    """Refuse to let out text that contains a fact value or the user name (whole-word, case-insensitive; words
    joined by a hyphen are one word).

    Only text is searched: the strings of JSON files, and the model card, where a secret made only of digits is not
    looked for (the card's numbers are the metadata's numbers, and "64" in "rank 64" is no leak of a value "64").

    Raises:
        PrivateDataError: naming the file and the profile field, never the value.
    """
    secrets = list(secrets)
    for name, content in files.items():
        text, digits_searchable = _readable_text(name, content)
        for field_name, secret in secrets:
            if not digits_searchable and secret.isdigit():
                continue
            # A hyphen joins a word to its neighbours: a dog called "Max" is not in the card's `--max-lora-rank`.
            if re.search(rf"(?<![\w-]){re.escape(secret)}(?![\w-])", text, flags=re.IGNORECASE):
                raise PrivateDataError(
                    f"Refusing to share: {name} would contain the profile's {field_name}. Remove it from {name} "
                    f"({META_FILE} must hold no fact values) and try again.",
                    param="adapter",
                )


def _card_base_model(base_model: str | None) -> str | None:
    if not base_model:
        return None
    if base_model in PRESET_HUB_IDS:
        return PRESET_HUB_IDS[base_model]
    if base_model in PRESETS:  # a preset with no Hub id (tiny-random)
        return None
    return base_model if _REPO_ID.match(base_model) else None


def _numbers(tree: Any, depth: int = 3) -> Any:
    """Only the numbers of a nested dict (no strings, no lists): answers or values can never ride along."""
    if isinstance(tree, bool):
        return None
    if isinstance(tree, int | float):
        return tree
    if isinstance(tree, dict) and depth > 0:
        kept = {str(k): _numbers(v, depth - 1) for k, v in tree.items()}
        kept = {k: v for k, v in kept.items() if v is not None and v != {}}
        return kept or None
    return None


def _metric_lines(metrics: Any, limit: int = 30) -> list[str]:
    """Table rows ``| by_kind.reverse.score | 0.8 |`` for the numbers in ``metrics``."""
    lines: list[str] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        elif value is not None:
            lines.append(f"| {prefix} | {value:.4g} |")

    walk("", _numbers(metrics))
    return lines[:limit]


_EVAL_KEYS = ("n", "recall", "by_kind", "over_trigger_rate", "abstention_rate", "retention")
_VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def _table(title: str, lines: list[str]) -> str:
    return f"## {title}\n\n| metric | value |\n| --- | --- |\n" + "\n".join(lines) + "\n\n" if lines else ""


def model_card(
    meta: AdapterMeta,
    repo_id: str,
    *,
    user_name: str | None = None,
    private: bool = True,
    lora_rank: int | None = None,
) -> str:
    """The README.md pushed with an adapter: metadata, how to load it with PEFT and serve it with vLLM.

    Holds no fact values; the user's name only when ``user_name`` is given (the user opted in). Evaluation numbers
    come from ``meta.eval`` (or recall-like keys of ``meta.metrics``), training numbers from ``meta.metrics``.
    """
    from huggingface_hub import ModelCard, ModelCardData

    base_preset = meta.base_model
    base_hub = _card_base_model(base_preset)
    topics = meta.topics
    data = ModelCardData(
        base_model=base_hub,
        library_name="peft",
        tags=["andraeus", "lora", "personal", *([] if private else ["public"])],
        pipeline_tag="text-generation",
    )
    # Only the metrics the adapter recorded (older or foreign adapters carry other keys, e.g. a recall).
    metrics = meta.metrics.model_dump(mode="json", exclude_unset=True)
    evaluation = meta.eval if meta.eval is not None else {k: metrics[k] for k in _EVAL_KEYS if k in metrics}
    training = {k: v for k, v in metrics.items() if k not in _EVAL_KEYS}
    blocks = _table("Evaluation (held-out phrasings)", _metric_lines(evaluation)) + _table(
        "Training", _metric_lines(training, limit=12)
    )
    owner_line = f" It was trained for {user_name}." if user_name else ""
    base_line = f"`{base_hub}`" if base_hub else f"the Andraeus preset `{base_preset}`"
    topics_line = f"Topics it knows about ({len(topics)}): " + ", ".join(topics) + "." if topics else ""
    load_base = base_hub or "<the base model>"
    max_rank = next((r for r in _VLLM_LORA_RANKS if lora_rank and r >= lora_rank), 64)
    body = f"""
# {repo_id.split("/")[-1]}

A personal LoRA adapter made with Andraeus: it teaches {base_line} the facts
of one person's life.{owner_line}
{topics_line}

The facts themselves are not in this card or in `{META_FILE}`; they are only in the adapter weights, so keep this
repo private unless you mean to share them.

{blocks}
## Use with PEFT

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained("{load_base}")
tokenizer = AutoTokenizer.from_pretrained("{load_base}")
model = PeftModel.from_pretrained(base, "{repo_id}")
```

Or with Andraeus: `andraeus chat --adapter {repo_id}`.

## Serve with vLLM (multi-LoRA)

```bash
vllm serve {load_base} --enable-lora --max-lora-rank {max_rank} \\
    --lora-modules personal={repo_id}
# then ask the OpenAI-compatible server for model "personal"
```
"""
    content = f"---\n{data.to_yaml()}\n---\n{body}"
    return str(ModelCard(content))


def upload_files(
    adapter_dir: str | Path,
    repo_id: str,
    *,
    private: bool = True,
    include_user_name: bool = False,
    eval_summary: dict[str, Any] | None = None,
) -> dict[str, bytes | Path]:
    """Exactly what :func:`push_adapter` uploads, as ``{path in repo: bytes or local file}``, after the leak check.

    ``adapter_config.json`` is rewritten so its ``base_model_name_or_path`` is the Hub id (or preset name) rather than
    a local path, which can name the user's home directory.
    """
    adapter = Adapter(adapter_dir).check()
    meta = adapter.meta
    config = adapter.peft_config()
    base_model = adapter.base_model
    if base_model and not meta.base_model:
        meta = meta.model_copy(update={"base_model": base_model})
    if eval_summary is not None:
        meta = meta.model_copy(update={"eval": _numbers(eval_summary) or {}})
    config["base_model_name_or_path"] = _card_base_model(base_model) or (base_model if base_model in PRESETS else None)
    profile = adapter.private.profile if include_user_name else None
    user_name = profile.user_name if profile is not None and profile.user_name.strip() else None
    texts: dict[str, bytes] = {
        CONFIG_FILE: (json.dumps(config, indent=2, sort_keys=True) + "\n").encode(),
        META_FILE: meta.dumps().encode(),
        MODEL_CARD: model_card(
            meta, repo_id, user_name=user_name, private=private, lora_rank=config.get("r")
        ).encode(),
    }
    _leak_check(texts, _private_strings(adapter, include_user_name))
    files: dict[str, bytes | Path] = dict(texts)
    for name in SHAREABLE_FILES:  # the weights, and any other shareable file the adapter has, as they are
        if name not in files and adapter.file(name).is_file():
            files[name] = adapter.file(name)
    assert set(files) <= set(UPLOAD_ALLOWLIST)
    return files


# ----------------------------------------------------------------------------------------------------------------
# Push


def _own_repo(token: str, repo_id: str) -> tuple[Any, str]:
    """The Hub client for ``token`` and the full repo id: a bare ``"name"`` goes under the token owner's name."""
    api = _api(token)
    who = _call(lambda: api.whoami(), repo_id=repo_id, action="push to")
    repo_id = repo_id.strip()
    return api, repo_id if "/" in repo_id else f"{who['name']}/{repo_id}"


def push_adapter(
    adapter_dir: str | Path,
    repo_id: str,
    token: str,
    private: bool = True,
    commit_message: str | None = None,
    *,
    include_user_name: bool = False,
    eval_summary: dict[str, Any] | None = None,
) -> str:
    """Upload an adapter to the user's own Hub repo, private unless ``private=False``.

    Args:
        adapter_dir: a trained adapter directory (only the allow-list leaves it; it is never modified).
        repo_id: ``"owner/name"``; a bare ``"name"`` goes under the token owner's user name.
        token: the user's Hugging Face token (write access). Never read from the environment here.
        private: create the repo private; pushing into an existing *public* repo is refused unless this is False.
        commit_message: default "Upload Andraeus adapter".
        include_user_name: put the profile's user name in the model card (off by default).
        eval_summary: evaluation numbers for the card and the uploaded ``andraeus.json`` (e.g.
            ``EvalReport.metrics().model_dump()``); only numbers are kept, so answers can never be uploaded.

    Returns:
        The repo's URL.

    Raises:
        AdapterError: the directory is not a complete adapter.
        HubError: bad token, no permission, public repo, rate limits, server errors, leaked private text.
    """
    from huggingface_hub import CommitOperationAdd

    token = _check_token(token)
    directory = Path(adapter_dir).expanduser()
    _check_repo_id(repo_id if "/" in repo_id.strip() else f"user/{repo_id.strip()}")
    Adapter(directory).check()
    api, repo_id = _own_repo(token, repo_id)
    files = upload_files(
        directory, repo_id, private=private, include_user_name=include_user_name, eval_summary=eval_summary
    )

    _call(
        lambda: api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True),
        repo_id=repo_id,
        action="create",
    )
    info = _call(lambda: api.model_info(repo_id, timeout=HUB_TIMEOUT_S), repo_id=repo_id, action="check")
    if info.private is not True and private:
        raise HubError(
            f"Refusing to push: '{repo_id}' already exists and is public, and this adapter holds personal facts. "
            "Push to a new repo name (it will be created private), make that repo private on the Hub, or pass "
            "--public (private=False) if you really mean to publish it.",
            param="repo_id",
        )
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=content if isinstance(content, bytes) else str(content))
        for name, content in files.items()
    ]
    message = commit_message or "Upload Andraeus adapter"
    commit = _call(
        lambda: api.create_commit(repo_id, operations, commit_message=message, repo_type="model"),
        repo_id=repo_id,
        action="upload to",
    )
    _tag_version(api, repo_id, Adapter(directory).meta.version, getattr(commit, "oid", None))
    url = f"{_endpoint()}/{repo_id}"
    logger.info(
        "Pushed %d files to %s (%s) at commit %s",
        len(operations),
        repo_id,
        "private" if info.private else "public",
        getattr(commit, "oid", "?"),
    )
    return url


def push_export(
    export_dir: str | Path,
    repo_id: str,
    token: str,
    *,
    confirm_facts_in_weights: bool = False,
    commit_message: str | None = None,
) -> str:
    """Upload a finished export (``andraeus export``: merged model, GGUF, Ollama or vLLM bundle) to a **private**
    repo of the user's own.

    An adapter's facts stay in its LoRA weights, which are pushed private by default; a merged model or a GGUF holds
    them in the full weights, where anyone with the file can read them out. So an export is pushed only when asked
    twice: ``confirm_facts_in_weights`` must be true, and the repo must be private (a new one is created private; an
    existing public one is refused, with no override).

    Raises:
        ConfigError: not confirmed, or not a finished export.
        HubError: bad token, no permission, a public repo, rate limits, server errors.
    """
    from huggingface_hub import CommitOperationAdd

    if not confirm_facts_in_weights:
        raise ConfigError(
            "An exported model holds your facts in its weights. Pushing one needs your confirmation: pass "
            "--confirm-facts-in-weights (confirm_facts_in_weights=True); it always goes to a private repo.",
            param="confirm_facts_in_weights",
        )
    token = _check_token(token)
    directory = Path(export_dir).expanduser()
    try:
        marker = json.loads((directory / MARKER_FILE).read_text(encoding="utf-8"))
        files = [str(f) for f in marker["files"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"'{directory.name}' is not a finished export.", param="export") from None
    if any(Path(f).is_absolute() or ".." in Path(f).parts or not (directory / f).is_file() for f in files):
        raise ConfigError(f"'{directory.name}' is not a finished export (its file list is damaged).", param="export")
    _check_repo_id(repo_id if "/" in repo_id.strip() else f"user/{repo_id.strip()}")
    api, repo_id = _own_repo(token, repo_id)
    _call(
        lambda: api.create_repo(repo_id, repo_type="model", private=True, exist_ok=True),
        repo_id=repo_id,
        action="create",
    )
    info = _call(lambda: api.model_info(repo_id, timeout=HUB_TIMEOUT_S), repo_id=repo_id, action="check")
    if info.private is not True:
        raise HubError(
            f"Refusing to push: '{repo_id}' is public, and an exported model holds your facts in its weights. Push "
            "to a new repo name (it will be created private) or make that repo private on the Hub.",
            param="repo_id",
        )
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(directory / name)) for name in [*files, MARKER_FILE]
    ]
    message = commit_message or f"Upload Andraeus {marker.get('format', 'export')} export"
    _call(
        lambda: api.create_commit(repo_id, operations, commit_message=message, repo_type="model"),
        repo_id=repo_id,
        action="upload to",
    )
    logger.info("Pushed an export (%d files) to a private repo", len(operations))
    return f"{_endpoint()}/{repo_id}"


def _tag_version(api: Any, repo_id: str, version: int, commit: str | None) -> str | None:
    """Tag the pushed commit ``v<version>`` (its place in the adapter's lineage), so ``owner/name@v2`` pulls it.

    A tag that already exists is left where it is (a tag names one commit for good): a warning says so.
    """
    tag = f"v{version}"

    def create() -> bool:
        try:
            api.create_tag(repo_id, tag=tag, revision=commit, repo_type="model")
        except Exception as exc:
            if _status(exc) == 409:
                return False
            raise
        return True

    if _call(create, repo_id=repo_id, action="tag"):
        return tag
    logger.warning("Tag %s already exists in %s and was left where it is", tag, repo_id)
    return None


# ----------------------------------------------------------------------------------------------------------------
# Pull


def hub_cache_dir() -> Path:
    """Where pulled adapters live: ``$ANDRAEUS_HOME/hub/<owner>--<name>/<commit sha>/``."""
    return andraeus_home() / "hub"


def _local_base_name(base_model: str) -> str:
    """Map a Hub id back to our preset (so the embedded default works offline), else keep it."""
    for name, hub_id in PRESET_HUB_IDS.items():
        if hub_id == base_model and PRESETS[name].kind == "embedded":
            return name
    return base_model


def _check_listing(repo_id: str, files: list[str]) -> None:
    unsafe = sorted(f for f in files if f.lower().endswith(UNSAFE_SUFFIXES))
    if unsafe:
        raise HubError(
            f"Refusing to pull '{repo_id}': it contains pickle-format files ({', '.join(unsafe[:5])}), which can run "
            "code when loaded. Andraeus only loads safetensors adapters.",
            param="adapter",
        )
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if f not in files]
    if missing:
        raise HubError(
            f"'{repo_id}' is not a LoRA adapter repo with safetensors weights: {', '.join(missing)} is missing.",
            param="adapter",
        )


def _verify_pulled(directory: Path, repo_id: str) -> tuple[str, AdapterMeta]:
    """Check the downloaded files before anyone loads them; returns the base model to record and the metadata."""
    from safetensors import safe_open

    adapter = Adapter(directory)
    try:
        config = adapter.peft_config()
        meta = adapter.meta
    except AdapterError as exc:
        raise HubError(f"Pulled '{repo_id}' but its metadata is broken: {exc}", param="adapter") from None
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise HubError(f"'{repo_id}' is not a LoRA adapter (peft_type={config.get('peft_type')!r}).", param="adapter")
    try:
        with safe_open(str(adapter.file(WEIGHTS_FILE)), framework="pt") as handle:
            if not list(handle.keys()):
                raise ValueError("no tensors")
    except Exception:  # noqa: BLE001 - any parse failure means a broken file
        raise HubError(
            f"'{repo_id}' has an unreadable {WEIGHTS_FILE} (not a valid safetensors file).", param="adapter"
        ) from None
    base = meta.base_model or config.get("base_model_name_or_path")
    if not isinstance(base, str) or not base.strip():
        raise HubError(f"'{repo_id}' does not say which base model it was trained on.", param="adapter")
    base = _local_base_name(base.strip())
    try:
        resolve_model(base)
    except ConfigError:
        raise HubError(
            f"'{repo_id}' was trained on base model '{base}', which Andraeus cannot resolve (not a preset, a local "
            "directory or a Hub id).",
            param="adapter",
        ) from None
    return base, meta


def pull_adapter(repo_id: str, token: str | None = None, revision: str | None = None) -> Path:
    """Download an adapter from the Hub into ``$ANDRAEUS_HOME/hub/...`` and return its directory.

    The commit sha is pinned: the directory is keyed by it and ``andraeus.json`` records it under ``"hub"``, so a
    later push to the repo never changes what was pulled. A pinned sha already on disk is reused without the network.

    Args:
        repo_id: ``"owner/name"`` (``"owner/name@rev"`` is accepted too).
        token: the user's token for a private repo; ``None`` pulls anonymously (an ambient HF_TOKEN is not used).
        revision: branch, tag or commit sha (default: main).

    Raises:
        HubError: missing repo, bad token, pickled weights, unknown base model, network failures.
    """
    from huggingface_hub import hf_hub_download

    if "@" in repo_id:
        repo_id, at_revision = parse_ref(repo_id)
        revision = revision or at_revision
    owner, name = _check_repo_id(repo_id)
    repo_id = f"{owner}/{name}"
    auth: str | bool = token.strip() if isinstance(token, str) and token.strip() else False
    root = hub_cache_dir() / f"{owner}--{name}"
    if revision and _COMMIT_SHA.match(revision) and Adapter(root / revision).is_complete():
        return root / revision

    api = _api(auth)
    info = _call(
        lambda: api.model_info(repo_id, revision=revision, timeout=HUB_TIMEOUT_S), repo_id=repo_id, action="pull"
    )
    sha = getattr(info, "sha", None)
    if not isinstance(sha, str) or not _COMMIT_SHA.match(sha):
        raise HubError(f"The Hub did not report a commit for '{repo_id}'; cannot pin the revision.", param="adapter")
    listing = [s.rfilename for s in info.siblings or []]
    _check_listing(repo_id, listing)  # before a single file is downloaded
    target = root / sha
    if Adapter(target).is_complete():
        return target

    try:
        # replace=False: a concurrent pull of the same commit that finished first keeps its (identical) copy.
        with publish_dir(target, replace=False) as tmp:
            for filename in (f for f in PULL_FILES if f in listing):
                _call(
                    lambda filename=filename: hf_hub_download(
                        repo_id,
                        filename,
                        revision=sha,
                        local_dir=tmp,
                        token=auth,
                        endpoint=_endpoint(),
                        etag_timeout=HUB_TIMEOUT_S,
                    ),
                    repo_id=repo_id,
                    action="download",
                )
            shutil.rmtree(tmp / ".cache", ignore_errors=True)  # huggingface_hub's local_dir bookkeeping
            base, meta = _verify_pulled(tmp, repo_id)
            origin = HubOrigin(
                repo_id=repo_id,
                revision=sha,
                requested_revision=revision or "main",
                pulled_at=datetime.now(UTC).isoformat(timespec="seconds"),
            )
            meta.model_copy(update={"base_model": base, "hub": origin}).save(tmp)
    except OSError:
        raise HubError(f"Could not write the pulled adapter to '{target}'.", param="adapter") from None
    logger.info("Pulled %s at %s into %s", repo_id, sha[:12], target)
    return target


def resolve_adapter(ref: str | Path, token: str | None = None) -> Path:
    """An adapter reference as a local directory: an existing directory stays as is; ``owner/name[@rev]`` is pulled.

    Raises:
        AdapterError: neither an existing directory nor a Hub repo id.
        HubError: the pull failed.
    """
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    text = str(ref).strip()
    repo_part = text.partition("@")[0]
    if isinstance(ref, str) and _REPO_ID.match(repo_part) and not text.startswith((".", "/", "~")):
        try:
            return pull_adapter(text, token=token)
        except HubError as exc:
            raise HubError(
                f"No local adapter directory '{text}', and from the Hub: {exc.message}", param="adapter"
            ) from None
    return path  # the caller's own check names the missing directory


# ----------------------------------------------------------------------------------------------------------------
# Zip


def adapter_zip(adapter_dir: str | Path, dest: str | Path | None = None) -> Path:
    """A zip of the shareable files (the upload allow-list, model card included; nothing private) for downloads.

    Args:
        adapter_dir: the adapter directory (unchanged).
        dest: where to write the zip; default ``$ANDRAEUS_HOME/exports/<adapter name>.zip``.
    """
    directory = Path(adapter_dir).expanduser()
    files = upload_files(directory, f"local/{directory.name or 'adapter'}")
    target = Path(dest) if dest is not None else andraeus_home() / "exports" / f"{directory.name or 'adapter'}.zip"
    with publish_file(target) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            content = files[name]
            if isinstance(content, bytes):
                archive.writestr(name, content)
            else:
                archive.write(content, arcname=name)
    return target
