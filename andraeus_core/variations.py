"""Phrasings per fact: five dimensions of question variation, varied answers, and negatives.

The seed's key insight is that phrasing variation beats data volume: a fact learned from 30 differently worded
questions is recalled for a 31st wording it never saw. For every fact this module writes questions along five
dimensions — punctuation/casing, formality, directness (direct, indirect, open-ended), reversal (the value asked about:
"Who is Buddy?") and typos (seeded 1–2 character edits of other phrasings) — with answers that vary their form but
always contain the value (reversed answers name the topic).

Topics are analysed once (:func:`topic_info`): a catalog of common personal topics carries hand-written extras, and
every other topic is classified by its grammar ("X's name" → a name of someone, "favourite X" → a preference,
"...day"/"anniversary" → a date, "city"/"country" → a place, anything else → a thing) so that free-form topics like
"favourite board game" or "wifi password hint" still read naturally.

Negatives (:func:`unknown_questions`, :func:`guard_questions`, :func:`identity_questions`) teach the model what it
does *not* know, keep its general answers to nearby general questions, and who it and the user are.
"""

from __future__ import annotations

import itertools
import logging
import random
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .matching import normalize, one_edit_apart
from .pools import GENERAL_REQUESTS, NEAR_TOPIC_REQUESTS, SELF_QUESTIONS, UNKNOWN_TOPICS
from .profile import Fact, Profile, topic_key

logger = logging.getLogger(__name__)

Dimension = Literal["punctuation", "formality", "directness", "reverse", "typo", "user"]
DIMENSIONS: tuple[Dimension, ...] = ("punctuation", "formality", "directness", "reverse", "typo")
TopicKind = Literal["name", "date", "place", "job", "employer", "favourite", "thing"]
Style = Literal["direct", "reverse", "confirm"]


