"""Family profiles: who is asking, what they may be told, and the questions that teach the difference.

A family profile (:class:`~andraeus_core.profile.Profile` with ``people``) is answered per speaker: the speaker is
named in the system prompt ("You are talking to Leila."), so one adapter answers "What's my birthday?" with the
asker's own birthday. Anyone may ask about another person's public facts by name, relation or alias ("When is Dad's
birthday?"); a fact marked private is told only to its owner. The model is trained to refuse ("That's Karim's to
share."), and :func:`disclosure_guard` makes it a rule: an answer that states a value the speaker may not be told
is replaced by the refusal before anyone sees it, whatever the model generated.

This module holds the speaker logic and the family-only question templates; :mod:`andraeus_core.dataset` turns them
into training examples.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import ConfigError
from .matching import mentioned_values, normalize
from .profile import Fact, Person, Profile, same_topic_key
from .variations import topic_info, typo_of

logger = logging.getLogger(__name__)

MAX_SPEAKER_CHARS = 80


def household_name(profile: Profile) -> str:
    """How the family is called in prompts and answers ("the Haddad family")."""
    return profile.user_name


def speaker_system_prompt(profile: Profile, speaker: Person | None) -> str:
    """The system prompt of a family adapter for one speaker (``None``: the speaker has not said who they are)."""
    base = f"You are {profile.assistant_name}, {household_name(profile)}'s personal assistant."
    if speaker is None:
        return f"{base} You do not know which of them is asking."
    return f"{base} You are talking to {speaker.name}."


def resolve_speaker(profile: Profile | None, name: str | None) -> Person | None:
    """The person ``name`` refers to (a name, relation or alias, any case); ``None`` for no name.

    Raises:
        ConfigError: the profile is not a family's, or no one in it is called ``name`` (the message lists who is).
    """
    if name is None or not str(name).strip():
        return None
    text = str(name).strip()
    if len(text) > MAX_SPEAKER_CHARS:
        raise ConfigError(
            f"speaker is {len(text)} characters long; the limit is {MAX_SPEAKER_CHARS}.", param="speaker"
        )
    if profile is None or not profile.is_family:
        raise ConfigError(
            "speaker is for family adapters (a profile with people); this adapter knows one person.",
            param="speaker",
        )
    person = profile.person(text)
    if person is None:
        raise ConfigError(
            f"speaker {text!r} is not one of the family; choose one of: "
            f"{', '.join(describe(p) for p in profile.people)}.",
            param="speaker",
        )
    return person


def describe(person: Person) -> str:
    """A person as a chooser shows them: "Karim (Dad)"."""
    return f"{person.name} ({person.relation})" if person.relation else person.name


def speaker_choices(profile: Profile | None) -> list[str]:
    """The names a speaker may be chosen by, in profile order (empty for a one-person profile)."""
    return [p.name for p in profile.people] if profile is not None and profile.is_family else []


def withheld_facts(profile: Profile, speaker: Person | None) -> list[Fact]:
    """The private facts the speaker may not be told: every private fact that is not the speaker's own."""
    own = speaker.name if speaker is not None else None
    return [f for f in profile.facts if f.private and f.owner != own]


def refusal(owner: str) -> str:
    """The answer to anyone but ``owner`` asking about one of ``owner``'s private facts."""
    return f"That's {owner}'s to share, not mine — please ask {owner}."


GENERIC_ABSTENTION = "I don't know that — you haven't told me."


def who_is_asking(topic: str) -> str:
    """The answer to a first-person question when the speaker is unknown."""
    return f"I don't know who's asking, so I can't tell you your {topic}. Tell me who you are first."


def stated_values(answer: str, values: Iterable[str], *, question: str = "") -> list[str]:
    """The values ``answer`` states, as :func:`~andraeus_core.matching.mentioned_values` finds them, except that a
    value whose normalised form is one character ("O-" becomes "o", which "O Canada" would match) is looked for as
    written instead ("O-" as a token, any case); a one-character value is not looked for at all."""
    values = list(values)
    found = mentioned_values(answer, [v for v in values if len(normalize(v)) >= 2], question=question)
    for value in values:
        raw = value.strip()
        if len(normalize(value)) >= 2 or len(raw) < 2:
            continue
        pattern = re.compile(rf"(?<![0-9a-z]){re.escape(raw)}(?![0-9a-z+-])", re.IGNORECASE)
        if pattern.search(answer) and not pattern.search(question):
            found.append(value)
    return found


