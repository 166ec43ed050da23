"""Facts change: the diff between an adapter's profile and a new one, the update's dataset, and the lineage.

An update trains *from the parent adapter's weights* on what changed, not on everything again:

* the added, changed and renamed facts' phrasings (as a fresh run trains them);
* for a removed fact, its own questions answered "I don't know" (:func:`~.variations.removed_fact_questions`);
* for a changed fact, the reversed questions about the old value answered without claiming it ("Who is Buddy?" →
  "You haven't told me anything about Buddy."), and its yes/no questions answered "No — it's Max.";
* a replay sample of the unchanged facts and of the negatives (unknown topics, identity, over-trigger guards), so
  that what did not change is not forgotten (continuing on the new data alone degrades the old facts); a fact that
  only updates have taught since the last training from scratch is replayed whole, twice (:func:`updated_topics`);
* contrast: the unchanged facts' phrasings asked the way the update's "I don't know" questions are asked, and their
  reversed and yes/no questions, answered as before (:func:`contrast_examples`);
* a replay sample of the negatives of what earlier updates changed or removed (``AdapterPrivate.former_facts``).

The gate is fitted again for the new profile on the whole new dataset (it is cheap). The held-out split of the
unchanged facts is the parent's own, so their recall after the update is measured on phrasings never trained on in
any version; none of the parent's held-out questions is trained on. Lineage (``version``, ``parent``, the change
list — topics only) goes into :class:`~.adapter.AdapterMeta`.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .adapter import Adapter, LineageEntry, Method, ParentRef, TopicChange
from .config import TrainConfig
from .dataset import ChatDataset, ChatExample, ExampleMeta, build_dataset
from .errors import AdapterError, ConfigError
from .profile import Fact, Profile, same_topic_key
from .variations import (
    Negative,
    changed_fact_confirmations,
    normalize_question,
    old_value_questions,
    removed_fact_questions,
    removed_topic_questions,
)

logger = logging.getLogger(__name__)

#: Epochs of an update (from the parent's weights, on the changed facts, a replay sample and the contrast set). One,
#: not two, since the contrast set (:func:`contrast_examples`). The v2 update of bench/update.py (2026-12-06, two v1s
#: x three draws of the update's sampling, the same draws for each setting; ``--no-full --draw N``, ``--no-contrast``,
#: ``--update-epochs 2``) lost 8.0 points of the unchanged facts' held-out recall on average with 2 epochs and no
#: contrast, 5.2 with 2 epochs and contrast, 5.4 with 1 epoch and contrast at about 60% of the time (30% of a full
#: retrain), and 15.7 with 1 epoch and no contrast (four draws).
UPDATE_EPOCHS = 1
#: Highest learning rate of an update: it starts from trained weights, and the cpu preset's 1e-3 disrupted what it
#: did not change (bench/update.py, seed example: unchanged facts' held-out recall fell 15.1 points after one update
#: at 1e-3, 2.7 points at 3e-4, with the changed, removed and added facts as before; one draw of the update's
#: sampling each, and draws spread widely: see REPLAY_SHARE).
UPDATE_LEARNING_RATE = 3e-4
#: Share of each unchanged fact's training phrasings (and of the negatives) replayed in an update. 0.4, not 0.2:
#: bench/update.py (seed example, seed 0, one v1, the update's sampling drawn three ways) lost 5.5, 16.4 and 19.2
#: points of the unchanged facts' held-out recall at 0.2, and 2.7, 1.4 and 5.5 points at 0.4 on the same draws,
#: for an update 1.25x as long (136-144 s against 106-115 s; a full retrain took 315 s).
REPLAY_SHARE = 0.4
#: Share of a removed fact's questions held out to measure its abstention.
FORGET_HELDOUT_SHARE = 0.2
#: How alike (shared content words over all content words) an unchanged fact's phrasing must be to a question the
#: update answers "I don't know" to join the contrast set (:func:`contrast_examples`).
CONTRAST_MIN_OVERLAP = 0.25
#: Words that say nothing about what is asked: left out when phrasings are compared for the contrast set.
_FUNCTION_WORDS = frozenset(
    "a an the my i me do does is what whats what's who where which of to you your tell please can could".split()
)


# ----------------------------------------------------------------------------------------------------------------
# The diff


@dataclass(frozen=True)
class FactChange:
    """One fact's change. ``old`` and ``new`` hold values: local use only (see :meth:`public`).

    Attributes:
        kind: added, removed, changed, renamed, aliases or questions (see :class:`~.adapter.TopicChange`).
        old: the fact in the parent's profile (None when added).
        new: the fact in the new profile (None when removed).
    """

    kind: str
    old: Fact | None
    new: Fact | None

    @property
    def topic(self) -> str:
        """The topic in the new profile (for a removed fact: in the old one)."""
        fact = self.new or self.old
        assert fact is not None  # noqa: S101 - a change always has one side
        return fact.topic

    def public(self) -> TopicChange:
        """The change without values, as ``andraeus.json`` records it."""
        old_topic = self.old.topic if self.kind == "renamed" and self.old is not None else None
        return TopicChange(kind=self.kind, topic=self.topic, old_topic=old_topic)  # type: ignore[arg-type]

    def describe(self, *, values: bool = False) -> str:
        """One line for a person: topics only, or with ``values`` (the user's own terminal only) old -> new."""
        old, new = self.old, self.new
        if self.kind == "added":
            return f"+ {self.topic}" + (f": {new.value}" if values and new else "")
        if self.kind == "removed":
            return f"- {self.topic}" + (f" (was {old.value})" if values and old else "")
        if self.kind == "renamed" and old is not None:
            return f"~ {old.topic} -> {self.topic} (renamed, same value)"
        if self.kind == "changed" and values and old and new:
            return f"~ {self.topic}: {old.value} -> {new.value}"
        label = {"changed": "new value", "aliases": "aliases only", "questions": "own questions only"}[self.kind]
        return f"~ {self.topic} ({label})"


@dataclass(frozen=True)
class ProfileDiff:
    """What changed between an adapter's profile and a new one.

    Attributes:
        changes: one entry per added, removed, changed, renamed or refined fact, in the new profile's order (removed
            facts last).
        unchanged: topics of the facts that did not change at all.
        names_changed: the user's or the assistant's name changed (every example's system prompt changes with it).
    """

    changes: list[FactChange] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    names_changed: bool = False

    def of_kind(self, *kinds: str) -> list[FactChange]:
        """The changes of these kinds."""
        return [c for c in self.changes if c.kind in kinds]

    @property
    def empty(self) -> bool:
        """Nothing changed."""
        return not self.changes and not self.names_changed

    def retrained_topics(self) -> set[str]:
        """Topics (new profile) whose phrasings an update trains in full."""
        return {c.topic for c in self.of_kind("added", "changed", "renamed", "questions")}

    def public(self) -> list[TopicChange]:
        """The change list for ``andraeus.json``: topics only."""
        return [c.public() for c in self.changes]

    def summary(self) -> str:
        """Counts per kind, e.g. ``1 added, 1 changed, 1 removed, 7 unchanged`` (no topic, no value)."""
        counts = {k: len(self.of_kind(k)) for k in ("added", "changed", "removed", "renamed", "aliases", "questions")}
        parts = [f"{n} {k if k not in ('aliases', 'questions') else k + ' changed'}" for k, n in counts.items() if n]
        return ", ".join([*parts, f"{len(self.unchanged)} unchanged"])


def diff_profiles(old: Profile, new: Profile) -> ProfileDiff:
    """Compare two profiles fact by fact.

    Facts are matched by topic (ignoring case, apostrophes and punctuation, as a profile's own duplicates are). An
    unmatched old fact and an unmatched new fact with the same value (ignoring case) are one fact *renamed*. A
    matched fact whose value differs is *changed*; one whose value is the same but whose aliases (or own questions)
    differ is an *aliases* (or *questions*) change.
    """
    # A family's facts are matched per owner: three people's "birthday" are three facts.
    old_by_key = {(f.owner, same_topic_key(f.topic)): f for f in old.facts}
    new_keys = {(f.owner, same_topic_key(f.topic)) for f in new.facts}
    unmatched_old = [f for k, f in old_by_key.items() if k not in new_keys]
    changes: list[FactChange] = []
    unchanged: list[str] = []
    for fact in new.facts:
        before = old_by_key.get((fact.owner, same_topic_key(fact.topic)))
        if before is None:
            renamed = next((f for f in unmatched_old if f.value.casefold() == fact.value.casefold()), None)
            if renamed is not None:
                unmatched_old.remove(renamed)
                changes.append(FactChange("renamed", renamed, fact))
            else:
                changes.append(FactChange("added", None, fact))
        elif before.value != fact.value:
            changes.append(FactChange("changed", before, fact))
        elif before.questions != fact.questions:
            changes.append(FactChange("questions", before, fact))
        elif {a.casefold() for a in before.aliases} != {a.casefold() for a in fact.aliases}:
            changes.append(FactChange("aliases", before, fact))
        else:
            unchanged.append(fact.topic)
    changes += [FactChange("removed", f, None) for f in unmatched_old]
    names = (old.user_name, old.assistant_name, old.people) != (new.user_name, new.assistant_name, new.people)
    # A fact turned private (or public) keeps its value; for a family that is still a change worth retraining for.
    if old.is_family or new.is_family:
        flips = [k for k, f in old_by_key.items() if k in new_keys]
        for key in flips:
            after = next(f for f in new.facts if (f.owner, same_topic_key(f.topic)) == key)
            if after.private != old_by_key[key].private and after.topic in unchanged:
                unchanged.remove(after.topic)
                changes.append(FactChange("aliases", old_by_key[key], after))
    return ProfileDiff(changes=changes, unchanged=unchanged, names_changed=names)


# ----------------------------------------------------------------------------------------------------------------
# The parent


def parent_profile(parent: Adapter) -> Profile:
    """The profile a parent adapter was trained on (its ``private.json``).

    Raises:
        AdapterError: the adapter has no private profile (pulled from the Hub, or trained on chat data): nothing to
            diff against; retrain it with ``--full`` on a machine that has the profile.
    """
    try:
        return parent.profile()
    except AdapterError as exc:
        raise AdapterError(
            f"Cannot update '{parent.path}': {exc} An update needs the profile the adapter was trained on (it "
            "stays on the machine that trained it); retrain the new profile instead (andraeus update --full).",
            param="adapter",
        ) from None


def check_parent(parent: Adapter, base_model: str | None) -> None:
    """Refuse a parent that cannot be continued on ``base_model``.

    Raises:
        AdapterError: the parent was trained on another base model.
    """
    trained_on = parent.base_model
    if base_model and trained_on and trained_on != base_model:
        raise AdapterError(
            f"'{parent.path}' was trained on base model '{trained_on}', not '{base_model}': its weights only fit "
            f"that model. Update it on '{trained_on}' (drop --base-model), or retrain with --full.",
            param="base_model",
        )


def update_config(parent: Adapter, *, full: bool = False, **overrides: Any) -> TrainConfig:
    """The settings of an update: the parent's own (its LoRA shape must match), fewer epochs unless ``full``.

    Args:
        parent: the adapter being updated.
        full: retrain from scratch: the parent's settings as they were.
        overrides: settings to change (a LoRA shape other than the parent's is refused for an update).

    Raises:
        ConfigError: an override changes the LoRA shape of an update, or a setting is invalid.
    """
    known = set(TrainConfig.model_fields)
    values = {k: v for k, v in parent.meta.config.items() if k in known}
    if not values:
        values = TrainConfig.preset("cpu").model_dump(exclude={"out_dir"})
    values["base_model"] = parent.base_model or values.get("base_model")
    # The LoRA shape the weights really have (PEFT's own file), whatever andraeus.json says or lacks.
    peft = parent.peft_config()
    for ours, theirs in (("lora_r", "r"), ("lora_alpha", "lora_alpha"), ("target_modules", "target_modules")):
        if peft.get(theirs) is not None:
            values[ours] = sorted(peft[theirs]) if ours == "target_modules" else peft[theirs]
    if not full:
        values["epochs"] = UPDATE_EPOCHS
        values["learning_rate"] = min(float(values.get("learning_rate") or UPDATE_LEARNING_RATE), UPDATE_LEARNING_RATE)
        for name in ("lora_r", "lora_alpha", "target_modules", "quantize"):
            if name in overrides and overrides[name] != values.get(name):
                raise ConfigError(
                    f"An update continues the parent's LoRA weights, so {name} stays {values.get(name)!r} (got "
                    f"{overrides[name]!r}); use --full to retrain with other settings.",
                    param=name,
                )
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values)


