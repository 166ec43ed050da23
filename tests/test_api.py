"""REST API: the official openai client against a live server, errors, auth, tenants, queue, idempotency.

Mechanics run on tiny-random (its answers are noise); the slow test trains the embedded default through the API.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from andraeus_core import ConfigError, Service, Store
from api.deps import ApiSettings
from api.main import create_app
from tests.helpers import serve_in_thread

ROOT = Path(__file__).resolve().parents[1]
KEY_A = "key-tenant-a-0123456789abcdef"
KEY_B = "key-tenant-b-0123456789abcdef"
KEYS = f"alice={KEY_A},bob={KEY_B}"
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}


@pytest.fixture
def live_server() -> Iterator[str]:
    """A real uvicorn server on 127.0.0.1 (random free port) in a thread; yields the /v1 base URL."""
    port, stop = serve_in_thread(create_app(ApiSettings(api_keys=KEYS, workers=1)))
    yield f"http://127.0.0.1:{port}/v1"
    stop()


def _client(settings: ApiSettings | None = None, **service_kw: object) -> TestClient:
    settings = settings or ApiSettings(api_keys=KEYS, workers=0)
    service = Service(Store(), workers=settings.workers, max_queued=settings.max_queued, **service_kw)  # type: ignore[arg-type]
    return TestClient(create_app(settings, service), raise_server_exceptions=False)


def _upload(client: TestClient, headers: dict[str, str], name: str = "minimal.csv") -> str:
    with open(ROOT / "examples" / name, "rb") as fh:
        r = client.post("/v1/files", headers=headers, files={"file": (name, fh)}, data={"purpose": "fine-tune"})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def _assert_error(r, status: int, code: str | None = None) -> dict:  # noqa: ANN001
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert "Traceback" not in r.text
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


def _wait_job(client, job_id: str, timeout: float = 240) -> object:  # noqa: ANN001
    deadline = time.time() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            return job
        assert time.time() < deadline, f"job still {job.status}"
        time.sleep(0.3)


# ----------------------------------------------------------------------------------------------------------------
# the whole flow with the official SDK


def test_openai_sdk_full_flow_on_live_server(live_server: str) -> None:
    import openai

    client = openai.OpenAI(base_url=live_server, api_key=KEY_A, max_retries=0)
    with open(ROOT / "examples" / "minimal.csv", "rb") as fh:
        upload = client.files.create(file=fh, purpose="fine-tune")
    assert upload.object == "file" and upload.filename == "minimal.csv" and upload.bytes > 0
    assert upload.id in [f.id for f in client.files.list()]

    job = client.fine_tuning.jobs.create(
        model="tiny-random", training_file=upload.id, hyperparameters={"n_epochs": 3}, suffix="sdk", seed=7
    )
    assert job.status in ("queued", "running") and job.hyperparameters.n_epochs == 3

    # Chat is served while the job trains (the worker is a separate thread).
    deadline = time.time() + 60
    while client.fine_tuning.jobs.retrieve(job.id).status == "queued":
        assert time.time() < deadline
        time.sleep(0.1)
    reply = client.chat.completions.create(
        model="tiny-random", messages=[{"role": "user", "content": "hello"}], max_tokens=4
    )
    assert reply.choices[0].message.role == "assistant" and reply.usage.completion_tokens <= 4

    done = _wait_job(client, job.id)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == f"ft:tiny-random:sdk:{job.id}"
    assert done.trained_tokens and done.trained_tokens > 0 and done.finished_at

    events = client.fine_tuning.jobs.list_events(job.id, limit=200).data
    assert all(e.object == "fine_tuning.job.event" for e in events)
    metrics = [e for e in events if e.type == "metrics"]
    assert metrics and all(e.data["train_loss"] is not None for e in metrics)
    assert events[0].created_at >= events[-1].created_at  # newest first, like OpenAI
    steps = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert steps and steps[0].fine_tuned_model_checkpoint == done.fine_tuned_model
    assert [j.id for j in client.fine_tuning.jobs.list(limit=5).data] == [job.id]

    model = done.fine_tuned_model
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "What is my dog's name?"}], max_tokens=6
    )
    assert answer.object == "chat.completion" and answer.model == model
    assert answer.usage.prompt_tokens > 5 and 1 <= answer.usage.completion_tokens <= 6
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    cut = answer.usage.completion_tokens == 6
    assert answer.choices[0].finish_reason == ("length" if cut else "stop")

    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is my dog's name?"}],
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    # Greedy decoding: the streamed answer is the plain answer.
    assert text.strip() == answer.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage == answer.usage
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == answer.choices[0].finish_reason

    ids = [m.id for m in client.models.list().data]
    assert "tiny-random" in ids and model in ids
    assert client.models.retrieve(model).owned_by == "user"
    deleted = client.models.delete(model)
    assert deleted.deleted is True
    assert model not in [m.id for m in client.models.list().data]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=live_server, api_key="wrong-key-0000000000", max_retries=0).models.list()


# ----------------------------------------------------------------------------------------------------------------
# errors and limits


def test_errors_are_openai_shaped_with_the_right_status() -> None:
    with _client(ApiSettings(api_keys=KEYS, workers=0, max_request_bytes=4096)) as c:
        _assert_error(c.get("/v1/files"), 401, "invalid_api_key")
        _assert_error(c.get("/v1/files", headers={"Authorization": "Bearer nope"}), 401, "invalid_api_key")
        _assert_error(c.get("/v1/files/file-missing", headers=A), 404, "not_found")
        _assert_error(c.get("/v1/nothing-here", headers=A), 404)
        bad = b"user_name: Sam\nfacts:\n  - topic: dog's name\n    valu: Buddy\n"
        err = _assert_error(
            c.post("/v1/files", headers=A, files={"file": ("me.yaml", bad)}, data={"purpose": "fine-tune"}), 400
        )
        assert "me.yaml" in err["message"] and "line 4" in err["message"] and "valu" in err["message"]
        _assert_error(
            c.post("/v1/files", headers=A, files={"file": ("x.exe", b"MZ")}, data={"purpose": "fine-tune"}), 400
        )
        err = _assert_error(c.post("/v1/fine_tuning/jobs", headers=A, json={"model": 3}), 422, "invalid_request")
        assert "training_file" in err["message"]
        _assert_error(
            c.post(
                "/v1/chat/completions",
                headers=A,
                content=b"{not json",
            ),
            422,
        )
        _assert_error(
            c.post("/v1/files", headers=A, files={"file": ("big.csv", b"x" * 10_000)}, data={"purpose": "fine-tune"}),
            413,
            "request_too_large",
        )
        fid = _upload(c, A)
        _assert_error(c.post("/v1/fine_tuning/jobs", headers=A, json={"model": "gpt-4", "training_file": fid}), 400)
        err = _assert_error(
            c.post(
                "/v1/fine_tuning/jobs",
                headers=A,
                json={"model": "tiny-random", "training_file": fid, "hyperparameters": {"n_epochs": 500}},
            ),
            400,
        )
        assert err["param"] == "n_epochs" and "500" in err["message"]
        job = c.post("/v1/fine_tuning/jobs", headers=A, json={"model": "tiny-random", "training_file": fid}).json()
        assert c.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=A).json()["status"] == "cancelled"
        _assert_error(c.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=A), 409, "conflict")
        _assert_error(c.get(f"/v1/fine_tuning/jobs/{job['id']}/evaluation", headers=A), 409, "conflict")
        _assert_error(c.delete("/v1/models/tiny-random", headers=A), 400)
        _assert_error(
            c.post("/v1/chat/completions", headers=A, json={"model": "tiny-random", "messages": [], "n": 2}), 422
        )
        _assert_error(
            c.post("/v1/models/tiny-random/push", headers=A, json={"repo_id": "me/x"}), 400, "missing_hub_token"
        )


def test_unexpected_errors_become_500_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    client = _client()
    service = client.app.state.service  # type: ignore[attr-defined]

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals at /srv/x.py line 3")

    service.list_models = boom
    with client as c:
        err = _assert_error(c.get("/v1/models", headers=A), 500, "internal_error")
    assert "secret" not in err["message"] and err["type"] == "server_error"


def test_queue_full_gives_429_with_retry_after() -> None:
    with _client(ApiSettings(api_keys=KEYS, workers=0, max_queued=2)) as c:
        fid = _upload(c, A)
        body = {"model": "tiny-random", "training_file": fid}
        for _ in range(2):
            assert c.post("/v1/fine_tuning/jobs", headers=A, json=body).status_code == 200
        r = c.post("/v1/fine_tuning/jobs", headers=A, json=body)
        _assert_error(r, 429, "queue_full")
        assert int(r.headers["Retry-After"]) > 0
        assert r.json()["error"]["type"] == "rate_limit_error"


def test_idempotency_key_returns_the_same_job() -> None:
    with _client() as c:
        fid = _upload(c, A)
        body = {"model": "tiny-random", "training_file": fid, "hyperparameters": {"n_epochs": 2}}
        first = c.post("/v1/fine_tuning/jobs", headers={**A, "Idempotency-Key": "k1"}, json=body)
        again = c.post("/v1/fine_tuning/jobs", headers={**A, "Idempotency-Key": "k1"}, json=body)
        assert first.status_code == again.status_code == 200
        assert first.json()["id"] == again.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
        assert len(c.get("/v1/fine_tuning/jobs", headers=A).json()["data"]) == 1
        # The same key for a different request is a conflict, not a silent replay.
        _assert_error(
            c.post("/v1/fine_tuning/jobs", headers={**A, "Idempotency-Key": "k1"}, json={**body, "seed": 5}), 409
        )
        # Keys are per tenant: bob's "k1" is his own.
        fid_b = _upload(c, B)
        other = c.post(
            "/v1/fine_tuning/jobs", headers={**B, "Idempotency-Key": "k1"}, json={**body, "training_file": fid_b}
        )
        assert other.status_code == 200 and other.json()["id"] != first.json()["id"]


def test_job_list_paginates_with_after_and_limit() -> None:
    with _client() as c:
        fid = _upload(c, A)
        ids = [
            c.post("/v1/fine_tuning/jobs", headers=A, json={"model": "tiny-random", "training_file": fid}).json()["id"]
            for _ in range(3)
        ]
        page1 = c.get("/v1/fine_tuning/jobs?limit=2", headers=A).json()
        assert [j["id"] for j in page1["data"]] == ids[::-1][:2] and page1["has_more"] is True
        page2 = c.get(f"/v1/fine_tuning/jobs?limit=2&after={ids[1]}", headers=A).json()
        assert [j["id"] for j in page2["data"]] == [ids[0]] and page2["has_more"] is False


# ----------------------------------------------------------------------------------------------------------------
# auth and tenants


def test_tenant_isolation_matrix() -> None:
    """Everything alice owns is a 404 for bob, on every endpoint that takes an id; lists never show it."""
    with _client() as c:
        store: Store = c.app.state.service.store  # type: ignore[attr-defined]
        fid = _upload(c, A)
        job = c.post("/v1/fine_tuning/jobs", headers=A, json={"model": "tiny-random", "training_file": fid}).json()
        model = "ft:tiny-random:x:" + job["id"]
        store.add_model("alice", model, job["id"], "tiny-random", str(store.root / "nowhere"))
        assert c.get(f"/v1/models/{model}", headers=A).status_code == 200

        chat = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        matrix = [
            ("GET", f"/v1/files/{fid}", None),
            ("GET", f"/v1/files/{fid}/content", None),
            ("DELETE", f"/v1/files/{fid}", None),
            ("GET", f"/v1/fine_tuning/jobs/{job['id']}", None),
            ("POST", f"/v1/fine_tuning/jobs/{job['id']}/cancel", None),
            ("GET", f"/v1/fine_tuning/jobs/{job['id']}/events", None),
            ("GET", f"/v1/fine_tuning/jobs/{job['id']}/checkpoints", None),
            ("GET", f"/v1/fine_tuning/jobs/{job['id']}/evaluation", None),
            ("POST", "/v1/fine_tuning/jobs", {"model": "tiny-random", "training_file": fid}),
            ("GET", f"/v1/models/{model}", None),
            ("DELETE", f"/v1/models/{model}", None),
            ("GET", f"/v1/models/{model}/content", None),
            ("POST", "/v1/chat/completions", chat),
            ("POST", "/v1/variations", {"file_id": fid}),
        ]
        for method, url, body in matrix:
            r = c.request(method, url, headers=B, json=body)
            err = _assert_error(r, 404, "not_found")
            assert "minimal.csv" not in err["message"]  # nothing of alice's leaks into the message
        r = c.post(f"/v1/models/{model}/push", headers={**B, "X-HF-Token": "hf_x"}, json={"repo_id": "bob/x"})
        _assert_error(r, 404)
        assert fid not in c.get("/v1/files", headers=B).text
        assert job["id"] not in c.get("/v1/fine_tuning/jobs", headers=B).text
        assert model not in c.get("/v1/models", headers=B).text
        # ...and alice still has everything.
        assert c.get(f"/v1/files/{fid}", headers=A).status_code == 200
        assert c.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=A).json()["status"] == "queued"
        assert model in c.get("/v1/models", headers=A).text


def test_keys_are_stored_hashed_and_checked(capsys: pytest.CaptureFixture[str], isolated_home: Path) -> None:
    from andraeus_cli import main

    assert main(["keys", "create", "--name", "laptop"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("sk-andraeus-") and len(key) > 40
    store = Store()
    tenant = store.tenant_for_key(key)
    assert tenant and tenant.startswith("tenant_")
    assert store.tenant_for_key(key + "x") is None and store.tenant_for_key("") is None
    # The database holds only the keyed hash, never the key.
    store.close()
    db = isolated_home / "api" / "state.db"
    with sqlite3.connect(db) as conn:
        dump = "\n".join(conn.iterdump())
    assert key not in dump and Store().hash_key(key) in dump
    assert conn is not None
    with _client(ApiSettings(workers=0)) as c:  # the CLI key works against the API
        assert c.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        _assert_error(c.get("/v1/models"), 401)
    assert main(["keys", "list"]) == 0
    key_id = capsys.readouterr().out.split()[0]
    assert main(["keys", "revoke", key_id]) == 0
    assert Store().tenant_for_key(key) is None


def test_no_auth_mode_only_on_loopback(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError, match="0.0.0.0"):
        create_app(ApiSettings(host="0.0.0.0", workers=0))
    with caplog.at_level(logging.WARNING, logger="andraeus.api"):
        app = create_app(ApiSettings(host="127.0.0.1", workers=0))
    assert any("no-auth mode" in r.getMessage() for r in caplog.records)
    # No-auth mode answers this machine only, under a loopback name (tests/test_hardening.py tries the rest).
    with TestClient(app, base_url="http://127.0.0.1:7860", client=("127.0.0.1", 50000)) as c:
        assert c.get("/v1/models").status_code == 200
        assert c.get("/healthz").json()["status"] == "ok" and c.get("/readyz").status_code == 200


# ----------------------------------------------------------------------------------------------------------------
# variations preview


def test_variations_preview_inline_profile() -> None:
    with _client() as c:
        text = (ROOT / "examples" / "seed_profile.yaml").read_text()
        r = c.post("/v1/variations", headers=A, json={"profile": text, "format": "yaml", "per_fact": 3})
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert {d["topic"] for d in data} >= {"dog's name", "birthday"}
        assert all(d["question"] and d["answers"] for d in data)
        err = _assert_error(c.post("/v1/variations", headers=A, json={"profile": "facts: [", "format": "yaml"}), 400)
        assert "line" in err["message"]


def test_chat_goes_through_the_models_gate_unless_turned_off(tmp_path, make_adapter) -> None:
    """A fine-tuned model whose gate sends everything to the base model answers like the base preset; gate=false
    (an Andraeus extension of the request) lets the adapter answer."""
    with _client() as c:
        store: Store = c.app.state.service.store  # type: ignore[attr-defined]
        path = make_adapter(tmp_path / "gated", weights="large", gate="base")
        fid = _upload(c, A)
        job = c.post("/v1/fine_tuning/jobs", headers=A, json={"model": "tiny-random", "training_file": fid}).json()
        model = "ft:tiny-random:x:" + job["id"]
        store.add_model("alice", model, job["id"], "tiny-random", str(path))

        # the adapter's own system prompt (make_adapter's), so that the base preset sees the same conversation
        system = {"role": "system", "content": "You are Nova, Sam Rivera's assistant."}

        def ask(name: str, **extra: object) -> str:
            messages = [system, {"role": "user", "content": "hello"}]
            r = c.post(
                "/v1/chat/completions", headers=A, json={"model": name, "messages": messages, "max_tokens": 6, **extra}
            )
            assert r.status_code == 200, r.text
            return r.json()["choices"][0]["message"]["content"]

        base = ask("tiny-random")
        assert ask(model) == base
        assert ask(model, gate=False) != base
        r = c.post(
            "/v1/chat/completions",
            headers=A,
            json={"model": model, "messages": [{"role": "user", "content": "hi"}], "gate": "sometimes"},
        )
        assert r.status_code in (400, 422) and r.json()["error"]["param"] in ("gate", "body.gate")


def test_the_number_of_chat_models_kept_loaded_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("ANDRAEUS_API_CHAT_MODELS", raising=False)
    assert ApiSettings.from_env().chat_cache_size == 8
    monkeypatch.setenv("ANDRAEUS_API_CHAT_MODELS", "2")
    settings = ApiSettings.from_env()
    assert settings.chat_cache_size == 2
    service = Service(Store(tmp_path / "api"), workers=0, chat_cache_size=settings.chat_cache_size)
    assert service.chats.size == 2  # and so each base model's AdapterHost holds 2 adapters
