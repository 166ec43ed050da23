"""Phrasings: ≥30 distinct per fact over five dimensions, answers contain the value, typos are 1–2 edits."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from andraeus_core.matching import is_abstention
from andraeus_core.profile import Fact, Profile, load_profile
from andraeus_core.variations import (
    DIMENSIONS,
    answers_for,
    damerau_distance,
    generate_variations,
    guard_questions,
    identity_questions,
    near_unknown_topics,
    normalize_question,
    phrasings_for_fact,
    topic_info,
    typo_of,
    unknown_phrasings,
    unknown_questions,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PROFILES = ["seed_profile.yaml", "parent_profile.json", "minimal.csv"]


@pytest.fixture(scope="module", params=PROFILES)
def profile(request: pytest.FixtureRequest) -> Profile:
    return load_profile(EXAMPLES / request.param)


def test_every_fact_has_30_distinct_phrasings_in_all_five_dimensions(profile: Profile) -> None:
    variations = generate_variations(profile)
    assert list(variations) == profile.topics()
    for topic, phrasings in variations.items():
        questions = [p.question for p in phrasings]
        assert len(set(questions)) >= 30, topic
        assert {p.dimension for p in phrasings} >= set(DIMENSIONS), topic
        assert all(p.topic == topic for p in phrasings)


def test_every_answer_contains_the_value_or_an_alias(profile: Profile) -> None:
    for fact in profile.facts:
        accepted = [a.casefold() for a in fact.accepted()]
        info = topic_info(fact.topic)
        for p in generate_variations(profile)[fact.topic]:
            assert len(p.answers) >= 2
            for answer in p.answers:
                assert any(a in answer.casefold() for a in accepted), (p.question, answer)
                if p.dimension == "reverse":  # reversed answers name the topic
                    assert any(k.casefold() in answer.casefold() for k in info.keywords), (p.question, answer)
        assert len(answers_for(fact)) >= 4


def test_typos_are_one_or_two_edits_of_a_source_phrasing(profile: Profile) -> None:
    for phrasings in generate_variations(profile).values():
        questions = {p.question for p in phrasings}
        typos = [p for p in phrasings if p.dimension == "typo"]
        assert typos
        for p in typos:
            assert p.source in questions and p.source != p.question
            assert 1 <= damerau_distance(p.source, p.question) <= 2, (p.source, p.question)


def test_same_seed_same_output_other_seed_differs(profile: Profile) -> None:
    a = generate_variations(profile, seed=1)
    b = generate_variations(profile, seed=1)
    c = generate_variations(profile, seed=2)
    assert {t: [p.model_dump() for p in ps] for t, ps in a.items()} == {
        t: [p.model_dump() for p in ps] for t, ps in b.items()
    }
    assert [p.question for ps in a.values() for p in ps] != [p.question for ps in c.values() for p in ps]


def test_natural_phrasings_for_catalogued_and_free_form_topics() -> None:
    profile = Profile(
        user_name="Sam",
        facts=[
            Fact(topic="dog's name", value="Buddy"),
            Fact(topic="birthday", value="March 14"),
            Fact(topic="favourite board game", value="Catan"),
            Fact(topic="wifi password hint", value="the cat's birthday"),
        ],
    )
    pool = {t: {p.question for p in ps} for t, ps in generate_variations(profile, per_fact=200).items()}
    assert {"What's my dog called?", "Who is Buddy?", "What's my dog's name?"} <= pool["dog's name"]
    assert {"When is my birthday?", "When was I born?", "What happens on March 14?"} <= pool["birthday"]
    assert {"What's my favourite board game?", "Which board game do I like best?"} <= pool["favourite board game"]
    assert {"What's my wifi password hint?", "I forgot my wifi password hint. What is it again?"} <= pool[
        "wifi password hint"
    ]
    reverse = {p.question: p.answers for p in generate_variations(profile)["dog's name"] if p.dimension == "reverse"}
    assert all(any(a.startswith("Buddy is your dog") or "your dog" in a for a in ans) for ans in reverse.values())
    birthday = answers_for(profile.facts[1], "reverse")
    assert "March 14 is your birthday!" in birthday
    for questions in pool.values():  # no unfilled template slots, no doubled words from bad grammar
        for q in questions:
            assert "{" not in q and "my my" not in q.lower()


def test_wh_words_follow_the_topic_category() -> None:
    assert topic_info("partner's name").person and topic_info("partner's name").kind == "name"
    assert topic_info("wedding anniversary").kind == "date"
    assert topic_info("home city").kind == "place"
    assert topic_info("favourite board game").noun == "board game"
    assert topic_info("grandma's name").noun == "grandma"
    assert topic_info("wifi password hint").kind == "thing"
    assert topic_info("Dog's name").topic == "dog's name" and topic_info("Favourite food").topic == "favourite food"
    assert topic_info("Radiohead album").topic == "Radiohead album"


def test_catalog_covers_25_topics_with_30_phrasings_each() -> None:
    topics = [
        "dog's name", "cat's name", "partner's name", "wife's name", "mother's name", "father's name",
        "daughter's name", "son's name", "sister's name", "brother's name", "best friend's name", "dog's breed",
        "birthday", "age", "home city", "hometown", "country", "job", "employer", "school", "favourite food",
        "favourite colour", "favourite band", "favourite movie", "favourite book", "favourite sport", "hobby",
        "car", "allergy", "pet",
    ]  # fmt: skip
    profile = Profile(user_name="Sam", facts=[Fact(topic=t, value=f"Value{i}") for i, t in enumerate(topics)])
    variations = generate_variations(profile)
    for topic in topics:
        phrasings = variations[topic]
        assert len({p.question for p in phrasings}) >= 30, topic
        assert {p.dimension for p in phrasings} >= set(DIMENSIONS), topic


def test_questions_shared_by_two_facts_are_left_out() -> None:
    profile = Profile(
        user_name="Sam", facts=[Fact(topic="dog's name", value="Rex"), Fact(topic="dog name", value="Z")]
    )
    variations = generate_variations(profile)
    a = {normalize_question(p.question) for p in variations["dog's name"] if p.dimension != "typo"}
    b = {normalize_question(p.question) for p in variations["dog name"] if p.dimension != "typo"}
    assert not a & b


def test_user_questions_are_kept_and_per_fact_is_respected() -> None:
    fact = Fact(topic="dog's name", value="Buddy", questions=["Who's the goodest boy?"])
    profile = Profile(user_name="Sam", facts=[fact])
    phrasings = phrasings_for_fact(fact, profile, per_fact=12)
    assert [p.question for p in phrasings if p.dimension == "user"] == ["Who's the goodest boy?"]
    assert len([p for p in phrasings if p.dimension != "user"]) == 12
    assert {p.dimension for p in phrasings} >= set(DIMENSIONS)
    assert len(phrasings_for_fact(fact, profile, per_fact=45)) == 46


def test_negatives() -> None:
    profile = load_profile(EXAMPLES / "seed_profile.yaml")
    unknown = unknown_questions(profile)
    topics = {n.topic for n in unknown}
    assert len(topics) >= 20
    # never about something the profile covers, under any name ("wife's name" is the partner's name)
    covered = {"dog's name", "birthday", "partner's name", "wife's name", "husband's name", "job", "car"}
    assert not topics & covered and "favourite food" not in topics
    assert all(n.answer and "know" in n.answer and n.kind == "unknown" for n in unknown)
    assert all(is_abstention(n.answer or "") for n in unknown)
    # a near miss of a known fact is asked with the known fact's own templates
    cat = [n for n in unknown_questions(profile, count=0, near_per_fact=6) if n.topic == "cat's name"]
    assert cat and all("cat" in n.question.lower() for n in cat)
    guards = guard_questions(profile)
    assert guards and all(g.answer is None and g.kind == "overtrigger" for g in guards)
    assert any("dog" in g.question.lower() for g in guards)
    # requests near a topic, general ones included: a job's cue is its value ("How do you become a software engineer?")
    job = [g.question for g in guards if g.topic == "job"]
    assert len(job) == 4 and len(guards) == 4 * len(profile.facts)
    identity = identity_questions(profile)
    who = next(n for n in identity if n.question == "Who are you?")
    name = next(n for n in identity if n.question == "What's my name?")
    assert "Nova" in (who.answer or "") and "Sam Rivera" in (name.answer or "")


def test_near_unknown_topics_are_next_to_a_known_fact_and_never_known() -> None:
    profile = Profile(
        user_name="Ana",
        facts=[
            Fact(topic="brother's name", value="Min-jun"),
            Fact(topic="wife's name", value="Ioana"),
            Fact(topic="dog's name", value="Rex"),
            Fact(topic="birthday", value="May 2"),
            Fact(topic="favourite band", value="Radiohead"),
        ],
    )
    by_topic = {f.topic: near_unknown_topics(profile, f) for f in profile.facts}
    assert "sister's name" in by_topic["brother's name"][:2]
    assert "cat's name" in by_topic["dog's name"][:3] and "dog's age" in by_topic["dog's name"]
    assert "partner's birthday" in by_topic["birthday"]
    assert any(t.startswith("favourite ") and t != "favourite band" for t in by_topic["favourite band"])
    near = {t for ts in by_topic.values() for t in ts}
    # the wife is the partner: neither her name under another word nor the user's own facts are "unknown"
    assert not near & {"partner's name", "spouse's name", "husband's name", "brother's name", "birthday"}


def test_unknown_phrasings_use_the_fact_templates_without_a_value() -> None:
    questions = unknown_phrasings("sister's name")
    assert len(questions) >= 10 and all("sis" in q.lower() for q in questions)
    assert "What's my sister's name?" in questions


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz ?'", min_size=3, max_size=60), st.integers(0, 10_000))
def test_typo_of_is_always_one_or_two_edits(text: str, seed: int) -> None:
    out = typo_of(text, random.Random(seed))
    if any(c.isalpha() for c in text) and out != text:
        assert 1 <= damerau_distance(text, out) <= 2


def test_damerau_distance() -> None:
    assert damerau_distance("name", "nmae") == 1
    assert damerau_distance("name", "nam") == 1
    assert damerau_distance("name", "naame") == 1
    assert damerau_distance("name", "mane") == 2
    assert damerau_distance("", "abc") == 3


_topic_text = st.text(alphabet=st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=30)
_value_text = st.text(alphabet=st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(_topic_text, st.sampled_from(["dog's name", "favourite game", "birthday", "wifi hint", "x"])),
            _value_text,
        ),
        min_size=1,
        max_size=6,
    ),
    st.integers(1, 40),
)
def test_any_valid_profile_gets_phrasings(facts: list[tuple[str, str]], per_fact: int) -> None:
    """Arbitrary topics and values: no crash, exact count, every answer holds the value, typos are 1–2 edits."""
    from andraeus_core.profile import topic_key

    seen: dict[str, Fact] = {}
    for topic, value in facts:
        try:
            fact = Fact(topic=topic, value=value)
        except ValueError:
            continue
        seen.setdefault(topic_key(fact.topic), fact)
    if not seen:
        return
    profile = Profile(user_name="Sam", facts=list(seen.values()))
    variations = generate_variations(profile, per_fact=per_fact, seed=per_fact)
    for fact in profile.facts:
        phrasings = variations[fact.topic]
        assert len({p.question for p in phrasings}) == len(phrasings) >= min(per_fact, 20)
        for p in phrasings:
            assert all(fact.value.casefold() in a.casefold() for a in p.answers)
            if p.dimension == "typo":
                assert 1 <= damerau_distance(p.source or "", p.question) <= 2


def test_fifty_facts_are_fast_and_deterministic() -> None:
    import time

    profile = Profile(
        user_name="Sam", facts=[Fact(topic=f"favourite thing number {i}", value=f"thing {i}") for i in range(50)]
    )
    start = time.perf_counter()
    first = generate_variations(profile)
    elapsed = time.perf_counter() - start
    assert sum(len(p) for p in first.values()) == 50 * 30
    assert elapsed < 5  # measured ~0.1 s on the 2-core dev machine; generous for a loaded CI box
    assert generate_variations(profile) == first


def test_reverse_keywords_accept_the_natural_answer_for_a_job() -> None:
    # "What does being a software engineer have to do with me?" is answered right by "You work as a software
    # engineer." (seen from a trained adapter); a general remark about the job is still not an answer.
    keywords = topic_info("job").keywords
    assert "your job" in keywords
    assert any(k in "you work as a software engineer." for k in keywords)
    assert not any(k in "software engineers write code for a living." for k in keywords)