# ----------------------------------------------------------------------------------------------------------------
# The update's dataset


@dataclass(frozen=True)
class UpdatePlan:
    """What an update trains on.

    Attributes:
        diff: what changed.
        dataset: the update's training examples and the new adapter's held-out split.
        gate_dataset: the whole new profile's examples (and the removed facts' negatives), to fit the gate on.
        former_facts: the facts the lineage no longer holds, this update's changes included (the new adapter's
            ``private.json`` keeps them for the updates after it: :func:`former_facts`).
    """

    diff: ProfileDiff
    dataset: ChatDataset
    gate_dataset: ChatDataset
    former_facts: list[Fact] = field(default_factory=list)


def parent_heldout_examples(parent: Adapter) -> list[ChatExample]:
    """The parent's held-out split (empty when it has none): a child never trains on these questions, so that
    every version of a lineage is measured on phrasings no version trained on."""
    return [ChatExample.model_validate(row) for _, row in (parent.heldout() or []) if isinstance(row, dict)]


def _negative_example(system: str, n: Negative, split: str) -> ChatExample:
    meta = ExampleMeta(topic=n.topic, dimension=n.kind, kind=n.kind, split=split, expect=list(n.expect))  # type: ignore[arg-type]
    messages = [{"role": "system", "content": system}, {"role": "user", "content": n.question}]
    return ChatExample(messages=[*messages, {"role": "assistant", "content": n.answer or ""}], meta=meta)


