"""Store, directly: keys kept only as keyed hashes, per-tenant files and jobs, the queue, events, models, and state
that survives a reopen (tests/test_api.py exercises the same through HTTP)."""

from __future__ import annotations

import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from andraeus_core.errors import ConfigError
from andraeus_core.store import FINISHED, KEY_PREFIX, Store, api_home


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "api")


def _job(store: Store, tenant: str = "t1", job_id: str | None = None, **fields: object) -> dict:
    return store.add_job(
        {
            "id": job_id or f"ftjob-{len(store.list_jobs(tenant, limit=1000)[0])}-{tenant}",
            "tenant": tenant,
            "model": "tiny-random",
            "training_file": "file-x",
            "hyperparameters": {"n_epochs": 1},
            "seed": 0,
            **fields,
        }
    )


def test_default_root_is_under_andraeus_home(isolated_home: Path) -> None:
    assert api_home() == isolated_home / "api"
    store = Store()
    assert store.root == isolated_home / "api" and (store.root / "state.db").is_file() and store.ping()
    store.close()
    assert not store.ping()


def test_keys_are_only_stored_as_keyed_hashes(store: Store) -> None:
    assert not store.has_keys()
    key, record = store.create_key("laptop")
    assert key.startswith(KEY_PREFIX) and "hash" not in record and record["tenant"].startswith("tenant_")
    assert record["hint"].startswith(KEY_PREFIX) and key not in record["hint"]
    assert store.has_keys() and store.tenant_for_key(key) == record["tenant"]
    assert store.tenant_for_key(key + "x") is None and store.tenant_for_key("") is None
    shared, _ = store.create_key("phone", tenant=record["tenant"])
    assert store.tenant_for_key(shared) == record["tenant"]
    with sqlite3.connect(store.root / "state.db") as db:
        dump = "\n".join(db.iterdump())
    assert key not in dump and store.hash_key(key) in dump
    assert [k["name"] for k in store.list_keys()] == ["laptop", "phone"]
    assert store.revoke_key(record["id"]) and not store.revoke_key("key_nope")
    assert store.tenant_for_key(key) is None and store.tenant_for_key(shared) == record["tenant"]


def test_pepper_is_private_reused_and_checked(tmp_path: Path) -> None:
    first = Store(tmp_path / "api")
    pepper = tmp_path / "api" / "pepper"
    assert stat.S_IMODE(pepper.stat().st_mode) == 0o600
    key, _ = first.create_key()
    assert Store(tmp_path / "api").tenant_for_key(key) is not None  # same pepper after a reopen
    pepper.write_bytes(b"short")
    with pytest.raises(ConfigError, match="pepper"):
        Store(tmp_path / "api")


def test_environment_keys(store: Store) -> None:
    assert store.set_env_keys("alice=0123456789abcdef0123, sharedsecretkey-0001") == 2
    assert store.has_keys()
    assert store.tenant_for_key("0123456789abcdef0123") == "alice"
    assert (store.tenant_for_key("sharedsecretkey-0001") or "").startswith("env-")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        store.set_env_keys("bob=short")
    assert store.set_env_keys(None) == 0 and not store.has_keys()


def test_files_are_written_per_tenant_and_isolated(store: Store) -> None:
    record = store.add_file("t1", "My Profile.YAML", "fine-tune", b"facts: []", "profile", "yaml")
    path = Path(record["path"])
    assert path.read_bytes() == b"facts: []" and path.suffix == ".yaml" and path.is_relative_to(store.root)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # written atomically, no temporary
    other = store.add_file("t2", "p.csv", "fine-tune", b"topic,value\n", "profile", "csv")
    assert Path(other["path"]).parent != path.parent
    assert store.get_file("t1", record["id"])["filename"] == "My Profile.YAML"
    assert store.get_file("t2", record["id"]) is None  # another tenant's id does not exist for you
    assert [f["id"] for f in store.list_files("t1")] == [record["id"]]
    assert store.list_files("t1", purpose="other") == []
    assert not store.delete_file("t2", record["id"])
    assert store.delete_file("t1", record["id"]) and not path.exists()
    assert store.get_file("t1", record["id"]) is None


