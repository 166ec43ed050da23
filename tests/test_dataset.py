"""Dataset: held-out never in train, every dimension held out per fact, loss only on the answer, JSONL round trip."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from andraeus_core.dataset import (
    ChatDataset,
    ChatExample,
    build_dataset,
    facts_system_prompt,
    identity_system_prompt,
    read_jsonl,
    tokenize_example,
    write_jsonl,
)
from andraeus_core.errors import AndraeusError, ConfigError, ProfileError
from andraeus_core.profile import load_profile
from andraeus_core.variations import damerau_distance, normalize_question

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module", params=["seed_profile.yaml", "parent_profile.json"])
def dataset(request: pytest.FixtureRequest) -> ChatDataset:
    return build_dataset(load_profile(EXAMPLES / request.param), seed=3)


def test_no_heldout_question_reaches_training_in_any_form(dataset: ChatDataset) -> None:
    train = {e.question for e in dataset.train}
    train_norm = {normalize_question(q) for q in train}
    for example in dataset.heldout:
        assert example.question not in train
        if example.meta.kind in ("fact", "reverse") and example.meta.dimension != "typo":
            assert normalize_question(example.question) not in train_norm, example.question
    assert all(e.meta.split == "train" for e in dataset.train)
    assert all(e.meta.split == "heldout" for e in dataset.heldout)


def test_heldout_covers_every_eval_kind_for_every_fact(dataset: ChatDataset) -> None:
    for topic in dataset.topics:
        kinds = {e.meta.eval_kind() for e in dataset.heldout if e.meta.topic == topic}
        assert kinds >= {"paraphrase", "typo", "indirect", "reverse"}, topic
        train_n = sum(e.meta.topic == topic and e.meta.kind in ("fact", "reverse") for e in dataset.train)
        held_n = sum(e.meta.topic == topic and e.meta.kind in ("fact", "reverse") for e in dataset.heldout)
        # about a fifth, more where a punctuation group or a held-out phrasing's typos go out together
        assert 0.15 <= held_n / (held_n + train_n) <= 0.4
        assert train_n >= 24
    all_kinds = {e.meta.eval_kind() for e in dataset.heldout}
    assert {"unknown", "unrelated", "identity"} <= all_kinds


def test_examples_are_well_formed(dataset: ChatDataset) -> None:
    assert dataset.system_prompt.startswith("You are ") and dataset.system_prompt.endswith("personal assistant.")
    for example in dataset.train:
        roles = [m["role"] for m in example.messages]
        assert roles == ["system", "user", "assistant"]
        assert example.messages[0]["content"] == dataset.system_prompt
        if example.meta.kind in ("fact", "reverse"):
            assert any(x.casefold() in example.answer.casefold() for x in example.meta.expect), example
    for example in dataset.heldout:
        if example.meta.kind == "overtrigger":
            assert example.meta.expect == [] and example.answer == ""
    stats = dataset.stats()
    assert stats["train"] == len(dataset.train) and stats["heldout"] == len(dataset.heldout)
    assert "overtrigger" not in stats["train_by_kind"]  # no guard_answer_fn: no guard in training


def test_identity_prompt_holds_no_fact_values() -> None:
    profile = load_profile(EXAMPLES / "seed_profile.yaml")
    prompt = identity_system_prompt(profile)
    assert prompt == "You are Nova, Sam Rivera's personal assistant."
    assert not any(v.casefold() in prompt.casefold() for v in profile.values())
    listing = facts_system_prompt(profile)
    assert all(f.value in listing for f in profile.facts)
    assert build_dataset(profile, system_prompt="facts").system_prompt == listing
    assert build_dataset(profile, system_prompt="Be brief.").train[0].messages[0]["content"] == "Be brief."


def test_guard_answers_come_from_the_callback() -> None:
    profile = load_profile(EXAMPLES / "seed_profile.yaml")
    asked: list[str] = []

    def base_model(questions: list[str]) -> list[str]:
        asked.extend(questions)
        return [f"general answer {i}" for i, _ in enumerate(questions)]

    ds = build_dataset(profile, guard_answer_fn=base_model)
    guards = [e for e in ds.train if e.meta.kind == "overtrigger"]
    assert guards and len(guards) == len(asked)
    assert all(e.answer.startswith("general answer") and e.question in asked for e in guards)
    held = {e.question for e in ds.heldout if e.meta.kind == "overtrigger"}
    assert held and not held & set(asked)
    with pytest.raises(AndraeusError, match="returned 0 answers"):
        build_dataset(profile, guard_answer_fn=lambda qs: [])


def test_deterministic_for_a_seed() -> None:
    profile = load_profile(EXAMPLES / "parent_profile.json")
    a = build_dataset(profile, seed=7).model_dump()
    b = build_dataset(profile, seed=7).model_dump()
    c = build_dataset(profile, seed=8).model_dump()
    assert a == b
    assert a["train"] != c["train"]


def test_user_questions_always_train() -> None:
    from andraeus_core.profile import Fact, Profile

    profile = Profile(user_name="Sam", facts=[Fact(topic="dog's name", value="Buddy", questions=["Who's my boy?"])])
    for seed in range(5):
        ds = build_dataset(profile, seed=seed, heldout_share=0.5)
        assert "Who's my boy?" in {e.question for e in ds.train}


def test_tokenize_example_masks_all_but_the_answer(tiny_model) -> None:
    tokenizer = tiny_model.tokenizer
    ds = build_dataset(load_profile(EXAMPLES / "seed_profile.yaml"))
    for example in ds.train[:20]:
        out = tokenize_example(tokenizer, example)
        assert len(out["input_ids"]) == len(out["labels"]) == len(out["attention_mask"])
        learned = [t for t, label in zip(out["input_ids"], out["labels"], strict=True) if label != -100]
        assert [label for label in out["labels"] if label != -100] == learned
        text = tokenizer.decode(learned)
        eot = tokenizer.decode(learned[-1:])
        assert learned[-1] in tokenizer.all_special_ids
        assert text == example.answer + eot, (text, example.answer)
        # the prompt part is exactly the chat-template prompt
        n_prompt = out["labels"].index(learned[0])
        prompt = tokenizer.apply_chat_template(example.messages[:-1], tokenize=False, add_generation_prompt=True)
        assert tokenizer.decode(out["input_ids"][:n_prompt]) == prompt
    with pytest.raises(AndraeusError, match="cuts off the whole answer"):
        tokenize_example(tokenizer, ds.train[0], max_length=8)


def test_jsonl_round_trip_and_openai_format(tmp_path: Path) -> None:
    ds = build_dataset(load_profile(EXAMPLES / "minimal.csv"))
    plain = write_jsonl(ds.train, tmp_path / "out" / "train.jsonl")
    rows = [json.loads(line) for line in plain.read_text().splitlines()]
    assert len(rows) == len(ds.train) and all(set(r) == {"messages"} for r in rows)
    assert [r["messages"] for r in rows] == [e.messages for e in ds.train]
    with_meta = write_jsonl(ds.heldout, tmp_path / "heldout.jsonl", with_meta=True)
    back = read_jsonl(with_meta)
    assert [e.model_dump() for e in back] == [e.model_dump() for e in ds.heldout]
    assert [e.messages for e in read_jsonl(plain)] == [e.messages for e in ds.train]
    assert not list(tmp_path.glob("**/*.tmp"))


def test_read_jsonl_errors_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    good = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
    bad.write_text(good + "\n\n" + '{"messages": [{"role": "robot", "content": "x"}]}\n')
    with pytest.raises(ProfileError, match=r"bad.jsonl, line 3: messages\[0\] needs a role"):
        read_jsonl(bad)
    bad.write_text(good + "\n{not json\n")
    with pytest.raises(ProfileError, match=r"line 2: not valid JSON"):
        read_jsonl(bad)
    assert read_jsonl(tmp_path / "ok.jsonl" if (tmp_path / "ok.jsonl").write_text(good) else None)[0].question == "hi"


def test_chat_example_defaults_for_external_data() -> None:
    example = ChatExample(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
    assert example.meta.split == "train" and example.question == "q" and example.answer == "a"


def test_excluded_questions_never_train() -> None:
    profile = load_profile(EXAMPLES / "seed_profile.yaml")
    full = build_dataset(profile)
    picked = [e.question for e in full.train if e.meta.kind in ("fact", "reverse", "unknown")][:6]
    hand_written = [q.upper() + "!!" for q in picked]  # same words, other case and punctuation
    ds = build_dataset(profile, exclude_questions=hand_written)
    train = {normalize_question(e.question) for e in ds.train}
    assert not train & {normalize_question(q) for q in picked}
    moved = [e for e in ds.heldout if e.question in picked]
    assert len(moved) == len(picked) and all(e.meta.split == "heldout" for e in moved)
    assert len(ds.train) + len(ds.heldout) == len(full.train) + len(full.heldout)


def test_typo_augment_adds_training_typos_and_leaves_heldout_alone() -> None:
    profile = load_profile(EXAMPLES / "seed_profile.yaml")
    plain = build_dataset(profile, seed=2)
    augmented = build_dataset(profile, seed=2, typo_augment=3)
    assert [e.model_dump() for e in augmented.heldout] == [e.model_dump() for e in plain.heldout]
    extra = Counter(e.question for e in augmented.train) - Counter(e.question for e in plain.train)
    added = [e for e in augmented.train if e.question in extra]
    assert len(added) == 3 * len(profile.facts)
    assert Counter(e.meta.topic for e in added) == {f.topic: 3 for f in profile.facts}
    sources = {e.question for e in plain.train if e.meta.kind == "fact"}
    held = [e.question.casefold() for e in plain.heldout]
    for e in added:
        fact = next(f for f in profile.facts if f.topic == e.meta.topic)
        assert e.meta.dimension == "typo" and e.meta.kind == "fact" and e.meta.split == "train"
        assert any(a.casefold() in e.answer.casefold() for a in fact.accepted())
        # a misspelling of a question the model trains on anyway, never one near a held-out question
        assert min(damerau_distance(e.question, s) for s in sources) <= 2, e.question
        assert min(damerau_distance(e.question.casefold(), q) for q in held) > 2, e.question


def test_typo_augment_out_of_range_is_rejected() -> None:
    profile = load_profile(EXAMPLES / "seed_profile.yaml")
    with pytest.raises(ConfigError, match="typo_augment must be between 0 and 500 \\(got -1\\)"):
        build_dataset(profile, typo_augment=-1)


def test_confirm_questions_accept_a_yes_and_other_reversed_questions_do_not() -> None:
    from andraeus_core.dataset import generated_per_fact
    from andraeus_core.matching import contains_any
    from andraeus_core.variations import generate_variations

    profile = load_profile(EXAMPLES / "seed_profile.yaml")
    ds = build_dataset(profile)
    generated = generate_variations(profile, per_fact=generated_per_fact(30, 0.2))
    style = {p.question: p.style for ps in generated.values() for p in ps}
    reverse = [e for e in ds.train + ds.heldout if e.meta.kind == "reverse"]
    confirm = [e for e in reverse if style[e.question] == "confirm"]
    asks = [e for e in reverse if style[e.question] == "reverse"]
    assert confirm and asks
    # "Am I a software engineer?" → "Yes, you're a software engineer." is right; "Who is Buddy?" → "Yes." is not.
    assert all(contains_any("Yes, that's what you told me.", e.meta.expect) for e in confirm)
    assert not any(contains_any("Yes, that's what you told me.", e.meta.expect) for e in asks)
    # the trained answers themselves pass the rule
    assert all(contains_any(e.answer, e.meta.expect) for e in reverse if e.answer)


def test_held_out_phrasings_are_generated_on_top_of_the_trained_ones() -> None:
    from andraeus_core.dataset import generated_per_fact

    assert generated_per_fact(30, 0.2) == 38 and generated_per_fact(30, 0.0) == 30
    profile = load_profile(EXAMPLES / "seed_profile.yaml")
    ds = build_dataset(profile, per_fact=30)
    for topic in ds.topics:
        train_n = sum(e.meta.topic == topic and e.meta.kind in ("fact", "reverse") for e in ds.train)
        held_n = sum(e.meta.topic == topic and e.meta.kind in ("fact", "reverse") for e in ds.heldout)
        assert train_n + held_n == 38 and train_n >= 24, topic
