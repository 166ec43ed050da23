"""The FastAPI app factory: OpenAI-compatible routes under ``/v1``, health checks, errors, limits.

``create_app()`` builds the app; its lifespan starts the job workers (recovering jobs a previous process left) and
stops them on shutdown. ``andraeus serve`` runs it with uvicorn and mounts the web app (``andraeus_web``) at ``/``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from andraeus_core import ConfigError, Service, Store

from .deps import LOOPBACK, ApiSettings
from .errors import error_body, install_error_handlers
from .routes import chat, files, health, jobs, models, variations
from .schemas import ErrorResponse

logger = logging.getLogger("andraeus.api")

_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in [
        (400, "Invalid request"),
        (401, "Missing or wrong API key"),
        (404, "Not found (or another tenant's)"),
        (409, "Conflict with the resource's state"),
        (413, "Request body too large"),
        (422, "Request does not match the schema"),
        (429, "Queue full; see Retry-After"),
        (500, "Server error"),
    ]
}


class BodySizeLimit:
    """Pure ASGI middleware: 413 for bodies over the limit (by Content-Length, or counted while streaming)."""

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._reject(send)
            return
        seen = 0
        started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Any) -> None:
        import json

        body = json.dumps(
            error_body(
                f"Request body too large (limit {self.max_bytes} bytes).",
                "invalid_request_error",
                None,
                "request_too_large",
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def create_app(settings: ApiSettings | None = None, service: Service | None = None) -> FastAPI:
    """Build the REST API.

    Args:
        settings: server settings (default: from ``ANDRAEUS_API_*`` environment variables).
        service: the service to expose (default: one over ``$ANDRAEUS_HOME/api``); tests may pass their own.

    Raises:
        ConfigError: no API key exists and the server is not bound to a loopback address.
    """
    settings = settings or ApiSettings.from_env()
    if service is None:
        service = Service(
            Store(),
            workers=settings.workers,
            max_queued=settings.max_queued,
            chat_cache_size=settings.chat_cache_size,
        )
    service.store.set_env_keys(settings.api_keys)
    no_auth = not service.store.has_keys()
    if no_auth and settings.host not in LOOPBACK:
        raise ConfigError(
            f"Refusing to serve on {settings.host} without API keys: create one with `andraeus keys create` or set "
            "ANDRAEUS_API_KEYS (no-auth mode exists only on 127.0.0.1).",
            param="host",
        )
    if no_auth:
        logger.warning("No API keys configured: no-auth mode on %s (every caller is tenant 'local')", settings.host)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(
        title="Andraeus API",
        version="0.1.0",
        description="OpenAI-compatible fine-tuning and chat for personal-fact LoRA adapters. Use the official "
        "`openai` client with `base_url=<server>/v1`.",
        lifespan=lifespan,
        responses=_ERROR_RESPONSES,
    )
    app.state.service = service
    app.state.settings = settings
    app.state.no_auth = no_auth
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.include_router(health.router)
    for module in (files, jobs, models, chat, variations):
        app.include_router(module.router, prefix="/v1")
    return app