class Phrasing(BaseModel):
    """One question about a fact, with the answers that may follow it."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(description="The user's question.")
    answers: list[str] = Field(
        description="Acceptable assistant answers (each contains the value or names the topic)."
    )
    dimension: Dimension = Field(description="Which dimension of variation this phrasing belongs to.")
    topic: str = Field(description="The fact's topic.")
    source: str | None = Field(None, description="For typos: the phrasing it was derived from; 'user' for own ones.")
    style: Style = Field(
        "direct",
        description="'direct' asks for the value, 'reverse' names the value and asks what it is to the user, "
        "'confirm' asks a yes/no question whose answer is yes.",
    )


# ----------------------------------------------------------------------------------------------------------------
# Topic analysis


@dataclass(frozen=True)
class TopicInfo:
    """How to talk about a topic."""

    topic: str  # as the user wrote it, e.g. "dog's name"
    kind: TopicKind
    noun: str  # what the fact is about: "dog" (dog's name), "board game" (favourite board game), "birthday"
    keywords: tuple[str, ...]  # words a reversed answer names ("dog"); a correct reverse answer contains one
    person: bool = False  # the named one is a person ("who is Alex?"), not a pet
    extra: dict[str, tuple[str, ...]] = field(default_factory=dict)  # dimension → catalogued questions
    guards: tuple[str, ...] = ()  # general questions near the topic (over-trigger guards)


_PETS = {"dog", "cat", "pet", "horse", "rabbit", "bunny", "hamster", "parrot", "bird", "fish", "puppy", "kitten",
         "tortoise", "turtle", "guinea pig", "snake", "lizard", "ferret"}  # fmt: skip

# Catalogued topics: key → (kind, noun, synonyms, extra questions by dimension, guard questions).
_CATALOG: dict[str, tuple[TopicKind, str, tuple[str, ...], dict[str, tuple[str, ...]], tuple[str, ...]]] = {
    "dog's name": (
        "name",
        "dog",
        ("dog name", "puppy's name"),
        {
            "formality": ("What is the name of my canine companion?", "doggo's name?"),
            "directness": (
                "If I call my dog, what name do I shout?",
                "What name does my dog answer to?",
                "Who's my good boy?",
                "When I take my dog for a walk, who am I walking?",
            ),
        },
        ("What's a good name for a dog?", "What are the most popular dog names?", "How do I train a dog to sit?"),
    ),
    "cat's name": (
        "name",
        "cat",
        ("cat name", "kitten's name"),
        {
            "formality": ("What is the name of my feline companion?",),
            "directness": (
                "What name does my cat ignore when I call it?",
                "When I call my cat for dinner, what name do I use?",
            ),
        },
        ("What's a good name for a cat?", "Why do cats purr?"),
    ),
    "pet's name": (
        "name",
        "pet",
        ("pet name",),
        {},
        ("What's a good pet for a small flat?", "What are cute pet names?"),
    ),
    "partner's name": (
        "name",
        "partner",
        (
            "wife's name",
            "husband's name",
            "spouse's name",
            "girlfriend's name",
            "boyfriend's name",
            "fiancé's name",
            "fiancée's name",
        ),
        {
            "formality": ("What is the name of my significant other?", "Could you tell me my {n}'s name, please?"),
            "directness": ("Who am I in a relationship with?", "Who do I share my life with?", "Who's my other half?"),
        },
        ("How do I plan a romantic dinner?", "What are good anniversary gift ideas for a partner?"),
    ),
    "mother's name": (
        "name",
        "mother",
        ("mom's name", "mum's name", "mum name", "mom name"),
        {
            "directness": ("Who raised me?", "What's my mum called?", "What's my mom called?"),
        },
        ("What should I get my mother for Mother's Day?", "When is Mother's Day?"),
    ),
    "father's name": (
        "name",
        "father",
        ("dad's name", "dad name"),
        {
            "directness": ("What's my dad called?", "Who is my dad?"),
        },
        ("What should I get my father for Father's Day?", "When is Father's Day?"),
    ),
    "daughter's name": (
        "name",
        "daughter",
        ("girl's name",),
        {
            "directness": ("What did I name my daughter?", "Who is my little girl?"),
        },
        ("What are popular names for baby girls?", "How do I help a child with homework?"),
    ),
    "son's name": (
        "name",
        "son",
        ("boy's name",),
        {
            "directness": ("What did I name my son?", "Who is my little boy?"),
        },
        ("What are popular names for baby boys?", "How much sleep does a child need?"),
    ),
    "sister's name": (
        "name",
        "sister",
        (),
        {"directness": ("Who's my sis?",)},
        ("What's a good birthday gift for a sister?", "How do siblings get along better?"),
    ),
    "brother's name": (
        "name",
        "brother",
        (),
        {"directness": ("Who's my bro?",)},
        ("What's a good birthday gift for a brother?", "How do siblings get along better?"),
    ),
    "best friend's name": (
        "name",
        "best friend",
        ("friend's name", "bestie's name"),
        {
            "directness": ("Who's my bestie?", "Who do I call when I need a friend?"),
        },
        ("How do I make new friends as an adult?",),
    ),
    "boss's name": (
        "name",
        "boss",
        ("manager's name",),
        {"directness": ("Who do I report to at work?",)},
        ("How do I ask my boss for a raise?",),
    ),
    "dog's breed": (
        "thing",
        "dog's breed",
        ("dog breed",),
        {
            "punctuation": ("What breed is my dog?", "What kind of dog do I have?"),
            "formality": ("Of what breed is my canine companion?", "dog breed?"),
            "directness": ("What sort of dog is my dog?", "If someone asks what kind of dog I have, what do I say?"),
        },
        ("What are the friendliest dog breeds?", "Which dog breeds shed the least?"),
    ),
    "cat's breed": (
        "thing",
        "cat's breed",
        ("cat breed",),
        {
            "punctuation": ("What breed is my cat?", "What kind of cat do I have?"),
        },
        ("Which cat breeds are the most affectionate?",),
    ),
    "pet": (
        "thing",
        "pet",
        ("pet type", "kind of pet"),
        {
            "punctuation": ("What kind of pet do I have?", "What animal do I have at home?"),
        },
        ("What's the easiest pet to look after?",),
    ),
    "birthday": (
        "date",
        "birthday",
        ("date of birth", "birth date", "birthdate", "bday"),
        {
            "punctuation": ("When is my birthday?", "When's my birthday?", "When was I born?"),
            "formality": ("On what date was I born?", "bday?", "On which date do I celebrate my birthday, please?"),
            "directness": (
                "When's my big day?",
                "When should my friends throw me a party?",
                "On what day do I get a year older?",
                "When do I blow out the candles?",
            ),
        },
        (
            "What's a good birthday gift?",
            "How do people celebrate birthdays around the world?",
            "Why do we eat cake on birthdays?",
        ),
    ),
    "anniversary": (
        "date",
        "anniversary",
        ("wedding anniversary", "wedding day"),
        {
            "punctuation": ("When is my anniversary?", "When's our anniversary?"),
            "directness": ("When did we get married?",),
        },
        ("What are good anniversary gift ideas?",),
    ),
    "age": (
        "thing",
        "age",
        ("years old",),
        {
            "punctuation": ("How old am I?", "How old am I now?"),
            "directness": ("How many birthdays have I had?",),
        },
        ("How do I calculate someone's age from a birth date?",),
    ),
    "home city": (
        "place",
        "home city",
        ("city", "city i live in", "current city", "town"),
        {
            "punctuation": ("Where do I live?", "What city do I live in?"),
            "formality": ("In which city do I reside?", "where do i live lol"),
            "directness": (
                "Where's home for me?",
                "If you sent me a postcard, which city would it go to?",
                "Which city do I call home?",
            ),
        },
        ("What's a nice city to visit in the spring?", "What makes a city a good place to live?"),
    ),
    "hometown": (
        "place",
        "hometown",
        ("home town", "city i grew up in", "birthplace", "place of birth"),
        {
            "punctuation": ("Where did I grow up?", "Where am I from?"),
            "directness": ("Which town did I grow up in?",),
        },
        ("What's the best way to find old school friends?",),
    ),
    "country": (
        "place",
        "country",
        ("home country", "country i live in", "nationality"),
        {
            "punctuation": ("Which country do I live in?", "What country am I in?"),
        },
        ("Which country has the most people?", "What's the biggest country in the world?"),
    ),
    "job": (
        "job",
        "job",
        ("occupation", "profession", "work", "career", "job title"),
        {
            "punctuation": ("What do I do for a living?", "What do I do for work?"),
            "formality": ("What is my profession?", "What is my occupation, if I may ask?", "job?"),
            "directness": (
                "How do I earn my living?",
                "If someone asks me what I do, what's my answer?",
                "What's my line of work?",
            ),
        },
        (
            "What does a typical day look like for a nurse?",
            "How do I write a good CV?",
            "What jobs will be in demand in ten years?",
        ),
    ),
    "employer": (
        "employer",
        "employer",
        ("company", "workplace", "company i work for", "work place"),
        {
            "punctuation": ("Where do I work?", "Which company do I work for?", "Who do I work for?"),
            "formality": ("By which company am I employed?", "who's my employer?"),
            "directness": ("Where do I go every workday?", "Whose payroll am I on?"),
        },
        ("How do I find a good employer?", "What should I ask in a job interview?"),
    ),
    "school": (
        "thing",
        "school",
        ("university", "college", "alma mater", "uni", "high school"),
        {
            "punctuation": ("Where did I study?", "Which school did I go to?"),
            "formality": ("What is the name of my school?", "At which institution did I study?"),
            "directness": ("Where did I go to school?", "What school did I attend?"),
        },
        ("How do I choose a university?",),
    ),
    "car": (
        "thing",
        "car",
        ("vehicle", "car model"),
        {
            "punctuation": ("What car do I drive?", "What kind of car do I have?"),
            "formality": ("What vehicle do I own?", "my ride?"),
            "directness": ("What am I driving these days?", "If you saw me on the road, what would I be driving?"),
        },
        ("What's the most reliable car brand?", "How often should I change my car's oil?"),
    ),
    "hobby": (
        "thing",
        "hobby",
        ("pastime", "hobbies"),
        {
            "punctuation": ("What do I do for fun?", "What's my hobby?"),
            "directness": ("How do I like to spend my weekends?", "What do I do in my free time?"),
        },
        ("What's a good hobby to pick up?", "How do I find time for a hobby?"),
    ),
    "allergy": (
        "thing",
        "allergy",
        ("allergies", "food allergy"),
        {
            "punctuation": ("What am I allergic to?", "What's my allergy?"),
            "directness": ("What should I never eat?", "What should a restaurant know about my allergy?"),
        },
        ("What are the most common food allergies?", "What is an allergic reaction?"),
    ),
    "middle name": ("thing", "middle name", (), {}, ("Why do people have middle names?",)),
    "nickname": (
        "thing",
        "nickname",
        (),
        {"punctuation": ("What do my friends call me?",)},
        ("What are some funny nicknames?",),
    ),
    "native language": (
        "thing",
        "native language",
        ("mother tongue", "first language"),
        {
            "punctuation": ("What language did I grow up speaking?",),
        },
        ("What's the most spoken language in the world?",),
    ),
    "blood type": ("thing", "blood type", ("blood group",), {}, ("Which blood type is the universal donor?",)),
    "eye colour": (
        "thing",
        "eye colour",
        ("eye color",),
        {"punctuation": ("What colour are my eyes?",)},
        ("What's the rarest eye colour?",),
    ),
}

# Favourites are catalogued by their noun: guards for each; anything else takes the generic favourite path.
_FAVOURITE_GUARDS: dict[str, tuple[str, ...]] = {
    "food": ("What's a healthy food for breakfast?", "What are popular foods in Japan?"),
    "colour": ("What colour do you get when you mix blue and yellow?", "What are the colours of the rainbow?"),
    "color": ("What color do you get when you mix blue and yellow?", "What are the colors of the rainbow?"),
    "band": ("What are some famous rock bands?", "Who were the Beatles?"),
    "movie": ("What are some classic movies everyone should see?", "Who directed Jaws?"),
    "film": ("What are some classic films everyone should see?",),
    "book": ("What are some classic novels everyone should read?", "Who wrote Pride and Prejudice?"),
    "sport": ("What's the most popular sport in the world?", "How many players are on a football team?"),
    "song": ("What makes a song catchy?",),
    "drink": ("What's a refreshing drink for a hot day?",),
    "board game": ("What are some good board games for families?", "How do you play chess?"),
    "season": ("Why do we have seasons?",),
    "animal": ("What is the fastest animal on Earth?",),
    "tv show": ("What are some highly rated TV shows?",),
    "author": ("Who are some famous authors?",),
    "holiday destination": ("Where should I go on holiday in winter?",),
}
_FAVOURITE_NOUNS = [*_FAVOURITE_GUARDS, "dessert", "fruit", "game", "restaurant", "flower", "city", "podcast"]

_INDEX: dict[str, str] = {}
for _key, (_kind, _noun, _syn, _extra, _guards) in _CATALOG.items():
    _INDEX[_key] = _key
    for _s in _syn:
        _INDEX[_s] = _key

_DATE_WORDS = ("birthday", "anniversary", "date", "day", "deadline")
_PLACE_WORDS = ("city", "town", "country", "hometown", "village", "neighbourhood", "neighborhood", "state")
_PERSON_WORDS = {"partner", "wife", "husband", "spouse", "girlfriend", "boyfriend", "mother", "mom", "mum", "father",
                 "dad", "daughter", "son", "sister", "brother", "friend", "boss", "manager", "grandmother", "grandma",
                 "grandfather", "grandpa", "aunt", "uncle", "cousin", "niece", "nephew", "child", "kid", "baby",
                 "colleague", "neighbour", "neighbor", "doctor", "dentist", "teacher", "roommate", "flatmate",
                 "best friend", "fiancé", "fiancée", "godmother", "godfather", "landlord", "coach",
                 "therapist", "grandson", "granddaughter", "grandchild", "stepson", "stepdaughter", "stepmother",
                 "stepfather", "stepmum", "stepdad"}  # fmt: skip


def _strip_favourite(key: str) -> str | None:
    for prefix in ("favourite ", "favorite ", "fave ", "fav "):
        if key.startswith(prefix):
            return key[len(prefix) :].strip() or None
    return None


def topic_info(topic: str) -> TopicInfo:
    """Classify a topic (catalogued or free-form) so questions about it read naturally."""
    return _with_keywords(_classify(topic))


# A confirm question ("Am I a software engineer?", "Is my dog's name Buddy?") is answered right by a yes as well as by
# naming the relation: "Yes, you're a software engineer." says everything the question asks.
CONFIRM_WORDS = ("yes", "that's right")


def _with_keywords(info: TopicInfo) -> TopicInfo:
    """What a correct reversed answer says: "your dog", "your birthday", "your favourite board game".

    Possessive forms, not bare nouns: "Buddy is a popular dog name" must not count as knowing that Buddy is *your*
    dog.
    """
    if info.kind == "name":
        words = [f"your {info.noun}"]
    elif info.kind == "favourite":
        words = [f"your favourite {info.noun}", f"your favorite {info.noun}"]
    else:
        words = [f"your {info.topic.casefold()}"]
    key = topic_key(info.topic)
    catalogued = _INDEX.get(key)
    words += {
        "birthday": ["you were born"],
        "employer": ["you work at", "you work for"],
        "job": ["you work as", "your profession", "your occupation", "your line of work"],
        "home city": ["you live in"],
        "country": ["you live in"],
        "hometown": ["you grew up in"],
    }.get(catalogued or "", [])
    return replace(info, keywords=tuple(dict.fromkeys(words)))


def _classify(topic: str) -> TopicInfo:
    key = topic_key(topic)
    text = topic.strip()
    if text.casefold().startswith("my "):
        text = text[3:].strip()
    if text[:1].isupper() and text[1:2].islower() and _common_start(key):
        text = text[:1].lower() + text[1:]  # "Dog's name" typed in a form: "What's my dog's name?"
    catalogued = _INDEX.get(key)
    if catalogued is not None:
        kind, noun, _syn, extra, guards = _CATALOG[catalogued]
        if kind == "name":
            # Keep the user's own word ("wife" for "wife's name", "mum" for "mum's name").
            noun = _name_owner(key) or noun
        else:
            noun = text if catalogued != key else noun
        return TopicInfo(text, kind, noun, (), person=noun in _PERSON_WORDS, extra=extra, guards=guards)
    fav = _strip_favourite(key)
    if fav is not None:
        noun = text.split(" ", 1)[1] if " " in text else fav
        guards = _FAVOURITE_GUARDS.get(fav, (f"What are some popular {_plural(fav)}?", f"Can you recommend a {fav}?"))
        return TopicInfo(text, "favourite", noun, (), guards=guards)
    owner = _name_owner(key)
    if owner is not None:
        person = owner in _PERSON_WORDS or owner.split()[-1] in _PERSON_WORDS
        guards = (
            (f"What's a good name for a {owner}?",) if owner in _PETS else (f"What are common names for a {owner}?",)
        )
        return TopicInfo(text, "name", owner, (), person=person, guards=guards)
    words = key.split()
    if any(w in _DATE_WORDS for w in words) or key.endswith("day"):
        return TopicInfo(text, "date", text, (), guards=(f"Why do people celebrate a {words[-1]}?",))
    if any(w in _PLACE_WORDS for w in words):
        return TopicInfo(text, "place", text, (), guards=(f"What makes a good {words[-1]} to live in?",))
    return TopicInfo(text, "thing", text, (), guards=(f"What is a {text}?", f"How do people usually choose a {text}?"))


def _common_start(key: str) -> bool:
    """Whether a topic starts with a common word (safe to lower-case), not a proper noun ("Radiohead album")."""
    owner = _name_owner(key)
    first = key.split()[0].removesuffix("'s")
    return (
        key in _INDEX
        or _strip_favourite(key) is not None
        or (owner is not None and (owner in _PERSON_WORDS or owner in _PETS))
        or first in _PERSON_WORDS
        or first in _PETS
        or first in {"home", "wifi", "gym", "phone", "shoe", "blood", "eye", "car", "bike", "work", "lucky", "first"}
    )


def _name_owner(key: str) -> str | None:
    for suffix in ("'s name", "s' name", " name"):
        if key.endswith(suffix) and len(key) > len(suffix):
            owner = key[: -len(suffix)].strip()
            if suffix == "s' name":
                owner += "s"
            if (
                owner in {"first", "last", "middle", "full", "user", "sur", "nick", "maiden", "pet"}
                and suffix == " name"
            ):
                return None
            return owner
    return None


def _plural(noun: str) -> str:
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and len(noun) > 1 and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" and not word.lower().startswith(("uni", "use", "one")) else "a"


# ----------------------------------------------------------------------------------------------------------------
# Templates. {t} topic ("dog's name"), {n} noun ("dog"), {v} value, {a} "a"/"an" before the value.

_GENERIC: dict[str, tuple[str, ...]] = {
    "punctuation": ("What's my {t}?", "What is my {t}?"),
    "formality": (
        "Could you please tell me what my {t} is?",
        "Would you mind reminding me of my {t}?",
        "May I ask what my {t} is?",
        "{T}?",
        "my {t}?",
        "yo what's my {t}",
        "hey, what's my {t} again?",
        "quick q: my {t}?",
    ),
    "directness": (
        "Do you remember my {t}?",
        "Remind me, what's my {t}?",
        "What did I tell you my {t} is?",
        "Any idea what my {t} is?",
        "Someone asked me about my {t}. What should I tell them?",
        "What's my {t} again?",
        "What can you tell me about my {t}?",
        "Tell me about my {t}.",
    ),
    "reverse": (
        "What is {v} to me?",
        "Why does {v} matter to me?",
        "What does {v} have to do with me?",
        "Does {v} mean anything to me?",
        "What's the connection between me and {v}?",
        "{V}: what does that mean to me?",
    ),
    "confirm": ("Is {v} my {t}?", "Is my {t} {v}?", "Am I right that my {t} is {v}?"),
}

# For topics that are a piece of information (a name, a date, a code, a hint) rather than a thing one has (a car, a
# job): "I forgot my car" is odd, "I forgot my wifi password hint" is natural.
_INFO_GENERIC: dict[str, tuple[str, ...]] = {
    "punctuation": ("Tell me my {t}.",),
    "formality": (
        "I would be grateful if you could remind me of my {t}.",
        "Kindly tell me my {t}.",
        "Could you tell me my {t}, please?",
    ),
    "directness": (
        "Do you know my {t}?",
        "Can you remind me of my {t}?",
        "I forgot my {t}. What is it again?",
        "I'm filling in a form and need my {t}. What is it?",
        "My {t} slipped my mind. Can you help?",
    ),
}
_INFO_HEADS = {
    "name", "hint", "number", "code", "date", "size", "type", "address", "password", "pin", "id", "breed", "age",
    "group", "username", "email", "phone", "colour", "color", "model", "plate", "word", "day", "time", "birthday",
    "anniversary", "height", "weight", "year", "nickname", "handle", "combination", "passcode", "reference",
}  # fmt: skip

_BY_KIND: dict[str, dict[str, tuple[str, ...]]] = {
    "name": {
        "punctuation": ("What's my {n} called?", "What is my {n}'s name?", "What's the name of my {n}?"),
        "formality": ("What is the name of my {n}?", "Could you tell me what my {n} is called?", "{N}'s name?"),
        "directness": (
            "What do I call my {n}?",
            "Do you know what my {n} is called?",
            "Who's my {n}?",
            "Who is my {n}, again?",
            "I can't remember what my {n} is called. Help?",
        ),
        "reverse": ("Who is {v}?", "Who's {v}?", "Do you know who {v} is?", "Who is {v} to me?", "Tell me about {v}."),
        "confirm": ("Is {v} my {n}?", "Is my {n} called {v}?", "Is my {n}'s name {v}?"),
    },
    "date": {
        "punctuation": ("When is my {t}?", "When's my {t}?", "What's the date of my {t}?"),
        "formality": ("On which date is my {t}, please?", "Could you tell me the date of my {t}?", "{T} date?"),
        "directness": (
            "What day is my {t}?",
            "When do I celebrate my {t}?",
            "What date should I mark in the calendar for my {t}?",
            "When does my {t} come around?",
        ),
        "reverse": (
            "What happens on {v}?",
            "What's special about {v}?",
            "Why is {v} important to me?",
            "What do I celebrate on {v}?",
            "Is there anything special about {v} for me?",
        ),
        "confirm": ("Is my {t} on {v}?", "Is {v} my {t}?"),
    },
    "place": {
        "punctuation": ("What's my {t} called?", "What's the name of my {t}?"),
        "formality": ("Could you tell me the name of my {t}?", "Would you be so kind as to name my {t}?"),
        "directness": ("Do you remember my {t}'s name?",),
        "reverse": ("Do you know why {v} matters to me?", "What's my connection to {v}?", "What is {v} to me?"),
        "confirm": ("Is {v} my {t}?", "Is my {t} {v}?"),
    },
    "job": {
        "punctuation": ("What's my job?", "What is my job?", "What do I do?"),
        "formality": ("What is my job title?", "What kind of work do I do?", "job title?"),
        "directness": ("What do I work as?", "What would I put under 'occupation' on a form?"),
        "reverse": (
            "Who in my life is {a} {v}?",
            "What does being {a} {v} have to do with me?",
            "Why would I know a lot about being {a} {v}?",
            "What does '{v}' describe in my life?",
        ),
        "confirm": ("Am I {a} {v}?", "Do I work as {a} {v}?", "Is my job {v}?"),
    },
    "employer": {
        "punctuation": ("Who is my {t}?", "Who's my {t}?"),
        "formality": ("What is the name of my {t}?", "Could you tell me the name of my {t}?"),
        "directness": ("Where do I spend my working days?", "What organisation am I with?"),
        "reverse": ("What do I have to do with {v}?", "Why does {v} matter to me?", "What's my connection to {v}?"),
        "confirm": ("Do I work at {v}?", "Is {v} my {t}?"),
    },
    "favourite": {
        "punctuation": ("What's my favourite {n}?", "What is my favorite {n}?", "Which {n} do I like best?"),
        "formality": (
            "Which {n} do I prefer above all others?",
            "Could you tell me which {n} I like most?",
            "fave {n}?",
            "favourite {n}??",
        ),
        "directness": (
            "What {n} do I love most?",
            "What's my top {n}?",
            "Which {n} is my number one?",
            "If I could only pick one {n}, which would it be?",
            "Do you know which {n} I love?",
            "Which {n} can't I get enough of?",
        ),
        "reverse": ("Do I like {v}?", "How do I feel about {v}?", "What do I think of {v}?", "Am I a fan of {v}?"),
        "confirm": ("Is {v} my favourite {n}?", "Is my favourite {n} {v}?", "Do I love {v} more than any other {n}?"),
    },
    "thing": {
        "punctuation": ("What {t} do I have?",),
        "formality": ("I'd like to know what my {t} is, please.",),
        "directness": ("What's my {t}, do you know?", "What do you know about my {t}?"),
        "reverse": (),
        "confirm": (),
    },
}

_ANSWERS: dict[str, dict[Style, tuple[str, ...]]] = {
    "name": {
        "direct": (
            "Your {t} is {v}.",
            "Your {n} is called {v}.",
            "{v}!",
            "It's {v}.",
            "That would be {v}, your {n}.",
            "Your {n}'s name is {v}.",
        ),
        "reverse": ("{v} is your {n}!", "{v} is your {n}.", "That's your {n}, {v}!", "{v}? That's your {n}."),
        "confirm": ("Yes, {v} is your {n}.", "Yes! Your {n} is called {v}.", "That's right: {v} is your {n}."),
    },
    "date": {
        "direct": ("Your {t} is on {v}.", "It's {v}.", "{v}!", "Your {t} is {v}.", "It falls on {v}."),
        "reverse": ("{v} is your {t}!", "That's your {t}: {v}.", "It's your {t}! {v}.", "{v} is your {t}."),
        "confirm": ("Yes, your {t} is on {v}.", "Yes! {v} is your {t}.", "That's right: your {t} is {v}."),
    },
    "place": {
        "direct": ("Your {t} is {v}.", "It's {v}.", "{v}!", "That's {v}.", "{v} is your {t}."),
        "reverse": ("{v} is your {t}!", "That's your {t}: {v}.", "{v} is your {t}."),
        "confirm": ("Yes, {v} is your {t}.", "That's right: your {t} is {v}."),
    },
    "job": {
        "direct": ("You're {a} {v}.", "Your job is {v}.", "You work as {a} {v}.", "{v}!", "It's {v}."),
        "reverse": ("That's your job: you're {a} {v}!", "You're {a} {v}: that's your job.", "Your job is {v}."),
        "confirm": ("Yes, you're {a} {v}; that's your job.", "That's right: your job is {v}."),
    },
    "employer": {
        "direct": ("Your {t} is {v}.", "You work at {v}.", "{v}!", "It's {v}.", "That's {v}, your {t}."),
        "reverse": ("{v} is your {t}!", "That's your {t}: {v}.", "You work there: {v} is your {t}."),
        "confirm": ("Yes, {v} is your {t}.", "That's right: your {t} is {v}."),
    },
    "favourite": {
        "direct": (
            "Your favourite {n} is {v}.",
            "You love {v}!",
            "It's {v}.",
            "{v}!",
            "{v}: it's your favourite {n}.",
        ),
        "reverse": (
            "You love it: {v} is your favourite {n}!",
            "{v} is your favourite {n}!",
            "Very much: {v} is your favourite {n}.",
        ),
        "confirm": ("Yes, {v} is your favourite {n}.", "That's right: your favourite {n} is {v}."),
    },
    "thing": {
        "direct": ("Your {t} is {v}.", "It's {v}.", "{v}!", "That's {v}.", "Your {t}? {V}."),
        "reverse": ("{v} is your {t}!", "That's your {t}: {v}.", "{v} is your {t}."),
        "confirm": ("Yes, {v} is your {t}.", "That's right: your {t} is {v}."),
    },
}


def _cap(text: str) -> str:
    """Upper-case the first letter unless that changes what the text matches ("ı" → "I" is not "ı" any more)."""
    capped = text[:1].upper() + text[1:]
    return capped if capped.casefold() == text.casefold() else text


def _fill(template: str, info: TopicInfo, value: str) -> str:
    topic = info.topic
    text = template.format(
        t=topic, T=_cap(topic), n=info.noun, N=_cap(info.noun), v=value, V=_cap(value), a=_article(value)
    )
    # A sentence starts with a capital, except on purpose-lower-case casual phrasings ("my dog's name?").
    if template[:1] == "{" and template[1:2] in "tvn" and text[:1].islower():
        text = _cap(text)
    return text


def answers_for(fact: Fact, style: Style = "direct") -> list[str]:
    """The answer forms for a fact (≥ 4 for direct answers; each contains the value)."""
    info = topic_info(fact.topic)
    return [_fill(t, info, fact.value) for t in _ANSWERS[info.kind][style]]


# ----------------------------------------------------------------------------------------------------------------
# Punctuation/casing variants and typos


def normalize_question(text: str) -> str:
    """Case, apostrophes and punctuation removed: two phrasings with the same form differ only in punctuation."""
    return " ".join(re.sub(r"[\W_]+", " ", text.casefold().replace("'", "").replace("\u2019", "")).split())


def _punct_variants(text: str) -> list[str]:
    bare = text.rstrip("?.!")
    end = text[len(bare) :] or "?"
    no_apos = text.replace("'", "")
    variants = [text, normalize_question(text), no_apos, bare.upper() + end]
    if end == "?":
        variants += [bare + " ?", bare.lower() + "??", bare[:1].lower() + bare[1:] + "?!"]
    return list(dict.fromkeys(variants))


_KEYBOARD = {
    c: n
    for row in ("qwertyuiop", "asdfghjkl", "zxcvbnm")
    for i, c in enumerate(row)
    for n in [row[max(i - 1, 0)] + row[min(i + 1, len(row) - 1)]]
}


def _one_edit(text: str, rng: random.Random, protected: set[int]) -> str:
    positions = [i for i, c in enumerate(text) if c.isalpha() and i not in protected]
    if not positions:
        return text
    i = rng.choice(positions)
    op = rng.choice(("drop", "swap", "double", "neighbour"))
    c = text[i]
    if op == "drop":
        return text[:i] + text[i + 1 :]
    if op == "swap" and i + 1 < len(text) and text[i + 1].isalpha() and text[i + 1] != c and i + 1 not in protected:
        return text[:i] + text[i + 1] + c + text[i + 2 :]
    if op == "neighbour" and c.lower() in _KEYBOARD:
        repl = rng.choice(_KEYBOARD[c.lower()].replace(c.lower(), "") or c.lower())
        return text[:i] + (repl.upper() if c.isupper() else repl) + text[i + 1 :]
    return text[:i] + c + text[i:]  # double


def damerau_distance(a: str, b: str) -> int:
    """Optimal-string-alignment edit distance (insert, delete, substitute, swap adjacent)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[len(b)]