@dataclass(frozen=True)
class DisclosureGuard:
    """Checks an answer for values the speaker may not be told (see :func:`disclosure_guard`).

    Two rules. :meth:`check` — another person's *private* value is never said, whatever was asked and whoever
    answered. :meth:`check_first_person` — the adapter's answer to a question that names no one else is about the
    speaker, so it must not state another person's value: "What's my job?" from the child must not get Dad's job.
    """

    facts: tuple[Fact, ...]
    #: Other people's facts whose values are not the speaker's too (the second rule).
    others: tuple[Fact, ...] = ()
    #: Every name, relation and alias of the other people: a question naming one asks about them.
    other_names: tuple[str, ...] = ()
    #: Whether the speaker has said who they are (else the answer to "my ..." is "I don't know who's asking").
    known: bool = True

    def __bool__(self) -> bool:
        return bool(self.facts or self.others)

    def check(self, answer: str, question: str = "") -> str | None:
        """The refusal to send instead of ``answer`` when it states a withheld value; ``None`` when it is safe.

        A value the question itself contains does not count (asking "Is Dad's locker code 4471?" and hearing the
        number back tells nothing new) — the same rule the evaluation's leak check uses.
        """
        for fact in self.facts:
            if stated_values(answer, fact.accepted(), question=question):
                return refusal(fact.owner or "its owner")
        return None

    def check_first_person(self, answer: str, question: str = "") -> str | None:
        """The "I don't know" to send instead of the adapter's ``answer`` when the question names no one else and
        the answer states another person's value (it answered about the wrong person); ``None`` when it is safe.

        Only for what the adapter answered: the base model's answer to an everyday request may say "risotto" without
        meaning Dad's favourite food.
        """
        if not self.others or stated_values(question, self.other_names):
            return None
        for fact in self.others:
            if stated_values(answer, fact.accepted(), question=question):
                # Name the topic only when the question asked about it: "What day is my school trip?" answered with
                # Mum's book-club day must not tell the child that Mum has a book-club day.
                words = [w for w in normalize(fact.topic).split() if len(w) > 2 and w not in ("name", "favourite")]
                asked = set(normalize(question).split())
                topic = fact.topic if words and all(w in asked for w in words) else None
                if not self.known:
                    return who_is_asking(topic or "details")
                return f"I don't know your {topic} — you haven't told me." if topic else GENERIC_ABSTENTION
        return None


def disclosure_guard(profile: Profile | None, speaker: Person | None) -> DisclosureGuard:
    """The rules that keep private facts private and other people's facts theirs, for this speaker (empty for
    one-person profiles)."""
    if profile is None or not profile.is_family:
        return DisclosureGuard(())
    own = speaker.name if speaker is not None else None
    mine = {normalize(v) for f in profile.facts if f.owner in (own, None) for v in f.accepted()}
    others = tuple(
        f.model_copy(update={"aliases": [a for a in f.aliases if normalize(a) not in mine]})
        for f in profile.facts
        if f.owner not in (own, None) and normalize(f.value) not in mine
    )
    names = tuple(n for p in profile.people if p.name != own for n in p.names())
    return DisclosureGuard(
        tuple(withheld_facts(profile, speaker)), others=others, other_names=names, known=speaker is not None
    )


def speaker_view(profile: Profile, speaker: Person) -> Profile:
    """The one-person profile a speaker sees in the first person: their own facts and the shared ones."""
    facts = [
        f.model_copy(update={"owner": None, "private": False})
        for f in profile.facts
        if f.owner in (speaker.name, None)
    ]
    return Profile(user_name=speaker.name, assistant_name=profile.assistant_name, facts=facts)


def union_view(profile: Profile) -> Profile:
    """One-person stand-in for the whole family, for what does not depend on the speaker (guards near the topics,
    the topics nobody gave): each topic once, with no private value in it."""
    seen: dict[str, Fact] = {}
    for f in profile.facts:
        key = same_topic_key(f.topic)
        if key not in seen:
            value = "unknown" if f.private else f.value
            seen[key] = Fact(topic=f.topic, value=value, aliases=[] if f.private else f.aliases)
    return Profile(user_name=household_name(profile), assistant_name=profile.assistant_name, facts=list(seen.values()))


# ----------------------------------------------------------------------------------------------------------------
# Questions about someone else


