"""Chat latency on this machine: model load cold vs cached, first-token latency and decode tokens/s.

Goals for the embedded default on 2 CPU cores: first token <= 300 ms, >= 30 tokens/s. The reference figure in the
same run is transformers' plain non-streaming ``generate`` on the same prompt, so the streaming overhead of
``ChatModel.stream`` shows as a ratio. Run alone (no other heavy job): ``python bench/chat_latency.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

QUESTIONS = [
    "What is the capital of France?",
    "Give me three tips for a good night's sleep.",
    "Explain what a LoRA adapter is in one paragraph.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-model", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per answer (forced, for stable figures)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    from andraeus_core.chat import ChatModel, GenerationConfig, on_generation_thread
    from andraeus_core.models import load_model

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, model {args.base_model}")

    # Cold: a fresh models cache, so the embedded GGUF is converted; cached: the second load reads safetensors.
    with tempfile.TemporaryDirectory() as fresh:
        os.environ["ANDRAEUS_MODELS_DIR"] = fresh
        t0 = time.perf_counter()
        load_model(args.base_model)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        loaded = load_model(args.base_model)
        cached = time.perf_counter() - t0
    print(f"model load: cold {cold:.2f} s (GGUF conversion), cached {cached:.2f} s, ratio {cold / cached:.1f}x")

    chat = ChatModel(loaded)
    config = GenerationConfig(max_new_tokens=args.tokens)
    tokenizer = loaded.tokenizer
    chat.ask("warm up", GenerationConfig(max_new_tokens=4))

    first_token: list[float] = []
    stream_rates: list[float] = []
    plain_rates: list[float] = []
    for _ in range(args.repeats):
        for question in QUESTIONS:
            messages = [{"role": "user", "content": question}]
            start = time.perf_counter()
            first = None
            text = ""
            for piece in chat.stream(messages, config):
                if first is None:
                    first = time.perf_counter() - start
                text += piece
            total = time.perf_counter() - start
            n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            first_token.append(first or total)
            if n > 1 and total > (first or 0):
                stream_rates.append((n - 1) / (total - (first or 0)))

            # Reference: plain generate, no streamer, forced to the same length. It runs on the same generation
            # thread as ChatModel.stream: a second thread doing torch work would slow both (see chat._Scheduler).
            inputs = chat.prompt_ids(messages)

            def plain(inputs=inputs):
                with torch.inference_mode():
                    return loaded.model.generate(
                        **inputs, max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False
                    )

            start = time.perf_counter()
            out = on_generation_thread(plain)
            elapsed = time.perf_counter() - start
            plain_rates.append((out.shape[1] - inputs["input_ids"].shape[1]) / elapsed)

    p50 = statistics.median(first_token) * 1000
    p95 = sorted(first_token)[max(0, int(len(first_token) * 0.95) - 1)] * 1000
    stream_tps = statistics.median(stream_rates)
    plain_tps = statistics.median(plain_rates)
    print(f"first token: p50 {p50:.0f} ms, p95 {p95:.0f} ms (goal <= 300 ms)")
    print(f"decode (streaming ChatModel): {stream_tps:.1f} tok/s (goal >= 30)")
    ratio = stream_tps / plain_tps
    print(f"decode (reference plain generate): {plain_tps:.1f} tok/s; streaming/reference = {ratio:.2f}")


if __name__ == "__main__":
    main()
