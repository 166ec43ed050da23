"""The remote inference engine (ANDRAEUS_INFERENCE_URL): a front API forwards chat generation to a second, real
andraeus server on 127.0.0.1 standing in for vLLM, and keeps keys, tenants, the gate and usage to itself.

Our server has no runtime LoRA API, so a small ASGI shim in front of the engine server plays vLLM's part of it:
``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter`` register the adapter as a model of the engine's store. The
shim also records what reaches the engine and misbehaves on demand (a 500, garbage, dying mid-stream, hanging, an
endless slow stream): it is a stand-in for the peer, not for our code. Mechanics only, on tiny-random.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from andraeus_core import RemoteEngine, Service, Store
from andraeus_core.gate import GENERIC_ABSTENTION
from api.deps import ApiSettings
from api.main import create_app
from tests.helpers import free_port, serve_in_thread

KEY_A = "key-tenant-a-0123456789abcdef"
A = {"Authorization": f"Bearer {KEY_A}"}
ENGINE_KEY = "engine-key-0123456789abcdef"
ENGINE_TENANT = "engine"
HELLO = [{"role": "user", "content": "hello"}]
#: The system prompt make_adapter's adapters were trained with (the front sends it when the conversation has none).
SYSTEM = "You are Nova, Sam Rivera's assistant."


def _serve(app: Any) -> tuple[str, Any]:
    """A uvicorn server on 127.0.0.1 in a thread; returns its URL and a function that stops it."""
    port, stop = serve_in_thread(app)
    return f"http://127.0.0.1:{port}", stop


async def _body(receive: Any) -> bytes:
    data = b""
    while True:
        message = await receive()
        data += message.get("body", b"")
        if not message.get("more_body"):
            return data


async def _respond(send: Any, status: int, body: bytes, kind: str = "application/json") -> None:
    headers = [(b"content-type", kind.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _chunk(text: str) -> bytes:
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": None}
    payload = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [choice]}
    return f"data: {json.dumps(payload)}\n\n".encode()


class EngineShim:
    """vLLM's runtime LoRA API and failure modes in front of a real andraeus server (see the module doc)."""

    LORA_PATHS = ("/v1/load_lora_adapter", "/v1/unload_lora_adapter")

    def __init__(self, app: Any):
        self.app = app
        self.store: Store = app.state.service.store
        self.mode = "proxy"
        self.loads: list[dict[str, Any]] = []
        self.unloads: list[dict[str, Any]] = []
        self.chats: list[dict[str, Any]] = []  # the chat requests that reached the engine
        self.auth: list[str] = []
        self.upstream_closed = threading.Event()  # a "slow" stream saw its client (the front) go away
        self.release = threading.Event()  # ends a "hang"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path")
        if scope["type"] != "http" or (path not in self.LORA_PATHS and path != "/v1/chat/completions"):
            await self.app(scope, receive, send)
            return
        body = await _body(receive)
        self.auth.append(dict(scope["headers"]).get(b"authorization", b"").decode())
        if path in self.LORA_PATHS:
            await self._lora(path, json.loads(body), send)
            return
        request = json.loads(body)
        self.chats.append(request)
        if self.mode == "fail":
            await _respond(send, 500, b'{"error": {"message": "CUDA error: out of memory at /opt/vllm"}}')
        elif self.mode == "garbage":
            await _respond(send, 200, b"data: {this is not json\n\n", "text/event-stream")
        elif self.mode in ("die", "no-usage"):
            start = {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
            await send(start)
            for text in ("one", " two"):
                await send({"type": "http.response.body", "body": _chunk(text), "more_body": True})
            if self.mode == "die":
                raise RuntimeError("the engine died mid-answer")  # uvicorn drops the connection
            finish = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            end = f"data: {json.dumps(finish)}\n\ndata: [DONE]\n\n".encode()
            await send({"type": "http.response.body", "body": end})
        elif self.mode == "hang":
            with anyio.move_on_after(10):
                while not self.release.is_set():
                    await anyio.sleep(0.05)
            await _respond(send, 500, b"{}")
        elif self.mode == "slow":
            await self._slow(receive, send)
        else:
            if request["model"].startswith("andraeus-"):
                request["gate"] = False  # vLLM has no gate: the adapter answers (the front routed already)
            forwarded = json.dumps(request).encode()
            sent = False

            async def replay() -> dict[str, Any]:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": forwarded, "more_body": False}
                return await receive()

            headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
            headers.append((b"content-length", str(len(forwarded)).encode()))
            await self.app({**scope, "headers": headers}, replay, send)

    async def _lora(self, path: str, request: dict[str, Any], send: Any) -> None:
        if self.auth[-1] != f"Bearer {ENGINE_KEY}":
            await _respond(send, 401, b'{"error": {"message": "Unauthorized"}}')
            return
        name = request["lora_name"]
        if path.endswith("/load_lora_adapter"):
            self.loads.append(request)
            if self.store.get_model(ENGINE_TENANT, name) is not None:
                await _respond(
                    send, 400, json.dumps({"message": f"The lora adapter '{name}' has already been loaded."}).encode()
                )
                return
            self.store.add_model(ENGINE_TENANT, name, f"job-{name}", "tiny-random", request["lora_path"])
            await _respond(send, 200, b"Success: LoRA adapter added successfully.", "text/plain")
            return
        self.unloads.append(request)
        found = self.store.delete_model(ENGINE_TENANT, name) is not None
        await _respond(send, 200 if found else 404, b"{}")

    async def _slow(self, receive: Any, send: Any) -> None:
        """An endless stream, a piece every 50 ms, until its client goes away (recorded)."""
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
        )
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                self.upstream_closed.set()
                group.cancel_scope.cancel()

            group.start_soon(watch)
            for _ in range(400):
                await send({"type": "http.response.body", "body": _chunk("x"), "more_body": True})
                await anyio.sleep(0.05)
            group.cancel_scope.cancel()

    def forget_adapters(self) -> None:
        """What an engine restart does: every runtime-loaded adapter is gone."""
        for model in self.store.list_models(ENGINE_TENANT):
            self.store.delete_model(ENGINE_TENANT, model["id"])


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[tuple[str, EngineShim]]:
    """The engine: a real andraeus API server (its own store, one API key) behind the shim."""
    service = Service(Store(tmp_path / "engine"), workers=0)
    shim = EngineShim(create_app(ApiSettings(api_keys=f"{ENGINE_TENANT}={ENGINE_KEY}", workers=0), service))
    url, stop = _serve(shim)
    yield url, shim
    shim.release.set()
    stop()


