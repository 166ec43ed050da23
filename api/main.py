"""The FastAPI app factory: OpenAI-compatible routes under ``/v1``, health checks, errors, limits.

``create_app()`` builds the app; its lifespan starts the job workers (recovering jobs a previous process left) and
stops them on shutdown. ``andraeus serve`` runs it with uvicorn and mounts the web app (``andraeus_web``) at ``/``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import anyio
from fastapi import FastAPI, Request
from starlette.datastructures import Headers

from andraeus_core import ConfigError, RemoteEngine, Service, Store

from .deps import LOOPBACK, LOOPBACK_HOSTS, ApiSettings
from .errors import (
    ApiError,
    allowed_methods,
    error_body,
    install_error_handlers,
    internal_error_body,
)
from .routes import chat, exports, files, health, jobs, models, variations
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
        (502, "The inference engine (ANDRAEUS_INFERENCE_URL) answered with an error"),
        (503, "The inference engine cannot be reached; see Retry-After"),
    ]
}


async def _send_json(send: Any, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class CatchAll:
    """Pure ASGI middleware: an unexpected exception becomes a logged 500 in the OpenAI shape, and the exception ends
    here.

    Starlette's own last-resort handler sends its 500 and then re-raises to the server, and uvicorn closes the
    connection of a request that raised: the client's next keep-alive request on it was reset. Here nothing is
    re-raised, so the connection stays usable.
    """

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = {"started": False, "ended": False}

        async def tracking_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                state["ended"] = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - the last resort: log it, answer 500, keep the connection
            logger.error(
                "Unexpected error in %s %s: %s",
                scope.get("method"),
                scope.get("path"),
                type(exc).__name__,
                exc_info=exc,
            )
            if not state["started"]:
                await _send_json(send, 500, internal_error_body())
            elif not state["ended"]:
                # A streamed body that broke off: end it, so the message is complete and the connection reusable
                # (briefly: a client that reads nothing would hold this send for ever).
                with contextlib.suppress(Exception), anyio.move_on_after(5):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})


class BodySizeLimit:
    """Pure ASGI middleware: 413 for bodies over the limit, by Content-Length or counted while the body arrives
    (chunked uploads have no Content-Length).

    The 413 is sent the moment the limit is crossed; whatever the app answers afterwards (FastAPI turns a failed
    body read into a 400) is dropped.
    """

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
        state = {"seen": 0, "started": False, "rejected": False}

        async def limited_receive() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > self.max_bytes and not state["rejected"]:
                    state["rejected"] = True
                    if not state["started"]:
                        await self._reject(send)
                    raise _TooLarge
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            if state["rejected"]:
                return  # the 413 is the answer
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            pass

    async def _reject(self, send: Any) -> None:
        body = error_body(
            f"Request body too large (limit {self.max_bytes} bytes).",
            "invalid_request_error",
            None,
            "request_too_large",
        )
        # The rest of the body is not read: the connection closes after this answer.
        await _send_json(send, 413, body, [(b"connection", b"close")])


class _TooLarge(Exception):
    pass


def _is_loopback_address(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


class LoopbackGuard:
    """Pure ASGI middleware for no-auth mode: only this machine, by its loopback names, from this server's own pages.

    Without keys anyone who can reach the server is its owner, so: the client must connect from a loopback address
    (even if the server was started on 0.0.0.0 with ``uvicorn --factory``), the Host header must be a loopback name
    (a DNS-rebinding page reaches 127.0.0.1 under its own name), and a browser request must be same-origin (a
    cross-site form could otherwise upload or delete; browsers send Origin and Sec-Fetch-Site for that).
    """

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        problem = self._problem(scope)
        if problem is None:
            await self.app(scope, receive, send)
            return
        status, message, code = problem
        logger.warning("No-auth mode refused %s %s: %s", scope.get("method", "WS"), scope.get("path"), code)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await _send_json(send, status, error_body(message, "invalid_request_error", None, code))

    @staticmethod
    def _problem(scope: dict[str, Any]) -> tuple[int, str, str] | None:
        client = scope.get("client")
        if client is None or not _is_loopback_address(str(client[0])):
            return 403, "This server runs without API keys and answers only this machine.", "loopback_only"
        headers = Headers(scope=scope)
        host = headers.get("host", "").lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name not in LOOPBACK_HOSTS:
            return 400, "Without API keys the server answers only Host 127.0.0.1, localhost or [::1].", "invalid_host"
        origin = headers.get("origin")
        if origin is not None and urlsplit(origin.lower()).netloc != host:
            return 403, "Cross-origin requests are refused without API keys.", "cross_origin"
        if headers.get("sec-fetch-site", "same-origin").lower() not in ("same-origin", "none"):
            return 403, "Cross-site requests are refused without API keys.", "cross_origin"
        return None


def create_app(settings: ApiSettings | None = None, service: Service | None = None) -> FastAPI:
    """Build the REST API.

    Args:
        settings: server settings (default: from ``ANDRAEUS_API_*`` environment variables).
        service: the service to expose (default: one over ``$ANDRAEUS_HOME/api``, forwarding chat generation to the
            engine of ``ANDRAEUS_INFERENCE_URL`` when it is set); tests may pass their own.

    Raises:
        ConfigError: no API key exists and the server is not bound to a loopback address.
    """
    settings = settings or ApiSettings.from_env()
    if service is None:
        service = Service(
            Store(),
            workers=settings.workers,
            max_queued=settings.max_queued,
            max_queued_per_tenant=settings.max_queued_per_tenant,
            chat_cache_size=settings.chat_cache_size,
            storage_quota_bytes=settings.storage_quota_bytes,
            max_files_per_tenant=settings.max_files_per_tenant,
            max_evaluations=settings.max_evaluations,
            inference=RemoteEngine.from_env(),
        )
    service.store.set_env_keys(settings.api_keys)
    no_auth = not service.store.has_keys()
    if no_auth and settings.host not in LOOPBACK:
        raise ConfigError(
            f"Refusing to serve on {settings.host} without API keys: create one with `andraeus keys create` or set "
            "ANDRAEUS_API_KEYS (no-auth mode exists only on 127.0.0.1).",
            param="host",
        )
    if service.inference is not None:
        # Neither its address nor its key is logged.
        logger.info("Chat generation is forwarded to the inference engine of ANDRAEUS_INFERENCE_URL")
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
    app.state.chat_admission = chat.ChatAdmission(settings.max_pending_chats)
    install_error_handlers(app)
    # add_middleware puts each new one outside the previous: CatchAll sees everything, the guard runs before any
    # route (the web app mounted at / included), the size limit wraps the routes.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    if no_auth:
        app.add_middleware(LoopbackGuard)
    app.add_middleware(CatchAll)
    app.include_router(health.router)
    for module in (files, jobs, models, exports, chat, variations):
        app.include_router(module.router, prefix="/v1")

    @app.api_route(
        "/v1/{path:path}",
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )
    async def unknown_v1(request: Request, path: str) -> None:
        # Without this, an unknown /v1 path falls through to the web app mounted at / and gets its {"detail": ...}.
        methods = allowed_methods(request)
        if methods and request.method not in methods:
            raise ApiError(
                405,
                f"Method {request.method} not allowed on {request.url.path}.",
                headers={"Allow": ", ".join(methods)},
            )
        raise ApiError(404, f"Unknown URL: {request.method} {request.url.path}", code="unknown_url")

    return app


def mount_web_app(app: FastAPI, path: str = "/") -> FastAPI:
    """Mount the web app (``andraeus_web``) on ``app`` at ``path``, behind the same API keys as ``/v1``.

    With keys configured the web app asks for one on a login page (Gradio's ``auth``: any user name, an API key as
    the password) before it serves anything; in no-auth mode it is open, like ``/v1``, to this machine only.
    Unexpected errors show no text in the browser (``show_error=False``): it could name server paths.
    """
    import gradio as gr

    from andraeus_web import LAUNCH_KWARGS, build_demo

    store = app.state.service.store

    def check_key(username: str, password: str) -> bool:
        return store.tenant_for_key(password) is not None

    auth = None if app.state.no_auth else check_key
    return gr.mount_gradio_app(
        app,
        build_demo(),
        path=path,
        auth=auth,
        auth_message="Sign in with an Andraeus API key as the password (any user name).",
        show_error=False,
        **LAUNCH_KWARGS,
    )
