"""The facts schema: load and validate a profile from YAML, JSON or CSV.

A profile is who the user is (``user_name``), what the assistant is called and 1..200 facts, each a ``topic`` (a noun
phrase completing "my ___") with a ``value``, optional ``aliases`` (other accepted spellings of the value) and optional
``questions`` (extra phrasings the user wants covered). Every problem in a file becomes a :class:`ProfileError` whose
message names the file, the line (CSV: row), the field and the offending value, never a traceback.

A *family* profile holds several people: ``people:`` (each a ``name``, an optional ``relation`` — what the others call
them, such as "Dad" — optional ``aliases`` and their own ``facts:``) and top-level ``shared:`` facts everyone may be
told (the family dog). A fact marked ``private: true`` is told only to its owner. In memory a family profile's facts
are one list, each fact carrying its ``owner`` (a person's name; ``None`` for shared), so code that counts or lists
facts works on both kinds; :mod:`andraeus_core.family` turns it into per-speaker training data.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import logging
import re
from bisect import bisect_right
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ProfileError

logger = logging.getLogger(__name__)

MAX_FACTS = 200
MAX_FILE_BYTES = 1_000_000
MAX_TOPIC_CHARS = 80
MAX_VALUE_CHARS = 200
MAX_NAME_CHARS = 80
MAX_ALIASES = 20
MAX_QUESTIONS = 50
MAX_QUESTION_CHARS = 300
MAX_PEOPLE = 12
_MAX_NODES = 50_000  # YAML anchors can make a small file describe a huge tree ("billion laughs")

Format = Literal["yaml", "json", "csv"]
FORMATS: dict[str, Format] = {".yaml": "yaml", ".yml": "yaml", ".json": "json", ".csv": "csv"}

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\u2028\u2029]")
_SPACES = re.compile(r"\s+")


def _clean_text(value: str, *, what: str, limit: int, apostrophes: bool = False) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text")
    text = value.strip()
    if apostrophes:
        text = text.replace("\u2019", "'")
    if _CONTROL.search(text):
        raise ValueError(f"{what} must be one line of text without control characters")
    text = _SPACES.sub(" ", text)
    if not text:
        raise ValueError(f"{what} is empty")
    if len(text) > limit:
        raise ValueError(f"{what} is {len(text)} characters long; the limit is {limit}")
    return text


def topic_key(topic: str) -> str:
    """The form two topics are compared in: case-folded, single spaces, without a leading "my "."""
    key = _SPACES.sub(" ", topic.replace("\u2019", "'")).strip().casefold()
    return key[3:] if key.startswith("my ") else key


def same_topic_key(topic: str) -> str:
    """Two topics are the same when they differ only in case, apostrophes or punctuation ("dogs name")."""
    key = topic_key(topic)
    words = re.sub(r"[\W_]+", " ", key.replace("'", "")).split()
    return " ".join(words) if words else key


class Fact(BaseModel):
    """One fact about the user."""

    model_config = ConfigDict(extra="forbid")

    topic: str = Field(description='What the fact is about: a noun phrase completing "my ___" (e.g. "dog\'s name").')
    value: str = Field(description='The fact itself (e.g. "Buddy").')
    aliases: list[str] = Field(
        default_factory=list, max_length=MAX_ALIASES, description="Other accepted spellings of the value."
    )
    questions: list[str] = Field(
        default_factory=list,
        max_length=MAX_QUESTIONS,
        description="Extra phrasings the user wants covered; they always go to training.",
    )
    owner: str | None = Field(
        None, description="Family profiles: the person the fact belongs to (None: shared, or the only user's)."
    )
    private: bool = Field(False, description="Family profiles: told only to its owner, never to another speaker.")

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        text = _clean_text(value, what="topic", limit=MAX_TOPIC_CHARS, apostrophes=True)
        if text.casefold().startswith("my "):
            text = text[3:].strip()
        if not text:
            raise ValueError("topic is empty")
        return text

    @field_validator("value")
    @classmethod
    def _value(cls, value: str) -> str:
        return _clean_text(value, what="value", limit=MAX_VALUE_CHARS)

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, value: list[str]) -> list[str]:
        out: list[str] = []
        for item in value:
            text = _clean_text(item, what="alias", limit=MAX_VALUE_CHARS)
            if text.casefold() not in {a.casefold() for a in out}:
                out.append(text)
        return out

    @field_validator("questions")
    @classmethod
    def _questions(cls, value: list[str]) -> list[str]:
        out: list[str] = []
        for item in value:
            text = _clean_text(item, what="question", limit=MAX_QUESTION_CHARS)
            if text not in out:
                out.append(text)
        return out

    @model_validator(mode="after")
    def _drop_value_alias(self) -> Fact:
        self.aliases = [a for a in self.aliases if a.casefold() != self.value.casefold()]
        return self

    def accepted(self) -> list[str]:
        """The value followed by its aliases: every string a correct answer may contain."""
        return [self.value, *self.aliases]


def name_key(name: str) -> str:
    """The form two people's names are compared in: case-folded, single spaces, straight apostrophes."""
    return _SPACES.sub(" ", name.replace("\u2019", "'")).strip().casefold()


