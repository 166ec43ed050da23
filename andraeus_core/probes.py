"""The base model's answers to over-trigger guard questions, and the early-stop recall probe.

Both ask a model questions greedily during a training run: the guard answers come from the *base* model before any
LoRA is attached (they become training examples that keep its own answers to nearby general questions), the probe
asks the model being trained a sample of its training phrasings after each epoch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .config import andraeus_home
from .fsutil import atomic_write, safe_name

# The probe scores answers with the evaluation's own matching rule (whole words, accents and case folded), so that
# "learned" means the same thing to the early stop as to the evaluation that follows it.
from .matching import contains_any
from .models import LoadedModel, generate_batch

logger = logging.getLogger(__name__)

GUARD_MAX_NEW_TOKENS = 64


def guard_cache_file(name: str, *, local: bool = False, quantize: str | None = None) -> Path:
    """Where the base model ``name``'s guard answers are cached (``local``: a directory path, not a preset/Hub id)."""
    key = safe_name(Path(name).name if local else name)
    if local:
        key += "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    if quantize:
        key += f"-{quantize}"
    return andraeus_home() / "cache" / "guards" / key / "answers.json"


def guard_cache_key(question: str) -> str:
    """A guard question's key in the cache (its answer depends on the answer length too)."""
    return hashlib.sha256(f"{GUARD_MAX_NEW_TOKENS}\n{question}".encode()).hexdigest()[:32]


def uncached_guards(questions: Sequence[str], cache_file: Path) -> int:
    """How many distinct ``questions`` the base model would still have to answer (none cached yet)."""
    try:
        cache: dict[str, str] = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    return len({k for k in map(guard_cache_key, questions) if k not in cache})


def guard_answerer(loaded: LoadedModel) -> Callable[[list[str]], list[str]]:
    """Answers over-trigger guard questions with the *base* model (greedy), cached on disk.

    The cache (``$ANDRAEUS_HOME/cache/guards/<model>/answers.json``, keyed by a hash of the question) makes a second
    run — and a resume after a crash — produce byte-identical guard examples without generating again.
    """
    cache_file = guard_cache_file(
        loaded.resolved.name, local=loaded.resolved.kind == "local", quantize=loaded.quantize
    )

    def answer(questions: list[str]) -> list[str]:
        try:
            cache: dict[str, str] = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            cache = {}
        keys = [guard_cache_key(q) for q in questions]
        missing = sorted({k: q for k, q in zip(keys, questions, strict=True) if k not in cache}.items())
        if missing:
            logger.info("Answering %d over-trigger guard questions with the base model", len(missing))
            outs = generate_batch(
                loaded.model,
                loaded.tokenizer,
                [[{"role": "user", "content": q}] for _, q in missing],
                max_new_tokens=GUARD_MAX_NEW_TOKENS,
            )
            cache.update({k: out for (k, _), out in zip(missing, outs, strict=True)})
            atomic_write(cache_file, json.dumps(cache, ensure_ascii=False, sort_keys=True))
        return [cache[k] for k in keys]

    return answer


def _expect(example: Any) -> list[str]:
    meta = getattr(example, "meta", None)
    return list(getattr(meta, "expect", None) or [])


def _kind(example: Any) -> str:
    return str(getattr(getattr(example, "meta", None), "kind", ""))


def _messages(example: Any) -> list[dict[str, str]]:
    out = []
    for m in example.messages:
        if isinstance(m, dict):
            out.append({"role": m["role"], "content": m["content"]})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def recall_check(answer: str, expect: Sequence[str]) -> bool:
    """True when the answer contains one of the expected strings as whole words (the evaluation's matching rule)."""
    return contains_any(answer, expect)


def probe_examples(examples: Sequence[Any], size: int, seed: int) -> list[Any]:
    """A fixed sample of fact questions (with expected answers) to probe for the early stop."""
    facts = [ex for ex in examples if _kind(ex) in {"fact", "reverse"} and _expect(ex)]
    if len(facts) <= size:
        return facts
    return random.Random(seed).sample(facts, size)


def probe_recall(model: Any, tokenizer: Any, examples: Sequence[Any], *, max_new_tokens: int = 32) -> float:
    """Share of examples whose greedy answer contains an expected string (1.0 for no examples)."""
    if not examples:
        return 1.0
    conversations = [_messages(ex)[:-1] for ex in examples]
    answers = generate_batch(model, tokenizer, conversations, max_new_tokens=max_new_tokens, batch_size=32)
    hits = sum(recall_check(a, _expect(ex)) for a, ex in zip(answers, examples, strict=True))
    return hits / len(examples)


__all__ = [
    "GUARD_MAX_NEW_TOKENS",
    "guard_answerer",
    "guard_cache_file",
    "guard_cache_key",
    "probe_examples",
    "probe_recall",
    "recall_check",
    "uncached_guards",
]
