"""Hub: push to the user's own repo (private by default), pull back safely, zip; all through the real
huggingface_hub client talking real HTTP to the local stand-in in tests/hub_stub.py."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import zipfile
from pathlib import Path

import hub_stub
import pytest
from hub_stub import ALICE_TOKEN, BOB_TOKEN, HubStub

from andraeus_core import hub
from andraeus_core.chat import GenerationConfig, load_chat_model
from andraeus_core.errors import AdapterError, HubError
from tests.helpers import SECRETS, SHARED_ADAPTER

hub_server = hub_stub.hub_server  # the fixture

CANARY = "hf_CANARY_do_not_leak_7f3a9c"


@pytest.fixture(scope="module")
def adapter_template(tmp_path_factory: pytest.TempPathFactory, make_adapter) -> Path:
    return make_adapter(tmp_path_factory.mktemp("adapter") / "sam-adapter", **SHARED_ADAPTER)


@pytest.fixture
def adapter(adapter_template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(adapter_template, tmp_path / "sam-adapter"))


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "RETRY_WAITS", (0.01, 0.01))


def _dir_hash(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        digest.update(str(path.relative_to(directory)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _uploaded(stub: HubStub, repo_id: str) -> dict[str, bytes]:
    return {path: content for repo, path, content in stub.uploads if repo == repo_id}


# ----------------------------------------------------------------------------------------------------------------
# push


def test_push_creates_private_repo_with_only_the_allowlist(hub_server: HubStub, adapter: Path):
    before = _dir_hash(adapter)
    url = hub.push_adapter(adapter, "alice/sam-adapter", ALICE_TOKEN)
    assert url == f"{hub_server.url}/alice/sam-adapter"
    repo = hub_server.repos["alice/sam-adapter"]
    assert repo.private is True
    assert set(_uploaded(hub_server, "alice/sam-adapter")) == set(hub.UPLOAD_ALLOWLIST)
    assert "private.json" not in repo.head().files and "heldout.jsonl" not in repo.head().files
    assert repo.head().files["adapter_model.safetensors"] == (adapter / "adapter_model.safetensors").read_bytes()
    assert _dir_hash(adapter) == before  # the local adapter is only read


def test_push_uses_only_the_explicit_token_never_ambient_hf_token(
    hub_server: HubStub, adapter: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("HF_TOKEN", BOB_TOKEN)  # e.g. a Space's own token
    hub.push_adapter(adapter, "alice/sam-adapter", ALICE_TOKEN)
    assert hub_server.tokens_seen() == {ALICE_TOKEN}
    assert "alice/sam-adapter" in hub_server.repos and not any(r.startswith("bob/") for r in hub_server.repos)


def test_pull_without_token_is_anonymous_even_with_ambient_hf_token(
    hub_server: HubStub, adapter: Path, monkeypatch: pytest.MonkeyPatch
):
    hub.push_adapter(adapter, "alice/shared", ALICE_TOKEN, private=False)
    hub_server.requests.clear()
    monkeypatch.setenv("HF_TOKEN", BOB_TOKEN)
    hub.pull_adapter("alice/shared")
    assert hub_server.requests and hub_server.tokens_seen() == set()


def test_push_requires_a_token(hub_server: HubStub, adapter: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_TOKEN", ALICE_TOKEN)
    with pytest.raises(HubError, match="token"):
        hub.push_adapter(adapter, "alice/sam-adapter", "")
    assert hub_server.requests == []


def test_push_refuses_an_existing_public_repo_unless_public_was_asked(hub_server: HubStub, adapter: Path):
    hub_server.add_repo("alice/public-stuff", private=False, files={"notes.txt": b"hello"})
    before = hub_server.repos["alice/public-stuff"].head().sha
    with pytest.raises(HubError, match="public") as info:
        hub.push_adapter(adapter, "alice/public-stuff", ALICE_TOKEN)
    assert "--public" in str(info.value)
    assert hub_server.repos["alice/public-stuff"].head().sha == before
    assert _uploaded(hub_server, "alice/public-stuff") == {}
    # asked for explicitly: allowed
    hub.push_adapter(adapter, "alice/public-stuff", ALICE_TOKEN, private=False)
    assert "adapter_model.safetensors" in hub_server.repos["alice/public-stuff"].head().files


def test_push_into_existing_private_repo_and_bare_name_goes_to_token_owner(hub_server: HubStub, adapter: Path):
    hub_server.add_repo("alice/mine", private=True)
    hub.push_adapter(adapter, "mine", ALICE_TOKEN, commit_message="second version")
    repo = hub_server.repos["alice/mine"]
    assert repo.head().message == "second version" and "adapter_config.json" in repo.head().files


def test_model_card_has_metadata_snippets_and_no_private_text(hub_server: HubStub, adapter: Path):
    from huggingface_hub import ModelCard

    hub.push_adapter(adapter, "alice/sam-adapter", ALICE_TOKEN)
    uploaded = _uploaded(hub_server, "alice/sam-adapter")
    card = ModelCard(uploaded["README.md"].decode())
    assert card.data.library_name == "peft"
    assert {"andraeus", "lora", "personal"} <= set(card.data.tags)
    assert "PeftModel.from_pretrained" in card.text and "vllm serve" in card.text and "--enable-lora" in card.text
    assert "| recall | 0.875 |" in card.text and "| by_kind.reverse | 0.5 |" in card.text  # eval numbers allowed
    assert "--max-lora-rank 8" in card.text  # r=4 rounded up to a rank vLLM accepts
    config = json.loads(uploaded["adapter_config.json"])
    assert config["base_model_name_or_path"] == "tiny-random"  # not a local path
    for content in uploaded.values():
        text = content.decode("utf-8", errors="ignore").lower()
        for secret in SECRETS:
            assert secret.lower() not in text, secret
        assert str(adapter).lower() not in text


def test_model_card_maps_preset_to_hub_id_and_user_name_only_when_opted_in(hub_server: HubStub, adapter: Path):
    from huggingface_hub import ModelCard

    meta = json.loads((adapter / "andraeus.json").read_text())
    (adapter / "andraeus.json").write_text(json.dumps({**meta, "base_model": "smollm2-135m"}))
    hub.push_adapter(adapter, "alice/named", ALICE_TOKEN, include_user_name=True)
    card = ModelCard(_uploaded(hub_server, "alice/named")["README.md"].decode())
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "Sam Rivera" in card.text
    assert "Buddy" not in card.text


def test_push_refuses_when_metadata_would_leak_a_fact_value(hub_server: HubStub, adapter: Path):
    meta = json.loads((adapter / "andraeus.json").read_text())
    (adapter / "andraeus.json").write_text(json.dumps({**meta, "note": "knows about portland"}))
    with pytest.raises(HubError, match=r"andraeus.json .*facts\[2\]\.value") as info:
        hub.push_adapter(adapter, "alice/leaky", ALICE_TOKEN)
    assert "portland" not in str(info.value).lower()
    assert hub_server.uploads == []


def test_a_common_word_as_a_value_does_not_block_sharing(hub_server: HubStub, adapter: Path):
    # the card's own words ("--max-lora-rank" in its vLLM example) are not a dog called Max
    private = json.loads((adapter / "private.json").read_text())
    private["profile"]["facts"][0]["value"] = "Max"
    (adapter / "private.json").write_text(json.dumps(private))
    hub.push_adapter(adapter, "alice/pet-adapter", ALICE_TOKEN)
    card = hub_server.repos["alice/pet-adapter"].head().files["README.md"].decode()
    assert "--max-lora-rank" in card
    # ... while the value itself, as a word, is still refused
    meta = json.loads((adapter / "andraeus.json").read_text())
    (adapter / "andraeus.json").write_text(json.dumps({**meta, "note": "a dog called Max."}))
    with pytest.raises(HubError, match=r"facts\[0\]\.value"):
        hub.push_adapter(adapter, "alice/pet-adapter-2", ALICE_TOKEN)


def test_push_rejects_incomplete_adapter_before_any_request(hub_server: HubStub, adapter: Path):
    (adapter / "adapter_model.safetensors").unlink()
    with pytest.raises(AdapterError, match="adapter_model.safetensors"):
        hub.push_adapter(adapter, "alice/x", ALICE_TOKEN)
    with pytest.raises(HubError, match="not a Hub repo id"):
        hub.push_adapter(adapter, "alice/x/y", ALICE_TOKEN)
    assert hub_server.requests == []


# ----------------------------------------------------------------------------------------------------------------
# errors, retries, secrets


@pytest.mark.parametrize(
    ("fault_path", "status", "match"),
    [
        (r"^/api/whoami-v2$", 401, "rejected the token"),
        (r"^/api/repos/create$", 403, "not allowed"),
        (r"/commit/", 403, "not allowed"),
    ],
)
def test_push_errors_are_clear_and_leave_the_adapter_alone(
    hub_server: HubStub, adapter: Path, fault_path: str, status: int, match: str
):
    before = _dir_hash(adapter)
    hub_server.fail(fault_path, status, times=10)
    with pytest.raises(HubError, match=match):
        hub.push_adapter(adapter, "alice/sam-adapter", ALICE_TOKEN)
    assert _dir_hash(adapter) == before
    assert not (hub_server.repos.get("alice/sam-adapter") and _uploaded(hub_server, "alice/sam-adapter"))


def test_bad_token_and_other_users_repo(hub_server: HubStub, adapter: Path):
    with pytest.raises(HubError, match="401"):
        hub.push_adapter(adapter, "alice/x", "hf_not_a_real_token")
    hub_server.add_repo("bob/his", private=True)
    with pytest.raises(HubError, match="403|404"):
        hub.push_adapter(adapter, "bob/his", ALICE_TOKEN)


def test_transient_errors_are_retried_a_bounded_number_of_times(hub_server: HubStub, adapter: Path):
    hub_server.fail(r"/commit/", 429, times=1, retry_after="0")
    hub_server.fail(r"^/api/models/alice/sam-adapter$", 500, times=2)
    hub.push_adapter(adapter, "alice/sam-adapter", ALICE_TOKEN)  # recovers
    assert "adapter_model.safetensors" in hub_server.repos["alice/sam-adapter"].head().files

    hub_server.fail(r"/commit/", 503, times=100)
    calls_before = sum(1 for r in hub_server.requests if "/commit/" in r.path)
    with pytest.raises(HubError, match=r"server error \(503\) \(tried 3 times\)"):
        hub.push_adapter(adapter, "alice/sam-adapter", ALICE_TOKEN)
    assert sum(1 for r in hub_server.requests if "/commit/" in r.path) - calls_before == 3


def test_rate_limit_message(hub_server: HubStub, adapter: Path):
    hub_server.fail(r"^/api/whoami-v2$", 429, times=100)
    with pytest.raises(HubError, match="rate-limiting"):
        hub.push_adapter(adapter, "alice/sam-adapter", ALICE_TOKEN)


def test_slow_hub_times_out_with_bounded_retries(hub_server: HubStub, adapter: Path, monkeypatch: pytest.MonkeyPatch):
    hub.push_adapter(adapter, "alice/sam-adapter", ALICE_TOKEN)
    monkeypatch.setattr(hub, "HUB_TIMEOUT_S", 0.3)
    hub_server.fail(r"^/api/models/alice/sam-adapter", None, delay=1.5, times=3)
    with pytest.raises(HubError, match="did not answer in time"):
        hub.pull_adapter("alice/sam-adapter", token=ALICE_TOKEN)
    assert not list(hub.hub_cache_dir().glob("alice--sam-adapter/*"))


def test_canary_token_never_appears_in_logs_errors_or_files(
    hub_server: HubStub, adapter: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
):
    hub_server.add_user("carol", CANARY)
    caplog.set_level(logging.DEBUG)
    hub.push_adapter(adapter, "carol/sam-adapter", CANARY)
    pulled = hub.pull_adapter("carol/sam-adapter", token=CANARY)
    errors: list[BaseException] = []
    for path, status in [(r"^/api/whoami-v2$", 401), (r"/commit/", 500), (r"^/api/models/carol", 404)]:
        hub_server.fail(path, status, times=10)
        try:
            hub.push_adapter(adapter, "carol/sam-adapter", CANARY)
        except HubError as exc:
            errors.append(exc)
        hub_server.faults.clear()
    hub_server.fail(r"^/api/models/carol", 500, times=10)
    with pytest.raises(HubError) as info:
        hub.pull_adapter("carol/sam-adapter", token=CANARY)
    errors.append(info.value)
    assert len(errors) == 4
    captured = capsys.readouterr()
    texts = [caplog.text, captured.out, captured.err]
    for exc in errors:
        chain: BaseException | None = exc
        while chain is not None:  # nothing chained may hold the request (and its Authorization header)
            texts += [str(chain), repr(chain), repr(vars(chain))]
            chain = chain.__cause__ or chain.__context__
        assert exc.__cause__ is None and exc.__context__ is None
    for text in texts:
        assert CANARY not in text
    for root in (hub.hub_cache_dir(), adapter, pulled):
        for path in root.rglob("*"):
            if path.is_file():
                assert CANARY.encode() not in path.read_bytes(), path
    assert hub_server.tokens_seen() == {CANARY}


# ----------------------------------------------------------------------------------------------------------------
# pull


def test_round_trip_push_pull_chat_gives_the_same_answers(hub_server: HubStub, adapter: Path):
    hub.push_adapter(adapter, "alice/sam-adapter", ALICE_TOKEN)
    pulled = hub.pull_adapter("alice/sam-adapter", token=ALICE_TOKEN)
    assert pulled.is_relative_to(hub.hub_cache_dir())
    assert sorted(p.name for p in pulled.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "andraeus.json",
        "gate.safetensors",
    ]
    meta = json.loads((pulled / "andraeus.json").read_text())
    sha = hub_server.repos["alice/sam-adapter"].head().sha
    assert meta["hub"]["revision"] == sha and pulled.name == sha and meta["base_model"] == "tiny-random"

    config = GenerationConfig(max_new_tokens=8)
    questions = ["hello there", "what is my dog's name?", "when is my birthday?"]
    local = load_chat_model(None, adapter)
    remote = load_chat_model(None, pulled)
    # The pulled copy has no private.json: compare under the same system prompt.
    system = local.system_prompt
    local_answers = [local.ask(q, config, system=system) for q in questions]
    assert [remote.ask(q, config, system=system) for q in questions] == local_answers
    assert local_answers != [local.ask(q, config, system=system, use_adapter=False) for q in questions]
    # chat accepts a Hub repo id wherever it accepts an adapter directory
    by_id = load_chat_model(None, "alice/sam-adapter@" + sha)
    assert by_id.adapter_dir == pulled
    assert [by_id.ask(q, config, system=system) for q in questions] == local_answers


def test_pull_pins_the_revision_and_reuses_the_cache(hub_server: HubStub, adapter: Path):
    hub.push_adapter(adapter, "alice/sam-adapter", ALICE_TOKEN)
    first_sha = hub_server.repos["alice/sam-adapter"].head().sha
    first = hub.pull_adapter("alice/sam-adapter", token=ALICE_TOKEN)
    hub.push_adapter(adapter, "alice/sam-adapter", ALICE_TOKEN, commit_message="v2")
    second = hub.pull_adapter("alice/sam-adapter", token=ALICE_TOKEN)
    assert first != second and first.name == first_sha and first.is_dir()
    hub_server.requests.clear()
    assert hub.pull_adapter("alice/sam-adapter", token=ALICE_TOKEN, revision=first_sha) == first
    assert hub_server.requests == []  # a pinned sha on disk needs no network
    with pytest.raises(HubError, match="revision does not exist"):
        hub.pull_adapter("alice/sam-adapter", token=ALICE_TOKEN, revision="no-such-branch")


def test_pull_refuses_pickles_before_downloading_anything(hub_server: HubStub, adapter: Path):
    files = {
        "adapter_config.json": (adapter / "adapter_config.json").read_bytes(),
        "adapter_model.safetensors": (adapter / "adapter_model.safetensors").read_bytes(),
        "adapter_model.bin": b"\x80\x04not really a pickle",
    }
    hub_server.add_repo("alice/pickled", private=False, files=files)
    with pytest.raises(HubError, match="pickle"):
        hub.pull_adapter("alice/pickled")
    assert not any("/resolve/" in r.path for r in hub_server.requests)
    assert not (hub.hub_cache_dir() / "alice--pickled").exists() or not any(
        (hub.hub_cache_dir() / "alice--pickled").iterdir()
    )


def test_pull_refuses_unknown_base_model_and_broken_weights(hub_server: HubStub, adapter: Path):
    config = (adapter / "adapter_config.json").read_bytes()
    weights = (adapter / "adapter_model.safetensors").read_bytes()
    bad_base = {
        "adapter_config.json": config,
        "adapter_model.safetensors": weights,
        "andraeus.json": json.dumps({"base_model": "no such model"}).encode(),
    }
    hub_server.add_repo("alice/bad-base", private=False, files=bad_base)
    with pytest.raises(HubError, match="cannot resolve"):
        hub.pull_adapter("alice/bad-base")
    broken = {
        "adapter_config.json": config,
        "adapter_model.safetensors": b"garbage",
        "andraeus.json": json.dumps({"base_model": "tiny-random"}).encode(),
    }
    hub_server.add_repo("alice/broken", private=False, files=broken)
    with pytest.raises(HubError, match="not a valid safetensors"):
        hub.pull_adapter("alice/broken")
    assert not list(hub.hub_cache_dir().glob("alice--*/*"))


def test_pull_private_repo_needs_the_owners_token(hub_server: HubStub, adapter: Path):
    hub.push_adapter(adapter, "alice/sam-adapter", ALICE_TOKEN)
    with pytest.raises(HubError, match="404"):
        hub.pull_adapter("alice/sam-adapter")
    with pytest.raises(HubError, match="404"):
        hub.pull_adapter("alice/sam-adapter", token=BOB_TOKEN)
    with pytest.raises(HubError, match="401"):
        hub.pull_adapter("alice/sam-adapter", token="hf_wrong")
    assert hub.pull_adapter("alice/sam-adapter", token=ALICE_TOKEN).is_dir()


def test_resolve_adapter_keeps_local_dirs_and_pulls_repo_ids(hub_server: HubStub, adapter: Path):
    assert hub.resolve_adapter(adapter) == adapter
    assert hub.resolve_adapter(str(adapter)) == adapter
    hub.push_adapter(adapter, "alice/pub", ALICE_TOKEN, private=False)
    assert hub.resolve_adapter("alice/pub").parent == hub.hub_cache_dir() / "alice--pub"
    with pytest.raises(HubError, match="No local adapter directory 'alice/missing'"):
        hub.resolve_adapter("alice/missing")


def test_offline_mode_gives_a_clear_error(adapter: Path):
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        hub.pull_adapter("alice/sam-adapter")


# ----------------------------------------------------------------------------------------------------------------
# zip


def test_adapter_zip_holds_the_allowlist_and_nothing_private(adapter: Path, tmp_path: Path):
    before = _dir_hash(adapter)
    path = hub.adapter_zip(adapter)
    assert path.is_file() and path.suffix == ".zip"
    with zipfile.ZipFile(path) as archive:
        names = sorted(archive.namelist())
        contents = {n: archive.read(n) for n in names}
    assert names == sorted(hub.UPLOAD_ALLOWLIST)
    assert contents["adapter_model.safetensors"] == (adapter / "adapter_model.safetensors").read_bytes()
    for content in contents.values():
        for secret in SECRETS:
            assert secret.lower().encode() not in content.lower()
    assert _dir_hash(adapter) == before
    custom = hub.adapter_zip(adapter, tmp_path / "out" / "mine.zip")
    assert custom == tmp_path / "out" / "mine.zip" and custom.is_file()


def test_eval_summary_keeps_only_numbers(hub_server: HubStub, adapter: Path):
    summary = {
        "recall": 0.75,
        "by_kind": {"paraphrase": {"n": 8, "score": 0.625}},
        "items": [{"question": "What's my dog called?", "answer": "Buddy"}],
        "note": "Buddy lives in Portland",
    }
    hub.push_adapter(adapter, "alice/evald", ALICE_TOKEN, eval_summary=summary)
    uploaded = _uploaded(hub_server, "alice/evald")
    meta = json.loads(uploaded["andraeus.json"])
    assert meta["eval"] == {"recall": 0.75, "by_kind": {"paraphrase": {"n": 8, "score": 0.625}}}
    assert "| by_kind.paraphrase.score | 0.625 |" in uploaded["README.md"].decode()
    assert "eval" not in json.loads((adapter / "andraeus.json").read_text())  # the local copy is untouched


def test_concurrent_pulls_of_the_same_revision_agree(hub_server: HubStub, adapter: Path):
    from concurrent.futures import ThreadPoolExecutor

    hub.push_adapter(adapter, "alice/sam-adapter", ALICE_TOKEN)
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: hub.pull_adapter("alice/sam-adapter", token=ALICE_TOKEN), range(4)))
    assert len(set(paths)) == 1
    root = hub.hub_cache_dir() / "alice--sam-adapter"
    assert [p.name for p in root.iterdir()] == [paths[0].name]  # no temporary directories left behind
    assert (paths[0] / "adapter_model.safetensors").read_bytes() == (
        adapter / "adapter_model.safetensors"
    ).read_bytes()


def test_an_export_is_pushed_only_when_confirmed_and_only_to_a_private_repo(
    hub_server: HubStub, adapter: Path, tmp_path: Path
):
    from andraeus_core import export_adapter
    from andraeus_core.errors import ConfigError

    bundle = export_adapter([adapter], "vllm", tmp_path / "bundle").path
    with pytest.raises(ConfigError, match="holds your facts"):
        hub.push_export(bundle, "alice/nova-vllm", ALICE_TOKEN)
    assert hub_server.requests == []  # refused before anything is sent
    with pytest.raises(ConfigError, match="not a finished export"):
        hub.push_export(tmp_path, "alice/nova-vllm", ALICE_TOKEN, confirm_facts_in_weights=True)
    url = hub.push_export(bundle, "alice/nova-vllm", ALICE_TOKEN, confirm_facts_in_weights=True)
    assert url.endswith("/alice/nova-vllm")
    repo = hub_server.repos["alice/nova-vllm"]
    assert repo.private is True
    assert "serve.sh" in repo.head().files and "andraeus-export.json" in repo.head().files
    assert not any(name.endswith("private.json") for name in repo.head().files)
    # an existing public repo is refused, with no override
    hub_server.add_repo("alice/public-stuff", private=False, files={"notes.txt": b"hello"})
    before = hub_server.repos["alice/public-stuff"].head().sha
    with pytest.raises(HubError, match="public"):
        hub.push_export(bundle, "alice/public-stuff", ALICE_TOKEN, confirm_facts_in_weights=True)
    assert hub_server.repos["alice/public-stuff"].head().sha == before