class Person(BaseModel):
    """One member of a family profile (their facts are the profile's facts whose ``owner`` is their name)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The person's name; it is how they say who is asking.")
    relation: str | None = Field(
        None, description='What the others call them ("Dad", "Grandma"): third-person questions use it too.'
    )
    aliases: list[str] = Field(default_factory=list, max_length=MAX_ALIASES, description="Other names or nicknames.")

    @field_validator("name")
    @classmethod
    def _person_name(cls, value: str) -> str:
        return _clean_text(value, what="name", limit=MAX_NAME_CHARS, apostrophes=True)

    @field_validator("relation")
    @classmethod
    def _relation(cls, value: str | None) -> str | None:
        return None if value is None else _clean_text(value, what="relation", limit=MAX_NAME_CHARS, apostrophes=True)

    @field_validator("aliases")
    @classmethod
    def _person_aliases(cls, value: list[str]) -> list[str]:
        out: list[str] = []
        for item in value:
            text = _clean_text(item, what="alias", limit=MAX_NAME_CHARS, apostrophes=True)
            if name_key(text) not in {name_key(a) for a in out}:
                out.append(text)
        return out

    def names(self) -> list[str]:
        """Every way this person may be named: name, relation, aliases."""
        return [self.name, *([self.relation] if self.relation else []), *self.aliases]


class Profile(BaseModel):
    """A user's facts (or a family's), as loaded from a profile file or built in code."""

    model_config = ConfigDict(extra="forbid")

    user_name: str = Field(
        description="How the user is called (used in the identity system prompt); for a family, how the household "
        "is called (default: the people's names)."
    )
    assistant_name: str = Field("Andraeus", description="The assistant's name.")
    facts: list[Fact] = Field(
        min_length=1,
        max_length=MAX_FACTS,
        description=f"The facts, 1 to {MAX_FACTS}; topics are unique (per owner in a family profile).",
    )
    people: list[Person] = Field(
        default_factory=list, max_length=MAX_PEOPLE, description="A family profile's people (empty: one user)."
    )

    @field_validator("user_name", "assistant_name")
    @classmethod
    def _name(cls, value: str, info: Any) -> str:
        return _clean_text(value, what=info.field_name, limit=MAX_NAME_CHARS)

    @model_validator(mode="after")
    def _merge_duplicates(self) -> Profile:
        self._check_people()
        merged: dict[tuple[str | None, str], Fact] = {}
        for fact in self.facts:
            key = (fact.owner, same_topic_key(fact.topic))
            seen = merged.get(key)
            if seen is None:
                merged[key] = fact
                continue
            if seen.value.casefold() != fact.value.casefold():
                whose = f"{fact.owner}'s " if fact.owner else ""
                raise ValueError(f"{whose}topic '{fact.topic}' has two values: '{seen.value}' and '{fact.value}'")
            merged[key] = _merge(seen, fact)
        self.facts = list(merged.values())
        if self.people:
            shared = {same_topic_key(f.topic) for f in self.facts if f.owner is None}
            for fact in self.facts:
                if fact.owner is not None and same_topic_key(fact.topic) in shared:
                    raise ValueError(
                        f"topic '{fact.topic}' is both shared and {fact.owner}'s; keep one (a shared fact is the "
                        "whole family's)"
                    )
        return self

    def _check_people(self) -> None:
        if not self.people:
            for fact in self.facts:
                if fact.owner is not None or fact.private:
                    raise ValueError(
                        "owner and private are for family profiles; add people (each with a name) to use them"
                    )
            return
        seen: dict[str, str] = {}
        for person in self.people:
            for name in person.names():
                key = name_key(name)
                if key in seen:
                    first = seen[key]
                    raise ValueError(
                        f"the name '{name}' is used twice"
                        + (f" (by {first} and {person.name})" if first != person.name else f" (by {first})")
                    )
                seen[key] = person.name
        names = {person.name for person in self.people}
        for fact in self.facts:
            if fact.owner is not None and fact.owner not in names:
                raise ValueError(f"fact '{fact.topic}' belongs to '{fact.owner}', who is not one of the people")
            if fact.private and fact.owner is None:
                raise ValueError(f"shared fact '{fact.topic}' cannot be private: a private fact belongs to a person")

    @property
    def is_family(self) -> bool:
        """Whether this profile holds several people's facts (a ``people:`` list)."""
        return bool(self.people)

    def person(self, name: str | None) -> Person | None:
        """The person a name, relation or alias refers to (case-insensitive), if any."""
        if not name:
            return None
        key = name_key(name)
        return next((p for p in self.people if key in {name_key(n) for n in p.names()}), None)

    def facts_of(self, owner: str | None) -> list[Fact]:
        """One person's own facts (``None``: the shared ones, or every fact of a one-person profile)."""
        return [f for f in self.facts if f.owner == owner]

    def values(self) -> list[str]:
        """Every value and alias of every fact (for checks that an unrelated answer leaks no fact)."""
        return [text for fact in self.facts for text in fact.accepted()]

    def topics(self) -> list[str]:
        """The topics, in profile order."""
        return [fact.topic for fact in self.facts]

    def fact(self, topic: str, owner: str | None = None) -> Fact | None:
        """The fact with this topic (compared case-insensitively) and owner (``None``: shared or one user), if any."""
        key = same_topic_key(topic)
        return next((f for f in self.facts if same_topic_key(f.topic) == key and f.owner == owner), None)


