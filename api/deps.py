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


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}.", param=name) from None


class ApiSettings(BaseModel):
    """How the API server behaves; ``from_env`` reads ``ANDRAEUS_API_*`` variables."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Address the server binds to (no-auth mode only on loopback).")
    workers: int = Field(1, ge=0, le=16, description="Training worker threads (0 = jobs queue but never run).")
    max_queued: int = Field(16, ge=0, description="Queued jobs allowed before POST /v1/fine_tuning/jobs gets 429.")
    max_request_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest request body; larger gets 413.")
    chat_cache_size: int = Field(3, ge=1, description="Fine-tuned chat models kept loaded.")
    api_keys: str | None = Field(None, description="Comma-separated 'key' or 'tenant=key' items (ANDRAEUS_API_KEYS).")

    @classmethod
    def from_env(cls, **overrides: object) -> ApiSettings:
        values: dict[str, object] = {
            "workers": _env_int("ANDRAEUS_API_WORKERS", 1),
            "max_queued": _env_int("ANDRAEUS_API_MAX_QUEUED", 16),
            "max_request_bytes": _env_int("ANDRAEUS_API_MAX_REQUEST_BYTES", 16 * 1024 * 1024),
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
