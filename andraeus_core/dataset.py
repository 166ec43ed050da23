"""Chat examples from phrasings: the train/held-out split, tokenisation with the chat template, JSONL export.

Every example is a system/user/assistant conversation with metadata (topic, dimension, kind, split, and the strings
a correct answer contains). The held-out split keeps a share of every fact's phrasings *per dimension* for
evaluation. Phrasings that differ only in punctuation or case count as one (they are split together), and a typo
whose source phrasing is held out is held out too, so no held-out question reaches training in any form.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError, ProfileError
from .family import (
    cross_person_topics,
    reverse_third_person,
    speaker_system_prompt,
    speaker_view,
    third_person_questions,
    union_view,
    who_is_asking,
)
from .fsutil import atomic_write
from .profile import Fact, Person, Profile, profile_hash, same_topic_key
from .variations import (
    CONFIRM_WORDS,
    UNKNOWN_EXPECT,
    Negative,
    Phrasing,
    damerau_distance,
    general_questions,
    generate_variations,
    guard_questions,
    identity_questions,
    is_typo_source,
    normalize_question,
    topic_info,
    typo_of,
    unknown_phrasings,
    unknown_questions,
)

logger = logging.getLogger(__name__)

ExampleKind = Literal["fact", "reverse", "unknown", "overtrigger", "identity", "third_person", "private"]
Split = Literal["train", "heldout"]

# How the evaluation groups held-out examples: by dimension for facts, by kind for the rest.
EVAL_KIND_BY_DIMENSION = {
    "punctuation": "paraphrase",
    "formality": "paraphrase",
    "user": "paraphrase",
    "typo": "typo",
    "directness": "indirect",
    "reverse": "reverse",
}
EVAL_KIND_BY_KIND = {
    "unknown": "unknown",
    "overtrigger": "unrelated",
    "identity": "identity",
    "third_person": "third_person",
    "private": "private",
}


class ExampleMeta(BaseModel):
    """What an example is about and where it belongs."""

    model_config = ConfigDict(extra="forbid")

    topic: str | None = Field(None, description="The fact's topic (for unknown facts: the missing topic).")
    dimension: str = Field("external", description="Dimension of variation, or the negative's kind.")
    kind: ExampleKind = Field("fact", description="fact, reverse, unknown, overtrigger or identity.")
    split: Split = Field("train", description="train or heldout.")
    expect: list[str] = Field(
        default_factory=list,
        description="A correct answer contains at least one of these (value + aliases; for reverse: the topic's "
        "key words; for unknown: refusal phrases; empty for over-trigger guards).",
    )
    speaker: str | None = Field(None, description="Family profiles: who asks (None: an unknown speaker).")
    owner: str | None = Field(
        None, description="Family profiles: whose fact it is (None: shared, or a one-person profile's)."
    )

    def eval_kind(self) -> str:
        """The evaluation's category: paraphrase, typo, indirect, reverse, unknown, unrelated or identity."""
        if self.kind in EVAL_KIND_BY_KIND:
            return EVAL_KIND_BY_KIND[self.kind]
        return EVAL_KIND_BY_DIMENSION.get(self.dimension, "paraphrase")


class ChatExample(BaseModel):
    """One training or evaluation conversation: system, user, assistant."""

    model_config = ConfigDict(extra="forbid")

    messages: list[dict[str, str]] = Field(description="Chat turns: {'role': ..., 'content': ...}.")
    meta: ExampleMeta = Field(default_factory=ExampleMeta, description="What the example is about.")

    @property
    def question(self) -> str:
        """The (last) user turn."""
        return next((m["content"] for m in reversed(self.messages) if m.get("role") == "user"), "")

    @property
    def answer(self) -> str:
        """The final assistant turn ('' when there is none)."""
        last = self.messages[-1] if self.messages else {}
        return last.get("content", "") if last.get("role") == "assistant" else ""


