"""The gate: its data, fitting, files, routing in chat and evaluation, and adapters without one."""

from __future__ import annotations

from pathlib import Path

import pytest

from andraeus_core.adapter import GATE_FILE, Adapter
from andraeus_core.chat import ChatModel, GenerationConfig
from andraeus_core.dataset import build_dataset
from andraeus_core.evaluate import Question, evaluate
from andraeus_core.gate import (
    GENERIC_ABSTENTION,
    ROUTES,
    THRESHOLD_ABSTAIN_DIRECT,
    Gate,
    GateMeta,
    abstention,
    asks_unknown_favourite,
    asks_unknown_topic,
    fit_gate,
    gate_data,
    is_direct_question,
    names_known_subject,
    profile_names,
    shielding_unknown_names,
    subject_keywords,
)
from andraeus_core.matching import is_abstention
from andraeus_core.models import load_model
from andraeus_core.profile import Profile, load_profile
from andraeus_core.variations import (
    asks_about_unknown_person,
    asks_unknown_attribute,
    asks_unknown_person,
    asks_unknown_possession,
    named_unknown_questions,
    unknown_topic_names,
)
from tests.conftest import constant_gate

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [
    Question(question="What's my dog's name?", expect=["Buddy"], kind="paraphrase"),
    Question(question="What's my sister's name?", kind="unknown"),
    Question(question="What colour are ripe bananas?", expect=["yellow"], kind="general"),
    Question(question="Suggest a name for a new puppy.", kind="unrelated"),
]


# ---------------------------------------------------------------------------------------------------------------
# Data and known subjects


def test_gate_data_keeps_the_held_out_split_apart() -> None:
    profile = load_profile(ROOT / "examples" / "seed_profile.yaml")
    dataset = build_dataset(profile)
    data = gate_data(profile, dataset)
    assert set(data.train) == set(ROUTES) == set(data.heldout)
    assert len(data.train["abstain"]) >= 300 and len(data.train["base"]) >= 400 and len(data.train["adapter"]) >= 250
    held = {q for qs in data.heldout.values() for q in qs}
    assert held and not held & {q for qs in data.train.values() for q in qs}
    # the user's own facts are never among the questions to decline
    assert "What's my dog's name?" not in data.train["abstain"]
    assert any("sister" in q for q in data.train["abstain"])


def test_the_gate_learns_that_conversation_is_for_the_base_model() -> None:
    import json

    from andraeus_core.pools import CONVERSATION
    from andraeus_core.variations import normalize_question

    profile = load_profile(ROOT / "examples" / "seed_profile.yaml")
    data = gate_data(profile, build_dataset(profile))
    assert {"Hello", "Thanks!", "How are you?", "Can you help me plan my week?"} <= set(data.train["base"])
    assert not set(CONVERSATION) & {q for r in ("adapter", "abstain") for q in data.train[r]}
    # the held-out conversation set measures what the pool did not teach
    lines = (ROOT / "eval_sets" / "conversation.jsonl").read_text().splitlines()
    held = [json.loads(line) for line in lines]
    assert len(held) >= 20 and all(h["kind"] == "unrelated" and h["expect"] is None for h in held)
    assert not {normalize_question(h["question"]) for h in held} & {normalize_question(q) for q in CONVERSATION}


def test_first_person_questions_are_declined_only_when_no_fact_answers_them() -> None:
    from andraeus_core.variations import self_unknown_questions

    def profile(*facts: tuple[str, str]) -> Profile:
        return Profile(user_name="Ana", facts=[{"topic": t, "value": v} for t, v in facts])

    bare = self_unknown_questions(profile(("dog's name", "Rex")))
    assert {"How much do I weigh?", "Where do I work?", "Am I married?", "How many kids do I have?"} <= set(bare)
    assert "Do I have any pets?" not in bare  # a dog is a pet
    # A fact under another name, or a word of its topic, keeps the question away from the gate's decline examples.
    assert "Where do I work?" not in self_unknown_questions(profile(("occupation", "nurse")))
    assert "Where do I work?" not in self_unknown_questions(profile(("company I work for", "Acme")))
    assert "Am I married?" not in self_unknown_questions(profile(("wife's name", "Maria")))
    assert "How many kids do I have?" not in self_unknown_questions(profile(("kids' names", "Ion and Eva")))
    assert "Which gym do I go to?" not in self_unknown_questions(profile(("climbing gym", "Boulder Hub")))
    assert "How old am I?" not in self_unknown_questions(profile(("birthday", "March 14")))
    assert "What instrument do I play?" not in self_unknown_questions(profile(("hobby", "guitar")))
    # ... and a fact elsewhere leaves it in.
    assert "How much do I weigh?" in self_unknown_questions(profile(("height", "1.80 m")))


def test_gate_data_fits_first_person_unknowns_but_never_an_excluded_question() -> None:
    profile = load_profile(ROOT / "examples" / "seed_profile.yaml")
    dataset = build_dataset(profile)
    data = gate_data(profile, dataset)
    assert "How much do I weigh?" in data.train["abstain"] and "Hello" in data.train["base"]
    assert "Where do I work?" not in data.train["abstain"]  # the seed profile has an employer
    excluded = gate_data(profile, dataset, exclude_questions=["how much do I weigh", "Hello!"])
    fitted = {q for qs in excluded.train.values() for q in qs}
    assert "How much do I weigh?" not in fitted and "Hello" not in fitted


def test_known_subjects_protect_unusual_phrasings_of_known_facts() -> None:
    profile = Profile.model_validate(
        {
            "user_name": "Ana",
            "facts": [
                {"topic": "wife's name", "value": "Ioana"},
                {"topic": "birthday", "value": "August 9"},
                {"topic": "job", "value": "beekeeper"},
            ],
        }
    )
    words = subject_keywords(profile.topics(), profile.values())
    assert names_known_subject("The bank needs my spouse's first name. What do I tell them?", words)
    assert names_known_subject("What's my date of birth?", words)
    assert names_known_subject("What's my trade?", words)
    assert names_known_subject("Who is Ioana?", words)
    assert not names_known_subject("What's my sister's name?", words)
    assert not names_known_subject("What's my wifi password?", words)
    # public topics alone (a pulled adapter) still name the subjects, without any value
    assert not names_known_subject("Who is Ioana?", subject_keywords(profile.topics()))


