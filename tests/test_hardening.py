"""Issue 15 (hardening), one regression test or more per finding; tiny-random and 127.0.0.1 only.

Each test failed before its fix. The bounded attacker run over a live server is tests/test_adversarial.py.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from andraeus_core import Service, Store
from andraeus_core.errors import ConfigError, ConflictError, QueueFullError, QuotaError
from api.deps import ApiSettings
from api.main import create_app
from tests.helpers import PROFILE, serve_in_thread

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = (ROOT / "examples" / "minimal.csv").read_bytes()
KEY_A = "key-tenant-a-0123456789abcdef"
KEY_B = "key-tenant-b-0123456789abcdef"
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}
KEYS = f"alice={KEY_A},bob={KEY_B}"


def _client(settings: ApiSettings | None = None, **service_kw: Any) -> TestClient:
    settings = settings or ApiSettings(api_keys=KEYS, workers=0)
    service_kw.setdefault("max_queued", settings.max_queued)
    service = Service(Store(), workers=settings.workers, **service_kw)
    return TestClient(create_app(settings, service), raise_server_exceptions=False)


def _error(r: Any, status: int, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    if code is not None:
        assert body["error"]["code"] == code, body
    if param is not None:
        assert body["error"]["param"] == param, body
    return body["error"]


def _upload(c: TestClient, name: str, data: bytes, headers: dict[str, str] = A) -> Any:
    return c.post("/v1/files", headers=headers, files={"file": (name, data)}, data={"purpose": "fine-tune"})


def _succeeded_job(service: Service, tenant: str, make_adapter: Any, **adapter_kw: Any) -> dict[str, Any]:
    """A job of ``tenant`` that succeeded with an adapter written by ``make_adapter`` (no training)."""
    store = service.store
    fid = store.add_file(tenant, "p.csv", "fine-tune", MINIMAL, "profile", "csv")["id"]
    job, _ = service.create_job(tenant, model="tiny-random", training_file=fid)
    store.update_job(job["id"], status="running")
    adapter_kw.setdefault("metrics", {"steps": 2, "epochs": 1, "tokens_per_epoch": 10})
    make_adapter(Path(job["adapter_path"]), **adapter_kw)
    service.recover()  # a written adapter of a running job: the job succeeds and its model is registered
    done = store.get_job(tenant, job["id"])
    assert done["status"] == "succeeded"
    return done


HELDOUT = [
    {
        "messages": [
            {"role": "user", "content": "What is my dog's name?"},
            {"role": "assistant", "content": "Buddy"},
        ],
        "meta": {"kind": "fact", "topic": "dog's name", "dimension": "paraphrase", "split": "heldout"},
    }
]


# ----------------------------------------------------------------------------------------------------------------
# 1. The web UI behind the same keys; base models limited to what the server offers


@pytest.fixture(scope="module")
def web_apps() -> Any:
    """The API with the web app mounted, once with keys and once without (building the UI takes seconds)."""
    import tempfile

    from api.main import mount_web_app

    before = os.environ.get("ANDRAEUS_HOME")
    with tempfile.TemporaryDirectory() as home:
        os.environ["ANDRAEUS_HOME"] = home  # build_demo sweeps $ANDRAEUS_HOME/sessions: never the real one
        try:
            keyed = mount_web_app(create_app(ApiSettings(api_keys=KEYS, workers=0), Service(Store(), workers=0)))
            open_store = Store(Path(home) / "open")
            open_app = mount_web_app(create_app(ApiSettings(workers=0), Service(open_store, workers=0)))
            yield keyed, open_app
        finally:
            if before is None:
                os.environ.pop("ANDRAEUS_HOME", None)
            else:
                os.environ["ANDRAEUS_HOME"] = before


def test_web_app_requires_an_api_key_when_keys_are_set(web_apps: Any) -> None:
    keyed, open_app = web_apps
    with TestClient(keyed) as c:
        for method, path in [
            ("GET", "/config"),
            ("GET", "/gradio_api/info"),
            ("POST", "/gradio_api/queue/join"),
            ("POST", "/gradio_api/upload"),
            ("POST", "/gradio_api/call/train"),
        ]:
            assert c.request(method, path, json={}).status_code == 401, (method, path)
        page = c.get("/").text  # the login page: none of the app's components (Gradio still lists its API)
        assert "auth_required" in page and "Teach an open LLM" not in page
        assert c.post("/login", data={"username": "x", "password": "wrong-key-0000000000"}).status_code == 400
        assert c.post("/login", data={"username": "x", "password": KEY_A}).status_code == 200
        assert c.get("/config").status_code == 200  # the session cookie now carries the login
    with TestClient(open_app, base_url="http://127.0.0.1:7860", client=("127.0.0.1", 1)) as c:
        assert c.get("/config").status_code == 200  # no keys: open, to this machine only (item 6)


def test_unknown_v1_paths_answer_in_the_openai_shape_with_the_web_app_mounted(web_apps: Any) -> None:
    keyed, _ = web_apps
    with TestClient(keyed) as c:
        _error(c.get("/v1/nothing-here", headers=A), 404, "unknown_url")
        _error(c.post("/v1/chat/nothing", headers=A, json={}), 404)
        r = c.put("/v1/files", headers=A)
        _error(r, 405)
        assert "POST" in r.headers["Allow"]


def test_base_models_are_presets_or_the_operators_list(monkeypatch: pytest.MonkeyPatch) -> None:
    import gradio as gr

    from andraeus_core import check_served_base_model, served_base_models
    from andraeus_web import ui

    assert "tiny-random" in served_base_models() and "smollm2-135m" in served_base_models()
    # A path is refused without being looked at: the message is the same for /etc and for a path that is not there.
    for name in ("/etc", "/no/such/dir", "../../root", "someone/any-repo"):
        with pytest.raises(ConfigError) as info:
            check_served_base_model(name)
        assert "config.json" not in str(info.value) and "smollm2-135m" in str(info.value)
    with pytest.raises(gr.Error) as shown:
        ui._config("/etc", "cpu", 1, 8, False, 30, 0.2)
    assert "config.json" not in str(shown.value) and "not offered" in str(shown.value)
    monkeypatch.setenv("ANDRAEUS_ALLOWED_BASE_MODELS", "acme/approved-model, /srv/models/ours")
    assert check_served_base_model("acme/approved-model") == "acme/approved-model"
    assert "/srv/models/ours" in served_base_models()
    assert Service(Store(), workers=0).base_models == served_base_models()


def test_the_base_model_box_takes_no_custom_value() -> None:
    from andraeus_web import build_demo

    demo = build_demo()
    box = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "base-model")
    assert box.allow_custom_value is False


# ----------------------------------------------------------------------------------------------------------------
# 2. One slow reader stalls no one: generation never waits on a client


@pytest.fixture(scope="module")
def tiny_chat(tiny_model: Any) -> Any:
    from andraeus_core import ChatModel

    return ChatModel(tiny_model)


def _in_thread(fn: Any, timeout: float) -> tuple[Any, float]:
    """``fn()`` in a thread, its result and wall time; fails (without hanging the suite) if it takes over timeout."""
    out: dict[str, Any] = {}

    def run() -> None:
        started = time.perf_counter()
        out["value"] = fn()
        out["seconds"] = time.perf_counter() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still blocked after {timeout} s"
    return out["value"], out["seconds"]


def test_a_stream_nobody_reads_does_not_block_other_chats(tiny_chat: Any) -> None:
    from andraeus_core import GenerationConfig

    hello = [{"role": "user", "content": "hello"}]
    _, alone = _in_thread(lambda: tiny_chat.reply(hello, GenerationConfig(max_new_tokens=8)), 60)
    stalled = tiny_chat.stream(hello, GenerationConfig(max_new_tokens=4096))
    next(stalled)  # the reader takes one piece, then never reads again (the generator stays suspended)
    try:
        for _ in range(3):
            answer, seconds = _in_thread(lambda: tiny_chat.reply(hello, GenerationConfig(max_new_tokens=8)), 30)
            assert answer and seconds < alone + 5.0
    finally:
        stalled.close()


def test_a_later_short_answer_is_not_queued_behind_a_long_one(tiny_chat: Any) -> None:
    from andraeus_core import GenerationConfig

    hello = [{"role": "user", "content": "hello"}]
    finished: dict[str, float] = {}

    def long_answer() -> None:
        "".join(tiny_chat.stream(hello, GenerationConfig(max_new_tokens=1500)))
        finished["long"] = time.perf_counter()

    thread = threading.Thread(target=long_answer, daemon=True)
    thread.start()
    time.sleep(0.5)  # the long answer is generating
    _in_thread(lambda: tiny_chat.reply(hello, GenerationConfig(max_new_tokens=8)), 30)
    finished["short"] = time.perf_counter()
    thread.join(120)
    assert finished["short"] < finished["long"]  # the model was handed over between slices


def test_a_generation_ends_when_cancelled_or_out_of_time(tiny_chat: Any) -> None:
    from andraeus_core import GenerationConfig

    hello = [{"role": "user", "content": "hello"}]
    usage: dict[str, Any] = {}
    started = time.perf_counter()
    "".join(tiny_chat.stream(hello, GenerationConfig(max_new_tokens=4096), usage=usage, timeout_s=0.5))
    assert time.perf_counter() - started < 5.0
    assert usage["finish_reason"] == "length" and 0 < usage["completion_tokens"] < 4096
    cancel = threading.Event()
    usage = {}
    pieces = tiny_chat.stream(hello, GenerationConfig(max_new_tokens=4096), usage=usage, cancel=cancel)
    next(pieces)
    cancel.set()  # e.g. the HTTP client of a non-streamed request went away
    rest, seconds = _in_thread(lambda: list(pieces), 10)
    assert seconds < 5.0 and usage["completion_tokens"] < 4096


def test_a_paused_answer_resumes_exactly(tiny_chat: Any) -> None:
    """A reader that falls behind pauses the generation; once it reads on, the answer is the one it would have been."""
    from andraeus_core import GenerationConfig

    hello = [{"role": "user", "content": "Tell me everything."}]
    config = GenerationConfig(max_new_tokens=300)
    whole = "".join(tiny_chat.stream(hello, config))
    slow = tiny_chat.stream(hello, config)
    first = next(slow)
    time.sleep(2.0)  # long enough for the generation to run ahead and pause
    assert first + "".join(slow) == whole
    sampled = GenerationConfig(max_new_tokens=200, temperature=1.0, seed=3)
    once = "".join(tiny_chat.stream(hello, sampled))
    slow = tiny_chat.stream(hello, sampled)
    first = next(slow)
    time.sleep(2.0)
    assert first + "".join(slow) == once  # the sampler's state is kept across the pause


def _live(settings: ApiSettings) -> Any:
    """A uvicorn server on 127.0.0.1 in a thread; returns (port, stop).

    Its connections get small send buffers (accepted sockets inherit the listener's), so that a client that reads
    nothing backs the server up after ~100 KB, as it would after a few MB on a real network.
    """
    import socket

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    listener.bind(("127.0.0.1", 0))
    port, stop_server = serve_in_thread(create_app(settings), listener)

    def stop() -> None:
        stop_server()
        listener.close()

    return port, stop


def _never_read(port: int, body: dict[str, Any]) -> Any:
    """Send a request and never read the answer (the attacker's stream)."""
    import socket

    data = json.dumps(body).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # small, so the server's writes back up soon
    sock.connect(("127.0.0.1", port))
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {KEY_A}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    sock.sendall(head.encode() + data)
    return sock


def test_over_http_a_never_reading_stream_stalls_no_one_and_is_dropped(tiny_model: Any) -> None:
    import httpx

    settings = ApiSettings(api_keys=KEYS, workers=0, max_pending_chats=2, stream_send_timeout_s=5.0)
    port, stop = _live(settings)
    long = {"model": "tiny-random", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2000}
    quick = {"model": "tiny-random", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    url = f"http://127.0.0.1:{port}"
    try:
        attacker = _never_read(port, {**long, "stream": True})
        time.sleep(1.0)
        with httpx.Client(base_url=url, headers=A, timeout=30) as c:
            for _ in range(3):
                started = time.perf_counter()
                assert c.get("/healthz").status_code == 200
                assert c.post("/v1/chat/completions", json=quick).status_code == 200
                assert time.perf_counter() - started < 10.0
            # Two chats at once is this server's limit: a third is told to come back, at once.
            second = _never_read(port, {**long, "stream": True})
            time.sleep(0.5)
            r = c.post("/v1/chat/completions", json=quick)
            _error(r, 429, "too_many_requests")
            assert int(r.headers["Retry-After"]) > 0
            # The clients that read nothing are dropped after the send timeout, freeing their places.
            deadline = time.time() + 60
            while c.post("/v1/chat/completions", json=quick).status_code == 429:
                assert time.time() < deadline, "the never-reading streams were not dropped"
                time.sleep(0.5)
        attacker.close()
        second.close()
    finally:
        stop()


# ----------------------------------------------------------------------------------------------------------------
# 3. Resource exhaustion from small requests: bounds checked before any work


def test_chat_bounds_are_checked_before_any_work() -> None:
    with _client() as c:
        chat = {"model": "tiny-random", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        cases = [
            ({"stop": "x" * 5000}, "stop"),
            ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
            ({"seed": 2**64}, "seed"),
            ({"seed": -(2**64)}, "seed"),
            ({"messages": [{"role": "user", "content": "x"}] * 257}, "messages"),
            ({"messages": [{"role": "user", "content": "x" * 100_001}]}, "messages"),
            ({"user": "u" * 300}, "user"),
        ]
        for extra, param in cases:
            started = time.perf_counter()
            err = _error(c.post("/v1/chat/completions", headers=A, json={**chat, **extra}), 422, param=param)
            assert time.perf_counter() - started < 1.0, extra.keys()
            assert param in err["message"]
        many = {"messages": [{"role": "user", "content": "y" * 60_000}, {"role": "user", "content": "y" * 60_000}]}
        _error(c.post("/v1/chat/completions", headers=A, json={**chat, **many}), 400, param="messages")


def test_a_prompt_longer_than_the_context_is_refused(tiny_model: Any) -> None:
    with _client() as c:
        long = {"role": "user", "content": "hello " * 3000}  # ~3,000 tokens; tiny-random's context is 2,048
        err = _error(
            c.post("/v1/chat/completions", headers=A, json={"model": "tiny-random", "messages": [long]}),
            400,
            "context_length_exceeded",
            "messages",
        )
        assert "2048" in err["message"]
        near = {"role": "user", "content": "hello " * 1000}
        r = c.post(
            "/v1/chat/completions", headers=A, json={"model": "tiny-random", "messages": [near], "max_tokens": 2000}
        )
        _error(r, 400, "context_length_exceeded")


def test_completion_tokens_never_exceed_max_tokens(tiny_model: Any) -> None:
    with _client() as c:
        for max_tokens in (1, 2, 3, 5, 8):
            for stream in (False, True):
                body = {
                    "model": "tiny-random",
                    "messages": [{"role": "user", "content": "Tell me a long story."}],
                    "max_tokens": max_tokens,
                    "stream": stream,
                    "stream_options": {"include_usage": True} if stream else None,
                }
                r = c.post("/v1/chat/completions", headers=A, json=body)
                assert r.status_code == 200, r.text
                if stream:
                    chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
                    usage = chunks[-1]["usage"]
                else:
                    usage = r.json()["usage"]
                assert 1 <= usage["completion_tokens"] <= max_tokens, (max_tokens, stream, usage)


def test_a_huge_json_profile_is_rejected_fast() -> None:
    text = json.dumps({f"k{i}": i for i in range(60_000)}, separators=(",", ":")).encode()
    with _client() as c:
        started = time.perf_counter()
        _error(_upload(c, "me.json", text), 400, "invalid_profile")
        assert time.perf_counter() - started < 3.0  # 20 s before (a generous bound for a busy 2-core machine)


def test_evaluation_baselines_are_checked_and_deduplicated(make_adapter: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from andraeus_core import jobs

    calls: list[tuple[str, ...]] = []

    class Report:
        def __init__(self, baselines: tuple[str, ...]):
            self.baselines = baselines

        def to_json(self) -> dict[str, Any]:
            return {"baselines": list(self.baselines)}

    def fake_evaluate(adapter: Any, questions: Any, baselines: tuple[str, ...]) -> Report:
        calls.append(tuple(baselines))
        return Report(tuple(baselines))

    monkeypatch.setattr(jobs, "evaluate", fake_evaluate)
    with _client() as c:
        service: Service = c.app.state.service  # type: ignore[attr-defined]
        job = _succeeded_job(service, "alice", make_adapter)
        url = f"/v1/fine_tuning/jobs/{job['id']}/evaluation"
        for baselines in ("base,base,base", "in_context,base", "base,in_context,base"):
            assert c.get(url, headers=A, params={"baselines": baselines}).status_code == 200
        assert calls == [("base",), ("base", "in_context")]  # one computation per set, in one order
        assert len(list((service.store.root / "evals").glob("*.json"))) == 2
        err = _error(c.get(url, headers=A, params={"baselines": "base,gpt4"}), 400, param="baselines")
        assert "gpt4" in err["message"]


def test_one_evaluation_per_adapter_at_a_time(make_adapter: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from andraeus_core import jobs

    release = threading.Event()
    running = []

    class Report:
        def to_json(self) -> dict[str, Any]:
            return {"ok": True}

    def slow_evaluate(adapter: Any, questions: Any, baselines: tuple[str, ...]) -> Report:
        running.append(adapter)
        release.wait(10)
        return Report()

    monkeypatch.setattr(jobs, "evaluate", slow_evaluate)
    service = Service(Store(), workers=0, max_evaluations=1)
    first = _succeeded_job(service, "t", make_adapter)
    second = _succeeded_job(service, "t", make_adapter)
    thread = threading.Thread(target=service.evaluation, args=("t", first["id"], (), True))
    thread.start()
    deadline = time.time() + 5
    while not running and time.time() < deadline:
        time.sleep(0.01)
    with pytest.raises(ConflictError, match="being evaluated"):
        service.evaluation("t", first["id"], (), True)  # refresh=true again: refused, not run in parallel
    with pytest.raises(QueueFullError):
        service.evaluation("t", second["id"], ())  # another adapter waits for a slot
    release.set()
    thread.join(10)
    assert len(running) == 1
    assert service.evaluation("t", first["id"], ()) == {"ok": True}  # kept


# ----------------------------------------------------------------------------------------------------------------
# 4. No 500s: each malformed upload is a 400 naming the problem


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("deep.jsonl", b"[" * 5000 + b"\n", "line 1"),
        ("num.json", b'{"user_name": "Sam", "facts": [{"topic": "dog", "value": ' + b"9" * 5000 + b"}]}", "digits"),
        ("x" * 300 + ".jsonl", b'{"messages": []}\n', "306 characters"),
        ("empty.jsonl", b"", "no conversations"),
        ("blank.jsonl", b"\n\n", "no conversations"),
        ("none.jsonl", b'{"messages": []}\n', "line 1: 'messages' is empty"),
        ("user.jsonl", b'{"messages": [{"role": "user", "content": "hi"}]}\n', "end with an assistant"),
        ("bot.jsonl", b'{"messages": [{"role": "assistant", "content": "hi"}]}\n', "no user message"),
        (
            "late.jsonl",
            b'{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n'
            b'{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}]}\n',
            "line 2",
        ),
    ],
)
def test_malformed_uploads_are_400s_naming_the_problem(name: str, data: bytes, expected: str) -> None:
    with _client() as c:
        err = _error(_upload(c, name, data), 400)
        assert expected in err["message"], err
        assert str(Store().root) not in err["message"]


# ----------------------------------------------------------------------------------------------------------------
# 5. Nothing personal left behind


def test_deleting_a_model_deletes_its_evaluation_and_download(make_adapter: Any) -> None:
    with _client() as c:
        service: Service = c.app.state.service  # type: ignore[attr-defined]
        job = _succeeded_job(service, "alice", make_adapter)
        model = job["fine_tuned_model"]
        evals = service.store.root / "evals"
        evals.mkdir(parents=True, exist_ok=True)
        (evals / f"{job['id']}-base.json").write_text(json.dumps({"items": [{"answer": "Buddy"}]}))
        assert c.get(f"/v1/models/{model}/content", headers=A).status_code == 200
        zips = list((service.store.root / "exports").glob("*.zip"))
        assert zips
        assert c.delete(f"/v1/models/{model}", headers=A).status_code == 200
        assert not list(evals.glob("*.json")) and not any(z.exists() for z in zips)
        assert not Path(job["adapter_path"]).exists()
        err = _error(c.get(f"/v1/fine_tuning/jobs/{job['id']}/evaluation", headers=A), 409)
        assert "deleted" in err["message"]


def test_delete_a_finished_job_and_everything_it_made(make_adapter: Any) -> None:
    with _client() as c:
        service: Service = c.app.state.service  # type: ignore[attr-defined]
        job = _succeeded_job(service, "alice", make_adapter)
        run = service.store.run_path("alice", job["id"])
        run.mkdir(parents=True)
        _error(c.delete(f"/v1/fine_tuning/jobs/{job['id']}", headers=B), 404)
        r = c.delete(f"/v1/fine_tuning/jobs/{job['id']}", headers=A)
        assert r.status_code == 200 and r.json() == {"id": job["id"], "object": "fine_tuning.job", "deleted": True}
        _error(c.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=A), 404)
        _error(c.get(f"/v1/models/{job['fine_tuned_model']}", headers=A), 404)
        assert not Path(job["adapter_path"]).exists() and not run.exists()
        assert service.store.list_events("alice", job["id"])[0] == []
        fid = _upload(c, "minimal.csv", MINIMAL).json()["id"]
        queued = c.post("/v1/fine_tuning/jobs", headers=A, json={"model": "tiny-random", "training_file": fid}).json()
        _error(c.delete(f"/v1/fine_tuning/jobs/{queued['id']}", headers=A), 409, "conflict")


def test_deleting_a_file_deletes_what_was_trained_from_it(make_adapter: Any) -> None:
    service = Service(Store(), workers=0)
    job = _succeeded_job(service, "t", make_adapter)
    fid = job["training_file"]
    waiting, _ = service.create_job("t", model="tiny-random", training_file=fid)
    service.delete_file("t", fid)
    assert service.store.get_model("t", job["fine_tuned_model"]) is None
    assert not Path(job["adapter_path"]).exists()
    assert service.get_job("t", waiting["id"])["status"] == "cancelled"


def test_cancelled_and_failed_runs_leave_no_checkpoints(tiny_model: Any) -> None:
    service = Service(Store(), workers=0, base_models=["tiny-random"])
    fid = service.upload_file("t", "minimal.csv", "fine-tune", MINIMAL)["id"]
    job, _ = service.create_job("t", model="tiny-random", training_file=fid, hyperparameters={"n_epochs": 3})
    claimed = service.store.claim_next_job()
    run = service.store.run_path("t", job["id"])
    seen: list[bool] = []
    original = service._progress

    def progress(job_: Any, event: Any, last: Any) -> None:
        original(job_, event, last)
        if event.phase == "train" and not seen:
            seen.append(run.exists())  # checkpoints go to the job's own directory...
            service.cancel_job("t", job["id"])

    service._progress = progress  # type: ignore[method-assign]
    service.run_job(claimed)
    assert seen == [True]
    assert service.get_job("t", job["id"])["status"] == "cancelled"
    assert not run.exists()  # ...which goes when the job is cancelled
    # A failed job's run directory goes too (a failure is never resumed).
    other, _ = service.create_job("t", model="tiny-random", training_file=fid)
    failing = service.store.claim_next_job()
    service.store.run_path("t", other["id"]).mkdir(parents=True)
    service.store.delete_file("t", fid)  # the file vanishes under the job: it fails
    service.run_job(failing)
    assert service.get_job("t", other["id"])["status"] == "failed"
    assert not service.store.run_path("t", other["id"]).exists()


def test_private_files_are_owner_only(make_adapter: Any, tmp_path: Path) -> None:
    store = Store()
    record = store.add_file("t", "p.csv", "fine-tune", MINIMAL, "profile", "csv")
    assert Path(record["path"]).stat().st_mode & 0o777 == 0o600
    assert store.root.stat().st_mode & 0o777 == 0o700
    adapter = make_adapter(tmp_path / "adapter", heldout=HELDOUT)
    assert (adapter / "private.json").stat().st_mode & 0o777 == 0o600
    assert (adapter / "heldout.jsonl").stat().st_mode & 0o777 == 0o600


# ----------------------------------------------------------------------------------------------------------------
# 6. No-auth mode: this machine, loopback names, same origin; the guard is in create_app


def test_no_auth_mode_serves_only_loopback_same_origin_requests() -> None:
    # The app itself refuses (not only `andraeus serve`): uvicorn --factory api.main:create_app --host 0.0.0.0.
    app = create_app(ApiSettings(workers=0))
    ok = {"base_url": "http://127.0.0.1:7860", "client": ("127.0.0.1", 1)}
    with TestClient(app, **ok) as c:
        assert c.get("/v1/models").status_code == 200
        assert c.get("/v1/models", headers={"Origin": "http://127.0.0.1:7860"}).status_code == 200
        assert c.get("/v1/models", headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200
        _error(c.get("/v1/models", headers={"Host": "evil.example"}), 400, "invalid_host")  # DNS rebinding
        _error(c.get("/v1/models", headers={"Host": "evil.example:7860"}), 400, "invalid_host")
        upload = {"files": {"file": ("minimal.csv", MINIMAL)}, "data": {"purpose": "fine-tune"}}
        _error(c.post("/v1/files", headers={"Origin": "https://evil.example"}, **upload), 403, "cross_origin")
        _error(c.post("/v1/files", headers={"Origin": "null"}, **upload), 403, "cross_origin")
        _error(c.post("/v1/files", headers={"Sec-Fetch-Site": "cross-site"}, **upload), 403, "cross_origin")
        _error(c.get("/healthz", headers={"Origin": "http://localhost:3000"}), 403, "cross_origin")
        assert c.get("/v1/files").json()["data"] == []  # nothing got in
    for base, client in [("http://localhost:7860", ("::1", 1)), ("http://[::1]:7860", ("::ffff:127.0.0.1", 1))]:
        with TestClient(app, base_url=base, client=client) as c:
            assert c.get("/v1/models").status_code == 200, base
    with TestClient(app, base_url="http://127.0.0.1:7860", client=("192.168.1.20", 1)) as c:
        _error(c.get("/v1/models"), 403, "loopback_only")
    # With keys every origin may call (the key is the credential).
    with _client() as c:
        assert c.get("/v1/models", headers={**A, "Host": "api.example.com", "Origin": "https://x.example"}).is_success


# ----------------------------------------------------------------------------------------------------------------
# 7. Per-tenant limits


def test_one_tenant_cannot_fill_the_queue() -> None:
    settings = ApiSettings(api_keys=KEYS, workers=0, max_queued=16, max_queued_per_tenant=2)
    with _client(settings, max_queued_per_tenant=2) as c:
        fa, fb = _upload(c, "minimal.csv", MINIMAL).json()["id"], _upload(c, "m.csv", MINIMAL, B).json()["id"]
        for _ in range(2):
            assert c.post(
                "/v1/fine_tuning/jobs", headers=A, json={"model": "tiny-random", "training_file": fa}
            ).is_success
        r = c.post("/v1/fine_tuning/jobs", headers=A, json={"model": "tiny-random", "training_file": fa})
        _error(r, 429, "queue_full")
        assert int(r.headers["Retry-After"]) > 0
        assert c.post("/v1/fine_tuning/jobs", headers=B, json={"model": "tiny-random", "training_file": fb}).is_success


def test_storage_quota_and_file_count_per_tenant() -> None:
    with _client(storage_quota_bytes=2 * len(MINIMAL) + 10, max_files_per_tenant=3) as c:
        for _ in range(2):
            assert _upload(c, "minimal.csv", MINIMAL).is_success
        err = _error(_upload(c, "minimal.csv", MINIMAL), 429, "quota_exceeded")
        assert err["type"] == "insufficient_quota" and "quota" in err["message"]
        assert _upload(c, "minimal.csv", MINIMAL, B).is_success  # bob's storage is his own
    service = Service(Store(), workers=0, max_files_per_tenant=1)
    service.upload_file("t", "a.csv", "fine-tune", MINIMAL)
    with pytest.raises(QuotaError, match="1 files"):
        service.upload_file("t", "b.csv", "fine-tune", MINIMAL)


def test_job_metadata_is_bounded_like_openai() -> None:
    with _client() as c:
        fid = _upload(c, "minimal.csv", MINIMAL).json()["id"]
        body = {"model": "tiny-random", "training_file": fid}
        for metadata in (
            {f"k{i}": "v" for i in range(17)},
            {"k" * 65: "v"},
            {"k": "v" * 513},
            {"k": "v" * 8_000_000},
        ):
            started = time.perf_counter()
            err = _error(c.post("/v1/fine_tuning/jobs", headers=A, json={**body, "metadata": metadata}), 400)
            assert err["param"] == "metadata" and len(err["message"]) < 300
            assert time.perf_counter() - started < 2.0
        ok = {f"k{i}": "v" * 512 for i in range(16)}
        assert c.post("/v1/fine_tuning/jobs", headers=A, json={**body, "metadata": ok}).is_success


# ----------------------------------------------------------------------------------------------------------------
# 8. Smaller


def test_a_chunked_body_over_the_limit_is_a_413() -> None:
    with _client(ApiSettings(api_keys=KEYS, workers=0, max_request_bytes=4096)) as c:

        def chunks() -> Any:
            for _ in range(10):
                yield b"x" * 1024

        r = c.post("/v1/files", headers={**A, "Content-Type": "multipart/form-data; boundary=b"}, content=chunks())
        _error(r, 413, "request_too_large")


def test_download_is_not_refused_for_a_value_equal_to_a_config_number(make_adapter: Any) -> None:
    # andraeus.json records 128 tokens per epoch: a fact value "128" is no leak of that number.
    profile = {**PROFILE, "facts": [*PROFILE["facts"], {"topic": "house number", "value": "128", "aliases": []}]}
    metrics = {"steps": 2, "epochs": 1, "tokens_per_epoch": 128}
    with _client() as c:
        service: Service = c.app.state.service  # type: ignore[attr-defined]
        job = _succeeded_job(service, "alice", make_adapter, profile=profile, metrics=metrics)
        r = c.get(f"/v1/models/{job['fine_tuned_model']}/content", headers=A)
        assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
        # A real leak (a value among the strings of andraeus.json) is still refused, as a 4xx.
        leaky = {**PROFILE, "facts": [{"topic": "favourite model", "value": "tiny-random", "aliases": []}]}
        job = _succeeded_job(service, "alice", make_adapter, profile=leaky)
        err = _error(c.get(f"/v1/models/{job['fine_tuned_model']}/content", headers=A), 422, "private_data")
        assert "tiny-random" not in err["message"]


def test_evaluation_errors_name_no_server_path(make_adapter: Any) -> None:
    with _client() as c:
        service: Service = c.app.state.service  # type: ignore[attr-defined]
        job = _succeeded_job(service, "alice", make_adapter)  # written without heldout.jsonl
        err = _error(c.get(f"/v1/fine_tuning/jobs/{job['id']}/evaluation", headers=A), 400)
        assert str(service.store.root) not in err["message"] and "/" not in err["message"].replace("--", "")
        assert job["id"] in err["message"]


def test_a_job_that_used_up_its_restarts_says_so() -> None:
    service = Service(Store(), workers=0)
    store = service.store
    fid = store.add_file("t", "p.csv", "fine-tune", MINIMAL, "profile", "csv")["id"]
    job = store.add_job(
        {
            "id": "ftjob-x",
            "tenant": "t",
            "model": "tiny-random",
            "training_file": fid,
            "hyperparameters": {},
            "seed": 0,
        }
    )
    store.update_job(job["id"], status="running", progress_epoch=2.0, restarts=2)
    run = store.run_path("t", job["id"])
    run.mkdir(parents=True)
    service.recover()
    error = store.get_job("t", job["id"])["error"]
    assert error["code"] == "server_restart" and "3 times" in error["message"]
    assert "before a checkpoint" not in error["message"]
    assert not run.exists()


# ----------------------------------------------------------------------------------------------------------------
# README: the API section lists every limit


def test_the_readme_lists_every_api_setting_and_bound() -> None:
    import re

    from andraeus_core import jobs, profile
    from api import schemas

    section = (ROOT / "README.md").read_text().split("## API (OpenAI-compatible)")[1].split("\n## ")[0]
    settings = set(re.findall(r"ANDRAEUS_API_[A-Z_]+", (ROOT / "api" / "deps.py").read_text()))
    assert settings and {s for s in settings if s not in section} == set()
    for bound in (
        schemas.MAX_MESSAGES,
        schemas.MAX_MESSAGE_CHARS,
        schemas.MAX_STOPS,
        schemas.MAX_STOP_CHARS,
        jobs.MAX_FILENAME_CHARS,
        jobs.MAX_CHAT_EXAMPLES,
        jobs.MAX_METADATA_PAIRS,
        jobs.MAX_METADATA_KEY_CHARS,
        jobs.MAX_METADATA_VALUE_CHARS,
        profile.MAX_FACTS,
        profile.MAX_TOPIC_CHARS,
        profile.MAX_VALUE_CHARS,
    ):
        assert f"{bound:,}" in section, bound