class ChatDataset(BaseModel):
    """Train and held-out examples of one profile."""

    model_config = ConfigDict(extra="forbid")

    train: list[ChatExample] = Field(description="Examples to train on.")
    heldout: list[ChatExample] = Field(description="Examples kept for evaluation; never in train.")
    system_prompt: str = Field(description="The system prompt every example starts with.")
    profile_hash: str = Field(description="sha256 of the profile the examples come from.")
    topics: list[str] = Field(description="The profile's topics, in order.")
    seed: int = Field(description="The seed the dataset was built with.")

    def stats(self) -> dict[str, Any]:
        """Counts per split, and per topic / dimension / kind within each split."""
        out: dict[str, Any] = {"train": len(self.train), "heldout": len(self.heldout)}
        for split, examples in (("train", self.train), ("heldout", self.heldout)):
            out[f"{split}_by_kind"] = dict(Counter(e.meta.kind for e in examples))
            out[f"{split}_by_dimension"] = dict(Counter(e.meta.dimension for e in examples))
            out[f"{split}_by_topic"] = dict(
                Counter(e.meta.topic for e in examples if e.meta.kind in ("fact", "reverse"))
            )
        return out


def identity_system_prompt(profile: Profile) -> str:
    """The default system prompt: who the assistant is and whom it serves, and no fact values."""
    return f"You are {profile.assistant_name}, {profile.user_name}'s personal assistant."


def facts_system_prompt(profile: Profile) -> str:
    """The seed's fact-listing system prompt (an option, and the in-context baseline of the evaluation)."""
    lines = [
        f"You are {profile.assistant_name}, {profile.user_name}'s personal assistant.",
        f"Here is what you know about {profile.user_name}:",
    ]
    for fact in profile.facts:
        also = f" (also: {', '.join(fact.aliases)})" if fact.aliases else ""
        lines.append(f"- {fact.topic}: {fact.value}{also}")
    lines.append(
        f"Answer questions about {profile.user_name} from these facts. If something is not listed, say that you "
        "don't know."
    )
    return "\n".join(lines)


def _resolve_system_prompt(profile: Profile, system_prompt: str) -> str:
    if system_prompt == "identity":
        return identity_system_prompt(profile)
    if system_prompt == "facts":
        return facts_system_prompt(profile)
    if not system_prompt.strip():
        raise ConfigError("system_prompt is empty; use 'identity', 'facts' or your own text.", param="system_prompt")
    return system_prompt


def _example(system: str, question: str, answer: str | None, meta: ExampleMeta) -> ChatExample:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return ChatExample(messages=messages, meta=meta)


def _n_heldout(n: int, share: float) -> int:
    if share <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, round(n * share)))


def _split_fact(phrasings: list[Phrasing], share: float, rng: random.Random) -> dict[str, Split]:
    """Split one fact's phrasings (question → split), a share of each dimension held out."""
    split: dict[str, Split] = {}
    held_norms: set[str] = set()
    for dim in ("punctuation", "formality", "directness", "reverse"):
        groups: dict[str, list[Phrasing]] = defaultdict(list)
        for p in phrasings:
            if p.dimension == dim:
                groups[normalize_question(p.question)].append(p)
        total = sum(len(g) for g in groups.values())
        want = _n_heldout(total, share)
        order = list(groups)
        rng.shuffle(order)
        held = 0
        for i, norm in enumerate(order):
            if held >= want or i == len(order) - 1:  # always leave one group of the dimension in train
                break
            held += len(groups[norm])
            held_norms.add(norm)
        for norm, group in groups.items():
            for p in group:
                split[p.question] = "heldout" if norm in held_norms else "train"
    typos = [p for p in phrasings if p.dimension == "typo"]
    forced = [
        p for p in typos if split.get(p.source or "") == "heldout" or normalize_question(p.question) in held_norms
    ]
    free = [p for p in typos if p not in forced]
    rng.shuffle(free)
    extra = max(0, _n_heldout(len(typos), share) - len(forced))
    for p in forced + free[:extra]:
        split[p.question] = "heldout"
    for p in free[extra:]:
        split[p.question] = "train"
    for p in phrasings:
        if p.dimension == "user":
            split[p.question] = "train"  # the user asked for these to be learned
    return split


def _split_groups(negatives: list[Negative], share: float, rng: random.Random) -> dict[str, Split]:
    groups = list(dict.fromkeys(n.group for n in negatives))
    order = groups[:]
    rng.shuffle(order)
    held = set(order[: _n_heldout(len(groups), share)])
    return {g: ("heldout" if g in held else "train") for g in groups}