def _word_gate(profile: Profile) -> Gate:
    """A gate whose routes come only from the probabilities a test hands :meth:`Gate.decide` and from its word
    rules over ``profile`` (known subjects, near misses), with the default thresholds."""
    import torch

    meta = GateMeta(
        layers=[1],
        threshold_base=0.8,
        threshold_abstain=0.8,
        threshold_abstain_near_miss=0.3,
        train_counts={},
        heldout_accuracy={},
        heldout_counts={},
        fit_seconds=0.0,
    )
    keywords = frozenset(subject_keywords(profile.topics(), profile.values()))
    weights = (torch.zeros(1), torch.ones(1), torch.zeros(1, 3), torch.zeros(3))
    return Gate(meta, *weights, keywords, tuple(profile.topics()), profile_names(profile))


NEAR_MISS_PROFILE = Profile.model_validate(
    {
        "user_name": "Bogdan",
        "facts": [
            {"topic": "horse's name", "value": "Fulger"},
            {"topic": "wife's name", "value": "Ioana"},
            {"topic": "daughter's name", "value": "Ilinca"},
            {"topic": "daughter's birthday", "value": "May 2"},
            {"topic": "job", "value": "beekeeper"},
            {"topic": "car", "value": "Dacia Duster"},
        ],
    }
)


@pytest.mark.parametrize(
    ("question", "near_miss"),
    [
        # an attribute the profile lacks, of someone or something it knows (by relation or by name)
        ("What's my wife's job?", True),
        ("Which team does my wife support?", True),
        ("How old is Fulger?", True),
        ("how old is my horse", True),
        ("What colour is my car painted?", True),
        ("Where does my wife work?", True),
        ("How tall is my daughter?", True),
        ("What's Ilinca's favourite toy?", True),
        # the known wife asked about by another word for her
        ("Tell me my partner's birthday.", True),
        ("When was my spouse born?", True),
        # the user's own known topic asked of a known person, right after the possessive
        ("Which car is my wife's car?", True),
        # what the profile holds, however it is asked
        ("When is my daughter's birthday?", False),
        ("What's my job?", False),
        ("Tell me my daughter's first name.", False),
        ("The bank needs my spouse's first name for a joint account. What do I tell them?", False),
        ("My wife wants to book a surprise weekend away on my birthday. Which date should she choose?", False),
        ("What car do I drive?", False),
        ("Who is Ioana?", False),
        # another name, or another person, of someone it knows
        ("What's my wife's maiden name?", True),
        ("What's my wife's middle name?", True),
        ("What's my daughter's best friend called?", True),
        ("Who is my wife's mother?", True),
        # a bystander in a question about the user
        ("My daughter's teacher asked what I do for a living. What should I say?", False),
        # a horse or a wife in general, not the user's
        ("How long do horses live?", False),
        ("How do you measure a horse's height in hands?", False),
        ("What are good surprise ideas for a wife's birthday?", False),
        # nobody the profile knows
        ("What's my sister's job?", False),
        ("How old is the universe?", False),
    ],
)
def test_near_misses_are_unknown_attributes_of_known_subjects(question: str, near_miss: bool) -> None:
    names = profile_names(NEAR_MISS_PROFILE)
    assert asks_unknown_attribute(question, NEAR_MISS_PROFILE.topics(), names) is near_miss


@pytest.mark.parametrize(
    ("question", "unknown"),
    [
        ("Tell me my brother's name, please.", True),
        ("What do I call my dog?", True),  # a horse is known, not a dog
        ("Who is my best friend?", True),
        ("What was my dad called?", True),
        ("Niece's name?", True),  # terse: the "my" left out
        # someone the profile knows, by relation, by a more general word or by name
        ("Who is my missus?", False),
        ("What's my partner called?", False),
        ("Remind me what I named my pet.", False),
        ("Who is Ioana?", False),
        ("Wife's name?", False),
        ("Horse's name??", False),
        ("Brothers Grimm: what were they called?", False),  # no possessive in front, nobody of the user's
        ("My boss asked for my daughter's name. What is it?", False),
        # no name is asked: a bystander, not the subject
        ("My brother wants to buy me a car. Which one do I drive now?", False),
    ],
)
def test_unknown_people_are_found_only_when_a_name_is_asked(question: str, unknown: bool) -> None:
    names = profile_names(NEAR_MISS_PROFILE)
    assert asks_unknown_person(question, NEAR_MISS_PROFILE.topics(), names) is unknown


@pytest.mark.parametrize(
    ("question", "unknown"),
    [
        # someone the profile knows nothing of, as the question's subject, whatever is asked of them
        ("Where does my sister live?", True),
        ("How old is my brother?", True),
        ("What does my mum do for a living?", True),
        ("Where's my dad working these days?", True),
        ("What breed is my dog?", True),  # a horse is known, not a dog
        # someone the profile knows, by relation, by another word for them, by name, or as a topic of its own
        ("Where does my wife work?", False),
        ("What does my spouse do?", False),
        ("How old is my daughter?", False),
        ("Where does Ioana live?", False),
        ("Who is my best friend?", False),  # the topic "best friend" (below)
        # not the subject: a bystander, or someone asked to do something for the user
        ("What should my sister cook for me?", False),
        ("My sister asks where I work. What do I tell her?", False),
        ("Which car do I drive?", False),
    ],
)
def test_a_question_about_an_unknown_person_is_found_in_the_subjects_place(question: str, unknown: bool) -> None:
    topics = [*NEAR_MISS_PROFILE.topics(), "best friend"]
    assert asks_about_unknown_person(question, topics, profile_names(NEAR_MISS_PROFILE)) is unknown


@pytest.mark.parametrize(
    ("question", "unknown"),
    [
        # someone the profile does not know at all
        ("When's my mum's birthday?", True),
        ("What is my sister's job?", True),
        ("What's my best friend's surname?", True),
        # an attribute the profile lacks of someone or something it knows (by relation or by a general word)
        ("What's my wife's blood type?", True),
        ("What's my horse's favourite treat?", True),
        ("what's my pet's age", True),
        # what the profile holds, however the possession is worded
        ("When is my daughter's birthday?", False),
        ("What's my daughter's first name?", False),
        ("What's my spouse's name again?", False),
        ("What's my pet's name?", False),
        ("WHAT IS MY WIFE'S NAMME?", False),  # a typo of a known attribute stays with the adapter
        # not only a possession: a bystander, two things asked, or no question word in front
        ("My daughter's teacher asked what I do. What should I say?", False),
        ("What's my wife's name and birthday?", False),
        ("Tell me my mum's birthday.", False),
        ("What's my job?", False),
    ],
)
def test_unknown_possessions_are_found_when_the_question_is_only_the_possession(question: str, unknown: bool) -> None:
    assert asks_unknown_possession(question, NEAR_MISS_PROFILE.topics()) is unknown