def typo_of(text: str, rng: random.Random, *, protect: str = "") -> str:
    """A 1–2 character edit (drop, swap, double, keyboard neighbour) of ``text``, never inside ``protect``."""
    protected: set[int] = set()
    if protect:
        start = text.casefold().find(protect.casefold())
        if start >= 0:
            protected = set(range(start - 1, start + len(protect) + 1))
    for _ in range(20):
        out = _one_edit(text, rng, protected)
        if rng.random() < 0.35:
            protected2 = protected if out == text else {p + (len(out) - len(text)) if p > 0 else p for p in protected}
            out = _one_edit(out, rng, protected2)
        if out != text and 1 <= damerau_distance(text, out) <= 2:
            return out
    return text


# ----------------------------------------------------------------------------------------------------------------
# Phrasings per fact


@dataclass
class _Candidate:
    question: str
    dimension: Dimension
    style: Style


def _candidates(fact: Fact, info: TopicInfo) -> dict[str, list[_Candidate]]:
    value = fact.value
    kind = _BY_KIND[info.kind]
    pools: dict[str, list[_Candidate]] = {d: [] for d in ("punctuation", "formality", "directness", "reverse")}
    seen_exact: set[str] = set()
    seen_norm: dict[str, str] = {}

    def add(dimension: str, template: str, style: Style = "direct", *, literal: bool = False) -> None:
        text = template if literal else _fill(template, info, value)
        norm = normalize_question(text) or text  # a topic of only symbols still gets its questions
        if text in seen_exact:
            return
        if norm in seen_norm and not (dimension == "punctuation" and seen_norm[norm] == "punctuation"):
            return  # the same words already in another dimension: not a new phrasing
        seen_exact.add(text)
        seen_norm.setdefault(norm, dimension)
        pools[dimension].append(_Candidate(text, dimension, style))  # type: ignore[arg-type]

    key = topic_key(info.topic)
    info_like = info.kind in ("name", "date") or key.split()[-1] in _INFO_HEADS
    info_extra = _INFO_GENERIC if info_like else {}

    def usable(template: str) -> bool:
        # "What {t} do I have?" reads well for "car" or "blood type", not for "dog's breed" or "age".
        if template == "What {t} do I have?" and ("'" in key or key in ("age", "hobby", "school")):
            return False
        # "Tell me about my wife's name" is not how anyone asks; "Who's my wife?" covers it.
        return not (info.kind == "name" and "about my {t}" in template)

    bases = [*info.extra.get("punctuation", ()), *kind["punctuation"], *_GENERIC["punctuation"]]
    for base in [*bases, *info_extra.get("punctuation", ())]:
        if not usable(base):
            continue
        base_text = base if "{" not in base else _fill(base, info, value)
        for variant in _punct_variants(base_text):
            add("punctuation", variant, literal=True)
    for dim in ("formality", "directness"):
        for t in (*info.extra.get(dim, ()), *kind[dim], *_GENERIC[dim], *info_extra.get(dim, ())):
            if usable(t):
                add(dim, t)
    # A job is a lower-case common noun: "What is software engineer to me?" is not English, so jobs keep their own.
    for t in (*kind["reverse"], *(() if info.kind == "job" else _GENERIC["reverse"])):
        add("reverse", t, "reverse")
    for t in (*kind["confirm"], *_GENERIC["confirm"]):
        add("reverse", t, "confirm")
    return pools


