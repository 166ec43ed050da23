"""A bounded attacker against the REST API on 127.0.0.1 (issue 15): malformed, oversized and foreign requests.

Prints the figures the hardening issue asks for: requests tried, 500s (and broken connections) seen, goal 0; the
slowest rejection, goal < 1 s; and a chat's median latency alone and while a stream that never reads is open, goal
unchanged within noise. Every request goes over one keep-alive connection, so a rejection that broke the
connection would show as an error on the next one. The server's sockets get small send buffers, so the
never-reading stream backs up after ~100 KB as it would after a few MB on a real network.

``python bench/adversarial.py [--base-model smollm2-135m] [--rounds 3]``; tests/test_adversarial.py runs it on
tiny-random (``attack`` against a server from ``serve``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

KEY_A = "adversary-key-a-0123456789abcdef"
KEY_B = "adversary-key-b-0123456789abcdef"


def serve(settings: Any) -> tuple[str, Callable[[], None]]:
    """``create_app(settings)`` under uvicorn on 127.0.0.1 in a thread; returns its URL and a stop function."""
    import uvicorn

    from api.main import create_app

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)  # accepted sockets inherit it
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)

    def stop() -> None:
        server.should_exit = True
        thread.join(30)
        listener.close()

    return f"http://127.0.0.1:{port}", stop


def _cases(model: str, file_id: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(method, path, httpx keyword arguments) of requests every one of which must be refused with a 4xx."""
    hi = [{"role": "user", "content": "hi"}]
    chat = {"model": model, "messages": hi, "max_tokens": 4}
    for extra in (
        {"stop": "x" * 5000},
        {"stop": ["a", "b", "c", "d", "e"]},
        {"seed": 2**64},
        {"seed": -(2**64)},
        {"max_tokens": 100_000},
        {"temperature": 50},
        {"n": 3},
        {"messages": hi * 257},
        {"messages": [{"role": "user", "content": "x" * 100_001}]},
        {"messages": [{"role": "user", "content": "y" * 60_000}] * 2},
        {"messages": [{"role": "user", "content": "hello " * 16_000}]},  # past a small model's context
        {"messages": [{"role": "assistant", "content": "hi"}]},
        {"messages": []},
        {"model": "/etc"},
        {"model": "x" * 10_000},
        {"metadata": {f"k{i}": "v" for i in range(17)}},
    ):
        yield "POST", "/v1/chat/completions", {"json": {**chat, **extra}}
    yield "POST", "/v1/chat/completions", {"content": b'{"seed": ' + b"9" * 5000 + b"}", "headers": _json()}
    yield "POST", "/v1/chat/completions", {"content": b"[" * 5000, "headers": _json()}
    yield "POST", "/v1/chat/completions", {"content": b"{", "headers": _json()}
    yield "POST", "/v1/chat/completions", {"content": b"", "headers": _json()}
    uploads = [
        ("deep.jsonl", b"[" * 5000 + b"\n"),
        ("num.json", b'{"user_name": "Sam", "facts": [{"topic": "dog", "value": ' + b"9" * 5000 + b"}]}"),
        ("x" * 300 + ".jsonl", b'{"messages": []}\n'),
        ("empty.jsonl", b""),
        ("none.jsonl", b'{"messages": []}\n'),
        ("user.jsonl", b'{"messages": [{"role": "user", "content": "hi"}]}\n'),
        ("bot.jsonl", b'{"messages": [{"role": "assistant", "content": "hi"}]}\n'),
        ("keys.json", json.dumps({f"k{i}": i for i in range(65_000)}, separators=(",", ":")).encode()),
        ("big.yaml", b"user_name: Sam\nfacts:\n" + b"  - {topic: t, value: v}\n" * 45_000),
        ("evil.exe", b"MZ\x90\x00"),
        ("../../etc/passwd.csv", b"topic,value\n"),
    ]
    for name, data in uploads:
        yield "POST", "/v1/files", {"files": {"file": (name, data)}, "data": {"purpose": "fine-tune"}}
    yield "POST", "/v1/files", {"files": {"file": ("p.csv", b"topic,value\ndog,Rex\n")}, "data": {"purpose": "x"}}
    yield "POST", "/v1/files", {"content": _chunks(17 * 1024 * 1024), "headers": {"Content-Type": "text/plain"}}
    job = {"model": model, "training_file": file_id}
    for extra in (
        {"metadata": {f"k{i}": "v" for i in range(17)}},
        {"metadata": {"k": "v" * 8_000_000}},
        {"metadata": {"k" * 65: "v"}},
        {"seed": 2**64},
        {"suffix": "../x"},
        {"model": "/etc"},
        {"model": "some-user/any-repo"},
        {"training_file": "file-doesnotexist"},
        {"hyperparameters": {"n_epochs": 10**6}},
    ):
        yield "POST", "/v1/fine_tuning/jobs", {"json": {**job, **extra}}
    yield "GET", "/v1/fine_tuning/jobs/ftjob-nope/evaluation?baselines=base,base,base", {}
    yield "GET", "/v1/fine_tuning/jobs/ftjob-nope/evaluation?baselines=" + "x" * 5000, {}
    yield "DELETE", "/v1/fine_tuning/jobs/ftjob-nope", {}
    yield "GET", "/v1/models/ft:x:y:ftjob-nope/content", {}
    yield "GET", "/v1/nothing-here", {}
    yield "GET", "/v1/files/" + "f" * 5000, {}
    yield "GET", "/v1/fine_tuning/jobs?limit=100000", {}
    yield "GET", "/v1/files", {"headers": {"Authorization": "Bearer wrong-key"}}
    yield "GET", "/v1/files", {"headers": {"Authorization": ""}}
    yield "GET", f"/v1/files/{file_id}", {"headers": {"Authorization": f"Bearer {KEY_B}"}}  # another tenant's


