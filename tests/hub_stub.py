"""A small local stand-in for the Hugging Face Hub HTTP API, served on 127.0.0.1 for tests.

It implements the endpoints the real ``huggingface_hub`` client calls to push and pull a model repo, with users,
tokens and per-repo visibility, so tests exercise the real client, real HTTP and real serialisation:

- ``GET  /api/whoami-v2``                                   who owns a token
- ``POST /api/repos/create``                                create a model repo (409 when it exists)
- ``GET  /api/models/{repo}[/revision/{rev}]``              repo info: ``private``, ``sha``, ``siblings``
- ``POST /api/validate-yaml``                               model card metadata check (always fine)
- ``POST /api/models/{repo}/preupload/{rev}``               upload modes (always ``"regular"``: no LFS/Xet needed)
- ``POST /api/models/{repo}/commit/{rev}``                  NDJSON commit with base64 file contents
- ``POST /api/models/{repo}/tag/{rev}``                      tag a commit (409 when the tag exists)
- ``GET  /api/models/{repo}/tree/{rev}[/{path}]``           file listing
- ``HEAD/GET /{repo}/resolve/{rev}/{path}``                 file download (``ETag``, ``X-Repo-Commit``)

Faults are injected with :meth:`HubStub.fail` (an HTTP status and/or a delay for the next N matching requests).
Use the ``hub_server`` fixture: it starts a stub, points ``HF_ENDPOINT`` at it, turns the test's offline mode off for
``huggingface_hub`` only, and registers two users (``alice`` with :data:`ALICE_TOKEN`, ``bob`` with
:data:`BOB_TOKEN`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

ALICE_TOKEN = "hf_stub_alice_0123456789abcdef"
BOB_TOKEN = "hf_stub_bob_fedcba9876543210"


@dataclass
class Commit:
    """One commit: its sha, message and the full file tree after it."""

    sha: str
    message: str
    files: dict[str, bytes]


@dataclass
class Repo:
    """A model repo on the stub Hub."""

    repo_id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def owner(self) -> str:
        return self.repo_id.split("/")[0]

    def head(self) -> Commit:
        return self.commits[-1]

    def at(self, revision: str) -> Commit | None:
        if revision in ("main", "HEAD"):
            return self.head()
        revision = self.tags.get(revision, revision)
        for commit in self.commits:
            if commit.sha == revision:
                return commit
        return None


@dataclass
class Fault:
    """Answer the next ``times`` requests matching ``path`` (a regex) and ``method``: ``status`` after ``delay``."""

    path: str
    status: int | None
    times: int
    method: str | None
    delay: float
    retry_after: str | None = None


@dataclass
class SeenRequest:
    """A request the stub received (tokens are kept so tests can check which token was sent)."""

    method: str
    path: str
    token: str | None
    status: int = 0


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()  # noqa: S324 - git-style content ids, not security


class HubStub:
    """A threaded local Hub. ``start()`` returns self; ``url`` is its endpoint; ``stop()`` shuts it down."""

    def __init__(self) -> None:
        self.users: dict[str, str] = {}  # token -> user name
        self.repos: dict[str, Repo] = {}
        self.requests: list[SeenRequest] = []
        self.uploads: list[tuple[str, str, bytes]] = []  # (repo_id, path, content) of every committed file
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> HubStub:
        stub = self

        class Handler(_Handler):
            hub = stub

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> HubStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the stub first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- set-up helpers ----------------------------------------------------------------------------------------
    def add_user(self, name: str, token: str) -> None:
        self.users[token] = name

    def add_repo(self, repo_id: str, *, private: bool, files: dict[str, bytes] | None = None) -> Repo:
        """Create a repo directly (e.g. an existing public repo, or one holding pickles)."""
        repo = Repo(repo_id, private)
        initial = {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}
        repo.commits.append(Commit(_sha1(repo_id.encode() + b"init"), "initial commit", initial))
        if files:
            self.commit(repo, dict(files), "add files")
        self.repos[repo_id] = repo
        return repo

    def commit(self, repo: Repo, changes: dict[str, bytes | None], message: str) -> Commit:
        tree = dict(repo.head().files) if repo.commits else {}
        for path, content in changes.items():
            if content is None:
                tree.pop(path, None)
            else:
                tree[path] = content
        digest = hashlib.sha1(repo.head().sha.encode() if repo.commits else b"")  # noqa: S324
        for path in sorted(tree):
            digest.update(path.encode() + b"\0" + tree[path])
        digest.update(message.encode() + str(len(repo.commits)).encode())
        commit = Commit(digest.hexdigest(), message, tree)
        repo.commits.append(commit)
        return commit

    def fail(
        self,
        path: str,
        status: int | None = 500,
        *,
        times: int = 1,
        method: str | None = None,
        delay: float = 0.0,
        retry_after: str | None = None,
    ) -> None:
        """Inject a fault: the next ``times`` requests whose path matches the regex ``path`` get ``status``.

        ``status=None`` with a ``delay`` only slows the matching requests down (for timeouts).
        """
        with self._lock:
            self.faults.append(Fault(path, status, times, method, delay, retry_after))

    def tokens_seen(self) -> set[str]:
        return {r.token for r in self.requests if r.token}

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if (
                    fault.times > 0
                    and (fault.method is None or fault.method == method)
                    and re.search(fault.path, path)
                ):
                    fault.times -= 1
                    return fault
        return None


_REPO = r"(?P<repo>[^/]+/[^/]+)"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"^/api/whoami-v2$"), "whoami"),
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/tag/(?P<rev>[^/]+)$"), "tag"),
    ("GET", re.compile(rf"^/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$"), "tree"),
    ("GET", re.compile(rf"^/api/models/{_REPO}/revision/(?P<rev>[^/]+)$"), "model_info"),
    ("GET", re.compile(rf"^/api/models/{_REPO}$"), "model_info"),
    ("GET", re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
    ("HEAD", re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
]


class _Handler(BaseHTTPRequestHandler):
    hub: HubStub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence the default stderr log
        pass

    # -- plumbing ----------------------------------------------------------------------------------------------
    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else None

    def _user(self) -> str | None:
        token = self._token()
        return self.hub.users.get(token) if token else None

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self._seen.status = status
        self.send_response(status)
        merged = {"Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}
        for key, value in merged.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _error(self, status: int, message: str, code: str | None = None, extra: dict[str, str] | None = None) -> None:
        headers = {"X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self._json(status, {"error": message}, headers)

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        path = split.path
        self._query = parse_qs(split.query)
        self._seen = SeenRequest(self.command, path, self._token())
        with self.hub._lock:
            self.hub.requests.append(self._seen)
        if self.command in ("POST", "PUT"):
            self._payload = self._body()
        fault = self.hub._take_fault(self.command, path)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.status is not None:
                extra = {"Retry-After": fault.retry_after} if fault.retry_after else None
                self._error(fault.status, f"injected fault {fault.status}", extra=extra)
                return
        for method, pattern, name in _ROUTES:
            match = pattern.match(path)
            if method == self.command and match:
                params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                getattr(self, f"_h_{name}")(**params)
                return
        self._error(404, f"stub Hub has no route for {self.command} {path}")

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _dispatch

    # -- access ------------------------------------------------------------------------------------------------
    def _readable_repo(self, repo_id: str) -> Repo | None:
        """The repo if this request may read it; otherwise answers 401/404 like the Hub and returns None."""
        repo = self.hub.repos.get(repo_id)
        if self._token() is not None and self._user() is None:
            self._error(401, "Invalid credentials in Authorization header")
            return None
        if repo is None or (repo.private and self._user() != repo.owner):
            # The Hub does not reveal whether a private repo exists.
            self._error(404, "Repository not found", "RepoNotFound")
            return None
        return repo

    def _writable_repo(self, repo_id: str) -> Repo | None:
        user = self._user()
        if user is None:
            self._error(401, "Invalid credentials in Authorization header")
            return None
        repo = self._readable_repo(repo_id)
        if repo is None:
            return None
        if repo.owner != user:
            self._error(403, f"You don't have the rights to write to {repo_id}")
            return None
        return repo

    # -- endpoints ---------------------------------------------------------------------------------------------
    def _h_whoami(self) -> None:
        user = self._user()
        if user is None:
            self._error(401, "Invalid credentials in Authorization header")
            return
        self._json(
            200,
            {
                "type": "user",
                "id": _sha1(user.encode())[:24],
                "name": user,
                "fullname": user.title(),
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "stub", "role": "write"}},
            },
        )

    def _h_create_repo(self) -> None:
        user = self._user()
        if user is None:
            self._error(401, "Invalid credentials in Authorization header")
            return
        body = json.loads(self._payload or b"{}")
        owner = body.get("organization") or user
        repo_id = f"{owner}/{body['name']}"
        if body.get("type") not in (None, "model"):
            self._error(400, "the stub Hub only hosts model repos")
            return
        if owner != user:
            self._error(403, f"You don't have the rights to create a repo under {owner}")
            return
        url = f"{self.hub.url}/{repo_id}"
        with self.hub._lock:
            if repo_id in self.hub.repos:
                # The Hub's 409 body carries the existing repo's url (the client reads it with exist_ok=True).
                message = "You already created this model repo"
                self._json(409, {"error": message, "url": url}, {"X-Error-Message": message})
                return
            private = body.get("visibility") == "private" or bool(body.get("private"))
            self.hub.add_repo(repo_id, private=private)
        self._json(200, {"url": url, "name": repo_id, "id": _sha1(repo_id.encode())[:24]})

    def _h_validate_yaml(self) -> None:
        self._json(200, {"errors": [], "warnings": []})

    def _info(self, repo: Repo, commit: Commit) -> dict[str, object]:
        return {
            "_id": _sha1(repo.repo_id.encode())[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.owner,
            "sha": commit.sha,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "tags": [],
            "downloads": 0,
            "likes": 0,
            "lastModified": "2026-01-01T00:00:00.000Z",
            "createdAt": "2026-01-01T00:00:00.000Z",
            "siblings": [{"rfilename": name} for name in sorted(commit.files)],
        }

    def _h_model_info(self, repo: str, rev: str = "main") -> None:
        found = self._readable_repo(repo)
        if found is None:
            return
        commit = found.at(rev)
        if commit is None:
            self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            return
        self._json(200, self._info(found, commit))

    def _h_tree(self, repo: str, rev: str, path: str = "") -> None:
        found = self._readable_repo(repo)
        if found is None:
            return
        commit = found.at(rev)
        if commit is None:
            self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            return
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        recursive = self._query.get("recursive", ["false"])[0].lower() in ("1", "true")
        entries: list[dict[str, object]] = []
        folders: set[str] = set()
        for name, content in sorted(commit.files.items()):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix) :]
            if "/" in rest and not recursive:
                folders.add(prefix + rest.split("/")[0])
                continue
            entries.append({"type": "file", "oid": _sha1(content), "size": len(content), "path": name})
        entries = [{"type": "directory", "oid": _sha1(f.encode()), "size": 0, "path": f} for f in sorted(folders)] + (
            entries
        )
        self._json(200, entries)

    def _h_preupload(self, repo: str, rev: str) -> None:
        found = self._writable_repo(repo)
        if found is None:
            return
        body = json.loads(self._payload or b"{}")
        files = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
            for f in body.get("files", [])
        ]
        self._json(200, {"files": files, "commitOid": found.head().sha})

    def _h_commit(self, repo: str, rev: str) -> None:
        found = self._writable_repo(repo)
        if found is None:
            return
        if rev != "main":
            self._error(400, "the stub Hub only commits to main")
            return
        message = ""
        changes: dict[str, bytes | None] = {}
        for line in (self._payload or b"").splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value", {})
            if key == "header":
                message = value.get("summary", "")
            elif key == "file":
                if value.get("encoding") != "base64":
                    self._error(400, "file entries must be base64")
                    return
                changes[value["path"]] = base64.b64decode(value["content"])
            elif key in ("deletedFile", "deletedFolder"):
                changes[value["path"]] = None
            else:
                self._error(400, f"the stub Hub does not support '{key}' entries (LFS/Xet)")
                return
        with self.hub._lock:
            commit = self.hub.commit(found, changes, message)
            for path, content in changes.items():
                if content is not None:
                    self.hub.uploads.append((repo, path, content))
        self._json(
            200,
            {"success": True, "commitOid": commit.sha, "commitUrl": f"{self.hub.url}/{repo}/commit/{commit.sha}"},
        )

    def _h_tag(self, repo: str, rev: str) -> None:
        found = self._writable_repo(repo)
        if found is None:
            return
        commit = found.at(rev)
        if commit is None:
            self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            return
        tag = json.loads(self._payload or b"{}").get("tag", "")
        with self.hub._lock:
            if tag in found.tags:
                self._error(409, f"Tag {tag} already exists")
                return
            found.tags[tag] = commit.sha
        self._json(200, {"name": tag})

    def _h_resolve(self, repo: str, rev: str, path: str) -> None:
        found = self._readable_repo(repo)
        if found is None:
            return
        commit = found.at(rev)
        if commit is None:
            self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            return
        if path not in commit.files:
            self._error(404, "Entry not found", "EntryNotFound", extra={"X-Repo-Commit": commit.sha})
            return
        content = commit.files[path]
        headers = {
            "Content-Type": "application/octet-stream",
            "ETag": f'"{_sha1(content)}"',
            "X-Repo-Commit": commit.sha,
            "Accept-Ranges": "bytes",
        }
        self._send(200, content, headers)


@pytest.fixture
def hub_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStub]:
    """A running :class:`HubStub` with users ``alice`` and ``bob``; ``HF_ENDPOINT`` points at it.

    The test's offline switch is lifted for ``huggingface_hub`` (which reads it once, at import) so the real client
    talks to 127.0.0.1; nothing else is reachable from tests anyway.
    """
    from huggingface_hub import close_session, constants
    from huggingface_hub.utils import _http

    stub = HubStub().start()
    stub.add_user("alice", ALICE_TOKEN)
    stub.add_user("bob", BOB_TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", stub.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", stub.url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", stub.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    try:
        yield stub
    finally:
        stub.stop()
        # The shared client keeps connections to this stub's port (and maybe a test's short timeout): start afresh.
        _http.set_client_factory(_http.default_client_factory)
        close_session()
