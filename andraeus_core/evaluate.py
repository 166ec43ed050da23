"""Held-out evaluation: did the adapter learn the facts, and at what cost?

Three systems answer the same questions with batched greedy decoding, on one loaded copy of the base model:

* ``adapter``    — the base model with the LoRA adapter (the adapter's own system prompt, as in training);
* ``base``       — the same weights with the adapter disabled (same system prompt): what the model knew anyway;
* ``in_context`` — the base model with every fact written into the system prompt (``facts_system_prompt``): the
  cheap alternative to fine-tuning.

Scoring rules (all on a normalised text: case folded, accents folded so ``Tomas`` matches ``Tomás``, punctuation
turned into spaces, ordinal suffixes dropped so ``14th`` matches ``14``):

* ``paraphrase``, ``typo``, ``indirect``, ``reverse``: correct when the answer contains any ``expect`` string as
  whole words (a trailing plural ``s``/``es`` is allowed).
* ``unknown``: correct when the answer abstains (see :data:`ABSTENTION_PATTERNS`) *and* states none of the
  profile's values or aliases.
* ``unrelated``: correct when the answer mentions none of the profile's values or aliases (over-trigger check).
* ``general``: scored like a fact question, on the adapter and the base model; the retention drop counts only the
  items the base model gets right.

Value mentions use whole-word matching, so ``Alex`` does not match ``Alexander`` and ``teal`` does not match
``steal``; a value that the question itself contains is not counted (echoing the question is not leaking a fact).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .adapter import Adapter
from .dataset import ExampleMeta, facts_system_prompt
from .errors import AdapterError, EvaluationError
from .gate import ABSTENTION_PREFIX, abstention
from .matching import contains_any, is_abstention, mentioned_values
from .models import generate_batch, load_model

logger = logging.getLogger(__name__)

QuestionKind = Literal["paraphrase", "typo", "indirect", "reverse", "unknown", "unrelated", "general", "identity"]
# `identity` ("Who are you?", "What's my name?") comes from the held-out split; it is scored like a fact question but
# is not part of `recall`, which is about the profile's facts.
KINDS: tuple[str, ...] = ("paraphrase", "typo", "indirect", "reverse", "unknown", "unrelated", "general", "identity")
FACT_KINDS: tuple[str, ...] = ("paraphrase", "typo", "indirect", "reverse")
SYSTEMS: tuple[str, ...] = ("adapter", "base", "in_context")
BASELINES: tuple[str, ...] = ("base", "in_context")

ProgressCallback = Callable[[float, str], None]


# ----------------------------------------------------------------------------------------------------------------
# Questions


class Question(BaseModel):
    """One evaluation question (one line of an eval-set JSONL file)."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(..., min_length=1, description="What the user asks.")
    expect: list[str] | None = Field(
        None,
        description="Accepted answers (any one, whole words, case/accents/punctuation ignored); a single string is "
        "accepted too. Required for paraphrase/typo/indirect/reverse/general; null for unknown/unrelated.",
    )
    kind: QuestionKind = Field(
        ..., description="paraphrase, typo, indirect, reverse, unknown, unrelated, general (or identity)."
    )
    messages: list[dict[str, str]] | None = Field(
        None,
        description="The full conversation (held-out examples carry their own system prompt); default: the "
        "question as the only user turn.",
    )
    topic: str | None = Field(None, description="The fact's topic, when known (held-out examples).")

    def model_post_init(self, __context: Any) -> None:
        if isinstance(self.expect, list):
            self.expect = [e for e in (s.strip() for s in self.expect) if e] or None


def _coerce_expect(raw: Any) -> Any:
    return [raw] if isinstance(raw, str) else raw


