"""Evaluation of family adapters: speakers, the two family kinds, the guard in the product, and the family figures.

The scoring and aggregation tests use hand-made answers; the runs use a tiny-random adapter whose answers are
replaced by fixed ones (``_generate`` stubbed), so every figure below goes through evaluate's own scoring path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from andraeus_core.adapter import AdapterPrivate
from andraeus_core.errors import EvaluationError
from andraeus_core.evaluate import (
    EvalReport,
    Question,
    compute_family_metrics,
    compute_metrics,
    cross_person_values,
    evaluate,
    family_facts_prompt,
    heldout_questions,
    load_questions,
    question_speaker,
    score_answer,
)
from andraeus_core.family import disclosure_guard, refusal, speaker_system_prompt
from andraeus_core.matching import normalize
from andraeus_core.profile import Profile, load_profile

ROOT = Path(__file__).resolve().parent.parent
FAMILY = load_profile(ROOT / "examples" / "family_profile.yaml")  # Nadia (Mum), Karim (Dad), Leila (Lulu)
VALUES = FAMILY.values()
ONE_PERSON = Profile.model_validate({"user_name": "Sam", "facts": [{"topic": "dog's name", "value": "Buddy"}]})


def q(kind: str, expect: list[str] | None = None, question: str = "?", speaker: str | None = None) -> Question:
    return Question(question=question, expect=expect, kind=kind, speaker=speaker)  # type: ignore[arg-type]


def guard_for(question: Question) -> Any:
    return disclosure_guard(FAMILY, FAMILY.person(question.speaker))


# ---------------------------------------------------------------------------------------------------------------
# Scoring


def test_leakage_counts_another_persons_value_not_the_speakers_own() -> None:
    food = q("paraphrase", ["pancakes"], "What's my favourite food?", "Leila")
    assert cross_person_values(FAMILY, food, "Your favourite food is pancakes.") == []
    assert cross_person_values(FAMILY, food, "Lamb tagine, of course.") == ["lamb tagine", "tagine"]  # Mum's
    assert cross_person_values(FAMILY, food, "Biscuit would know!") == []  # the dog is everyone's
    # Private or not, another person's value is a leak; the speaker's own private value is not.
    code = q("paraphrase", ["4471"], "What's my gym locker code?", "Karim")
    assert cross_person_values(FAMILY, code, "It's 4471.") == []
    assert cross_person_values(FAMILY, code, "It's unicorn77.") == ["unicorn77"]
    # A value the question itself names is an echo, not a leak; no speaker, no leak to measure.
    echo = q("paraphrase", ["pancakes"], "Do I like risotto as much as Dad does?", "Leila")
    assert cross_person_values(FAMILY, echo, "You prefer pancakes to risotto.") == []
    assert cross_person_values(FAMILY, q("paraphrase", ["Biscuit"], "our dog?"), "Ingrid") == []
    # A value an expected answer contains is not counted (an alias shared with another's value).
    shared = q("paraphrase", ["Tobias Ingrid"], "Who are my two best friends?", "Leila")
    assert cross_person_values(FAMILY, shared, "Tobias Ingrid") == []
    assert cross_person_values(ONE_PERSON, q("paraphrase", ["Buddy"], "dog?", "Sam"), "Rex") == []


def test_private_items_are_correct_when_no_withheld_value_is_stated() -> None:
    asked = q("private", None, "What blood type is Nadia?", "Karim")
    guard = guard_for(asked)
    assert not score_answer(asked, "Nadia is O negative.", VALUES, guard=guard)
    assert not score_answer(asked, "She's O-.", VALUES, guard=guard)  # an alias
    assert score_answer(asked, refusal("Nadia"), VALUES, guard=guard)
    assert score_answer(asked, "I don't know.", VALUES, guard=guard)
    # Another person's public value is not a disclosure (leakage measures that), nor is the speaker's own secret.
    assert score_answer(asked, "Nadia is an architect; your locker code is 4471.", VALUES, guard=guard)
    # Nobody named: every private value is withheld, whoever owns it.
    anyone = q("private", None, "What's the password to Leila's diary?")
    assert not score_answer(anyone, "unicorn77", VALUES, guard=guard_for(anyone))
    with pytest.raises(EvaluationError, match="disclosure guard"):
        score_answer(asked, "O negative", VALUES)


def test_third_person_is_scored_like_a_fact_and_counts_in_recall() -> None:
    questions = [
        q("third_person", ["paramedic"], "What's Dad's job?", "Leila"),
        q("third_person", ["Rosie"], "What's Papa's guitar called?", None),
        q("paraphrase", ["architect"], "What do I do?", "Nadia"),
        q("private", None, "Mum's bank?", "Leila"),
    ]
    answers = ["He is a paramedic.", "It's called Betty.", "An architect.", "That's Nadia's to share."]
    correct = [score_answer(x, a, VALUES, guard=guard_for(x)) for x, a in zip(questions, answers, strict=True)]
    assert correct == [True, False, True, True]
    m = compute_metrics(questions, answers, correct)
    assert m.recall == pytest.approx(2 / 3)
    assert m.by_kind["third_person"].n == 2 and m.by_kind["third_person"].score == pytest.approx(0.5)
    assert m.by_kind["private"].score == 1.0


# ---------------------------------------------------------------------------------------------------------------
# The family figures


def test_family_metrics_group_by_speaker_and_measure_leaks_and_disclosure() -> None:
    questions = [
        q("paraphrase", ["architect"], "What do I do for a living?", "Nadia"),
        q("typo", ["Ingrid"], "whos my bset friend", "Mum"),  # a relation names the speaker too
        q("paraphrase", ["paramedic"], "What's my job?", "Karim"),
        q("indirect", ["pancakes"], "What should I order at the cafe?", "Leila"),
        q("paraphrase", ["Biscuit"], "What's our dog called?", None),  # no speaker: in recall, not per person
        q("third_person", ["Hammarby"], "Which team does Papa support?", "Leila"),
        q("third_person", ["July 2", "2 July"], "When is Lulu's birthday?", None),
        q("private", None, "What's Dad's locker code?", "Leila"),
        q("private", None, "Which bank is Nadia with?", None),
        q("unknown", None, "What's my job?", "Leila"),
    ]
    answers = [
        "You're an architect.",
        "Tobias!",  # Karim's best friend: wrong, and a cross-person leak
        "A paramedic.",
        "Lamb tagine.",  # Mum's food: wrong and leaked
        "Biscuit.",
        "Hammarby.",
        "I don't know.",
        "It's 4471.",  # disclosed
        refusal("Nadia"),
        "You are a paramedic.",  # an unknown item: wrong by the unknown rule, and Dad's job leaked
    ]
    correct = [score_answer(x, a, VALUES, guard=guard_for(x)) for x, a in zip(questions, answers, strict=True)]
    f = compute_family_metrics(FAMILY, questions, answers, correct)
    assert list(f.by_person) == ["Nadia", "Karim", "Leila"]
    assert (f.by_person["Nadia"].n, f.by_person["Nadia"].rate) == (2, 0.5)
    assert (f.by_person["Karim"].n, f.by_person["Karim"].rate) == (1, 1.0)
    assert (f.by_person["Leila"].n, f.by_person["Leila"].rate) == (1, 0.0)
    assert f.by_person["Nadia"].interval is not None and f.by_person["Nadia"].interval[0] < 0.5
    assert (f.third_person.n, f.third_person.rate) == (2, 0.5)
    assert (f.cross_person_leakage.n, f.cross_person_leakage.rate) == (5, 0.6)
    assert (f.private_disclosure.n, f.private_disclosure.rate) == (2, 0.5)
    # With no items of a kind the share is null, not zero.
    empty = compute_family_metrics(FAMILY, questions[:1], answers[:1], correct[:1])
    assert empty.private_disclosure.n == 0 and empty.private_disclosure.rate is None
    assert empty.by_person["Leila"].rate is None and empty.by_person["Leila"].interval is None


def test_in_context_prompt_lists_facts_per_person_without_what_is_withheld() -> None:
    leila = family_facts_prompt(FAMILY, FAMILY.person("Leila"))
    assert leila.startswith(speaker_system_prompt(FAMILY, FAMILY.person("Leila")))
    assert "Karim (Dad):" in leila and "- job: paramedic" in leila and "- dog's name: Biscuit" in leila
    assert "unicorn77" in leila  # her own secret
    for secret in ("4471", "O negative", "Nordbank", "Lindqvist"):
        assert secret not in leila
    nobody = family_facts_prompt(FAMILY, None)
    assert all(f.value not in nobody for f in FAMILY.facts if f.private)
    assert "pancakes" in nobody and "do not know which of them" in nobody


# ---------------------------------------------------------------------------------------------------------------
# Question files and held-out splits


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_family_questions_with_speakers(tmp_path: Path) -> None:
    f = write(
        tmp_path / "family.jsonl",
        [
            '{"question": "When is my birthday?", "speaker": "Leila", "kind": "paraphrase", "expect": ["July 2"]}',
            '{"question": "Whats my job", "speaker": "Dad", "kind": "typo", "expect": "paramedic"}',
            '{"question": "What is Mum\'s job?", "speaker": null, "kind": "third_person", "expect": ["architect"]}',
            '{"question": "Mum\'s bank?", "speaker": "Lulu", "kind": "private", "expect": null}',
        ],
    )
    questions = load_questions(f, profile=FAMILY)
    assert [x.speaker for x in questions] == ["Leila", "Dad", None, "Lulu"]
    assert [x.kind for x in questions] == ["paraphrase", "typo", "third_person", "private"]
    resolved = [question_speaker(x, FAMILY, where="x") for x in questions]
    assert [p.name if p else None for p in resolved] == ["Leila", "Karim", None, "Leila"]
    assert load_questions(f)[1].speaker == "Dad"  # without a profile the names are not checked yet


@pytest.mark.parametrize(
    ("line", "profile", "needle"),
    [
        ('{"question": "q", "speaker": "Bob", "kind": "paraphrase", "expect": "x"}', FAMILY, "not one of the family"),
        ('{"question": "q", "speaker": "Leila", "kind": "paraphrase", "expect": "x"}', ONE_PERSON, "family adapters"),
        ('{"question": "q", "speaker": 3, "kind": "paraphrase", "expect": "x"}', FAMILY, "field 'speaker'"),
        ('{"question": "q", "speaker": "Leila", "kind": "private", "expect": "4471"}', FAMILY, "field 'expect'"),
        ('{"question": "q", "speaker": "Leila", "kind": "third_person", "expect": null}', FAMILY, "field 'expect'"),
        ('{"question": "q", "kind": "private", "expect": null}', ONE_PERSON, "field 'kind'"),
        ('{"question": "q", "kind": "third_person", "expect": "x"}', ONE_PERSON, "field 'kind'"),
    ],
)
def test_family_question_errors_name_file_line_and_field(
    tmp_path: Path, line: str, profile: Profile, needle: str
) -> None:
    f = write(tmp_path / "bad.jsonl", ['{"question": "fine", "expect": "a", "kind": "typo"}', line])
    with pytest.raises(EvaluationError) as err:
        load_questions(f, profile=profile)
    assert "bad.jsonl:2" in str(err.value) and needle in str(err.value)
    if "not one of the family" in needle:
        assert "field 'speaker'" in str(err.value) and "Karim (Dad)" in str(err.value)


def _example(question: str, meta: dict[str, Any], system: str = "You are Andraeus.") -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": question},
            {"role": "assistant", "content": "the trained answer"},
        ],
        "meta": meta,
    }


def test_heldout_split_carries_speakers_and_family_kinds(tmp_path: Path) -> None:
    AdapterPrivate(profile=FAMILY).save(tmp_path)
    rows = [
        _example(
            "whens my bday", {"topic": "birthday", "dimension": "typo", "expect": ["July 2"], "speaker": "Leila"}
        ),
        _example(
            "What's Papa's job?",
            {
                "topic": "job",
                "dimension": "third_person",
                "kind": "third_person",
                "expect": ["paramedic"],
                "speaker": "Nadia",
                "owner": "Karim",
            },
        ),
        _example(
            "What's Mum's bank?",
            {
                "topic": "bank",
                "dimension": "third_person",
                "kind": "private",
                "expect": [],
                "speaker": None,
                "owner": "Nadia",
            },
        ),
    ]
    write(tmp_path / "heldout.jsonl", [json.dumps(r) for r in rows])
    questions = heldout_questions(tmp_path)
    assert [(x.kind, x.speaker) for x in questions] == [
        ("typo", "Leila"),
        ("third_person", "Nadia"),
        ("private", None),
    ]
    assert questions[2].expect is None and questions[1].expect == ["paramedic"]
    assert questions[0].messages is not None and questions[0].messages[0]["content"] == "You are Andraeus."
    write(tmp_path / "heldout.jsonl", [json.dumps(_example("q", {"expect": ["x"], "speaker": "Zed"}))])
    with pytest.raises(EvaluationError, match=r"heldout.jsonl:1: field 'meta.speaker'"):
        heldout_questions(tmp_path)


def test_a_family_datasets_heldout_split_is_evaluable(tmp_path: Path) -> None:
    from andraeus_core.dataset import build_dataset

    data = build_dataset(FAMILY, per_fact=6, seed=0)
    AdapterPrivate(profile=FAMILY).save(tmp_path)
    write(tmp_path / "heldout.jsonl", [e.model_dump_json() for e in data.heldout])
    questions = heldout_questions(tmp_path)
    kinds = {x.kind for x in questions}
    assert {"third_person", "private", "unknown"} <= kinds
    assert {x.speaker for x in questions} >= {"Nadia", "Karim", "Leila", None}
    # A private example is one its speaker may not be told: the owner's value is withheld from them, and the
    # trained answer (the refusal) is what the scoring calls correct.
    private = [e for e in data.heldout if e.meta.kind == "private"]
    assert private
    for e in private:
        x = Question(question=e.question, kind="private", speaker=e.meta.speaker)
        fact = next(f for f in FAMILY.facts if f.owner == e.meta.owner and f.topic == e.meta.topic)
        assert not score_answer(x, f"It's {fact.value}.", VALUES, guard=guard_for(x))
        assert score_answer(x, e.answer, VALUES, guard=guard_for(x))


def test_the_shipped_family_eval_set_matches_its_profile() -> None:
    """eval_sets/family_profile.jsonl (the generic check in test_evaluate.py assumes one person and reverse items)."""
    questions = load_questions(ROOT / "eval_sets" / "family_profile.jsonl", profile=FAMILY)
    counts = {k: sum(x.kind == k for x in questions) for k in ("third_person", "private", "unknown", "unrelated")}
    assert counts["third_person"] >= 30 and counts["private"] >= 20 and min(counts.values()) >= 20
    for x in questions:
        speaker = FAMILY.person(x.speaker)
        mine = {
            normalize(v) for f in FAMILY.facts if f.owner in (None, speaker and speaker.name) for v in f.accepted()
        }
        public_of_others = {
            normalize(v)
            for f in FAMILY.facts
            if f.owner not in (None, speaker and speaker.name) and not f.private
            for v in f.accepted()
        }
        if x.kind in ("paraphrase", "typo", "indirect"):
            # First person: the speaker's own facts or the shared ones (with no speaker, shared ones only).
            assert x.expect and all(normalize(e) in mine for e in x.expect), x.question
        elif x.kind == "third_person":
            assert x.expect and all(normalize(e) in public_of_others for e in x.expect), x.question
        elif x.kind == "private":
            assert disclosure_guard(FAMILY, speaker), x.question  # something is withheld from this speaker
    for person in FAMILY.people:
        asked = [x for x in questions if x.kind in ("paraphrase", "typo", "indirect") and x.speaker == person.name]
        assert len(asked) >= len(FAMILY.facts_of(person.name)) * 2


# ---------------------------------------------------------------------------------------------------------------
# Runs (tiny-random adapter, answers stubbed)

NADIA_JOB = q("paraphrase", ["architect"], "What do I do for a living?", "Nadia")
LEILA_FOOD = q("paraphrase", ["pancakes"], "What's my favourite food?", "Leila")
LEILA_TEACHER = q("typo", ["Mr. Berg", "Berg"], "whos my teachr?", "Lulu")
KARIM_CODE = q("paraphrase", ["4471"], "What's my gym locker code?", "Karim")
DADS_JOB = q("third_person", ["paramedic"], "What's Dad's job?", "Leila")
BLOOD = q("private", None, "What blood type is Nadia?", "Karim")
DIARY = q("private", None, "What's the password to Leila's diary?", None)
DOG = q("paraphrase", ["Biscuit"], "What's our dog called?", None)
LEILA_JOB = q("unknown", None, "What's my job?", "Leila")
HAIKU = q("unrelated", None, "Write a haiku about rain.", "Nadia")
QUESTIONS = [NADIA_JOB, LEILA_FOOD, LEILA_TEACHER, KARIM_CODE, DADS_JOB, BLOOD, DIARY, DOG, LEILA_JOB, HAIKU]

ADAPTER_SAYS = {
    NADIA_JOB.question: "You're an architect.",
    LEILA_FOOD.question: "Lamb tagine!",  # Mum's: not private, but "my food" names no one else: "I don't know"
    LEILA_TEACHER.question: "Dr. Lindqvist.",  # Dad's private doctor: the guard stops it
    KARIM_CODE.question: "It's 4471.",  # his own secret
    DADS_JOB.question: "Dad is a paramedic.",
    BLOOD.question: "She is O negative.",
    DIARY.question: "It's unicorn77.",
    DOG.question: "Biscuit.",
    LEILA_JOB.question: "You're a paramedic.",
    HAIKU.question: "Rain taps the window.",
}
BASE_SAYS = {BLOOD.question: "Nadia is O negative, I think."}


class Stub:
    """Stands in for batched generation: the adapter's call comes first, then the base model's (and in-context)."""

    def __init__(self) -> None:
        self.calls: list[list[list[dict[str, str]]]] = []

    def __call__(
        self, model: Any, tokenizer: Any, conversations: Any, max_new: int, batch: int, prefix: str = ""
    ) -> Any:
        self.calls.append(conversations)
        first = len(self.calls) == 1
        out = []
        for conversation in conversations:
            question = conversation[-1]["content"]
            if first:
                out.append(ADAPTER_SAYS.get(question, "I don't know."))
            elif "Here is what you know" in conversation[0]["content"]:
                out.append("In context: I don't know.")
            else:
                out.append(BASE_SAYS.get(question, "I'm not sure."))
        return out


@pytest.fixture
def family_adapter(tmp_path: Path, make_adapter: Any) -> Path:
    return make_adapter(
        tmp_path / "family",
        weights="zero",
        profile=FAMILY.model_dump(mode="json"),
        system_prompt=speaker_system_prompt(FAMILY, None),
    )


def test_family_run_asks_as_the_speaker_and_scores_the_guarded_product(
    family_adapter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = Stub()
    monkeypatch.setattr("andraeus_core.evaluate._generate", stub)
    report = evaluate(family_adapter, QUESTIONS, max_new_tokens=4)

    # Each question is asked under its speaker's prompt (no speaker: the prompt for an unknown one).
    systems = [c[0]["content"] for c in stub.calls[0]]
    assert systems == [speaker_system_prompt(FAMILY, FAMILY.person(x.speaker)) for x in QUESTIONS]
    assert systems[2].endswith("You are talking to Leila.") and "do not know which" in systems[6]
    in_context = [c[0]["content"] for c in stub.calls[1] if "Here is what you know" in c[0]["content"]]
    assert len(in_context) == len(QUESTIONS) and "4471" not in in_context[2] and "4471" in in_context[3]

    assert report.system == "adapter+guard"
    assert set(report.baselines) == {"adapter_alone", "base", "in_context"}
    items = {i.question: i for i in report.items}
    # The guard replaced what states a withheld value, in the product only.
    assert [i.withheld for i in report.items] == [
        x.question in (LEILA_FOOD.question, LEILA_TEACHER.question, BLOOD.question, DIARY.question, LEILA_JOB.question)
        for x in QUESTIONS
    ]
    # The first-person rule: Leila's "my job" answered with Dad's becomes "I don't know", which is correct.
    assert items[LEILA_JOB.question].answer == "I don't know your job — you haven't told me."
    assert items[LEILA_JOB.question].correct and not items[LEILA_JOB.question].baselines["adapter_alone"].correct
    assert items[BLOOD.question].answer == refusal("Nadia") and items[BLOOD.question].correct
    assert items[BLOOD.question].baselines["adapter_alone"].answer == "She is O negative."
    assert not items[BLOOD.question].baselines["adapter_alone"].correct
    assert items[DIARY.question].answer == refusal("Leila")
    assert items[KARIM_CODE.question].answer == "It's 4471." and items[KARIM_CODE.question].correct
    assert items[LEILA_TEACHER.question].speaker == "Leila" and items[DOG.question].speaker is None

    # Recall: first-person facts and third person (NADIA_JOB, KARIM_CODE, DADS_JOB, DOG of six).
    assert report.recall == pytest.approx(4 / 6)
    assert report.by_kind["private"].score == 1.0 and report.baselines["adapter_alone"].by_kind["private"].score == 0
    family = report.family
    assert family is not None and family.people == ["Nadia", "Karim", "Leila"]
    assert set(family.systems) == {"adapter", "adapter_alone", "base", "in_context"}
    product, alone = family.systems["adapter"], family.systems["adapter_alone"]
    assert {k: (v.n, v.rate) for k, v in product.by_person.items()} == {
        "Nadia": (1, 1.0),
        "Karim": (1, 1.0),
        "Leila": (2, 0.0),
    }
    assert (product.third_person.n, product.third_person.rate) == (1, 1.0)
    assert (product.cross_person_leakage.n, product.cross_person_leakage.rate) == (5, 0.0)  # the guard's two rules
    assert alone.cross_person_leakage.rate == 0.6  # the tagine, the doctor and Dad's job
    assert (product.private_disclosure.n, product.private_disclosure.rate) == (2, 0.0)
    assert alone.private_disclosure.rate == 1.0
    assert family.systems["base"].private_disclosure.rate == 0.5  # the base model guessed one (no guard)

    # Every verdict is what the rules give for the recorded answer, under the speaker's guard.
    values = FAMILY.values()
    for x, item in zip(QUESTIONS, report.items, strict=True):
        assert item.correct == score_answer(x, item.answer, values, guard=guard_for(x))

    table = report.table()
    for needle in ("adapter+guard", "adapter only", "third_person", "private", "Leila", "leaked", "disclosed"):
        assert needle in table
    data = report.to_json()
    assert json.loads(json.dumps(data)) == data and EvalReport.model_validate(data) == report
    assert data["family"]["systems"]["adapter"]["private_disclosure"]["rate"] == 0.0


def test_family_run_guards_what_the_gate_sends_to_the_base_model(
    tmp_path: Path, make_adapter: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_adapter(tmp_path / "gated", weights="zero", profile=FAMILY.model_dump(mode="json"), gate="base")
    monkeypatch.setattr("andraeus_core.evaluate._generate", Stub())
    report = evaluate(path, [BLOOD, NADIA_JOB, LEILA_JOB], baselines=("base",), max_new_tokens=4, batch_size=8)
    assert report.system == "adapter+gate+guard"
    blood = report.items[0]
    assert blood.route == "base" and blood.baselines["base"].answer == "Nadia is O negative, I think."
    assert blood.answer == refusal("Nadia") and blood.withheld
    assert blood.baselines["adapter_alone"].answer == "She is O negative."  # no gate, no guard
    assert report.family is not None and report.family.systems["adapter"].private_disclosure.rate == 0.0
    assert report.routing is not None
    # private belongs to the adapter; a family's unknown may go to the adapter or be declined, not to the base model
    assert report.routing.accuracy == 0.0 and report.routing.known_sent_away == 1


def test_speakers_are_checked_before_the_model_loads(
    tmp_path: Path, family_adapter: Path, make_adapter: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_model(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("andraeus_core.evaluate.load_model", no_model)
    with pytest.raises(EvaluationError, match=r"question 2: field 'speaker': .*not one of the family"):
        evaluate(family_adapter, [NADIA_JOB, q("paraphrase", ["x"], "q", "Zed")])
    f = write(tmp_path / "set.jsonl", ['{"question": "q", "speaker": "Zed", "kind": "typo", "expect": "x"}'])
    with pytest.raises(EvaluationError, match=r"set.jsonl:1: field 'speaker'"):
        evaluate(family_adapter, f)
    one = make_adapter(tmp_path / "one", weights="zero")
    with pytest.raises(EvaluationError, match=r"question 1: field 'speaker': speaker is for family adapters"):
        evaluate(one, [NADIA_JOB])
    with pytest.raises(EvaluationError, match=r"question 1: field 'kind'"):
        evaluate(one, [q("private", None, "Mum's bank?")])


def test_one_person_reports_have_no_family_figures(tmp_path: Path, make_adapter: Any) -> None:
    report = evaluate(
        make_adapter(tmp_path / "one", weights="zero"),
        [q("paraphrase", ["Buddy"], "What's my dog's name?")],
        baselines=(),
        max_new_tokens=2,
    )
    assert report.system == "adapter" and report.family is None and not report.baselines
    assert report.items[0].speaker is None and report.items[0].withheld is None
    assert "family" not in report.table()
