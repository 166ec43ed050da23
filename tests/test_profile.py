"""Profiles: the shipped examples load, every malformed input becomes a ProfileError naming where and what."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from andraeus_core.errors import ProfileError
from andraeus_core.profile import (
    MAX_FACTS,
    MAX_FILE_BYTES,
    Fact,
    Profile,
    load_profile,
    parse_profile,
    profile_hash,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_seed_profile_has_the_documented_facts() -> None:
    profile = load_profile(EXAMPLES / "seed_profile.yaml")
    assert (profile.user_name, profile.assistant_name) == ("Sam Rivera", "Nova")
    facts = {f.topic: f for f in profile.facts}
    assert len(facts) == 10
    assert facts["dog's name"].value == "Buddy" and facts["dog's name"].aliases == ["Bud"]
    assert facts["birthday"].aliases == ["14 March", "Mar 14", "March 14th"]
    assert facts["car"].accepted() == ["Subaru Outback", "Subaru", "Outback"]
    assert "Bud" in profile.values() and "Portland" in profile.values()


def test_family_profile_and_minimal_csv() -> None:
    family = load_profile(EXAMPLES / "parent_profile.json")
    assert family.user_name == "Tomás Okafor" and family.assistant_name == "Andraeus"
    assert [f.topic for f in family.facts][-1] == "favourite board game"
    assert family.fact("Sister's name").aliases == ["Ines"]  # type: ignore[union-attr]
    minimal = load_profile(EXAMPLES / "minimal.csv")
    assert minimal.user_name == "User"
    assert [(f.topic, f.value, f.aliases) for f in minimal.facts] == [
        ("dog's name", "Buddy", ["Bud"]),
        ("birthday", "March 14", ["14 March", "Mar 14"]),
        ("home city", "Portland", []),
    ]
    assert load_profile(EXAMPLES / "minimal.csv", user_name="Sam").user_name == "Sam"


def test_every_shipped_example_loads() -> None:
    files = sorted(p for p in EXAMPLES.iterdir() if p.suffix in {".yaml", ".yml", ".json", ".csv"})
    assert len(files) >= 3
    for file in files:
        assert load_profile(file).facts


def test_same_profile_same_hash_across_formats() -> None:
    yaml_text = "user_name: Sam\nfacts:\n  - {topic: dog's name, value: Buddy, aliases: [Bud]}\n"
    json_text = json.dumps(
        {"user_name": "Sam", "facts": [{"topic": "dog's name", "value": "Buddy", "aliases": ["Bud"]}]}
    )
    a = parse_profile(yaml_text, fmt="yaml")
    b = parse_profile(json_text, fmt="json")
    assert profile_hash(a) == profile_hash(b)
    assert len(profile_hash(a)) == 64
    c = parse_profile(yaml_text.replace("Buddy", "Max"), fmt="yaml")
    assert profile_hash(c) != profile_hash(a)


YAML_CONFLICT = """user_name: Sam
facts:
  - topic: dog's name
    value: Buddy
  - topic: birthday
    value: March 14
  - topic: home city
    value: Portland
  - topic: Dog's name
    value: Max
"""


def test_conflicting_duplicate_topic_names_both_lines() -> None:
    with pytest.raises(ProfileError) as err:
        parse_profile(YAML_CONFLICT, fmt="yaml", source="me.yaml")
    message = str(err.value)
    assert "topic 'Dog's name' has two values: 'Buddy' (line 4) and 'Max' (line 10)" in message
    assert message.startswith("me.yaml")


def test_conflict_line_numbers_in_json_and_csv() -> None:
    text = '{\n "user_name": "Sam",\n "facts": [\n  {"topic": "dog\'s name",\n   "value": "Buddy"},\n' \
        '  {"topic": "dog\'s name", "value": "Max"}\n ]\n}\n'  # fmt: skip
    with pytest.raises(ProfileError, match=r"'Buddy' \(line 5\) and 'Max' \(line 6\)"):
        parse_profile(text, fmt="json", source="me.json")
    csv_text = "topic,value\ndog's name,Buddy\nbirthday,March 14\ndog's name,Max\n"
    with pytest.raises(ProfileError, match=r"'Buddy' \(row 2\) and 'Max' \(row 4\)"):
        parse_profile(csv_text, fmt="csv", source="me.csv")


def test_duplicate_topic_with_same_value_is_merged() -> None:
    text = """user_name: Sam
