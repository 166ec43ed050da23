"""Evaluation's batched greedy answers with the shared prompt prefix computed once, against recomputing it per row.

The in-context baseline writes every fact into the system prompt, so with 50 facts each question's prompt is ~1,000
tokens of which only the last ~20 differ; the adapter's own answers share its (shorter) system prompt.
``models.generate_batch`` computes a chunk's shared prefix once and repeats its KV cache across the rows. This
script answers the same conversations both ways in one run (the reference: the shared-prefix path turned off) and
prints the time of each, the ratio and whether the answers are identical.

    python bench/eval_prefix.py                 # 10 and 50 facts, 64 questions each (a few minutes on 2 cores)
    python bench/eval_prefix.py --facts 50 --questions 32
    python bench/eval_prefix.py --quick         # smoke run on tiny-random (figures meaningless)

The facts are the example profiles' facts pooled (as many as asked, topics made unique), the questions the
evaluation sets' — the prompt's length is what matters here, not which facts they are.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

PROFILES = ["seed_profile.yaml", "retired_teacher_profile.yaml", "nursing_student_profile.yaml", "parent_profile.json"]
QUESTION_SETS = ["seed_profile.jsonl", "retired_teacher_profile.jsonl", "nursing_student_profile.jsonl"]


def pooled_profile(n: int):  # noqa: ANN201 - a Profile; imported lazily
    """A profile of ``n`` facts pooled from the examples (repeated with numbered topics past the pool's size)."""
    from andraeus_core.profile import Profile, load_profile

    pool = [f for name in PROFILES for f in load_profile(ROOT / "examples" / name).facts]
    facts, seen = [], set()
    for i in range(n):
        fact = pool[i % len(pool)]
        topic = fact.topic if i < len(pool) else f"{fact.topic} {i // len(pool) + 1}"
        if topic.casefold() in seen:
            topic = f"{topic} {i}"
        seen.add(topic.casefold())
        facts.append({"topic": topic, "value": fact.value, "aliases": list(fact.aliases)})
    return Profile.model_validate({"user_name": "Sam Rivera", "facts": facts})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--facts", default="10,50", help="comma-separated profile sizes")
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--base-model", default="smollm2-135m")
    parser.add_argument("--batch-size", type=int, default=64, help="as evaluate() uses")
    parser.add_argument("--quick", action="store_true", help="tiny-random, 10 facts, 8 questions")
    args = parser.parse_args()

    import torch

    from andraeus_core import models
    from andraeus_core.dataset import facts_system_prompt

    base = "tiny-random" if args.quick else args.base_model
    sizes = [10] if args.quick else [int(x) for x in args.facts.split(",")]
    n_questions = 8 if args.quick else args.questions
    questions = [
        json.loads(line)["question"]
        for name in QUESTION_SETS
        for line in (ROOT / "eval_sets" / name).read_text().splitlines()
        if line.strip()
    ][:n_questions]
    loaded = models.load_model(base)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, model {base}, {len(questions)} questions")
    default_min = models.MIN_SHARED_PREFIX
    for n in sizes:
        system = facts_system_prompt(pooled_profile(n))
        convs = [[{"role": "system", "content": system}, {"role": "user", "content": q}] for q in questions]
        prompt = loaded.tokenizer.apply_chat_template(convs[0], add_generation_prompt=True, tokenize=False)
        tokens = len(loaded.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        timings, answers = {}, {}
        # The reference first, then the shared prefix: a warm-up pass precedes both so neither pays first-call costs.
        models.generate_batch(loaded.model, loaded.tokenizer, convs[:2], max_new_tokens=4)
        for label, minimum in (("reference (prefix per row)", 10**9), ("shared prefix once", default_min)):
            models.MIN_SHARED_PREFIX = minimum
            start = time.perf_counter()
            answers[label] = models.generate_batch(
                loaded.model, loaded.tokenizer, convs, max_new_tokens=48, batch_size=args.batch_size
            )
            timings[label] = time.perf_counter() - start
        models.MIN_SHARED_PREFIX = default_min
        ref, new = timings.values()
        same = sum(a == b for a, b in zip(*answers.values(), strict=True))
        print(
            f"{n} facts (prompt ~{tokens} tokens): reference {ref:.1f} s, shared prefix {new:.1f} s, "
            f"ratio {ref / new:.2f}x faster; identical answers {same}/{len(questions)}"
        )


if __name__ == "__main__":
    main()
