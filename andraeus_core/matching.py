"""How answers are matched: normalised text, whole-word value mentions, and abstentions ("I don't know").

One set of rules shared by the evaluation, the early-stop probe and the gate, so that "the answer names the value"
means the same everywhere. Normalised text is case folded, accent folded (``Tomas`` matches ``Tomás``), with ordinal
suffixes dropped (``14th`` matches ``14``) and punctuation turned into spaces; matches are whole words with an
optional plural ``s``/``es``, so ``Alex`` is not found inside ``Alexander``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

_ORDINAL = re.compile(r"(\d+)\s*(?:st|nd|rd|th)\b")
_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def normalize(text: str) -> str:
    """Case-fold, fold accents (``é`` → ``e``), drop ordinal suffixes, turn punctuation into single spaces."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    folded = "".join(c for c in decomposed if not unicodedata.combining(c))
    folded = folded.replace("ß", "ss").replace("ø", "o").replace("æ", "ae").replace("œ", "oe").replace("ł", "l")
    folded = _ORDINAL.sub(r"\1", folded)
    # Apostrophes vanish inside words ("don't" → "dont", "Sam's" → "sams") so contractions match one way.
    folded = re.sub(r"(?<=[0-9a-z])['’`](?=[a-z])", "", folded)
    return " ".join(_NON_ALNUM.sub(" ", folded).split())


def _word_pattern(normalized: str) -> re.Pattern[str]:
    return re.compile(r"(?<![0-9a-z])" + re.escape(normalized) + r"(?:s|es)?(?![0-9a-z])")


def contains_any(answer: str, candidates: Iterable[str]) -> bool:
    """True when the answer contains any candidate as whole words (normalised; a plural ``s``/``es`` allowed)."""
    text = normalize(answer)
    for candidate in candidates:
        norm = normalize(candidate)
        if norm and _word_pattern(norm).search(text):
            return True
    return False


def mentioned_values(answer: str, values: Iterable[str], *, question: str = "") -> list[str]:
    """The profile values/aliases that the answer states (whole words), ignoring those the question contains."""
    text = normalize(answer)
    asked = normalize(question)
    found = []
    for value in values:
        norm = normalize(value)
        if not norm or (asked and _word_pattern(norm).search(asked)):
            continue
        if _word_pattern(norm).search(text):
            found.append(value)
    return found


# Matched against the normalised answer (apostrophes removed: "don't" → "dont"). Broad on purpose: a small model
# words "I don't know" in many ways, and a false abstention is still caught by the no-value rule for `unknown`.
ABSTENTION_PATTERNS: tuple[str, ...] = (
    r"\bi (?:really )?(?:dont|do not|didnt|did not|cant|cannot|can not|wont) (?:actually )?"
    r"(?:know|recall|remember|say|tell|be sure|have (?:that|this|any|the|access|enough|information|info|a record|"
    r"details|data)|possess|see)",
    r"\b(?:i am|im) (?:not|un)(?: really| entirely| completely| 100 percent)? ?(?:sure|certain|aware|able)",
    r"\b(?:you|u) (?:havent|have not|hasnt|never|didnt|did not|did nt)(?: yet| ever)? "
    r"(?:told|tell|mentioned|mention|shared|share|said|say|given|give|provided|provide|informed)",
    r"\b(?:not|never) (?:been )?(?:told|mentioned|shared|provided|given|specified|stated|said)\b",
    r"\b(?:no|not any|dont have any|do not have any) (?:information|info|record|details|data|knowledge|idea|way)\b",
    r"\bi have no (?:idea|way|information|info|record|knowledge|clue|details|data|access)",
    r"\b(?:unknown|not known|unsure|unclear|not sure)\b",
    r"\bi (?:dont|do not) (?:have )?(?:personal )?(?:access|knowledge|information)",
    r"\bi (?:was|wasnt|was not|have not been|havent been) (?:never )?(?:not )?told",
    r"\b(?:cant|cannot|can not|unable to) (?:know|tell|determine|say|answer|provide|access|recall|find)",
    r"\bnot something (?:youve|you have|ive|i have)",
    r"\bdont know\b",
)
_ABSTENTION = [re.compile(p) for p in ABSTENTION_PATTERNS]


def is_abstention(answer: str) -> bool:
    """True when the answer says the model does not know (see :data:`ABSTENTION_PATTERNS`)."""
    text = normalize(answer)
    return any(p.search(text) for p in _ABSTENTION)


def one_edit_apart(a: str, b: str) -> bool:
    """Whether ``a`` becomes ``b`` by one inserted, deleted or replaced letter, or two neighbours swapped."""
    if a == b or abs(len(a) - len(b)) > 1:
        return a == b
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (
            len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
        )
    short, long = (a, b) if len(a) < len(b) else (b, a)
    i = next((k for k in range(len(short)) if short[k] != long[k]), len(short))
    return short[i:] == long[i + 1 :]


__all__ = ["ABSTENTION_PATTERNS", "contains_any", "is_abstention", "mentioned_values", "normalize", "one_edit_apart"]
