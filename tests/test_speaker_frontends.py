"""Family adapters through the three doors: `andraeus chat --speaker`, the API's OpenAI `user` field (locally and
through an external engine) and the web app's "Who's asking?" selector.

Mechanics on tiny-random. The adapters are identities (LoRA B = 0, no gate), so an adapter's answer is the base
model's answer to the same conversation: which system prompt was used is read off the answer. The disclosure guard
is forced, not hoped for: one of Dad's private values is set to a word that the model says to Leila anyway, so the
guard must replace that answer (and must not replace Dad's own).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from andraeus_cli import main
from andraeus_core import ChatModel, GenerationConfig, RemoteEngine, Service, Store, load_profile
from andraeus_core.family import refusal, speaker_system_prompt
from andraeus_core.matching import mentioned_values, normalize
from api.deps import ApiSettings
from api.main import create_app
from tests.helpers import serve_in_thread

ROOT = Path(__file__).resolve().parents[1]
FAMILY = ROOT / "examples" / "family_profile.yaml"
QUESTION = "What's my gym locker code?"
KEY = "key-speaker-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
TOKENS = 16
#: Every private value of the family example, and a shared one: none may appear where only names are shown.
FACT_VALUES = ["4471", "Lindqvist", "O negative", "Nordbank", "unicorn77", "Biscuit", "maple-kettle-42"]


def family_dict(karim_private: dict[str, str] | None = None) -> dict[str, Any]:
    """The family example as a profile dict, with Karim's (Dad's) private facts given new values by topic."""
    data = load_profile(FAMILY).model_dump(mode="json")
    for topic, value in (karim_private or {}).items():
        found = [f for f in data["facts"] if f["owner"] == "Karim" and f["topic"] == topic]
        assert len(found) == 1 and found[0]["private"]
        found[0].update(value=value, aliases=[])
    return data


def prompt(name: str | None) -> str:
    """The system prompt a family adapter gets for ``name`` (None: the speaker is unknown)."""
    profile = load_profile(FAMILY)
    return speaker_system_prompt(profile, profile.person(name) if name else None)


def leaked_word(answer: str, question: str = QUESTION) -> str:
    """A word of ``answer`` that, as a private value, the guard would find in it (the longest, for a clear match)."""
    words = sorted({w for w in normalize(answer).split() if w.isalpha() and len(w) >= 3}, key=len, reverse=True)
    for word in words:
        if mentioned_values(answer, [word], question=question):
            return word
    pytest.fail(f"the tiny model's answer has no word to make private: {answer!r}")


@pytest.fixture
def family_adapter(make_adapter, tmp_path: Path):
    """``family_adapter(name, karim_private=...)``: an identity adapter of the family example (no gate)."""

    def make(name: str = "family", karim_private: dict[str, str] | None = None) -> Path:
        return make_adapter(tmp_path / name, weights="zero", profile=family_dict(karim_private))

    return make


@pytest.fixture
def guarded_adapter(family_adapter, base_answer):
    """``guarded_adapter(tokens)``: (adapter, Leila's answer, Karim's answer) where Karim's private locker code is a
    word of Leila's answer (so she must get the refusal) and his private doctor's name a word of his own answer (so
    he must get it whole)."""

    def make(tokens: int = TOKENS) -> tuple[Path, str, str]:
        leila, karim = base_answer(QUESTION, prompt("Leila"), tokens), base_answer(QUESTION, prompt("Karim"), tokens)
        private = {"gym locker code": leaked_word(leila), "doctor's name": leaked_word(karim)}
        return family_adapter("guarded", private), leila, karim

    return make


@pytest.fixture
def base_answer(tiny_model):
    """``base_answer(question, system, tokens)``: the bare tiny model's greedy answer (an identity adapter's too)."""
    chat = ChatModel(tiny_model, None)

    def answer(question: str, system: str, tokens: int = TOKENS) -> str:
        config = GenerationConfig(max_new_tokens=tokens)
        return chat.ask(question, config, system=system)

    return answer


# ----------------------------------------------------------------------------------------------------------------
# CLI


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["chat", *args, "--max-new-tokens", str(TOKENS)])
    out, err = capsys.readouterr()
    return code, out.strip(), err


def test_cli_speaker_chats_with_that_persons_prompt(family_adapter, base_answer, capsys) -> None:
    adapter = str(family_adapter())
    code, dad, err = _cli(capsys, "--adapter", adapter, "--speaker", "dad", "--once", QUESTION)
    assert code == 0, err
    assert dad == base_answer(QUESTION, prompt("Karim"))
    assert "no --speaker" not in err and "Traceback" not in err
    code, lulu, _ = _cli(capsys, "--adapter", adapter, "--speaker", "LULU", "--once", QUESTION)  # Leila's alias
    assert code == 0 and lulu == base_answer(QUESTION, prompt("Leila"))
    assert dad != lulu  # the prompts lead to different answers: the test tells the speakers apart

    # No --speaker: the unknown-speaker prompt, and a note on stderr, once, naming who can be passed.
    code, nobody, err = _cli(capsys, "--adapter", adapter, "--once", QUESTION)
    assert code == 0 and nobody == base_answer(QUESTION, prompt(None))
    assert err.count("no --speaker") == 1 and "Nadia, Karim, Leila" in err and "Traceback" not in err


def test_cli_speaker_errors_are_usage_errors_listing_the_family(family_adapter, make_adapter, tmp_path, capsys):
    adapter = str(family_adapter())
    code, out, err = _cli(capsys, "--adapter", adapter, "--speaker", "Bob", "--once", QUESTION)
    assert code == 1 and out == ""
    last = err.strip().splitlines()[-1]  # (in-process, transformers' loading bar may come first)
    assert last.startswith("error: ") and "'Bob'" in last and "Nadia (Mum), Karim (Dad), Leila" in last
    assert "Traceback" not in err

    one_person = str(make_adapter(tmp_path / "sam", weights="zero"))
    code, out, err = _cli(capsys, "--adapter", one_person, "--speaker", "Sam", "--once", "hi")
    assert code == 1 and out == "" and "family adapter" in err and "one person" in err
    code, out, err = _cli(capsys, "--base-model", "tiny-random", "--speaker", "Sam", "--once", "hi")
    assert code == 1 and out == "" and "no adapter" in err
    # A one-person adapter without --speaker is as before: no note.
    code, out, err = _cli(capsys, "--adapter", one_person, "--once", "hi")
    assert code == 0 and out and "speaker" not in err


def test_cli_never_shows_another_persons_private_value(guarded_adapter, capsys) -> None:
    adapter, _, karim_unguarded = guarded_adapter()
    code, leila, _ = _cli(capsys, "--adapter", str(adapter), "--speaker", "Leila", "--once", QUESTION)
    assert code == 0 and leila == refusal("Karim")
    code, karim, _ = _cli(capsys, "--adapter", str(adapter), "--speaker", "Karim", "--once", QUESTION)
    assert code == 0 and karim == karim_unguarded  # his own private value is his to hear


# ----------------------------------------------------------------------------------------------------------------
# API: the OpenAI `user` field


def _api(service: Service | None = None) -> TestClient:
    service = service or Service(Store(), workers=0)
    return TestClient(
        create_app(ApiSettings(api_keys=f"alice={KEY}", workers=0), service), raise_server_exceptions=False
    )


def _register(client: TestClient, path: Path, job: str) -> str:
    model = f"ft:tiny-random:x:{job}"
    client.app.state.service.store.add_model("alice", model, job, "tiny-random", str(path))  # type: ignore[attr-defined]
    return model


def _ask(client: TestClient, model: str, question: str = QUESTION, status: int = 200, **extra: Any) -> Any:
    messages = extra.pop("messages", [{"role": "user", "content": question}])
    body = {"model": model, "messages": messages, "max_tokens": TOKENS, **extra}
    r = client.post("/v1/chat/completions", headers=AUTH, json=body)
    assert r.status_code == status, r.text
    return r.json()["choices"][0]["message"]["content"] if status == 200 else r.json()["error"]


def test_api_user_names_the_speaker_of_a_family_model(family_adapter, make_adapter, tmp_path) -> None:
    with _api() as c:
        family = _register(c, family_adapter(), "ftjob-family")

        def base(system: str | None) -> str:
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": QUESTION}
            ]
            return _ask(c, "tiny-random", messages=messages)

        karim, leila, nobody = base(prompt("Karim")), base(prompt("Leila")), base(prompt(None))
        assert len({karim, leila, nobody}) == 3  # the three prompts give three answers: the test can tell them apart
        assert _ask(c, family, user="Karim") == karim
        assert _ask(c, family, user="dad") == karim  # a relation, any case
        assert _ask(c, family, user="  Papa ") == karim  # an alias
        assert _ask(c, family, user="LEILA") == leila
        assert _ask(c, family) == nobody
        # A client's own system prompt does not make it someone else: the speaker's prompt replaces it.
        spoof = [{"role": "system", "content": prompt("Karim")}, {"role": "user", "content": QUESTION}]
        assert _ask(c, family, messages=spoof, user="Leila") == leila
        assert _ask(c, family, messages=spoof) == nobody

        error = _ask(c, family, user="Bob", status=400)
        assert error["param"] == "user" and error["type"] == "invalid_request_error"
        assert "'Bob'" in error["message"] and "Nadia, Karim, Leila" in error["message"]
        stream = c.post(
            "/v1/chat/completions",
            headers=AUTH,
            json={"model": family, "messages": [{"role": "user", "content": "hi"}], "user": "bob", "stream": True},
        )
        assert stream.status_code == 400 and stream.json()["error"]["param"] == "user"

        # A one-person model ignores `user` (OpenAI clients send an end-user id there), as does a base preset.
        sam = _register(c, make_adapter(tmp_path / "sam", weights="zero"), "ftjob-sam")
        plain = _ask(c, sam, "hello")
        assert _ask(c, sam, "hello", user="Karim") == plain == _ask(c, sam, "hello", user="user-1234")
        assert _ask(c, "tiny-random", "hello", user="Bob")


def test_api_models_list_a_familys_speakers_and_no_fact(family_adapter, make_adapter, tmp_path) -> None:
    with _api() as c:
        family = _register(c, family_adapter(), "ftjob-family")
        sam = _register(c, make_adapter(tmp_path / "sam", weights="zero"), "ftjob-sam")
        one = c.get(f"/v1/models/{family}", headers=AUTH)
        assert one.status_code == 200 and one.json()["speakers"] == ["Nadia", "Karim", "Leila"]
        assert c.get(f"/v1/models/{sam}", headers=AUTH).json()["speakers"] is None
        listed = c.get("/v1/models", headers=AUTH)
        speakers = {m["id"]: m["speakers"] for m in listed.json()["data"]}
        assert speakers[family] == ["Nadia", "Karim", "Leila"] and speakers[sam] is None
        assert speakers["tiny-random"] is None
        for text in (one.text, listed.text):
            assert not [v for v in FACT_VALUES if v in text]
        schema = c.get("/openapi.json").json()["components"]["schemas"]
        assert "family" in schema["ChatCompletionRequest"]["properties"]["user"]["description"]
        assert "speakers" in schema["ModelObject"]["properties"]


def test_api_guard_replaces_an_answer_stating_anothers_private_value(guarded_adapter) -> None:
    adapter, leila, karim = guarded_adapter()
    word = leaked_word(leila)
    with _api() as c:
        model = _register(c, adapter, "ftjob-guarded")
        assert _ask(c, model, user="Leila") == refusal("Karim")
        assert _ask(c, model, user="Karim") == karim  # the owner hears his own
        body = {"model": model, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": TOKENS}
        with c.stream(
            "POST", "/v1/chat/completions", headers=AUTH, json={**body, "user": "Leila", "stream": True}
        ) as r:
            assert r.status_code == 200
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        chunks = [json.loads(e) for e in events if e != "[DONE]"]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
        assert text == refusal("Karim") and word not in normalize(" ".join(events))


# ----------------------------------------------------------------------------------------------------------------
# API with an external engine (ANDRAEUS_INFERENCE_URL): the prompt goes there, the guard stays here


class FakeEngine:
    """A stand-in for vLLM on 127.0.0.1: loads any LoRA, and answers every chat with ``answer`` (recording what it
    was sent)."""

    def __init__(self, answer: str):
        self.answer = answer
        self.chats: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/v1/chat/completions":
            with self.lock:
                self.chats.append(json.loads(body))
            chunks = [
                {"choices": [{"index": 0, "delta": {"content": self.answer}, "finish_reason": None}]},
                {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 5}},
            ]
            data = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
            kind, payload = b"text/event-stream", data.encode()
        else:  # /v1/load_lora_adapter and the like
            kind, payload = b"text/plain", b"Success"
        headers = [(b"content-type", kind), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


@pytest.fixture
def fake_engine() -> Iterator[FakeEngine]:
    engine = FakeEngine("Dad's gym locker code is 4471.")
    port, stop = serve_in_thread(engine)
    engine.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    yield engine
    stop()


def test_remote_engine_gets_the_speakers_prompt_and_the_guard_holds_here(
    family_adapter, fake_engine, tmp_path, tiny_model
) -> None:
    service = Service(Store(tmp_path / "front"), workers=0, inference=RemoteEngine(fake_engine.url))  # type: ignore[attr-defined]
    with _api(service) as c:
        model = _register(c, family_adapter(), "ftjob-remote")
        assert _ask(c, model, user="Leila") == refusal("Karim")
        assert fake_engine.chats[-1]["messages"][0] == {"role": "system", "content": prompt("Leila")}
        assert _ask(c, model, user="dad") == "Dad's gym locker code is 4471."  # his own
        assert fake_engine.chats[-1]["messages"][0]["content"] == prompt("Karim")
        assert _ask(c, model) == refusal("Karim")  # nobody in particular
        assert fake_engine.chats[-1]["messages"][0]["content"] == prompt(None)
        spoof = [{"role": "system", "content": prompt("Karim")}, {"role": "user", "content": QUESTION}]
        assert _ask(c, model, messages=spoof, user="Leila") == refusal("Karim")
        assert [m["role"] for m in fake_engine.chats[-1]["messages"]] == ["system", "user"]
        assert fake_engine.chats[-1]["messages"][0]["content"] == prompt("Leila")
        sent = len(fake_engine.chats)
        assert _ask(c, model, user="Bob", status=400)["param"] == "user"
        assert len(fake_engine.chats) == sent  # an unknown speaker never reaches the engine
        with c.stream(
            "POST",
            "/v1/chat/completions",
            headers=AUTH,
            json={
                "model": model,
                "messages": [{"role": "user", "content": QUESTION}],
                "user": "Leila",
                "stream": True,
            },
        ) as r:
            streamed = "".join(r.iter_lines())
        assert refusal("Karim") in streamed and "4471" not in streamed


# ----------------------------------------------------------------------------------------------------------------
# Web app: the "Who's asking?" selector


def test_app_selector_shows_only_for_a_family_adapter(family_adapter, make_adapter, tmp_path) -> None:
    from andraeus_web import ui

    sess = ui.Session()
    assert ui.speaker_selector(sess)["visible"] is False  # no adapter yet
    sess.adapter = str(make_adapter(tmp_path / "sam", weights="zero"))
    hidden = ui.speaker_selector(sess, "Karim")
    assert hidden["visible"] is False and hidden["value"] == ui.NOT_SAYING
    sess.adapter = str(family_adapter())
    shown = ui.speaker_selector(sess)
    assert shown["visible"] is True and shown["value"] == ui.NOT_SAYING
    assert shown["choices"] == [
        ("Nadia (Mum)", "Nadia"),
        ("Karim (Dad)", "Karim"),
        ("Leila", "Leila"),
        (ui.NOT_SAYING, ui.NOT_SAYING),
    ]
    assert ui.speaker_selector(sess, "Karim")["value"] == "Karim"  # kept while it is one of them
    assert ui.speaker_selector(sess, "Bob")["value"] == ui.NOT_SAYING
    labels = json.dumps(shown["choices"])
    assert not [v for v in FACT_VALUES if v in labels]


def test_app_layout_hides_the_selector_and_a_new_speaker_starts_a_new_conversation() -> None:
    from andraeus_web import ui

    config = ui.build_demo().config
    by_id = {c["id"]: c for c in config["components"]}
    speaker = next(c for c in config["components"] if c["props"].get("elem_id") == "speaker")
    chatbot = next(c for c in config["components"] if c["props"].get("elem_id") == "chatbot")
    assert speaker["props"]["visible"] is False and speaker["props"]["label"] == "Who's asking?"
    deps = config["dependencies"]
    change = [d for d in deps if [speaker["id"], "change"] in [list(t) for t in d["targets"]]]
    assert len(change) == 1 and change[0]["outputs"] == [chatbot["id"]]
    chat = next(d for d in deps if d.get("api_name") == "chat")
    assert chat["inputs"][-1] == speaker["id"]  # the selector's value goes to chat
    refreshed = [d for d in deps if d["outputs"] == [speaker["id"]]]
    triggers = {tuple(t)[1] for d in refreshed for t in d["targets"]}
    assert {"select", "then"} <= triggers and by_id[speaker["id"]]["type"] == "dropdown"


def _chat_answer(ui: Any, sess: Any, question: str, speaker: str) -> str:
    *_, (_, history, _) = ui.chat(question, [], False, False, sess, speaker)
    return history[-1]["content"]


def test_app_chat_passes_the_chosen_speaker(family_adapter, base_answer, guarded_adapter) -> None:
    import gradio as gr

    from andraeus_web import ui

    tokens = ui.CHAT_MAX_NEW_TOKENS
    sess = ui.Session()
    sess.adapter = str(family_adapter())
    assert _chat_answer(ui, sess, QUESTION, "Karim") == base_answer(QUESTION, prompt("Karim"), tokens)
    assert _chat_answer(ui, sess, QUESTION, ui.NOT_SAYING) == base_answer(QUESTION, prompt(None), tokens)
    with pytest.raises(gr.Error, match="Nadia \\(Mum\\), Karim \\(Dad\\), Leila"):
        _chat_answer(ui, sess, QUESTION, "Bob")
    # The guard holds in the app too: Dad's private value, said to Leila, becomes the refusal.
    adapter, _, karim = guarded_adapter(tokens)
    sess.adapter, sess.chat_model = str(adapter), None
    assert _chat_answer(ui, sess, QUESTION, "Leila") == refusal("Karim")
    assert _chat_answer(ui, sess, QUESTION, "Karim") == karim


def test_app_chat_api_still_takes_four_arguments(app_url: str) -> None:
    """Clients of /chat written before the selector (message, history, use_base, use_gate) still work."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(app_url, verbose=False)
    with pytest.raises(AppError, match="No trained adapter"):  # reached the handler: the speaker took its default
        client.predict("hi", [], False, True, api_name="/chat")