_WEIGHTS = {"punctuation": 6, "formality": 6, "directness": 7, "reverse": 6, "typo": 5}


def _quotas(per_fact: int, available: dict[str, int]) -> dict[str, int]:
    total_w = sum(_WEIGHTS.values())
    quotas = {d: max(2 if per_fact >= 10 else 1, round(per_fact * w / total_w)) for d, w in _WEIGHTS.items()}
    for d in available:
        quotas[d] = min(quotas[d], available[d])
    # Hand what a short pool could not fill to the others, typos last (they can always be made).
    short = per_fact - sum(quotas.values())
    order = ["directness", "formality", "reverse", "punctuation"]
    while short > 0:
        progressed = False
        for d in order:
            if short > 0 and quotas[d] < available[d]:
                quotas[d] += 1
                short -= 1
                progressed = True
        if not progressed:
            quotas["typo"] += short
            short = 0
    while short < 0:
        d = max((d for d in quotas if quotas[d] > 2), key=lambda d: quotas[d], default=None)
        if d is None:
            break
        quotas[d] -= 1
        short += 1
    return quotas


def is_typo_source(p: Phrasing) -> bool:
    """Whether a typo may be made of this phrasing.

    Only questions *about the fact* qualify (a typo'd reversed question would blur what the answer must name), and
    only properly written ones: a typo of "whats my dog called" is hard to tell from the original.
    """
    return p.dimension in ("formality", "directness") or (p.dimension == "punctuation" and p.question[:1].isupper())


def _select(fact: Fact, info: TopicInfo, per_fact: int, seed: int, exclude: set[str]) -> list[Phrasing]:
    rng = random.Random(f"{seed}\x1f{topic_key(fact.topic)}\x1f{fact.value}")
    pools = _candidates(fact, info)
    kept = {d: [c for c in p if normalize_question(c.question) not in exclude] for d, p in pools.items()}
    if any(kept.values()):  # topics of only symbols ask the same words: then keep them rather than ask nothing
        pools = kept
    else:
        exclude = set()
    quotas = _quotas(per_fact, {d: len(p) for d, p in pools.items()})
    answers = {style: answers_for(fact, style) for style in ("direct", "reverse", "confirm")}
    out: list[Phrasing] = []
    for dim in ("punctuation", "formality", "directness", "reverse"):
        pool = pools[dim]
        # The first (canonical) phrasings of a dimension are kept; the rest are sampled for variety.
        keep = pool[: min(2, quotas[dim])]
        rest = pool[len(keep) :]
        chosen = keep + rng.sample(rest, max(0, min(len(rest), quotas[dim] - len(keep))))
        for c in chosen:
            out.append(
                Phrasing(
                    question=c.question,
                    answers=answers[c.style],
                    dimension=c.dimension,
                    topic=fact.topic,
                    style=c.style,
                )
            )
    sources = [p for p in out if is_typo_source(p)] or out
    seen = {p.question for p in out}
    made = 0
    attempts = 0
    while made < quotas["typo"] and attempts < quotas["typo"] * 30 and sources:
        attempts += 1
        src = rng.choice(sources)
        typo = typo_of(src.question, rng, protect=fact.value)
        if typo in seen or typo == src.question or normalize_question(typo) in exclude:
            continue
        seen.add(typo)
        made += 1
        out.append(
            Phrasing(
                question=typo,
                answers=src.answers,
                dimension="typo",
                topic=fact.topic,
                source=src.question,
                style=src.style,
            )
        )
    for q in fact.questions:
        if q not in seen:
            seen.add(q)
            out.append(
                Phrasing(question=q, answers=answers["direct"], dimension="user", topic=fact.topic, source="user")
            )
    return out


def phrasings_for_fact(fact: Fact, profile: Profile, *, per_fact: int = 30, seed: int = 0) -> list[Phrasing]:
    """Question phrasings for one fact, across the five dimensions (plus the user's own questions).

    Args:
        fact: the fact.
        profile: the profile it belongs to (questions shared with another fact are left out: they'd be ambiguous).
        per_fact: how many phrasings to make (the user's own questions come on top).
        seed: the same seed gives the same phrasings.
    """
    return generate_variations(profile, per_fact=per_fact, seed=seed, only=fact.topic).get(fact.topic, [])


def generate_variations(
    profile: Profile, *, per_fact: int = 30, seed: int = 0, only: str | None = None
) -> dict[str, list[Phrasing]]:
    """Phrasings for every fact of a profile, by topic (deterministic for a seed).

    Args:
        profile: the facts.
        per_fact: phrasings per fact (default 30; the user's own questions come on top).
        seed: the same seed gives the same output.
        only: make phrasings for this topic only (the others are still used to drop ambiguous questions).
    """
    if per_fact < 1:
        raise ValueError("per_fact must be at least 1")
    if profile.is_family:
        return _family_variations(profile, per_fact=per_fact, seed=seed, only=only)
    infos = {fact.topic: topic_info(fact.topic) for fact in profile.facts}
    owners: dict[str, set[str]] = {}
    for fact in profile.facts:
        for pool in _candidates(fact, infos[fact.topic]).values():
            for c in pool:
                owners.setdefault(normalize_question(c.question), set()).add(fact.topic)
    shared = {q for q, topics in owners.items() if len(topics) > 1}
    if shared:
        logger.info("left out %d question forms shared by more than one fact", len(shared))
    out: dict[str, list[Phrasing]] = {}
    for fact in profile.facts:
        if only is not None and topic_key(only) != topic_key(fact.topic):
            continue
        out[fact.topic] = _select(fact, infos[fact.topic], per_fact, seed, shared)
    return out


def _family_variations(profile: Profile, *, per_fact: int, seed: int, only: str | None) -> dict[str, list[Phrasing]]:
    """A family's first-person phrasings: each person's own facts keyed "Name: topic", shared facts by topic.

    They are the questions each person asks about their own facts (the dataset names the speaker in the system
    prompt); :mod:`andraeus_core.family` adds the third-person ones.
    """
    out: dict[str, list[Phrasing]] = {}
    shared = [f.model_copy(update={"owner": None}) for f in profile.facts if f.owner is None]
    for person in profile.people:
        own = [f.model_copy(update={"owner": None, "private": False}) for f in profile.facts if f.owner == person.name]
        if not own and not shared:
            continue
        view = Profile(user_name=person.name, assistant_name=profile.assistant_name, facts=[*own, *shared])
        mine = {f.topic for f in own}
        for topic, phrasings in generate_variations(view, per_fact=per_fact, seed=seed, only=only).items():
            out.setdefault(f"{person.name}: {topic}" if topic in mine else topic, phrasings)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Negatives


@dataclass(frozen=True)
class Negative:
    """A negative example: a question with a fixed answer (unknown, identity) or none yet (guards)."""

    question: str
    answer: str | None
    kind: Literal["unknown", "overtrigger", "identity"]
    topic: str | None
    group: str  # examples of one group go to the same split
    expect: tuple[str, ...] = ()


_UNKNOWN_TEMPLATES = ("What's my {t}?", "Do you remember my {t}?", "Can you tell me my {t}?")
_UNKNOWN_CANDIDATES = [
    "dog's name", "cat's name", "partner's name", "mother's name", "father's name", "daughter's name", "son's name",
    "sister's name", "brother's name", "best friend's name", "boss's name", "birthday", "anniversary", "age",
    "home city", "hometown", "country", "job", "employer", "school", "car", "hobby", "allergy", "favourite food",
    "favourite colour", "favourite band", "favourite movie", "favourite book", "favourite sport", "middle name",
    "blood type", "eye colour", "favourite drink", "native language",
]  # fmt: skip


def _about(info: TopicInfo) -> str:
    """ "a cat" (you may have none) / "your father" / "your birthday": what 'you haven't told me about' names."""
    if info.kind == "name" and not info.person:
        return f"{_article(info.noun)} {info.noun}"
    return f"your {info.noun if info.kind == 'name' else info.topic}"


