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


#: "per client": a client's completion tokens over the cell's wall time (its waits and first-text latency included);
#: "decode": the median request's tokens/s after its first text, the rate its text streams at once it has begun.
HEADER = (
    "| clients | path | requests | tokens/s (all) | per client | decode, per request | first text p50 "
    "| first text p95 | errors |"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def _load(url: str, headers: dict[str, str], models: list[str], clients: int, seconds: float, max_tokens: int) -> dict:
    """``clients`` threads streaming requests back to back for ``seconds`` (client i asks ``models[i % n]``); the
    figures of the whole run."""
    import httpx

    first_token: list[float] = []
    decode: list[float] = []  # each request's tokens/s after its first text (the streaming rate a reader sees)
    per_client = [0] * clients
    requests = [0]
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def one(http: Any, i: int, n: int) -> None:
        body = {
            "model": models[i % len(models)],
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
        total = time.perf_counter() - started
        with lock:
            requests[0] += 1
            per_client[i] += tokens
            if first is not None:
                first_token.append(first)
                if tokens > 1 and total > first:
                    decode.append((tokens - 1) / (total - first))

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
        "decode_p50": _percentile(decode, 0.5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-model", default="smollm2-135m")
    parser.add_argument("--clients", default="1,4,8,16", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--seconds", type=float, default=20.0, help="per number of clients and path")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--max-batch", type=int, default=None, help="rows per batch (default: the library's)")
    parser.add_argument(
        "--adapters", type=int, default=4, help="fine-tuned models for the mixed-adapter cells (0: none)"
    )
    parser.add_argument("--mixed-clients", default="8", help="client counts of the mixed-adapter cells")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    mixed_counts = [int(c) for c in args.mixed_clients.split(",")] if args.adapters else []

    os.environ.setdefault("ANDRAEUS_HOME", tempfile.mkdtemp(prefix="andraeus-bench-"))
    import uvicorn

    from andraeus_core import Service, Store
    from andraeus_core.chat import default_max_batch
    from api.deps import ApiSettings
    from api.main import create_app

    key = "bench-key-0123456789abcdef"
    service = Service(Store(), workers=0)
    settings = ApiSettings(api_keys=f"bench={key}", workers=0, max_pending_chats=max(counts + mixed_counts) + 1)
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
    _load(url, headers, [args.base_model], 1, 0.1, 4)
    chat = service.chat_model("bench", args.base_model)
    batched = args.max_batch or default_max_batch()
    print(f"model {args.base_model}, {args.seconds:.0f}s per cell, max_tokens {args.max_tokens}, greedy, streaming")
    print(f"batched path: up to {batched} rows per batch; serialised path: one answer at a time (max_batch=1)")
    print(HEADER)
    print("|" + "---|" * 9)
    for clients in counts:
        for name, rows in (("serialised", 1), ("batched", batched)):
            chat.max_batch = rows
            r = _load(url, headers, [args.base_model], clients, args.seconds, args.max_tokens)
            print(
                f"| {clients} | {name} | {r['requests']} | {r['tokens_per_s']:.1f} | {r['client_tokens_per_s']:.1f} | "
                f"{r['decode_p50']:.1f} | {r['ttft_p50'] * 1000:.0f} ms | {r['ttft_p95'] * 1000:.0f} ms | "
                f"{len(r['errors'])} |",
                flush=True,
            )
            if r["errors"]:
                print("  errors:", ", ".join(sorted(set(r["errors"]))))
    if args.adapters:
        models = _adapters(service, args.base_model, args.adapters)
        chats = [service.chat_model("bench", m) for m in models]
        _load(url, headers, models, len(models), 0.1, 4)  # loads each into the base model's AdapterHost
        print(f"\nmixed adapters: {len(models)} fine-tuned models on one base (the seed recipe's shape: r=64, all")
        print("projections; random weights, no gate), client i asks model i mod n")
        print(HEADER)
        print("|" + "---|" * 9)
        for clients in mixed_counts:
            for name, rows in (("serialised", 1), ("batched", batched)):
                for chat in chats:
                    chat.max_batch = rows
                r = _load(url, headers, models, clients, args.seconds, args.max_tokens)
                print(
                    f"| {clients} | {name} | {r['requests']} | {r['tokens_per_s']:.1f} | "
                    f"{r['client_tokens_per_s']:.1f} | {r['decode_p50']:.1f} | {r['ttft_p50'] * 1000:.0f} ms | "
                    f"{r['ttft_p95'] * 1000:.0f} ms | {len(r['errors'])} |",
                    flush=True,
                )
                if r["errors"]:
                    print("  errors:", ", ".join(sorted(set(r["errors"]))))
    server.should_exit = True
    thread.join(10)


def _adapters(service: Any, base_model: str, n: int) -> list[str]:
    """``n`` adapters of the seed recipe's shape on ``base_model`` (random LoRA weights: throughput does not depend
    on what they learnt), registered as the bench tenant's fine-tuned models; returns their model ids."""
    import torch
    from peft import LoraConfig, get_peft_model

    from andraeus_core.adapter import Adapter, AdapterMeta
    from andraeus_core.models import load_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    ids = []
    for i in range(n):
        torch.manual_seed(i)
        lora = LoraConfig(r=64, lora_alpha=128, target_modules=targets, init_lora_weights=False)
        model = get_peft_model(load_model(base_model).model, lora)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 1e-3)  # small: the answers stay answers
        path = service.store.root / "bench-adapters" / f"a{i}"
        Adapter.write(path, model, AdapterMeta(base_model=base_model))
        model_id = f"ft:{base_model}:bench:a{i}"
        service.store.add_model("bench", model_id, f"bench-job-{i}", base_model, str(path))
        ids.append(model_id)
    return ids


if __name__ == "__main__":
    main()