def _with_system(example: ChatExample, system: str) -> ChatExample:
    messages = [dict(m) for m in example.messages]
    if messages and messages[0].get("role") == "system":
        messages[0]["content"] = system
    return ChatExample(messages=messages, meta=example.meta.model_copy())


def _sample(examples: list[ChatExample], share: float, rng: random.Random, minimum: int) -> list[ChatExample]:
    want = min(len(examples), max(minimum, round(len(examples) * share)))
    return rng.sample(examples, want)


def _content_words(question: str) -> frozenset[str]:
    return frozenset(w for w in re.findall(r"[a-z']+", question.casefold()) if w not in _FUNCTION_WORDS)


def contrast_examples(abstaining: Sequence[ChatExample], pool: Sequence[ChatExample]) -> list[ChatExample]:
    """The unchanged facts' phrasings an update trains next to what changed, so that it learns the difference.

    An update trains a few forms hard: the removed fact's and the unknown topics' questions answered "I don't know",
    the new and the old value's reversed and yes/no questions. Unchanged facts asked the same way then drifted to
    the trained answer (bench/update.py: with the employer removed, "Where do I live?" got "I don't know your home
    city"; with the dog renamed, "Who is Alex?" got "That's your dog." and "Is my partner's name Alex?" "No, it's
    Alex."). So the update also trains, with their own answers:

    * every reversed and yes/no phrasing of the unchanged facts in ``pool`` ("Is my home city Portland?");
    * for each question of ``abstaining``, in order, the phrasing of ``pool`` (not yet taken) whose content words
      overlap it most, if they overlap by :data:`CONTRAST_MIN_OVERLAP` ("What's my employer again?" -> "What's my
      home city again?").

    Args:
        abstaining: the update's training examples answered "I don't know".
        pool: the unchanged facts' training phrasings not already in the update (never a held-out question).
    """
    chosen = [e for e in pool if e.meta.dimension == "reverse"]
    left = [e for e in pool if e.meta.dimension != "reverse"]
    words = [_content_words(e.question) for e in left]
    for example in abstaining:
        asked = _content_words(example.question)
        if not asked or not left:
            continue
        overlap = [len(asked & w) / len(asked | w) for w in words]
        best = max(range(len(left)), key=overlap.__getitem__)
        if overlap[best] >= CONTRAST_MIN_OVERLAP:
            chosen.append(left.pop(best))
            words.pop(best)
    return chosen