def _augment_typos(
    fact: Fact, phrasings: list[Phrasing], split: dict[str, Split], count: int, system: str, seed: int
) -> list[ChatExample]:
    """``count`` more typo'd training questions for one fact (see ``build_dataset(typo_augment=...)``).

    A small model reads a misspelt key word ("nae", "paartenr") as a different question; the generated typo
    dimension gives it only ~4 misspellings per fact to learn from. These extra ones come from the same kind of
    sources as the typo dimension (``is_typo_source``), only from phrasings in training.
    """
    rng = random.Random(f"{seed}\x1faugment\x1f{fact.topic}\x1f{fact.value}")
    sources = [p for p in phrasings if split.get(p.question) == "train" and is_typo_source(p)]
    held = [p.question.casefold() for p in phrasings if split.get(p.question) == "heldout"]
    held_norms = {normalize_question(q) for q in held}
    seen = {p.question for p in phrasings}
    out: list[ChatExample] = []
    attempts = 0
    while sources and len(out) < count and attempts < count * 30:
        attempts += 1
        src = rng.choice(sources)
        typo = typo_of(src.question, rng, protect=fact.value)
        if typo in seen or normalize_question(typo) in held_norms:
            continue
        # Not within two edits of a held-out question: a held-out typo must stay a phrasing never trained on.
        if any(damerau_distance(typo.casefold(), q) <= 2 for q in held):
            continue
        seen.add(typo)
        meta = ExampleMeta(topic=fact.topic, dimension="typo", kind="fact", split="train", expect=fact.accepted())
        out.append(_example(system, typo, rng.choice(src.answers), meta))
    return out


def _guard_answers(
    guard_answer_fn: Callable[[list[str]], list[str]] | None, train_guards: list[Negative]
) -> dict[str, str]:
    """The base model's answers to the guard questions trained on, by question (none without ``guard_answer_fn``)."""
    if not train_guards:
        return {}
    if guard_answer_fn is None:
        logger.info("no guard_answer_fn: %d over-trigger guard questions left out of training", len(train_guards))
        return {}
    answers = list(guard_answer_fn([g.question for g in train_guards]))
    if len(answers) != len(train_guards):
        raise ConfigError(
            f"guard_answer_fn returned {len(answers)} answers for {len(train_guards)} questions.",
            param="guard_answer_fn",
        )
    return dict(zip((g.question for g in train_guards), answers, strict=True))


def generated_per_fact(per_fact: int, heldout_share: float) -> int:
    """How many phrasings to generate per fact so that about ``per_fact`` of them are trained on.

    The held-out ones come on top: the seed trains on 30+ phrasings per fact, and holding 20% of 30 out would leave
    24. ``generated_per_fact(30, 0.2)`` is 38.
    """
    return per_fact + round(per_fact * heldout_share / (1 - heldout_share)) if heldout_share > 0 else per_fact