def _front(tmp_path: Path, engine_url: str, **engine_kw: Any) -> tuple[str, Service, Any]:
    """The API tenants talk to, forwarding generation to ``engine_url``."""
    remote = RemoteEngine(engine_url, key=ENGINE_KEY, **engine_kw)
    service = Service(Store(tmp_path / "front"), workers=0, inference=remote)
    url, stop = _serve(create_app(ApiSettings(api_keys=f"alice={KEY_A}", workers=0), service))
    return url, service, stop


@pytest.fixture
def front(tmp_path: Path, engine: tuple[str, EngineShim]) -> Iterator[tuple[str, Service]]:
    url, service, stop = _front(tmp_path, engine[0])
    yield url, service
    stop()


def _model(service: Service, make_adapter: Any, gate: str | None, job: str = "ftjob-remote1") -> str:
    """A fine-tuned model of tenant alice whose gate sends every question to ``gate``."""
    path = make_adapter(service.store.adapter_path("alice", job), weights="large", gate=gate)
    model = f"ft:tiny-random:x:{job}"
    service.store.add_model("alice", model, job, "tiny-random", str(path))
    return model


def _chat(url: str, model: str, messages: list[dict[str, str]] = HELLO, headers: Any = A, **extra: Any) -> Any:
    body = {"model": model, "messages": messages, "max_tokens": 6, **extra}
    return httpx2.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=60)


def _stream(url: str, model: str, **extra: Any) -> list[str]:
    """The ``data:`` payloads of a streamed answer."""
    body = {"model": model, "messages": HELLO, "max_tokens": 6, "stream": True, **extra}
    with httpx2.stream("POST", f"{url}/v1/chat/completions", json=body, headers=A, timeout=60) as r:
        assert r.status_code == 200, r.read()
        return [line[6:] for line in r.iter_lines() if line.startswith("data: ")]