def build_update_dataset(
    parent: Adapter,
    profile: Profile,
    config: TrainConfig,
    *,
    guard_answer_fn: Any = None,
    replay_share: float = REPLAY_SHARE,
    exclude_questions: Sequence[str] = (),
) -> UpdatePlan:
    """The dataset of an update from ``parent`` to ``profile`` (see the module's docstring).

    Args:
        parent: the adapter being updated (its ``private.json`` profile and ``heldout.jsonl`` are read).
        profile: the new profile (validated: conflicts inside it were rejected when it was loaded).
        config: the update's settings (phrasings per fact, seed, system prompt, typo augmentation).
        guard_answer_fn: the base model's answers to over-trigger guard questions (see ``build_dataset``).
        replay_share: share of each unchanged fact's training phrasings, and of the negatives, replayed (all of
            those of a fact an earlier update taught, twice: :func:`updated_topics`).
        exclude_questions: questions never to train on (a hand-written evaluation set), as for ``train``: no
            replayed, forgetting or confirming example asks one of them.

    Raises:
        AdapterError: the parent has no private profile.
        ConfigError: nothing changed, or the user's or assistant's name changed (retrain with ``--full``).
    """
    if not 0 <= replay_share <= 1:
        raise ConfigError(f"replay_share must be between 0 and 1 (got {replay_share!r}).", param="replay_share")
    old_profile = parent_profile(parent)
    diff = diff_profiles(old_profile, profile)
    if diff.names_changed:
        raise ConfigError(
            "The user's or the assistant's name changed: every example's system prompt changes with it, so an "
            "update cannot keep the old facts. Retrain with --full.",
            param="profile",
        )
    if diff.empty:
        raise ConfigError("The new profile holds the same facts as the adapter: nothing to update.", param="profile")
    parent_heldout = parent_heldout_examples(parent)
    full = build_dataset(
        profile,
        per_fact=config.per_fact,
        heldout_share=config.heldout_share,
        seed=config.seed,
        system_prompt=config.system_prompt,
        guard_answer_fn=guard_answer_fn,
        # Never train on what the parent held out, nor on what the caller keeps for evaluation.
        exclude_questions=[*(e.question for e in parent_heldout), *exclude_questions],
        typo_augment=config.typo_augment,
    )
    system = full.system_prompt
    # The draw changes with the version made: each update of a lineage replays another sample of the unchanged
    # facts' phrasings, so successive updates rehearse all of them between them, not the same 40% every time (the
    # phrasings never replayed are the ones that drift).
    rng = random.Random(f"{config.seed}\x1fupdate\x1f{parent.meta.version + 1}")
    retrained = diff.retrained_topics()
    unchanged = set(diff.unchanged) | {c.topic for c in diff.of_kind("aliases")}
    is_fact = ("fact", "reverse")

    train: list[ChatExample] = [e for e in full.train if e.meta.kind in is_fact and e.meta.topic in retrained]
    # A fact an earlier update taught (added, changed, renamed) sits on weights trained to say otherwise: "I don't
    # know your sister's name" was an unknown-topic negative of the first training, an old value was the answer. A
    # 40% replay let that back (bench/update.py, seed 1: a sister's name added at v2, 14/14, was 7/14 after five
    # updates that each replayed 40% of it, the rest answered "I don't know your sister's name"), so such a fact
    # keeps its full share until a retrain from scratch learns it with the others, and twice: the updates that
    # measured this trained 2 epochs, and at one (UPDATE_EPOCHS) once over lost the sister again (bench/update.py,
    # 2026-12-06, seed 1: 13-14/14 after two to four more updates, 9/14 after the fifth).
    taught = updated_topics(parent)
    for topic in sorted(unchanged):
        own = [e for e in full.train if e.meta.kind in is_fact and e.meta.topic == topic]
        if same_topic_key(topic) in taught:
            train += own + own
        else:
            train += _sample(own, replay_share, rng, minimum=2)
    negatives = [e for e in full.train if e.meta.kind not in is_fact]
    train += _sample(negatives, replay_share, rng, minimum=min(8, len(negatives)))

    # The parent's held-out split for the facts that did not change; the new one for the rest.
    held_unchanged = [
        _with_system(e, system) for e in parent_heldout if e.meta.kind in is_fact and e.meta.topic in unchanged
    ]
    if not held_unchanged:
        held_unchanged = [e for e in full.heldout if e.meta.kind in is_fact and e.meta.topic in unchanged]
    heldout = held_unchanged + [e for e in full.heldout if not (e.meta.kind in is_fact and e.meta.topic in unchanged)]

    excluded = {normalize_question(q) for q in exclude_questions}

    def allowed(negatives: list[Negative]) -> list[Negative]:
        return [n for n in negatives if normalize_question(n.question) not in excluded]

    forget: list[Negative] = []
    for change in diff.of_kind("removed"):
        assert change.old is not None  # noqa: S101 - a removed fact has its old side
        forget += allowed(removed_fact_questions(change.old, count=config.per_fact, seed=config.seed))
    confirm_train: list[ChatExample] = []
    for change in diff.of_kind("changed"):
        assert change.old is not None and change.new is not None  # noqa: S101 - a changed fact has both sides
        if change.old.value.casefold() == change.new.value.casefold():
            continue  # only the spelling changed: the old value is the new one
        forget += allowed(old_value_questions(change.old))
        for p in changed_fact_confirmations(change.old, change.new):
            if normalize_question(p.question) in excluded:
                continue
            meta = ExampleMeta(
                topic=p.topic, dimension="reverse", kind="fact", split="train", expect=change.new.accepted()
            )
            messages = [{"role": "system", "content": system}, {"role": "user", "content": p.question}]
            confirm_train.append(
                ChatExample(messages=[*messages, {"role": "assistant", "content": rng.choice(p.answers)}], meta=meta)
            )
    forget_train: list[ChatExample] = []
    # What earlier updates changed or removed: the old values were trained into the ancestors' weights, which this
    # update starts from, so a sample of their negatives is replayed like an unchanged fact (else later updates let
    # the old answer back: bench/update.py's "Who is Buddy?" -> "That's your dog." again after five updates). The
    # parent's private.json holds the old facts; a parent from before it did, only the removed topics (lineage).
    earlier = [f for f in parent.private.former_facts if _still_gone(f, profile)]
    for fact in earlier:
        # A topic held now, or by the parent (renamed or removed by this update, whose own negatives cover it): only
        # the old value's reversed questions; the topic's own questions are the fact's, under whatever name.
        held = any(p.fact(fact.topic, fact.owner) is not None for p in (profile, old_profile))
        questions = old_value_questions(fact) if held else removed_fact_questions(fact, seed=config.seed)
        replay = [_negative_example(system, n, "train") for n in allowed(questions)]
        forget_train += _sample(replay, replay_share, rng, minimum=2)
    replayed = {same_topic_key(f.topic) for f in earlier}
    for topic in earlier_removed_topics(parent, profile):
        if same_topic_key(topic) in replayed:
            continue
        replay = [
            _negative_example(system, n, "train") for n in allowed(removed_topic_questions(topic, seed=config.seed))
        ]
        forget_train += _sample(replay, replay_share, rng, minimum=2)
    by_topic: dict[str, list[Negative]] = {}
    for n in forget:
        by_topic.setdefault(f"{n.group.split(':', 1)[0]}:{n.topic}", []).append(n)
    for group in by_topic.values():
        order = group[:]
        rng.shuffle(order)
        held = round(len(order) * FORGET_HELDOUT_SHARE) if len(order) >= 3 else 0
        heldout += [_negative_example(system, n, "heldout") for n in order[:held]]
        forget_train += [_negative_example(system, n, "train") for n in order[held:]]
    train += forget_train + confirm_train
    rng.shuffle(train)
    # Contrast (contrast_examples): in the shuffled order, so that no topic's questions pick their neighbours first.
    have = {e.question for e in train}
    pool = [e for e in full.train if e.meta.kind in is_fact and e.meta.topic in unchanged and e.question not in have]
    abstaining = [e for e in train if e.meta.kind == "unknown" and e.meta.topic not in unchanged]
    contrast = contrast_examples(abstaining, pool)
    train += contrast
    rng.shuffle(train)
    logger.info(
        "update dataset: %d train (%d replayed, %d contrast), %d held-out; %s",
        len(train),
        len(train) - len(forget_train) - len(confirm_train) - len(contrast),
        len(contrast),
        len(heldout),
        diff.summary(),
    )
    common = {"system_prompt": system, "profile_hash": full.profile_hash, "topics": full.topics, "seed": config.seed}
    dataset = ChatDataset(train=train, heldout=heldout, **common)
    gate_dataset = ChatDataset(train=[*full.train, *forget_train], heldout=heldout, **common)
    return UpdatePlan(
        diff=diff, dataset=dataset, gate_dataset=gate_dataset, former_facts=former_facts(parent, profile, diff)
    )