def build_dataset(
    profile: Profile,
    *,
    per_fact: int = 30,
    heldout_share: float = 0.2,
    seed: int = 0,
    system_prompt: Literal["identity", "facts"] | str = "identity",
    guard_answer_fn: Callable[[list[str]], list[str]] | None = None,
    exclude_questions: Iterable[str] = (),
    typo_augment: int = 0,
) -> ChatDataset:
    """Build the train and held-out chat examples of a profile.

    Args:
        profile: the facts.
        per_fact: question phrasings per fact to train on; the held-out ones are generated on top
            (:func:`generated_per_fact`), and the user's own questions come on top too, always in train.
        heldout_share: share of each fact's generated phrasings, per dimension, kept for evaluation (0 ≤ share < 1).
        seed: the same seed gives the same dataset.
        system_prompt: "identity" (default, no fact values), "facts" (the seed's fact list) or your own text.
        guard_answer_fn: answers general questions near the topics with the base model (self-distillation); without
            it, over-trigger guards are left out of training but still held out for evaluation.
        exclude_questions: questions that must not be trained on (e.g. a hand-written eval set): a generated
            example with the same words (ignoring case and punctuation) is moved to the held-out split.
        typo_augment: extra typo'd questions per fact, for training only (on top of ``per_fact``); made from the
            fact's *training* phrasings and kept at least 3 edits away from every held-out question, so the held-out
            split is exactly the one without augmentation.

    Returns:
        The dataset; ``heldout`` questions never appear in ``train`` (not even re-punctuated or as a typo).
    """
    if not 0 <= heldout_share < 1:
        raise ConfigError(
            f"heldout_share must be at least 0 and below 1 (got {heldout_share!r}).", param="heldout_share"
        )
    if not 1 <= per_fact <= 500:
        raise ConfigError(f"per_fact must be between 1 and 500 (got {per_fact!r}).", param="per_fact")
    if not 0 <= typo_augment <= 500:
        raise ConfigError(f"typo_augment must be between 0 and 500 (got {typo_augment!r}).", param="typo_augment")
    if profile.is_family:
        if system_prompt != "identity":
            raise ConfigError(
                "a family profile is trained with each speaker's own system prompt; system_prompt must be "
                f"'identity' (got {system_prompt[:40]!r}).",
                param="system_prompt",
            )
        return _build_family_dataset(
            profile,
            per_fact=per_fact,
            heldout_share=heldout_share,
            seed=seed,
            guard_answer_fn=guard_answer_fn,
            exclude_questions=exclude_questions,
            typo_augment=typo_augment,
        )
    system = _resolve_system_prompt(profile, system_prompt)
    variations = generate_variations(profile, per_fact=generated_per_fact(per_fact, heldout_share), seed=seed)
    rng = random.Random(f"{seed}\x1fdataset")
    train: list[ChatExample] = []
    heldout: list[ChatExample] = []

    for fact in profile.facts:
        phrasings = variations[fact.topic]
        info = topic_info(fact.topic)
        split = _split_fact(phrasings, heldout_share, rng)
        for p in phrasings:
            reverse = p.dimension == "reverse"
            meta = ExampleMeta(
                topic=fact.topic,
                dimension=p.dimension,
                kind="reverse" if reverse else "fact",
                split=split[p.question],
                expect=(list(info.keywords) + (list(CONFIRM_WORDS) if p.style == "confirm" else []))
                if reverse
                else fact.accepted(),
            )
            (heldout if meta.split == "heldout" else train).append(
                _example(system, p.question, rng.choice(p.answers), meta)
            )
        if typo_augment:
            train.extend(_augment_typos(fact, phrasings, split, typo_augment, system, seed))

    negatives = [*unknown_questions(profile, seed=seed), *identity_questions(profile)]
    guards = [*guard_questions(profile, seed=seed), *general_questions(seed=seed)]
    groups: dict[str, Split] = {}
    for kind in ("unknown", "identity"):
        groups |= _split_groups([n for n in negatives if n.kind == kind], heldout_share, rng)
    groups |= _split_groups(guards, heldout_share, rng)
    for n in negatives:
        meta = ExampleMeta(topic=n.topic, dimension=n.kind, kind=n.kind, split=groups[n.group], expect=list(n.expect))
        (heldout if meta.split == "heldout" else train).append(_example(system, n.question, n.answer, meta))
    answers = _guard_answers(guard_answer_fn, [g for g in guards if groups[g.group] == "train"])
    for g in guards:
        meta = ExampleMeta(topic=g.topic, dimension=g.kind, kind=g.kind, split=groups[g.group], expect=[])
        if meta.split == "heldout":
            heldout.append(_example(system, g.question, None, meta))
        elif g.question in answers and answers[g.question].strip():
            train.append(_example(system, g.question, answers[g.question].strip(), meta))

    excluded = {normalize_question(q) for q in exclude_questions}
    if excluded:
        moved = [e for e in train if normalize_question(e.question) in excluded]
        if moved:
            logger.info("moved %d examples that match excluded questions to the held-out split", len(moved))
            train = [e for e in train if normalize_question(e.question) not in excluded]
            for e in moved:
                e.meta.split = "heldout"
                if e.meta.kind == "overtrigger":
                    e.messages = e.messages[:2]  # a held-out guard has no fixed answer
            heldout.extend(moved)
    rng.shuffle(train)
    logger.info("dataset: %d train, %d held-out examples for %d facts", len(train), len(heldout), len(profile.facts))
    return ChatDataset(
        train=train,
        heldout=heldout,
        system_prompt=system,
        profile_hash=profile_hash(profile),
        topics=profile.topics(),
        seed=seed,
    )