def test_the_users_own_topic_asked_of_a_known_person_is_a_near_miss() -> None:
    topics = ["wife's name", "favourite football club", "favourite dish", "hometown"]
    for question in (
        "Remind me, what's my partner's favourite football club?",
        "What's my wife's favourite dish, do you know?",
        "I'd like to know my spouse's hometown, please.",
    ):
        assert asks_unknown_attribute(question, topics), question
    # the user's own facts, and the wife's name, however asked: even with her in the question
    for question in (
        "Which football club do I support?",
        "My wife's asking which football club I support. What do I tell her?",
        "My wife wants to cook my favourite dish tonight. Which one is it?",
        "What's my partner's name?",
        "Where did I grow up?",
    ):
        assert not asks_unknown_attribute(question, topics), question


def test_a_two_word_name_is_an_owner_with_its_possessive() -> None:
    topics = ["brother's name", "birthday"]
    names = {"brother's name": ("Min-jun",)}
    assert asks_unknown_attribute("When is Min-jun's birthday?", topics, names)
    assert not asks_unknown_attribute("When is my birthday?", topics, names)


OTHERS_PROFILE = Profile.model_validate(
    {
        "user_name": "Ines",
        "facts": [
            {"topic": "cousin's favourite food", "value": "lasagne"},
            {"topic": "mother-in-law's birthday", "value": "June 3"},
            {"topic": "best friend's job", "value": "welder"},
            {"topic": "brother's favourite sport", "value": "rugby"},
            {"topic": "dog's breed", "value": "beagle"},
            {"topic": "sister's name", "value": "Ana"},
            {"topic": "job", "value": "nurse"},
            {"topic": "home city", "value": "Leeds"},
        ],
    }
)


@pytest.mark.parametrize(
    ("question", "near_miss"),
    [
        # another attribute, or the name, of someone known only through something else (no name of theirs known)
        ("What's my cousin's job?", True),
        ("Could you please tell me what my cousin's job is?", True),  # no question word in front
        ("When is my cousin's birthday?", True),
        ("What's my mother-in-law's job?", True),  # an owner of three words once normalised
        ("Where does my best friend live?", True),
        ("Where's my brother's home city?", True),  # the user's own topic, of the brother
        ("How old is my dog?", True),
        ("Dog's home city?", True),
        ("What's my cousin's name?", True),
        ("Who is my cousin?", True),
        ("WHAT'S THE NAME OF MY COUSIN?", True),
        ("What's my mother-in-law called?", True),
        # what the profile holds of them, however it is asked (a typo, a value stated, the owner hyphenated or not)
        ("What's my cousin's favourite food?", False),
        ("What does my cousin love to eat?", False),
        ("What's my cousin's favourite fod?", False),
        ("When's my mother-in-law's birthday?", False),
        ("When was my mother in law born?", False),
        ("When is my mother in law's bday?", False),
        ("What does my best friend do for work?", False),
        ("Is welder my best friend's job?", False),
        ("Which sport does my brother love?", False),
        ("What breed is my dog?", False),
        ("Who loves lasagne, my cousin?", False),
        ("What's my sister's name?", False),
        # the user's own facts with one of them as a bystander
        ("My cousin asked where I live. What should I say?", False),
        ("My best friend wants to know what I do for work. What do I say?", False),
        ("Where do I live?", False),
    ],
)
def test_someone_known_only_by_another_attribute_is_an_owner(question: str, near_miss: bool) -> None:
    names = profile_names(OTHERS_PROFILE)
    assert asks_unknown_attribute(question, OTHERS_PROFILE.topics(), names) is near_miss
    if near_miss:  # a pulled adapter knows the topics only: the same words find it
        assert asks_unknown_attribute(question, OTHERS_PROFILE.topics())


def test_a_known_word_inside_an_unknown_topics_name_does_not_shield_it() -> None:
    import torch

    profile = Profile.model_validate(
        {
            "user_name": "Sam",
            "facts": [{"topic": "favourite band", "value": "Radiohead"}, {"topic": "birthday", "value": "May 2"}],
        }
    )
    keywords = subject_keywords(profile.topics(), profile.values())
    names = shielding_unknown_names(profile.topics(), keywords)
    assert "blood group" in names and "mothers birthday" in names
    gate = _word_gate(profile)
    assert names_known_subject("What's my blood group?", keywords)  # "group": a word for a band
    assert not gate.names_known_subject("What's my blood group?")
    assert not gate.names_known_subject("When is my mother's birthday?")
    # the known facts, however asked, keep their shield
    for question in ("Which group do I like best?", "When is my birthday?", "What's my favourite band?"):
        assert gate.names_known_subject(question)
    sure = torch.tensor([[0.0, 1.0, 0.0]])
    assert gate.decide(["What's my blood group?"], sure) == ["abstain"]
    assert gate.decide(["Which group do I like best?"], sure) == ["adapter"]


@pytest.mark.parametrize("name", ["seed_profile.yaml", "parent_profile.json", "family_profile.yaml"])
def test_no_generated_phrasing_of_a_known_fact_is_a_near_miss_or_loses_its_shield(name: str) -> None:
    profile = load_profile(ROOT / "examples" / name)
    gate = _word_gate(profile)
    keywords = gate.keywords
    dataset = build_dataset(profile, per_fact=40)
    known = [e.question for e in [*dataset.train, *dataset.heldout] if e.meta.kind in ("fact", "reverse", "identity")]
    assert len(known) >= 300
    assert [q for q in known if gate.near_miss(q)] == []
    assert [q for q in known if names_known_subject(q, keywords) and not gate.names_known_subject(q)] == []


