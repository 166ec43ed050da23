"""Chat latency on this machine: model load cold vs cached, first-token latency and decode tokens/s.

Goals for the embedded default on 2 CPU cores: first token <= 300 ms, >= 30 tokens/s. The reference figure in the
same run is transformers' plain non-streaming ``generate`` on the same prompt, so the streaming overhead of
``ChatModel.stream`` shows as a ratio. Then the same questions through an adapter of the cpu preset's shape (r=16 on
all seven projections, random weights), with the adapter on and off (``use_adapter=False``: the gate's base route,
which must cost no more than the bare model), as ratios to the bare model's streaming rate. Run alone (no other heavy
job): ``python bench/chat_latency.py``.
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
    parser.add_argument("--no-adapter", dest="adapter", action="store_false", help="skip the adapter on/off figures")
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

    # The checkpoint's own layout (row-major weights): an explicit float32 load keeps it, where the answering load
    # stores float32 weights column-major (models._column_major_weights); the ratio shows what that layout buys.
    row_major = load_model(args.base_model, dtype="float32") if loaded.model.dtype == torch.float32 else None

    first_token: list[float] = []
    stream_rates: list[float] = []
    plain_rates: list[float] = []
    row_major_rates: list[float] = []
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

            def plain(inputs=inputs, model=loaded.model):
                with torch.inference_mode():
                    return model.generate(
                        **inputs, max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False
                    )

            start = time.perf_counter()
            out = on_generation_thread(plain)
            elapsed = time.perf_counter() - start
            plain_rates.append((out.shape[1] - inputs["input_ids"].shape[1]) / elapsed)
            if row_major is not None:
                start = time.perf_counter()
                out = on_generation_thread(lambda inputs=inputs: plain(inputs, row_major.model))
                elapsed = time.perf_counter() - start
                row_major_rates.append((out.shape[1] - inputs["input_ids"].shape[1]) / elapsed)

    adapter_rates = _adapter_rates(args, config) if args.adapter else {}

    p50 = statistics.median(first_token) * 1000
    p95 = sorted(first_token)[max(0, int(len(first_token) * 0.95) - 1)] * 1000
    stream_tps = statistics.median(stream_rates)
    plain_tps = statistics.median(plain_rates)
    print(f"first token: p50 {p50:.0f} ms, p95 {p95:.0f} ms (goal <= 300 ms)")
    print(f"decode (streaming ChatModel): {stream_tps:.1f} tok/s (goal >= 30)")
    ratio = stream_tps / plain_tps
    print(f"decode (reference plain generate): {plain_tps:.1f} tok/s; streaming/reference = {ratio:.2f}")
    if row_major_rates:
        row_tps = statistics.median(row_major_rates)
        print(
            f"decode (plain generate, the checkpoint's row-major float32 weights): {row_tps:.1f} tok/s; "
            f"column-major (the answering load) / row-major = {plain_tps / row_tps:.2f}"
        )
    for label, rate in adapter_rates.items():
        print(f"decode with an r=16 adapter, {label}: {rate:.1f} tok/s; / bare streaming: {rate / stream_tps:.2f}")


def _adapter_rates(args: argparse.Namespace, config: object) -> dict[str, float]:
    """Streaming tokens/s through a ChatModel carrying an r=16 all-projection adapter: on, and off per request."""
    import torch
    from peft import LoraConfig, get_peft_model

    from andraeus_core.adapter import Adapter, AdapterMeta
    from andraeus_core.chat import ChatModel, GenerationConfig
    from andraeus_core.models import load_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    torch.manual_seed(0)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=targets, init_lora_weights=False)
    with tempfile.TemporaryDirectory() as tmp:
        model = get_peft_model(load_model(args.base_model).model, lora)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 1e-3)  # small: the answers stay answers
        Adapter.write(tmp, model, AdapterMeta(base_model=args.base_model))
        chat = ChatModel(load_model(args.base_model), tmp, gate=False)  # a fresh copy: PEFT changes what it wraps
        chat.ask("warm up", GenerationConfig(max_new_tokens=4))
        rates: dict[str, list[float]] = {"adapter on": [], "adapter off (the base route)": []}
        tokenizer = chat.tokenizer
        for _ in range(args.repeats):
            for question in QUESTIONS:
                for label, use in (("adapter on", True), ("adapter off (the base route)", False)):
                    start = time.perf_counter()
                    first, text = None, ""
                    for piece in chat.stream([{"role": "user", "content": question}], config, use_adapter=use):
                        if first is None:
                            first = time.perf_counter() - start
                        text += piece
                    total = time.perf_counter() - start
                    n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
                    if n > 1 and total > (first or 0):
                        rates[label].append((n - 1) / (total - (first or 0)))
    return {label: statistics.median(r) for label, r in rates.items() if r}


if __name__ == "__main__":
    main()