def _merge(first: Fact, second: Fact) -> Fact:
    aliases = [
        *first.aliases,
        *(a for a in second.aliases if a.casefold() not in {x.casefold() for x in first.aliases}),
    ]
    questions = [*first.questions, *(q for q in second.questions if q not in first.questions)]
    return Fact(
        topic=first.topic,
        value=first.value,
        aliases=aliases[:MAX_ALIASES],
        questions=questions[:MAX_QUESTIONS],
        owner=first.owner,
        private=first.private or second.private,
    )


def profile_hash(profile: Profile) -> str:
    """A stable sha256 hex digest of the profile's canonical JSON (same facts → same hash, on any machine)."""
    data = profile.model_dump(mode="json")
    # The family fields are left out where unused, so a one-person profile keeps the hash it had before they existed.
    if not data["people"]:
        del data["people"]
    for fact in data["facts"]:
        for field, default in (("owner", None), ("private", False)):
            if fact[field] == default:
                del fact[field]
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# Parsing: text → plain data + a map from field paths to line numbers → validated Profile

Path_ = tuple[str | int, ...]
LineOf = Callable[[Path_], int | None]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _field_name(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


class _Ctx:
    """Where we are: the source name and how to find a line for a field path."""

    def __init__(self, source: str, line_of: LineOf, unit: str = "line"):
        self.source = source
        self.line_of = line_of
        self.unit = unit

    def where(self, path: Path_) -> tuple[str, int | None]:
        line = None
        for cut in range(len(path), -1, -1):
            line = self.line_of(path[:cut])
            if line is not None:
                break
        return (f"{self.source}, {self.unit} {line}" if line is not None else self.source), line

    def error(self, path: Path_, problem: str, value: Any = ..., hint: str = "") -> ProfileError:
        place, line = self.where(path)
        got = "" if value is ... else f" (got {_short(value)})"
        message = f"{place}: {_field_name(path)} {problem}{got}." + (f" {hint}" if hint else "")
        return ProfileError(message, source=self.source, line=line, field=_field_name(path))


def _suggest(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    known = ", ".join(allowed)
    return f"Did you mean '{close[0]}'? Allowed: {known}." if close else f"Allowed: {known}."


def _decode(data: str | bytes, source: str) -> str:
    if isinstance(data, str):
        text = data
    else:
        if len(data) > MAX_FILE_BYTES:
            raise ProfileError(
                f"{source}: the file is {len(data):,} bytes; a profile may be at most {MAX_FILE_BYTES:,} bytes.",
                source=source,
            )
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise ProfileError(
                f"{source}, line {line}: the file is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                f"{exc.start}). Save it as UTF-8.",
                source=source,
                line=line,
            ) from None
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise ProfileError(f"{source}: the profile is larger than {MAX_FILE_BYTES:,} bytes.", source=source)
    text = text.removeprefix("\ufeff")
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise ProfileError(
            f"{source}, line {line}: the file contains NUL bytes; it looks binary, not a text profile.",
            source=source,
            line=line,
        )
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        raise ProfileError(f"{source}: the text contains invalid surrogate characters.", source=source)
    return text


class _LineIndex:
    """Line numbers of text positions in O(log n) each: counting newlines from the start for every key made a
    60,000-key JSON object take 20 s to reject (quadratic)."""

    def __init__(self, text: str):
        self._newlines = [m.start() for m in re.finditer("\n", text)]

    def __call__(self, pos: int) -> int:
        return bisect_right(self._newlines, pos - 1) + 1


# -- YAML ---------------------------------------------------------------------------------------------------------


def _parse_yaml(text: str, source: str) -> tuple[Any, LineOf]:
    import yaml

    # libyaml parses ~20x faster than the pure-Python loader (a 1 MB document took 5-15 s to reject). Parse events
    # are counted first, lazily, so a document far larger than any profile is refused before its tree is built.
    loader_class = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        for count, _ in enumerate(yaml.parse(text, Loader=loader_class), start=1):
            if count > 2 * _MAX_NODES:
                raise ProfileError(f"{source}: the YAML document is too large or too deeply aliased.", source=source)
        loader = loader_class(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        where = f"{source}, line {line}" if line else source
        problem = exc.problem or exc.context or "syntax error"
        raise ProfileError(f"{where}: not valid YAML: {problem}.", source=source, line=line) from None
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        raise ProfileError(f"{source}: not valid YAML: {type(exc).__name__}.", source=source) from None
    if node is None:
        return None, lambda path: None
    lines: dict[Path_, int] = {}
    budget = [_MAX_NODES]

    def build(n: Any, path: Path_, active: frozenset[int]) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise ProfileError(f"{source}: the YAML document is too large or too deeply aliased.", source=source)
        if id(n) in active:
            raise ProfileError(
                f"{source}, line {n.start_mark.line + 1}: {_field_name(path)} refers to itself (recursive anchor).",
                source=source,
                line=n.start_mark.line + 1,
            )
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.ScalarNode):
            if n.tag == "tag:yaml.org,2002:null" and n.style is None and n.value in ("", "~", "null", "Null", "NULL"):
                return None
            # Keep the text as written: "007" stays "007", "1985" is text, not a number.
            return n.value
        inner = active | {id(n)}
        if isinstance(n, yaml.SequenceNode):
            return [build(child, (*path, i), inner) for i, child in enumerate(n.value)]
        if isinstance(n, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in n.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise ProfileError(
                        f"{source}, line {key_node.start_mark.line + 1}: {_field_name(path)} has a key that is not "
                        "text.",
                        source=source,
                        line=key_node.start_mark.line + 1,
                    )
                key = key_node.value
                if key == "<<":
                    raise ProfileError(
                        f"{source}, line {key_node.start_mark.line + 1}: YAML merge keys ('<<') are not supported.",
                        source=source,
                        line=key_node.start_mark.line + 1,
                    )
                if key in out:
                    raise ProfileError(
                        f"{source}, line {key_node.start_mark.line + 1}: {_field_name((*path, key))} is given twice.",
                        source=source,
                        line=key_node.start_mark.line + 1,
                        field=_field_name((*path, key)),
                    )
                lines[(*path, key)] = key_node.start_mark.line + 1
                out[key] = build(value_node, (*path, key), inner)
            return out
        return None

    try:
        data = build(node, (), frozenset())
    except RecursionError:
        raise ProfileError(f"{source}: the YAML document is nested too deeply.", source=source) from None
    return data, lines.get


# -- JSON ---------------------------------------------------------------------------------------------------------


def _count_values(tree: Any, limit: int) -> int:
    """How many values (keys included) a decoded JSON document holds, counting no further than just past ``limit``."""
    count, stack = 0, [tree]
    while stack and count <= limit:
        value = stack.pop()
        count += 1
        if isinstance(value, dict):
            count += len(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return count


def _key_at(text: str, quoted: str, start: int, end: int) -> int | None:
    """Where ``quoted`` (a JSON-encoded key) next appears as a key (followed by ':') in ``text[start:end]``.

    ``str.find`` rather than one compiled regex per key: compiling 60,000 patterns took seconds.
    """
    pos = text.find(quoted, start, end)
    while pos != -1:
        after = pos + len(quoted)
        while after < end and text[after] in " \t\r\n":
            after += 1
        if after < end and text[after] == ":":
            return pos
        pos = text.find(quoted, pos + 1, end)
    return None


class _JsonObject(dict):
    """A decoded JSON object that remembers where it was in the text (to report line numbers)."""

    start = 0
    end = 0
    duplicate: str | None = None


def _decode_json(decode: Callable[[str], Any], text: str, source: str) -> Any:
    """``decode(text)``, its failures as a :class:`ProfileError` naming the line."""
    try:
        return decode(text)
    except json.JSONDecodeError as exc:
        raise ProfileError(
            f"{source}, line {exc.lineno}: not valid JSON: {exc.msg}.", source=source, line=exc.lineno
        ) from None
    except RecursionError:
        raise ProfileError(f"{source}: the JSON document is nested too deeply.", source=source) from None
    except ValueError:  # an integer longer than Python's int-conversion limit (4,300 digits)
        raise ProfileError(f"{source}: not valid JSON: a number has too many digits.", source=source) from None


def _parse_json(text: str, source: str) -> tuple[Any, LineOf]:
    from json import decoder, scanner

    def parse_object(s_and_end: tuple[str, int], strict: bool, scan_once: Any, object_hook: Any, pairs_hook: Any,
                     memo: Any = None) -> tuple[Any, int]:  # fmt: skip
        start = s_and_end[1] - 1
        pairs, end = decoder.JSONObject(s_and_end, strict, scan_once, object_hook, lambda p: p, memo)
        obj = _JsonObject()
        for key, value in pairs:
            if key in obj and obj.duplicate is None:
                obj.duplicate = key
            obj[key] = value
        obj.start, obj.end = start, end
        return obj, end

    # The C decoder first (~50x faster): it reports syntax errors and lets a document with far more values than any
    # profile be refused before the slow, position-tracking parse below.
    quick = _decode_json(json.loads, text, source)
    if _count_values(quick, _MAX_NODES) > _MAX_NODES:
        raise ProfileError(f"{source}: the JSON document is too large for a profile.", source=source)

    dec = json.JSONDecoder()
    dec.parse_object = parse_object  # type: ignore[assignment]
    dec.scan_once = scanner.py_make_scanner(dec)  # the C scanner would bypass parse_object
    data = _decode_json(dec.decode, text, source)

    lines: dict[Path_, int] = {}
    _line = _LineIndex(text)

    def walk(value: Any, path: Path_, start: int) -> int:
        """Record the lines of ``value``'s fields; returns the furthest text position known to be inside it."""
        if isinstance(value, _JsonObject):
            lines[path] = _line(value.start)
            if value.duplicate is not None:
                dup = value.duplicate
                found = [
                    m.start() for m in re.finditer(re.escape(json.dumps(dup)) + r"\s*:", text[value.start : value.end])
                ]
                line = _line(value.start + found[-1]) if found else _line(value.start)
                raise ProfileError(
                    f"{source}, line {line}: {_field_name((*path, dup))} is given twice.",
                    source=source,
                    line=line,
                    field=_field_name((*path, dup)),
                )
            # Keys come in document order: each search starts after the previous key and whatever objects its value
            # held, so every object's text is scanned once rather than once per key, and a same-named key nested in
            # an earlier value is not taken for this one.
            cursor = value.start
            for key, child in value.items():
                found_at = _key_at(text, json.dumps(key), cursor, value.end)
                key_pos = value.start if found_at is None else found_at
                if found_at is not None:
                    cursor = found_at + 1
                lines[(*path, key)] = _line(key_pos)
                cursor = max(cursor, walk(child, (*path, key), key_pos))
            return value.end
        if isinstance(value, list):
            lines.setdefault(path, _line(start))
            furthest = start
            for i, child in enumerate(value):
                furthest = max(
                    furthest, walk(child, (*path, i), child.start if isinstance(child, _JsonObject) else start)
                )
            return furthest
        return start

    walk(data, (), 0)
    return data, lines.get


# -- CSV ----------------------------------------------------------------------------------------------------------

CSV_COLUMNS = ["topic", "value", "aliases", "questions", "person", "private"]


def _parse_csv(text: str, source: str, ctx_unit: str = "row") -> tuple[Any, LineOf]:
    lines: dict[Path_, int] = {}
    try:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        rows = []
        for row in reader:
            rows.append((reader.line_num, row))
            if len(rows) > MAX_FACTS + 50:
                break
    except csv.Error as exc:
        raise ProfileError(f"{source}: not valid CSV: {exc}.", source=source) from None
    rows = [(n, r) for n, r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise ProfileError(f"{source}: the CSV file is empty; expected a header 'topic,value,aliases'.", source=source)
    header_line, header = rows[0]
    columns = [c.strip().lower() for c in header]
    for col in columns:
        if col not in CSV_COLUMNS:
            raise ProfileError(
                f"{source}, row {header_line}: unknown column {col!r} in the header. {_suggest(col, CSV_COLUMNS)} "
                "The first row must name the columns, e.g. 'topic,value,aliases'.",
                source=source,
                line=header_line,
                field=col,
            )
    for required in ("topic", "value"):
        if required not in columns:
            raise ProfileError(
                f"{source}, row {header_line}: the header has no {required!r} column (got {header!r}). "
                "The first row must name the columns, e.g. 'topic,value,aliases'.",
                source=source,
                line=header_line,
                field=required,
            )
    if len(set(columns)) != len(columns):
        raise ProfileError(f"{source}, row {header_line}: a column is named twice in the header.", source=source)
    facts: list[dict[str, Any]] = []
    for i, (line, row) in enumerate(rows[1:]):
        if len(row) > len(columns):
            extra = row[len(columns) :]
            if any(cell.strip() for cell in extra):
                raise ProfileError(
                    f"{source}, row {line}: {len(row)} cells but the header names {len(columns)} columns "
                    f"(extra {_short(extra)}). Quote values that contain commas.",
                    source=source,
                    line=line,
                )
        fact: dict[str, Any] = {}
        for col, cell in zip(columns, row, strict=False):
            if col in ("aliases", "questions"):
                fact[col] = [part.strip() for part in cell.split("|") if part.strip()]
            else:
                fact[col] = cell
            lines[("facts", i, col)] = line
        lines[("facts", i)] = line
        facts.append(fact)
    lines[("facts",)] = header_line
    if "person" not in columns:
        return {"facts": facts}, lines.get
    return _csv_family(facts, lines, header_line, source)


def _csv_family(
    facts: list[dict[str, Any]], lines: dict[Path_, int], header_line: int, source: str
) -> tuple[Any, LineOf]:
    """A CSV with a ``person`` column is a family profile: a blank person is a shared fact.

    A person named in one row only, and very like a name used in other rows ("Marko" beside "Marco" x5), is taken
    for a typo and refused: silently making a new person of it would split that person's facts in two.
    """
    rows_of: dict[str, list[int]] = {}
    spelling: dict[str, str] = {}
    for i, fact in enumerate(facts):
        name = str(fact.get("person") or "").strip()
        key = name_key(name)
        if key:
            rows_of.setdefault(key, []).append(i)
            spelling.setdefault(key, name)
    for key, rows in rows_of.items():
        if len(rows) != 1:
            continue
        others = [k for k, r in rows_of.items() if k != key and len(r) > 1]
        close = difflib.get_close_matches(key, others, n=1, cutoff=0.8)
        if close:
            line = lines.get(("facts", rows[0]))
            raise ProfileError(
                f"{source}, row {line}: person {spelling[key]!r} is named in no other row; did you mean "
                f"{spelling[close[0]]!r}? (A new person needs their name on each of their rows.)",
                source=source,
                line=line,
                field="person",
            )
    people: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    shared: list[dict[str, Any]] = []
    out: dict[Path_, int] = {("people",): header_line, ("shared",): header_line}
    for i, fact in enumerate(facts):
        key = name_key(str(fact.pop("person", "") or ""))
        if key:
            if key not in index:
                index[key] = len(people)
                people.append({"name": spelling[key], "facts": []})
                out[("people", index[key])] = lines[("facts", i)]
                out[("people", index[key], "name")] = lines[("facts", i)]
            target, path = people[index[key]]["facts"], ("people", index[key], "facts")
        else:
            target, path = shared, ("shared",)
        j = len(target)
        target.append(fact)
        for key_path, line in lines.items():
            if len(key_path) >= 2 and key_path[0] == "facts" and key_path[1] == i:
                out[(*path, j, *key_path[2:])] = line
    data: dict[str, Any] = {"people": people} if people else {"facts": shared}
    if people and shared:
        data["shared"] = shared
    if not people:  # a person column left blank everywhere: a one-person profile
        out.update({key: line for key, line in lines.items()})
    return data, out.get


# -- validation of the plain data ---------------------------------------------------------------------------------

TOP_KEYS = ["user_name", "assistant_name", "facts", "people", "shared"]
FACT_KEYS = ["topic", "value", "aliases", "questions", "private"]
PERSON_KEYS = ["name", "relation", "aliases", "facts"]
_TRUE = {"true", "yes", "y", "1", "private"}
_FALSE = {"false", "no", "n", "0", "", "public"}


def _text(ctx: _Ctx, value: Any, path: Path_, *, required: bool = True) -> str | None:
    if value is None:
        if required:
            raise ctx.error(path, "is empty; give it a value")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        kind = {dict: "a mapping", list: "a list", bool: "true/false"}.get(type(value), type(value).__name__)
        raise ctx.error(path, f"must be text, not {kind}", value)
    return str(value)


def _text_list(ctx: _Ctx, value: Any, path: Path_, limit: int) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list):
        raise ctx.error(path, "must be a list of text", value)
    if len(value) > limit:
        raise ctx.error(path, f"has {len(value)} entries; the limit is {limit}")
    return [_text(ctx, item, (*path, i)) or "" for i, item in enumerate(value)]


def _validation_problem(exc: ValidationError) -> tuple[tuple[Any, ...], str, Any]:
    err = exc.errors()[0]
    msg = str(err.get("msg", "is invalid")).removeprefix("Value error, ")
    return tuple(err.get("loc", ())), msg, err.get("input", ...)


def _flag(ctx: _Ctx, value: Any, path: Path_) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.strip().casefold() in _TRUE | _FALSE:
        return value.strip().casefold() in _TRUE
    raise ctx.error(path, "must be true or false", value)


def _facts_of(
    ctx: _Ctx,
    raw_facts: Any,
    path: Path_,
    owner: str | None,
    *,
    required: bool,
    what: str = "a profile needs at least one fact",
) -> list[Fact]:
    """Validate one list of facts (a one-person profile's, a person's, or the shared ones)."""
    if raw_facts is None or raw_facts == []:
        if required:
            raise ctx.error(path, f"is {'missing or empty' if raw_facts is None else 'empty'}; {what}")
        return []
    if not isinstance(raw_facts, list):
        raise ctx.error(path, "must be a list of facts (each with topic and value)", raw_facts)
    if len(raw_facts) > MAX_FACTS:
        raise ctx.error(path, f"has {len(raw_facts)} facts; the limit is {MAX_FACTS}")
    facts: list[Fact] = []
    first_seen: dict[str, tuple[int, Fact]] = {}
    for i, raw in enumerate(raw_facts):
        here: Path_ = (*path, i)
        if not isinstance(raw, dict):
            raise ctx.error(here, "must be a mapping with topic and value", raw)
        for key in raw:
            if key not in FACT_KEYS:
                raise ctx.error((*here, key), "is not a known field", hint=_suggest(str(key), FACT_KEYS))
        if "topic" not in raw:
            raise ctx.error(here, "has no topic; add 'topic: ...' (what the fact is about, e.g. dog's name)")
        if "value" not in raw:
            raise ctx.error(here, "has no value; add 'value: ...'")
        private = _flag(ctx, raw.get("private"), (*here, "private"))
        if private and owner is None:
            raise ctx.error(
                (*here, "private"),
                "is only for a person's facts (a shared fact is the whole family's; a one-person profile's facts "
                "are its user's)",
            )
        fields = {
            "topic": _text(ctx, raw["topic"], (*here, "topic")),
            "value": _text(ctx, raw["value"], (*here, "value")),
            "aliases": _text_list(ctx, raw.get("aliases"), (*here, "aliases"), MAX_ALIASES),
            "questions": _text_list(ctx, raw.get("questions"), (*here, "questions"), MAX_QUESTIONS),
            "owner": owner,
            "private": private,
        }
        try:
            fact = Fact(**fields)
        except ValidationError as exc:
            loc, msg, value = _validation_problem(exc)
            words = msg.split(" ", 1)
            problem = words[1] if len(words) == 2 and words[0] in {"topic", "value", "alias", "question"} else msg
            raise ctx.error((*here, *loc), problem, value) from None
        key = same_topic_key(fact.topic)
        if key in first_seen:
            j, seen = first_seen[key]
            if seen.value.casefold() != fact.value.casefold():
                first_line = ctx.line_of((*path, j, "value")) or ctx.line_of((*path, j))
                line = ctx.line_of((*here, "value")) or ctx.line_of(here)
                whose = f"{owner}'s " if owner else ""
                raise ProfileError(
                    f"{ctx.source}: {whose}topic '{fact.topic}' has two values: '{seen.value}' ({ctx.unit} "
                    f"{first_line}) and '{fact.value}' ({ctx.unit} {line}). "
                    "Keep one (put other spellings in aliases).",
                    source=ctx.source,
                    line=line,
                    field=_field_name((*here, "value")),
                )
            logger.info("merged a repeated topic (fact %d) into fact %d", i, j)
        else:
            first_seen[key] = (i, fact)
        facts.append(fact)
    return facts


def _people_of(ctx: _Ctx, raw_people: Any) -> tuple[list[Person], list[Fact]]:
    """Validate a family profile's ``people:``: each person, their names, and their facts."""
    path: Path_ = ("people",)
    if not isinstance(raw_people, list) or not raw_people:
        raise ctx.error(path, "must be a list of people (each with a name and facts)", raw_people)
    if len(raw_people) > MAX_PEOPLE:
        raise ctx.error(path, f"has {len(raw_people)} people; the limit is {MAX_PEOPLE}")
    people: list[Person] = []
    facts: list[Fact] = []
    names: dict[str, tuple[int, str]] = {}
    for i, raw in enumerate(raw_people):
        here: Path_ = (*path, i)
        if not isinstance(raw, dict):
            raise ctx.error(here, "must be a mapping with name and facts", raw)
        for key in raw:
            if key not in PERSON_KEYS:
                raise ctx.error((*here, key), "is not a known field", hint=_suggest(str(key), PERSON_KEYS))
        if "name" not in raw:
            raise ctx.error(here, "has no name; add 'name: ...' (how this person says who is asking)")
        fields = {
            "name": _text(ctx, raw["name"], (*here, "name")),
            "relation": _text(ctx, raw.get("relation"), (*here, "relation"), required=False),
            "aliases": _text_list(ctx, raw.get("aliases"), (*here, "aliases"), MAX_ALIASES),
        }
        try:
            person = Person(**fields)
        except ValidationError as exc:
            loc, msg, value = _validation_problem(exc)
            words = msg.split(" ", 1)
            problem = words[1] if len(words) == 2 and words[0] in {"name", "relation", "alias"} else msg
            raise ctx.error((*here, *loc), problem, value) from None
        for field, name in (("name", person.name), ("relation", person.relation), *(
            (("aliases", j), a) for j, a in enumerate(person.aliases)
        )):  # fmt: skip
            if name is None:
                continue
            field_path = (*here, *field) if isinstance(field, tuple) else (*here, field)
            key = name_key(name)
            if key in names:
                first_i, first_name = names[key]
                first = ctx.line_of((*path, first_i)) or "?"
                raise ctx.error(
                    field_path,
                    f"is already used by {first_name} ({ctx.unit} {first}); every name, relation and alias must "
                    "point to one person",
                    name,
                )
            names[key] = (i, person.name)
        people.append(person)
        facts += _facts_of(ctx, raw.get("facts"), (*here, "facts"), person.name, required=False)
    return people, facts


def _to_profile(data: Any, ctx: _Ctx, user_name: str | None) -> Profile:
    if isinstance(data, list):  # a bare list of facts is accepted as the facts
        data = {"facts": data}
        inner = ctx.line_of
        ctx = _Ctx(ctx.source, lambda p: inner(p[1:]) if p and p[0] == "facts" else inner(p), ctx.unit)
    if data is None:
        raise ctx.error((), "is empty: a profile needs user_name and facts")
    if not isinstance(data, dict):
        raise ctx.error((), "must be a mapping with user_name and facts", data)
    for key in data:
        if key not in TOP_KEYS:
            raise ctx.error((key,), "is not a known field", hint=_suggest(str(key), TOP_KEYS))
    family = data.get("people") is not None
    name = user_name if user_name is not None else _text(ctx, data.get("user_name"), ("user_name",), required=False)
    if name is None and not family:
        raise ctx.error(("user_name",), "is missing; add 'user_name: <your name>' (or pass --user-name)")
    assistant = _text(ctx, data.get("assistant_name"), ("assistant_name",), required=False)
    for field, value in (("user_name", name), ("assistant_name", assistant)):
        if value is None:
            continue
        try:
            _clean_text(value, what=field, limit=MAX_NAME_CHARS)
        except ValueError as exc:
            raise ctx.error((field,), str(exc).removeprefix(f"{field} "), value) from None

    people: list[Person] = []
    if family:
        if data.get("facts") not in (None, []):
            raise ctx.error(
                ("facts",),
                "cannot sit beside people: put each fact under its person's facts, or under shared (the family's)",
            )
        people, facts = _people_of(ctx, data["people"])
        facts += _facts_of(ctx, data.get("shared"), ("shared",), None, required=False)
        if not facts:
            raise ctx.error(("people",), "hold no facts; give a person facts, or add shared facts")
        if len(facts) > MAX_FACTS:
            raise ctx.error(("people",), f"hold {len(facts)} facts in all; the limit is {MAX_FACTS}")
        shared = {same_topic_key(f.topic): f for f in facts if f.owner is None}
        for i, person in enumerate(people):
            for j, fact in enumerate(f for f in facts if f.owner == person.name):
                if same_topic_key(fact.topic) in shared:
                    raise ctx.error(
                        ("people", i, "facts", j, "topic"),
                        f"is also a shared fact; keep it in one place (shared facts are everyone's: "
                        f"'{shared[same_topic_key(fact.topic)].value}')",
                        fact.topic,
                    )
        if name is None:
            names = [p.name for p in people]
            name = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
            name = name if len(name) <= MAX_NAME_CHARS else "the family"
    else:
        if data.get("shared") is not None:
            raise ctx.error(("shared",), "is for family profiles (with people:); a one-person profile lists facts")
        facts = _facts_of(ctx, data.get("facts"), ("facts",), None, required=True)
    kwargs: dict[str, Any] = {"user_name": name, "facts": facts, "people": people}
    if assistant is not None:
        kwargs["assistant_name"] = assistant
    try:
        return Profile(**kwargs)
    except ValidationError as exc:  # pragma: no cover - every rule above is checked first, with a line number
        loc, msg, value = _validation_problem(exc)
        raise ctx.error(tuple(loc), msg, value) from None


def parse_profile(
    data: str | bytes,
    *,
    fmt: Format,
    source: str = "<input>",
    user_name: str | None = None,
) -> Profile:
    """Parse and validate a profile from text or bytes.

    Args:
        data: the file's content (bytes must be UTF-8).
        fmt: "yaml", "json" or "csv" (CSV columns: topic,value[,aliases][,questions]; lists separated by "|").
        source: the name used in error messages (usually the file name).
        user_name: the user's name; overrides the file's and is the only source for CSV (default "User").

    Returns:
        The validated profile; repeated topics with the same value are merged (aliases unioned).

    Raises:
        ProfileError: naming file, line (CSV: row), field and value for anything malformed.
    """
    text = _decode(data, source)
    if fmt == "yaml":
        parsed, line_of = _parse_yaml(text, source)
        ctx = _Ctx(source, line_of)
    elif fmt == "json":
        parsed, line_of = _parse_json(text, source)
        ctx = _Ctx(source, line_of)
    elif fmt == "csv":
        parsed, line_of = _parse_csv(text, source)
        ctx = _Ctx(source, line_of, unit="row")
        if user_name is None:
            user_name = "User"
    else:
        raise ProfileError(f"{source}: unknown profile format {fmt!r}; use yaml, json or csv.", source=source)
    return _to_profile(parsed, ctx, user_name)


def load_profile(path: str | Path, *, user_name: str | None = None) -> Profile:
    """Load and validate a profile file (.yaml/.yml, .json or .csv, chosen by suffix).

    Args:
        path: the profile file.
        user_name: the user's name; overrides the file's (CSV files have none: default "User").

    Raises:
        ProfileError: the file is missing, too large, not UTF-8, or malformed (the message says where and why).
    """
    file = Path(path)
    fmt = FORMATS.get(file.suffix.lower())
    if fmt is None:
        raise ProfileError(
            f"{file}: unknown profile type {file.suffix or '(no suffix)'!r}; use .yaml, .yml, .json or .csv.",
            source=str(file),
        )
    try:
        size = file.stat().st_size
        if not file.is_file():
            raise ProfileError(f"{file}: not a file.", source=str(file))
        if size > MAX_FILE_BYTES:
            raise ProfileError(
                f"{file}: the file is {size:,} bytes; a profile may be at most {MAX_FILE_BYTES:,} bytes.",
                source=str(file),
            )
        data = file.read_bytes()
    except FileNotFoundError:
        raise ProfileError(f"{file}: no such profile file.", source=str(file)) from None
    except OSError as exc:
        raise ProfileError(f"{file}: cannot read the profile ({exc.strerror or exc}).", source=str(file)) from None
    return parse_profile(data, fmt=fmt, source=str(file), user_name=user_name)


def profile_from_rows(
    rows: Any,
    *,
    user_name: str,
    assistant_name: str | None = None,
    source: str = "facts table",
    people: list[Person] | None = None,
) -> Profile:
    """Build a profile from table rows ``[topic, value, aliases, person, private]`` (aliases separated by "|"), as the
    web app edits.

    The last two cells are optional: a row with a ``person`` is that person's fact, and a table with any person is a
    family profile (a blank person is a shared fact; ``private`` is yes/true/1 or blank). Blank rows are skipped; rows
    are numbered from 1 as the user sees them, and every problem names that row, the field and the value, exactly
    like a file's.

    Args:
        rows: a sequence of rows; each row a sequence of up to five cells (missing cells count as empty).
        user_name: the user's name (for a family: the household's).
        assistant_name: the assistant's name (default "Andraeus").
        source: how the table is named in error messages.
        people: the family's people as they were (their relations and aliases are kept for the names still used).

    Raises:
        ProfileError: naming the row, the field and the value.
    """
    facts: list[dict[str, Any]] = []
    lines: dict[Path_, int] = {}

    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and value != value):  # None or NaN from a DataFrame
            return ""
        if isinstance(value, bool):
            return "yes" if value else ""
        return str(value)

    family = False
    for number, row in enumerate(rows or [], start=1):
        cells = [cell(c) for c in list(row)[:5]] + [""] * max(0, 5 - len(list(row)[:5]))
        if not any(c.strip() for c in cells):
            continue
        i = len(facts)
        for field in ("topic", "value", "aliases", "person", "private"):
            lines[("facts", i, field)] = number
        lines[("facts", i)] = number
        fact: dict[str, Any] = {
            "topic": cells[0],
            "value": cells[1],
            "aliases": [a.strip() for a in cells[2].split("|") if a.strip()],
            "person": cells[3],
        }
        if cells[4].strip():
            fact["private"] = cells[4]
        family = family or bool(cells[3].strip())
        facts.append(fact)
    ctx_lines: LineOf = lines.get
    data: dict[str, Any]
    if family:
        data, ctx_lines = _csv_family(facts, lines, 0, source)
        known = {name_key(p.name): p for p in people or []}
        for person in data["people"]:
            before = known.get(name_key(person["name"]))
            if before is not None:
                person["name"] = before.name
                person["relation"] = before.relation
                person["aliases"] = list(before.aliases)
    else:
        for fact in facts:
            fact.pop("person", None)
        data = {"facts": facts}
    data["user_name"] = user_name
    if assistant_name is not None and assistant_name.strip():
        data["assistant_name"] = assistant_name
    return _to_profile(data, _Ctx(source, ctx_lines, unit="row"), None)
