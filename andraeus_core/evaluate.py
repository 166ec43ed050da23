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

Family adapters (a profile with ``people``, see :mod:`andraeus_core.family`): a question may name its ``speaker``
and is then asked under that person's system prompt (``speaker_system_prompt``); without one, under the prompt for
an unknown speaker. Two more kinds:

* ``third_person``: another person's public fact asked by name or relation ("When is Dad's birthday?"); scored like
  a fact question and counted in ``recall`` (a fact the adapter should know is a fact, whoever it belongs to), and
  also reported on its own in :class:`FamilyMetrics`.
* ``private``: someone else's private fact asked (``expect`` null): correct when the answer states no value of a
  private fact the speaker may not be told (the speaker's :func:`~andraeus_core.family.disclosure_guard`).

The evaluated system of a family adapter is the product as chat serves it: the adapter (through its gate when it
has one) *and* the disclosure guard, which replaces an answer stating a withheld value by the refusal before it is
scored. The adapter alone (no gate, no guard) is the ``adapter_alone`` baseline, so the guard's effect is visible;
:class:`FamilyMetrics` adds recall per speaker, cross-person leakage and private disclosure for every system.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .adapter import Adapter
from .dataset import ExampleMeta, facts_system_prompt
from .errors import AdapterError, ConfigError, EvaluationError
from .family import (
    DisclosureGuard,
    describe,
    disclosure_guard,
    household_name,
    resolve_speaker,
    speaker_system_prompt,
    stated_values,
    withheld_facts,
)
from .gate import ABSTENTION_PREFIX, abstention
from .matching import contains_any, is_abstention, mentioned_values, normalize
from .models import generate_batch, load_model
from .profile import Person, Profile

logger = logging.getLogger(__name__)

QuestionKind = Literal[
    "paraphrase",
    "typo",
    "indirect",
    "reverse",
    "third_person",
    "unknown",
    "unrelated",
    "private",
    "general",
    "identity",
]
# `identity` ("Who are you?", "What's my name?") comes from the held-out split; it is scored like a fact question but
# is not part of `recall`, which is about the profile's facts.
KINDS: tuple[str, ...] = ("paraphrase", "typo", "indirect", "reverse", "unknown", "unrelated", "general", "identity")
# The kinds that only a family adapter's questions have (a speaker asking about someone else).
FAMILY_KINDS: tuple[str, ...] = ("third_person", "private")
ALL_KINDS: tuple[str, ...] = get_args(QuestionKind)
# The speaker's own (or the shared) facts asked in the first person: what per-speaker recall and leakage are over.
FIRST_PERSON_KINDS: tuple[str, ...] = ("paraphrase", "typo", "indirect", "reverse")
# Every kind `recall` is over (third_person only occurs on family adapters, so one-person figures are unchanged).
FACT_KINDS: tuple[str, ...] = (*FIRST_PERSON_KINDS, "third_person")
# Kinds whose `expect` must be null.
NO_EXPECT_KINDS: tuple[str, ...] = ("unknown", "unrelated", "private")
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
        "accepted too. Required for paraphrase/typo/indirect/reverse/third_person/general; null for "
        "unknown/unrelated/private.",
    )
    kind: QuestionKind = Field(
        ...,
        description="paraphrase, typo, indirect, reverse, unknown, unrelated, general (or identity); on a family "
        "adapter also third_person and private.",
    )
    speaker: str | None = Field(
        None,
        description="Family adapters: who asks (a person's name, relation or alias); null: an unknown speaker. "
        "An error on a one-person adapter.",
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
            hint = f" (one of {', '.join(ALL_KINDS)})"
        raise EvaluationError(
            f"{where}: field '{field}': {first.get('msg')}{hint}; got {shown}.", param=field
        ) from None
    if q.kind in NO_EXPECT_KINDS:
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


def question_speaker(
    question: Question, profile: Profile | None, *, where: str, field_prefix: str = ""
) -> Person | None:
    """The person ``question`` is asked by on an adapter trained on ``profile`` (``None``: no speaker).

    Args:
        question: the question.
        profile: the adapter's profile (``None`` when it has none, e.g. trained from chat examples).
        where: how to name the question in an error (``file:line``, or ``question 3``).
        field_prefix: put before the field's name in an error (``meta.`` for a held-out example).

    Raises:
        EvaluationError: a speaker or a family kind (third_person, private) on a one-person adapter, or a speaker
            who is no one in the family (the message names ``where``, the field and who the family is).
    """
    family = profile is not None and profile.is_family
    if question.kind in FAMILY_KINDS and not family:
        raise EvaluationError(
            f"{where}: field '{field_prefix}kind': '{question.kind}' is for family adapters (a profile with "
            "people); this adapter knows one person.",
            param="kind",
        )
    try:
        return resolve_speaker(profile, question.speaker)
    except ConfigError as exc:
        raise EvaluationError(f"{where}: field '{field_prefix}speaker': {exc}", param="speaker") from None


def load_questions(path: str | Path, *, profile: Profile | None = None) -> list[Question]:
    """Read an eval-set JSONL file: one ``{"question", "expect", "kind"}`` object per line (blank lines skipped).

    Args:
        path: the JSONL file.
        profile: the profile of the adapter the questions are for; when given, each ``speaker`` and family kind
            is checked against it (see :func:`question_speaker`), so an error names the file and line.

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
        question = question_from_dict(data, where=where)
        if profile is not None:
            question_speaker(question, profile, where=where)
        questions.append(question)
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
            ``meta``, or its ``meta.speaker`` is no one in the adapter's family (the message names file, line and
            field).
        AdapterError: the held-out file cannot be read or a line is not JSON.
    """
    adapter = adapter if isinstance(adapter, Adapter) else Adapter(adapter)
    rows = adapter.heldout()
    profile: Profile | None = None
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
        if kind in NO_EXPECT_KINDS:
            expect = None  # a private example is scored by the speaker's disclosure guard, not by `expect`
        elif not expect:
            continue  # nothing to check an answer against
        question = Question(
            question=messages[last_user]["content"],
            expect=list(expect) if expect else None,
            kind=kind,  # type: ignore[arg-type]
            messages=messages[: last_user + 1],
            topic=meta.get("topic"),
            speaker=meta.get("speaker"),
        )
        if question.speaker is not None or kind in FAMILY_KINDS:
            if profile is None:
                profile = adapter.private.profile
            question_speaker(question, profile, where=where, field_prefix="meta.")
        questions.append(question)
    if not questions:
        raise EvaluationError(f"'{file}' holds no usable held-out questions.", param="questions")
    return questions


# ----------------------------------------------------------------------------------------------------------------
# Scoring


def score_answer(
    question: Question,
    answer: str,
    values: Sequence[str],
    *,
    base_answer: str | None = None,
    guard: DisclosureGuard | None = None,
) -> bool:
    """Whether ``answer`` is correct for ``question`` under the module's rules.

    Args:
        question: the question.
        answer: the answer to score.
        values: every profile value and alias (used by ``unknown`` and ``unrelated``).
        base_answer: the base model's answer to the same question. For ``unrelated`` items a value then counts as
            over-triggered only when the base model's own answer does not state it too ("Name a famous city in
            Oregon" -> "Portland" is fair when the base model says so as well).
        guard: the speaker's disclosure guard (:func:`~andraeus_core.family.disclosure_guard`); ``private`` items
            are correct when it finds no withheld value in the answer.

    Raises:
        EvaluationError: a ``private`` item without a guard.
    """
    if question.kind == "private":
        if guard is None:
            raise EvaluationError("A 'private' question is scored with the speaker's disclosure guard; none given.")
        return guard.check(answer, question.question) is None
    if question.kind in ("unknown", "unrelated"):
        leaked = set(mentioned_values(answer, values, question=question.question))
        if question.kind == "unrelated":
            if base_answer is not None:
                leaked -= set(mentioned_values(base_answer, values, question=question.question))
            return not leaked
        return is_abstention(answer) and not leaked
    return contains_any(answer, question.expect or ())


def cross_person_values(profile: Profile, question: Question, answer: str) -> list[str]:
    """The values of other people's facts that ``answer`` states, for a question asked by ``question.speaker``.

    Another person's fact is one whose owner is someone other than the speaker (shared facts are everyone's);
    private or not, stating its value to the speaker in answer to a first-person question is a leak (told "my
    job", the adapter answered with Dad's). Not counted: a value the question contains, a value an expected answer
    contains (whole words), and a value the speaker's own or a shared fact has too (then it is theirs as well).
    Empty for a question without a speaker or on a one-person profile.
    """
    speaker = profile.person(question.speaker) if profile.is_family else None
    if speaker is None:
        return []
    own = {normalize(v) for f in profile.facts if f.owner in (None, speaker.name) for v in f.accepted()}
    expect = question.expect or []
    others = [
        v
        for f in profile.facts
        if f.owner not in (None, speaker.name)
        for v in f.accepted()
        if normalize(v) not in own and not any(contains_any(e, [v]) for e in expect)
    ]
    return stated_values(answer, others, question=question.question)


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
    recall: float | None = Field(
        ..., description="Share correct over paraphrase, typo, indirect and reverse (and third_person on a family)."
    )
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
    expect: list[str] | None = Field(..., description="Accepted answers (null for unknown/unrelated/private).")
    answer: str = Field(..., description="The adapter's answer.")
    correct: bool = Field(..., description="Whether the adapter's answer is correct.")
    baselines: dict[str, SystemAnswer] = Field(
        default_factory=dict, description="The baselines' answers to the same question."
    )
    route: str | None = Field(None, description="Where the gate sent the question (adapter, abstain, base).")
    speaker: str | None = Field(None, description="Family adapters: who asked (null: no speaker named).")
    withheld: bool | None = Field(
        None,
        description="Family adapters: whether the disclosure guard replaced the answer by the refusal (null for a "
        "one-person adapter).",
    )


class Routing(BaseModel):
    """How the gate routed the questions, against where each kind belongs."""

    model_config = ConfigDict(extra="forbid")

    accuracy: float | None = Field(
        ...,
        description="Share routed as expected: fact kinds (third_person included), private and identity to the "
        "adapter, unknown to abstain (on a family adapter: or to the adapter), unrelated and general to the base "
        "model.",
    )
    by_kind: dict[str, dict[str, int]] = Field(..., description="Kind -> route -> count.")
    known_sent_away: int = Field(
        ...,
        description="Fact questions (paraphrase/typo/indirect/reverse) not sent to the adapter: each costs recall.",
    )


class Rate(BaseModel):
    """A share of ``n`` items, with its Wilson 95% interval."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(..., description="Number of items the share is over.")
    rate: float | None = Field(..., description="The share (0–1); null when n is 0.")
    interval: tuple[float, float] | None = Field(None, description="Wilson 95% interval of the share.")

    @classmethod
    def of(cls, flags: Sequence[bool]) -> Rate:
        """The share of true flags."""
        return cls(n=len(flags), rate=_share(flags), interval=wilson_interval(sum(flags), len(flags)))


class FamilyScores(BaseModel):
    """One system's figures on a family adapter's questions."""

    model_config = ConfigDict(extra="forbid")

    by_person: dict[str, Rate] = Field(
        ...,
        description="Recall per speaker, keyed by the person's name in profile order: the share correct of the "
        "first-person fact questions (paraphrase, typo, indirect, reverse; own and shared facts) that person asks.",
    )
    third_person: Rate = Field(
        ..., description="Recall over third_person questions (another person's public fact, any speaker)."
    )
    cross_person_leakage: Rate = Field(
        ...,
        description="Share of the first-person questions with a speaker (fact kinds and unknown) whose answer states "
        "a value of another person's fact that is not among the expected values (see cross_person_values); lower "
        "is better.",
    )
    private_disclosure: Rate = Field(
        ...,
        description="Share of private questions whose answer states a value of a private fact the speaker may not "
        "be told (the speaker's disclosure guard finds it); lower is better.",
    )


class FamilyMetrics(BaseModel):
    """What a family adapter is measured on besides the report's kinds: per speaker, across people, privacy."""

    model_config = ConfigDict(extra="forbid")

    people: list[str] = Field(..., description="The family's people, in profile order.")
    systems: dict[str, FamilyScores] = Field(
        ...,
        description="The figures of 'adapter' (the evaluated system: the adapter, through its gate when it has "
        "one, with the disclosure guard) and of each baseline run ('adapter_alone': no gate, no guard; 'base'; "
        "'in_context').",
    )


class EvalReport(BaseModel):
    """What :func:`evaluate` returns; :meth:`to_json` is the shape the CLI prints with ``--json``."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(..., description="The base model the adapter was evaluated on.")
    adapter: str = Field(..., description="The adapter directory.")
    system: str = Field(
        "adapter",
        description="What the top-level metrics measure: 'adapter+gate' (the default when the adapter "
        "has a gate) or 'adapter'; for a family adapter '+guard' is added (the disclosure guard, as chat applies it).",
    )
    n: int = Field(..., description="Number of questions.")
    recall: float | None = Field(
        ..., description="Share correct over paraphrase, typo, indirect and reverse (and third_person on a family)."
    )
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
    retention_alone: Retention | None = Field(
        None, description="Retention of the adapter without its gate (and, for a family, without the guard)."
    )
    family: FamilyMetrics | None = Field(
        None, description="Family adapters: recall per speaker, third-person recall, leakage and disclosure."
    )
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

        for kind in ALL_KINDS:
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
        if self.family is not None:
            lines += self._family_lines(systems, pct)
        if self.routing is not None:
            lines.append(
                f"gate routing: {pct(self.routing.accuracy)} as expected; fact questions sent away from the adapter: "
                f"{self.routing.known_sent_away}"
            )
        lines.append("over-trigger counts a profile value only when the base model's own answer does not state it")
        lines.append(f"{self.n} questions in {self.seconds:.1f}s on {self.base_model}")
        return "\n".join(lines)

    def _family_lines(self, systems: list[str], pct: Callable[[float | None], str]) -> list[str]:
        family = self.family
        if family is None:
            return []
        shown = [s for s in systems if s in family.systems]
        lines = [
            "-" * (19 + 14 * len(systems)),
            f"family of {len(family.people)}: recall by speaker (first-person fact questions), then across people",
        ]

        def row(label: str, rates: dict[str, Rate]) -> str:
            n = next(iter(rates.values())).n if rates else 0
            return f"{label[:14]:<14}{n:>5}" + "".join(
                f"{pct(rates[s].rate if s in rates else None):>14}" for s in systems
            )

        for person in family.people:
            lines.append(row(f"  {person}", {s: family.systems[s].by_person[person] for s in shown}))
        lines.append(row("third person", {s: family.systems[s].third_person for s in shown}))
        lines.append(row("leaked", {s: family.systems[s].cross_person_leakage for s in shown}))
        lines.append(row("disclosed", {s: family.systems[s].private_disclosure for s in shown}))
        lines.append(
            "leaked: the share of first-person answers (fact and unknown questions) that state another person's value"
        )
        lines.append("disclosed: the share of private questions answered with a value the speaker may not be told")
        return lines


def _share(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def compute_metrics(questions: Sequence[Question], answers: Sequence[str], correct: Sequence[bool]) -> SystemMetrics:
    """Aggregate one system's per-item results into :class:`SystemMetrics`."""
    by_kind: dict[str, KindScore] = {}
    for kind in ALL_KINDS:
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


def compute_family_metrics(
    profile: Profile, questions: Sequence[Question], answers: Sequence[str], correct: Sequence[bool]
) -> FamilyScores:
    """One system's :class:`FamilyScores` on a family adapter's questions (see its fields for the definitions).

    Args:
        profile: the family's profile.
        questions: the questions (their ``speaker`` names a person of ``profile`` or is null).
        answers: the system's answers, as scored (for the product: after the disclosure guard).
        correct: the verdicts of :func:`score_answer` on them.

    Raises:
        EvaluationError: a question names a speaker who is not one of the family.
    """
    rows = list(zip(questions, answers, correct, strict=True))
    speakers = [question_speaker(q, profile, where=f"question {i}") for i, q in enumerate(questions, start=1)]
    first_person = [i for i, (q, _, _) in enumerate(rows) if q.kind in FIRST_PERSON_KINDS and speakers[i] is not None]
    by_person = {
        person.name: Rate.of(
            [correct[i] for i in first_person if speakers[i] is not None and speakers[i].name == person.name]
        )
        for person in profile.people
    }
    # Leakage is over every first-person question with a speaker, the "I don't know" ones included: the child's
    # "What's my job?" answered with Dad's job is the leak the rule is about.
    asked = [
        *first_person,
        *(i for i, (q, _, _) in enumerate(rows) if q.kind == "unknown" and speakers[i] is not None),
    ]
    leaked = [bool(cross_person_values(profile, questions[i], answers[i])) for i in asked]
    disclosed = [
        disclosure_guard(profile, speakers[i]).check(a, q.question) is not None
        for i, (q, a, _) in enumerate(rows)
        if q.kind == "private"
    ]
    return FamilyScores(
        by_person=by_person,
        third_person=Rate.of([c for q, _, c in rows if q.kind == "third_person"]),
        cross_person_leakage=Rate.of(leaked),
        private_disclosure=Rate.of(disclosed),
    )


# Where each kind of question belongs. A private question goes to the adapter: it was trained to refuse and to say
# whose fact it is (declining it is safe too, but is counted as a miss here).
EXPECTED_ROUTE = {
    "paraphrase": "adapter",
    "typo": "adapter",
    "indirect": "adapter",
    "reverse": "adapter",
    "third_person": "adapter",
    "private": "adapter",
    "identity": "adapter",
    "unknown": "abstain",
    "unrelated": "base",
    "general": "base",
}


def compute_routing(questions: Sequence[Question], routes: Sequence[str], *, family: bool = False) -> Routing:
    """The gate's routing per kind, and the share of questions routed where their kind belongs.

    On a family adapter an ``unknown`` question may also go to the adapter: "What's my job?" is known for one
    speaker and unknown for another, the gate sees only the question, and the adapter knows who is asking.
    """
    by_kind: dict[str, dict[str, int]] = {}
    for q, r in zip(questions, routes, strict=True):
        by_kind.setdefault(q.kind, {}).setdefault(r, 0)
        by_kind[q.kind][r] += 1
    hits = [
        EXPECTED_ROUTE[q.kind] == r or (family and q.kind == "unknown" and r == "adapter")
        for q, r in zip(questions, routes, strict=True)
    ]
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


def family_facts_prompt(profile: Profile, speaker: Person | None) -> str:
    """The in-context baseline's system prompt for a family: the speaker's prompt and what they may be told.

    Each person's facts are listed under their name (and the shared ones apart), so "my birthday" can be answered
    from the prompt; the private facts the speaker may not be told are left out, as a careful in-context product
    would do, so the baseline cannot disclose them except by chance.
    """
    withheld = withheld_facts(profile, speaker)
    lines = [speaker_system_prompt(profile, speaker), f"Here is what you know about {household_name(profile)}:"]

    def listed(facts: Sequence[Any]) -> list[str]:
        out = []
        for fact in facts:
            if fact in withheld:
                continue
            also = f" (also: {', '.join(fact.aliases)})" if fact.aliases else ""
            out.append(f"- {fact.topic}: {fact.value}{also}")
        return out

    for person in profile.people:
        own = listed(profile.facts_of(person.name))
        if own:
            lines += [f"{describe(person)}:", *own]
    shared = listed(profile.facts_of(None))
    if shared:
        lines += ["Shared by the whole family:", *shared]
    if speaker is not None:
        lines.append(f'"I", "me" and "my" mean {speaker.name}.')
    lines.append("Answer from these facts. If something is not listed, say that you don't know.")
    return "\n".join(lines)


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

    For a family adapter each question is asked under its speaker's system prompt (held-out examples keep their
    own), the evaluated system also applies the speaker's disclosure guard (an answer stating a value the speaker
    may not be told is replaced by the refusal, as in chat), ``adapter_alone`` is the adapter with neither gate nor
    guard, the in-context baseline lists the facts per person (:func:`family_facts_prompt`), and the report has
    :class:`FamilyMetrics`.

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
        EvaluationError: the questions are invalid (a speaker who is not one of the family, or any speaker on a
            one-person adapter, included) or a baseline name is unknown.
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
    family = profile.is_family
    values = [v for v in profile.values() if v]
    if questions is None:
        items = heldout_questions(found)
    elif isinstance(questions, (str, Path)):
        items = load_questions(questions, profile=profile)
    else:
        items = list(questions)
    if not items:
        raise EvaluationError("No questions to evaluate.", param="questions")
    speakers = [question_speaker(q, profile, where=f"question {i}") for i, q in enumerate(items, start=1)]
    guards = [disclosure_guard(profile, person) for person in speakers]
    trained_system = found.private.system_prompt or None
    router = found.gate() if gate else None

    def progress(fraction: float, message: str) -> None:
        if on_progress is not None:
            on_progress(min(1.0, fraction), message)

    progress(0.0, "loading the base model")
    loaded = load_model(base_model or found.base_model)
    model = found.attach(loaded)
    tokenizer = loaded.tokenizer
    # A family's question is asked as its speaker (or as nobody in particular): the prompt chat uses for them.
    defaults = [speaker_system_prompt(profile, p) if family else trained_system for p in speakers]
    own = [_conversation(q, _system_prompt_of(q, d)) for q, d in zip(items, defaults, strict=True)]
    routes: list[str] = ["adapter"] * len(items)
    if router is not None:
        progress(0.02, f"routing {len(items)} questions through the gate")
        routes = list(router.route(model, tokenizer, [q.question for q in items]))
        if not family:
            # As chat does: a question sent to the adapter that the adapter itself doubts enough is declined.
            kept = [i for i, r in enumerate(routes) if r == "adapter"]
            for i, declined in zip(kept, router.declined(model, tokenizer, [own[i] for i in kept]), strict=True):
                if declined:
                    routes[i] = "abstain"
    answers: dict[str, list[str]] = {}
    progress(0.05, f"answering {len(items)} questions with the adapter")
    answers["adapter"] = _generate(model, tokenizer, own, max_new_tokens, batch_size)
    # The base model answers: the baselines asked for, and (always) what the gate sends to it and the unrelated
    # items, whose over-trigger is measured against the base model's own answer.
    needed = {i for i, q in enumerate(items) if q.kind == "unrelated" or routes[i] == "base"}
    base_rows = list(range(len(items))) if "base" in baselines else sorted(needed)
    jobs = [own[i] for i in base_rows]
    if "in_context" in baselines:
        if family:
            jobs += [_conversation(q, family_facts_prompt(profile, p)) for q, p in zip(items, speakers, strict=True)]
        else:
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
    withheld: list[bool] = []
    if family:
        # The guard, as chat applies it to every answer of a family adapter: what the gate routed included.
        if "adapter_alone" not in answers:
            answers["adapter_alone"] = answers["adapter"]
            systems.insert(1, "adapter_alone")
        # Both rules: another's private value never; another's value in the adapter's answer to a question that
        # names no one else ("my job" from the child) is replaced by "I don't know", as chat does.
        refusals = [  # without a gate every route is "adapter"
            g.check(a, q.question) or (g.check_first_person(a, q.question) if r == "adapter" else None)
            for g, a, q, r in zip(guards, answers["adapter"], items, routes, strict=True)
        ]
        withheld = [r is not None for r in refusals]
        answers["adapter"] = [a if r is None else r for a, r in zip(answers["adapter"], refusals, strict=True)]
    progress(1.0, "scoring")

    def score(system: str, i: int, q: Question) -> bool:
        reference = None if system in ("base",) else base_answers.get(i)
        return score_answer(q, answers[system][i], values, base_answer=reference, guard=guards[i])

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
            speaker=speakers[i].name if speakers[i] is not None else None,
            withheld=withheld[i] if family else None,
        )
        for i, q in enumerate(items)
    ]
    report = EvalReport(
        base_model=loaded.name,
        adapter=str(found.path),
        system=("adapter+gate" if router is not None else "adapter") + ("+guard" if family else ""),
        n=len(items),
        recall=main.recall,
        by_kind=main.by_kind,
        over_trigger_rate=main.over_trigger_rate,
        abstention_rate=main.abstention_rate,
        intervals=main.intervals,
        retention=compute_retention(items, correct["adapter"], correct.get("base")),
        baselines={b: compute_metrics(items, answers[b], correct[b]) for b in others},
        routing=compute_routing(items, routes, family=family) if router is not None else None,
        retention_alone=(
            compute_retention(items, correct["adapter_alone"], correct.get("base"))
            if "adapter_alone" in correct
            else None
        ),
        family=(
            FamilyMetrics(
                people=[p.name for p in profile.people],
                systems={s: compute_family_metrics(profile, items, answers[s], correct[s]) for s in systems},
            )
            if family
            else None
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