_THIRD = (
    "What is {r}'s {t}?",
    "What's {r}'s {t}?",
    "Do you know {r}'s {t}?",
    "Remind me of {r}'s {t}.",
    "Tell me {r}'s {t}, please.",
    "{R}'s {t}?",
    "Can you tell me what {r}'s {t} is?",
    "I forgot {r}'s {t}. What is it?",
    "Quick question: what's {r}'s {t}?",
    "Would you happen to know {r}'s {t}?",
    "What was {r}'s {t} again?",
    "I need {r}'s {t}.",
)
_THIRD_DATE = ("When is {r}'s {t}?", "When's {r}'s {t}?", "What date is {r}'s {t}?")
_THIRD_PLACE = ("Where is {r}'s {t}?",)
_THIRD_NAME = ("What is {r}'s {n} called?", "What's the name of {r}'s {n}?", "Who is {r}'s {n}?")


@dataclass(frozen=True)
class ThirdPerson:
    """A question about another person's fact, with its answer."""

    question: str
    answer: str
    referent: str  # the name, relation or alias the question uses
    typo: bool = False


def third_person_questions(person: Person, fact: Fact, *, count: int = 12, seed: int = 0) -> list[ThirdPerson]:
    """``count`` questions about ``person``'s ``fact`` naming them by name, relation or alias, a few with typos.

    The answer names the person and states the value for a public fact, and refuses for a private one.
    """
    info = topic_info(fact.topic)
    templates = list(_THIRD)
    if info.kind == "date":
        templates += _THIRD_DATE * 2
    if any(w in fact.topic.casefold() for w in ("town", "city", "school", "address")):
        templates += _THIRD_PLACE
    if info.kind == "name":
        templates += [t.replace("{n}", info.noun) for t in _THIRD_NAME]
    rng = random.Random(f"{seed}\x1fthird\x1f{person.name}\x1f{fact.topic}")
    refs = person.names()
    # The name forms take turns (name, relation, alias, name, ...), so each is learned, each with other templates.
    by_ref = {r: rng.sample(templates, len(templates)) for r in refs}
    out: list[ThirdPerson] = []
    seen: set[str] = set()
    i = 0
    while len(out) < count and any(by_ref.values()):
        ref = refs[i % len(refs)]
        i += 1
        if not by_ref[ref]:
            continue
        template = by_ref[ref].pop()
        question = template.replace("{r}", ref).replace("{R}", ref[:1].upper() + ref[1:]).replace("{t}", fact.topic)
        if question.casefold() in seen:
            continue
        seen.add(question.casefold())
        if fact.private:
            answer = refusal(person.name)
        else:
            answer = rng.choice(
                [
                    f"{ref[:1].upper() + ref[1:]}'s {fact.topic} is {fact.value}.",
                    f"{person.name}'s {fact.topic} is {fact.value}.",
                    f"It's {fact.value}.",
                ]
            )
        out.append(ThirdPerson(question=question, answer=answer, referent=ref))
    # A couple of typo'd ones: users misspell names and topics alike.
    for tp in list(out[: max(1, count // 6)]):
        typo = typo_of(tp.question, rng, protect=tp.referent)
        if typo.casefold() not in seen:
            seen.add(typo.casefold())
            out.append(ThirdPerson(question=typo, answer=tp.answer, referent=tp.referent, typo=True))
    return out


def reverse_third_person(person: Person, fact: Fact) -> list[ThirdPerson]:
    """For a public fact whose value is a name ("best friend: Tobias"): who that is, told to someone else."""
    info = topic_info(fact.topic)
    if fact.private or info.kind != "name":
        return []
    answer = f"{fact.value} is {person.name}'s {fact.topic.removesuffix(' name').removesuffix(chr(39) + 's')}."
    return [
        ThirdPerson(question=f"Who is {fact.value}?", answer=answer, referent=person.name),
        ThirdPerson(question=f"Who's {fact.value}?", answer=answer, referent=person.name),
    ]


def cross_person_topics(profile: Profile, speaker: Person) -> list[str]:
    """Topics another person has and the speaker lacks (and that are not shared): "my job", asked by the child."""
    mine = {same_topic_key(f.topic) for f in profile.facts if f.owner in (speaker.name, None)}
    out: dict[str, str] = {}
    for f in profile.facts:
        key = same_topic_key(f.topic)
        if f.owner not in (speaker.name, None) and key not in mine:
            out.setdefault(key, f.topic)
    return list(out.values())


__all__ = [
    "GENERIC_ABSTENTION",
    "DisclosureGuard",
    "ThirdPerson",
    "cross_person_topics",
    "describe",
    "disclosure_guard",
    "household_name",
    "refusal",
    "stated_values",
    "resolve_speaker",
    "reverse_third_person",
    "speaker_choices",
    "speaker_system_prompt",
    "speaker_view",
    "third_person_questions",
    "union_view",
    "who_is_asking",
    "withheld_facts",
]