def _text(events: list[str]) -> str:
    chunks = [json.loads(e) for e in events if e != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))


def _error(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code, error
    assert "Traceback" not in r.text and "127.0.0.1" not in r.text and ENGINE_KEY not in r.text
    return error


# ----------------------------------------------------------------------------------------------------------------


def test_a_base_model_chat_is_the_engines_answer_with_its_usage(engine, front) -> None:
    engine_url, shim = engine
    url, _ = front
    r = _chat(url, "tiny-random")
    assert r.status_code == 200, r.text
    direct = _chat(engine_url, "tiny-random", headers={"Authorization": f"Bearer {ENGINE_KEY}"})
    assert direct.status_code == 200, direct.text
    answer, expected = r.json(), direct.json()
    assert answer["choices"][0]["message"]["content"] == expected["choices"][0]["message"]["content"]  # greedy
    assert answer["usage"] == expected["usage"] and answer["usage"]["prompt_tokens"] > 0
    assert answer["choices"][0]["finish_reason"] == expected["choices"][0]["finish_reason"]
    assert answer["model"] == "tiny-random"

    forwarded = shim.chats[0]
    assert forwarded["model"] == "tiny-random" and forwarded["stream"] is True and forwarded["max_tokens"] == 6
    assert forwarded["stream_options"] == {"include_usage": True} and forwarded["temperature"] == 0.0
    assert shim.auth[0] == f"Bearer {ENGINE_KEY}"  # the engine's key, never the tenant's
    assert KEY_A not in json.dumps(forwarded)

    events = _stream(url, "tiny-random", stream_options={"include_usage": True})
    assert events[-1] == "[DONE]"
    assert _text(events).strip() == answer["choices"][0]["message"]["content"]
    assert json.loads(events[-2])["usage"] == answer["usage"]

    r = _chat(url, "tiny-random", stop=["\n"], seed=3, temperature=0.7, top_p=0.9)
    assert r.status_code == 200, r.text
    assert {k: shim.chats[-1][k] for k in ("stop", "seed", "temperature", "top_p")} == {
        "stop": ["\n"],
        "seed": 3,
        "temperature": 0.7,
        "top_p": 0.9,
    }


def test_an_adapter_is_loaded_once_reloaded_after_an_engine_restart_and_unloaded_on_delete(
    engine, front, make_adapter
) -> None:
    engine_url, shim = engine
    url, service = front
    model = _model(service, make_adapter, gate="adapter")
    path = service.store.get_model("alice", model)["path"]

    with ThreadPoolExecutor(3) as pool:  # three first requests at once: one load
        answers = list(pool.map(lambda _: _chat(url, model), range(3)))
    assert [a.status_code for a in answers] == [200] * 3, answers[0].text
    assert len(shim.loads) == 1 and len(shim.chats) == 3
    name = shim.loads[0]["lora_name"]
    assert shim.loads[0]["lora_path"] == path  # the engine reads the shared disk
    assert name.startswith("andraeus-") and "alice" not in name and "ftjob" not in name
    assert {c["model"] for c in shim.chats} == {name}
    assert shim.chats[0]["messages"][0] == {"role": "system", "content": SYSTEM}  # the adapter's system prompt

    # the forwarded answer is the engine's own answer of that adapter
    content = answers[0].json()["choices"][0]["message"]["content"]
    direct = _chat(
        engine_url,
        name,
        [{"role": "system", "content": SYSTEM}, *HELLO],
        headers={"Authorization": f"Bearer {ENGINE_KEY}"},
    )
    assert direct.status_code == 200, direct.text
    assert content == direct.json()["choices"][0]["message"]["content"]
    assert (
        content
        != _chat(url, "tiny-random", [{"role": "system", "content": SYSTEM}, *HELLO]).json()["choices"][0]["message"][
            "content"
        ]
    )  # the adapter did answer (weights="large" changes the answer)

    shim.forget_adapters()  # the engine restarted: 404 for the adapter, loaded again once
    again = _chat(url, model)
    assert again.status_code == 200, again.text
    assert again.json()["choices"][0]["message"]["content"] == content
    assert len(shim.loads) == 2

    assert httpx2.delete(f"{url}/v1/models/{model}", headers=A).status_code == 200
    assert shim.unloads == [{"lora_name": name}]


def test_the_gate_routes_here_and_an_abstained_question_never_reaches_the_engine(engine, front, make_adapter) -> None:
    _, shim = engine
    url, service = front
    abstains = _model(service, make_adapter, gate="abstain", job="ftjob-abstain")
    r = _chat(url, abstains, max_tokens=64)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["choices"][0]["message"]["content"] == GENERIC_ABSTENTION
    assert answer["usage"]["prompt_tokens"] > 0 and answer["usage"]["completion_tokens"] > 0
    events = _stream(url, abstains, max_tokens=64, stream_options={"include_usage": True})
    assert _text(events) == GENERIC_ABSTENTION and events[-1] == "[DONE]"
    assert json.loads(events[-2])["usage"] == answer["usage"]
    assert shim.chats == [] and shim.loads == []  # nothing left this machine
    cut = _chat(url, abstains, max_tokens=3).json()  # max_tokens bounds it, as locally
    assert cut["usage"]["completion_tokens"] == 3 and cut["choices"][0]["message"]["content"] != GENERIC_ABSTENTION
    assert cut["choices"][0]["finish_reason"] == "length" and answer["choices"][0]["finish_reason"] == "stop"

    r = _chat(url, abstains, gate=False)  # no gate: the adapter answers, on the engine
    assert r.status_code == 200, r.text
    assert len(shim.loads) == 1 and shim.chats[-1]["model"] == shim.loads[0]["lora_name"]

    to_base = _model(service, make_adapter, gate="base", job="ftjob-base")
    r = _chat(url, to_base)
    assert r.status_code == 200, r.text
    assert shim.chats[-1]["model"] == "tiny-random" and len(shim.loads) == 1  # the base model: no adapter loaded
    assert shim.chats[-1]["messages"][0] == {"role": "system", "content": SYSTEM}


def test_an_engine_that_is_down_is_a_quick_503(tmp_path: Path) -> None:
    port = free_port()  # nobody listens there
    url, _, stop = _front(tmp_path, f"http://127.0.0.1:{port}", connect_timeout_s=2)
    try:
        for extra in ({}, {"stream": True}):
            started = time.monotonic()
            r = _chat(url, "tiny-random", **extra)
            assert time.monotonic() - started < 3
            error = _error(r, 503, "engine_unavailable")
            assert str(port) not in error["message"]
            assert r.headers["Retry-After"] == "5" and r.headers["content-type"] == "application/json"
    finally:
        stop()


def test_engine_errors_are_502_and_a_silent_engine_is_a_503_in_bounded_time(engine, tmp_path: Path) -> None:
    engine_url, shim = engine
    url, _, stop = _front(tmp_path, engine_url, read_timeout_s=1)
    try:
        shim.mode = "fail"
        error = _error(_chat(url, "tiny-random"), 502, "bad_gateway")
        assert "CUDA" not in error["message"] and "/opt" not in error["message"]  # the engine's own text stays there
        _error(_chat(url, "tiny-random", stream=True), 502, "bad_gateway")
        shim.mode = "garbage"
        _error(_chat(url, "tiny-random"), 502, "bad_gateway")
        shim.mode = "hang"
        started = time.monotonic()
        _error(_chat(url, "tiny-random"), 503, "engine_unavailable")
        assert time.monotonic() - started < 4
    finally:
        shim.release.set()
        stop()


def test_an_engine_dying_mid_stream_ends_the_stream_with_an_error_event(engine, front) -> None:
    _, shim = engine
    url, _ = front
    shim.mode = "die"
    events = _stream(url, "tiny-random")
    assert _text(events[:-1]) == "one two"
    assert json.loads(events[-1])["error"]["code"] == "engine_unavailable"
    assert "[DONE]" not in events
    shim.mode = "proxy"
    assert _chat(url, "tiny-random").status_code == 200  # the front is fine


def test_usage_is_counted_here_when_the_engine_sends_none(engine, front) -> None:
    _, shim = engine
    url, _ = front
    counted_by_engine = _chat(url, "tiny-random").json()["usage"]["prompt_tokens"]
    shim.mode = "no-usage"
    answer = _chat(url, "tiny-random").json()
    assert answer["choices"][0]["message"]["content"] == "one two"
    assert answer["usage"]["prompt_tokens"] == counted_by_engine  # the same tokenizer and chat template
    assert 2 <= answer["usage"]["completion_tokens"] <= 6


def test_a_client_that_goes_away_closes_the_upstream_stream(engine, front) -> None:
    _, shim = engine
    url, _ = front
    shim.mode = "slow"
    body = {"model": "tiny-random", "messages": HELLO, "max_tokens": 4096, "stream": True}
    with httpx2.stream("POST", f"{url}/v1/chat/completions", json=body, headers=A, timeout=30) as r:
        lines = r.iter_lines()
        assert sum(1 for line, _ in zip(lines, range(6), strict=False) if line.startswith("data: ")) >= 2
    assert shim.upstream_closed.wait(5), "the engine kept streaming to nobody"

    shim.upstream_closed.clear()  # the same for a plain (non-streamed) request whose client gives up
    with pytest.raises(httpx2.ReadTimeout):
        httpx2.post(f"{url}/v1/chat/completions", json={**body, "stream": False}, headers=A, timeout=1)
    assert shim.upstream_closed.wait(5), "the engine kept generating for nobody"


def test_the_engine_is_configured_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from andraeus_core import ConfigError

    assert RemoteEngine.from_env() is None
    monkeypatch.setenv("ANDRAEUS_INFERENCE_URL", "http://gpu-host:8000/v1/")
    monkeypatch.setenv("ANDRAEUS_INFERENCE_KEY", "secret-key")
    monkeypatch.setenv("ANDRAEUS_INFERENCE_BASE_MODEL", "HuggingFaceTB/SmolLM2-135M-Instruct")
    monkeypatch.setenv("ANDRAEUS_INFERENCE_READ_TIMEOUT", "30")
    monkeypatch.setenv("ANDRAEUS_INFERENCE_PATH_MAP", "/srv/andraeus=/mnt/andraeus")
    remote = RemoteEngine.from_env()
    assert remote is not None and remote.url == "http://gpu-host:8000" and remote.read_timeout_s == 30
    assert remote.served_base("smollm2-135m") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert remote.lora_path("/srv/andraeus/api/adapters/ab/ftjob-1") == "/mnt/andraeus/api/adapters/ab/ftjob-1"
    assert "secret-key" not in repr(remote) and "gpu-host" not in repr(remote)
    app = create_app(ApiSettings(workers=0))
    assert isinstance(app.state.service.inference, RemoteEngine)
    monkeypatch.setenv("ANDRAEUS_INFERENCE_READ_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="ANDRAEUS_INFERENCE_READ_TIMEOUT"):
        RemoteEngine.from_env()
    monkeypatch.delenv("ANDRAEUS_INFERENCE_READ_TIMEOUT")
    monkeypatch.setenv("ANDRAEUS_INFERENCE_URL", "ftp://gpu-host")
    with pytest.raises(ConfigError, match="ANDRAEUS_INFERENCE_URL"):
        RemoteEngine.from_env()


def test_the_generation_timeout_cuts_a_remote_answer_as_a_local_one(engine, tmp_path: Path) -> None:
    engine_url, shim = engine
    remote = RemoteEngine(engine_url, key=ENGINE_KEY)
    service = Service(Store(tmp_path / "front"), workers=0, inference=remote)
    settings = ApiSettings(api_keys=f"alice={KEY_A}", workers=0, generation_timeout_s=0.5)
    url, stop = _serve(create_app(settings, service))
    try:
        shim.mode = "slow"  # endless
        started = time.monotonic()
        answer = _chat(url, "tiny-random", max_tokens=4096).json()
        assert time.monotonic() - started < 5
        assert answer["choices"][0]["finish_reason"] == "length" and answer["choices"][0]["message"]["content"]
        assert answer["usage"]["completion_tokens"] > 0 and answer["usage"]["prompt_tokens"] > 0
        assert shim.upstream_closed.wait(5)
    finally:
        stop()
