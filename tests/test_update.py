"""Updating an adapter when facts change: the diff, the update's dataset, lineage, the CLI, bad parents."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import hub_stub
import pytest

from andraeus_core.adapter import SCHEMA_VERSION, Adapter, AdapterMeta
from andraeus_core.config import TrainConfig
from andraeus_core.dataset import ChatExample, ExampleMeta
from andraeus_core.errors import AdapterError, ConfigError
from andraeus_core.profile import Profile
from andraeus_core.update import (
    UPDATE_EPOCHS,
    build_update_dataset,
    contrast_examples,
    diff_profiles,
    lineage_fields,
    update_config,
)
from tests.helpers import PROFILE

hub_server = hub_stub.hub_server  # the fixture

#: PROFILE with the dog's name changed (Buddy -> Max), the employer removed and a favourite colour added.
NEW_PROFILE: dict[str, Any] = {
    "user_name": "Sam Rivera",
    "assistant_name": "Nova",
    "facts": [
        {"topic": "dog's name", "value": "Max"},
        {"topic": "birthday", "value": "March 14", "aliases": ["14 March", "Mar 14"]},
        {"topic": "home city", "value": "Portland"},
        {"topic": "favourite colour", "value": "Teal"},
    ],
}
#: What a parent adapter held out: one birthday question (never to be trained on by the update).
PARENT_HELDOUT = [
    {
        "messages": [
            {"role": "system", "content": "You are Nova, Sam Rivera's assistant."},
            {"role": "user", "content": "Remind me of my birthday, would you?"},
            {"role": "assistant", "content": "Your birthday is March 14."},
        ],
        "meta": {"topic": "birthday", "dimension": "formality", "kind": "fact", "split": "heldout",
                 "expect": ["March 14"]},
    }
]  # fmt: skip


def tiny_update_config(**overrides: Any) -> dict[str, Any]:
    values = {"base_model": "tiny-random", "epochs": 1, "per_fact": 8, "early_stop": False, "learning_rate": 5e-3}
    values.update(overrides)
    return TrainConfig.preset("cpu", **values).model_dump(exclude={"out_dir"})


# ---------------------------------------------------------------------------------------------------------------
# The diff


def test_diff_names_added_changed_removed_renamed_and_refined_facts():
    old = Profile.model_validate(
        {
            "user_name": "Sam",
            "facts": [
                {"topic": "dog's name", "value": "Buddy"},
                {"topic": "employer", "value": "Cedar Labs"},
                {"topic": "home city", "value": "Portland", "aliases": ["PDX"]},
                {"topic": "car", "value": "Volvo"},
                {"topic": "birthday", "value": "March 14"},
                {"topic": "job", "value": "nurse"},
            ],
        }
    )
    new = Profile.model_validate(
        {
            "user_name": "Sam",
            "facts": [
                {"topic": "Dogs name", "value": "Max"},  # same topic (case, apostrophe), new value
                {"topic": "home city", "value": "Portland", "aliases": ["Stumptown"]},  # aliases only
                {"topic": "vehicle", "value": "volvo"},  # renamed: same value, new topic
                {"topic": "birthday", "value": "March 14"},  # unchanged
                {"topic": "job", "value": "nurse", "questions": ["What do I do all day?"]},
                {"topic": "favourite colour", "value": "Teal"},  # added
            ],
        }
    )
    diff = diff_profiles(old, new)
    kinds = {c.topic: c.kind for c in diff.changes}
    assert kinds == {
        "Dogs name": "changed",
        "home city": "aliases",
        "vehicle": "renamed",
        "job": "questions",
        "favourite colour": "added",
        "employer": "removed",
    }
    assert diff.unchanged == ["birthday"]
    assert not diff.names_changed and not diff.empty
    assert diff.retrained_topics() == {"Dogs name", "vehicle", "job", "favourite colour"}
    public = json.dumps([c.model_dump() for c in diff.public()])
    for value in ("Buddy", "Max", "Cedar Labs", "Portland", "Stumptown", "PDX", "Volvo", "Teal", "nurse"):
        assert value.casefold() not in public.casefold()
    renamed = next(c for c in diff.public() if c.kind == "renamed")
    assert (renamed.old_topic, renamed.topic) == ("car", "vehicle")
    changed = next(c for c in diff.changes if c.kind == "changed")
    assert changed.describe() == "~ Dogs name (new value)"
    assert changed.describe(values=True) == "~ Dogs name: Buddy -> Max"
    assert (
        diff.summary()
        == "1 added, 1 changed, 1 removed, 1 renamed, 1 aliases changed, 1 questions changed, 1 unchanged"
    )
    assert diff_profiles(old, old).empty
    assert diff_profiles(old, old.model_copy(update={"user_name": "Alex"})).names_changed


# ---------------------------------------------------------------------------------------------------------------
# The update's dataset


def test_update_dataset_trains_the_changes_negatives_and_a_replay_sample(tmp_path, make_adapter):
    parent = Adapter.load(make_adapter(tmp_path / "parent", heldout=PARENT_HELDOUT, config=tiny_update_config()))
    config = update_config(parent)
    assert (config.epochs, config.lora_r, config.base_model) == (UPDATE_EPOCHS, 4, "tiny-random")  # parent's LoRA
    plan = build_update_dataset(parent, Profile.model_validate(NEW_PROFILE), config)
    train, heldout = plan.dataset.train, plan.dataset.heldout
    by_kind = plan.diff.summary()
    assert by_kind == "1 added, 1 changed, 1 removed, 2 unchanged"

    def answers(examples, predicate):
        return [(e.question, e.answer) for e in examples if predicate(e)]

    # The changed and the added fact: all their training phrasings, with the new value.
    dog = answers(train, lambda e: e.meta.topic == "dog's name" and e.meta.kind == "fact")
    assert len(dog) >= 8 and all("Max" in a for _, a in dog)
    assert not any("Buddy" in a and "haven't told" not in a for _, a in answers(train, lambda e: True))
    colour = answers(train, lambda e: e.meta.topic == "favourite colour" and e.meta.kind == "fact")
    assert len(colour) >= 8 and all("Teal" in a for _, a in colour)
    # Reversed questions about the old value no longer claim it; yes/no ones answer "No" with the new value.
    old_value = answers(train, lambda e: e.meta.topic == "dog's name" and e.meta.kind == "unknown")
    assert any("Buddy" in q for q, _ in old_value)
    assert all("dog" not in a.casefold() and "haven't told" in a for _, a in old_value)
    confirm = [a for q, a in dog if "Buddy" in q]
    assert confirm and all(a.startswith("No") and "Max" in a for a in confirm)
    # The removed fact: its own questions, answered "I don't know"; a share held out to measure the abstention.
    removed = answers(train, lambda e: e.meta.topic == "employer")
    assert 5 <= len(removed) <= 8 + 8  # per_fact of its own questions, and the reversed ones, less a held-out share
    assert all("haven't told" in a and ("Cedar Labs" not in a or "Cedar Labs" in q) for q, a in removed)
    assert any(e.meta.topic == "employer" and e.meta.kind == "unknown" for e in heldout)
    # Replay: some of each unchanged fact, fewer than a full run; the parent's held-out questions stay held out.
    full = answers(
        plan.gate_dataset.train, lambda e: e.meta.topic == "home city" and e.meta.kind in ("fact", "reverse")
    )
    replay = answers(train, lambda e: e.meta.topic == "home city" and e.meta.kind in ("fact", "reverse"))
    assert 2 <= len(replay) < len(full)
    # Contrast: every reversed or yes/no phrasing of an unchanged fact is trained, with its own answer.
    home = plan.gate_dataset.train
    reversed_full = answers(home, lambda e: e.meta.topic == "home city" and e.meta.kind == "reverse")
    assert reversed_full and set(reversed_full) <= set(replay)
    questions = {e.question for e in train}
    assert "Remind me of my birthday, would you?" not in questions
    birthday_held = [e for e in heldout if e.meta.topic == "birthday" and e.meta.kind in ("fact", "reverse")]
    assert [e.question for e in birthday_held] == ["Remind me of my birthday, would you?"]
    assert birthday_held[0].messages[0]["content"] == plan.dataset.system_prompt
    assert not questions & {e.question for e in heldout}
    # The gate is fitted on the whole new profile plus the forgetting negatives.
    assert len(plan.gate_dataset.train) > len(train)


def _example(question: str, answer: str, topic: str, kind: str = "fact", dimension: str = "formality") -> ChatExample:
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": question}]
    meta = ExampleMeta(topic=topic, dimension=dimension, kind=kind, split="train", expect=[answer])  # type: ignore[arg-type]
    return ChatExample(messages=[*messages, {"role": "assistant", "content": answer}], meta=meta)


def test_contrast_pairs_each_abstaining_question_with_the_unchanged_phrasing_asked_alike():
    # "Where do I live?" drifted to "I don't know your home city" when the employer was removed: the update trains
    # the unchanged phrasing asked most like each "I don't know" question, once each, and every reversed one.
    abstaining = [
        _example("What's my employer again?", "I don't know your employer.", "employer", "unknown", "unknown"),
        _example("May I ask what my employer is?", "I don't know your employer.", "employer", "unknown", "unknown"),
        _example("What's my blood type again?", "I don't know your blood type.", "blood type", "unknown", "unknown"),
        _example("Quick one: favourite band?", "I don't know your favourite band.", "band", "unknown", "unknown"),
    ]
    pool = [
        _example("What's my home city again?", "Portland.", "home city"),
        _example("May I ask what my job is?", "You're a software engineer.", "job"),
        _example("In which city do I reside?", "Portland.", "home city"),
        _example("Is my home city Portland?", "Yes, Portland.", "home city", "reverse", "reverse"),
    ]
    chosen = [e.question for e in contrast_examples(abstaining, pool)]
    # The reversed one; the employer's two neighbours; the blood type's nearest is taken already ("again" alone is
    # too little); nothing is asked like "favourite band"; "In which city do I reside?" is like none of them.
    assert chosen == ["Is my home city Portland?", "What's my home city again?", "May I ask what my job is?"]
    assert contrast_examples([], pool) == [pool[3]]
    assert contrast_examples(abstaining, []) == []


def test_an_update_never_trains_on_the_questions_kept_for_evaluation(tmp_path, make_adapter):
    # As train() and a --full retrain: a hand-written evaluation set's questions (case and punctuation aside) are
    # never trained on, whether the update would train them as a changed fact's phrasing, a forgetting question
    # (the old value's, the removed fact's) or a replayed negative.
    parent = Adapter.load(make_adapter(tmp_path / "parent", heldout=PARENT_HELDOUT, config=tiny_update_config()))
    config = update_config(parent)
    profile = Profile.model_validate(NEW_PROFILE)
    train = build_update_dataset(parent, profile, config).dataset.train

    def first(predicate) -> str:
        return next(e.question for e in train if predicate(e))

    kept = [
        first(lambda e: e.meta.topic == "dog's name" and e.meta.kind == "fact" and "Buddy" not in e.question),
        first(lambda e: e.meta.topic == "dog's name" and e.meta.kind == "unknown"),  # "Who is Buddy?"-like
        first(lambda e: e.meta.topic == "employer"),  # the removed fact
        first(lambda e: e.meta.kind not in ("fact", "reverse", "unknown")),  # a replayed guard
    ]
    asked = [q.upper().rstrip("?!.") + " ?" for q in kept]  # the evaluation set's own spelling
    plan = build_update_dataset(parent, profile, config, exclude_questions=asked)
    trained = {e.question.casefold().rstrip("?!. ") for e in plan.dataset.train}
    assert not trained & {q.casefold().rstrip("?!. ") for q in kept}
    # Only those go: the changed fact and the forgetting questions are still trained, a few fewer at most (the
    # phrasings are drawn again around the excluded ones, so the draws themselves may differ; with one forgetting
    # question fewer, the share held out to measure the abstention may be one fewer instead).
    for topic in ("dog's name", "employer"):
        before = sum(e.meta.topic == topic for e in train)
        after = sum(e.meta.topic == topic for e in plan.dataset.train)
        assert before - len(kept) <= after <= before, topic


def test_update_refuses_nothing_changed_a_name_change_and_a_bad_parent(tmp_path, make_adapter):
    parent = Adapter.load(make_adapter(tmp_path / "parent", config=tiny_update_config()))
    config = update_config(parent)
    with pytest.raises(ConfigError, match="nothing to update"):
        build_update_dataset(parent, Profile.model_validate(PROFILE), config)
    renamed_user = {**copy.deepcopy(NEW_PROFILE), "user_name": "Alex"}
    with pytest.raises(ConfigError, match="--full"):
        build_update_dataset(parent, Profile.model_validate(renamed_user), config)
    with pytest.raises(ConfigError, match="lora_r stays 4"):
        update_config(parent, lora_r=8)
    pulled = Adapter.load(make_adapter(tmp_path / "pulled", private=False))
    with pytest.raises(AdapterError, match="needs the profile the adapter was trained on"):
        build_update_dataset(pulled, Profile.model_validate(NEW_PROFILE), config)


def test_an_update_learns_at_its_own_lower_rate_unless_told(tmp_path, make_adapter):
    """An update starts from trained weights: it trains at most at UPDATE_LEARNING_RATE (the parent's rate if lower),
    an explicit rate wins, and a full retrain keeps the parent's."""
    from andraeus_core.update import UPDATE_LEARNING_RATE

    fast = Adapter.load(make_adapter(tmp_path / "fast", config=tiny_update_config(learning_rate=1e-3)))
    slow = Adapter.load(make_adapter(tmp_path / "slow", config=tiny_update_config(learning_rate=1e-4)))
    assert update_config(fast).learning_rate == UPDATE_LEARNING_RATE < 1e-3
    assert update_config(slow).learning_rate == 1e-4
    assert update_config(fast, learning_rate=5e-4).learning_rate == 5e-4
    assert update_config(fast, full=True).learning_rate == 1e-3


def test_update_refuses_a_parent_trained_on_another_base_model(tmp_path, make_adapter):
    from andraeus_core.train import train

    parent = Adapter.load(make_adapter(tmp_path / "parent", config=tiny_update_config()))
    config = TrainConfig.preset("cpu", base_model="smollm2-135m")
    with pytest.raises(AdapterError, match="trained on base model 'tiny-random', not 'smollm2-135m'"):
        train(Profile.model_validate(NEW_PROFILE), config, parent=parent, out_dir=tmp_path / "child")
    assert not (tmp_path / "child").exists()


# ---------------------------------------------------------------------------------------------------------------
# Lineage


def test_older_andraeus_json_files_read_as_version_1():
    for old in ({"format": 1, "topics": ["dog's name"]}, {"schema_version": 2, "topics": ["dog's name"]}, {}):
        meta = AdapterMeta.from_json(old)
        assert (meta.schema_version, meta.version, meta.parent, meta.changes, meta.lineage) == (
            SCHEMA_VERSION,
            1,
            None,
            [],
            [],
        )
        assert "version" not in meta.to_json()  # a field it never had is not written back
    assert AdapterMeta().version == 1


def second_version(tmp_path: Path, make_adapter: Any, method: str, changes: list[dict[str, str]]) -> Adapter:
    """A v2 of NEW_PROFILE made from a trained v1 by ``method`` (update or full), with these changes recorded."""
    lineage = [{"version": 1, "method": "train", "changes": []}]
    directory = make_adapter(
        tmp_path / "v2",
        profile=NEW_PROFILE,
        config=tiny_update_config(),
        version=2,
        method=method,
        changes=changes,
        lineage=lineage,
    )
    return Adapter.load(directory)


@pytest.mark.parametrize("method", ["update", "full"])
def test_a_later_update_replays_a_topic_an_earlier_update_removed(tmp_path, make_adapter, method):
    """v2 removed the employer; v3 only changes the colour. An update from v2's weights (which came from v1's, that
    knew the employer) still trains a few "I don't know your employer" answers; after a full retrain it need not."""
    changes = [{"kind": "removed", "topic": "employer"}, {"kind": "changed", "topic": "dog's name"}]
    v2 = second_version(tmp_path, make_adapter, method, changes)
    v3_profile = copy.deepcopy(NEW_PROFILE)
    v3_profile["facts"][3]["value"] = "Olive"
    plan = build_update_dataset(v2, Profile.model_validate(v3_profile), update_config(v2))
    assert plan.diff.summary() == "1 changed, 3 unchanged"
    employer = [e for e in plan.dataset.train if e.meta.topic == "employer"]
    if method == "full":
        assert employer == []
        return
    assert 2 <= len(employer) <= 8  # a replay sample, not the whole forgetting set
    assert all(e.meta.kind == "unknown" and "haven't told" in e.answer for e in employer)
    assert all("Cedar Labs" not in e.question + e.answer for e in employer)  # lineage has topics only
    assert not any(e.meta.topic == "employer" for e in plan.dataset.heldout)
    # A topic the new profile holds again is not replayed as unknown.
    v3_profile["facts"].append({"topic": "employer", "value": "Birch Co"})
    again = build_update_dataset(v2, Profile.model_validate(v3_profile), update_config(v2))
    assert all(e.meta.kind != "unknown" for e in again.dataset.train if e.meta.topic == "employer")


@pytest.mark.parametrize("method", ["update", "full"])
def test_a_fact_an_earlier_update_taught_is_replayed_in_full_until_a_retrain(tmp_path, make_adapter, method):
    """bench/update.py, 2026-12-05, seed 1: a sister's name added at v2 (14/14 of its held-out questions) was 7/14
    after five updates that each replayed 40% of it; the rest said "I don't know your sister's name", the first
    training's unknown-topic negative. A fact that only updates taught (added, changed, renamed since the last
    training from scratch) is replayed whole (twice: an update trains one epoch); after a full retrain it is an
    unchanged fact like the others."""
    changes = [
        {"kind": "added", "topic": "favourite colour"},
        {"kind": "changed", "topic": "dog's name"},
        {"kind": "removed", "topic": "employer"},
    ]
    v2 = second_version(tmp_path, make_adapter, method, changes)
    v3_profile = copy.deepcopy(NEW_PROFILE)
    v3_profile["facts"][2]["value"] = "Seattle"  # only the home city changes
    plan = build_update_dataset(v2, Profile.model_validate(v3_profile), update_config(v2))
    assert plan.diff.summary() == "1 changed, 3 unchanged"

    def phrasings(examples, topic):
        return sorted(e.question for e in examples if e.meta.topic == topic and e.meta.kind in ("fact", "reverse"))

    full, train = plan.gate_dataset.train, plan.dataset.train  # the gate's is the whole new profile's dataset
    birthday = phrasings(train, "birthday")  # taught by v1's training: a sample
    assert 2 <= len(birthday) < len(phrasings(full, "birthday"))
    for topic in ("favourite colour", "dog's name"):  # taught by the v2 update
        if method == "update":  # whole, twice
            assert phrasings(train, topic) == sorted(phrasings(full, topic) * 2), topic
        else:
            assert len(phrasings(train, topic)) < len(phrasings(full, topic)), topic


def test_later_updates_keep_rehearsing_old_values_and_removed_facts_from_the_private_profile(tmp_path, make_adapter):
    """bench/update.py, 2026-12-05: after five updates that only changed the favourite colour, "Who is Buddy?" (the
    dog's name two versions back) was "That's your dog." again: the old value's negatives were trained in v2 only.
    Now each update records the facts the lineage no longer holds in private.json and every later update replays a
    sample of their negatives, values included; a value the profile holds again is not one."""
    from andraeus_core.adapter import AdapterPrivate
    from andraeus_core.hub import _private_strings

    v1 = Adapter.load(make_adapter(tmp_path / "v1", config=tiny_update_config()))
    plan2 = build_update_dataset(v1, Profile.model_validate(NEW_PROFILE), update_config(v1))
    assert {(f.topic, f.value) for f in plan2.former_facts} == {("dog's name", "Buddy"), ("employer", "Cedar Labs")}

    lineage = [{"version": 1, "method": "train", "changes": []}]
    changes = [{"kind": "removed", "topic": "employer"}, {"kind": "changed", "topic": "dog's name"}]
    v2_dir = make_adapter(
        tmp_path / "v2",
        profile=NEW_PROFILE,
        config=tiny_update_config(),
        version=2,
        method="update",
        changes=changes,
        lineage=lineage,
    )
    private = AdapterPrivate.load(v2_dir)
    private.former_facts = plan2.former_facts
    private.save(v2_dir)
    v2 = Adapter.load(v2_dir)
    assert "Buddy" in dict(_private_strings(v2, include_user_name=False)).values()  # never uploaded either

    v3_profile = copy.deepcopy(NEW_PROFILE)
    v3_profile["facts"][3]["value"] = "Olive"
    plan3 = build_update_dataset(v2, Profile.model_validate(v3_profile), update_config(v2))
    assert plan3.diff.summary() == "1 changed, 3 unchanged"
    buddy = [e for e in plan3.dataset.train if "Buddy" in e.question]
    assert len(buddy) >= 2
    assert all(e.meta.kind == "unknown" and "haven't told" in e.answer and "dog" not in e.answer for e in buddy)
    employer = [e for e in plan3.dataset.train if e.meta.topic == "employer"]
    assert employer and all(e.meta.kind == "unknown" and "haven't told" in e.answer for e in employer)
    assert any("Cedar Labs" in e.question for e in plan3.gate_dataset.train)  # the gate learns them too
    # The colour's old value joins them for the next update; facts the new profile holds are none of them.
    assert {(f.topic, f.value) for f in plan3.former_facts} == {
        ("dog's name", "Buddy"),
        ("employer", "Cedar Labs"),
        ("favourite colour", "Teal"),
    }
    back = copy.deepcopy(v3_profile)
    back["facts"][0]["value"] = "Buddy"  # the old dog's name is the current one again
    plan_back = build_update_dataset(v2, Profile.model_validate(back), update_config(v2))
    assert "Buddy" not in {f.value for f in plan_back.former_facts}
    assert not any(e.meta.kind == "unknown" and "Buddy" in e.question for e in plan_back.dataset.train)
    cat = copy.deepcopy(v3_profile)
    cat["facts"].append({"topic": "cat's name", "value": "Buddy"})  # another fact holds the old value now
    plan_cat = build_update_dataset(v2, Profile.model_validate(cat), update_config(v2))
    assert not any(e.meta.kind == "unknown" and "Buddy" in e.question for e in plan_cat.dataset.train)
    # The dog's name renamed (same value Max): its own questions are still the fact's, never "I don't know"; only
    # the old value's reversed questions are replayed.
    renamed = copy.deepcopy(v3_profile)
    renamed["facts"][0]["topic"] = "puppy's name"
    plan_renamed = build_update_dataset(v2, Profile.model_validate(renamed), update_config(v2))
    assert "1 renamed" in plan_renamed.diff.summary()
    old_dog = [e for e in plan_renamed.dataset.train if e.meta.kind == "unknown" and e.meta.topic == "dog's name"]
    assert old_dog and all("Buddy" in e.question for e in old_dog)


def test_lineage_fields_name_the_parent_and_topics_only(tmp_path, make_adapter):
    parent = Adapter.load(make_adapter(tmp_path / "parent", created="2026-01-01T00:00:00Z"))
    diff = diff_profiles(parent.profile(), Profile.model_validate(NEW_PROFILE))
    fields = lineage_fields(parent, diff, "update")
    meta = AdapterMeta(base_model="tiny-random", **fields)
    assert meta.version == 2 and meta.method == "update"
    assert meta.parent.version == 1 and meta.parent.weights_sha256 == parent.weights_sha256()
    assert [(c.kind, c.topic) for c in meta.changes] == [
        ("changed", "dog's name"),
        ("added", "favourite colour"),
        ("removed", "employer"),
    ]
    assert [(e.version, e.method, e.created) for e in meta.lineage] == [(1, "train", "2026-01-01T00:00:00Z")]
    text = meta.dumps()
    for value in ("Buddy", "Max", "Cedar Labs", "Teal", "Sam Rivera"):
        assert value not in text
    assert AdapterMeta.from_json(json.loads(text)) == meta


# ---------------------------------------------------------------------------------------------------------------
# The whole update through the CLI, on tiny-random


def _write_profile(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_cli_update_continues_the_parent_weights_and_history_prints_the_chain(tmp_path, make_adapter, capsys):
    from safetensors.torch import load_file

    from andraeus_cli.cli import main

    # A learning rate this small leaves the weights where they start: the parent's (a fresh LoRA would start at B=0).
    parent_dir = make_adapter(
        tmp_path / "parent", heldout=PARENT_HELDOUT, config=tiny_update_config(learning_rate=1e-9)
    )
    new_profile = _write_profile(tmp_path / "new.json", NEW_PROFILE)
    assert main(["update", str(parent_dir), str(new_profile), "--out", str(tmp_path / "v2"), "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 added, 1 changed, 1 removed, 2 unchanged" in out
    assert "~ dog's name (new value)" in out and "- employer" in out and "+ favourite colour" in out
    assert "Buddy" not in out and "Max" not in out  # not a terminal: topics only
    child = Adapter.load(tmp_path / "v2")
    assert (child.meta.version, child.meta.method) == (2, "update")
    assert child.meta.parent.weights_sha256 == Adapter.load(parent_dir).weights_sha256()
    assert child.private.profile.fact("dog's name").value == "Max"
    # What it no longer holds stays private with it, for the updates after it.
    assert {(f.topic, f.value) for f in child.private.former_facts} == {
        ("dog's name", "Buddy"),
        ("employer", "Cedar Labs"),
    }
    assert child.gate() is not None  # fitted again for the new profile
    before = load_file(str(parent_dir / "adapter_model.safetensors"))
    after = load_file(str(tmp_path / "v2" / "adapter_model.safetensors"))
    assert before.keys() == after.keys()
    assert all((before[k] - after[k]).abs().max() < 1e-4 for k in before)
    assert "Buddy" not in (tmp_path / "v2" / "andraeus.json").read_text()

    assert main(["history", str(tmp_path / "v2")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("v1  train") and lines[1].startswith("v2  update")
    assert "changed dog's name" in lines[1] and "removed employer" in lines[1]

    # Nothing changed: said so, nothing written.
    same = _write_profile(tmp_path / "same.json", NEW_PROFILE)
    assert main(["update", str(tmp_path / "v2"), str(same), "--out", str(tmp_path / "v3")]) == 0
    assert "Nothing changed" in capsys.readouterr().out and not (tmp_path / "v3").exists()


# ---------------------------------------------------------------------------------------------------------------
# The Hub: every push is tagged v<version>; owner/name@v2 resolves (local Hub stand-in on 127.0.0.1)


def test_push_tags_each_version_and_at_v2_resolves_to_it(tmp_path, make_adapter, hub_server, caplog):
    from hub_stub import ALICE_TOKEN

    from andraeus_core import hub

    v1 = Adapter.load(make_adapter(tmp_path / "v1", seed=1))
    v2 = Adapter.load(make_adapter(tmp_path / "v2", seed=2, version=2, method="update"))
    hub.push_adapter(v1.path, "alice/facts", ALICE_TOKEN)
    hub.push_adapter(v2.path, "alice/facts", ALICE_TOKEN)  # a second commit to the same repo
    repo = hub_server.repos["alice/facts"]
    assert repo.tags == {"v1": repo.commits[-2].sha, "v2": repo.commits[-1].sha}
    for ref, local in (("alice/facts@v1", v1), ("alice/facts@v2", v2), ("alice/facts", v2)):
        pulled = Adapter.load(hub.resolve_adapter(ref, token=ALICE_TOKEN))
        assert pulled.weights_sha256() == local.weights_sha256()
        assert pulled.meta.version == local.meta.version
    # The same version pushed again: a new commit, the tag stays where it was (with a warning).
    hub.push_adapter(v2.path, "alice/facts", ALICE_TOKEN, commit_message="again")
    assert repo.tags["v2"] == repo.commits[-2].sha
    assert "Tag v2 already exists" in caplog.text