def question_from_dict(data: Any, *, where: str) -> Question:
    """Validate one question object; ``where`` (``file:line``) is named in the error.

    Raises:
        EvaluationError: not an object, an unknown kind, a missing/extra field or an ``expect`` that does not fit
            the kind.
    """
    if not isinstance(data, dict):
        raise EvaluationError(f"{where}: expected a JSON object, got {type(data).__name__}.")
    data = dict(data)
    if "expect" in data:
        data["expect"] = _coerce_expect(data["expect"])
    try:
        q = Question.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "?"
        value = first.get("input")
        shown = repr(value) if not isinstance(value, dict) else "the object"
        hint = ""
        if field == "kind":
            hint = f" (one of {', '.join(KINDS)})"
        raise EvaluationError(
            f"{where}: field '{field}': {first.get('msg')}{hint}; got {shown}.", param=field
        ) from None
    if q.kind in ("unknown", "unrelated"):
        if q.expect:
            raise EvaluationError(
                f"{where}: field 'expect': must be null for kind '{q.kind}' (got {data.get('expect')!r}).",
                param="expect",
            )
    elif not q.expect:
        raise EvaluationError(
            f"{where}: field 'expect': kind '{q.kind}' needs at least one expected answer (got "
            f"{data.get('expect')!r}).",
            param="expect",
        )
    return q


def load_questions(path: str | Path) -> list[Question]:
    """Read an eval-set JSONL file: one ``{"question", "expect", "kind"}`` object per line (blank lines skipped).

    Raises:
        EvaluationError: the file is missing or empty, a line is not JSON, or a question is invalid (the message
            names file, line, field and value).
    """
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EvaluationError(f"Questions file '{file}' does not exist.", param="questions") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"Questions file '{file}' cannot be read: {exc}.", param="questions") from None
    questions = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{file}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvaluationError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}).") from None
        questions.append(question_from_dict(data, where=where))
    if not questions:
        raise EvaluationError(f"Questions file '{file}' holds no questions.", param="questions")
    return questions


def _heldout_kind(meta: dict[str, Any], where: str) -> str:
    try:
        return ExampleMeta.model_validate(meta).eval_kind()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "?"
        raise EvaluationError(
            f"{where}: field 'meta.{field}': {first.get('msg')}; got {first.get('input')!r}.", param="meta"
        ) from None


def heldout_questions(adapter: Adapter | str | Path) -> list[Question]:
    """The adapter's held-out split (never trained on) as evaluation questions.

    Raises:
        EvaluationError: the adapter has no held-out split, or a line is not a chat example with ``messages`` and
            ``meta`` (the message names file, line and field).
        AdapterError: the held-out file cannot be read or a line is not JSON.
    """
    adapter = adapter if isinstance(adapter, Adapter) else Adapter(adapter)
    rows = adapter.heldout()
    if rows is None:
        raise EvaluationError(
            f"'{adapter.path}' has no {adapter.heldout_path.name} (the held-out split written by training); pass "
            "questions explicitly with --questions FILE.jsonl.",
            param="questions",
        )
    file = adapter.heldout_path
    questions: list[Question] = []
    for number, data in rows:
        where = f"{file}:{number}"
        try:
            messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in data["messages"]]
            meta = dict(data.get("meta") or {})
        except (KeyError, TypeError, AttributeError) as exc:
            raise EvaluationError(
                f"{where}: not a chat example with 'messages' and 'meta' ({type(exc).__name__}: {exc})."
            ) from None
        # The conversation up to (and including) the last user turn; the trained answer is not shown to the model.
        last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
        if last_user is None:
            raise EvaluationError(f"{where}: field 'messages': no user turn.", param="messages")
        kind = _heldout_kind(meta, where)
        expect = meta.get("expect") or None
        if kind in ("unknown", "unrelated"):
            expect = None
        elif not expect:
            continue  # nothing to check an answer against
        questions.append(
            Question(
                question=messages[last_user]["content"],
                expect=list(expect) if expect else None,
                kind=kind,  # type: ignore[arg-type]
                messages=messages[: last_user + 1],
                topic=meta.get("topic"),
            )
        )
    if not questions:
        raise EvaluationError(f"'{file}' holds no usable held-out questions.", param="questions")
    return questions


# ----------------------------------------------------------------------------------------------------------------
# Scoring