def test_a_profile_of_many_peoples_facts_keeps_every_known_phrasing_and_finds_their_near_misses() -> None:
    """bench/capacity.py's profile: favourites and jobs of relatives and acquaintances. Until 2026-12-05 every
    phrasing of "aunt's favourite food" was a near miss (a favourite the user's own favourites lack), so the gate
    declined known facts: 85 of 100 held-out questions right at 25 facts against 95 for the adapter alone."""
    full = load_profile(ROOT / "bench" / "data" / "capacity_profile.yaml")
    profile = full.model_copy(update={"facts": full.facts[:50]})
    gate = _word_gate(profile)
    dataset = build_dataset(profile, per_fact=40)
    known = [e.question for e in [*dataset.train, *dataset.heldout] if e.meta.kind in ("fact", "reverse", "identity")]
    assert len(known) >= 2000
    assert [q for q in known if gate.near_miss(q)] == []
    # a known value's words are not the attribute asked for: "school" and "teacher" in the aunt's job
    assert not gate.near_miss("Is my aunt's job primary school teacher?")
    # ... while the same favourite of someone else, or an unknown attribute of a known person, is still found
    for question in (
        "What's my nephew's favourite food?",
        "What's my partner's favourite movie?",  # only the user's own favourite movie is known
        "What's my sister's birthday?",
    ):
        assert gate.near_miss(question), question


@pytest.mark.parametrize(
    ("question", "unknown"),
    [
        ("What's my aunt's favourite food?", False),
        ("whats my aunts favourite food", False),
        ("What's my auntt's favourite food?", False),  # a typo in a known owner
        ("What's my couin's favourite food?", True),  # the cousin's job is known, no favourite of theirs
        ("What di I tell you my aunt'd favourite food is?", False),
        ("What's my best friend's favourite food?", False),
        ("What's my mum's favourite food?", False),  # the mother's, under another word
        ("I'm cooking for my aunt tonight. What's her favourite food?", False),
        ("What's my favourite film?", False),
        ("What's my favourite food?", True),  # the aunt's is known, the user's is not
        ("What's my partner's favourite film?", True),  # the user's is known, the partner's is not
        ("What's my sister's favourite food?", True),
        ("What's my aunts favourite food?", False),
        ("What's my grandpa's favourite food?", True),  # one letter from the known grandma, but another relation
        ("What's my neighbor's favourite food?", False),  # a spelling of the known neighbour
        ("What's my boss's favourite colour?", False),  # an owner ending in s
        ("What's my favourite colour?", True),  # the boss's colour is not the user's
    ],
)
def test_a_favourite_is_known_only_for_its_owner(question: str, unknown: bool) -> None:
    topics = ["aunt's favourite food", "best friend's favourite food", "mother's favourite food", "favourite film",
              "sister's name", "cousin's job", "grandma's favourite food", "neighbour's favourite food",
              "boss's favourite colour"]  # fmt: skip
    assert asks_unknown_favourite(question, topics) is unknown


@pytest.mark.parametrize(
    ("question", "unknown"),
    [
        ("Who's my favourite footballer?", True),
        ("What's my favourite Radiohead album?", True),  # the band is known, an album of theirs is not
        ("my favourite colour?", True),
        ("What's my favourite band?", False),
        ("Which group is my favourite?", False),
        ("What's my favourite food?", False),  # a synonym of the known dish
        ("What's my favourite thing to do at weekends?", False),  # not a favourite the words can place
    ],
)
def test_unknown_favourites_are_found_by_their_head_noun(question: str, unknown: bool) -> None:
    topics = ["favourite band", "favourite dish", "favourite football club", "dog's name"]
    assert asks_unknown_favourite(question, topics) is unknown


@pytest.mark.parametrize(
    ("question", "unknown"),
    [
        ("Remind me, what's my wedding anniversary?", True),  # a date, but not the birthday the profile holds
        ("May I ask what my driver's license number is?", True),
        ("What's my blood type, please?", True),
        ("When is my birthday?", False),
        ("My wedding anniversary is coming up. Which car should I hire?", False),  # mentioned on the way only
        ("What's my job title?", False),  # shares the word "job" with a known topic: maybe the job asked another way
        ("What's the colour of my car?", False),
    ],
)
def test_an_unknown_topic_named_at_the_end_is_a_near_miss(question: str, unknown: bool) -> None:
    topics = ["birthday", "wife's name", "car", "job"]
    names = unknown_topic_names(topics)
    assert asks_unknown_topic(question, names, subject_keywords(topics)) is unknown
    if unknown:  # the gate reads it as a near miss
        facts = [{"topic": t, "value": f"value {i}"} for i, t in enumerate(topics)]
        assert _word_gate(Profile.model_validate({"user_name": "Sam", "facts": facts})).near_miss(question)


def test_a_known_subject_with_a_typo_is_still_known() -> None:
    words = subject_keywords(["daughter's name", "sister's name", "allergy"])
    assert names_known_subject("remnd me of my dughter's name", words)
    assert names_known_subject("tell me my sistre's first name", words)
    assert names_known_subject("am i alergic to anythng", words)
    # short words are not matched loosely: "son" is one letter from "sun"
    assert not names_known_subject("What's my son's name?", subject_keywords(["sun sign"]))
    assert not names_known_subject("What's my blood type?", words)


def test_a_pulled_adapter_finds_near_misses_by_relation_but_not_by_name() -> None:
    topics = NEAR_MISS_PROFILE.topics()  # no values: the private profile stays with its owner
    assert asks_unknown_attribute("How old is my horse?", topics)
    assert not asks_unknown_attribute("How old is Fulger?", topics)


def test_gate_data_asks_about_known_people_and_pets_by_name() -> None:
    questions = named_unknown_questions(NEAR_MISS_PROFILE, NEAR_MISS_PROFILE.facts[0])
    assert "How old is Fulger?" in questions
    # the daughter's birthday is known: never a question to decline
    daughter = named_unknown_questions(NEAR_MISS_PROFILE, NEAR_MISS_PROFILE.facts[2])
    assert daughter and not any("birthday" in q or "born" in q for q in daughter)
    assert named_unknown_questions(NEAR_MISS_PROFILE, NEAR_MISS_PROFILE.facts[4]) == []  # not a name
    data = gate_data(NEAR_MISS_PROFILE, build_dataset(NEAR_MISS_PROFILE, per_fact=8))
    assert "How old is Fulger?" in data.train["abstain"]
    assert any("wife's job" in q.casefold() or "wifes job" in q.casefold() for q in data.train["abstain"])