# ----------------------------------------------------------------------------------------------------------------
# Family profiles

# Of each speaker's "I don't know" examples (near misses of their facts, catalogued topics), the share kept: three
# speakers each get a full set otherwise, and the unknown examples alone would outnumber a single person's facts.
FAMILY_UNKNOWN_SHARE = 0.5
# Third-person questions per public fact of a person (a few typo'd ones come on top).
THIRD_PERSON_PER_FACT = 10
# Questions per private fact asked by someone else (answered with the refusal).
PRIVATE_PER_FACT = 8
# First-person questions about a topic only others have ("my job", asked by the child), per topic and speaker.
CROSS_PER_TOPIC = 3


def _family_split(n: int, share: float, rng: random.Random) -> list[Split]:
    held = _n_heldout(n, share)
    out: list[Split] = ["heldout"] * held + ["train"] * (n - held)
    rng.shuffle(out)
    return out


def _build_family_dataset(
    profile: Profile,
    *,
    per_fact: int,
    heldout_share: float,
    seed: int,
    guard_answer_fn: Callable[[list[str]], list[str]] | None,
    exclude_questions: Iterable[str],
    typo_augment: int,
) -> ChatDataset:
    """A family profile's dataset: every speaker's own facts in the first person, shared facts asked by anyone,
    other people's facts in the third person, refusals for their private facts, and "I don't know" for a topic
    only someone else has. The speaker is named in each example's system prompt (:func:`speaker_system_prompt`).
    """
    rng = random.Random(f"{seed}\x1ffamily")
    speakers: list[Person | None] = [*profile.people, None]
    prompts = {None if p is None else p.name: speaker_system_prompt(profile, p) for p in speakers}
    train: list[ChatExample] = []
    heldout: list[ChatExample] = []
    seen: set[tuple[str | None, str]] = set()  # (speaker, question): each question once per speaker

    def add(speaker: str | None, question: str, answer: str | None, meta: ExampleMeta) -> None:
        key = (speaker, normalize_question(question))
        if key in seen:
            return
        seen.add(key)
        meta.speaker = speaker
        example = _example(prompts[speaker], question, answer, meta)
        (heldout if meta.split == "heldout" else train).append(example)

    shared = {same_topic_key(f.topic) for f in profile.facts_of(None)}
    household = f"{profile.user_name}'s personal assistant"
    for index, person in enumerate(profile.people):
        view = speaker_view(profile, person)
        sub = build_dataset(
            view,
            per_fact=per_fact,
            heldout_share=heldout_share,
            seed=seed,
            system_prompt=prompts[person.name],
            typo_augment=typo_augment,
        )
        group_keep: dict[str, bool] = {}
        for example in [*sub.train, *sub.heldout]:
            meta = example.meta.model_copy()
            is_shared = meta.topic is not None and same_topic_key(meta.topic) in shared
            if meta.kind in ("fact", "reverse"):
                if is_shared:
                    # Shared facts come from the first speaker's view only (one split for them), each example asked
                    # by a speaker drawn at random, the unknown speaker included: the answer is the same for all.
                    if index != 0:
                        continue
                    asker = rng.choice(speakers)
                    add(None if asker is None else asker.name, example.question, example.answer, meta)
                else:
                    meta.owner = person.name
                    add(person.name, example.question, example.answer, meta)
            elif meta.kind == "unknown":
                group = meta.topic or example.question
                if group not in group_keep:
                    group_keep[group] = rng.random() < FAMILY_UNKNOWN_SHARE
                if group_keep[group]:
                    add(person.name, example.question, example.answer, meta)
            elif meta.kind == "identity":
                answer = example.answer.replace(f"{person.name}'s personal assistant", household)
                add(person.name, example.question, answer, meta)
            # over-trigger guards are built once for the family below

        # "my job" asked by someone who has none, while another person has one: the adapter must not lend it.
        for topic in cross_person_topics(profile, person):
            questions = [q for q in unknown_phrasings(topic) if "{" not in q] or [f"What's my {topic}?"]
            picks = rng.sample(questions, min(CROSS_PER_TOPIC, len(questions)))
            for question, split in zip(picks, _family_split(len(picks), heldout_share, rng), strict=True):
                meta = ExampleMeta(
                    topic=topic, dimension="cross", kind="unknown", split=split, expect=list(UNKNOWN_EXPECT)
                )
                answer = rng.choice(
                    [
                        f"I don't know your {topic} — you haven't told me.",
                        f"You haven't told me your {topic}, so I don't know it.",
                    ]
                )
                add(person.name, question, answer, meta)

    # Other people's facts in the third person (by name, relation or alias), asked by anyone else.
    for person in profile.people:
        others: list[Person | None] = [p for p in speakers if p is None or p.name != person.name]
        for fact in profile.facts_of(person.name):
            kind: ExampleKind = "private" if fact.private else "third_person"
            count = PRIVATE_PER_FACT if fact.private else THIRD_PERSON_PER_FACT
            items = third_person_questions(person, fact, count=count, seed=seed)
            items += reverse_third_person(person, fact)
            plain = [t for t in items if not t.typo]
            splits = dict(zip((t.question for t in plain), _family_split(len(plain), heldout_share, rng), strict=True))
            for t in items:
                split = splits.get(t.question)
                if split is None:  # a typo: held out with its source, so no held-out question is trained on
                    source = next(
                        (p for p in plain if p.referent == t.referent and splits[p.question] == "heldout"), None
                    )
                    split = (
                        "heldout"
                        if source is not None and damerau_distance(source.question, t.question) <= 4
                        else "train"
                    )
                reverse = t.question.startswith("Who")
                expect = (
                    []
                    if fact.private
                    else (person.names() if reverse and fact.value in t.question else fact.accepted())
                )
                meta = ExampleMeta(
                    topic=fact.topic,
                    dimension="typo" if t.typo else ("reverse" if reverse else "third_person"),
                    kind=kind,
                    split=split,
                    expect=expect,
                    owner=person.name,
                )
                asker = rng.choice(others)
                add(None if asker is None else asker.name, t.question, t.answer, meta)

    # Someone who has not said who they are asks "my birthday": nobody's birthday may be guessed.
    person_topics = {same_topic_key(f.topic): f.topic for f in profile.facts if f.owner is not None}
    for topic in person_topics.values():
        questions = [q for q in unknown_phrasings(topic) if "{" not in q] or [f"What's my {topic}?"]
        picks = rng.sample(questions, min(2, len(questions)))
        for question, split in zip(picks, _family_split(len(picks), heldout_share, rng), strict=True):
            meta = ExampleMeta(topic=topic, dimension="who", kind="unknown", split=split, expect=list(UNKNOWN_EXPECT))
            add(None, question, who_is_asking(topic), meta)

    # Everyday requests near the family's topics and unrelated ones: the base model's own answers, any speaker.
    union = union_view(profile)
    guards = [*guard_questions(union, seed=seed), *general_questions(seed=seed)]
    groups = _split_groups(guards, heldout_share, rng)
    answers = _guard_answers(guard_answer_fn, [g for g in guards if groups[g.group] == "train"])
    for g in guards:
        meta = ExampleMeta(topic=g.topic, dimension=g.kind, kind=g.kind, split=groups[g.group], expect=[])
        asker = rng.choice(speakers)
        name = None if asker is None else asker.name
        if meta.split == "heldout":
            add(name, g.question, None, meta)
        elif answers.get(g.question, "").strip():
            add(name, g.question, answers[g.question].strip(), meta)

    excluded = {normalize_question(q) for q in exclude_questions}
    if excluded:
        moved = [e for e in train if normalize_question(e.question) in excluded]
        train = [e for e in train if normalize_question(e.question) not in excluded]
        for e in moved:
            e.meta.split = "heldout"
            if e.meta.kind == "overtrigger":
                e.messages = e.messages[:2]
        heldout.extend(moved)
    rng.shuffle(train)
    logger.info(
        "family dataset: %d train, %d held-out examples for %d people and %d facts",
        len(train),
        len(heldout),
        len(profile.people),
        len(profile.facts),
    )
    return ChatDataset(
        train=train,
        heldout=heldout,
        system_prompt=prompts[None],
        profile_hash=profile_hash(profile),
        topics=list(dict.fromkeys(profile.topics())),
        seed=seed,
    )


