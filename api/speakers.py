"""Who is asking a family's fine-tuned model: the chat request's OpenAI ``user`` field names the speaker.

A family adapter answers per speaker (``ChatModel.stream(..., speaker=...)``): the speaker's system prompt, and no
value of someone else's private fact. Here ``user`` (which OpenAI clients send as an end-user id) is matched against
the family by name, relation or alias, any case; a name that is no one in the family is a 400 naming ``user``. For
base models and one-person adapters ``user`` is ignored, as it always was.

``Service.complete`` takes no speaker yet, so this module starts the completion itself: locally through the core's
``Completion`` with the speaker bound to the chat model, and with an external engine by sending the speaker's
system prompt and checking the whole answer with the core's disclosure guard before any of it is sent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from andraeus_core import Adapter, AndraeusError, Completion, GenerationConfig, Profile, Service

from .errors import ApiError

logger = logging.getLogger("andraeus.api")


def family_profile(service: Service, tenant: str, model_id: str) -> Profile | None:
    """The family profile of one of the tenant's fine-tuned models; None for a base preset, a one-person adapter, an
    adapter without its private file, or an unknown model (whose 404 comes from the completion itself)."""
    if model_id in service.base_models:
        return None
    record = service.store.get_model(tenant, model_id)
    if record is None:
        return None
    profile = Adapter(record["path"]).private.profile
    return profile if profile is not None and profile.is_family else None


def speakers_of(service: Service, tenant: str, model_id: str) -> list[str] | None:
    """The names a family model's ``user`` may give (None: not a family's model); what ``/v1/models`` shows."""
    try:
        profile = family_profile(service, tenant, model_id)
    except AndraeusError as exc:  # a damaged private file: listing the models still works, chatting says why not
        logger.warning("Could not read a model's profile (%s)", type(exc).__name__)
        return None
    return [p.name for p in profile.people] if profile is not None else None


def speaker_for(profile: Profile | None, user: str | None) -> str | None:
    """The family member ``user`` names (their name), None when it names nobody in particular or the model is not a
    family's.

    Raises:
        ApiError: 400 ``user``: the model is a family's and ``user`` is none of its people (the message lists them).
    """
    if profile is None or user is None or not user.strip():
        return None
    person = profile.person(user.strip())
    if person is None:
        names = ", ".join(p.name for p in profile.people)
        shown = user.strip() if len(user.strip()) <= 80 else user.strip()[:80] + "…"
        raise ApiError(
            400,
            f"This model is a family's: 'user' says who is asking, and {shown!r} is none of them. Send one of: "
            f"{names} (a relation or alias works too), or leave 'user' out to ask as someone it does not know.",
            param="user",
            code="unknown_speaker",
        )
    return person.name


class SpeakingChat:
    """A loaded ``ChatModel`` that answers as one family member: ``Completion`` calls ``stream`` and ``prompt_ids``,
    which this passes on with the speaker (the prompt counted is the one answered); everything else is the model's."""

    def __init__(self, chat: Any, speaker: str | None):
        self.chat = chat
        self.speaker = speaker

    def __getattr__(self, name: str) -> Any:
        return getattr(self.chat, name)

    def prompt_ids(self, messages: Any, system: str | None = None) -> Any:
        system, _ = self.chat.speaker_prompt(self.speaker, system)
        return self.chat.prompt_ids(messages, system)

    def stream(self, messages: Any, config: Any = None, **kwargs: Any) -> Iterator[str]:
        return self.chat.stream(messages, config, speaker=self.speaker, **kwargs)


class GuardedCompletion:
    """An external engine's completion checked whole before any of it is sent: an answer that states a value the
    speaker may not be told becomes the refusal (what ``ChatModel.stream`` does for a local answer)."""

    def __init__(self, completion: Any, guard: Any, question: str):
        self.completion = completion
        self.guard = guard
        self.question = question
        self.text = ""

    def __getattr__(self, name: str) -> Any:  # prompt_tokens, completion_tokens, finish_reason, route
        return getattr(self.completion, name)

    def __iter__(self) -> Iterator[str]:
        text = "".join(self.completion)
        refused = self.guard.check(text, self.question)
        if refused is None and getattr(self.completion, "route", "adapter") in (None, "adapter"):
            refused = self.guard.check_first_person(text, self.question)  # the adapter's answer about someone else
        if refused is not None:
            logger.info("an answer stated a fact the speaker may not be told; sent the refusal instead")
            text = refused
        self.text = text
        if text:
            yield text

    def cancel(self) -> None:
        self.completion.cancel()


def _with_system(messages: list[dict[str, str]], system: str | None) -> list[dict[str, str]]:
    """The conversation with ``system`` as its system prompt (replacing its own, as ChatModel.build_messages does)."""
    if system is None:
        return messages
    rest = messages[1:] if messages and messages[0]["role"] == "system" else messages
    return [{"role": "system", "content": system}, *rest]


def start_completion(
    service: Service,
    tenant: str,
    model_id: str,
    messages: list[dict[str, str]],
    config: GenerationConfig,
    *,
    user: str | None,
    gate: bool,
    timeout_s: float | None,
) -> Any:
    """``service.complete`` with the speaker ``user`` names when the model is a family's (see the module doc).

    Raises:
        ApiError: 400 ``user`` for a name that is no one in the family. AndraeusError: as ``service.complete``.
    """
    profile = family_profile(service, tenant, model_id)
    if profile is None:
        return service.complete(tenant, model_id, messages, config, gate=gate, timeout_s=timeout_s)
    speaker = speaker_for(profile, user)
    chat = service.chat_model(tenant, model_id)
    if service.inference is None:
        return Completion(SpeakingChat(chat, speaker), messages, config, gate=gate, timeout_s=timeout_s)
    # The engine gets the speaker's system prompt; what it answers is checked here, with the speaker's guard.
    system, guard = chat.speaker_prompt(speaker)
    messages = _with_system(messages, system)
    completion = service.complete(tenant, model_id, messages, config, gate=gate, timeout_s=timeout_s)
    return GuardedCompletion(completion, guard, messages[-1]["content"]) if guard else completion