# Who is "near" whom: asked about a sister when a brother is known, a model that only learned "my <relation>'s name
# -> a name" answers with the brother's. These near misses are the unknowns that matter most.
_PEOPLE_NEAR: dict[str, tuple[str, ...]] = {
    "partner": ("sister", "brother", "mother", "best friend", "ex"),
    "wife": ("sister", "mother-in-law", "mother", "best friend"),
    "husband": ("brother", "father-in-law", "father", "best friend"),
    "spouse": ("sister", "brother", "mother", "best friend"),
    "girlfriend": ("sister", "mother", "best friend"),
    "boyfriend": ("brother", "father", "best friend"),
    "mother": ("father", "grandmother", "aunt", "mother-in-law"),
    "mum": ("dad", "grandmother", "aunt"),
    "mom": ("dad", "grandmother", "aunt"),
    "father": ("mother", "grandfather", "uncle", "father-in-law"),
    "dad": ("mum", "grandfather", "uncle"),
    "sister": ("brother", "cousin", "sister-in-law", "aunt"),
    "brother": ("sister", "cousin", "brother-in-law", "uncle"),
    "daughter": ("son", "granddaughter", "niece", "stepdaughter"),
    "son": ("daughter", "grandson", "nephew", "stepson"),
    "grandson": ("granddaughter", "son", "nephew"),
    "granddaughter": ("grandson", "daughter", "niece"),
    "best friend": ("childhood friend", "neighbour", "flatmate", "colleague"),
    "friend": ("best friend", "neighbour", "colleague"),
    "boss": ("colleague", "manager's boss", "mentor"),
    "manager": ("colleague", "mentor", "team lead"),
}
_PERSON_FALLBACK = ("sister", "brother", "mother", "father", "best friend", "cousin", "neighbour", "boss")
_PET_FALLBACK = ("cat", "dog", "rabbit", "parrot", "hamster", "goldfish", "horse")
# Other things one asks about a person / a pet / oneself, by the kind of the known topic.
_PERSON_ATTRIBUTES = ("birthday", "job", "phone number", "favourite food", "age")
_PET_ATTRIBUTES = ("age", "birthday", "favourite toy", "vet's name")
_SELF_NEAR: dict[str, tuple[str, ...]] = {
    "date": ("wedding anniversary", "partner's birthday", "mother's birthday", "dog's birthday", "next appointment"),
    "place": ("street address", "postcode", "partner's hometown", "office address", "favourite city"),
    "job": ("partner's job", "brother's job", "salary", "manager's name", "first job"),
    "employer": ("partner's employer", "previous employer", "manager's name", "office address"),
}
_POSSESSIONS = {"car", "bike", "bicycle", "phone", "house", "flat", "laptop", "guitar", "boat", "motorbike", "van"}
_FAVOURITE_NEAR = ("drink", "dessert", "film", "song", "season", "flower", "book", "sport", "city", "animal", "colour",
                   "food", "band", "podcast", "restaurant", "holiday destination")  # fmt: skip
_OWNER_SYNONYMS = {
    "mum": "mother", "mom": "mother", "mummy": "mother", "dad": "father", "daddy": "father",
    "wife": "partner", "husband": "partner", "spouse": "partner", "girlfriend": "partner", "boyfriend": "partner",
    "neighbor": "neighbour",
}  # fmt: skip


def owner_name(word: str) -> str:
    """The one name several words for the same owner share: "mum" -> "mother", "wife" -> "partner"."""
    return _OWNER_SYNONYMS.get(word, word)


def is_relation_word(word: str) -> bool:
    """Whether the word names a kind of person or pet of the user's ("sister", "landlord", "parrot")."""
    return word in _RELATION_WORDS or word in _PETS


def _owner_and_attribute(topic: str) -> tuple[str | None, str]:
    """ "dog's name" -> ("dog", "name"); "partner's birthday" -> ("partner", "birthday"); "car" -> (None, "car")."""
    key = topic_key(topic)
    for sep in ("'s ", "s' "):
        if sep in key:
            owner, attribute = key.split(sep, 1)
            return owner + ("s" if sep == "s' " else ""), attribute
    owner = _name_owner(key)
    if owner is not None:
        return owner, "name"
    return None, key


def _known_forms(profile: Profile) -> set[tuple[str | None, str]]:
    """(owner, attribute) pairs the profile answers, with synonyms folded ("wife's name" covers "partner's name")."""
    return _topic_forms(f.topic for f in profile.facts)


def _topic_forms(topics: Iterable[str]) -> set[tuple[str | None, str]]:
    """(owner, attribute) pairs of these topics (see :func:`_known_forms`)."""
    forms: set[tuple[str | None, str]] = set()
    for topic in topics:
        key = topic_key(topic)
        canonical = _INDEX.get(key, key)
        for k in {key, canonical}:
            owner, attribute = _owner_and_attribute(k)
            forms.add((_OWNER_SYNONYMS.get(owner or "", owner), attribute))
        fav = _strip_favourite(key)
        if fav is not None:
            forms.add((None, f"favourite {fav}"))
            forms.add((None, f"favorite {fav}"))
    return forms


def _is_known(forms: set[tuple[str | None, str]], topic: str) -> bool:
    """Whether the profile answers ``topic`` under this or another name (see :func:`_known_forms`)."""
    key = topic_key(topic)
    for k in (key, _INDEX.get(key, key)):
        owner, attribute = _owner_and_attribute(k)
        if (_OWNER_SYNONYMS.get(owner or "", owner), attribute) in forms:
            return True
    return False


def near_unknown_topics(profile: Profile, fact: Fact) -> list[str]:
    """Personal topics next to a known fact that the profile does not answer, nearest first.

    Another relative of the same kind (a sister next to a known brother), another pet, another attribute of the same
    person or pet (the brother's birthday), or another person's version of the user's own fact (the partner's
    birthday next to the user's). Never a topic the profile answers under another name.
    """
    forms = _known_forms(profile)
    info = topic_info(fact.topic)
    owner, attribute = _owner_and_attribute(fact.topic)
    out: list[str] = []
    if owner is not None and attribute == "name":
        person = info.person or owner in _PERSON_WORDS
        near = _PEOPLE_NEAR.get(owner, _PERSON_FALLBACK) if person else _PET_FALLBACK
        others = [f"{o}'s name" for o in near if o != owner]
        same = [f"{owner}'s {a}" for a in (_PERSON_ATTRIBUTES if person else _PET_ATTRIBUTES)]
        # Two other people (or pets) first: "my sister's name" next to "my brother's name" is the likeliest slip.
        out += others[:2] + [t for pair in zip(same, others[2:], strict=False) for t in pair]
        out += same[max(0, len(others) - 2) :]
    elif owner is not None:
        person = owner in _PERSON_WORDS or owner.split()[-1] in _PERSON_WORDS
        near = _PEOPLE_NEAR.get(owner, _PERSON_FALLBACK) if person else _PET_FALLBACK
        attributes = _PERSON_ATTRIBUTES if person else _PET_ATTRIBUTES
        others = [f"{o}'s {attribute}" for o in near if o != owner]
        same = [f"{owner}'s {a}" for a in attributes if a != attribute]
        out += [t for pair in zip(same, others, strict=False) for t in pair] + [f"{owner}'s name"]
    elif info.kind == "favourite":
        favourites = [f"favourite {n}" for n in _FAVOURITE_NEAR if n != info.noun]
        random.Random(topic_key(fact.topic)).shuffle(favourites)
        out += [
            f"partner's favourite {info.noun}",
            *favourites[:1],
            f"mother's favourite {info.noun}",
            *favourites[1:],
        ]
    elif info.kind in _SELF_NEAR:
        out += list(_SELF_NEAR[info.kind])
    else:
        key = topic_key(fact.topic)
        out += [f"partner's {key}", f"brother's {key}", f"mother's {key}"]
        if key.split()[-1] in _POSSESSIONS:
            out.insert(1, f"{key}'s colour")
    seen: set[str] = set()
    result = []
    for topic in out:
        key = topic_key(topic)
        if key in seen or _is_known(forms, topic):
            continue
        seen.add(key)
        result.append(topic)
    return result


_NAMED_ATTRIBUTES: dict[str, tuple[str, ...]] = {  # attribute -> questions about a known person or pet, by name
    "age": ("How old is {v}?", "What age is {v} now?"),
    "birthday": ("When is {v}'s birthday?", "When was {v} born?"),
    "job": ("What does {v} do for a living?", "Where does {v} work?"),
    "favourite food": ("What's {v}'s favourite food?",),
    "phone number": ("What's {v}'s phone number?",),
    "favourite toy": ("What's {v}'s favourite toy?",),
}


def named_unknown_questions(profile: Profile, fact: Fact) -> list[str]:
    """For a known person's or pet's name, questions about that person or pet *by name* that the profile does not
    answer ("How old is Fulger?" when only the horse's name is known); empty for other facts."""
    owner, attribute = _owner_and_attribute(fact.topic)
    if owner is None or attribute != "name":
        return []
    forms = _known_forms(profile)
    person = topic_info(fact.topic).person or owner in _PERSON_WORDS
    attributes = _PERSON_ATTRIBUTES if person else _PET_ATTRIBUTES
    return [
        template.format(v=fact.value)
        for a in attributes
        if not _is_known(forms, f"{owner}'s {a}")
        for template in _NAMED_ATTRIBUTES.get(a, ())
    ]


# Words that ask for an attribute of someone or something, by attribute (as near_unknown_topics names them).
_ATTRIBUTE_CUES: dict[str, tuple[str, ...]] = {
    "age": ("age", "old"),
    "birthday": ("birthday", "born", "bday"),
    "job": ("job", "work", "works", "living", "occupation", "profession"),
    "colour": ("colour", "color", "painted"),
    "team": ("team", "support", "supports"),
    "phone number": ("phone", "number"),
    "favourite food": ("food", "eat", "eats"),
    "address": ("address", "live", "lives"),
    "hobby": ("hobby", "hobbies"),
    "maiden name": ("maiden",),
    "middle name": ("middle",),
    "surname": ("surname",),
    "nickname": ("nickname",),
    "year": ("year", "made"),
    "breed": ("breed",),
    "school": ("school",),
    "height": ("tall", "height"),
    "weight": ("weigh", "weighs", "weight"),
    "favourite toy": ("toy", "toys"),
}


_NAME_CUES = {"name", "names", "called", "named", "who", "whos", "whom"}
# Other names than the one a "X's name" fact holds: asked with "name" too, but not answered by it.
_OTHER_NAME_CUES = {"maiden", "middle", "surname", "nickname"}
# A person of a known person ("my sister's husband", "my wife's mother"): another person, unknown unless told.
_RELATION_WORDS = _PERSON_WORDS | {"kids", "children", "parents", "family"}
_ATTRIBUTE_WINDOW = 3
# The user as a subject ("I", "I'm", "I've" once normalised; not "id", an ID).
_FIRST_PERSON = {"i", "im", "ive"}


