"""The web app over real HTTP: gradio_client against the Space's ``app.demo`` on 127.0.0.1, tiny-random model.

One module-scoped server; each Client is a separate browser session with its own gr.State.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

from tests import hub_stub
from tests.hub_stub import ALICE_TOKEN, HubStub

hub_server = hub_stub.hub_server  # the fixture

ROOT = Path(__file__).resolve().parents[1]
# Small but real: 10 facts × 6 phrasings, one epoch on the tiny random model.
FAST = {
    "base_model": "tiny-random",
    "preset": "cpu",
    "epochs": 1,
    "rank": 8,
    "qlora": False,
    "per_fact": 6,
    "heldout": 0.2,
}


def _client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=tempfile.mkdtemp(prefix="andraeus-client-"))


def _content(message: dict) -> str:
    content = message["content"]
    if isinstance(content, list):  # gradio 6 sends [{"type": "text", "text": ...}]
        return "".join(part.get("text", "") for part in content)
    return content


def _train(client, **overrides) -> tuple[str, dict]:
    settings = {**FAST, **overrides}
    status, plot = client.predict(*settings.values(), api_name="/train")
    return status, plot


def test_whole_flow_example_preview_train_evaluate_chat_zip(app_url: str):
    client = _client(app_url)
    user, assistant, table, status = client.predict(api_name="/load_example")
    assert (user, assistant) == ("Sam Rivera", "Nova")
    assert "10 facts" in status and "✅" in status
    assert ["dog's name", "Buddy", "Bud", "", ""] in table["data"]

    stats, rows, _topic, _dimension = client.predict(6, 0.2, "all", "all", api_name="/preview")
    assert "training" in stats and "held-out" in stats and "| typo |" in stats
    assert {r[0] for r in rows["data"]} >= {"dog's name", "birthday"}
    assert {r[1] for r in rows["data"]} >= {"punctuation", "formality", "directness", "reverse", "typo"}
    assert {r[2] for r in rows["data"]} == {"train", "heldout"}
    _, only_rows, _, _ = client.predict(6, 0.2, "dog's name", "typo", api_name="/preview")
    assert only_rows["data"] and {(r[0], r[1]) for r in only_rows["data"]} == {("dog's name", "typo")}

    estimate = client.predict(*FAST.values(), api_name="/estimate")
    assert "training examples" in estimate and "tiny-random" in estimate

    status, plot = _train(client)
    assert status.startswith("✅ Adapter trained"), status
    assert plot["data"] and all(loss == loss for _, loss in plot["data"]), "the loss plot has finite points"

    summary, chart, items = client.predict(api_name="/evaluate")
    assert "recall" in summary and "in-context" in summary
    assert Path(chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert items["data"] and all(r[4] in ("✓", "✗") for r in items["data"])
    assert {r[0] for r in items["data"]} & {"paraphrase", "typo", "reverse", "indirect"}

    history, cleared = client.predict("What's my dog's name?", [], False, True, api_name="/chat")
    assert cleared == ""
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert _content(history[0]) == "What's my dog's name?"
    assert _content(history[1]).strip()
    history2, _ = client.predict("And my birthday?", history, True, True, api_name="/chat")
    assert len(history2) == 4 and _content(history2[-1]).strip()

    zip_path = client.predict(api_name="/download_zip")
    with zipfile.ZipFile(zip_path) as archive:
        names = set(archive.namelist())
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md"} <= names
    assert not names & {"private.json", "heldout.jsonl"}

    # Share > Export: the adapter merged, as one GGUF file (the app's door to andraeus_core.export)
    gguf_path = client.predict("gguf", "q8_0", api_name="/export")
    assert gguf_path.endswith("-q8_0.gguf") and Path(gguf_path).read_bytes()[:4] == b"GGUF"
    with zipfile.ZipFile(client.predict("vllm", "q8_0", api_name="/export")) as archive:  # the GGUF type is ignored
        names = {Path(n).name for n in archive.namelist()}
    assert {"serve.sh", "adapter_model.safetensors"} <= names and "private.json" not in names

    # Facts change: the edited table shows what changed since the adapter, and Update teaches it just that
    rows = [[t, "Max" if t == "dog's name" else v, "" if t == "dog's name" else a] for t, v, a, *_ in table["data"]]
    rows = [r for r in rows if r[0] != "home city"] + [["cat's name", "Whiskers", ""]]
    status = client.predict(
        {"headers": ["topic", "value", "aliases"], "data": rows}, user, assistant, api_name="/apply_table"
    )
    assert "Changed since your adapter" in status and "Buddy -> Max" in status and "cat's name" in status, status
    status, _plot = client.predict(*FAST.values(), api_name="/update")
    assert status.startswith("Update (1 added, 1 changed, 1 removed") and "✅" in status, status
    with zipfile.ZipFile(client.predict(api_name="/download_zip")) as archive:
        meta = json.loads(next(archive.read(n) for n in archive.namelist() if n.endswith("andraeus.json")))
    assert meta["version"] == 2 and meta["method"] == "update"
    history, _ = client.predict("What's my dog's name?", [], False, True, api_name="/chat")
    assert _content(history[-1]).strip()  # the updated adapter serves the chat
    status, _plot = client.predict(*FAST.values(), api_name="/update")
    assert "Nothing changed" in status


def test_two_sessions_never_see_each_others_facts_adapter_or_chat(app_url: str):
    from gradio_client.exceptions import AppError

    alice, bob = _client(app_url), _client(app_url)
    alice.predict(api_name="/load_example")
    with pytest.raises(AppError, match="No facts yet"):
        bob.predict(6, 0.2, "all", "all", api_name="/preview")
    bob_rows = [["cat's name", "Pixel", ""], ["favourite band", "Radiohead", ""], ["hobby", "bouldering", "climbing"]]
    status = bob.predict(
        {"headers": ["topic", "value", "aliases"], "data": bob_rows}, "Tomás", "Andraeus", api_name="/apply_table"
    )
    assert "3 facts for Tomás" in status
    _, alice_rows, _, _ = alice.predict(6, 0.2, "all", "all", api_name="/preview")
    _, bob_preview, _, _ = bob.predict(6, 0.2, "all", "all", api_name="/preview")
    alice_text, bob_text = json.dumps(alice_rows), json.dumps(bob_preview)
    assert "Buddy" in alice_text and not any(v in alice_text for v in ("Pixel", "Radiohead", "bouldering"))
    assert "Pixel" in bob_text and not any(v in bob_text for v in ("Buddy", "Portland", "Cedar Labs"))

    status, _ = _train(alice)
    assert status.startswith("✅"), status
    for api in ("/evaluate", "/download_zip"):
        with pytest.raises(AppError, match="No trained adapter in this session"):
            bob.predict(api_name=api)
    with pytest.raises(AppError, match="No trained adapter in this session"):
        bob.predict("What's my dog's name?", [], False, True, api_name="/chat")
    history, _ = alice.predict("hi", [], False, True, api_name="/chat")
    assert len(history) == 2
    # Alice's zip is hers; a fresh session still has nothing.
    assert Path(alice.predict(api_name="/download_zip")).is_file()
    with pytest.raises(AppError, match="No trained adapter"):
        _client(app_url).predict(api_name="/download_zip")


def test_table_errors_name_the_row_and_field(app_url: str):
    client = _client(app_url)
    rows = [["dog's name", "Buddy", ""], ["", "", ""], ["Dog's name", "Rex", ""]]
    status = client.predict(
        {"headers": ["topic", "value", "aliases"], "data": rows}, "Sam", "Nova", api_name="/apply_table"
    )
    assert status.startswith("❌") and "row 1" in status and "row 3" in status
    status = client.predict(
        {"headers": ["topic", "value", "aliases"], "data": [["birthday", "", ""]]}, "Sam", "", api_name="/apply_table"
    )
    assert status.startswith("❌") and "row 1" in status and "value" in status


def _gradio_cache_files(name: str) -> list[Path]:
    roots = {Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")}
    return [p for root in roots if root.exists() for p in root.rglob(name)]


def test_a_family_upload_shows_who_owns_each_fact_and_the_table_keeps_the_family(app_url: str):
    from gradio_client import handle_file

    client = _client(app_url)
    family = Path(__file__).resolve().parent.parent / "examples" / "family_profile.yaml"
    user, _assistant, table, status, _ = client.predict(handle_file(str(family)), "", api_name="/upload")
    assert user == "the Haddad family" and "Nadia, Karim, Leila; 4 shared, 5 private" in status, status
    assert ["gym locker code", "4471", "", "Karim", "yes"] in table["data"]
    assert ["dog's name", "Biscuit", "", "", ""] in table["data"]
    # Applying the table as shown keeps the family (people, owners, private facts), relations included.
    rows = [r for r in table["data"] if r[0] != "hamster's name"]
    status = client.predict({"headers": table["headers"], "data": rows}, user, "Andraeus", api_name="/apply_table")
    assert "27 facts for the Haddad family (Nadia, Karim, Leila; 4 shared, 5 private)" in status, status
    _, preview_rows, _, _ = client.predict(6, 0.2, "all", "all", api_name="/preview")
    questions = " ".join(r[3] for r in preview_rows["data"])
    assert "Dad's" in questions or "Papa's" in questions  # Karim's relation and alias survived the table


def test_bad_uploads_show_an_inline_error_and_the_app_keeps_working(app_url: str, tmp_path: Path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    client = _client(app_url)
    cases = {
        "binary-3f9a.yaml": bytes(range(256)) * 8,
        "huge-3f9a.yaml": b"facts:\n" + b"  - topic: t\n    value: v\n" * 60_000,  # ~1.5 MB, under the upload cap
        "broken-3f9a.yaml": b"user_name: Sam\nfacts:\n  - topic: dog's name\n    value: [unclosed\n",
        "badrow-3f9a.csv": b"topic,value,aliases\ndog's name,Buddy,Bud\nbirthday,,\n",
    }
    expected = {
        "binary-3f9a.yaml": "binary-3f9a.yaml",
        "huge-3f9a.yaml": "at most",
        "broken-3f9a.yaml": "line",
        "badrow-3f9a.csv": "row 3",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        user, assistant, table, status, file_out = client.predict(handle_file(str(path)), "User", api_name="/upload")
        assert status.startswith("❌"), (name, status)
        assert expected[name] in status, (name, status)
        assert "Traceback" not in status
        assert file_out is None
        assert not _gradio_cache_files(name), f"upload {name} was not deleted after parsing"

    # Not a profile type: gradio's own file_types check refuses it before the handler.
    strange = tmp_path / "strange-3f9a.exe"
    strange.write_bytes(b"MZ\x90\x00")
    with pytest.raises(AppError, match="Invalid file type"):
        client.predict(handle_file(str(strange)), "User", api_name="/upload")

    # Over the server's max_file_size: refused before any handler runs.
    big = tmp_path / "toobig-3f9a.yaml"
    big.write_bytes(b"#" * 3_000_000)
    with pytest.raises(Exception, match="(?i)size|large|413"):
        client.predict(handle_file(str(big)), "User", api_name="/upload")

    # A good CSV works afterwards (the user name comes from the textbox), and its upload is deleted too.
    good = tmp_path / "good-3f9a.csv"
    good.write_bytes((ROOT / "examples" / "minimal.csv").read_bytes())
    user, _assistant, table, status, _ = client.predict(handle_file(str(good)), "Robin", api_name="/upload")
    assert status.startswith("✅") and "3 facts for Robin" in status, status
    assert user == "Robin" and len(table["data"]) == 3
    assert not _gradio_cache_files("good-3f9a.csv")


def test_cancel_really_stops_training(app_url: str):
    client = _client(app_url)
    client.predict(api_name="/load_example")
    job = client.submit(*{**FAST, "epochs": 10, "per_fact": 12}.values(), api_name="/train")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        outputs = job.outputs()
        if outputs and outputs[-1][0].startswith("Training: step"):
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"training never reported a step: {job.outputs()[-1:]}")
    cancelled_at = time.monotonic()
    statuses = [o[0] for o in job.outputs()]
    assert any(s.startswith("Preparing (1/4): loading the base model") for s in statuses), statuses
    assert any(s.startswith("Preparing (2/4)") and "guard answers" in s for s in statuses)
    assert not any("0/0" in s for s in statuses)  # the preparing phase says what it does, not "step 0/0"
    assert "Cancelling" in client.predict(api_name="/cancel")
    status, _plot = job.result(timeout=120)
    assert status.startswith("⏹️") and "cancelled" in status, status
    assert time.monotonic() - cancelled_at < 30
    # No adapter was kept: the session has nothing to download.
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="No trained adapter"):
        client.predict(api_name="/download_zip")


def test_push_to_the_hub_with_a_pasted_token_never_shows_it(
    app_url: str, hub_server: HubStub, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    client = _client(app_url)
    client.predict(api_name="/load_example")
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="No trained adapter"):
        client.predict("my-adapter", True, ALICE_TOKEN, api_name="/push")
    _train(client)
    status = client.predict("sam-adapter", True, "", api_name="/push")
    assert status.startswith("❌") and "Sign in" in status
    status = client.predict("sam-adapter", True, ALICE_TOKEN, api_name="/push")
    assert status.startswith("✅") and f"{hub_server.url}/alice/sam-adapter" in status, status
    assert ALICE_TOKEN not in status
    assert hub_server.repos["alice/sam-adapter"].private is True
    status = client.predict("sam-adapter2", True, "hf_not_a_real_token_000000000000", api_name="/push")
    assert status.startswith("❌") and "hf_not_a_real_token" not in status
    assert ALICE_TOKEN not in caplog.text and "hf_not_a_real_token" not in caplog.text


def test_space_front_matter_and_defaults(monkeypatch: pytest.MonkeyPatch):
    import yaml

    import app
    from andraeus_web import ui

    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n", 2)[1])
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["hf_oauth"] is True
    import gradio

    assert meta["sdk_version"] == gradio.__version__
    assert meta["hf_oauth_scopes"] == ["contribute-repos"]
    assert ui.default_base_model() == ("smollm2-135m", False, "cpu")  # no CUDA here
    # The UI's defaults are the preset's: 3 epochs for cpu (the slider said 5, so the app trained longer than the CLI).
    defaults = {b.elem_id: b.value for b in app.demo.blocks.values() if getattr(b, "elem_id", None)}
    assert (defaults["preset"], defaults["epochs"], defaults["rank"]) == ("cpu", 3, 64)
    assert ui.preset_values("seed") == (5, 64)
    # Once facts are loaded the cpu preset's rank follows their number (the seed's stays 64).
    from andraeus_core import cpu_rank, load_profile

    sess = ui.Session(profile=load_profile(ROOT / "examples" / "seed_profile.yaml"))
    assert ui.preset_values("cpu", sess) == (3, cpu_rank(10)) and ui.profile_rank("seed", sess) == 64
    assert ui.seed_recipe() == ("qwen2.5-7b", "seed", True, 5, 64)  # the seed's model and recipe, one click away
    assert app.demo._queue.max_size == 32
    limits = {fn.api_name: fn.concurrency_limit for fn in app.demo.fns.values()}
    assert limits["train"] == 1 and limits["evaluate"] == 1 and limits["chat"] == 2
    assert app.demo.max_file_size == 2 * 1024 * 1024
    # No user data at module level: sessions live in gr.State only.
    assert not [k for module in (app, ui) for k, v in vars(module).items() if isinstance(v, ui.Session)]
    assert app.LAUNCH_KWARGS["max_file_size"] == ui.MAX_UPLOAD


def test_zero_gpu_durations_follow_the_job_and_gpu_functions_take_plain_values(monkeypatch, make_adapter, tmp_path):
    import inspect
    import pickle

    from andraeus_core import load_profile
    from andraeus_web import ui

    # spaces calls the duration function with the GPU function's own arguments, and pickles them for the worker
    # (off ZeroGPU, spaces.GPU returns the function itself).
    for duration, gpu in (
        (ui._slice_seconds, ui._train_slice_on_gpu),
        (ui._evaluation_seconds, ui._evaluate_on_gpu),
        (ui._chat_seconds, ui._stream_on_gpu),
    ):
        assert list(inspect.signature(duration).parameters) == list(inspect.signature(gpu).parameters)
    profile_json = load_profile(ROOT / "examples" / "seed_profile.yaml").model_dump_json()
    args = (profile_json, "/tmp/x", *FAST.values(), True, 100.0)
    pickle.dumps(args)
    assert ui._slice_seconds(*args) == 100
    assert ui._slice_seconds(*args[:-1], None) == 290  # the per-call limit, ANDRAEUS_ZEROGPU_MAX_S
    assert ui._slice_seconds(*args[:-1], 1000.0) == 290
    monkeypatch.setenv("ANDRAEUS_ZEROGPU_MAX_S", "60")
    assert ui._slice_seconds(*args[:-1], None) == 60

    # Evaluation and chat ask for what they need (an anonymous visitor has 120 s a day), not a fixed 180 s / 90 s.
    adapter = str(make_adapter(tmp_path / "a", dataset={"train": 300, "heldout": 50}))
    assert (
        ui._evaluation_seconds(adapter) == ui._chat_seconds(adapter, [], True, True, {}) == 20
    )  # tiny-random: the floor
    from andraeus_core import gpu_call_seconds

    seven_b = gpu_call_seconds("qwen2.5-7b", decode_steps=3 * 48)  # an evaluation of <= 64 questions on 7B
    assert 30 < seven_b < 90


def test_gpu_quota_and_duration_errors_are_explained():
    from andraeus_web import ui

    quota = ui._explain_gpu_error(RuntimeError("You have exceeded your GPU quota (60s requested vs. 10s left)."))
    assert "quota" in quota and "10s left" in quota and "andraeus train" in quota
    aborted = ui._explain_gpu_error(RuntimeError("GPU task aborted"))
    assert "ran out" in aborted and "epochs" in aborted
    assert ui._explain_gpu_error(RuntimeError("something else")) == "something else"


def test_a_quota_refusal_mid_run_keeps_the_checkpoint_says_what_to_do_and_train_continues(monkeypatch):
    import gradio as gr

    import andraeus_core as core
    from andraeus_web import ui

    monkeypatch.setattr(ui, "SLICED", True)
    calls: list[tuple[bool, float | None]] = []
    refusal = "You have exceeded your free ZeroGPU quota (87s requested vs. {left}s left). Try again in 0:42:00."
    plan: dict = {"left": 31, "slices": []}

    def gpu_slice(profile_json, session_dir, *args):  # stands in for the @spaces.GPU call
        *_settings, resume, budget = args
        calls.append((resume, budget))
        if not plan["slices"]:
            raise gr.Error(refusal.format(left=plan["left"]))  # ZeroGPU refuses before the call starts
        yield core.ProgressEvent(phase="train", step=len(calls), total_steps=135, loss=2.0)
        yield plan["slices"].pop(0)

    monkeypatch.setattr(ui, "_train_slice_on_gpu", gpu_slice)
    sess = ui.Session()
    sess.profile = core.load_profile(ROOT / "examples" / "seed_profile.yaml")
    settings = ("smollm2-135m", "cpu", 3, 64, False, 30, 0.2)

    def train(*values):
        return [status for _s, status, _plot in ui.start_training(sess, *values, progress=lambda *a, **k: None)]

    # One call trains to step 40 and checkpoints; ZeroGPU refuses the next one.
    plan["slices"] = [core.SliceResult(status="paused", step=40, total_steps=135)]
    statuses = train(*settings)
    text = statuses[-1]
    assert text.startswith("⛽ GPU quota") and "31s left" in text and "0:42:00" in text, text
    assert "step 40 of 135" in text and "checkpoint is kept" in text and "press **Train** again" in text
    assert "andraeus train" in text and "signed in" in text and "Traceback" not in text
    assert sess.paused == settings and sess.quota_left_s == 31 and sess.adapter is None
    assert [resume for resume, _ in calls] == [False, True]
    assert all(budget is not None and budget <= 290 for _, budget in calls)
    assert "31s of GPU quota left" in ui.estimate(sess, *settings)[1]  # the estimate now says what is left

    # Train again with the same settings: the first call resumes the checkpoint.
    calls.clear()
    plan["slices"] = [core.SliceResult(status="done", step=135, total_steps=135, adapter="/a", seconds=9.0)]
    assert train(*settings)[-1].startswith("✅ Adapter trained")
    assert calls[0][0] is True and sess.adapter == "/a" and sess.paused is None

    # Refused before any step with a 7B model: no checkpoint to keep; a smaller model that fits is offered.
    calls.clear()
    plan["left"] = 60
    text = train("qwen2.5-7b", "cpu", 3, 64, False, 30, 0.2)[-1]
    assert "60s left" in text and "a smaller base model: **" in text and "checkpoint" not in text, text
    assert calls == [(False, calls[0][1])] and sess.paused is None


def test_on_zero_gpu_a_model_that_cannot_load_within_one_call_is_refused_before_any_call(monkeypatch):
    import andraeus_core as core
    from andraeus_web import ui

    monkeypatch.setattr(ui, "ON_ZERO_GPU", True)
    monkeypatch.setattr(ui, "SLICED", True)
    monkeypatch.setenv("ANDRAEUS_ZEROGPU_MAX_S", "20")  # shorter than loading 7B by the estimate
    monkeypatch.setattr(ui, "_train_slice_on_gpu", lambda *a: pytest.fail("no GPU call should be made"))
    sess = ui.Session()
    sess.profile = core.load_profile(ROOT / "examples" / "seed_profile.yaml")
    statuses = [
        s for _s, s, _p in ui.start_training(sess, "qwen2.5-7b", "cpu", 3, 64, False, 30, 0.2, lambda *a, **k: None)
    ]
    assert len(statuses) == 1 and statuses[0].startswith("❌") and "GPU seconds" in statuses[0], statuses
    assert "does not fit one GPU call of 20s" in statuses[0] and "smaller base model" in statuses[0]


def test_python_app_py_listens_where_gradio_server_name_and_port_say(monkeypatch):
    import runpy

    import gradio

    seen: dict = {}
    monkeypatch.setattr(gradio.Blocks, "launch", lambda self, **kwargs: seen.update(kwargs))
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")  # what a Space sets; nothing listens here
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7861")
    runpy.run_path(str(ROOT / "app.py"), run_name="__main__")
    assert (seen["server_name"], seen["server_port"]) == ("0.0.0.0", 7861)
    for name in ("GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"):
        monkeypatch.delenv(name)
    runpy.run_path(str(ROOT / "app.py"), run_name="__main__")
    assert (seen["server_name"], seen["server_port"]) == ("127.0.0.1", 7860)