def _json() -> dict[str, str]:
    return {"Content-Type": "application/json"}


def _chunks(total: int) -> Iterator[bytes]:
    """A body with no Content-Length (sent chunked)."""
    block = b"x" * 65536
    for _ in range(total // len(block) + 1):
        yield block


def _never_read(url: str, key: str, body: dict[str, Any]) -> socket.socket:
    """Send a streamed chat request and never read the answer (the attacker's stream)."""
    port = int(url.rsplit(":", 1)[1])
    data = json.dumps({**body, "stream": True}).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    sock.sendall(head.encode() + data)
    return sock


def attack(url: str, model: str, *, rounds: int = 1, latency_samples: int = 5) -> dict[str, Any]:
    """Run the attack against a server keyed with ``alice=KEY_A,bob=KEY_B``; return the figures.

    Returns:
        ``requests``, ``server_errors`` (5xx and broken connections, as ``(method, path, what)``), ``accepted`` (a
        request that should have been refused and was not), ``slowest_rejection_s`` (and ``slowest_request``),
        ``chat_alone_s`` and ``chat_beside_stalled_stream_s`` (median latency of a short chat).
    """
    import httpx

    figures: dict[str, Any] = {"requests": 0, "server_errors": [], "accepted": []}
    rejections: list[tuple[float, str]] = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=60) as c:
        upload = c.post(
            "/v1/files", files={"file": ("p.csv", b"topic,value\ndog,Rex\n")}, data={"purpose": "fine-tune"}
        )
        upload.raise_for_status()
        file_id = upload.json()["id"]
        # Load the model first: its cold load (seconds) is no rejection's cost.
        warm = c.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
        warm.raise_for_status()
        for _ in range(rounds):
            for method, path, kwargs in _cases(model, file_id):
                shown = path if len(path) <= 60 else path[:57] + "..."
                figures["requests"] += 1
                started = time.perf_counter()
                try:
                    r = c.request(method, path, **kwargs)
                except httpx.HTTPError as exc:
                    figures["server_errors"].append((method, shown, type(exc).__name__))
                    continue
                seconds = time.perf_counter() - started
                if r.status_code >= 500:
                    figures["server_errors"].append((method, shown, r.status_code))
                elif r.status_code < 400 or set(r.json()) != {"error"}:
                    figures["accepted"].append((method, shown, r.status_code))
                else:
                    rejections.append((seconds, f"{method} {shown} -> {r.status_code}"))
            assert c.get("/healthz").status_code == 200
            figures["requests"] += 1
    rejections.sort(reverse=True)
    figures["slowest_rejection_s"], figures["slowest_request"] = rejections[0]
    figures["slowest_rejections"] = rejections[:5]

    quick = {"model": model, "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 16}

    def chat_latency() -> float:
        times = []
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY_B}"}, timeout=120) as c:
            for _ in range(latency_samples):
                started = time.perf_counter()
                r = c.post("/v1/chat/completions", json=quick)
                figures["requests"] += 1
                if r.status_code != 200:
                    figures["server_errors"].append(("POST", "/v1/chat/completions", r.status_code))
                times.append(time.perf_counter() - started)
        return statistics.median(times)

    chat_latency()  # warm up
    figures["chat_alone_s"] = chat_latency()
    stalled = _never_read(url, KEY_A, {**quick, "max_tokens": 4096})
    figures["requests"] += 1
    try:
        time.sleep(2.0)  # it generates until its reader is a buffer behind, then pauses
        figures["chat_beside_stalled_stream_s"] = chat_latency()
    finally:
        stalled.close()
    return figures


def report(figures: dict[str, Any]) -> str:
    lines = [
        f"requests tried: {figures['requests']}",
        f"500s or broken connections: {len(figures['server_errors'])} (goal 0) {figures['server_errors'] or ''}",
        f"wrongly accepted: {len(figures['accepted'])} {figures['accepted'] or ''}",
        f"slowest rejection: {figures['slowest_rejection_s'] * 1000:.0f} ms ({figures.get('slowest_request')}; "
        "goal < 1 s)",
        f"chat latency (median): alone {figures['chat_alone_s'] * 1000:.0f} ms, beside a never-reading stream "
        f"{figures['chat_beside_stalled_stream_s'] * 1000:.0f} ms "
        f"({figures['chat_beside_stalled_stream_s'] / figures['chat_alone_s']:.2f}x)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-model", default="smollm2-135m")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("ANDRAEUS_HOME", tempfile.mkdtemp(prefix="andraeus-adversarial-"))
    from api.deps import ApiSettings

    url, stop = serve(ApiSettings(api_keys=f"alice={KEY_A},bob={KEY_B}", workers=0))
    try:
        print(report(attack(url, args.base_model, rounds=args.rounds)))
    finally:
        stop()


if __name__ == "__main__":
    main()