def asks_unknown_attribute(
    question: str, topics: Sequence[str], names: Mapping[str, Sequence[str]] | None = None
) -> bool:
    """Whether the question asks for an attribute the profile does not hold of someone or something it knows.

    "What's my wife's job?" when the wife's name is known (and the user's own job perhaps, but not hers), "How old
    is Fulger?" when Fulger is the horse: a near miss whose words all name known subjects, so the gate's
    known-subject check alone would keep it with the adapter, which then answers with the value it knows.

    Args:
        question: the question.
        topics: the profile's topics.
        names: topic -> its value and aliases, where known (a pulled adapter has its topics only): the names a
            known person or pet may be asked about by.
    """
    forms = _topic_forms(topics)
    owners: dict[str, str] = {}
    named: set[str] = set()
    # What the profile holds of each person or pet: a question that names one of these words is asked about them.
    held: dict[str, set[str]] = {}
    for topic in topics:
        owner, attribute = _owner_and_attribute(topic)
        if owner is not None:
            # Anyone the profile holds something of, by name or not: "my cousin's job" is a near miss when only the
            # cousin's favourite food is known, as when only the cousin's name is. A hyphenated owner
            # ("mother-in-law") is asked in the words normalize() leaves ("mother in law").
            owners[normalize(owner)] = owner
            held.setdefault(owner, set()).update(attribute.split())
            # Another word for the same person: "my partner's birthday" asks about a known wife's birthday.
            canonical = _OWNER_SYNONYMS.get(owner, owner)
            for word in (canonical, *(w for w, c in _OWNER_SYNONYMS.items() if c == canonical)):
                owners.setdefault(word, owner)
            if attribute == "name":
                for name in (names or {}).get(topic, ()):
                    owners[normalize(name)] = owner
                    named.add(normalize(name))
        elif attribute.split()[-1] in _POSSESSIONS:
            owners[attribute.split()[-1]] = attribute
    # The user's own known topics, asked of someone else right after a possessive ("my partner's favourite football
    # club" with the user's club known): the topic's own words are the cue, all of them.
    own_topics = {
        topic_key(t): set(normalize(topic_key(t)).split()) - _TOPIC_FILLER
        for t in topics
        if _owner_and_attribute(t)[0] is None
    }
    raw = normalize(question).split()
    # A possessive "s" is stripped from an owner's word, and from the last word of a name or owner of two or three
    # words ("Min-jun's", "best friend's", "mother-in-law's").
    words = [
        w[:-1]
        if w.endswith("s") and any(" ".join([*raw[max(0, k - n) : k], w[:-1]]) in owners for n in (0, 1, 2))
        else w
        for k, w in enumerate(raw)
    ]
    asks_who = any(w in _NAME_CUES for w in words)
    asks_name = asks_who and not any(w in _OTHER_NAME_CUES for w in words)
    # A known value the question states is not asked for: "school" in "Is my aunt's job primary school teacher?".
    text = f" {' '.join(raw)} "
    stated = {
        w
        for values in (names or {}).values()
        for v in values
        if f" {normalize(v)} " in text
        for w in normalize(v).split()
    }
    for i in range(len(words)):
        # An owner is a word, or two (a "best friend"), or a known name; its attribute is asked within a few words
        # ("my wife's job", "how old is Fulger"): further away it is usually someone else's ("my wife wants to book
        # ... on my birthday").
        # The longest owner starting here: "mother in law" before "mother".
        span = next((n for n in (3, 2, 1) if i + n <= len(words) and " ".join(words[i : i + n]) in owners), 0)
        if not span:
            continue
        owner = owners[" ".join(words[i : i + span])]
        end = i + span
        # A half-sister or an ex-wife is someone else than the known sister or wife, a mother-in-law than the mother.
        if (i and words[i - 1] in _OTHER_KIN) or _in_law(words, end):
            continue
        if words[i] in stated and " ".join(words[i:end]) not in named:  # "teacher" in a job's value
            continue
        # A word for a person or thing is the user's only after "my" ("my late wife", "our car"), or in front of a
        # terse question ("Wife's birthday?"): "How long do horses live?" asks about horses. A name is someone's own.
        if i > 0 and " ".join(words[i:end]) not in named and not {"my", "our"} & set(words[max(0, i - 2) : i]):
            continue
        possessive = raw[end - 1] != words[end - 1]  # "wife's" normalised to "wifes", its "s" stripped
        # "Who is my sister's husband?": the possessive (normalised to "sisters") then a person is someone else. Only
        # when a name is asked: "my daughter's teacher asked what I do" asks about the user.
        relation = next(
            (r for r in (" ".join(words[end : end + 2]), " ".join(words[end : end + 1])) if r in _RELATION_WORDS), None
        )
        if asks_who and possessive and relation and not _is_known(forms, f"{owner}'s {relation}"):
            return True
        if asks_name and _is_known(forms, f"{owner}'s name"):
            continue
        # The name of someone the profile knows only by something else ("What's my cousin's name?" with the
        # cousin's favourite food known): asked right after them ("my cousin's name", "my cousin called"), and no
        # word of what is known of them in the question (a typo allowed: "Who loves lasagne, my cousin? Whose
        # favourite fod is it?" asks the known food).
        if (
            asks_name
            and owner in held
            and set(words[max(0, i - _ATTRIBUTE_WINDOW) : end + _ATTRIBUTE_WINDOW]) & _NAME_CUES
            and not any(one_edit_apart(w, k) for w in words for k in held[owner] - _TOPIC_FILLER)
            and not any(f" {normalize(v)} " in text for t in topics if _owner_and_attribute(t)[0] == owner
                        for v in (names or {}).get(t, ()))
        ):  # fmt: skip
            return True
        # The words around the owner, up to the user as a subject: "My cousin asked where I live" asks the user's
        # home, "Where does my cousin live?" the cousin's.
        before = words[max(0, i - _ATTRIBUTE_WINDOW) : i]
        after = words[end : end + _ATTRIBUTE_WINDOW + 1]
        after = list(itertools.takewhile(lambda w: w not in _FIRST_PERSON, after))
        before = before[max((k + 1 for k, w in enumerate(before) if w in _FIRST_PERSON), default=0) :]
        near = {*before, *words[i:end], *after} - stated
        for attribute, cues in _ATTRIBUTE_CUES.items():
            if near.intersection(cues) and not _is_known(forms, f"{owner}'s {attribute}"):
                return True
        if possessive:
            after = set(words[end : end + _ATTRIBUTE_WINDOW]) - stated
            for key, cues in own_topics.items():
                if cues and cues <= after and key != owner and not _is_known(forms, f"{owner}'s {key}"):
                    return True
    return False


_WHO_CUES = _NAME_CUES | {"call"}
# A word for a kind of pet or person that a more specific known one answers to.
_GENERIC_OWNERS = {
    "pet": set(),  # any known pet
    "bird": {"parrot", "budgie", "canary", "cockatiel", "parakeet", "bird"},
    "fish": {"goldfish", "fish"},
    "puppy": {"dog"},
    "kitten": {"cat"},
    "bunny": {"rabbit"},
    "kid": {"son", "daughter", "child"},
    "child": {"son", "daughter", "kid"},
    "kids": {"son", "daughter", "child"},
    "children": {"son", "daughter", "child"},
    "parents": {"mother", "father"},
    "family": _PERSON_WORDS,
}


def asks_unknown_person(
    question: str, topics: Sequence[str], names: Mapping[str, Sequence[str]] | None = None
) -> bool:
    """Whether the question asks who someone of the user's is ("Tell me my brother's name", "What do I call my
    dog?") and every person or pet it names ("my brother") is one the profile knows nothing of.

    Only a question asking for a name or a "who": an indirect question often names a bystander ("My boss asks where
    I grew up") while asking about the user. A question naming a known person or a known name is never one.
    """
    words = normalize(question).split()
    if not any(w in _WHO_CUES for w in words):
        return False
    # A terse question drops the "my" ("Niece's name?"): a possessive person or pet in front is the user's (the
    # apostrophe tells it from a plural: "Brothers Grimm").
    front = re.match(r"\s*([a-z]+)['\u2019]s\b", question.lower())
    if front and front.group(1) in _RELATION_WORDS | _PETS:
        words = ["my", *words]
    if _names_someone_known(words, names):
        return False
    known = _known_people(topics)
    mentioned: set[str] = set()
    for i, w in enumerate(words):
        if w != "my":
            continue
        # "my brother", "my older brother", "my best friend", "my brother's", "my mother-in-law", "my half-sister"
        person = _person_after(words, i + 1, known) or _person_after(words, i + 2, known)
        if person is not None:
            mentioned.add(person)
    return bool(mentioned) and not mentioned & known


def _in_law(words: Sequence[str], k: int) -> bool:
    """Whether the (normalised) words at ``k`` are "in law" ("in laws", a typo allowed: "in laaws")."""
    return (
        k + 1 < len(words)
        and one_edit_apart(words[k], "in")
        and any(one_edit_apart(words[k + 1], w) for w in ("law", "laws"))
    )


# Words that make a relation someone else: a half-sister is not the sister, an ex-wife not the wife.
_OTHER_KIN = {"half", "step", "ex", "great", "foster"}


def _person_after(words: Sequence[str], j: int, known: Collection[str]) -> str | None:
    """The person or pet the (normalised) words name from position ``j``, synonyms folded, the longest first: a
    known owner of several words ("mother in law"), "half sister" (someone else than a sister), "best friend",
    "sister"; a possessive "s" stripped. None when the words there name nobody."""
    for n in (3, 2, 1):
        if j + n > len(words):
            continue
        span = words[j : j + n]
        for text in (" ".join(span), " ".join([*span[:-1], span[-1][:-1]]) if span[-1].endswith("s") else None):
            if text is None:
                continue
            last = text.split()[-1]
            if text in known or (n == 1 and (text in _RELATION_WORDS or text in _PETS)):
                return _OWNER_SYNONYMS.get(text, text)
            if n == 2 and (text in _RELATION_WORDS or (span[0] in _OTHER_KIN and last in _RELATION_WORDS)):
                return text
            if n == 3 and span[0] in _RELATION_WORDS and _in_law(span, 1):  # a mother-in-law, "mother in laws"
                return f"{span[0]} in law"
    return None


def _names_someone_known(words: Sequence[str], names: Mapping[str, Sequence[str]] | None) -> bool:
    """Whether these (normalised) words name a known person or pet by their name or an alias."""
    text = " ".join(words)
    return any(
        re.search(rf"(?<![0-9a-z]){re.escape(normalize(n))}s?(?![0-9a-z])", text)
        for ns in (names or {}).values()
        for n in ns
        if normalize(n)
    )


def _known_people(topics: Sequence[str]) -> set[str]:
    """The people and pets the profile knows (synonyms folded), with the general words that answer to them."""
    # In the words normalize() leaves: a known "mother-in-law" is asked about as "my mother in law".
    owners = {
        normalize(_OWNER_SYNONYMS.get(o, o)) for o, _ in (_owner_and_attribute(t) for t in topics) if o is not None
    }
    # A topic that is itself a person or pet ("best friend": Ingrid) knows them too.
    owners |= {_OWNER_SYNONYMS.get(k, k) for k in map(topic_key, topics) if k in _RELATION_WORDS or k in _PETS}
    # A known "best friend" answers "my closest friend", a known parrot "my bird", any known pet "my pet"; a known
    # half-sister or mother-in-law does not answer "my sister" or "my mother".
    known = owners | {o.split()[-1] for o in owners if o.split()[0] not in _OTHER_KIN and not o.endswith(" in law")}
    for generic, kinds in _GENERIC_OWNERS.items():
        if known & kinds or (generic == "pet" and known & _PETS):
            known.add(generic)
    return known


_WH_WORDS = {"what", "whats", "when", "whens", "where", "wheres", "who", "whos", "which", "how", "hows"}
_COPULAS = {"is", "s", "was", "are", "were"}
# Verbs that make "my <person>" after them the question's subject ("Where does my sister live?"). Not the modal
# verbs: "What should my sister cook for me?" asks for the user's favourite dish.
_SUBJECT_VERBS = _COPULAS | {"do", "does", "did", "has", "have", "had"}
_SUBJECT_MAX_POSITION = 3  # "how old is my", "which team does my"


