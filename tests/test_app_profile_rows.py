"""profile_from_rows: the web app's facts table → a Profile, with errors naming the row, field and value."""

from __future__ import annotations

import math

import pytest

from andraeus_core import ProfileError, load_profile, profile_from_rows


def test_rows_become_the_same_profile_as_the_example_file():
    from pathlib import Path

    example = load_profile(Path(__file__).resolve().parents[1] / "examples" / "seed_profile.yaml")
    rows = [[f.topic, f.value, " | ".join(f.aliases)] for f in example.facts]
    rows.insert(3, ["", "", ""])  # a blank row in the middle is skipped
    rows.append([None, math.nan, None])  # so is an empty DataFrame row (None/NaN cells)
    built = profile_from_rows(rows, user_name=example.user_name, assistant_name=example.assistant_name)
    assert built == example


def test_short_rows_and_default_assistant():
    profile = profile_from_rows([["home city", "Portland"]], user_name="Sam")
    assert profile.assistant_name == "Andraeus"
    assert profile.facts[0].aliases == []


@pytest.mark.parametrize(
    ("rows", "user", "expected"),
    [
        ([["dog's name", "Buddy", ""], ["", "", ""], ["birthday", "", ""]], "Sam", r"row 3: facts\[1\]\.value"),
        ([["dog's name", "Buddy", ""], ["Dog's name", "Rex", ""]], "Sam", r"'Buddy' \(row 1\) and 'Rex' \(row 2\)"),
        ([["", "", ""]], "Sam", "at least one fact"),
        ([["dog's name", "Buddy", ""]], "  ", "user_name"),
        ([["a" * 200, "Buddy", ""]], "Sam", r"row 1: facts\[0\]\.topic"),
    ],
)
def test_errors_name_row_field_and_value(rows, user, expected):
    with pytest.raises(ProfileError, match=expected) as info:
        profile_from_rows(rows, user_name=user)
    assert str(info.value).startswith("facts table")