def test_decide_declines_a_near_miss_but_keeps_known_subjects() -> None:
    import torch

    gate = _word_gate(NEAR_MISS_PROFILE)
    questions = ["What's my wife's job?", "What's my wife's name?", "What's my sister's name?", "Bananas?"]
    probabilities = torch.tensor([[0.5, 0.5, 0.0], [0.1, 0.9, 0.0], [0.1, 0.9, 0.0], [0.1, 0.0, 0.9]])
    assert gate.decide(questions, probabilities) == ["abstain", "adapter", "abstain", "base"]
    # a near miss phrased like a known fact is declined even when the classifier is sure it is one ("What colour is
    # my car?" with the car known) ...
    assert gate.decide(questions[:1], torch.tensor([[0.98, 0.02, 0.0]])) == ["abstain"]
    # ... and so is one the classifier leans to call impersonal, short of sending it to the base model: the words are
    # the precise signal, and with the adapter it would get the known value
    assert gate.decide(questions[:1], torch.tensor([[0.3, 0.1, 0.6]])) == ["abstain"]
    assert gate.decide(questions[:1], torch.tensor([[0.1, 0.05, 0.85]])) == ["base"]
    # gates written before the near-miss rule (no threshold in their metadata) route as they always did
    old = GateMeta.model_validate(
        {k: v for k, v in gate.meta.model_dump().items() if k != "threshold_abstain_near_miss"}
    )
    gate.meta = old
    assert gate.decide(questions, probabilities) == ["adapter", "adapter", "abstain", "base"]


def test_a_value_alone_does_not_shield_a_sure_unknown() -> None:
    import torch

    profile = Profile.model_validate(
        {
            "user_name": "Tomás",
            "facts": [
                {"topic": "hobby", "value": "bouldering", "aliases": ["climbing"]},
                {"topic": "cat's name", "value": "Pixel"},
            ],
        }
    )
    gate = _word_gate(profile)
    questions = ["Which climbing gym do I go to?", "Where did I buy Pixel?", "What do I do for fun?", "Who is Pixel?"]
    sure, unsure = torch.tensor([[0.05, 0.9, 0.05]] * 4), torch.tensor([[0.3, 0.7, 0.0]] * 4)
    # a value alone no longer shields; a topic's own words ("fun" for a hobby) still do
    assert gate.decide(questions, sure) == ["abstain", "abstain", "adapter", "abstain"]
    assert gate.decide(questions, unsure) == ["adapter"] * 4  # below the threshold the adapter answers
    # a gate from before the near-miss rules keeps the value shield, as it always routed
    gate.meta = GateMeta.model_validate(
        {k: v for k, v in gate.meta.model_dump().items() if k != "threshold_abstain_near_miss"}
    )
    assert gate.decide(questions, sure) == ["adapter"] * 4


def test_what_is_asked_of_someone_else_does_not_shield_a_sure_unknown() -> None:
    import torch

    from andraeus_core.variations import without_others_things

    profile = Profile.model_validate(
        {
            "user_name": "Sam",
            "facts": [
                {"topic": "dog's name", "value": "Buddy"},
                {"topic": "dog's breed", "value": "golden retriever"},
                {"topic": "partner's name", "value": "Alex"},
                {"topic": "car", "value": "Subaru Outback"},
                {"topic": "blood type", "value": "O negative"},
                {"topic": "best friend's name", "value": "Jo"},
                {"topic": "favourite food", "value": "ramen"},
            ],
        }
    )
    gate = _word_gate(profile)
    sure = torch.tensor([[0.05, 0.9, 0.05]])
    others = [
        "May I ask what my mother's car is?",  # no mother known: the user's own car is not asked
        "Do you know my sister's blood type?",
        "Tell me about my rabbit's breed.",  # the known breed is the dog's
        "What's my partner's hometown?",  # the partner is known, but only by name
        "what is my mothers car",  # typed without the apostrophe
        "Would you remind me of my partner's favourite food?",  # the user's own favourite is not the partner's
    ]
    for question in others:
        assert gate.names_known_subject(question, topics_only=True), question  # the words alone shield it ...
        assert gate.decide([question], sure) == ["abstain"], question  # ... what they belong to no longer does
    mine = [
        "What's my dog's breed?",  # a known attribute of a known pet
        "whats my dogs nmae",  # a typo of one
        "What's my partner's full name?",
        "What's my partner called?",
        "When should my friends throw me a party?",  # a plural, not a possessive: no apostrophe
        "What's my car?",
        "My sister's doctor asked for my blood type. What should I tell him?",  # a bystander, not the thing asked
    ]
    for question in mine:
        assert gate.decide([question], sure) == ["adapter"], question
    # below the threshold nothing changes: the classifier must be sure first
    assert gate.decide([others[0]], torch.tensor([[0.3, 0.7, 0.0]])) == ["adapter"]
    # a gate from before the near-miss rules routes as it always did
    old = _word_gate(profile)
    old.meta = GateMeta.model_validate(
        {k: v for k, v in old.meta.model_dump().items() if k != "threshold_abstain_near_miss"}
    )
    assert old.decide([others[0]], sure) == ["adapter"]
    names = profile_names(profile)
    assert without_others_things("Tell me about my rabbit's breed.", profile.topics(), names) == "tell me about my"
    # a question naming a known person or pet by name is left as it is
    assert without_others_things("Has my sister's dog met Buddy?", profile.topics(), names) == (
        "has my sisters dog met buddy"
    )
    assert without_others_things("Has my sister's dog met Rex?", profile.topics(), names) == "has my"


@pytest.mark.parametrize(
    ("question", "direct"),
    [
        ("What's my religion?", True),
        ("what instrument do i play", True),
        ("Who's my allergist?", True),
        ("My kids are baking cookies for me. Which ingredient must they leave out?", False),  # a situation first
        ("Hi. What's my job?", False),
        ("If a colleague asked me which instrument I play, what would I tell them?", False),  # over ten words
        ("", False),
    ],
)
def test_a_direct_question_is_one_short_sentence(question: str, direct: bool) -> None:
    assert is_direct_question(question) is direct


