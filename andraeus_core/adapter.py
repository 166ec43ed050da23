"""The adapter directory as a type: its files, its metadata, and how it is checked, written and attached.

An adapter directory is what carries the work from training to evaluation, chat, the Hub, the REST service and the
web app. Every other module reads and writes adapters through this one, so the file names below appear nowhere else:

=============================  ===========================================================  =====================
file                           holds                                                        leaves the machine?
=============================  ===========================================================  =====================
``adapter_config.json``        PEFT's LoRA configuration                                    yes (push, zip)
``adapter_model.safetensors``  PEFT's LoRA weights (only safetensors is ever loaded)        yes
``andraeus.json``              :class:`AdapterMeta`: base model, settings, metrics          yes (no fact values,
                                                                                            no user name)
``private.json``               :class:`AdapterPrivate`: the system prompt and the profile   never
``heldout.jsonl``              the held-out split (chat JSONL with meta), never trained on  never
``gate.safetensors``           the gate (:mod:`andraeus_core.gate`): a router over the      yes (optional)
                               frozen base model's features; its meta in ``andraeus.json``
=============================  ===========================================================  =====================

More files join by adding an :class:`AdapterFile` to :data:`FILES` (say whether it is required and whether it may be
shared); the Hub's upload and download lists follow from it. ``andraeus.json`` is versioned (``schema_version``):
:meth:`AdapterMeta.from_json` upgrades older files step by step, so every adapter ever written still loads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import adapters_dir
from .dataset import ChatExample, write_jsonl
from .errors import AdapterError, ConfigError
from .fsutil import PRIVATE_FILE_MODE, atomic_write, publish_dir, safe_name
from .gate import Gate, GateMeta, profile_names, subject_keywords
from .models import LoadedModel
from .profile import Fact, Profile

logger = logging.getLogger(__name__)

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
META_FILE = "andraeus.json"
PRIVATE_FILE = "private.json"
HELDOUT_FILE = "heldout.jsonl"
GATE_FILE = "gate.safetensors"


@dataclass(frozen=True)
class AdapterFile:
    """One file of an adapter directory.

    Attributes:
        name: the file name.
        required: an adapter without it cannot be loaded (the others are optional: a pulled adapter has no private
            files, a LoRA adapter made elsewhere has no ``andraeus.json``).
        shareable: it may leave the machine (Hub push, zip download); the others hold the user's facts.
        description: what it holds.
    """

    name: str
    required: bool
    shareable: bool
    description: str


FILES: tuple[AdapterFile, ...] = (
    AdapterFile(CONFIG_FILE, True, True, "PEFT's LoRA configuration"),
    AdapterFile(WEIGHTS_FILE, True, True, "PEFT's LoRA weights (safetensors; pickled weights are never loaded)"),
    AdapterFile(META_FILE, False, True, "public metadata (AdapterMeta): no fact value, no user name"),
    AdapterFile(PRIVATE_FILE, False, False, "the system prompt and the profile (AdapterPrivate)"),
    AdapterFile(HELDOUT_FILE, False, False, "the held-out split, chat JSONL with meta"),
    AdapterFile(GATE_FILE, False, True, "the gate's router weights (safetensors; GateMeta in andraeus.json)"),
)
REQUIRED_FILES: tuple[str, ...] = tuple(f.name for f in FILES if f.required)
SHAREABLE_FILES: tuple[str, ...] = tuple(f.name for f in FILES if f.shareable)
#: What training publishes at the least: a directory with these is a finished adapter.
COMPLETE_FILES: tuple[str, ...] = (*REQUIRED_FILES, META_FILE)


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AdapterError(f"Cannot read '{path}': {exc.strerror or exc}.", param="adapter") from None
    except ValueError as exc:
        raise AdapterError(
            f"'{path}' is not valid JSON (line {getattr(exc, 'lineno', '?')}).", param="adapter"
        ) from None
    if not isinstance(data, dict):
        raise AdapterError(f"'{path}' must hold a JSON object.", param="adapter")
    return data


def _dumps(data: dict[str, Any]) -> str:
    # ensure_ascii=False: a value written as "In\u00e9s" would slip past the Hub's leak check, which reads text.
    return json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"


def _invalid(path: Path, exc: ValidationError) -> AdapterError:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first.get("loc", ())) or "?"
    return AdapterError(
        f"'{path}': field '{field}': {first.get('msg')} (got {first.get('input')!r}).", param="adapter"
    )


# ----------------------------------------------------------------------------------------------------------------
# andraeus.json

#: The layout of ``andraeus.json`` this code writes. 1 = the first layout (``"format": 1``, or no version at all);
#: 3 adds the lineage (``version``, ``parent``, ``changes``, ``lineage``); 4 the gate's ``pooling`` (its features may
#: include the last token's states, which changes ``gate.safetensors``'s shapes).
SCHEMA_VERSION = 4


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 carried ``"format": 1`` (or nothing); version 2 names it ``schema_version``. Fields are the same."""
    return {key: value for key, value in data.items() if key != "format"}