def score_answer(question: Question, answer: str, values: Sequence[str], *, base_answer: str | None = None) -> bool:
    """Whether ``answer`` is correct for ``question`` under the module's rules.

    Args:
        question: the question.
        answer: the answer to score.
        values: every profile value and alias (used by ``unknown`` and ``unrelated``).
        base_answer: the base model's answer to the same question. For ``unrelated`` items a value then counts as
            over-triggered only when the base model's own answer does not state it too ("Name a famous city in
            Oregon" -> "Portland" is fair when the base model says so as well).
    """
    if question.kind in ("unknown", "unrelated"):
        leaked = set(mentioned_values(answer, values, question=question.question))
        if question.kind == "unrelated":
            if base_answer is not None:
                leaked -= set(mentioned_values(base_answer, values, question=question.question))
            return not leaked
        return is_abstention(answer) and not leaked
    return contains_any(answer, question.expect or ())


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """The Wilson score interval (95% by default) of a share ``successes / n``; None when n is 0."""
    if n <= 0:
        return None
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4))


# ----------------------------------------------------------------------------------------------------------------
# The report


class KindScore(BaseModel):
    """A score over the items of one kind."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(..., description="Number of items of this kind.")
    score: float | None = Field(..., description="Share correct (0–1); null when n is 0.")
    interval: tuple[float, float] | None = Field(None, description="Wilson 95% interval of the score.")


class Retention(BaseModel):
    """General-knowledge retention: share of `general` items correct with and without the adapter."""

    model_config = ConfigDict(extra="forbid")

    base: float | None = Field(..., description="Share of general items the base model gets right.")
    adapter: float | None = Field(..., description="Share of general items the adapter gets right.")
    delta: float | None = Field(
        ...,
        description="Minus the share of the base model's correct general items that the adapter gets wrong "
        "(0 = nothing forgotten, -0.05 = a 5-point drop); null without general items the base gets right.",
    )


class SystemMetrics(BaseModel):
    """The metrics of one system (a baseline) over the same questions."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(..., description="Number of questions.")
    recall: float | None = Field(..., description="Share correct over paraphrase, typo, indirect and reverse.")
    by_kind: dict[str, KindScore] = Field(..., description="Score per kind present in the questions.")
    over_trigger_rate: float | None = Field(
        ...,
        description="Share of unrelated items whose answer mentions a profile value that the base model's own answer "
        "does not (for the base model itself, or without its answers: any profile value).",
    )
    abstention_rate: float | None = Field(..., description="Share of unknown items answered with an abstention.")
    intervals: dict[str, tuple[float, float] | None] = Field(
        default_factory=dict, description="Wilson 95% intervals of recall, over_trigger_rate and abstention_rate."
    )


class SystemAnswer(BaseModel):
    """One system's answer to one item."""

    model_config = ConfigDict(extra="forbid")

    answer: str = Field(..., description="The generated answer.")
    correct: bool = Field(..., description="Whether it is correct under the scoring rules.")