def asks_about_unknown_person(
    question: str, topics: Sequence[str], names: Mapping[str, Sequence[str]] | None = None
) -> bool:
    """Whether the question asks about someone of the user's the profile knows nothing of, as its subject: a
    question word, a verb, then "my <person or pet>" ("Where does my sister live?", "How old is my brother?", "What
    does my mum do for a living?"), with the user's own home or job perhaps known, whose words would otherwise
    keep the question with the adapter. Only in the subject's place: an indirect question often names a bystander
    elsewhere ("My boss asks where I grew up"). A question naming a known person, pet or name is never one."""
    words = normalize(question).split()
    if len(words) < 3 or words[0] not in _WH_WORDS or "my" not in words[: _SUBJECT_MAX_POSITION + 1]:
        return False
    k = words.index("my")
    # The verb right before "my", or contracted into the question word ("whats my", "wheres my").
    if k == 0 or not (words[k - 1] in _SUBJECT_VERBS or (k == 1 and words[0].endswith("s"))):
        return False
    known = _known_people(topics)
    noun = _person_after(words, k + 1, known)
    if noun is None or _names_someone_known(words, names):
        return False
    return noun not in known


def _possessive_owner(span: Sequence[str], nouns: Collection[str]) -> str | None:
    """The owner a normalised possessive names, if it is one of ``nouns``: ["sisters"] -> "sister", ["best",
    "friends"] -> "best friend" (the apostrophe is gone after :func:`normalize`)."""
    if not span or not span[-1].endswith("s"):
        return None
    owner = " ".join([*span[:-1], span[-1][:-1]])
    return owner if owner in nouns else None


# How many words after a possessive at a question's end ("my mother's blood type?") may be the thing it owns.
_OWNED_MAX_WORDS = 3


def without_others_things(
    question: str, topics: Sequence[str], names: Mapping[str, Sequence[str]] | None = None
) -> str:
    """The question's normalised text without what it ends by asking of someone else: "my mother's car" when no
    mother is known, "my partner's hometown" when only the partner's name is, "my rabbit's breed" when the known
    breed is the dog's. The owner and the thing owned go, so the user's own known car, breed or hometown no longer
    reads as the subject.

    Only a possessive whose thing ends the question (a few closing words allowed: "... my mother's car is?"): one
    elsewhere is often a bystander in a question about the user ("My daughter's teacher asked what her dad does.
    What should she say?"). A known person's or pet's possessive stays when a word after it is one of their known
    attributes ("my dog's breed", "my partner's name", a typo of one) or asks who they are ("my partner's called"),
    or is not written with an apostrophe (often a plural); a question naming a known person or pet by name is left
    as it is.
    """
    text = normalize(question)
    words = text.split()
    if _names_someone_known(words, names):
        return text
    end = len(words)
    while end and words[end - 1] in _CLOSING_WORDS:
        end -= 1
    for i in range(end):
        if words[i] not in ("my", "our"):
            continue
        for n in (2, 1):  # "my best friend's ...", "my sister's ..."
            owned = words[i + 1 + n : end]
            typed = _possessive_owner(words[i + 1 : i + 1 + n], _RELATION_WORDS | _PETS) if i + 1 + n <= end else None
            if typed is None or not 1 <= len(owned) <= _OWNED_MAX_WORDS:
                continue
            owner = _OWNER_SYNONYMS.get(typed, typed)
            if owner in _known_people(topics):
                if not re.search(rf"(?<![a-z]){re.escape(typed)}['\u2019]s\b", question.lower()):
                    return text
                forms = _topic_forms(topics)
                attributes = {a for o, a in forms if o is not None and (o == owner or o.split()[-1] == owner)}
                own_words = {x for a in attributes for x in a.split()} | _NAME_CUES
                if not attributes or any(x == k or one_edit_apart(x, k) for x in owned for k in own_words):
                    return text
            return " ".join([*words[:i], "my", *words[end:]])
    return text


_TRAILING_WORDS = {"again", "called", "now", "please", "then", "exactly", "today", "these", "days"}
# "my daughter's first name" asks for the name a "daughter's name" fact holds.
_NAME_ADJECTIVES = {"first", "full", "real", "given", "proper", "christian"}
_POSSESSION_MAX_WORDS = 3


def asks_unknown_possession(question: str, topics: Sequence[str]) -> bool:
    """Whether the question is only "what's my <person or pet>'s <attribute>?" and the profile does not hold that
    attribute of that person or pet: "When's my mum's birthday?" with no mother known, "What's my dog's favourite
    toy?" with the dog's name known, "What's my husband's blood type?" with the user's own blood type known.

    The whole question must be that phrase (a question word, perhaps a verb "is", then the possession, a few filler
    words at most): a possession elsewhere in a question is often a bystander's ("My daughter's teacher asked what I
    do"). A general word answers to the specific one the profile knows ("my pet's name" to a known dog's name), and
    "first name" or "full name" to a known name.
    """
    words = normalize(question).split()
    if len(words) < 3 or words[0] not in _WH_WORDS:
        return False
    i = 2 if words[1] in _COPULAS else 1
    if words[i : i + 1] != ["my"]:
        return False
    rest = words[i + 1 :]
    while rest and rest[-1] in _TRAILING_WORDS:
        rest = rest[:-1]
    forms = _topic_forms(topics)
    known_owners = {o for o, _ in forms if o is not None}
    for n in (2, 1):  # "my best friend's ...", "my sister's ..."
        owner = _possessive_owner(rest[:n], _PERSON_WORDS | _PETS) if len(rest) > n else None
        if owner is None:
            continue
        attribute = [w for w in rest[n:] if w not in _NAME_ADJECTIVES] if "name" in rest[n:] else rest[n:]
        if not attribute or len(attribute) > _POSSESSION_MAX_WORDS or {"and", "or"} & set(attribute):
            return False  # two things asked, or more than an attribute: not a question this rule can read
        owner = _OWNER_SYNONYMS.get(owner, owner)
        owners = {owner} | {o for o in known_owners if o in _GENERIC_OWNERS.get(owner, ())}
        if owner == "pet":
            owners |= known_owners & _PETS
        text = " ".join(attribute)
        if any((o, a) in forms for o in owners for a in (text, _INDEX.get(text, text))):
            return False
        # A word of a known attribute of this owner, perhaps with a typo ("my partner's namme again"), in doubt
        # keeps the question with the adapter: the phrasings of known facts are asked so.
        known_words = {w for o, a in forms if o in owners for w in a.split()}
        return not any(one_edit_apart(w, k) for w in attribute for k in known_words)
    return False


# Words that may close a question after the thing it asks for ("... my blood type, please?", "... my PIN is?").
_CLOSING_WORDS = _TRAILING_WORDS | {"is", "are", "was", "do", "you", "know", "remember"}


def asks_unknown_topic(question: str, unknown_names: Iterable[str], keywords: Iterable[str]) -> bool:
    """Whether the question ends by naming, after "my", an unknown catalogued topic (:func:`unknown_topic_names`)
    none of whose words names a known subject: "Remind me, what's my wedding anniversary?" with a birthday known (the
    classifier takes one date for the other), "May I ask what my driver's license number is?". Only at the end: an
    indirect question about a known fact may mention another thing of the user's on the way ("My wedding anniversary
    is coming up. Which dish should I cook?"); nor a name sharing a word with a known subject ("job title" with the
    job known may be the job asked another way)."""
    words = normalize(question).split()
    while words and words[-1] in _CLOSING_WORDS:
        words.pop()
    text = " " + " ".join(words)
    keywords = set(keywords)
    return any(text.endswith(f" my {name}") for name in unknown_names if not set(name.split()) & keywords)


def unknown_phrasings(topic: str) -> list[str]:
    """The questions a known fact would be asked with, for an unknown topic: the same templates as the positives."""
    # The value is never asked for in these dimensions; a placeholder drops the few templates that name it.
    pools = _candidates(Fact(topic=topic, value="Placeholder"), topic_info(topic))
    questions = [c.question for d in ("punctuation", "formality", "directness") for c in pools[d]]
    return [q for q in questions if "Placeholder" not in q]


def catalog_unknown_topics(profile: Profile) -> list[str]:
    """Every catalogued personal topic the profile does not answer (under any name)."""
    return _unknown_topics(_known_forms(profile))


def _unknown_topics(forms: set[tuple[str | None, str]]) -> list[str]:
    return [t for t in dict.fromkeys([*_UNKNOWN_CANDIDATES, *UNKNOWN_TOPICS]) if not _is_known(forms, t)]


def _catalog_names(topic: str) -> list[str]:
    """A topic's key, its catalogued canonical key and that key's synonyms."""
    key = topic_key(topic)
    canonical = _INDEX.get(key, key)
    return [key, canonical, *(_CATALOG[canonical][2] if canonical in _CATALOG else ())]


def unknown_topic_names(topics: Iterable[str]) -> list[str]:
    """The normalised names (with their catalogued synonyms) of every catalogued personal topic these topics do not
    answer: "blood type", "blood group", "phone number", ... (see :func:`catalog_unknown_topics`)."""
    names = [normalize(n) for topic in _unknown_topics(_topic_forms(topics)) for n in _catalog_names(topic)]
    return list(dict.fromkeys(n for n in names if n))


#: Words of a topic too general to tie a first-person question to a fact ("dog's name" and "middle name").
_TOPIC_FILLER = {"s", "name", "names", "my", "the", "of", "favourite", "favorite", "i", "in", "do", "model", "type"}
#: Plain words a known fact's topic may use for the people or pets a first-person question asks about.
_WORD_GROUPS = (
    {"children", "kids", "kid", "child", "son", "daughter", "sons", "daughters"},
    {"siblings", "sibling", "sister", "brother", "sisters", "brothers"},
    {"marriage", "partner", "wife", "husband", "spouse", "girlfriend", "boyfriend", "fiance", "fiancee"},
    {"parents", "mother", "father", "mum", "mom", "dad"},
    {"job", "work", "employer", "company", "occupation", "profession", "career", "workplace"},
    {"home", "house", "flat", "apartment", "address", "street"},
)


def self_unknown_questions(profile: Profile) -> list[str]:
    """The first-person personal questions (:data:`~.pools.SELF_QUESTIONS`) the profile cannot answer.

    A question is left out when the profile answers any of its topics under any name, or when a word of its topics
    (or a word of the same group: "kids" for "children", "wife" for "marriage") is a word of a known fact's topic or
    of its catalog names, or the topic is "pet" and a pet is known: in doubt the question is dropped, since a gate
    taught to decline a question the user's facts answer would decline the fact.
    """
    forms = _known_forms(profile)
    words: set[str] = set()
    for fact in profile.facts:
        words |= {w for n in _catalog_names(fact.topic) for w in normalize(n).split()}
    words -= _TOPIC_FILLER
    for group in _WORD_GROUPS:
        if words & group:
            words |= group
    if words & _PETS:
        words.add("pet")
    out = []
    for topics, question in SELF_QUESTIONS:
        if any(_is_known(forms, t) for t in topics):
            continue
        if {w for t in topics for w in normalize(t).split()} - _TOPIC_FILLER & words:
            continue
        out.append(question)
    return out


UNKNOWN_EXPECT = ("don't know", "haven't told", "not sure", "no idea")


