"""Export faithfulness: does the merged model / the GGUF answer the adapter's held-out questions like the adapter?

Trains (or reuses) an adapter on the embedded default, exports it merged and as GGUF f16 and q8_0, loads each back
(transformers; the GGUF through transformers' GGUF loader, its own tokenizer included) and asks every system the
adapter's held-out questions greedily, under the adapter's system prompt, without the gate (an export carries no
gate: the comparison is with the adapter alone). With ``--llama-cpp`` each GGUF is also run in llama.cpp itself
(llama-cpp-python, built from source by ``make llama-cpp``; not part of ``make install``), with the chat template the
GGUF carries. Prints export time, size, recall / abstention / over-trigger with n and a Wilson 95% interval, the
share of answers identical to the adapter's, and generation speed.

    python bench/export.py                       # train on examples/seed_profile.yaml (cpu preset), then compare
    python bench/export.py --adapter DIR         # reuse a trained adapter
    python bench/export.py --llama-cpp           # also run each GGUF in llama.cpp (needs `make llama-cpp`)
    python bench/export.py --quick               # smoke run on tiny-random (seconds; figures meaningless)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _answers(model: Any, tokenizer: Any, conversations: list[list[dict[str, str]]]) -> tuple[list[str], float, int]:
    from andraeus_core import generate_batch

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    start = time.perf_counter()
    answers = generate_batch(model, tokenizer, conversations, max_new_tokens=48, batch_size=32)
    seconds = time.perf_counter() - start
    tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
    return answers, seconds, tokens


def _llama_cpp_answers(gguf: Path, conversations: list[list[dict[str, str]]]) -> tuple[list[str], float, int, float]:
    """Greedy answers from llama.cpp itself: the GGUF's own tokenizer and chat template, no repetition penalty."""
    from llama_cpp import Llama

    start = time.perf_counter()
    # n_ctx covers the longest held-out conversation (a few hundred tokens) plus the 48 new ones.
    llm = Llama(model_path=str(gguf), n_ctx=2048, n_threads=os.cpu_count() or 1, seed=0, verbose=False)
    load_s = time.perf_counter() - start
    answers: list[str] = []
    tokens = 0
    start = time.perf_counter()
    for conversation in conversations:
        reply = llm.create_chat_completion(
            messages=conversation, temperature=0.0, repeat_penalty=1.0, max_tokens=48, seed=0
        )
        answers.append((reply["choices"][0]["message"]["content"] or "").strip())
        tokens += reply["usage"]["completion_tokens"]
    seconds = time.perf_counter() - start
    llm.close()
    return answers, seconds, tokens, load_s