class EvalItem(BaseModel):
    """One scored question."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(..., description="The question asked.")
    kind: str = Field(..., description="Its kind.")
    expect: list[str] | None = Field(..., description="Accepted answers (null for unknown/unrelated).")
    answer: str = Field(..., description="The adapter's answer.")
    correct: bool = Field(..., description="Whether the adapter's answer is correct.")
    baselines: dict[str, SystemAnswer] = Field(
        default_factory=dict, description="The baselines' answers to the same question."
    )
    route: str | None = Field(None, description="Where the gate sent the question (adapter, abstain, base).")


class Routing(BaseModel):
    """How the gate routed the questions, against where each kind belongs."""

    model_config = ConfigDict(extra="forbid")

    accuracy: float | None = Field(
        ...,
        description="Share routed as expected: fact kinds and identity to the adapter, unknown to abstain, "
        "unrelated and general to the base model.",
    )
    by_kind: dict[str, dict[str, int]] = Field(..., description="Kind -> route -> count.")
    known_sent_away: int = Field(
        ...,
        description="Fact questions (paraphrase/typo/indirect/reverse) not sent to the adapter: each costs recall.",
    )


class EvalReport(BaseModel):
    """What :func:`evaluate` returns; :meth:`to_json` is the shape the CLI prints with ``--json``."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(..., description="The base model the adapter was evaluated on.")
    adapter: str = Field(..., description="The adapter directory.")
    system: str = Field(
        "adapter",
        description="What the top-level metrics measure: 'adapter+gate' (the default when the adapter "
        "has a gate) or 'adapter'.",
    )
    n: int = Field(..., description="Number of questions.")
    recall: float | None = Field(..., description="Share correct over paraphrase, typo, indirect and reverse.")
    by_kind: dict[str, KindScore] = Field(..., description="Score per kind present in the questions.")
    over_trigger_rate: float | None = Field(..., description="Share of unrelated items that mention a fact value.")
    abstention_rate: float | None = Field(..., description="Share of unknown items answered with an abstention.")
    intervals: dict[str, tuple[float, float] | None] = Field(
        default_factory=dict, description="Wilson 95% intervals of recall, over_trigger_rate and abstention_rate."
    )
    retention: Retention = Field(..., description="General-knowledge retention, base vs adapter.")
    baselines: dict[str, SystemMetrics] = Field(
        ...,
        description="The same metrics for each other system run: 'adapter_alone' (the adapter without its gate, "
        "what a plain PEFT/vLLM/GGUF user gets), 'base' and 'in_context'.",
    )
    routing: Routing | None = Field(None, description="The gate's routing (when the adapter has a gate).")
    retention_alone: Retention | None = Field(None, description="Retention of the adapter without its gate.")
    items: list[EvalItem] = Field(..., description="Every question with the adapter's (and baselines') answers.")
    seconds: float = Field(..., description="Wall time of the evaluation, model loading included.")

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (the ``andraeus eval --json`` object)."""
        return self.model_dump(mode="json")

    def metrics(self, system: str = "adapter") -> SystemMetrics:
        """The metrics of ``adapter`` or of a baseline that was run."""
        if system == "adapter":
            return SystemMetrics(
                n=self.n,
                recall=self.recall,
                by_kind=self.by_kind,
                over_trigger_rate=self.over_trigger_rate,
                abstention_rate=self.abstention_rate,
                intervals=self.intervals,
            )
        if system not in self.baselines:
            raise EvaluationError(f"Baseline '{system}' was not run (ran: {', '.join(self.baselines) or 'none'}).")
        return self.baselines[system]

    def table(self) -> str:
        """A readable text table: per kind, the adapter vs each baseline that was run."""
        systems = ["adapter", *self.baselines]
        metrics = {s: self.metrics(s) for s in systems}
        names = {"adapter": self.system, "adapter_alone": "adapter only", "base": "base", "in_context": "in-context"}
        header = f"{'kind':<14}{'n':>5}" + "".join(f"{names.get(s, s):>14}" for s in systems)
        lines = [header, "-" * len(header)]

        def pct(value: float | None) -> str:
            return "—" if value is None else f"{100 * value:.1f}%"

        for kind in KINDS:
            if kind not in self.by_kind:
                continue
            row = f"{kind:<14}{self.by_kind[kind].n:>5}"
            row += "".join(f"{pct(metrics[s].by_kind[kind].score):>14}" for s in systems)
            lines.append(row)
        lines.append("-" * len(header))
        n_fact = sum(self.by_kind[k].n for k in FACT_KINDS if k in self.by_kind)
        summary = [
            ("recall", n_fact, {s: metrics[s].recall for s in systems}),
            (
                "over-trigger",
                self.by_kind["unrelated"].n if "unrelated" in self.by_kind else 0,
                {s: metrics[s].over_trigger_rate for s in systems},
            ),
            (
                "abstention",
                self.by_kind["unknown"].n if "unknown" in self.by_kind else 0,
                {s: metrics[s].abstention_rate for s in systems},
            ),
        ]
        for label, n, values in summary:
            lines.append(f"{label:<14}{n:>5}" + "".join(f"{pct(values[s]):>14}" for s in systems))
        keys = {"recall": "recall", "over-trigger": "over_trigger_rate", "abstention": "abstention_rate"}
        for label, n, _ in summary:
            interval = self.intervals.get(keys[label])
            if interval is not None:
                lines.append(f"  {label} of {self.system}: 95% interval {pct(interval[0])}–{pct(interval[1])} (n={n})")
        if self.retention.delta is not None:
            lines.append(
                f"retention: base {pct(self.retention.base)}, {self.system} {pct(self.retention.adapter)}, "
                f"drop {100 * -self.retention.delta:.1f} points (general items the base gets right)"
            )
        if "adapter_alone" in self.baselines and self.retention_alone is not None:
            if self.retention_alone.delta is not None:
                lines.append(
                    f"retention of the adapter alone: {pct(self.retention_alone.adapter)}, "
                    f"drop {100 * -self.retention_alone.delta:.1f} points"
                )
        if self.routing is not None:
            lines.append(
                f"gate routing: {pct(self.routing.accuracy)} as expected; fact questions sent away from the adapter: "
                f"{self.routing.known_sent_away}"
            )
        lines.append("over-trigger counts a profile value only when the base model's own answer does not state it")
        lines.append(f"{self.n} questions in {self.seconds:.1f}s on {self.base_model}")
        return "\n".join(lines)


def _share(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def compute_metrics(questions: Sequence[Question], answers: Sequence[str], correct: Sequence[bool]) -> SystemMetrics:
    """Aggregate one system's per-item results into :class:`SystemMetrics`."""
    by_kind: dict[str, KindScore] = {}
    for kind in KINDS:
        flags = [c for q, c in zip(questions, correct, strict=True) if q.kind == kind]
        if flags:
            by_kind[kind] = KindScore(
                n=len(flags), score=_share(flags), interval=wilson_interval(sum(flags), len(flags))
            )
    fact_flags = [c for q, c in zip(questions, correct, strict=True) if q.kind in FACT_KINDS]
    unrelated = [not c for q, c in zip(questions, correct, strict=True) if q.kind == "unrelated"]
    abstained = [is_abstention(a) for q, a in zip(questions, answers, strict=True) if q.kind == "unknown"]
    return SystemMetrics(
        n=len(questions),
        recall=_share(fact_flags),
        by_kind=by_kind,
        over_trigger_rate=_share(unrelated),
        abstention_rate=_share(abstained),
        intervals={
            "recall": wilson_interval(sum(fact_flags), len(fact_flags)),
            "over_trigger_rate": wilson_interval(sum(unrelated), len(unrelated)),
            "abstention_rate": wilson_interval(sum(abstained), len(abstained)),
        },
    )