def _v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    """Version 3 adds the lineage fields, all optional: an adapter written before it reads as version 1 of its own
    lineage (the field's default), and its file is written back without fields it never had."""
    return dict(data)


def _v3_to_v4(data: dict[str, Any]) -> dict[str, Any]:
    """Version 4 records what the gate's features are (``gate.pooling``); every gate before it read the question's
    mean hidden states only."""
    gate = data.get("gate")
    if isinstance(gate, dict) and "pooling" not in gate:
        return {**data, "gate": {**gate, "pooling": "mean"}}
    return dict(data)


#: ``_UPGRADES[n]`` turns a version-n object into version n+1. Append one when the layout changes; never edit one.
_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}


class Timings(BaseModel):
    """Wall-clock seconds of a training run."""

    model_config = ConfigDict(extra="allow")

    prepare_seconds: float | None = Field(None, description="Loading the model and building the dataset.")
    load_seconds: float | None = Field(None, description="Of prepare: loading the base model.")
    data_seconds: float | None = Field(
        None, description="Of prepare: the phrasings and the base model's guard answers (those not cached yet)."
    )
    gate_seconds: float | None = Field(None, description="Of prepare: fitting the gate.")
    train_seconds: float | None = Field(None, description="The optimiser steps (and early-stop probes).")
    probe_seconds: float | None = Field(None, description="Of train: the early-stop probes.")
    total_seconds: float | None = Field(None, description="The whole run, writing the adapter included.")


class TrainMetrics(BaseModel):
    """What a training run measured (numbers only: nothing here may name a fact)."""

    model_config = ConfigDict(extra="allow")

    steps: int | None = Field(None, description="Optimiser steps done.")
    planned_steps: int | None = Field(None, description="Optimiser steps planned (early stop may end sooner).")
    epochs: float | None = Field(None, description="Epochs done, fractional.")
    final_loss: float | None = Field(None, description="Loss of the last step.")
    losses: list[float] = Field(default_factory=list, description="Loss of every step.")
    tokens_per_epoch: int | None = Field(None, description="Training tokens in one epoch (no padding).")
    tokens_per_second: float | None = Field(None, description="Training throughput.")
    early_stop_epoch: int | None = Field(None, description="The epoch after which the early stop ended the run.")
    probes: list[dict[str, float]] = Field(default_factory=list, description="Early-stop probe recall per epoch.")
    peak_rss_mb: float | None = Field(None, description="Peak resident memory of the process, in MB.")
    resumed_from_step: int | None = Field(None, description="The checkpoint step a resumed run started from.")


class HubOrigin(BaseModel):
    """Where a pulled adapter came from (recorded by a pull)."""

    model_config = ConfigDict(extra="allow")

    repo_id: str = Field(description="owner/name on the Hub.")
    revision: str = Field(description="The commit sha that was downloaded (pinned).")
    requested_revision: str | None = Field(None, description="What was asked for: a branch, tag or sha.")
    pulled_at: str | None = Field(None, description="ISO time of the pull.")


ChangeKind = Literal["added", "removed", "changed", "renamed", "aliases", "questions"]
Method = Literal["train", "update", "full"]


class TopicChange(BaseModel):
    """One fact's change between an adapter and the one that replaced it: topics only, never a value."""

    model_config = ConfigDict(extra="forbid")

    kind: ChangeKind = Field(
        description="added, removed, changed (new value), renamed (same value, new topic), aliases (only the "
        "aliases changed) or questions (only the user's own questions changed)."
    )
    topic: str = Field(description="The topic (in the new profile; for a removed fact, in the old one).")
    old_topic: str | None = Field(None, description="For a renamed fact: its topic before.")


