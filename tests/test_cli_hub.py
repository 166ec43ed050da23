"""`andraeus push` / `andraeus pull` / `andraeus chat --adapter owner/name` against the local Hub stand-in."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import hub_stub
import pytest
from hub_stub import ALICE_TOKEN, BOB_TOKEN, HubStub

from andraeus_cli import main
from andraeus_core import hub
from tests.helpers import SECRETS, SHARED_ADAPTER

hub_server = hub_stub.hub_server  # the fixture


@pytest.fixture(scope="module")
def adapter_template(tmp_path_factory: pytest.TempPathFactory, make_adapter) -> Path:
    return make_adapter(tmp_path_factory.mktemp("cli-adapter") / "my-adapter", **SHARED_ADAPTER)


@pytest.fixture
def adapter(adapter_template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(adapter_template, tmp_path / "my-adapter"))


@pytest.fixture(autouse=True)
def no_login(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No `hf auth login` token on disk, and quick retries."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))
    monkeypatch.setattr(hub, "RETRY_WAITS", (0.01, 0.01))


def test_push_with_token_flag_prints_the_url_and_makes_a_private_repo(
    hub_server: HubStub, adapter: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("HF_TOKEN", BOB_TOKEN)  # --token wins over the environment
    assert main(["push", str(adapter), "alice/my-adapter", "--token", ALICE_TOKEN]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == f"{hub_server.url}/alice/my-adapter"
    assert hub_server.repos["alice/my-adapter"].private is True
    assert hub_server.tokens_seen() == {ALICE_TOKEN}
    assert ALICE_TOKEN not in out.out + out.err


def test_push_token_from_hf_token_or_login_file(
    hub_server: HubStub, adapter: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setenv("HF_TOKEN", ALICE_TOKEN)
    assert main(["push", str(adapter), "from-env"]) == 0
    assert "alice/from-env" in hub_server.repos
    monkeypatch.delenv("HF_TOKEN")
    from huggingface_hub import constants

    login = tmp_path / "login" / "token"
    login.parent.mkdir()
    login.write_text(BOB_TOKEN)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(login))
    assert main(["push", str(adapter), "bob/from-login"]) == 0
    assert hub_server.repos["bob/from-login"].private is True


def test_push_without_any_token_fails_cleanly(hub_server: HubStub, adapter: Path, capsys: pytest.CaptureFixture):
    assert main(["push", str(adapter), "alice/x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--token" in err and "Traceback" not in err
    assert hub_server.requests == []


def test_public_flag_is_needed_for_an_existing_public_repo(
    hub_server: HubStub, adapter: Path, capsys: pytest.CaptureFixture
):
    hub_server.add_repo("alice/open", private=False)
    assert main(["push", str(adapter), "alice/open", "--token", ALICE_TOKEN]) == 1
    assert "public" in capsys.readouterr().err
    assert main(["push", str(adapter), "alice/open", "--token", ALICE_TOKEN, "--public"]) == 0
    files = hub_server.repos["alice/open"].head().files
    assert set(files) - {".gitattributes"} == set(hub.UPLOAD_ALLOWLIST)
    for content in files.values():
        for secret in SECRETS:
            assert secret.lower().encode() not in content.lower()


def test_pull_prints_the_pinned_directory(
    hub_server: HubStub, adapter: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    assert main(["push", str(adapter), "alice/my-adapter", "--token", ALICE_TOKEN]) == 0
    first_sha = hub_server.repos["alice/my-adapter"].head().sha
    assert main(["push", str(adapter), "alice/my-adapter", "--token", ALICE_TOKEN, "--message", "v2"]) == 0
    capsys.readouterr()
    assert main(["pull", "alice/my-adapter"]) == 1  # private, no token
    assert "404" in capsys.readouterr().err
    monkeypatch.setenv("HF_TOKEN", ALICE_TOKEN)
    assert main(["pull", "alice/my-adapter", "--revision", first_sha]) == 0
    pulled = Path(capsys.readouterr().out.strip())
    assert pulled.name == first_sha
    assert json.loads((pulled / "andraeus.json").read_text())["hub"]["revision"] == first_sha


def test_chat_accepts_a_hub_repo_id(
    hub_server: HubStub, adapter: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    assert main(["push", str(adapter), "alice/my-adapter", "--token", ALICE_TOKEN]) == 0
    system = json.loads((adapter / "private.json").read_text())["system_prompt"]
    capsys.readouterr()
    question = ["--once", "what is my dog's name?", "--max-new-tokens", "8", "--system", system]
    assert main(["chat", "--adapter", str(adapter), *question]) == 0
    local = capsys.readouterr().out
    assert local.strip()
    monkeypatch.setenv("HF_TOKEN", ALICE_TOKEN)  # the CLI user's own token reads their private repo
    assert main(["chat", "--adapter", "alice/my-adapter", *question]) == 0
    assert capsys.readouterr().out == local
    assert main(["chat", "--adapter", "alice/nope", *question]) == 1
    assert "No local adapter directory 'alice/nope'" in capsys.readouterr().err