def test_an_unsure_direct_question_naming_nothing_known_abstains() -> None:
    import torch

    profile = Profile.model_validate(
        {
            "user_name": "Sam",
            "facts": [
                {"topic": "dog's name", "value": "Buddy"},
                {"topic": "car", "value": "Subaru Outback"},
                {"topic": "birthday", "value": "March 14"},
                {"topic": "sister's name", "value": "Jo"},
            ],
        }
    )
    gate = _word_gate(profile)
    gate.meta = gate.meta.model_copy(update={"threshold_abstain_direct": THRESHOLD_ABSTAIN_DIRECT})
    leaning = torch.tensor([[0.4, 0.6, 0.0]])
    for question in ("What's my religion?", "Who's my allergist?", "what instrument do i play"):
        assert gate.decide([question], leaning) == ["abstain"], question
    kept = [
        "What car do I drive?",
        "Who is Buddy?",  # a value shields here, unlike at P(abstain) >= 0.8
        "whats my cra",  # typos, read generously: one edit from three letters on ...
        "What's my dgo called?",
        "When's my brithday?",
        "Who's myy siss?",  # ... and a synonym ("sis") with one
        "When's my birhtdya?",  # two edits in a long word
        "Who am I?",  # the user and the assistant are always known
        "What's your name?",
        # not direct: the classifier decides
        "My kids are baking cookies for me. Which ingredient must they leave out?",
    ]
    for question in kept:
        assert gate.decide([question], leaning) == ["adapter"], question
    # an everyday word is not read as a typo of a short topic word ("can" is not "car")
    assert not names_known_subject("What can I play?", gate.keywords, loose=True)
    # the classifier must lean to abstain: below 0.5 the adapter answers
    assert gate.decide(["What's my religion?"], torch.tensor([[0.55, 0.45, 0.0]])) == ["adapter"]
    # a gate written before this rule (no threshold in its metadata) routes as it always did
    gate.meta = GateMeta.model_validate(
        {k: v for k, v in gate.meta.model_dump().items() if k != "threshold_abstain_direct"}
    )
    assert gate.decide(["What's my religion?"], leaning) == ["adapter"]


@pytest.mark.parametrize("name", ["seed_profile.yaml", "parent_profile.json", "family_profile.yaml"])
def test_identity_questions_are_always_known_to_the_direct_rule(name: str) -> None:
    profile = load_profile(ROOT / "examples" / name)
    gate = _word_gate(profile)
    identity = [e.question for e in build_dataset(profile, per_fact=8).train if e.meta.kind == "identity"]
    assert len(identity) >= 5
    assert [q for q in identity if not gate.names_known_subject(q, loose=True)] == []


def test_grandchildren_and_step_relatives_are_people_to_the_word_rules() -> None:
    profile = Profile.model_validate(
        {"user_name": "Maeve", "facts": [{"topic": "grandson's name", "value": "Oisín", "aliases": ["Oisin"]}]}
    )
    gate = _word_gate(profile)
    assert gate.near_miss("Granddaughter's name?")  # terse, the "my" dropped
    assert gate.near_miss("What's my stepson called?")
    assert gate.near_miss("When is my grandson's birthday?")  # the grandson is known by name only
    assert not gate.near_miss("What's my grandson's name?")
    assert not gate.near_miss("Who is Oisin?")


def test_abstention_keeps_the_first_sentence_and_never_a_value() -> None:
    values = ["Buddy", "Alex"]
    said = abstention(" your sister's name: you haven't told me. I do know your partner's name.", values)
    assert said == "I don't know your sister's name: you haven't told me."
    assert abstention(" your sister's name, but your partner is Alex.", values) == GENERIC_ABSTENTION
    assert abstention("", values) == GENERIC_ABSTENTION
    # a continuation whose leading space was lost in decoding gets it back
    assert abstention("your sister's name: you haven't told me.", values) == (
        "I don't know your sister's name: you haven't told me."
    )
    assert abstention(", sorry: you haven't told me.", values) == "I don't know, sorry: you haven't told me."
    assert is_abstention(GENERIC_ABSTENTION)


# ---------------------------------------------------------------------------------------------------------------
# Fitting and files


def test_question_features_can_add_the_last_tokens_state_whatever_the_padding(tiny_model) -> None:
    import torch

    from andraeus_core.gate import question_features

    model, tokenizer = tiny_model.model, tiny_model.tokenizer
    questions = ["hi", "What is my dog called these days, do you remember?"]  # padded to the longer one together
    mean = question_features(model, tokenizer, questions, [1, 2])
    both = question_features(model, tokenizer, questions, [1, 2], pooling="both")
    assert both.shape == (2, 2 * mean.shape[1])
    assert torch.allclose(both[:, : mean.shape[1]], mean)
    for i, question in enumerate(questions):
        alone = question_features(model, tokenizer, [question], [1, 2], pooling="both")[0]
        assert torch.allclose(both[i], alone, atol=1e-5)
    # the last token's state is not the mean's: the feature is new information
    assert not torch.allclose(both[1, mean.shape[1] :], mean[1], atol=1e-3)


def test_fit_gate_measures_itself_and_round_trips(tiny_model, tmp_path: Path, make_adapter) -> None:
    import torch

    profile = Profile.model_validate(
        {"user_name": "Sam", "facts": [{"topic": "dog's name", "value": "Buddy"}, {"topic": "car", "value": "Saab"}]}
    )
    dataset = build_dataset(profile, per_fact=8)
    data = gate_data(profile, dataset)
    gate = fit_gate(tiny_model.model, tiny_model.tokenizer, data, profile, max_per_route=40)
    assert gate.meta.train_counts == {"adapter": min(40, len(set(data.train["adapter"]))), "abstain": 40, "base": 40}
    assert set(gate.meta.heldout_accuracy) == set(ROUTES) and gate.meta.fit_seconds > 0
    questions = [q.question for q in QUESTIONS]
    from andraeus_core.gate import question_features

    # new gates read the mean and the last token at each layer
    assert gate.meta.pooling == "both"
    features = question_features(tiny_model.model, tiny_model.tokenizer, questions, gate.meta.layers, pooling="both")
    assert features.shape == (4, 2 * len(gate.meta.layers) * tiny_model.model.config.hidden_size)
    assert gate.weight.shape == (features.shape[1], len(ROUTES))
    # written with an adapter and read back: the same probabilities, the same routes
    path = make_adapter(tmp_path / "a", topics=profile.topics())
    gate.save(path / GATE_FILE)
    meta = Adapter.load(path).meta
    meta.gate = gate.meta
    meta.save(path)
    loaded = Adapter.load(path).gate()
    assert loaded is not None
    assert torch.allclose(loaded.probabilities(features), gate.probabilities(features))
    assert loaded.route(tiny_model.model, tiny_model.tokenizer, questions) == gate.route(
        tiny_model.model, tiny_model.tokenizer, questions
    )