class ParentRef(BaseModel):
    """The adapter an updated adapter was made from."""

    model_config = ConfigDict(extra="allow")

    version: int = Field(description="The parent's version in the lineage.")
    weights_sha256: str = Field(description="sha256 of the parent's LoRA weights file.")
    repo_id: str | None = Field(None, description="The Hub repo the parent was pulled from, if it was.")
    revision: str | None = Field(None, description="The Hub commit the parent was pulled at, if it was.")


class LineageEntry(BaseModel):
    """One earlier adapter of a lineage, as its child remembers it (the parent's directory may be long gone)."""

    model_config = ConfigDict(extra="allow")

    version: int = Field(description="Its version: 1 for the first adapter, then 2, 3, ...")
    weights_sha256: str | None = Field(None, description="sha256 of its LoRA weights file.")
    created: str | None = Field(None, description="When it was written (ISO 8601).")
    method: Method = Field(
        "train", description="train (the first), update (from its parent's weights) or full (retrained)."
    )
    changes: list[TopicChange] = Field(default_factory=list, description="What changed from its parent.")


class AdapterMeta(BaseModel):
    """The public metadata of an adapter (``andraeus.json``): never a fact value, never the user's name.

    Fields this code does not know (written by a newer version, or added by hand) are kept as they are and written
    back unchanged. Only the fields given (or read) are written: an absent field stays absent.
    """

    model_config = ConfigDict(extra="allow")

    schema_version: int = Field(SCHEMA_VERSION, description="Layout version of this file.")
    base_model: str | None = Field(None, description="The base model: a preset, a local directory or a Hub id.")
    quantize: str | None = Field(None, description="'4bit' when trained as QLoRA.")
    config: dict[str, Any] = Field(default_factory=dict, description="The TrainConfig used (out_dir excluded).")
    versions: dict[str, str] = Field(default_factory=dict, description="Versions of the libraries that trained it.")
    device: str | None = Field(None, description="'cpu' or 'cuda'.")
    profile_hash: str | None = Field(None, description="sha256 of the profile (or chat data) trained on.")
    topics: list[str] = Field(default_factory=list, description="The profile's topics (never the values).")
    dataset: dict[str, Any] = Field(default_factory=dict, description="Example counts per split, kind, dimension.")
    timings: Timings = Field(default_factory=Timings, description="How long the run took.")
    metrics: TrainMetrics = Field(default_factory=TrainMetrics, description="What the run measured.")
    created: str | None = Field(None, description="UTC time the adapter was written (ISO 8601).")
    hub: HubOrigin | None = Field(None, description="Set by a pull: the repo and pinned commit.")
    eval: dict[str, Any] | None = Field(None, description="Evaluation numbers, in copies pushed to the Hub.")
    gate: GateMeta | None = Field(None, description="The gate's layers, thresholds and held-out accuracy.")
    version: int = Field(1, description="Its version in its lineage: 1 when trained afresh, parent's + 1 after.")
    method: Method | None = Field(
        None, description="How it was made: train, update (from its parent's weights) or full (retrained)."
    )
    parent: ParentRef | None = Field(None, description="The adapter it replaced (updates and full retrains).")
    changes: list[TopicChange] = Field(default_factory=list, description="The facts changed from its parent.")
    lineage: list[LineageEntry] = Field(
        default_factory=list, description="Its ancestors, oldest first (kept here: their directories may be gone)."
    )

    @classmethod
    def from_json(cls, data: dict[str, Any], *, source: str | Path = META_FILE) -> AdapterMeta:
        """Read the object of an ``andraeus.json`` of any version, upgrading older layouts.

        Raises:
            AdapterError: the version is not a number, or a field has the wrong type (the message names it).
        """
        version = data.get("schema_version", data.get("format", 1))
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise AdapterError(f"'{source}': schema_version must be a positive integer, got {version!r}.")
        if version > SCHEMA_VERSION:
            logger.warning(
                "%s was written by a newer Andraeus (schema %d, this one knows %d); unknown fields are kept as is",
                source,
                version,
                SCHEMA_VERSION,
            )
        for step in range(version, SCHEMA_VERSION):
            data = _UPGRADES[step](data)
        if version < SCHEMA_VERSION:
            data = {**data, "schema_version": SCHEMA_VERSION}
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise _invalid(Path(source), exc) from None

    @classmethod
    def load(cls, directory: str | Path) -> AdapterMeta:
        """Read ``andraeus.json`` from an adapter directory.

        Raises:
            AdapterError: the file is missing, not JSON, or invalid.
        """
        path = Path(directory) / META_FILE
        return cls.from_json(_read_json_object(path), source=path)

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to ``andraeus.json``: the version first, then the fields that were set."""
        body = self.model_dump(mode="json", exclude_unset=True, exclude={"schema_version"})
        return {"schema_version": self.schema_version, **body}

    def dumps(self) -> str:
        """The text of ``andraeus.json``."""
        return _dumps(self.to_json())

    def save(self, directory: str | Path) -> Path:
        """Write ``andraeus.json`` into ``directory`` atomically; returns its path."""
        return atomic_write(Path(directory) / META_FILE, self.dumps())


# ----------------------------------------------------------------------------------------------------------------
# private.json


class AdapterPrivate(BaseModel):
    """What an adapter keeps only on this machine (``private.json``): never uploaded, never logged."""

    model_config = ConfigDict(extra="allow")

    system_prompt: str | None = Field(None, description="The system prompt the adapter was trained with.")
    profile: Profile | None = Field(
        None, description="The profile trained on (None when trained from chat examples, which carry none)."
    )
    former_facts: list[Fact] = Field(
        default_factory=list,
        description="Facts an earlier version held and this one does not (a changed fact's old value, a removed "
        "fact), since the lineage was last trained from scratch: their values are still in the weights, so every "
        "later update rehearses that they are gone.",
    )

    @classmethod
    def load(cls, directory: str | Path) -> AdapterPrivate:
        """Read ``private.json`` from an adapter directory.

        Raises:
            AdapterError: the file is missing, not JSON, or invalid.
        """
        path = Path(directory) / PRIVATE_FILE
        try:
            return cls.model_validate(_read_json_object(path))
        except ValidationError as exc:
            raise _invalid(path, exc) from None

    def save(self, directory: str | Path) -> Path:
        """Write ``private.json`` into ``directory`` atomically, readable by its owner only; returns its path."""
        return atomic_write(Path(directory) / PRIVATE_FILE, _dumps(self.model_dump(mode="json")), private=True)


# ----------------------------------------------------------------------------------------------------------------
# The directory


class Adapter:
    """An adapter directory. ``Adapter(path)`` reads nothing; :meth:`load` checks the directory and reads its metadata.

    Attributes:
        path: the directory.
    """

    def __init__(self, path: str | Path, meta: AdapterMeta | None = None, private: AdapterPrivate | None = None):
        self.path = Path(path).expanduser()
        self._meta = meta
        self._private = private

    def __repr__(self) -> str:
        return f"Adapter(path={str(self.path)!r})"

    @classmethod
    def load(cls, path: str | Path) -> Adapter:
        """The adapter in ``path``, checked (:meth:`check`) and with its metadata read.

        Raises:
            AdapterError: the directory is missing or incomplete, or its ``andraeus.json`` is invalid.
        """
        adapter = cls(path).check()
        _ = adapter.meta
        return adapter

    # ------------------------------------------------------------------------------------------------------------
    # reading

    def file(self, name: str) -> Path:
        """The path of one of the adapter's files (a name from :data:`FILES`)."""
        if name not in {f.name for f in FILES}:
            raise ValueError(f"{name!r} is not an adapter file; known: {', '.join(f.name for f in FILES)}")
        return self.path / name

    def check(self) -> Adapter:
        """Make sure the directory holds a loadable LoRA adapter; returns ``self``.

        Raises:
            AdapterError: the directory does not exist, or a required file is missing (weights must be safetensors:
                pickled ``.bin`` weights can run code on load and are never read).
        """
        if not self.path.is_dir():
            raise AdapterError(f"Adapter directory '{self.path}' does not exist.", param="adapter")
        for name in REQUIRED_FILES:
            if not (self.path / name).is_file():
                hint = " (only safetensors weights are loaded)" if name == WEIGHTS_FILE else ""
                raise AdapterError(
                    f"'{self.path}' is not a complete LoRA adapter: {name} is missing{hint}.", param="adapter"
                )
        return self

    def is_complete(self) -> bool:
        """True when every file training publishes at the least is there (so training finished)."""
        return all((self.path / name).is_file() for name in COMPLETE_FILES)

    @property
    def meta(self) -> AdapterMeta:
        """``andraeus.json``; an empty :class:`AdapterMeta` for a LoRA adapter made elsewhere, which has none.

        Raises:
            AdapterError: the file exists but is not valid.
        """
        if self._meta is None:
            has_meta = (self.path / META_FILE).is_file()
            self._meta = AdapterMeta.load(self.path) if has_meta else AdapterMeta()
        return self._meta

    @property
    def private(self) -> AdapterPrivate:
        """``private.json``; an empty :class:`AdapterPrivate` when there is none (e.g. a pulled adapter).

        Raises:
            AdapterError: the file exists but is not valid.
        """
        if self._private is None:
            has_private = (self.path / PRIVATE_FILE).is_file()
            self._private = AdapterPrivate.load(self.path) if has_private else AdapterPrivate()
        return self._private

    def profile(self) -> Profile:
        """The profile the adapter was trained on, from ``private.json``.

        Raises:
            AdapterError: there is no ``private.json`` or it holds no profile.
        """
        if not (self.path / PRIVATE_FILE).is_file():
            raise AdapterError(
                f"'{self.path}' has no {PRIVATE_FILE} (the local copy of the profile); evaluation needs the "
                "profile's values to score unknown/unrelated questions and to build the in-context baseline.",
                param="adapter",
            )
        profile = self.private.profile
        if profile is None:
            raise AdapterError(f"'{self.path / PRIVATE_FILE}' has no 'profile' object.", param="adapter")
        return profile

    def weights_sha256(self) -> str:
        """sha256 of the LoRA weights file: what a child adapter names as its parent.

        Raises:
            AdapterError: the weights file cannot be read.
        """
        digest = hashlib.sha256()
        try:
            with open(self.path / WEIGHTS_FILE, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        except OSError as exc:
            raise AdapterError(f"Cannot read '{self.path / WEIGHTS_FILE}': {exc.strerror or exc}.") from None
        return digest.hexdigest()

    def peft_config(self) -> dict[str, Any]:
        """PEFT's ``adapter_config.json`` as a dict.

        Raises:
            AdapterError: the file is missing or not a JSON object.
        """
        return _read_json_object(self.path / CONFIG_FILE)

    @property
    def base_model(self) -> str | None:
        """The base model it was trained on: ``andraeus.json``'s, else PEFT's ``base_model_name_or_path``."""
        if self.meta.base_model:
            return self.meta.base_model
        try:
            value = self.peft_config().get("base_model_name_or_path")
        except AdapterError:
            return None
        return str(value) if value else None

    @property
    def heldout_path(self) -> Path:
        """Where the held-out split is (or would be)."""
        return self.path / HELDOUT_FILE

    def heldout(self) -> list[tuple[int, Any]] | None:
        """The held-out split as ``(line number, parsed JSON)`` pairs, blank lines skipped.

        Returns None when the adapter has no held-out split (pulled adapters, adapters made elsewhere).

        Raises:
            AdapterError: the file cannot be read or a line is not JSON (the message names file and line).
        """
        if not self.heldout_path.is_file():
            return None
        try:
            text = self.heldout_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AdapterError(f"Cannot read '{self.heldout_path}': {exc}.", param="adapter") from None
        rows: list[tuple[int, Any]] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise AdapterError(
                    f"{self.heldout_path}:{number}: not valid JSON ({exc.msg} at column {exc.colno}).",
                    param="adapter",
                ) from None
        return rows

    def gate(self) -> Gate | None:
        """The adapter's gate, or None when it has none (older adapters, adapters made elsewhere).

        Its known subjects come from the profile when ``private.json`` is here, else from the public topics.

        Raises:
            AdapterError: ``gate.safetensors`` is there but unreadable or does not match its metadata.
        """
        path = self.path / GATE_FILE
        if not path.is_file() or self.meta.gate is None:
            return None
        has_profile = (self.path / PRIVATE_FILE).is_file() and self.private.profile is not None
        topics = self.private.profile.topics() if has_profile else self.meta.topics
        values = self.private.profile.values() if has_profile else []
        if has_profile:  # a family's people are known subjects too ("What's Karim's job?")
            values += [name for person in self.private.profile.people for name in person.names()]
        names = profile_names(self.private.profile) if has_profile else {}
        try:
            return Gate.load(path, self.meta.gate, subject_keywords(topics, values), topics, names)
        except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds; one actionable message
            raise AdapterError(f"'{path}' cannot be read as a gate: {exc}.", param="adapter") from None

    # ------------------------------------------------------------------------------------------------------------
    # using

    def attach(self, loaded: LoadedModel) -> Any:
        """Wrap the loaded base model with this adapter for inference (PEFT ``PeftModel``, eval mode).

        PEFT injects the LoRA layers into ``loaded.model`` itself; use a copy of the base model that nothing else
        needs bare (``disable_adapter()`` gives the base model's answers on the same weights).

        Raises:
            AdapterError: the adapter is incomplete or does not fit the base model.
        """
        from peft import PeftModel

        self.check()
        try:
            model = PeftModel.from_pretrained(loaded.model, str(self.path), is_trainable=False)
        except Exception as exc:  # noqa: BLE001 - PEFT raises many kinds; the user needs one actionable message
            raise AdapterError(
                f"Could not load the adapter in '{self.path}' onto base model '{loaded.name}': {exc}", param="adapter"
            ) from None
        model.eval()
        return model

    # ------------------------------------------------------------------------------------------------------------
    # writing

    @staticmethod
    def default_path(base_model: str, profile_hash: str) -> Path:
        """A new directory under ``$ANDRAEUS_HOME/adapters`` named after the base model, the profile and the time."""
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        return adapters_dir() / f"{safe_name(Path(base_model).name)}-{profile_hash[:8]}-{stamp}"

    @staticmethod
    def check_target(path: str | Path) -> Path:
        """The resolved ``path`` if an adapter may be written there: it does not exist, is empty, or holds an
        adapter (which is then replaced). Anything else is left alone.

        Raises:
            ConfigError: ``path`` is a file or a non-empty directory that is not an Andraeus adapter.
        """
        target = Path(path).expanduser().resolve()
        if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not (target / META_FILE).is_file())):
            raise ConfigError(
                f"Output directory '{target}' exists and is not an Andraeus adapter; choose another --out "
                "(an existing adapter directory is replaced, anything else is left alone).",
                param="out_dir",
            )
        return target

    @classmethod
    def write(
        cls,
        path: str | Path,
        model: Any,
        meta: AdapterMeta,
        private: AdapterPrivate | None = None,
        heldout: Sequence[ChatExample] | None = None,
        gate: Gate | None = None,
    ) -> Adapter:
        """Write a whole adapter directory and publish it in one step: readers see the old adapter or the new one.

        Args:
            path: the adapter directory; an adapter already there is replaced (see :meth:`check_target`).
            model: a PEFT model; its ``save_pretrained`` writes ``adapter_config.json`` and the safetensors weights.
            meta: the public metadata (``andraeus.json``).
            private: the system prompt and profile (``private.json``); None writes none.
            heldout: the held-out examples (``heldout.jsonl``, with their meta); None writes none.
            gate: the fitted gate (``gate.safetensors``; ``meta.gate`` should hold its :class:`GateMeta`).

        Raises:
            ConfigError: ``path`` holds something that is not an adapter.
            OSError: the directory could not be written; nothing was published.
        """
        target = cls.check_target(path)
        with publish_dir(target) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            meta.save(tmp)
            if private is not None:
                private.save(tmp)
            if heldout is not None:
                write_jsonl(heldout, tmp / HELDOUT_FILE, with_meta=True)
                os.chmod(tmp / HELDOUT_FILE, PRIVATE_FILE_MODE)  # the held-out answers quote fact values
            if gate is not None:
                gate.save(tmp / GATE_FILE)
            missing = [name for name in REQUIRED_FILES if not (tmp / name).is_file()]
            if missing:
                raise AdapterError(f"The model did not write {', '.join(missing)}; nothing was published.")
        return cls(target, meta, private)


__all__ = [
    "COMPLETE_FILES",
    "CONFIG_FILE",
    "FILES",
    "GATE_FILE",
    "HELDOUT_FILE",
    "META_FILE",
    "PRIVATE_FILE",
    "REQUIRED_FILES",
    "SCHEMA_VERSION",
    "SHAREABLE_FILES",
    "WEIGHTS_FILE",
    "Adapter",
    "AdapterFile",
    "AdapterMeta",
    "AdapterPrivate",
    "ChangeKind",
    "HubOrigin",
    "LineageEntry",
    "Method",
    "ParentRef",
    "Timings",
    "TopicChange",
    "TrainMetrics",
]