# Where each kind of question belongs.
EXPECTED_ROUTE = {
    "paraphrase": "adapter",
    "typo": "adapter",
    "indirect": "adapter",
    "reverse": "adapter",
    "identity": "adapter",
    "unknown": "abstain",
    "unrelated": "base",
    "general": "base",
}


def compute_routing(questions: Sequence[Question], routes: Sequence[str]) -> Routing:
    """The gate's routing per kind, and the share of questions routed where their kind belongs."""
    by_kind: dict[str, dict[str, int]] = {}
    for q, r in zip(questions, routes, strict=True):
        by_kind.setdefault(q.kind, {}).setdefault(r, 0)
        by_kind[q.kind][r] += 1
    hits = [EXPECTED_ROUTE[q.kind] == r for q, r in zip(questions, routes, strict=True)]
    away = sum(q.kind in FACT_KINDS and r != "adapter" for q, r in zip(questions, routes, strict=True))
    return Routing(accuracy=_share(hits), by_kind=by_kind, known_sent_away=away)


def compute_retention(
    questions: Sequence[Question], adapter_correct: Sequence[bool], base_correct: Sequence[bool] | None
) -> Retention:
    """Retention over the ``general`` items; the drop counts only items the base model gets right."""
    idx = [i for i, q in enumerate(questions) if q.kind == "general"]
    adapter = _share([adapter_correct[i] for i in idx])
    if base_correct is None:
        return Retention(base=None, adapter=adapter, delta=None)
    base = _share([base_correct[i] for i in idx])
    kept = [adapter_correct[i] for i in idx if base_correct[i]]
    delta = None if not kept else -(1.0 - sum(kept) / len(kept))
    return Retention(base=base, adapter=adapter, delta=delta)


