"""Family profiles: the format and its errors, speakers, the privacy rule, and the family dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from andraeus_core.dataset import build_dataset
from andraeus_core.errors import ConfigError, ProfileError
from andraeus_core.family import (
    disclosure_guard,
    refusal,
    resolve_speaker,
    speaker_system_prompt,
    third_person_questions,
)
from andraeus_core.matching import contains_any
from andraeus_core.profile import load_profile, parse_profile, profile_hash
from andraeus_core.variations import normalize_question

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

FAMILY_YAML = """\
user_name: the Test family
people:
  - name: Ana
    relation: Mum
    facts:
      - {topic: birthday, value: May 3}
      - {topic: job, value: pilot}
      - {topic: pin, value: "9912", private: true}
  - name: Ben
    aliases: [Benny]
    facts:
      - {topic: birthday, value: June 8}
      - {topic: school, value: Hill Primary}
shared:
  - {topic: dog's name, value: Rex}
"""

FAMILY_DICT: dict[str, Any] = {
    "user_name": "the Test family",
    "people": [{"name": "Ana", "relation": "Mum"}, {"name": "Ben", "aliases": ["Benny"]}],
    "facts": [
        {"topic": "birthday", "value": "May 3", "owner": "Ana"},
        {"topic": "pin", "value": "9912", "owner": "Ana", "private": True},
        {"topic": "birthday", "value": "June 8", "owner": "Ben"},
        {"topic": "dog's name", "value": "Rex"},
    ],
}


def family() -> Any:
    return parse_profile(FAMILY_YAML, fmt="yaml", source="family.yaml")


# -- format -----------------------------------------------------------------------------------------------------


def test_family_example_loads_with_people_shared_and_private_facts() -> None:
    profile = load_profile(EXAMPLES / "family_profile.yaml")
    assert profile.is_family
    assert [p.name for p in profile.people] == ["Nadia", "Karim", "Leila"]
    assert len(profile.facts) == 28
    assert len(profile.facts_of(None)) == 4  # shared
    assert all(len(profile.facts_of(p.name)) == 8 for p in profile.people)
    assert {f.topic for f in profile.facts if f.private} == {
        "blood type",
        "bank",
        "doctor's name",
        "gym locker code",
        "diary password",
    }
    # The same topic is three facts, one per person.
    assert {profile.fact("birthday", owner).value for owner in ("Nadia", "Karim", "Leila")} == {
        "April 9",
        "November 23",
        "July 2",
    }
    assert profile.person("dad").name == "Karim" and profile.person("LULU").name == "Leila"


def test_one_person_profiles_keep_their_hash() -> None:
    # The family fields are left out of the hash when unused: an adapter trained before them still matches.
    seed = load_profile(EXAMPLES / "seed_profile.yaml")
    assert not seed.is_family
    assert profile_hash(seed) == "b1473498a8193fe05c59e89f45ae3d2a8bdf3aef7070b15f222147a094192455"


def test_family_without_user_name_is_named_after_its_people() -> None:
    text = FAMILY_YAML.replace("user_name: the Test family\n", "")
    assert parse_profile(text, fmt="yaml").user_name == "Ana and Ben"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("    aliases: [Benny]", "    aliases: [Mum]"), "line 10: people[1].aliases[0] is already used by Ana"),
        (("  - name: Ben", "  - name: ana"), "line 9: people[1].name is already used by Ana"),
        (("    relation: Mum", "    relashun: Mum"), "line 4: people[0].relashun is not a known field. Did you mean"),
        (("  - {topic: dog's name, value: Rex}", "  - {topic: dog's name, value: Rex, private: true}"),
         "shared[0].private is only for a person's facts"),
        (("      - {topic: school, value: Hill Primary}", "      - {topic: dog's name, value: Fido}"),
         "people[1].facts[1].topic is also a shared fact"),
        (("      - {topic: job, value: pilot}", "      - {topic: birthday, value: May 4}"),
         "Ana's topic 'birthday' has two values: 'May 3' (line 6) and 'May 4' (line 7)"),
        (("value: \"9912\", private: true", "value: \"9912\", private: maybe"),
         "line 8: people[0].facts[2].private must be true or false (got 'maybe')"),
        (("shared:", "facts:\n  - {topic: cat, value: Tom}\nshared:"), "facts cannot sit beside people"),
    ],
)  # fmt: skip
def test_family_format_errors_name_line_field_and_value(change: tuple[str, str], expected: str) -> None:
    text = FAMILY_YAML.replace(*change)
    assert text != FAMILY_YAML
    with pytest.raises(ProfileError) as info:
        parse_profile(text, fmt="yaml", source="family.yaml")
    assert expected in str(info.value)
    assert str(info.value).startswith("family.yaml")


def test_same_topic_for_two_people_is_not_a_conflict() -> None:
    profile = family()
    assert profile.fact("birthday", "Ana").value == "May 3"
    assert profile.fact("birthday", "Ben").value == "June 8"
    assert profile.fact("birthday") is None  # no shared birthday


def test_csv_person_column_makes_a_family() -> None:
    text = (
        "person,topic,value,private\nAna,birthday,May 3,\nAna,pin,9912,yes\nBen,birthday,June 8,\n,dog's name,Rex,\n"
    )
    profile = parse_profile(text, fmt="csv", source="family.csv")
    assert profile.is_family and [p.name for p in profile.people] == ["Ana", "Ben"]
    assert profile.fact("pin", "Ana").private
    assert profile.fact("dog's name").owner is None


def test_csv_person_typo_is_refused_with_its_row() -> None:
    text = "person,topic,value\nMarco,birthday,May 3\nMarco,job,pilot\nMarko,car,Volvo\n"
    with pytest.raises(ProfileError) as info:
        parse_profile(text, fmt="csv", source="family.csv")
    message = str(info.value)
    assert "row 4" in message and "'Marko'" in message and "did you mean 'Marco'" in message


def test_csv_private_without_person_is_refused() -> None:
    with pytest.raises(ProfileError, match="row 2: facts.0..private is only for a person's facts"):
        parse_profile("topic,value,private\npin,9912,yes\n", fmt="csv", source="f.csv")


def test_one_person_profile_rejects_shared() -> None:
    with pytest.raises(ProfileError, match="shared is for family profiles"):
        parse_profile("user_name: Sam\nfacts: [{topic: a, value: b}]\nshared: []\n", fmt="yaml")


# -- speakers and the privacy rule ------------------------------------------------------------------------------


def test_resolve_speaker_by_name_relation_or_alias() -> None:
    profile = family()
    assert resolve_speaker(profile, "mum").name == "Ana"
    assert resolve_speaker(profile, " benny ").name == "Ben"
    assert resolve_speaker(profile, None) is None and resolve_speaker(profile, "  ") is None
    with pytest.raises(ConfigError, match="'Zed' is not one of the family; choose one of: Ana \\(Mum\\), Ben"):
        resolve_speaker(profile, "Zed")
    with pytest.raises(ConfigError, match="speaker is for family adapters"):
        resolve_speaker(load_profile(EXAMPLES / "seed_profile.yaml"), "Sam")
    with pytest.raises(ConfigError, match="limit is 80"):
        resolve_speaker(profile, "x" * 81)


def test_speaker_prompt_names_the_speaker() -> None:
    profile = family()
    assert speaker_system_prompt(profile, profile.person("Ben")).endswith("You are talking to Ben.")
    assert "do not know which of them" in speaker_system_prompt(profile, None)


def test_disclosure_guard_withholds_others_private_values_only() -> None:
    profile = family()
    ana, ben = profile.person("Ana"), profile.person("Ben")
    assert disclosure_guard(profile, ben).check("Mum's PIN is 9912.") == refusal("Ana")
    assert disclosure_guard(profile, None).check("It is 9912") == refusal("Ana")
    assert disclosure_guard(profile, ana).check("Your PIN is 9912.") is None  # her own
    assert not disclosure_guard(profile, ana).facts  # no private fact withheld from Ana
    assert disclosure_guard(profile, ben).check("Mum's birthday is May 3.") is None  # public
    # A number the question itself says is no disclosure.
    assert disclosure_guard(profile, ben).check("9912?", question="Is Mum's PIN 9912?") is None
    assert not disclosure_guard(load_profile(EXAMPLES / "seed_profile.yaml"), None)


def test_first_person_answers_never_state_another_persons_value() -> None:
    profile = family()
    ana, ben = profile.person("Ana"), profile.person("Ben")
    # "my birthday" from Ben answered with Ana's: "I don't know" instead.
    assert disclosure_guard(profile, ben).check_first_person("It's May 3.", "When's my birthday?") == (
        "I don't know your birthday — you haven't told me."
    )
    assert disclosure_guard(profile, ben).check_first_person("It's June 8.", "When's my birthday?") is None
    # A question that names the other person asks about them.
    assert disclosure_guard(profile, ben).check_first_person("May 3.", "When's Mum's birthday?") is None
    assert disclosure_guard(profile, ana).check_first_person("June 8", "When is Benny's birthday?") is None
    # An unknown speaker: nobody's first-person value.
    assert "don't know who's asking" in disclosure_guard(profile, None).check_first_person("May 3", "my birthday?")
    assert disclosure_guard(profile, None).check_first_person("Rex!", "What's our dog called?") is None  # shared


def test_third_person_questions_use_every_name_form() -> None:
    profile = load_profile(EXAMPLES / "family_profile.yaml")
    karim = profile.person("Karim")
    items = third_person_questions(karim, profile.fact("job", "Karim"), count=9)
    assert {t.referent for t in items} == {"Karim", "Dad", "Papa"}
    assert all(contains_any(t.answer, ["paramedic"]) for t in items)
    private = third_person_questions(karim, profile.fact("gym locker code", "Karim"), count=6)
    assert private and all(t.answer == refusal("Karim") for t in private)


# -- the dataset ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def family_dataset() -> Any:
    profile = load_profile(EXAMPLES / "family_profile.yaml")
    return profile, build_dataset(profile, guard_answer_fn=lambda qs: [f"Answer {i}." for i in range(len(qs))])


def test_family_dataset_asks_each_speaker_about_their_own_facts(family_dataset: Any) -> None:
    profile, data = family_dataset
    for person in profile.people:
        prompt = speaker_system_prompt(profile, person)
        own = [e for e in data.train if e.meta.kind == "fact" and e.meta.owner == person.name]
        assert own and all(e.messages[0]["content"] == prompt for e in own)
        assert {e.meta.topic for e in own} == {f.topic for f in profile.facts_of(person.name)}
        birthday = profile.fact("birthday", person.name).value
        assert any(birthday in e.answer for e in own if e.meta.topic == "birthday")
    assert data.system_prompt == speaker_system_prompt(profile, None)


def test_family_dataset_never_tells_a_private_value_to_anyone_else(family_dataset: Any) -> None:
    profile, data = family_dataset
    for example in [*data.train, *data.heldout]:
        for fact in profile.facts:
            if fact.private and example.meta.speaker != fact.owner:
                assert not contains_any(example.answer, fact.accepted()), (example.question, example.answer)
    refusals = [e for e in data.train if e.meta.kind == "private"]
    assert len({e.meta.topic for e in refusals}) == 5
    assert all(e.meta.speaker != e.meta.owner for e in refusals)


def test_family_dataset_never_answers_first_person_with_another_persons_value(family_dataset: Any) -> None:
    profile, data = family_dataset
    for example in data.train:
        if example.meta.kind in ("fact", "reverse") and example.meta.owner is not None:
            others = [f for f in profile.facts if f.owner not in (example.meta.owner, None)]
            own = {v.casefold() for f in profile.facts_of(example.meta.owner) for v in f.accepted()}
            leaked = [v for f in others for v in f.accepted() if v.casefold() not in own]
            assert not contains_any(example.answer, leaked), (example.meta.speaker, example.question, example.answer)


def test_family_dataset_third_person_cross_person_and_unknown_speaker(family_dataset: Any) -> None:
    profile, data = family_dataset
    third = [e for e in data.train if e.meta.kind == "third_person"]
    public = {(f.owner, f.topic) for f in profile.facts if f.owner and not f.private}
    assert {(e.meta.owner, e.meta.topic) for e in third} == public
    assert all(e.meta.speaker != e.meta.owner for e in third)
    assert any(e.meta.kind == "third_person" for e in data.heldout)
    cross = [e for e in data.train if e.meta.dimension == "cross"]
    # Leila has no job; Nadia and Karim do.
    assert any(e.meta.speaker == "Leila" and e.meta.topic == "job" for e in cross)
    assert not any(e.meta.speaker in ("Nadia", "Karim") and e.meta.topic == "job" for e in cross)
    who = [e for e in data.train if e.meta.dimension == "who"]
    assert who and all(e.meta.speaker is None and "don't know who" in e.answer for e in who)


def test_family_dataset_holds_out_per_speaker_without_training_on_it(family_dataset: Any) -> None:
    _, data = family_dataset
    trained = {(e.meta.speaker, normalize_question(e.question)) for e in data.train}
    held = [(e.meta.speaker, normalize_question(e.question)) for e in data.heldout]
    assert held and not trained.intersection(held)
    assert {e.meta.speaker for e in data.heldout if e.meta.kind == "fact"} >= {"Nadia", "Karim", "Leila"}


def test_family_dataset_rejects_a_custom_system_prompt() -> None:
    with pytest.raises(ConfigError, match="each speaker's own system prompt"):
        build_dataset(family(), system_prompt="facts")


def test_gate_sends_cross_person_questions_to_the_adapter(family_dataset: Any) -> None:
    from andraeus_core.gate import gate_data

    profile, data = family_dataset
    routes = gate_data(profile, data)
    cross = {e.question for e in data.train if e.meta.dimension in ("cross", "who")}
    assert cross and cross <= set(routes.train["adapter"])
    assert not cross & set(routes.train["abstain"]) - {
        e.question for e in data.train if e.meta.kind == "unknown" and e.meta.dimension not in ("cross", "who")
    }


# -- chat -------------------------------------------------------------------------------------------------------


@pytest.fixture
def family_chat(tmp_path: Path, make_adapter: Any, tiny_model: Any) -> Any:
    from andraeus_core.chat import ChatModel
    from andraeus_core.models import load_model

    path = make_adapter(tmp_path / "family", profile=FAMILY_DICT, system_prompt=speaker_system_prompt(family(), None))
    return ChatModel(load_model("tiny-random"), path)  # a copy of its own: PEFT changes the model it wraps


def test_chat_uses_the_speakers_prompt(family_chat: Any) -> None:
    assert family_chat.speakers == ["Ana", "Ben"]
    system, guard = family_chat.speaker_prompt("benny")
    assert system.endswith("You are talking to Ben.") and guard
    system, guard = family_chat.speaker_prompt("Ana", "You are talking to Ben.")  # a named speaker wins
    assert system.endswith("You are talking to Ana.") and not guard.facts
    system, _ = family_chat.speaker_prompt(None)
    assert "do not know which of them" in system
    with pytest.raises(ConfigError, match="not one of the family"):
        family_chat.reply([{"role": "user", "content": "hi"}], speaker="Zed")


def test_chat_replaces_an_answer_that_tells_a_private_value(family_chat: Any, monkeypatch: Any) -> None:
    from andraeus_core.chat import GenerationConfig

    said: list[str] = []

    def fake_stream(messages: Any, config: Any = None, **kwargs: Any) -> Any:
        said.append(kwargs["system"])
        yield "Mum's PIN "
        yield "is 99"
        yield "12."

    monkeypatch.setattr(family_chat, "_stream", fake_stream)
    question = [{"role": "user", "content": "What's Mum's PIN?"}]
    config = GenerationConfig(max_new_tokens=4)
    assert family_chat.reply(question, config, speaker="Ben") == refusal("Ana")
    assert family_chat.reply(question, config) == refusal("Ana")  # nobody said who they are
    assert family_chat.reply(question, config, speaker="Ana") == "Mum's PIN is 9912."  # her own
    assert said[0].endswith("You are talking to Ben.") and said[2].endswith("You are talking to Ana.")


def test_chat_replaces_the_adapters_answer_about_the_wrong_person(family_chat: Any, monkeypatch: Any) -> None:
    from andraeus_core.chat import GenerationConfig

    route = {"route": "adapter"}

    def fake_stream(messages: Any, config: Any = None, **kwargs: Any) -> Any:
        kwargs["trace"]["route"] = route["route"]
        yield "Your birthday is May 3."  # Ana's

    monkeypatch.setattr(family_chat, "_stream", fake_stream)
    question = [{"role": "user", "content": "When's my birthday?"}]
    config = GenerationConfig(max_new_tokens=4)
    trace: dict[str, Any] = {}
    assert family_chat.reply(question, config, speaker="Ben") == "I don't know your birthday — you haven't told me."
    assert family_chat.reply(question, config, speaker="Ana") == "Your birthday is May 3."
    list(family_chat.stream(question, config, speaker="Ben", trace=trace))
    assert trace["withheld"] is True
    route["route"] = "base"  # the base model's answer to an everyday request is left alone
    assert family_chat.reply(question, config, speaker="Ben") == "Your birthday is May 3."


def test_chat_speaker_on_a_one_person_adapter_is_an_error(tmp_path: Path, make_adapter: Any, tiny_model: Any) -> None:
    from andraeus_core.chat import ChatModel
    from andraeus_core.models import load_model

    chat = ChatModel(load_model("tiny-random"), make_adapter(tmp_path / "one"))
    assert chat.speakers == []
    with pytest.raises(ConfigError, match="speaker is for family adapters"):
        chat.reply([{"role": "user", "content": "hi"}], speaker="Sam")


def test_table_rows_round_trip_a_family_and_keep_relations() -> None:
    from andraeus_core.profile import profile_from_rows

    profile = load_profile(EXAMPLES / "family_profile.yaml")
    rows = [[f.topic, f.value, "|".join(f.aliases), f.owner or "", "yes" if f.private else ""] for f in profile.facts]
    again = profile_from_rows(rows, user_name=profile.user_name, people=profile.people)
    assert profile_hash(again) == profile_hash(profile)
    rows[3][3] = "Nadai"
    with pytest.raises(ProfileError, match="row 4: person 'Nadai' is named in no other row; did you mean 'Nadia'"):
        profile_from_rows(rows, user_name="x")
    # Three cells per row (no person column) is a one-person table, as before.
    assert not profile_from_rows([["dog's name", "Rex"]], user_name="Sam").is_family


def test_variations_of_a_family_are_keyed_by_person() -> None:
    from andraeus_core.variations import generate_variations

    profile = load_profile(EXAMPLES / "family_profile.yaml")
    out = generate_variations(profile, per_fact=6)
    assert len(out) == 28
    assert {"Nadia: birthday", "Karim: birthday", "Leila: birthday", "dog's name"} <= set(out)
    assert all("November 23" in a for p in out["Karim: birthday"] for a in p.answers if p.style == "direct")


def test_hub_treats_the_familys_names_as_private(tmp_path: Path, make_adapter: Any) -> None:
    from andraeus_core.adapter import Adapter
    from andraeus_core.hub import _private_strings

    adapter = Adapter.load(make_adapter(tmp_path / "family", profile=FAMILY_DICT))
    secrets = dict(_private_strings(adapter, include_user_name=False))
    assert secrets["people[0].name"] == "Ana" and secrets["people[1].aliases[0]"] == "Benny"
    assert "9912" in secrets.values()


def test_family_diff_matches_facts_per_person() -> None:
    from andraeus_core.update import diff_profiles

    old = family()
    new = parse_profile(FAMILY_YAML.replace("June 8", "June 9"), fmt="yaml")
    diff = diff_profiles(old, new)
    assert [(c.kind, c.old.owner, c.new.value) for c in diff.changes] == [("changed", "Ben", "June 9")]
    flipped = parse_profile(FAMILY_YAML.replace('value: "9912", private: true', 'value: "9912"'), fmt="yaml")
    assert not diff_profiles(old, flipped).empty
    assert diff_profiles(old, family()).empty


@pytest.mark.parametrize("example", ["family_profile.yaml", "seed_profile.yaml", "minimal.csv"])
def test_a_profiles_own_json_dump_loads_back_as_the_same_profile(example: str) -> None:
    # The web app hands a profile to its training worker as the profile's JSON dump (people: [] and owner: null
    # for one person; a flat list of facts naming their owners for a family).
    profile = load_profile(EXAMPLES / example, user_name="Sam" if example.endswith(".csv") else None)
    again = parse_profile(profile.model_dump_json(), fmt="json", source="dump.json")
    assert again == profile and profile_hash(again) == profile_hash(profile)


def test_flat_family_facts_must_name_someone_in_people() -> None:
    dump = family().model_dump(mode="json")
    dump["facts"][0]["owner"] = "Zed"
    import json

    with pytest.raises(ProfileError, match=r"facts\[0\].owner names no one in people \(got 'Zed'\)"):
        parse_profile(json.dumps(dump), fmt="json", source="dump.json")


def test_family_bench_quick_run(tmp_path: Path) -> None:
    # bench/family.py --quick on tiny-random: the figures mean nothing, the mechanics (train both, time ratio,
    # evaluate the family on its hand-written set and held-out split with the family metrics) are what is checked.
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "figures.json"
    run = subprocess.run(
        [sys.executable, "bench/family.py", "--quick", "--workdir", str(tmp_path / "w"), "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["trained"]["ratio"] > 0 and figures["trained"]["family"]["train_examples"] > 0
    family = figures["eval"]["evalset"]["family"]
    assert family["people"] == ["Nadia", "Karim", "Leila"]
    assert family["systems"]["adapter"]["private_disclosure"]["n"] == 25
    assert family["systems"]["adapter"]["private_disclosure"]["rate"] == 0.0  # the guard, whatever tiny-random says
    assert "training time: family" in run.stdout and "leaked" in run.stdout