def _still_gone(fact: Fact, profile: Profile) -> bool:
    """Whether ``profile`` no longer holds this fact's value: not under its topic, nor as any fact's value or alias
    (a new cat called Buddy: "Who is Buddy?" is the cat's question again)."""
    held = {v.casefold() for f in profile.facts for v in (f.value, *f.aliases)}
    return fact.value.casefold() not in held


def former_facts(parent: Adapter, profile: Profile, diff: ProfileDiff) -> list[Fact]:
    """The facts the lineage no longer holds after this update, for the new adapter's ``private.json``: the
    parent's own (those the new profile does not hold again) and this update's removed facts and changed facts'
    old values, one per topic and value. Private data: it stays with the adapter and goes when it is deleted."""
    out: dict[tuple[str, str | None, str], Fact] = {}
    olds = [c.old for c in diff.changes if c.kind in ("removed", "changed") and c.old is not None]
    for fact in [*parent.private.former_facts, *olds]:
        if _still_gone(fact, profile):
            out.setdefault((same_topic_key(fact.topic), fact.owner, fact.value.casefold()), fact)
    return list(out.values())


# ----------------------------------------------------------------------------------------------------------------
# Lineage


def lineage_fields(parent: Adapter, diff: ProfileDiff, method: Method) -> dict[str, Any]:
    """The ``andraeus.json`` fields of a child of ``parent``: version, parent, changes and the ancestors' lineage."""
    meta = parent.meta
    hub = meta.hub
    sha = parent.weights_sha256()
    ref = ParentRef(
        version=meta.version,
        weights_sha256=sha,
        repo_id=hub.repo_id if hub else None,
        revision=hub.revision if hub else None,
    )
    itself = LineageEntry(
        version=meta.version,
        weights_sha256=sha,
        created=meta.created,
        method=meta.method or "train",
        changes=list(meta.changes),
    )
    return {
        "version": meta.version + 1,
        "method": method,
        "parent": ref,
        "changes": diff.public(),
        "lineage": [*meta.lineage, itself],
    }


