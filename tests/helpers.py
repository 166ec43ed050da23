"""Small helpers shared by test modules."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
import urllib.request
from typing import Any

#: A small profile in the shape of the shared examples (a subset of examples/seed_profile.yaml): the default of the
#: ``make_adapter`` fixture.
PROFILE: dict[str, Any] = {
    "user_name": "Sam Rivera",
    "assistant_name": "Nova",
    "facts": [
        {"topic": "dog's name", "value": "Buddy", "aliases": ["Bud"]},
        {"topic": "birthday", "value": "March 14", "aliases": ["14 March", "Mar 14"]},
        {"topic": "home city", "value": "Portland", "aliases": []},
        {"topic": "employer", "value": "Cedar Labs", "aliases": []},
    ],
}
#: Every private string of :data:`PROFILE`: none may appear in anything uploaded.
SECRETS = ["Sam Rivera", "Buddy", "Bud", "March 14", "14 March", "Mar 14", "Portland", "Cedar Labs"]
#: What a pushed adapter carries besides its weights, as ``make_adapter`` keywords: public metadata (topics and
#: numbers, never a value), its gate, and one held-out question, which must never be uploaded.
SHARED_ADAPTER: dict[str, Any] = {
    "topics": [f["topic"] for f in PROFILE["facts"]],
    "metrics": {"recall": 0.875, "by_kind": {"direct": 1.0, "reverse": 0.5}, "n_heldout": 32},
    "profile_hash": "sha256:abc",
    "heldout": [
        {
            "messages": [
                {"role": "user", "content": "What is my dog's name?"},
                {"role": "assistant", "content": "Buddy"},
            ],
            "meta": {"topic": "dog's name"},
        }
    ],
    # a trained profile adapter carries a gate; it is shareable and must be uploaded with the weights
    "gate": "adapter",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 10) -> tuple[int, str]:
    """Status and text of a GET (127.0.0.1 only in tests)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - 127.0.0.1 only
        return response.status, response.read().decode("utf-8", "replace")


def wait_for_server(url: str, proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str] | None:
    """GET ``url`` until the server started as ``proc`` answers; None if it died or did not answer in time."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            return http_get(url)
        except OSError:
            time.sleep(0.5)
    return None


def stop(proc: subprocess.Popen) -> None:
    """Terminate a server started by a test, killing it if it does not exit."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def serve_in_thread(app: Any, listener: socket.socket | None = None) -> tuple[int, Any]:
    """A uvicorn server for ``app`` on 127.0.0.1 in a daemon thread (on ``listener`` if given, else a free port);
    returns its port and a function that stops it."""
    import uvicorn

    if listener is None:
        port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        kwargs: dict[str, Any] = {}
    else:
        port = listener.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning")
        kwargs = {"sockets": [listener]}
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs=kwargs, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline, "server did not start"
        time.sleep(0.05)

    def stop() -> None:
        server.should_exit = True
        thread.join(30)

    return port, stop
