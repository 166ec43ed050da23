"""The hand-written pools are large, distinct and free of anything personal."""

import re

from andraeus_core.pools import GENERAL_REQUESTS, NEAR_TOPIC_REQUESTS, UNKNOWN_TOPICS
from andraeus_core.variations import normalize_question


def _norm(items):
    return [normalize_question(x) for x in items]


def test_pools_have_no_duplicates_even_ignoring_case_and_punctuation():
    near = [q for qs in NEAR_TOPIC_REQUESTS.values() for q in qs]
    for pool in (GENERAL_REQUESTS, UNKNOWN_TOPICS, near):
        norms = _norm(pool)
        assert len(norms) == len(set(norms))
    assert not set(_norm(GENERAL_REQUESTS)) & set(_norm(near))


def test_pool_sizes():
    assert len(GENERAL_REQUESTS) >= 400
    assert len(UNKNOWN_TOPICS) >= 150
    assert len(NEAR_TOPIC_REQUESTS) >= 45
    assert all(4 <= len(qs) <= 8 for qs in NEAR_TOPIC_REQUESTS.values())


def test_general_requests_are_not_about_the_user():
    personal = re.compile(r"\b(my|mine)\b", re.IGNORECASE)
    assert not [q for q in GENERAL_REQUESTS if personal.search(q)]


def test_unknown_topics_complete_my_blank():
    assert all(t and not t.casefold().startswith("my ") and t == t.strip() for t in UNKNOWN_TOPICS)


def test_self_questions_ask_about_the_user_and_name_what_would_answer_them():
    from andraeus_core.pools import SELF_QUESTIONS

    questions = [q for _, q in SELF_QUESTIONS]
    assert len(questions) >= 80 and len(set(_norm(questions))) == len(questions)
    assert not set(_norm(questions)) & set(_norm(GENERAL_REQUESTS))
    first_person = re.compile(r"\b(I|my|me)\b")
    # Typed casually ("where do i live again"): all lower case, no question mark; every other one is written out.
    casual = [q for q in questions if q == q.lower()]
    assert 5 <= len(casual) <= len(questions) // 10
    assert all(first_person.search(q) and q.endswith("?") for q in questions if q not in casual)
    assert all(re.search(r"\b(i|my|me)\b", q) and not q.endswith("?") for q in casual)
    assert all(topics and all(t == t.strip() and t for t in topics) for topics, _ in SELF_QUESTIONS)
