"""Load on the REST API: 1/4/8/16 concurrent streaming chat clients on loopback, batched and one at a time.

For each number of clients the same run measures both generation paths on the same loaded model: the batched one
(answers arriving together are decoded in one batch, ``andraeus_core.chat._Batch``) and the serialised one (answers
take turns on the one generation thread, ``max_batch=1``). Each client sends streamed requests back to back for a
bounded time; the figures are completion tokens/s of all clients together, p50/p95 latency to the first text (time
to first token as a client sees it, queueing included), each client's own tokens/s (median over clients), requests
and errors. Greedy answers, ``--max-tokens`` each. Run alone, under the heavy lock:
``flock /tmp/andraeus-heavy.lock python bench/api_load.py --clients 1,4,8,16 --seconds 20``.
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
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

QUESTIONS = [
    "What is the capital of France?",
    "Give me one tip for a good night's sleep.",
    "Name a primary colour.",
    "What is 2 + 2?",
    "Write one sentence about the sea.",
    "Why is the sky blue?",
    "Suggest a name for a cat.",
    "What does a baker do?",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def _load(url: str, headers: dict[str, str], model: str, clients: int, seconds: float, max_tokens: int) -> dict:
    """``clients`` threads streaming requests back to back for ``seconds``; the figures of the whole run."""
    import httpx

    first_token: list[float] = []
    per_client = [0] * clients
    requests = [0]
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def one(http: Any, i: int, n: int) -> None:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": QUESTIONS[(i * 3 + n) % len(QUESTIONS)]}],
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        started = time.perf_counter()
        first: float | None = None
        tokens = 0
        with http.stream("POST", url, headers=headers, json=body) as r:
            if r.status_code != 200:
                with lock:
                    errors.append(str(r.status_code))
                return
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    with lock:
                        errors.append(chunk["error"].get("code") or "error")
                    return
                choices = chunk.get("choices") or []
                if first is None and choices and (choices[0].get("delta") or {}).get("content"):
                    first = time.perf_counter() - started
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
        with lock:
            requests[0] += 1
            per_client[i] += tokens
            if first is not None:
                first_token.append(first)

    def client(i: int) -> None:
        with httpx.Client(timeout=300) as http:
            n = 0
            while time.perf_counter() < stop_at:
                try:
                    one(http, i, n)
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(type(exc).__name__)
                n += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {
        "clients": clients,
        "requests": requests[0],
        "errors": errors,
        "tokens_per_s": sum(per_client) / wall,
        "client_tokens_per_s": statistics.median(c / wall for c in per_client),
        "ttft_p50": _percentile(first_token, 0.5),
        "ttft_p95": _percentile(first_token, 0.95),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-model", default="smollm2-135m")
    parser.add_argument("--clients", default="1,4,8,16", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--seconds", type=float, default=20.0, help="per number of clients and path")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--max-batch", type=int, default=None, help="rows per batch (default: the library's)")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]

    os.environ.setdefault("ANDRAEUS_HOME", tempfile.mkdtemp(prefix="andraeus-bench-"))
    import uvicorn

    from andraeus_core import Service, Store
    from andraeus_core.chat import default_max_batch
    from api.deps import ApiSettings
    from api.main import create_app

    key = "bench-key-0123456789abcdef"
    service = Service(Store(), workers=0)
    settings = ApiSettings(api_keys=key, workers=0, max_pending_chats=max(counts) + 1)
    app = create_app(settings, service)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {key}"}

    # Loads the model (once, cached by the service) and warms it up; then both paths use that same object.
    _load(url, headers, args.base_model, 1, 0.1, 4)
    chat = service.chat_model("default", args.base_model)
    batched = args.max_batch or default_max_batch()
    print(f"model {args.base_model}, {args.seconds:.0f}s per cell, max_tokens {args.max_tokens}, greedy, streaming")
    print(f"batched path: up to {batched} rows per batch; serialised path: one answer at a time (max_batch=1)")
    print("| clients | path | requests | tokens/s (all) | per client | first text p50 | first text p95 | errors |")
    print("|" + "---|" * 8)
    for clients in counts:
        for name, rows in (("serialised", 1), ("batched", batched)):
            chat.max_batch = rows
            r = _load(url, headers, args.base_model, clients, args.seconds, args.max_tokens)
            print(
                f"| {clients} | {name} | {r['requests']} | {r['tokens_per_s']:.1f} | {r['client_tokens_per_s']:.1f} | "
                f"{r['ttft_p50'] * 1000:.0f} ms | {r['ttft_p95'] * 1000:.0f} ms | {len(r['errors'])} |",
                flush=True,
            )
            if r["errors"]:
                print("  errors:", ", ".join(sorted(set(r["errors"]))))
    server.should_exit = True
    thread.join(10)


if __name__ == "__main__":
    main()