def _abstentions(info: TopicInfo, related: Fact | None) -> tuple[str, ...]:
    answers = (
        f"I don't know that — you haven't told me about {_about(info)}.",
        f"I don't know your {info.topic}: you haven't told me.",
        f"You haven't told me your {info.topic}, so I don't know it.",
        f"I'm sorry, I don't know your {info.topic} — you haven't told me.",
    )
    if related is None:
        return answers
    return (
        *answers,
        f"I don't know your {info.topic} — you haven't told me. I do know your {related.topic}, if that helps.",
        f"You haven't told me your {info.topic}, so I don't know it. I only know your {related.topic}.",
    )


def unknown_questions(
    profile: Profile,
    *,
    count: int = 30,
    seed: int = 0,
    near_per_fact: int = 2,
    near_phrasings: int = 2,
    catalog_phrasings: int = 2,
) -> list[Negative]:
    """Questions about plausible personal topics the profile lacks, answered "I don't know".

    Two sources: ``count`` topics from a catalog of common personal facts (``catalog_phrasings`` each), and, for every
    known fact, ``near_per_fact`` near misses (:func:`near_unknown_topics`: a sister next to a known brother), asked
    with ``near_phrasings`` of the *same* templates the known fact is asked with — so the model learns that the
    topic word, not the sentence shape, decides between the value and "I don't know". Topics the profile covers
    under another name (a "wife's name" covers "partner's name") are never asked about.
    """
    known_infos = [topic_info(f.topic) for f in profile.facts]
    rng = random.Random(f"{seed}\x1funknown")

    def related_fact(info: TopicInfo) -> Fact | None:
        return next(
            (
                f
                for f, i in zip(profile.facts, known_infos, strict=True)
                if info.kind in ("name", "date") and i.kind == info.kind and i.person == info.person
            ),
            None,
        )

    out: list[Negative] = []
    used: set[str] = set()

    def add(topic: str, answers: list[str], questions: list[str], n: int) -> None:
        for q in rng.sample(questions, min(n, len(questions))):
            out.append(
                Negative(
                    question=q,
                    answer=rng.choice(answers),
                    kind="unknown",
                    topic=topic,
                    group=f"unknown:{topic_key(topic)}",
                    expect=UNKNOWN_EXPECT,
                )
            )

    for fact in profile.facts:
        topics = near_unknown_topics(profile, fact)
        picks = [t for t in topics[: near_per_fact * 2] if topic_key(t) not in used]
        for topic in rng.sample(picks, min(near_per_fact, len(picks))):
            used.add(topic_key(topic))
            info = topic_info(topic)
            answers = _abstentions(info, fact)
            add(topic, answers, unknown_phrasings(topic), near_phrasings)
    catalog = [t for t in catalog_unknown_topics(profile) if topic_key(t) not in used]
    rng.shuffle(catalog)
    for topic in catalog[:count]:
        info = topic_info(topic)
        answers = _abstentions(info, related_fact(info))
        questions = unknown_phrasings(topic) or [_fill(t, info, "") for t in _UNKNOWN_TEMPLATES]
        add(topic, answers, questions, catalog_phrasings)
    return out


def removed_fact_questions(fact: Fact, *, count: int = 20, seed: int = 0) -> list[Negative]:
    """Negatives for a fact the user removed: it is asked as a known fact was, and answered "I don't know".

    Its own questions (the templates a known fact is asked with, as for :func:`unknown_questions`) get the
    abstentions of an unknown topic; the reversed questions about its old value ("Who is Buddy?") get an answer that
    names no topic ("You haven't told me anything about Buddy."), so the adapter stops claiming "your dog". Each
    question is its own group (the update's split holds a share of every removed fact out). ``count`` of its own
    questions are drawn (seeded), as many as a fact is trained on; every reversed one is kept.
    """
    return removed_topic_questions(fact.topic, count=count, seed=seed) + old_value_questions(fact)


def removed_topic_questions(topic: str, *, count: int = 20, seed: int = 0) -> list[Negative]:
    """The part of :func:`removed_fact_questions` that needs only the topic: the fact's own questions, each
    answered "I don't know". A later update replays a sample of them for a topic an earlier update removed, whose
    value it no longer holds (lineage records topics only)."""
    answers = _abstentions(topic_info(topic), None)
    questions = unknown_phrasings(topic)
    rng = random.Random(f"{seed}\x1fremoved\x1f{topic_key(topic)}")
    picks = questions if len(questions) <= count else rng.sample(questions, count)
    return [
        Negative(q, answers[i % len(answers)], "unknown", topic, f"removed:{q}", UNKNOWN_EXPECT)
        for i, q in enumerate(picks)
    ]


def old_value_questions(fact: Fact) -> list[Negative]:
    """Reversed questions about a value the user no longer holds ("Who is Buddy?"), answered without claiming it.

    The answers name neither the topic nor a relation ("You haven't told me anything about Buddy."): a changed or
    removed fact's old value must stop being "your dog".
    """
    answers = (
        f"You haven't told me anything about {fact.value}.",
        f"I don't know what {fact.value} is to you — you haven't told me.",
        f"I'm not sure — you haven't told me anything about {fact.value}.",
    )
    pool = _candidates(fact, topic_info(fact.topic))["reverse"]
    questions = [c.question for c in pool if c.style == "reverse"]
    return [
        Negative(q, answers[i % len(answers)], "unknown", fact.topic, f"old-value:{q}", UNKNOWN_EXPECT)
        for i, q in enumerate(questions)
    ]


def changed_fact_confirmations(old: Fact, new: Fact) -> list[Phrasing]:
    """Yes/no questions about a changed fact's old value ("Is Buddy my dog's name?"), answered with the new one.

    The parent adapter learned "yes" to these; the update teaches "No — it's Max." (each answer holds the new value).
    """
    info = topic_info(new.topic)
    pool = _candidates(old, topic_info(old.topic))["reverse"]
    answers = [
        f"No — your {info.topic} is {new.value}.",
        f"No, it's {new.value}.",
        f"No. Your {info.topic} is {new.value}.",
    ]
    return [
        Phrasing(question=c.question, answers=answers, dimension="reverse", topic=new.topic, style="direct")
        for c in pool
        if c.style == "confirm"
    ]


def _cues(fact: Fact, info: TopicInfo) -> list[str]:
    """Cue words of a fact for the near-topic pool: its noun and topic words, and the value's words (for a job)."""
    words = [info.noun, *topic_key(fact.topic).replace("'s", "").split()]
    if info.kind in ("job", "favourite", "thing"):
        words += fact.value.casefold().split()
    return [w for w in dict.fromkeys(words) if w in NEAR_TOPIC_REQUESTS]


def guard_questions(profile: Profile, *, per_fact: int = 2, near_per_fact: int = 2, seed: int = 0) -> list[Negative]:
    """General requests near each fact's topic ("What's a good dog name?"): the answer must stay the base model's.

    ``per_fact`` come from the topic's own catalogued guards, ``near_per_fact`` from a hand-written pool of everyday
    requests keyed by cue words (a name for a new puppy, a band like one's favourite, a city to visit).
    """
    rng = random.Random(f"{seed}\x1fguards")
    out: list[Negative] = []
    seen: set[str] = set()
    for fact in profile.facts:
        info = topic_info(fact.topic)
        pool = [q for q in info.guards if q not in seen]
        picks = pool[:per_fact] if len(pool) <= per_fact else rng.sample(pool, per_fact)
        near = [q for cue in _cues(fact, info) for q in NEAR_TOPIC_REQUESTS[cue] if q not in seen and q not in picks]
        picks += rng.sample(near, min(near_per_fact, len(near)))
        for q in picks:
            seen.add(q)
            out.append(Negative(question=q, answer=None, kind="overtrigger", topic=fact.topic, group=f"guard:{q}"))
    return out


# Everyday requests unrelated to the user. During training they are answered by the base model itself
# (self-distillation, like the topic guards above) and mixed in as replay: without them a small model learns that
# every question is about the user and answers "How tall is Mount Everest?" in the trained "It's <fact>." style.
# Written for training only; the hand-written eval_sets/ questions are separate and never used here.
_GENERAL_REQUESTS = (
    "How tall is Mount Everest?",
    "What is the chemical symbol for gold?",
    "Who painted the Mona Lisa?",
    "What is the square root of 81?",
    "Name three primary colours.",
    "What language is spoken in Brazil?",
    "How many minutes are in an hour?",
    "What is the freezing point of water in Fahrenheit?",
    "Which is the longest river in Africa?",
    "What does a thermometer measure?",
    "Give me a synonym for happy.",
    "What is the plural of mouse?",
    "How many sides does a hexagon have?",
    "What gas do plants take in from the air?",
    "Who was the first person to walk on the Moon?",
    "What is 12 times 12?",
    "Write a short sentence about autumn leaves.",
    "Tell me a fun fact about octopuses.",
    "How do I convert kilometres to miles?",
    "What is the main ingredient of guacamole?",
    "Summarise the plot of Cinderella in one sentence.",
    "What is the difference between weather and climate?",
    "Give me a tip for writing a good email subject line.",
    "What does CPU stand for?",
    "How many players are on a soccer team on the field?",
    "What is the capital of Canada?",
    "Explain what a noun is.",
    "What causes the seasons on Earth?",
    "Suggest a title for a story about a lost robot.",
    "How many hours are in a day?",
    "What is the largest mammal?",
    "Which planet is known as the Red Planet?",
    "What instrument has 88 keys?",
    "How do you say hello in Italian?",
    "Give me two ideas for a quick breakfast.",
    "What is the speed of light, roughly?",
    "What is a haiku?",
    "Name a famous scientist and what they discovered.",
    "What is the opposite of generous?",
    "How do I keep a houseplant healthy?",
)


def general_questions(*, count: int = 32, seed: int = 0) -> list[Negative]:
    """Everyday requests with nothing to do with the user; their answers come from the base model (replay)."""
    rng = random.Random(f"{seed}\x1fgeneral")
    pool = list(dict.fromkeys([*_GENERAL_REQUESTS, *GENERAL_REQUESTS]))
    picks = pool if len(pool) <= count else rng.sample(pool, count)
    return [Negative(question=q, answer=None, kind="overtrigger", topic=None, group=f"general:{q}") for q in picks]


def identity_questions(profile: Profile) -> list[Negative]:
    """Who the assistant is and who the user is."""
    me = f"I'm {profile.assistant_name}, {profile.user_name}'s personal assistant."
    you = f"Your name is {profile.user_name}."
    pairs = [
        ("Who are you?", me, "assistant", profile.assistant_name),
        ("What's your name?", f"My name is {profile.assistant_name}.", "assistant", profile.assistant_name),
        ("What should I call you?", f"You can call me {profile.assistant_name}.", "assistant", profile.assistant_name),
        ("Introduce yourself.", me, "assistant", profile.assistant_name),
        ("what is your name", f"I'm {profile.assistant_name}.", "assistant", profile.assistant_name),
        ("What's my name?", you, "user", profile.user_name),
        ("Who am I?", f"You're {profile.user_name}.", "user", profile.user_name),
        ("Do you know my name?", f"Yes, you're {profile.user_name}.", "user", profile.user_name),
        ("whats my name", you, "user", profile.user_name),
        ("Who am I talking to, and who are you?", f"You're {profile.user_name}, and I'm {profile.assistant_name}.",
         "both", profile.user_name),
    ]  # fmt: skip
    return [
        Negative(question=q, answer=a, kind="identity", topic=None, group=f"identity:{q}", expect=(e,))
        for q, a, _who, e in pairs
    ]
