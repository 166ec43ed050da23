"""Where the REST API keeps its state: SQLite (WAL) for keys, files, jobs, events and models; files on disk.

Layout under ``$ANDRAEUS_HOME/api``::

    state.db                 SQLite in WAL mode (readers never block the training worker's writes)
    pepper                   a random secret (0600) mixed into every API-key hash
    files/<tenant>/<file_id> uploaded training files, written atomically (fsutil.atomic_write), mode 0600
    adapters/<tenant>/<job>  adapters trained by jobs (train() publishes them atomically)
    runs/<tenant>/<job>      a running job's epoch checkpoints (removed when it ends, kept for a resume)
    evals/, exports/         evaluation reports (0600: they quote fact values) and download zips, per job

The root is 0700: everything under it is one user's business.

API keys are never stored: only ``HMAC-SHA256(pepper, key)``. Keys are random 256-bit strings, so a keyed fast
hash is enough (no password stretching needed), and lookups compare digests with :func:`hmac.compare_digest`.
Every row carries its tenant; every read takes the tenant, so one tenant cannot see another's ids.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .config import andraeus_home
from .errors import ConfigError
from .fsutil import atomic_write

logger = logging.getLogger(__name__)

KEY_PREFIX = "sk-andraeus-"
JOB_STATUSES = ("validating_files", "queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
    hint TEXT NOT NULL, created_at INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, filename TEXT NOT NULL, purpose TEXT NOT NULL, bytes INTEGER NOT NULL,
    kind TEXT NOT NULL, fmt TEXT NOT NULL, created_at INTEGER NOT NULL, path TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, seq INTEGER NOT NULL, status TEXT NOT NULL, model TEXT NOT NULL,
    training_file TEXT NOT NULL, hyperparameters TEXT NOT NULL, suffix TEXT, seed INTEGER NOT NULL,
    metadata TEXT, fine_tuned_model TEXT, error TEXT, trained_tokens INTEGER, estimated_finish INTEGER,
    created_at INTEGER NOT NULL, started_at INTEGER, finished_at INTEGER, idempotency_key TEXT,
    request_hash TEXT, adapter_path TEXT, restarts INTEGER NOT NULL DEFAULT 0, resume INTEGER NOT NULL DEFAULT 0,
    progress_epoch REAL NOT NULL DEFAULT 0);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idem ON jobs (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, job_id TEXT NOT NULL, tenant TEXT NOT NULL,
    created_at INTEGER NOT NULL, level TEXT NOT NULL, message TEXT NOT NULL, type TEXT NOT NULL, data TEXT);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id, seq);
CREATE TABLE IF NOT EXISTS checkpoints (
    id TEXT PRIMARY KEY, job_id TEXT NOT NULL, tenant TEXT NOT NULL, created_at INTEGER NOT NULL,
    step INTEGER NOT NULL, model TEXT NOT NULL, metrics TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, job_id TEXT NOT NULL, base_model TEXT NOT NULL,
    path TEXT NOT NULL, created_at INTEGER NOT NULL);
"""


def api_home() -> Path:
    """Root of the REST API's state (``$ANDRAEUS_HOME/api``)."""
    return andraeus_home() / "api"


def new_id(prefix: str) -> str:
    """A random, URL-safe id such as ``file-3f9c...`` (unguessable: ids are not a tenant boundary, but help)."""
    return f"{prefix}{secrets.token_hex(12)}"


def _row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {col[0]: value for col, value in zip(cursor.description, row, strict=True)}