def test_jobs_queue_in_order_and_are_claimed_once(store: Store) -> None:
    jobs = [_job(store, job_id=f"ftjob-{i}") for i in range(3)]
    assert all(j["status"] == "queued" and j["hyperparameters"] == {"n_epochs": 1} for j in jobs)
    assert Path(jobs[0]["adapter_path"]).is_relative_to(store.root / "adapters")
    assert store.count_jobs(("queued",)) == 3
    assert store.get_job("t2", "ftjob-0") is None and store.get_job(None, "ftjob-0") is not None
    claimed: list[str] = []
    lock = threading.Lock()

    def claim() -> None:
        while (job := store.claim_next_job()) is not None:
            with lock:
                claimed.append(job["id"])

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == ["ftjob-0", "ftjob-1", "ftjob-2"]  # each job exactly once
    assert [j["id"] for j in store.jobs_with_status("running")] == ["ftjob-0", "ftjob-1", "ftjob-2"]
    assert store.get_job("t1", "ftjob-0")["started_at"] is not None


def test_update_job_only_if_status_guards_transitions(store: Store) -> None:
    job = _job(store, job_id="ftjob-a")
    assert not store.update_job(job["id"], only_if_status=("running",), status="succeeded")
    assert store.update_job(job["id"], only_if_status=("queued",), status="cancelled", finished_at=1)
    error = {"code": "x", "message": "m", "param": None}
    assert store.update_job(job["id"], error=error)
    again = store.get_job("t1", job["id"])
    assert again["status"] == "cancelled" and again["status"] in FINISHED and again["error"] == error


def test_job_pages_newest_first(store: Store) -> None:
    ids = [_job(store, job_id=f"ftjob-{i}")["id"] for i in range(5)]
    page, more = store.list_jobs("t1", limit=2)
    assert [j["id"] for j in page] == ids[::-1][:2] and more
    page, more = store.list_jobs("t1", after=page[-1]["id"], limit=10)
    assert [j["id"] for j in page] == ids[::-1][2:] and not more
    assert store.list_jobs("t1", after="ftjob-unknown") == ([], False)
    assert store.list_jobs("t2") == ([], False)


def test_idempotency_keys_are_unique_per_tenant(store: Store) -> None:
    job = _job(store, job_id="ftjob-1", idempotency_key="k", request_hash="h")
    assert store.job_by_idempotency_key("t1", "k")["id"] == job["id"]
    assert store.job_by_idempotency_key("t2", "k") is None
    _job(store, "t2", job_id="ftjob-2", idempotency_key="k")  # another tenant's "k" is its own
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        _job(store, job_id="ftjob-3", idempotency_key="k")


def test_events_checkpoints_and_models(store: Store) -> None:
    job = _job(store, job_id="ftjob-e")
    for i in range(3):
        store.add_event(job, f"step {i}", type="metrics", data={"step": i})
    events, more = store.list_events("t1", job["id"], limit=2)
    assert [e["message"] for e in events] == ["step 2", "step 1"] and more and events[0]["data"] == {"step": 2}
    rest, more = store.list_events("t1", job["id"], after=events[-1]["id"])
    assert [e["message"] for e in rest] == ["step 0"] and not more
    assert store.list_events("t2", job["id"]) == ([], False)
    store.add_checkpoint(job, 4, "ft:m", {"train_loss": 0.5})
    assert store.list_checkpoints("t1", job["id"])[0]["metrics"] == {"train_loss": 0.5}
    assert store.list_checkpoints("t2", job["id"]) == []
    store.add_model("t1", "ft:m", job["id"], "tiny-random", "/adapters/x")
    assert store.get_model("t1", "ft:m")["path"] == "/adapters/x" and store.get_model("t2", "ft:m") is None
    assert [m["id"] for m in store.list_models("t1")] == ["ft:m"]
    assert store.delete_model("t2", "ft:m") is None
    assert store.delete_model("t1", "ft:m")["id"] == "ft:m" and store.list_models("t1") == []


def test_state_survives_a_reopen(tmp_path: Path) -> None:
    first = Store(tmp_path / "api")
    record = first.add_file("t1", "p.csv", "fine-tune", b"x", "profile", "csv")
    _job(first, job_id="ftjob-keep")
    first.close()
    second = Store(tmp_path / "api")
    assert second.get_file("t1", record["id"]) is not None
    assert second.get_job("t1", "ftjob-keep")["status"] == "queued"