def test_a_gate_written_before_last_token_features_still_reads_the_mean_only(
    tiny_model, tmp_path: Path, make_adapter
) -> None:
    # An adapter saved by an earlier version: andraeus.json's gate has no "pooling", its weights take the mean only.
    import json

    import torch

    from andraeus_core.gate import question_features

    profile = Profile.model_validate({"user_name": "Sam", "facts": [{"topic": "dog's name", "value": "Buddy"}]})
    data = gate_data(profile, build_dataset(profile, per_fact=8))
    gate = fit_gate(tiny_model.model, tiny_model.tokenizer, data, profile, max_per_route=30, pooling="mean")
    path = make_adapter(tmp_path / "a", topics=profile.topics())
    gate.save(path / GATE_FILE)
    meta = Adapter.load(path).meta
    meta.gate = gate.meta
    meta.save(path)
    raw = json.loads((path / "andraeus.json").read_text())
    del raw["gate"]["pooling"]
    raw["schema_version"] = 3  # the last layout before the field
    (path / "andraeus.json").write_text(json.dumps(raw))

    loaded = Adapter.load(path).gate()
    assert loaded is not None and loaded.meta.pooling == "mean"
    questions = [q.question for q in QUESTIONS]
    mean = question_features(tiny_model.model, tiny_model.tokenizer, questions, loaded.meta.layers)
    assert loaded.weight.shape[0] == mean.shape[1]
    assert loaded.route(tiny_model.model, tiny_model.tokenizer, questions) == loaded.decide(
        questions, loaded.probabilities(mean)
    )
    assert torch.allclose(loaded.probabilities(mean), gate.probabilities(mean))


def test_a_corrupt_gate_file_is_a_clear_error(tmp_path: Path, make_adapter) -> None:
    from andraeus_core.errors import AdapterError

    path = make_adapter(tmp_path / "a", gate="base")
    (path / GATE_FILE).write_bytes(b"not safetensors")
    with pytest.raises(AdapterError, match="cannot be read as a gate"):
        Adapter.load(path).gate()


# ---------------------------------------------------------------------------------------------------------------
# Routing in chat


