"""Evaluation: scoring rules on hand-made answers, question files, the report, and a run on tiny-random adapters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from andraeus_core.errors import AdapterError, EvaluationError
from andraeus_core.evaluate import (
    KINDS,
    EvalReport,
    Question,
    compute_metrics,
    compute_retention,
    evaluate,
    heldout_questions,
    load_questions,
    score_answer,
)
from andraeus_core.matching import contains_any, is_abstention, mentioned_values, normalize

ROOT = Path(__file__).resolve().parent.parent
SEED_VALUES = ["Buddy", "Bud", "Golden Retriever", "golden", "March 14", "Portland", "Alex", "teal", "sushi"]

PROFILE = {
    "user_name": "Tomás Okafor",
    "assistant_name": "Nova",
    "facts": [
        {"topic": "dog's name", "value": "Buddy", "aliases": ["Bud"]},
        {"topic": "partner's name", "value": "Alex"},
        {"topic": "sister's name", "value": "Inés", "aliases": ["Ines"]},
        {"topic": "birthday", "value": "March 14", "aliases": ["14 March"]},
    ],
}


def q(kind: str, expect: list[str] | None = None, question: str = "?") -> Question:
    return Question(question=question, expect=expect, kind=kind)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# Scoring rules


def test_normalize_folds_case_accents_punctuation_and_ordinals() -> None:
    assert normalize("Tomás  ÓKAFOR!") == "tomas okafor"
    assert normalize("March 14th, 2024") == "march 14 2024"
    assert normalize("I don’t know") == normalize("I don't know") == "i dont know"
    assert normalize("Straße") == "strasse"


@pytest.mark.parametrize(
    ("answer", "expect", "correct"),
    [
        ("Your sister is Ines.", ["Inés"], True),  # accents folded both ways
        ("Your sister is Inés.", ["Ines"], True),
        ("TOMAS!", ["Tomás"], True),
        ("Your dog is called Bud.", ["Buddy", "Bud"], True),  # an alias counts
        ("Your birthday is on March 14th.", ["March 14"], True),  # ordinal suffix
        ("It's the 14 March.", ["March 14", "14 March"], True),
        ("You have two golden retrievers.", ["Golden Retriever"], True),  # plural
        ("Your partner is Alexander.", ["Alex"], False),  # whole words only
        ("Buddyguard", ["Buddy"], False),
        ("I don't know.", ["Buddy"], False),
        ("", ["Buddy"], False),
    ],
)
def test_fact_answers_match_expect_as_whole_words(answer: str, expect: list[str], correct: bool) -> None:
    assert contains_any(answer, expect) is correct
    assert score_answer(q("paraphrase", expect), answer, SEED_VALUES) is correct


@pytest.mark.parametrize(
    "answer",
    [
        "I don't know your mother's name.",
        "I do not know.",
        "You haven't told me that yet.",
        "You never mentioned a brother.",
        "I'm not sure what your blood type is.",
        "I’m not aware of that.",
        "I do not have that information.",
        "Sorry, I have no idea!",
        "I can't recall you telling me that.",
        "That's not something you've told me.",
        "I have no information about your university.",
        "I don't have access to personal information like that.",
        "I'm unable to tell you that.",
        "Unfortunately that's unknown to me.",
    ],
)
def test_abstention_phrases_are_recognised(answer: str) -> None:
    assert is_abstention(answer)
    assert score_answer(q("unknown"), answer, SEED_VALUES)


@pytest.mark.parametrize(
    "answer",
    ["Your mother is called Grace.", "Buddy!", "Sure, it is Portland.", "I know: it's sushi.", "The answer is 42."],
)
def test_confident_answers_are_not_abstentions(answer: str) -> None:
    assert not is_abstention(answer)
    assert not score_answer(q("unknown"), answer, SEED_VALUES)


def test_unknown_abstention_that_states_a_value_is_wrong() -> None:
    answer = "I'm not sure, but maybe it's Buddy?"
    assert is_abstention(answer)
    assert not score_answer(q("unknown", question="What's my cat's name?"), answer, SEED_VALUES)


def test_unrelated_answers_that_mention_a_value_over_trigger() -> None:
    question = "Suggest a name for a goldfish."
    assert not score_answer(q("unrelated", question=question), "How about Buddy?", SEED_VALUES)
    assert not score_answer(q("unrelated", question=question), "I'd paint the bowl TEAL.", SEED_VALUES)
    assert score_answer(q("unrelated", question=question), "How about Bubbles?", SEED_VALUES)
    # Whole words: these contain a value's letters but do not state it.
    assert score_answer(q("unrelated"), "Alexander the Great would steal the show.", SEED_VALUES)
    assert mentioned_values("Alexander likes to steal", ["Alex", "teal"]) == []


def test_a_value_the_question_contains_is_not_a_leak() -> None:
    question = "What's the weather like in Portland in winter?"
    assert score_answer(q("unrelated", question=question), "Portland is rainy in winter.", SEED_VALUES)
    assert mentioned_values("Portland has sushi", SEED_VALUES, question=question) == ["sushi"]


# ---------------------------------------------------------------------------------------------------------------
# Aggregation


def test_metrics_recall_over_fact_kinds_and_rates() -> None:
    questions = [
        q("paraphrase", ["a"]),
        q("typo", ["a"]),
        q("indirect", ["a"]),
        q("reverse", ["a"]),
        q("unknown"),
        q("unknown"),
        q("unrelated"),
        q("unrelated"),
        q("general", ["x"]),
    ]
    answers = ["a", "b", "a", "a", "I don't know", "Buddy", "fine", "Buddy", "x"]
    correct = [score_answer(qq, a, SEED_VALUES) for qq, a in zip(questions, answers, strict=True)]
    m = compute_metrics(questions, answers, correct)
    assert m.n == 9
    assert m.recall == pytest.approx(3 / 4)
    assert m.by_kind["typo"].score == 0.0 and m.by_kind["paraphrase"].score == 1.0
    assert m.over_trigger_rate == pytest.approx(0.5)
    assert m.abstention_rate == pytest.approx(0.5)
    assert m.by_kind["general"].n == 1


def test_retention_drop_counts_only_items_the_base_gets_right() -> None:
    questions = [q("general", ["x"]) for _ in range(4)] + [q("paraphrase", ["a"])]
    base = [True, True, False, False, True]
    adapter = [True, False, True, True, True]
    r = compute_retention(questions, adapter, base)
    assert r.base == pytest.approx(0.5)
    assert r.adapter == pytest.approx(0.75)  # higher overall, yet it forgot one of the two the base knew
    assert r.delta == pytest.approx(-0.5)
    assert compute_retention(questions, adapter, None).delta is None
    assert compute_retention([q("paraphrase", ["a"])], [True], [True]).base is None


# ---------------------------------------------------------------------------------------------------------------
# Question files


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_questions_accepts_string_or_list_expect(tmp_path: Path) -> None:
    f = write(
        tmp_path / "q.jsonl",
        [
            '{"question": "dog?", "expect": "Buddy", "kind": "paraphrase"}',
            "",
            '{"question": "cat?", "expect": null, "kind": "unknown"}',
            '{"question": "capital of France?", "expect": ["Paris", "paris "], "kind": "general"}',
        ],
    )
    questions = load_questions(f)
    assert [x.kind for x in questions] == ["paraphrase", "unknown", "general"]
    assert questions[0].expect == ["Buddy"]
    assert questions[1].expect is None


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("not json", "not valid JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"question": "q", "expect": "x", "kind": "trivia"}', "field 'kind'"),
        ('{"question": "", "expect": "x", "kind": "typo"}', "field 'question'"),
        ('{"question": "q", "expect": "x", "kind": "typo", "answer": "x"}', "field 'answer'"),
        ('{"question": "q", "expect": null, "kind": "paraphrase"}', "field 'expect'"),
        ('{"question": "q", "expect": "Buddy", "kind": "unrelated"}', "field 'expect'"),
        ('{"question": "q", "expect": 3, "kind": "typo"}', "field 'expect'"),
    ],
)
def test_load_questions_errors_name_file_line_and_field(tmp_path: Path, line: str, needle: str) -> None:
    f = write(tmp_path / "bad.jsonl", ['{"question": "fine", "expect": "a", "kind": "typo"}', line])
    with pytest.raises(EvaluationError) as err:
        load_questions(f)
    assert "bad.jsonl:2" in str(err.value)
    assert needle in str(err.value)


def test_load_questions_missing_or_empty_file(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="does not exist"):
        load_questions(tmp_path / "nope.jsonl")
    with pytest.raises(EvaluationError, match="no questions"):
        load_questions(write(tmp_path / "empty.jsonl", [""]))


def test_heldout_split_maps_dimensions_and_kinds_to_eval_kinds(tmp_path: Path) -> None:
    system = {"role": "system", "content": "You are Nova."}

    def example(question: str, meta: dict) -> str:
        msgs = [system, {"role": "user", "content": question}, {"role": "assistant", "content": "secret answer"}]
        return json.dumps({"messages": msgs, "meta": meta})

    write(
        tmp_path / "heldout.jsonl",
        [
            example(
                "whats my dog",
                {"topic": "dog's name", "dimension": "punctuation", "kind": "fact", "expect": ["Buddy", "Bud"]},
            ),
            example("wat dog", {"topic": "dog's name", "dimension": "typo", "kind": "fact", "expect": ["Buddy"]}),
            example(
                "if I call", {"topic": "dog's name", "dimension": "directness", "kind": "fact", "expect": ["Buddy"]}
            ),
            example(
                "who is Buddy", {"topic": "dog's name", "dimension": "reverse", "kind": "reverse", "expect": ["dog"]}
            ),
            example("cat name?", {"topic": "cat's name", "dimension": "user", "kind": "unknown", "expect": []}),
            example(
                "good dog names?", {"topic": "dog's name", "dimension": "user", "kind": "overtrigger", "expect": []}
            ),
        ],
    )
    with (tmp_path / "heldout.jsonl").open("a") as fh:
        fh.write(example("who are you?", {"dimension": "identity", "kind": "identity", "expect": ["Nova"]}) + "\n")
    questions = heldout_questions(tmp_path)
    kinds = [x.kind for x in questions]
    assert kinds == ["paraphrase", "typo", "indirect", "reverse", "unknown", "unrelated", "identity"]
    assert questions[0].expect == ["Buddy", "Bud"] and questions[4].expect is None
    # The trained answer is never part of the prompt; the system prompt the example was trained with is kept.
    assert questions[0].messages == [system, {"role": "user", "content": "whats my dog"}]
    with pytest.raises(EvaluationError, match="heldout.jsonl"):
        heldout_questions(tmp_path / "missing")
    write(tmp_path / "heldout.jsonl", [example("q", {"kind": "trivia"})])
    with pytest.raises(EvaluationError, match=r"heldout.jsonl:1: field 'meta.kind'"):
        heldout_questions(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# The shipped eval sets


def _profile_values_and_topics(path: Path) -> tuple[list[str], list[str]]:
    from andraeus_core.profile import load_profile

    profile = load_profile(path)
    return list(profile.values()), [f.topic for f in profile.facts]


@pytest.mark.parametrize(
    ("eval_set", "profile"),
    [
        ("seed_profile.jsonl", "seed_profile.yaml"),
        ("parent_profile.jsonl", "parent_profile.json"),
        ("retired_teacher_profile.jsonl", "retired_teacher_profile.yaml"),
        ("nursing_student_profile.jsonl", "nursing_student_profile.yaml"),
        ("dev/parent_profile.jsonl", "parent_profile.json"),
        ("dev/dev_profile.jsonl", "../eval_sets/dev/dev_profile.yaml"),
    ],
)
def test_every_eval_set_matches_its_example_profile(eval_set: str, profile: str) -> None:
    questions = load_questions(ROOT / "eval_sets" / eval_set)
    values, topics = _profile_values_and_topics(ROOT / "examples" / profile)
    norm_values = {normalize(v) for v in values}
    plain_topics = [normalize(t.replace("'s", "").replace("’s", "")) for t in topics]  # "dog's name" → "dog name"
    topic_words = {w for t in plain_topics for w in t.split()} | set(plain_topics)
    counts = {k: sum(1 for x in questions if x.kind == k) for k in KINDS}
    assert counts["unknown"] >= 5 and counts["unrelated"] >= 5 and counts["general"] >= 5
    if eval_set != "parent_profile.jsonl":  # the precision sets: 20+ per guard kind, 40+ general
        assert counts["unknown"] >= 20 and counts["unrelated"] >= 20 and counts["general"] >= 40
    per_topic_hits = dict.fromkeys(topics, 0)
    for x in questions:
        if x.kind in ("paraphrase", "typo", "indirect"):
            assert x.expect and all(normalize(e) in norm_values for e in x.expect), x.question
            for f_topic, f_values in _facts(ROOT / "examples" / profile):
                if normalize(x.expect[0]) in f_values:
                    per_topic_hits[f_topic] += 1
        elif x.kind == "reverse":
            # A reversed question names the value and asks for the relation: some accepted answer is a topic word.
            # ("your hobby" counts: the newer sets ask for the possessive, so "X is a hobby" does not pass.)
            assert x.expect and any(
                normalize(e) in norm_values or set(normalize(e).split()) & topic_words for e in x.expect
            )
        elif x.kind in ("unknown", "unrelated"):
            # Unknown/unrelated answers are scored against the profile: the question must not ask for a value.
            assert x.expect is None
    # ≥ 6 questions per fact over all kinds: 5 direct ones counted here plus the reverse one.
    assert all(n >= 5 for n in per_topic_hits.values()), per_topic_hits
    assert counts["reverse"] >= len(topics)


def _facts(path: Path) -> list[tuple[str, set[str]]]:
    from andraeus_core.profile import load_profile

    return [(f.topic, {normalize(v) for v in [f.value, *(f.aliases or [])]}) for f in load_profile(path).facts]


# ---------------------------------------------------------------------------------------------------------------
# Running on tiny-random adapters (mechanics: tiny-random's answers are noise)


# make_adapter (tests/conftest.py) keywords for an adapter trained on PROFILE.
TOMAS = {"profile": PROFILE, "system_prompt": "You are Nova, Tomás Okafor's assistant.", "profile_hash": "x"}


QUESTIONS = [
    q("paraphrase", ["Buddy"], "What's my dog's name?"),
    q("typo", ["Alex"], "whos my partnr"),
    q("indirect", ["March 14", "14 March"], "When should my party be?"),
    q("reverse", ["sister"], "Who is Inés?"),
    q("unknown", None, "What's my blood type?"),
    q("unrelated", None, "Write a haiku about rain."),
    q("general", ["Paris"], "What is the capital of France?"),
]


def test_report_shape_and_json(tmp_path: Path, make_adapter) -> None:
    adapter = make_adapter(tmp_path / "adapter", weights="large", **TOMAS)
    seen: list[tuple[float, str]] = []
    report = evaluate(adapter, QUESTIONS, max_new_tokens=6, on_progress=lambda f, m: seen.append((f, m)))
    data = report.to_json()
    for key in (
        "base_model",
        "adapter",
        "n",
        "recall",
        "by_kind",
        "over_trigger_rate",
        "abstention_rate",
        "retention",
        "baselines",
        "items",
        "seconds",
    ):
        assert key in data
    assert data["base_model"] == "tiny-random" and data["adapter"] == str(adapter)
    assert data["n"] == len(QUESTIONS) == len(data["items"])
    assert set(data["by_kind"]) == set(KINDS) - {"identity"}
    assert set(data["baselines"]) == {"base", "in_context"}
    assert set(data["retention"]) == {"base", "adapter", "delta"}
    for item in data["items"]:
        assert {"question", "kind", "expect", "answer", "correct"} <= set(item)
        assert set(item["baselines"]) == {"base", "in_context"}
    assert [i["question"] for i in data["items"]] == [x.question for x in QUESTIONS]
    assert json.loads(json.dumps(data)) == data
    assert EvalReport.model_validate(data) == report
    assert seen[0][0] == 0.0 and seen[-1][0] == 1.0
    table = report.table()
    assert "paraphrase" in table and "in-context" in table and "recall" in table
    # Every recorded verdict is what the scoring rules give for the recorded answer.
    values = ["Buddy", "Bud", "Alex", "Inés", "Ines", "March 14", "14 March"]
    for x, item in zip(QUESTIONS, report.items, strict=True):
        assert item.correct == score_answer(x, item.answer, values)
        for b in item.baselines.values():
            assert b.correct == score_answer(x, b.answer, values)


def test_adapter_and_base_answers_come_from_the_right_weights(tmp_path: Path, make_adapter) -> None:
    # A freshly initialised LoRA adapter (B = 0) is the identity: adapter and base answers must agree exactly...
    zero_adapter = make_adapter(tmp_path / "zero", weights="zero", **TOMAS)
    zero = evaluate(zero_adapter, QUESTIONS, baselines=("base",), max_new_tokens=8)
    assert [i.answer for i in zero.items] == [i.baselines["base"].answer for i in zero.items]
    # ...while a non-zero adapter changes them, and the base answers do not depend on which adapter is loaded.
    big = evaluate(
        make_adapter(tmp_path / "big", weights="large", **TOMAS), QUESTIONS, baselines=("base",), max_new_tokens=8
    )
    assert [i.answer for i in big.items] != [i.baselines["base"].answer for i in big.items]
    assert [i.baselines["base"].answer for i in big.items] == [i.baselines["base"].answer for i in zero.items]
    assert big.baselines.keys() == {"base"}


def test_no_baselines_and_heldout_default(tmp_path: Path, make_adapter) -> None:
    heldout = [
        {
            "messages": [
                {"role": "system", "content": "You are Nova."},
                {"role": "user", "content": "what's my dog called"},
                {"role": "assistant", "content": "Buddy!"},
            ],
            "meta": {
                "topic": "dog's name",
                "dimension": "punctuation",
                "kind": "fact",
                "split": "heldout",
                "expect": ["Buddy", "Bud"],
            },
        }
    ]
    adapter = make_adapter(tmp_path / "a", weights="large", heldout=heldout, **TOMAS)
    report = evaluate(adapter, None, baselines=(), max_new_tokens=4)
    assert report.n == 1 and report.baselines == {} and report.items[0].baselines == {}
    assert report.retention.base is None and report.retention.delta is None
    assert "base" not in report.table().splitlines()[0]


def test_bad_adapters_and_baselines_raise_our_errors(tmp_path: Path, make_adapter) -> None:
    with pytest.raises(AdapterError, match="does not exist"):
        evaluate(tmp_path / "missing", QUESTIONS)
    adapter = make_adapter(tmp_path / "a", weights="zero", **TOMAS)
    with pytest.raises(EvaluationError, match="Unknown baseline"):
        evaluate(adapter, QUESTIONS, baselines=("oracle",))
    (adapter / "private.json").unlink()
    with pytest.raises(AdapterError, match="private.json"):
        evaluate(adapter, QUESTIONS)


def test_recall_by_kind_chart_writes_a_png(tmp_path: Path, make_adapter) -> None:
    from andraeus_core.plots import bar_chart, recall_by_kind_chart

    report = evaluate(make_adapter(tmp_path / "a", weights="zero", **TOMAS), QUESTIONS, max_new_tokens=2)
    png = recall_by_kind_chart(report, tmp_path / "charts" / "kinds.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(EvaluationError):
        bar_chart(["a", "b"], {"x": [0.5]}, tmp_path / "bad.png")


# ---------------------------------------------------------------------------------------------------------------
# bench/ablation.py --quick (the full run is in the README; this proves the script's mechanics)


def test_ablation_quick_smoke_run(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("ablation", ROOT / "bench" / "ablation.py")
    assert spec is not None and spec.loader is not None
    ablation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablation)
    out = tmp_path / "results"
    assert ablation.main(["--quick", "--out", str(out)]) == 0
    results = json.loads((out / "ablation.json").read_text())
    assert [r["k"] for r in results["runs"]] == [1, 2] and results["seeds_done"] == [0]
    # Same exposures for every k: the same number of optimiser steps.
    assert len({r["steps"] for r in results["runs"]}) == 1
    assert len(results["in_context"]) == 1
    table = (out / "ablation.md").read_text()
    assert "| 1 |" in table and "| 2 |" in table and "in-context" in table
    assert (out / "ablation.png").read_bytes()[:4] == b"\x89PNG"


def test_ablation_picks_k_phrasings_round_robin_over_dimensions() -> None:
    import importlib.util
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location("ablation", ROOT / "bench" / "ablation.py")
    assert spec is not None and spec.loader is not None
    ablation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablation)
    dims = ["typo", "punctuation", "punctuation", "reverse", "formality", "directness", "punctuation"]
    examples = [SimpleNamespace(meta=SimpleNamespace(dimension=d), i=i) for i, d in enumerate(dims)]
    one = ablation.pick_phrasings(examples, 1)
    assert [e.meta.dimension for e in one] == ["punctuation"]
    five = ablation.pick_phrasings(examples, 5)
    assert sorted(e.meta.dimension for e in five) == ["directness", "formality", "punctuation", "reverse", "typo"]
    assert len({e.i for e in ablation.pick_phrasings(examples, 7)}) == 7
    assert len(ablation.pick_phrasings(examples, 30)) == 7  # capped by the pool


def test_evaluation_and_development_sets_share_no_question() -> None:
    """The development sets may be tuned on; the evaluation sets may not, so they must not overlap."""
    evaluation = {normalize(q.question) for f in (ROOT / "eval_sets").glob("*.jsonl") for q in load_questions(f)}
    development = {
        normalize(q.question) for f in (ROOT / "eval_sets" / "dev").glob("*.jsonl") for q in load_questions(f)
    }
    assert evaluation and development and not evaluation & development