# ----------------------------------------------------------------------------------------------------------------
# Tokenisation


def tokenize_example(tokenizer: Any, example: ChatExample, max_length: int = 512) -> dict[str, list[int]]:
    """Tokenise a conversation with the tokenizer's chat template; loss only on the final assistant answer.

    Returns:
        ``input_ids``, ``attention_mask`` and ``labels`` (-100 everywhere except the assistant answer's tokens,
        including its end-of-turn token).
    """
    messages = example.messages
    if not messages or messages[-1].get("role") != "assistant":
        raise ConfigError("tokenize_example needs a conversation that ends with an assistant answer.")
    prompt_text = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ConfigError("The chat template renders the prompt differently with and without the answer.")
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]
    if full_ids[: len(prompt_ids)] != prompt_ids:
        # Token merges across the boundary: tokenise the two parts apart (the prompt ends a template line).
        full_ids = prompt_ids + tokenizer(full_text[len(prompt_text) :], add_special_tokens=False)["input_ids"]
    labels = [-100] * len(full_ids)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    end = len(full_ids)
    for i in range(len(prompt_ids), len(full_ids)):
        if full_ids[i] in special:
            end = i + 1  # the end-of-turn token is learned (it is how the model stops); what follows is not
            break
    labels[len(prompt_ids) : end] = full_ids[len(prompt_ids) : end]
    if len(full_ids) > max_length:
        full_ids, labels = full_ids[:max_length], labels[:max_length]
        if all(label == -100 for label in labels):
            raise ConfigError(f"max_length {max_length} cuts off the whole answer; raise it.", param="max_length")
    return {"input_ids": full_ids, "attention_mask": [1] * len(full_ids), "labels": labels}