def _fmt(value: float | None, interval: Any) -> str:
    if value is None:
        return "n/a"
    low, high = interval or (value, value)
    return f"{100 * value:5.1f}% [{100 * low:.0f}-{100 * high:.0f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", default=None, help="a trained adapter (default: train one on --profile)")
    parser.add_argument("--profile", default=str(ROOT / "examples" / "seed_profile.yaml"))
    parser.add_argument("--quick", action="store_true", help="tiny-random, one epoch: mechanics only")
    parser.add_argument("--json", default=None, help="also write the figures as JSON here")
    parser.add_argument(
        "--llama-cpp", action="store_true", help="also run each GGUF in llama.cpp (llama-cpp-python: make llama-cpp)"
    )
    args = parser.parse_args()
    if args.llama_cpp:
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            print(
                "error: --llama-cpp needs llama-cpp-python, which `make install` leaves out (it builds llama.cpp "
                "from source, ~4 min on 2 cores): run `make llama-cpp` first.",
                file=sys.stderr,
            )
            return 2

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from andraeus_core import Adapter, TrainConfig, export_adapter, load_model, load_profile, train_adapter
    from andraeus_core.evaluate import compute_metrics, heldout_questions, score_answer

    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="andraeus-bench-export-"))
    if args.adapter:
        adapter = Adapter.load(args.adapter)
    else:
        base = "tiny-random" if args.quick else "smollm2-135m"
        overrides: dict[str, Any] = {"base_model": base, **({"epochs": 1} if args.quick else {})}
        start = time.perf_counter()
        adapter = train_adapter(
            load_profile(args.profile), TrainConfig.preset("cpu", **overrides), out_dir=work / "adapter"
        )
        print(f"trained {adapter.path.name} on {base} in {time.perf_counter() - start:.0f}s", flush=True)
    questions = heldout_questions(adapter)
    values = adapter.profile().values()
    system = adapter.private.system_prompt
    conversations = [
        ([{"role": "system", "content": system}] if system else [])
        + [m for m in (q.messages or [{"role": "user", "content": q.question}]) if m["role"] != "system"]
        for q in questions
    ]

    rows: list[dict[str, Any]] = []
    loaded = load_model(adapter.base_model)
    peft_model = adapter.attach(loaded)
    reference, seconds, tokens = _answers(peft_model, loaded.tokenizer, conversations)
    rows.append(
        {"system": "adapter (PEFT)", "export_s": None, "mb": None, "answers": reference, "gen": (seconds, tokens)}
    )
    probe = loaded.tokenizer.apply_chat_template(conversations[0], add_generation_prompt=True, return_tensors="pt")
    probe_ids = probe["input_ids"] if hasattr(probe, "keys") else probe
    with torch.inference_mode():
        reference_logits = peft_model(input_ids=probe_ids).logits
    del peft_model, loaded

    for fmt, quant in (("merged", None), ("gguf", "f16"), ("gguf", "q8_0")):
        label = fmt if quant is None else f"gguf {quant}"
        result = export_adapter(adapter.path, fmt, work / f"{fmt}-{quant}", quant=quant)
        print(f"exported {label} in {result.seconds:.0f}s ({result.bytes / 1e6:.0f} MB)", flush=True)
        kwargs = {"gguf_file": result.main_file} if result.main_file else {}
        start = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(result.path, **kwargs).eval()
        tokenizer = AutoTokenizer.from_pretrained(result.path, **kwargs)
        load_s = time.perf_counter() - start
        with torch.inference_mode():
            diff = (model(input_ids=probe_ids).logits - reference_logits).abs().max().item()
        answers, seconds, tokens = _answers(model, tokenizer, conversations)
        rows.append(
            {
                "system": label,
                "export_s": result.seconds,
                "load_s": load_s,
                "mb": result.bytes / 1e6,
                "answers": answers,
                "gen": (seconds, tokens),
                "max_logit_diff": diff,
            }
        )
        del model
        if args.llama_cpp and result.main_file:
            answers, seconds, tokens, load_s = _llama_cpp_answers(Path(result.path) / result.main_file, conversations)
            print(f"ran {label} in llama.cpp: {tokens} tokens in {seconds:.0f}s", flush=True)
            rows.append(
                {
                    "system": f"{label} llama.cpp",
                    "export_s": None,
                    "load_s": load_s,
                    "mb": result.bytes / 1e6,
                    "answers": answers,
                    "gen": (seconds, tokens),
                }
            )

    print(f"\n{len(questions)} held-out questions of {adapter.path.name} (greedy, 48 new tokens, no gate)\n")
    header = (
        f"{'system':<22} {'export':>7} {'MB':>6} {'recall':>19} {'abstention':>19} {'over-trigger':>19} "
        f"{'same as adapter':>15} {'tok/s':>6} {'max |dlogit|':>12}"
    )
    print(header)
    figures = []
    for row in rows:
        correct = [score_answer(q, a, values) for q, a in zip(questions, row["answers"], strict=True)]
        metrics = compute_metrics(questions, row["answers"], correct)
        same = sum(a == r for a, r in zip(row["answers"], reference, strict=True)) / len(reference)
        seconds, tokens = row["gen"]
        export_s = f"{row['export_s']:.0f}s" if row["export_s"] is not None else "-"
        size = f"{row['mb']:.0f}" if row["mb"] is not None else "-"
        diff = f"{row['max_logit_diff']:.2e}" if "max_logit_diff" in row else "-"
        print(
            f"{row['system']:<22} {export_s:>7} {size:>6} "
            f"{_fmt(metrics.recall, metrics.intervals.get('recall')):>19} "
            f"{_fmt(metrics.abstention_rate, metrics.intervals.get('abstention_rate')):>19} "
            f"{_fmt(metrics.over_trigger_rate, metrics.intervals.get('over_trigger_rate')):>19} "
            f"{100 * same:>14.0f}% {tokens / seconds:>6.0f} {diff:>12}"
        )
        figures.append(
            {
                "system": row["system"],
                "export_seconds": row["export_s"],
                "load_seconds": row.get("load_s"),
                "megabytes": row["mb"],
                "metrics": metrics.model_dump(mode="json"),
                "same_as_adapter": same,
                "tokens_per_second": tokens / seconds,
                "max_logit_diff": row.get("max_logit_diff"),
            }
        )
    fact_n = sum(q.kind in ("paraphrase", "typo", "indirect", "reverse") for q in questions)
    ran = "llama.cpp rows: the GGUF run in llama.cpp itself" if args.llama_cpp else "llama.cpp not run (--llama-cpp)"
    print(f"\n(recall over {fact_n} fact questions; {ran}; tok/s counts the prompt's processing too)")
    if args.json:
        Path(args.json).write_text(json.dumps({"n": len(questions), "systems": figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
