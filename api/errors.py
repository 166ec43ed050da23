"""OpenAI-shaped errors: every failure is ``{"error": {"message", "type", "param", "code"}}``, never a traceback."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from andraeus_core import (
    AdapterError,
    AndraeusError,
    ConfigError,
    ConflictError,
    EngineResponseError,
    EngineUnavailableError,
    EvaluationError,
    ExportError,
    HubError,
    ModelLoadError,
    ModelNotAvailableError,
    NotFoundError,
    PrivateDataError,
    ProfileError,
    QueueFullError,
    QuotaError,
    TrainingError,
    andraeus_home,
)

logger = logging.getLogger("andraeus.api")

# (status, OpenAI error type) per error class; the first match in this order wins (subclasses first).
_STATUS: list[tuple[type[AndraeusError], int, str]] = [
    (NotFoundError, 404, "invalid_request_error"),
    (ConflictError, 409, "invalid_request_error"),
    (QueueFullError, 429, "rate_limit_error"),
    (QuotaError, 429, "insufficient_quota"),  # OpenAI's status and type for a used-up quota
    (PrivateDataError, 422, "invalid_request_error"),  # a refusal to let personal data out: the adapter's fault
    (ProfileError, 400, "invalid_request_error"),
    (ConfigError, 400, "invalid_request_error"),
    (EvaluationError, 400, "invalid_request_error"),
    (AdapterError, 400, "invalid_request_error"),
    (ModelNotAvailableError, 404, "invalid_request_error"),
    (HubError, 502, "api_error"),
    (EngineUnavailableError, 503, "server_error"),  # the external inference engine: down, busy or timed out
    (EngineResponseError, 502, "api_error"),  # ... or it answered with an error or data that is not a completion
    (ModelLoadError, 500, "server_error"),
    (TrainingError, 500, "server_error"),
    (ExportError, 400, "invalid_request_error"),  # too large, an architecture or template it cannot write
]

_HTTP_TYPES = {401: "invalid_request_error", 404: "invalid_request_error", 405: "invalid_request_error"}


class ApiError(Exception):
    """An HTTP-level error raised by the API layer itself (auth, size limits, unsupported parameters)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(
    status: int, message: str, type: str, param: str | None = None, code: str | None = None, headers: Any = None
) -> JSONResponse:
    return JSONResponse(error_body(message, type, param, code), status_code=status, headers=headers)


def without_paths(message: str) -> str:
    """``message`` with the server's data directory replaced: a caller never learns where the server keeps files."""
    return message.replace(str(andraeus_home()), "<server>")


def andraeus_error_status(exc: AndraeusError) -> tuple[int, str]:
    for cls, status, kind in _STATUS:
        if isinstance(exc, cls):
            return status, kind
    return 400, "invalid_request_error"


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    parts = []
    first_param = None
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        where = ".".join(loc) or "body"
        first_param = first_param or (loc[0] if loc else None)
        value = err.get("input")
        shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
        if len(shown) > 80:
            shown = shown[:77] + "..."
        parts.append(f"{where}: {str(err.get('msg', 'invalid')).removeprefix('Value error, ')} (got {shown})")
    return "Invalid request: " + "; ".join(parts[:5]), first_param


_METHODS = ("get", "post", "put", "patch", "delete")


def allowed_methods(request: Request) -> list[str]:
    """The methods the API documents for the request's path (a 405's ``Allow``), read from its OpenAPI schema.

    The schema rather than the routes: FastAPI's included routers do not expose their routes' methods, and a model id
    route (``{model_id:path}``) would otherwise claim ``DELETE /v1/models/x/content``.
    """
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        parts = re.split(r"(\{[^}]+\})", template)
        pattern = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
        if re.fullmatch(pattern, request.url.path):
            methods |= {m.upper() for m in operations if m in _METHODS}
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception to an OpenAI-shaped JSON error."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.type, exc.param, exc.code, exc.headers)

    @app.exception_handler(AndraeusError)
    async def _andraeus_error(request: Request, exc: AndraeusError) -> JSONResponse:
        status, kind = andraeus_error_status(exc)
        retry = exc.retry_after if isinstance(exc, QueueFullError | EngineUnavailableError) else None
        headers = {"Retry-After": str(retry)} if retry is not None else None
        if status >= 500:
            logger.warning("%s %s failed: %s", request.method, request.url.path, exc.code)
        return error_response(status, without_paths(exc.message), kind, exc.param, exc.code, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return error_response(422, message, "invalid_request_error", param, "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "HTTP error"
        if exc.status_code == 404 and message == "Not Found":
            message = f"Unknown URL: {request.method} {request.url.path}"
        kind = _HTTP_TYPES.get(exc.status_code, "invalid_request_error" if exc.status_code < 500 else "server_error")
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            # Starlette names only the first matching route's methods; a path served by several routes has more.
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return error_response(exc.status_code, message, kind, None, None, headers)


def internal_error_body() -> dict[str, Any]:
    return error_body("The server had an error processing your request.", "server_error", None, "internal_error")