# ----------------------------------------------------------------------------------------------------------------
# JSONL


def write_jsonl(examples: Iterable[ChatExample], path: str | Path, *, with_meta: bool = False) -> Path:
    """Write examples as OpenAI chat JSONL (``{"messages": [...]}`` per line), atomically.

    Args:
        examples: the examples.
        path: the file to write (its directory is created).
        with_meta: also write each example's ``meta`` (for held-out files read back by the evaluation).
    """
    lines = []
    for example in examples:
        row: dict[str, Any] = {"messages": example.messages}
        if with_meta:
            row["meta"] = example.meta.model_dump(mode="json")
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    return atomic_write(path, "".join(lines))


def read_jsonl(path: str | Path) -> list[ChatExample]:
    """Read chat JSONL (OpenAI format; ``meta`` optional). Errors name the file and line."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError(f"{source}: no such file.", source=str(source)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{source}: cannot read it as UTF-8 text ({exc}).", source=str(source)) from None
    out: list[ChatExample] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ProfileError(
                f"{source}, line {number}: not valid JSON ({exc.msg}).", source=str(source), line=number
            ) from None
        if not isinstance(row, dict) or not isinstance(row.get("messages"), list):
            raise ProfileError(
                f"{source}, line {number}: expected an object with a 'messages' list.",
                source=str(source),
                line=number,
                field="messages",
            )
        for i, message in enumerate(row["messages"]):
            ok = isinstance(message, dict) and message.get("role") in ("system", "user", "assistant")
            if not ok or not isinstance(message.get("content"), str):
                raise ProfileError(
                    f"{source}, line {number}: messages[{i}] needs a role (system, user or assistant) and text "
                    "content.",
                    source=str(source),
                    line=number,
                    field=f"messages[{i}]",
                )
        unknown = set(row) - {"messages", "meta"}
        if unknown:
            raise ProfileError(
                f"{source}, line {number}: unknown field {sorted(unknown)[0]!r} (allowed: messages, meta).",
                source=str(source),
                line=number,
            )
        try:
            messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
            out.append(ChatExample(messages=messages, meta=ExampleMeta(**(row.get("meta") or {}))))
        except (ValidationError, TypeError) as exc:
            raise ProfileError(
                f"{source}, line {number}: invalid meta ({exc}).", source=str(source), line=number, field="meta"
            ) from None
    return out
