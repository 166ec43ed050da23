"""Dependencies shared by the routers: settings, the service, and the caller's tenant (from the Bearer key)."""

from __future__ import annotations

import logging
import os
from typing import Annotated

from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from andraeus_core import ConfigError, Service

from .errors import ApiError

logger = logging.getLogger("andraeus.api")

LOCAL_TENANT = "local"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
#: Host header names a browser uses for this machine (DNS rebinding sends another name with a loopback address).
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]"}


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}.", param=name) from None


class ApiSettings(BaseModel):
    """How the API server behaves; ``from_env`` reads ``ANDRAEUS_API_*`` variables (the README's API section lists
    every limit and what exceeding it returns)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Address the server binds to (no-auth mode only on loopback).")
    workers: int = Field(1, ge=0, le=16, description="Training worker threads (0 = jobs queue but never run).")
    max_queued: int = Field(16, ge=0, description="Queued jobs allowed (all tenants) before new jobs get 429.")
    max_queued_per_tenant: int = Field(4, ge=0, description="Queued jobs one API key may have before it gets 429.")
    max_request_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest request body; larger gets 413.")
    storage_quota_bytes: int = Field(
        1024**3, ge=0, description="Bytes of uploads and adapters one API key may keep; beyond, 429 quota_exceeded."
    )
    max_files_per_tenant: int = Field(500, ge=0, description="Uploaded files one API key may keep.")
    max_evaluations: int = Field(1, ge=1, description="Evaluations running at once (each loads a model); then 429.")
    max_pending_chats: int = Field(
        8, ge=1, description="Chat completions admitted at once (generating or waiting for the model); then 429."
    )
    generation_timeout_s: float = Field(
        120.0, gt=0, description="Longest a chat completion may generate; then it ends with finish_reason 'length'."
    )
    stream_send_timeout_s: float = Field(
        30.0, gt=0, description="A stream whose client reads nothing for this long is dropped."
    )
    chat_cache_size: int = Field(
        8, ge=1, description="Fine-tuned chat models kept loaded (their adapters share one copy of the base model)."
    )
    api_keys: str | None = Field(None, description="Comma-separated 'key' or 'tenant=key' items (ANDRAEUS_API_KEYS).")

    @classmethod
    def from_env(cls, **overrides: object) -> ApiSettings:
        values: dict[str, object] = {
            "workers": _env_int("ANDRAEUS_API_WORKERS", 1),
            "max_queued": _env_int("ANDRAEUS_API_MAX_QUEUED", 16),
            "max_queued_per_tenant": _env_int("ANDRAEUS_API_MAX_QUEUED_PER_TENANT", 4),
            "max_request_bytes": _env_int("ANDRAEUS_API_MAX_REQUEST_BYTES", 16 * 1024 * 1024),
            "storage_quota_bytes": _env_int("ANDRAEUS_API_STORAGE_QUOTA_BYTES", 1024**3),
            "max_files_per_tenant": _env_int("ANDRAEUS_API_MAX_FILES", 500),
            "max_evaluations": _env_int("ANDRAEUS_API_MAX_EVALUATIONS", 1),
            "max_pending_chats": _env_int("ANDRAEUS_API_MAX_PENDING_CHATS", 8),
            "generation_timeout_s": _env_int("ANDRAEUS_API_GENERATION_TIMEOUT", 120),
            "stream_send_timeout_s": _env_int("ANDRAEUS_API_STREAM_SEND_TIMEOUT", 30),
            "chat_cache_size": _env_int("ANDRAEUS_API_CHAT_MODELS", 8),
            "api_keys": os.environ.get("ANDRAEUS_API_KEYS") or None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def get_service(request: Request) -> Service:
    return request.app.state.service


def get_tenant(request: Request) -> str:
    """The tenant of the request's Bearer key (401 without a valid one, unless the server runs in no-auth mode)."""
    service: Service = request.app.state.service
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if request.app.state.no_auth and not header:
        return LOCAL_TENANT
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(
            401,
            "Missing API key: send 'Authorization: Bearer <key>' (create one with `andraeus keys create`).",
            code="invalid_api_key",
        )
    tenant = service.store.tenant_for_key(key.strip())
    if tenant is None:
        if request.app.state.no_auth:
            return LOCAL_TENANT
        raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
    return tenant


ServiceDep = Annotated[Service, Depends(get_service)]
TenantDep = Annotated[str, Depends(get_tenant)]