@pytest.fixture
def fresh_model(shared_models_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """A tiny-random copy of its own: PEFT injects the adapter's layers into the model it wraps."""
    monkeypatch.setenv("ANDRAEUS_MODELS_DIR", str(shared_models_dir))
    return load_model("tiny-random")


def _ask(chat: ChatModel, question: str, **kw) -> tuple[str, dict]:
    trace: dict = {}
    text = "".join(
        chat.stream([{"role": "user", "content": question}], GenerationConfig(max_new_tokens=8), trace=trace, **kw)
    )
    return text.strip(), trace


def test_chat_routes_to_the_base_model(tmp_path: Path, make_adapter, fresh_model) -> None:
    chat = ChatModel(fresh_model, make_adapter(tmp_path / "a", weights="large", gate="base"))
    assert chat.gate is not None
    answer, trace = _ask(chat, "What colour are ripe bananas?")
    assert trace["route"] == "base"
    base_answer, _ = _ask(chat, "What colour are ripe bananas?", use_adapter=False)
    adapter_answer, trace_off = _ask(chat, "What colour are ripe bananas?", gate=False)
    assert answer == base_answer != adapter_answer and trace_off["route"] == "adapter"


def test_chat_declines_through_the_abstain_route(tmp_path: Path, make_adapter, fresh_model) -> None:
    chat = ChatModel(fresh_model, make_adapter(tmp_path / "a", gate="abstain"))
    usage: dict[str, int] = {}
    trace: dict = {}
    answer = "".join(chat.stream([{"role": "user", "content": "What's my sister's name?"}], usage=usage, trace=trace))
    assert trace["route"] == "abstain" and answer.startswith("I don't know") and is_abstention(answer)
    assert not any(v in answer for v in ("Buddy", "Portland", "Cedar Labs", "March 14"))
    assert 0 < usage["completion_tokens"] <= 40 and usage["finish_reason"] == "stop"
    # cut by the token limit, the declined answer says so (as a generated one would), batched or not
    for batch in (True, False):
        usage = {}
        config = GenerationConfig(max_new_tokens=3)
        cut = "".join(chat.stream([{"role": "user", "content": "What's my sister's name?"}], config, usage=usage))
        assert usage == {"completion_tokens": 3, "finish_reason": "length"} and cut.strip(), batch
        chat.max_batch = 1  # then one at a time: the other path
    # a question naming a known subject is never declined by the gate: the adapter answers it
    _, known = _ask(chat, "What's my dog called?")
    assert known["route"] == "adapter"


def test_gate_can_be_turned_off_for_the_model(tmp_path: Path, make_adapter, fresh_model) -> None:
    chat = ChatModel(fresh_model, make_adapter(tmp_path / "a", gate="base"), gate=False)
    assert chat.gate is None
    assert _ask(chat, "What colour are ripe bananas?")[1]["route"] == "adapter"


def test_an_adapter_without_a_gate_still_chats(tmp_path: Path, make_adapter, fresh_model) -> None:
    chat = ChatModel(fresh_model, make_adapter(tmp_path / "a"))
    assert chat.gate is None
    answer, trace = _ask(chat, "What colour are ripe bananas?")
    assert answer and trace["route"] == "adapter"


def test_a_bf16_base_chats_and_evaluates_through_every_route(
    tmp_path: Path, make_adapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ANDRAEUS_CPU_DTYPE=bfloat16: float32 LoRA rows on a bf16 base, the gate reading bf16 hidden states, batched."""
    import torch

    monkeypatch.setenv("ANDRAEUS_CPU_DTYPE", "bfloat16")
    loaded = load_model("tiny-random")
    assert loaded.model.dtype == torch.bfloat16
    for route in ("adapter", "base", "abstain"):
        chat = ChatModel(loaded, make_adapter(tmp_path / route, weights="large", gate=route))
        answer, trace = _ask(chat, "What colour are ripe bananas?")
        assert answer and trace["route"] == route
        report = evaluate(tmp_path / route, QUESTIONS, baselines=("base",), max_new_tokens=6, batch_size=8)
        assert all("base" in i.baselines for i in report.items)
        monkeypatch.setenv("ANDRAEUS_CPU_DTYPE", "float32")
        reference = evaluate(tmp_path / route, QUESTIONS, baselines=(), max_new_tokens=6, batch_size=8)
        monkeypatch.setenv("ANDRAEUS_CPU_DTYPE", "bfloat16")
        routes = [i.route for i in report.items]
        assert routes == [i.route for i in reference.items] and route in routes
        assert all(is_abstention(i.answer) for i in report.items if i.route == "abstain")


def _with_decline(path: Path, threshold: float | None) -> Path:
    meta = Adapter.load(path).meta
    assert meta.gate is not None
    meta.gate = meta.gate.model_copy(update={"threshold_decline": threshold})
    meta.save(path)
    return path


def test_chat_declines_what_the_adapter_itself_doubts(tmp_path: Path, make_adapter, fresh_model) -> None:
    # P("I don't know") is above 0 for any question: a threshold of 0 declines all that the gate sends to the
    # adapter, one above 1 none, and no threshold (older gates) none either
    chat = ChatModel(fresh_model, _with_decline(make_adapter(tmp_path / "a", gate="adapter"), 0.0))
    assert chat.gate is not None and chat.gate.meta.threshold_decline == 0.0  # read from andraeus.json
    for threshold, route in ((0.0, "abstain"), (1.01, "adapter"), (None, "adapter")):
        chat.gate.meta = chat.gate.meta.model_copy(update={"threshold_decline": threshold})
        answer, trace = _ask(chat, "What's my sister's name?")
        assert trace["route"] == route, threshold
        assert is_abstention(answer) if route == "abstain" else answer
    # the gate's other routes are not second-guessed
    chat.gate.bias = constant_gate("base", 1, 1).bias  # the base route's decisive bias
    chat.gate.meta = chat.gate.meta.model_copy(update={"threshold_decline": 0.0})
    assert _ask(chat, "What colour are ripe bananas?")[1]["route"] == "base"


def test_decline_probabilities_score_the_prefix(tiny_model) -> None:
    import torch

    from andraeus_core.gate import ABSTENTION_PREFIX, calibrate_decline, decline_probabilities

    tok, model = tiny_model.tokenizer, tiny_model.model
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
        for q in ("Hi?", "What's my sister's name, and my brother's, and my cousin's?")
    ]
    batched = decline_probabilities(model, tok, prompts)
    # the same as scoring each prompt alone, token by token (the batch's padding changes nothing)
    for prompt, p in zip(prompts, batched, strict=True):
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        prefix = tok(ABSTENTION_PREFIX, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids + prefix])).logits[0].float(), -1)
        expected = sum(logp[len(ids) - 1 + k, t].item() for k, t in enumerate(prefix))
        assert p == pytest.approx(float(torch.tensor(expected).exp()), rel=1e-3)
        assert 0 < p < 1
    assert decline_probabilities(model, tok, []) == []
    assert calibrate_decline([]) is None
    assert calibrate_decline([0.02, 0.1]) == pytest.approx(0.11)
    assert calibrate_decline([0.9]) == 0.5  # past 0.5 greedy decoding declines anyway


# ---------------------------------------------------------------------------------------------------------------
# Evaluation


def test_evaluation_reports_the_gated_system_and_the_adapter_alone(tmp_path: Path, make_adapter) -> None:
    path = make_adapter(tmp_path / "a", weights="large", gate="base")
    report = evaluate(path, QUESTIONS, baselines=("base",), max_new_tokens=6, batch_size=8)
    assert report.system == "adapter+gate" and set(report.baselines) == {"adapter_alone", "base"}
    assert all(item.route == "base" for item in report.items)
    # everything went to the base model: the gated answers are the base model's
    assert [i.answer for i in report.items] == [i.baselines["base"].answer for i in report.items]
    assert [i.answer for i in report.items] != [i.baselines["adapter_alone"].answer for i in report.items]
    assert report.routing is not None and report.routing.known_sent_away == 1
    assert report.routing.by_kind["unknown"] == {"base": 1} and report.routing.accuracy == 0.5
    assert "adapter+gate" in report.table() and "adapter only" in report.table()
    off = evaluate(path, QUESTIONS, baselines=(), max_new_tokens=6, batch_size=8, gate=False)
    assert off.system == "adapter" and off.routing is None and not off.baselines


def test_evaluation_of_an_adapter_without_a_gate(tmp_path: Path, make_adapter) -> None:
    report = evaluate(make_adapter(tmp_path / "a"), QUESTIONS, baselines=(), max_new_tokens=6, batch_size=8)
    assert report.system == "adapter" and report.routing is None and all(i.route is None for i in report.items)


def test_evaluation_declines_what_the_adapter_itself_doubts(tmp_path: Path, make_adapter) -> None:
    path = _with_decline(make_adapter(tmp_path / "a", gate="adapter"), 0.0)
    report = evaluate(path, QUESTIONS, baselines=(), max_new_tokens=6, batch_size=8)
    assert [i.route for i in report.items] == ["abstain"] * len(QUESTIONS)
    _with_decline(path, None)
    report = evaluate(path, QUESTIONS, baselines=(), max_new_tokens=6, batch_size=8)
    assert [i.route for i in report.items] == ["adapter"] * len(QUESTIONS)


def test_declined_questions_are_scored_as_abstentions(tmp_path: Path, make_adapter) -> None:
    path = make_adapter(tmp_path / "a", gate="abstain")
    report = evaluate(path, QUESTIONS[1:2], baselines=(), max_new_tokens=6, batch_size=8)
    assert report.items[0].route == "abstain" and report.abstention_rate == 1.0


def test_gate_declined_scores_conversations_only_with_a_threshold(tiny_model) -> None:
    import torch

    from andraeus_core.gate import decline_probabilities, render_prompts

    tok, model = tiny_model.tokenizer, tiny_model.model
    conversations = [[{"role": "user", "content": q}] for q in ("Hi?", "What's my sister's name?", "And my cousin's?")]
    probabilities = decline_probabilities(model, tok, render_prompts(tok, conversations))
    gate = constant_gate("adapter", 1, 1)
    # a threshold between the probabilities declines exactly those at or above it, as chat and evaluation read it
    middle = sorted(probabilities)[1]
    gate.meta = gate.meta.model_copy(update={"threshold_decline": middle})
    assert gate.declined(model, tok, conversations) == [p >= middle for p in probabilities]
    assert sum(gate.declined(model, tok, conversations)) == 2

    # no threshold (a gate from before the check, a family's): nothing is declined and the model is not run
    class Untouchable(torch.nn.Module):
        def forward(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("the adapter was run without a decline threshold")

    gate.meta = gate.meta.model_copy(update={"threshold_decline": None})
    assert gate.declined(Untouchable(), tok, conversations) == [False, False, False]
    assert gate.declined(model, tok, []) == []