# ----------------------------------------------------------------------------------------------------------------
# Running


def _as_adapter(adapter: Any) -> Adapter:
    if isinstance(adapter, Adapter):
        return adapter
    path = getattr(adapter, "path", adapter)
    if path is None:
        raise AdapterError("No adapter given.", param="adapter")
    return Adapter(path)


def _conversation(question: Question, system: str | None) -> list[dict[str, str]]:
    """The conversation to send: the question's own turns (or just the question) under ``system``."""
    turns = [dict(m) for m in (question.messages or [{"role": "user", "content": question.question}])]
    turns = [m for m in turns if m["role"] != "system"]
    return ([{"role": "system", "content": system}] if system else []) + turns


def _system_prompt_of(question: Question, default: str | None) -> str | None:
    for m in question.messages or ():
        if m["role"] == "system":
            return m["content"]
    return default


def evaluate(
    adapter: Any,
    questions: Sequence[Question] | str | Path | None = None,
    baselines: Sequence[str] = BASELINES,
    *,
    base_model: str | None = None,
    max_new_tokens: int = 48,
    batch_size: int = 64,
    on_progress: ProgressCallback | None = None,
    gate: bool = True,
) -> EvalReport:
    """Evaluate an adapter on held-out questions, against the base model and the in-context baseline.

    The base model is loaded once: the adapter answers through the PeftModel, the ``base`` baseline with the adapter
    disabled, the ``in_context`` baseline with the adapter disabled and every fact in the system prompt. When the
    adapter has a gate (and ``gate`` is true), the top-level metrics are those of the adapter *with* its gate, as
    chat serves it, and the adapter without its gate is reported as the ``adapter_alone`` baseline.

    Args:
        adapter: an adapter directory or an :class:`~andraeus_core.adapter.Adapter` (what training returns).
        questions: a list of :class:`Question`, a JSONL file path, or ``None`` for the adapter's held-out split.
        baselines: any of ``"base"`` and ``"in_context"``; ``()`` runs the adapter only (the base model still
            answers the questions the gate sends to it, and the ``unrelated`` ones that over-trigger is relative to).
        base_model: override the base model recorded in the adapter's ``andraeus.json``.
        max_new_tokens: answer length limit (answers are short facts; 48 leaves room for a sentence).
        batch_size: conversations per forward pass (64: on 2 CPU cores fewer, fuller batches are faster).
        on_progress: called as ``on_progress(fraction, message)``.
        gate: evaluate through the adapter's gate when it has one.

    Raises:
        AdapterError: the adapter directory is missing, incomplete or lacks ``private.json``.
        EvaluationError: the questions are invalid or a baseline name is unknown.
    """
    start = time.perf_counter()
    baselines = list(dict.fromkeys(baselines))
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise EvaluationError(
            f"Unknown baseline {unknown[0]!r}; choose from {', '.join(BASELINES)}.", param="baselines"
        )
    found = _as_adapter(adapter).check()
    profile = found.profile()
    values = [v for v in profile.values() if v]
    if questions is None:
        items = heldout_questions(found)
    elif isinstance(questions, (str, Path)):
        items = load_questions(questions)
    else:
        items = list(questions)
    if not items:
        raise EvaluationError("No questions to evaluate.", param="questions")
    trained_system = found.private.system_prompt or None
    router = found.gate() if gate else None

    def progress(fraction: float, message: str) -> None:
        if on_progress is not None:
            on_progress(min(1.0, fraction), message)

    progress(0.0, "loading the base model")
    loaded = load_model(base_model or found.base_model)
    model = found.attach(loaded)
    tokenizer = loaded.tokenizer
    own = [_conversation(q, _system_prompt_of(q, trained_system)) for q in items]
    routes: list[str] = ["adapter"] * len(items)
    if router is not None:
        progress(0.02, f"routing {len(items)} questions through the gate")
        routes = list(router.route(model, tokenizer, [q.question for q in items]))
    answers: dict[str, list[str]] = {}
    progress(0.05, f"answering {len(items)} questions with the adapter")
    answers["adapter"] = _generate(model, tokenizer, own, max_new_tokens, batch_size)
    # The base model answers: the baselines asked for, and (always) what the gate sends to it and the unrelated
    # items, whose over-trigger is measured against the base model's own answer.
    needed = {i for i, q in enumerate(items) if q.kind == "unrelated" or routes[i] == "base"}
    base_rows = list(range(len(items))) if "base" in baselines else sorted(needed)
    jobs = [own[i] for i in base_rows]
    if "in_context" in baselines:
        facts_prompt = facts_system_prompt(profile)
        jobs += [_conversation(q, facts_prompt) for q in items]
    progress(0.4, f"answering {len(jobs)} questions with the base model")
    with model.disable_adapter():
        outs = _generate(model, tokenizer, jobs, max_new_tokens, batch_size)
    base_answers: dict[int, str] = dict(zip(base_rows, outs[: len(base_rows)], strict=True))
    if "base" in baselines:
        answers["base"] = [base_answers[i] for i in range(len(items))]
    if "in_context" in baselines:
        answers["in_context"] = outs[len(base_rows) :]
    systems = ["adapter", *baselines]
    if router is not None:
        abstain_rows = [i for i, r in enumerate(routes) if r == "abstain"]
        progress(0.9, f"declining {len(abstain_rows)} questions")
        continuations = _generate(
            model, tokenizer, [own[i] for i in abstain_rows], 32, batch_size, prefix=ABSTENTION_PREFIX
        )
        declined = {
            i: abstention(c, values, question=items[i].question)
            for i, c in zip(abstain_rows, continuations, strict=True)
        }
        answers["adapter_alone"] = answers["adapter"]
        answers["adapter"] = [
            declined[i] if r == "abstain" else base_answers[i] if r == "base" else answers["adapter_alone"][i]
            for i, r in enumerate(routes)
        ]
        systems.insert(1, "adapter_alone")
    progress(1.0, "scoring")

    def score(system: str, i: int, q: Question) -> bool:
        reference = None if system in ("base",) else base_answers.get(i)
        return score_answer(q, answers[system][i], values, base_answer=reference)

    correct = {s: [score(s, i, q) for i, q in enumerate(items)] for s in systems}
    main = compute_metrics(items, answers["adapter"], correct["adapter"])
    others = [s for s in systems if s != "adapter"]
    report_items = [
        EvalItem(
            question=q.question,
            kind=q.kind,
            expect=q.expect,
            answer=answers["adapter"][i],
            correct=correct["adapter"][i],
            baselines={b: SystemAnswer(answer=answers[b][i], correct=correct[b][i]) for b in others},
            route=routes[i] if router is not None else None,
        )
        for i, q in enumerate(items)
    ]
    report = EvalReport(
        base_model=loaded.name,
        adapter=str(found.path),
        system="adapter+gate" if router is not None else "adapter",
        n=len(items),
        recall=main.recall,
        by_kind=main.by_kind,
        over_trigger_rate=main.over_trigger_rate,
        abstention_rate=main.abstention_rate,
        intervals=main.intervals,
        retention=compute_retention(items, correct["adapter"], correct.get("base")),
        baselines={b: compute_metrics(items, answers[b], correct[b]) for b in others},
        routing=compute_routing(items, routes) if router is not None else None,
        retention_alone=(
            compute_retention(items, correct["adapter_alone"], correct.get("base")) if router is not None else None
        ),
        items=report_items,
        seconds=round(time.perf_counter() - start, 2),
    )
    logger.info("Evaluated %d questions in %.1fs (recall %s)", report.n, report.seconds, report.recall)
    return report


def _generate(
    model: Any, tokenizer: Any, conversations: list[list[dict[str, str]]], max_new: int, batch: int, prefix: str = ""
) -> list[str]:
    return generate_batch(model, tokenizer, conversations, max_new_tokens=max_new, batch_size=batch, prefix=prefix)
