"""Load on the REST API: N concurrent chat clients on loopback for a bounded time against the default model.

Prints p50/p95 request latency, completion tokens/s (all clients together), requests and errors. The reference in
the same run is the same questions answered by ``ChatModel.reply`` in-process, one at a time, so the HTTP + queueing
overhead shows as a ratio. Generations take turns on one thread (one forward pass at a time on a shared CPU), so
latency grows with N while total tokens/s stays near the in-process figure. Run alone, under the heavy lock:
``flock /tmp/andraeus-heavy.lock python bench/api_load.py --clients 4 --seconds 30``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

QUESTIONS = [
    "What is the capital of France?",
    "Give me one tip for a good night's sleep.",
    "Name a primary colour.",
    "What is 2 + 2?",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-model", default="smollm2-135m")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()

    os.environ.setdefault("ANDRAEUS_HOME", tempfile.mkdtemp(prefix="andraeus-bench-"))
    import httpx
    import uvicorn

    from andraeus_core import GenerationConfig, Service, Store, load_chat_model
    from api.deps import ApiSettings
    from api.main import create_app

    key = "bench-key-0123456789abcdef"
    # Reference: in-process, one at a time.
    chat = load_chat_model(args.base_model, cached=True)
    config = GenerationConfig(max_new_tokens=args.max_tokens)
    chat.reply([{"role": "user", "content": "warm up"}], config)
    ref_tokens, ref_start, ref_lat = 0, time.perf_counter(), []
    while time.perf_counter() - ref_start < min(10.0, args.seconds / 3):
        q = QUESTIONS[len(ref_lat) % len(QUESTIONS)]
        t = time.perf_counter()
        answer = chat.reply([{"role": "user", "content": q}], config)
        ref_lat.append(time.perf_counter() - t)
        ref_tokens += len(chat.tokenizer(answer, add_special_tokens=False)["input_ids"])
    ref_tps = ref_tokens / (time.perf_counter() - ref_start)

    app = create_app(ApiSettings(api_keys=key, workers=0), Service(Store(), workers=0))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {key}"}

    latencies: list[float] = []
    tokens = [0]
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + args.seconds

    def client(i: int) -> None:
        with httpx.Client(timeout=300) as http:
            n = 0
            while time.perf_counter() < stop_at:
                body = {
                    "model": args.base_model,
                    "messages": [{"role": "user", "content": QUESTIONS[(i + n) % len(QUESTIONS)]}],
                    "max_tokens": args.max_tokens,
                }
                n += 1
                t = time.perf_counter()
                try:
                    r = http.post(url, headers=headers, json=body)
                    ok = r.status_code == 200
                except httpx.HTTPError as exc:
                    ok, r = False, None
                    with lock:
                        errors.append(type(exc).__name__)
                elapsed = time.perf_counter() - t
                with lock:
                    if ok and r is not None:
                        latencies.append(elapsed)
                        tokens[0] += r.json()["usage"]["completion_tokens"]
                    elif r is not None:
                        errors.append(str(r.status_code))

    start = time.perf_counter()
    workers = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - start
    server.should_exit = True
    thread.join(10)

    print(f"model {args.base_model}, {args.clients} clients, {args.seconds:.0f}s, max_tokens {args.max_tokens}")
    print(
        f"reference (in-process, sequential): {len(ref_lat)} answers, p50 {statistics.median(ref_lat) * 1000:.0f} ms, "
        f"{ref_tps:.1f} tokens/s"
    )
    tps = tokens[0] / wall
    print(
        f"API over HTTP: {len(latencies)} requests, {len(errors)} errors, "
        f"p50 {_percentile(latencies, 0.5) * 1000:.0f} ms, p95 {_percentile(latencies, 0.95) * 1000:.0f} ms, "
        f"{tps:.1f} tokens/s ({tps / ref_tps:.2f}× the in-process reference)"
    )
    if errors:
        print("errors:", ", ".join(sorted(set(errors))))


if __name__ == "__main__":
    main()