facts:
  - {topic: dog's name, value: Buddy, aliases: [Bud]}
  - {topic: my dog's name, value: buddy, aliases: [Budster], questions: ["Who's my good boy?"]}
"""
    profile = parse_profile(text, fmt="yaml")
    assert len(profile.facts) == 1
    assert profile.facts[0].aliases == ["Bud", "Budster"]
    assert profile.facts[0].questions == ["Who's my good boy?"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("user_name: Sam\nfacts:\n  - topic: dog's name\n    value: ''\n", r"line 4: facts\[0\]\.value is empty"),
        ("user_name: Sam\nfacts:\n  - topic: dog's name\n    value:\n", r"line 4: facts\[0\]\.value is empty"),
        ("user_name: Sam\nfacts:\n  - topic: dog's name\n", r"line 3: facts\[0\] has no value"),
        (
            "user_name: Sam\nfacts:\n  - topic: dog\n    vaule: Buddy\n",
            r"line 4: facts\[0\]\.vaule is not a known "
            r"field.*Did you mean 'value'",
        ),
        ("user_nme: Sam\nfacts: []\n", r"line 1: user_nme is not a known field.*Did you mean 'user_name'"),
        (
            "user_name: Sam\nfacts:\n  - topic: dog\n    value: [a, b]\n",
            r"line 4: facts\[0\]\.value must be text, "
            r"not a list",
        ),
        (
            "user_name: Sam\nfacts:\n  - topic: dog\n    value: Buddy\n    aliases: {a: b}\n",
            r"line 5: facts\[0\]\.aliases must be a list",
        ),
        ("user_name: Sam\nfacts: []\n", r"facts is empty"),
        ("facts:\n  - {topic: dog, value: Buddy}\n", r"user_name is missing"),
        (
            "user_name: Sam\nfacts:\n  - topic: dog\n    value: " + "x" * 500 + "\n",
            r"line 4: facts\[0\]\.value is 500 characters long; the limit is 200",
        ),
        ("user_name: Sam\nfacts: {topic: dog}\n", r"facts must be a list"),
        ("user_name: Sam\nfacts:\n  - topic: dog\n    value: Buddy\n  topic: x\n", r"not valid YAML"),
        ("a: &a [*a]\n", r"refers to itself|is not a known field"),
    ],
)
def test_yaml_errors_name_line_field_and_value(text: str, expected: str) -> None:
    with pytest.raises(ProfileError, match=expected) as err:
        parse_profile(text, fmt="yaml", source="p.yaml")
    assert str(err.value).startswith("p.yaml")


def test_too_many_facts_and_too_large_file(tmp_path: Path) -> None:
    facts = [{"topic": f"thing {i}", "value": f"v{i}"} for i in range(MAX_FACTS + 1)]
    with pytest.raises(ProfileError, match=r"has 201 facts; the limit is 200"):
        parse_profile(json.dumps({"user_name": "Sam", "facts": facts}), fmt="json")
    big = tmp_path / "big.yaml"
    big.write_text("user_name: Sam\n#" + "x" * MAX_FILE_BYTES + "\n")
    with pytest.raises(ProfileError, match=r"at most 1,000,000 bytes"):
        load_profile(big)


def test_binary_and_non_utf8_input(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"line 2: the file is not UTF-8 text \(byte 0xff"):
        parse_profile(b"user_name: Sam\n\xff\xfe facts", fmt="yaml", source="x.yaml")
    with pytest.raises(ProfileError, match=r"NUL bytes"):
        parse_profile(b"topic,value\x00\x01\x02", fmt="csv")
    with pytest.raises(ProfileError, match=r"unknown profile type '.png'"):
        load_profile(tmp_path / "photo.png")
    with pytest.raises(ProfileError, match=r"no such profile file"):
        load_profile(tmp_path / "missing.yaml")


def test_csv_errors_name_the_row() -> None:
    with pytest.raises(ProfileError, match=r"row 1: unknown column 'vlue'.*Did you mean 'value'"):
        parse_profile("topic,vlue\ndog,Buddy\n", fmt="csv")
    with pytest.raises(ProfileError, match=r"row 3: facts\[1\]\.value is empty"):
        parse_profile("topic,value\ndog's name,Buddy\nbirthday,\n", fmt="csv")
    with pytest.raises(ProfileError, match=r"row 2: 3 cells but the header names 2 columns"):
        parse_profile("topic,value\ncar,Subaru,Outback\n", fmt="csv")


def test_json_errors_name_the_line() -> None:
    with pytest.raises(ProfileError, match=r"line 3: not valid JSON"):
        parse_profile('{"user_name": "Sam",\n "facts": [\n  {"topic": "dog" "value": 1}]}', fmt="json")
    text = '{"user_name": "Sam",\n "facts": [\n  {"topic": "dog",\n   "value": true}]}'
    with pytest.raises(ProfileError, match=r"line 4: facts\[0\]\.value must be text, not true/false"):
        parse_profile(text, fmt="json")
    text = '{"user_name": "Sam",\n "facts": [{"topic": "dog", "value": "a",\n "value": "b"}]}'
    with pytest.raises(ProfileError, match=r"line 3: facts\[0\]\.value is given twice"):
        parse_profile(text, fmt="json")


def test_bare_list_of_facts_with_user_name() -> None:
    profile = parse_profile("- {topic: dog's name, value: Buddy}\n", fmt="yaml", user_name="Sam")
    assert profile.user_name == "Sam" and profile.facts[0].value == "Buddy"
    with pytest.raises(ProfileError, match=r"line 2: facts\[1\] must be a mapping with topic and value"):
        parse_profile("- {topic: dog's name, value: Buddy}\n- just text\n", fmt="yaml", user_name="Sam")


def test_profile_from_table_rows() -> None:
    from andraeus_core.profile import profile_from_rows

    rows = [["dog's name", "Buddy", "Bud"], ["", "", ""], ["birthday", "March 14", "14 March|Mar 14"]]
    profile = profile_from_rows(rows, user_name="Sam", assistant_name="Nova")
    assert [f.accepted() for f in profile.facts] == [["Buddy", "Bud"], ["March 14", "14 March", "Mar 14"]]
    with pytest.raises(ProfileError, match=r"row 2: facts\[1\]\.value is empty"):
        profile_from_rows([["dog's name", "Buddy"], ["birthday", "  "]], user_name="Sam")


def test_yaml_keeps_scalars_as_written() -> None:
    text = "user_name: Sam\nfacts:\n  - {topic: locker code, value: 007}\n  - {topic: x, value: yes}\n"
    profile = parse_profile(text, fmt="yaml")
    assert [f.value for f in profile.facts] == ["007", "yes"]


def test_models_forbid_unknown_fields_and_merge_in_code() -> None:
    with pytest.raises(ValueError, match="extra"):
        Fact(topic="dog", value="Buddy", colour="brown")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="has two values"):
        Profile(user_name="Sam", facts=[Fact(topic="dog", value="A"), Fact(topic="Dog", value="B")])
    profile = Profile(user_name="Sam", facts=[Fact(topic="my dog", value="A", aliases=["A", "a2"])])
    assert profile.facts[0].topic == "dog" and profile.facts[0].aliases == ["a2"]


# -- property tests: only ProfileError (or a valid Profile) ever comes out -----------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=30))
_keys = st.sampled_from(["user_name", "facts", "topic", "value", "aliases", "questions", "x"]) | st.text(max_size=8)
_json_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(_keys, inner, max_size=5),
    ),
    max_leaves=25,
)  # fmt: skip
_fact_like = st.fixed_dictionaries(
    {"topic": _scalars, "value": _scalars},
    optional={
        "aliases": st.one_of(_scalars, st.lists(_scalars, max_size=3)),
        "questions": st.lists(_scalars, max_size=2),
    },
)  # fmt: skip
_profile_like = st.fixed_dictionaries(
    {"facts": st.one_of(st.lists(_fact_like, max_size=4), _json_values)},
    optional={"user_name": _scalars, "assistant_name": _scalars},
)

_settings = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _only_profile_error(data: str | bytes, fmt: str) -> None:
    try:
        profile = parse_profile(data, fmt=fmt)  # type: ignore[arg-type]
    except ProfileError as exc:
        assert str(exc)
    else:
        assert isinstance(profile, Profile) and 1 <= len(profile.facts) <= MAX_FACTS


@_settings
@given(st.binary(max_size=300), st.sampled_from(["yaml", "json", "csv"]))
def test_random_bytes_raise_only_profile_error(data: bytes, fmt: str) -> None:
    _only_profile_error(data, fmt)


@_settings
@given(st.one_of(_profile_like, _json_values))
def test_random_structures_raise_only_profile_error(value: object) -> None:
    import yaml

    _only_profile_error(json.dumps(value), "json")
    try:
        text = yaml.safe_dump(value, allow_unicode=True)
    except (yaml.YAMLError, ValueError):  # pragma: no cover - unrepresentable floats
        return
    _only_profile_error(text, "yaml")


_csv_rows = st.lists(
    st.lists(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=12), max_size=5), max_size=8
)


@_settings
@given(
    _csv_rows, st.sampled_from(["topic,value", "topic,value,aliases", "value,topic", "topic,value,questions,aliases"])
)
def test_random_csv_raises_only_profile_error(rows: list[list[str]], header: str) -> None:
    import csv
    import io

    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    _only_profile_error(header + "\n" + buffer.getvalue(), "csv")


@_settings
@given(st.text(max_size=200))
def test_random_text_as_yaml_raises_only_profile_error(text: str) -> None:
    _only_profile_error(text, "yaml")
    _only_profile_error("user_name: Sam\nfacts:\n" + text, "yaml")


@pytest.mark.parametrize(
    ("fmt", "text", "match"),
    [
        # Under the value budget: the position-tracking parse runs, and must be linear in the keys.
        ("json", json.dumps({f"k{i}": i for i in range(20_000)}), "k0 is not a known field"),
        ("yaml", "\n".join(f"k{i}: {i}" for i in range(20_000)), "k0 is not a known field"),
        # Far over it: refused before any tree or line table is built.
        ("json", json.dumps({f"k{i}": i for i in range(65_000)}, separators=(",", ":")), "too large"),
        ("yaml", "\n".join(f"k{i}: {i}" for i in range(90_000))[: MAX_FILE_BYTES - 10], "too large"),
        ("yaml", "[" + ",".join("a" for _ in range(400_000)) + "]", "too large"),
    ],
)
def test_huge_documents_are_rejected_fast(fmt: str, text: str, match: str) -> None:
    """A ~1 MB object of 65,000 keys took 20 s to reject (every key's line found by scanning from the start); YAML
    of that size took 5-15 s (pure-Python loader). The bound is loose: 3 s on a busy 2-core machine."""
    import time

    assert len(text) < MAX_FILE_BYTES
    started = time.perf_counter()
    with pytest.raises(ProfileError, match=match):
        parse_profile(text, fmt=fmt, source=f"big.{fmt}")  # type: ignore[arg-type]
    assert time.perf_counter() - started < 3.0


def test_json_key_lines_are_found_after_the_previous_key() -> None:
    """A field's line is its own key's, not that of a same-named key nested in an earlier value."""
    text = '{"user_name": "Sam", "facts": [{"topic": "dog",\n "questions": [{"value": 1}],\n "value": true}]}'
    with pytest.raises(ProfileError, match=r"line 3: facts\[0\]\.value must be text"):
        parse_profile(text, fmt="json", source="p.json")


def test_json_number_with_thousands_of_digits_is_a_profile_error() -> None:
    text = '{"user_name": "Sam", "facts": [{"topic": "dog", "value": ' + "9" * 5000 + "}]}"
    with pytest.raises(ProfileError, match="too many digits"):
        parse_profile(text, fmt="json", source="p.json")