class Store:
    """The API's persistent state. Thread-safe (one connection behind a lock); several processes may share it."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else api_home()
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.root / "state.db", check_same_thread=False, timeout=30)
        self._db.row_factory = _row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        with self._lock, self._db:
            self._db.executescript(_SCHEMA)
        self._pepper = self._load_pepper()
        self._env_keys: list[tuple[str, str]] = []  # (hash, tenant) of keys given in ANDRAEUS_API_KEYS

    # ------------------------------------------------------------------------------------------------------------
    # plumbing

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._db:
            yield self._db

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def ping(self) -> bool:
        """True when the database answers (for /readyz)."""
        try:
            return self._one("SELECT 1 AS ok") == {"ok": 1}
        except sqlite3.Error:
            return False

    def _load_pepper(self) -> bytes:
        path = self.root / "pepper"
        if not path.exists():
            fd = None
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.write(fd, secrets.token_bytes(32))
            except FileExistsError:
                pass  # another process created it first
            finally:
                if fd is not None:
                    os.close(fd)
        data = path.read_bytes()
        if len(data) < 16:
            raise ConfigError(f"The API key pepper file '{path}' is damaged; delete it and recreate every API key.")
        return data

    # ------------------------------------------------------------------------------------------------------------
    # API keys (a key is a tenant)

    def hash_key(self, key: str) -> str:
        """The keyed hash stored for an API key."""
        return hmac.new(self._pepper, key.encode(), hashlib.sha256).hexdigest()

    def create_key(self, name: str = "default", tenant: str | None = None) -> tuple[str, dict[str, Any]]:
        """Create an API key; returns the key (shown once, never stored) and its public record."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        record = {
            "id": new_id("key_"),
            "tenant": tenant or new_id("tenant_"),
            "hash": self.hash_key(key),
            "name": name,
            "hint": key[: len(KEY_PREFIX) + 4] + "…" + key[-4:],
            "created_at": int(time.time()),
        }
        with self._tx() as db:
            db.execute(
                "INSERT INTO api_keys (id, tenant, hash, name, hint, created_at) VALUES "
                "(:id, :tenant, :hash, :name, :hint, :created_at)",
                record,
            )
        record.pop("hash")
        return key, record

    def list_keys(self) -> list[dict[str, Any]]:
        return self._all("SELECT id, tenant, name, hint, created_at, revoked FROM api_keys ORDER BY created_at")

    def revoke_key(self, key_id: str) -> bool:
        with self._tx() as db:
            return db.execute("UPDATE api_keys SET revoked = 1 WHERE id = ?", (key_id,)).rowcount > 0

    def set_env_keys(self, spec: str | None) -> int:
        """Register keys from ``ANDRAEUS_API_KEYS``: comma-separated ``key`` or ``tenant=key`` items (kept hashed)."""
        self._env_keys = []
        for item in (spec or "").split(","):
            item = item.strip()
            if not item:
                continue
            tenant, sep, key = item.partition("=")
            if not sep:
                key, tenant = tenant, ""
            key = key.strip()
            if len(key) < 16:
                raise ConfigError(
                    "ANDRAEUS_API_KEYS: every key must be at least 16 characters (item "
                    f"{len(self._env_keys) + 1} is {len(key)}); create one with `andraeus keys create`."
                )
            digest = self.hash_key(key)
            self._env_keys.append((digest, tenant.strip() or "env-" + digest[:12]))
        return len(self._env_keys)

    def has_keys(self) -> bool:
        """True when any API key exists (then every request must carry one)."""
        return bool(self._env_keys) or self._one("SELECT 1 AS x FROM api_keys WHERE revoked = 0") is not None

    def tenant_for_key(self, key: str) -> str | None:
        """The tenant of an API key, or None. Every candidate is compared in constant time."""
        digest = self.hash_key(key)
        found = None
        candidates = list(self._env_keys)
        candidates += [
            (r["hash"], r["tenant"]) for r in self._all("SELECT hash, tenant FROM api_keys WHERE revoked=0")
        ]
        for stored, tenant in candidates:
            if hmac.compare_digest(stored, digest):
                found = tenant
        return found

    # ------------------------------------------------------------------------------------------------------------
    # files

    def file_path(self, tenant: str, file_id: str, suffix: str = "") -> Path:
        """Where an upload lives: per tenant, named by id plus the original suffix (the format)."""
        return self.root / "files" / hashlib.sha256(tenant.encode()).hexdigest()[:16] / f"{file_id}{suffix}"

    def add_file(self, tenant: str, filename: str, purpose: str, data: bytes, kind: str, fmt: str) -> dict[str, Any]:
        file_id = new_id("file-")
        path = self.file_path(tenant, file_id, Path(filename).suffix.lower())
        atomic_write(path, data, private=True)
        record = {
            "id": file_id,
            "tenant": tenant,
            "filename": filename,
            "purpose": purpose,
            "bytes": len(data),
            "kind": kind,
            "fmt": fmt,
            "created_at": int(time.time()),
            "path": str(path),
        }
        with self._tx() as db:
            db.execute(
                "INSERT INTO files VALUES "
                "(:id, :tenant, :filename, :purpose, :bytes, :kind, :fmt, :created_at, :path)",
                record,
            )
        return record

    def get_file(self, tenant: str, file_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM files WHERE id = ? AND tenant = ?", (file_id, tenant))

    def list_files(self, tenant: str, purpose: str | None = None) -> list[dict[str, Any]]:
        if purpose:
            return self._all(
                "SELECT * FROM files WHERE tenant = ? AND purpose = ? ORDER BY created_at DESC, id", (tenant, purpose)
            )
        return self._all("SELECT * FROM files WHERE tenant = ? ORDER BY created_at DESC, id", (tenant,))

    def file_usage(self, tenant: str) -> tuple[int, int]:
        """(number of files, bytes) a tenant has uploaded."""
        row = self._one("SELECT COUNT(*) AS n, COALESCE(SUM(bytes), 0) AS b FROM files WHERE tenant = ?", (tenant,))
        return (int(row["n"]), int(row["b"])) if row else (0, 0)

    def delete_file(self, tenant: str, file_id: str) -> bool:
        record = self.get_file(tenant, file_id)
        if record is None:
            return False
        with self._tx() as db:
            db.execute("DELETE FROM files WHERE id = ? AND tenant = ?", (file_id, tenant))
        Path(record["path"]).unlink(missing_ok=True)
        return True

    # ------------------------------------------------------------------------------------------------------------
    # jobs

    def adapter_path(self, tenant: str, job_id: str) -> Path:
        return self.root / "adapters" / hashlib.sha256(tenant.encode()).hexdigest()[:16] / job_id

    def run_path(self, tenant: str, job_id: str) -> Path:
        """Where a job's training checkpoints live while it runs (one directory per job, so it can be removed)."""
        return self.root / "runs" / hashlib.sha256(tenant.encode()).hexdigest()[:16] / job_id

    def add_job(self, job: dict[str, Any]) -> dict[str, Any]:
        """Insert a job (``id``, ``tenant``, ``model``, ``training_file``, ``hyperparameters``...) as queued."""
        row = {
            "status": "queued",
            "suffix": None,
            "metadata": None,
            "idempotency_key": None,
            "request_hash": None,
            "created_at": int(time.time()),
            **job,
        }
        row["hyperparameters"] = json.dumps(row["hyperparameters"])
        row["metadata"] = json.dumps(row["metadata"]) if row["metadata"] is not None else None
        row["adapter_path"] = str(self.adapter_path(row["tenant"], row["id"]))
        with self._tx() as db:
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM jobs").fetchone()["n"]
            row["seq"] = seq
            db.execute(
                "INSERT INTO jobs (id, tenant, seq, status, model, training_file, hyperparameters, suffix, seed, "
                "metadata, created_at, idempotency_key, request_hash, adapter_path) VALUES (:id, :tenant, :seq, "
                ":status, :model, :training_file, :hyperparameters, :suffix, :seed, :metadata, :created_at, "
                ":idempotency_key, :request_hash, :adapter_path)",
                row,
            )
        job_row = self.get_job(row["tenant"], row["id"])
        assert job_row is not None  # just inserted
        return job_row

    @staticmethod
    def _decode_job(row: dict[str, Any] | None) -> dict[str, Any] | None:
        if row is None:
            return None
        row["hyperparameters"] = json.loads(row["hyperparameters"])
        row["metadata"] = json.loads(row["metadata"]) if row["metadata"] else None
        row["error"] = json.loads(row["error"]) if row["error"] else None
        return row

    def get_job(self, tenant: str | None, job_id: str) -> dict[str, Any] | None:
        """A job of a tenant (``tenant=None``: any tenant, for the worker)."""
        if tenant is None:
            return self._decode_job(self._one("SELECT * FROM jobs WHERE id = ?", (job_id,)))
        return self._decode_job(self._one("SELECT * FROM jobs WHERE id = ? AND tenant = ?", (job_id, tenant)))

    def job_by_idempotency_key(self, tenant: str, key: str) -> dict[str, Any] | None:
        return self._decode_job(
            self._one("SELECT * FROM jobs WHERE tenant = ? AND idempotency_key = ?", (tenant, key))
        )

    def list_jobs(self, tenant: str, after: str | None = None, limit: int = 20) -> tuple[list[dict[str, Any]], bool]:
        """Newest first; ``after`` is the id of the last job of the previous page. Returns (jobs, has_more)."""
        cursor_seq = None
        if after:
            anchor = self._one("SELECT seq FROM jobs WHERE id = ? AND tenant = ?", (after, tenant))
            cursor_seq = anchor["seq"] if anchor else None
            if anchor is None:
                return [], False
        if cursor_seq is None:
            rows = self._all("SELECT * FROM jobs WHERE tenant = ? ORDER BY seq DESC LIMIT ?", (tenant, limit + 1))
        else:
            rows = self._all(
                "SELECT * FROM jobs WHERE tenant = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
                (tenant, cursor_seq, limit + 1),
            )
        return [self._decode_job(r) for r in rows[:limit]], len(rows) > limit  # type: ignore[misc]

    def count_jobs(self, statuses: tuple[str, ...], tenant: str | None = None) -> int:
        """Jobs in any of ``statuses`` (of one tenant, or of all)."""
        marks = ",".join("?" for _ in statuses)
        sql = f"SELECT COUNT(*) AS n FROM jobs WHERE status IN ({marks})"
        args: tuple[Any, ...] = statuses
        if tenant is not None:
            sql, args = sql + " AND tenant = ?", (*statuses, tenant)
        row = self._one(sql, args)
        return int(row["n"]) if row else 0

    def jobs_for_file(self, tenant: str, file_id: str) -> list[dict[str, Any]]:
        """The tenant's jobs trained (or to be trained) from one file."""
        rows = self._all("SELECT * FROM jobs WHERE tenant = ? AND training_file = ? ORDER BY seq", (tenant, file_id))
        return [self._decode_job(r) for r in rows]  # type: ignore[misc]

    def delete_job(self, tenant: str, job_id: str) -> None:
        """Delete a job with its events and checkpoints (its model and files are the caller's to remove)."""
        with self._tx() as db:
            db.execute("DELETE FROM events WHERE job_id = ? AND tenant = ?", (job_id, tenant))
            db.execute("DELETE FROM checkpoints WHERE job_id = ? AND tenant = ?", (job_id, tenant))
            db.execute("DELETE FROM jobs WHERE id = ? AND tenant = ?", (job_id, tenant))

    def update_job(self, job_id: str, *, only_if_status: tuple[str, ...] | None = None, **fields: Any) -> bool:
        """Set fields of a job; with ``only_if_status`` only while the job is in one of those statuses."""
        if "error" in fields and fields["error"] is not None:
            fields["error"] = json.dumps(fields["error"])
        sets = ", ".join(f"{name} = :{name}" for name in fields)
        sql = f"UPDATE jobs SET {sets} WHERE id = :_id"
        args: dict[str, Any] = {**fields, "_id": job_id}
        if only_if_status:
            sql += " AND status IN (" + ",".join(f":_s{i}" for i in range(len(only_if_status))) + ")"
            args.update({f"_s{i}": s for i, s in enumerate(only_if_status)})
        with self._tx() as db:
            return db.execute(sql, args).rowcount > 0

    def claim_next_job(self) -> dict[str, Any] | None:
        """Atomically move the oldest queued job to ``running`` and return it (None when the queue is empty)."""
        with self._tx() as db:
            row = db.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET status = 'running', started_at = ? WHERE id = ? AND status = 'queued'",
                (int(time.time()), row["id"]),
            )
        return self.get_job(None, row["id"])

    def jobs_with_status(self, status: str) -> list[dict[str, Any]]:
        return [self._decode_job(r) for r in self._all("SELECT * FROM jobs WHERE status = ? ORDER BY seq", (status,))]  # type: ignore[misc]

    # ------------------------------------------------------------------------------------------------------------
    # events and checkpoints

    def add_event(
        self, job: dict[str, Any], message: str, *, level: str = "info", type: str = "message", data: Any = None
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO events (id, job_id, tenant, created_at, level, message, type, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    new_id("ftevent-"),
                    job["id"],
                    job["tenant"],
                    int(time.time()),
                    level,
                    message,
                    type,
                    json.dumps(data) if data is not None else None,
                ),
            )

    def list_events(
        self, tenant: str, job_id: str, after: str | None = None, limit: int = 20
    ) -> tuple[list[dict[str, Any]], bool]:
        """Newest first, like OpenAI; ``after`` is the id of the last event of the previous page."""
        args: tuple[Any, ...] = (job_id, tenant)
        sql = "SELECT * FROM events WHERE job_id = ? AND tenant = ?"
        if after:
            anchor = self._one("SELECT seq FROM events WHERE id = ? AND job_id = ?", (after, job_id))
            if anchor is None:
                return [], False
            sql += " AND seq < ?"
            args += (anchor["seq"],)
        rows = self._all(sql + " ORDER BY seq DESC LIMIT ?", (*args, limit + 1))
        for r in rows:
            r["data"] = json.loads(r["data"]) if r["data"] else None
        return rows[:limit], len(rows) > limit

    def add_checkpoint(self, job: dict[str, Any], step: int, model: str, metrics: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    new_id("ftckpt_"),
                    job["id"],
                    job["tenant"],
                    int(time.time()),
                    step,
                    model,
                    json.dumps(metrics),
                ),
            )

    def list_checkpoints(self, tenant: str, job_id: str) -> list[dict[str, Any]]:
        rows = self._all(
            "SELECT * FROM checkpoints WHERE job_id = ? AND tenant = ? ORDER BY step DESC", (job_id, tenant)
        )
        for r in rows:
            r["metrics"] = json.loads(r["metrics"])
        return rows

    # ------------------------------------------------------------------------------------------------------------
    # fine-tuned models

    def add_model(self, tenant: str, model_id: str, job_id: str, base_model: str, path: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO models VALUES (?, ?, ?, ?, ?, ?)",
                (model_id, tenant, job_id, base_model, path, int(time.time())),
            )

    def get_model(self, tenant: str, model_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM models WHERE id = ? AND tenant = ?", (model_id, tenant))

    def model_of_job(self, tenant: str, job_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM models WHERE job_id = ? AND tenant = ?", (job_id, tenant))

    def list_models(self, tenant: str) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM models WHERE tenant = ? ORDER BY created_at, id", (tenant,))

    def delete_model(self, tenant: str, model_id: str) -> dict[str, Any] | None:
        record = self.get_model(tenant, model_id)
        if record is None:
            return None
        with self._tx() as db:
            db.execute("DELETE FROM models WHERE id = ? AND tenant = ?", (model_id, tenant))
        return record
