"""POST /v1/chat/completions: a base preset or a fine-tuned model; plain JSON or server-sent events."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from andraeus_core import AndraeusError, GenerationConfig

from ..deps import ServiceDep, TenantDep
from ..errors import ApiError, andraeus_error_status, error_body, without_paths
from ..schemas import MAX_MESSAGE_CHARS, ChatCompletion, ChatCompletionRequest, ChatMessageOut, Choice, Usage
from ..speakers import start_completion

router = APIRouter(prefix="/chat", tags=["chat"])
logger = logging.getLogger("andraeus.api")


def _messages(body: ChatCompletionRequest) -> list[dict[str, str]]:
    out = []
    for m in body.messages:
        content = m.content if isinstance(m.content, str) else "".join(part.text for part in m.content)
        out.append({"role": "system" if m.role == "developer" else m.role, "content": content})
    total = sum(len(m["content"]) for m in out)
    if total > MAX_MESSAGE_CHARS:  # checked before the tokenizer sees any of it
        raise ApiError(
            400, f"The messages hold {total:,} characters; at most {MAX_MESSAGE_CHARS:,} are read.", param="messages"
        )
    return out


def _config(body: ChatCompletionRequest) -> GenerationConfig:
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    try:
        return GenerationConfig(
            temperature=body.temperature if body.temperature is not None else 0.0,
            top_p=body.top_p if body.top_p is not None else 1.0,
            max_new_tokens=body.max_completion_tokens or body.max_tokens or 256,
            stop=[s for s in stops if s],
            seed=body.seed,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ApiError(400, f"Invalid generation setting: {first['msg']}.", param=str(first["loc"][0])) from None


class ChatAdmission:
    """At most ``limit`` chat completions at once (waiting for the model, generating or streaming); then 429.

    Each admitted request holds a worker thread while it waits for text, so without a bound a burst of requests
    (or of streams nobody reads) could take every thread the server has.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.active = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            if self.active >= self.limit:
                raise ApiError(
                    429,
                    f"{self.active} chat completions are in progress, the most this server takes; retry shortly.",
                    type="rate_limit_error",
                    code="too_many_requests",
                    headers={"Retry-After": "5"},
                )
            self.active += 1

    def leave(self) -> None:
        with self._lock:
            self.active -= 1


class GuardedStream(StreamingResponse):
    """Server-sent events that drop a client who takes in nothing for ``send_timeout_s`` seconds, and that always
    run ``on_close`` (cancel the generation, free the admission) however the stream ends."""

    def __init__(self, content: Any, *, send_timeout_s: float, on_close: Any, **kwargs: Any):
        super().__init__(content, **kwargs)
        self.send_timeout_s = send_timeout_s
        self.on_close = on_close

    async def stream_response(self, send: Any) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self.body_iterator:
                with anyio.move_on_after(self.send_timeout_s) as waited:
                    await send({"type": "http.response.body", "body": chunk.encode(self.charset), "more_body": True})
                if waited.cancelled_caught:
                    # Returning with the response incomplete makes the server close the connection.
                    logger.warning("Dropped a stream whose client read nothing for %.0f s", self.send_timeout_s)
                    return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.on_close()


@router.post(
    "/completions",
    response_model=ChatCompletion,
    responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE chunks when stream=true"}},
)
async def chat_completions(
    body: ChatCompletionRequest, service: ServiceDep, tenant: TenantDep, request: Request
) -> Any:
    """OpenAI chat completions: greedy by default; temperature/top_p sample; stop and max_tokens end the answer.

    For a family's fine-tuned model, ``user`` names who is asking (a name, relation or alias).
    """
    config = _config(body)
    messages = _messages(body)
    settings = request.app.state.settings
    admission: ChatAdmission = request.app.state.chat_admission
    admission.enter()
    streaming = False
    try:
        completion = await run_in_threadpool(
            lambda: start_completion(
                service,
                tenant,
                body.model,
                messages,
                config,
                user=body.user,
                gate=body.gate,
                timeout_s=settings.generation_timeout_s,
            )
        )
        created = int(time.time())
        cid = "chatcmpl-" + __import__("secrets").token_hex(12)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)

            def close() -> None:
                completion.cancel()
                admission.leave()

            response = GuardedStream(
                _sse(completion, cid, created, body.model, include_usage),
                send_timeout_s=settings.stream_send_timeout_s,
                on_close=close,
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
            streaming = True
            return response
        text = await _join_unless_disconnected(completion, request)
    finally:
        if not streaming:
            admission.leave()
    usage = Usage(
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        total_tokens=completion.prompt_tokens + completion.completion_tokens,
    )
    return ChatCompletion(
        id=cid,
        created=created,
        model=body.model,
        choices=[Choice(message=ChatMessageOut(content=text), finish_reason=completion.finish_reason)],
        usage=usage,
    )


async def _join_unless_disconnected(completion: Any, request: Request) -> str:
    """The whole answer; if the client goes away meanwhile, the generation is cancelled (nobody would read it)."""
    worker = asyncio.ensure_future(run_in_threadpool(lambda: "".join(completion).strip()))
    try:
        while not worker.done():
            await asyncio.wait({worker}, timeout=0.5)
            if not worker.done() and await request.is_disconnected():
                completion.cancel()
                break
        return await worker
    finally:
        completion.cancel()  # a no-op once the answer is complete


async def _sse(completion: Any, cid: str, created: int, model: str, include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format, ending with ``data: [DONE]``.

    Each piece is awaited in a worker thread: the generation runs on its own thread and never waits for this one.
    """

    def chunk(delta: dict[str, Any] | None, finish: str | None = None, usage: dict[str, int] | None = None) -> str:
        payload: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
            if delta is not None
            else [],
        }
        if usage is not None:
            payload["usage"] = usage
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    pieces = iter(completion)
    try:
        while (piece := await run_in_threadpool(next, pieces, None)) is not None:
            yield chunk({"content": piece})
    except AndraeusError as exc:
        _, kind = andraeus_error_status(exc)
        yield f"data: {json.dumps(error_body(without_paths(exc.message), kind, exc.param, exc.code))}\n\n"
        return
    except Exception as exc:  # noqa: BLE001 - the status line is already sent; report in-band
        logger.error("Chat stream failed: %s", type(exc).__name__, exc_info=exc)
        body = error_body("The server had an error while generating.", "server_error", None, "internal_error")
        yield f"data: {json.dumps(body)}\n\n"
        return
    yield chunk({}, completion.finish_reason)
    if include_usage:
        total = completion.prompt_tokens + completion.completion_tokens
        usage = {
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "total_tokens": total,
        }
        yield chunk(None, usage=usage)
    yield "data: [DONE]\n\n"
