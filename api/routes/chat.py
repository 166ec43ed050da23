"""POST /v1/chat/completions: a base preset or a fine-tuned model; plain JSON or server-sent events."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from andraeus_core import AndraeusError, GenerationConfig

from ..deps import ServiceDep, TenantDep
from ..errors import ApiError, andraeus_error_status, error_body
from ..schemas import MAX_MESSAGE_CHARS, ChatCompletion, ChatCompletionRequest, ChatMessageOut, Choice, Usage

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


@router.post(
    "/completions",
    response_model=ChatCompletion,
    responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE chunks when stream=true"}},
)
async def chat_completions(body: ChatCompletionRequest, service: ServiceDep, tenant: TenantDep) -> Any:
    """OpenAI chat completions: greedy by default; temperature/top_p sample; stop and max_tokens end the answer."""
    config = _config(body)
    messages = _messages(body)
    completion = await run_in_threadpool(service.complete, tenant, body.model, messages, config, gate=body.gate)
    created = int(time.time())
    cid = "chatcmpl-" + __import__("secrets").token_hex(12)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _sse(completion, cid, created, body.model, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    text = await run_in_threadpool(lambda: "".join(completion).strip())
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


def _sse(completion: Any, cid: str, created: int, model: str, include_usage: bool) -> Iterator[str]:
    """Server-sent events in OpenAI's chunk format, ending with ``data: [DONE]``."""

    def chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None) -> str:
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
    try:
        for piece in completion:
            yield chunk({"content": piece})
    except AndraeusError as exc:
        _, kind = andraeus_error_status(exc)
        yield f"data: {json.dumps(error_body(exc.message, kind, exc.param, exc.code))}\n\n"
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
        yield chunk(None, usage=usage)  # type: ignore[arg-type]
    yield "data: [DONE]\n\n"