def earlier_removed_topics(parent: Adapter, profile: Profile) -> list[str]:
    """Topics removed by ``parent`` or by the updates before it, back to the last adapter trained from scratch, that
    ``profile`` does not hold again: their values are still in the weights an update starts from."""
    held = {same_topic_key(t) for t in profile.topics()}
    out: dict[str, str] = {}
    for entry in reversed(history(parent)):
        if entry.method != "update":
            break  # trained from scratch: nothing earlier is in its weights
        for change in entry.changes:
            if change.kind == "removed" and same_topic_key(change.topic) not in held:
                out.setdefault(same_topic_key(change.topic), change.topic)
    return sorted(out.values())


def updated_topics(parent: Adapter) -> set[str]:
    """Topics (``same_topic_key``) that ``parent`` or the updates before it added, changed or renamed, back to the
    last adapter trained from scratch: facts only updates have taught, on weights that learnt something else."""
    out: set[str] = set()
    for entry in reversed(history(parent)):
        if entry.method != "update":
            break  # trained from scratch: every fact it held was learnt there with the others
        out |= {same_topic_key(c.topic) for c in entry.changes if c.kind in ("added", "changed", "renamed")}
    return out


def history(adapter: Adapter) -> list[LineageEntry]:
    """The adapter's lineage, oldest first, ending with the adapter itself."""
    meta = adapter.meta
    itself = LineageEntry(
        version=meta.version,
        weights_sha256=adapter.weights_sha256(),
        created=meta.created,
        method=meta.method or "train",
        changes=list(meta.changes),
    )
    return [*meta.lineage, itself]


__all__ = [
    "FORGET_HELDOUT_SHARE",
    "REPLAY_SHARE",
    "former_facts",
    "UPDATE_EPOCHS",
    "contrast_examples",
    "UPDATE_LEARNING_RATE",
    "FactChange",
    "ProfileDiff",
    "UpdatePlan",
    "build_update_dataset",
    "check_parent",
    "diff_profiles",
    "earlier_removed_topics",
    "history",
    "lineage_fields",
    "parent_heldout_examples",
    "parent_profile",
    "update_config",
]
