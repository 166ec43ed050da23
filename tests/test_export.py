"""Export: a merged model that loads without PEFT and gives the adapter's logits, GGUF files that carry the chat
template and the system prompt and load back, the Ollama Modelfile, vLLM's rules, and nothing half-written.

Mechanics run on tiny-random adapters (fast); the slow test exports the embedded default and asks it a question.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from andraeus_core import AdapterError, ConfigError, ExportError, export_adapter, plan_vllm
from andraeus_core.export import (
    MARKER_FILE,
    SYSTEM_PROMPT_KEY,
    export_gguf,
    export_merged,
    export_ollama,
    export_vllm,
    personal_chat_template,
)
from andraeus_core.fsutil import safe_name
from tests.helpers import PROFILE

SYSTEM = f"You are Nova, {PROFILE['user_name']}'s assistant."
QUESTION = [{"role": "user", "content": "What is my dog's name?"}]


def _logits(model: Any, tokenizer: Any, messages: list[dict[str, str]]) -> Any:
    import torch

    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        return model(input_ids=ids["input_ids"]).logits[0]


def _peft_logits(adapter_dir: Path) -> Any:
    from andraeus_core import Adapter, load_model

    loaded = load_model("tiny-random")
    model = Adapter.load(adapter_dir).attach(loaded)
    return _logits(model, loaded.tokenizer, [{"role": "system", "content": SYSTEM}, *QUESTION])


def _gguf_header_value(path: Path, key: str) -> Any:
    """One scalar metadata value read from a GGUF header without parsing the (49k-token) vocabulary after it."""
    import struct

    scalars = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    with open(path, "rb") as fh:
        assert fh.read(4) == b"GGUF"
        _version, _tensors, count = struct.unpack("<IQQ", fh.read(20))
        for _ in range(count):
            (length,) = struct.unpack("<Q", fh.read(8))
            name = fh.read(length).decode()
            (kind,) = struct.unpack("<I", fh.read(4))
            if kind == 8:
                (length,) = struct.unpack("<Q", fh.read(8))
                value: Any = fh.read(length).decode()
            elif kind in scalars:
                fmt = "<" + scalars[kind]
                (value,) = struct.unpack(fmt, fh.read(struct.calcsize(fmt)))
            else:  # an array: the vocabulary, which comes after the model's own keys
                break
            if name == key:
                return value
    raise KeyError(key)


def _siblings(target: Path) -> list[str]:
    """Anything next to ``target`` that is not ``target`` itself (temporary directories left behind)."""
    return sorted(p.name for p in target.parent.iterdir() if p.name != target.name) if target.parent.exists() else []


@pytest.fixture(scope="module")
def adapter_dir(make_adapter: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One adapter with visibly non-zero LoRA weights (so a lost merge shows in the logits), shared by the module."""
    return make_adapter(tmp_path_factory.mktemp("adapter") / "nova", weights="large")


# ----------------------------------------------------------------------------------------------------------------
# merged


def test_merged_model_loads_without_peft_and_gives_the_adapters_logits(adapter_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = export_merged(adapter_dir, tmp_path / "out" / "merged")
    out = result.path
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", MARKER_FILE} <= set(
        result.files
    )
    assert not any("adapter" in f for f in result.files)  # no PEFT file: a plain transformers model
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o700  # it holds the facts
    marker = json.loads((out / MARKER_FILE).read_text())
    assert marker["format"] == "merged" and marker["gate_included"] is False
    assert PROFILE["user_name"] not in (out / MARKER_FILE).read_text()

    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert not hasattr(model, "peft_config")
    # The chat template answers under the adapter's system prompt when the conversation brings none...
    prompt = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    assert SYSTEM in prompt and "SmolLM" not in prompt
    # ...and gives the adapter's logits (float32 on both sides: the merge is exact up to rounding).
    merged = _logits(model, tokenizer, QUESTION)
    adapter = _peft_logits(adapter_dir)
    assert merged.shape == adapter.shape
    assert (merged - adapter).abs().max().item() < 1e-4
    assert _siblings(out) == []


def test_personal_template_keeps_a_conversations_own_system_message(tiny_model: Any) -> None:
    from jinja2 import Template

    template = personal_chat_template(tiny_model.tokenizer.chat_template, 'Say "hi" — to Inés\n')
    own = Template(template).render(messages=[{"role": "system", "content": "Own."}, *QUESTION])
    default = Template(template).render(messages=QUESTION)
    assert "Own." in own and "Inés" not in own
    assert 'Say "hi" — to Inés\n' in default


# ----------------------------------------------------------------------------------------------------------------
# gguf / ollama


def test_gguf_f16_carries_template_and_system_prompt_and_loads_back(
    adapter_dir: Path, tmp_path: Path, tiny_model: Any
) -> None:
    import gguf
    from transformers import AutoModelForCausalLM

    result = export_gguf(adapter_dir, tmp_path / "gguf", quant="f16")
    assert result.main_file and result.main_file.endswith("-f16.gguf")
    assert sorted(result.files) == sorted([result.main_file, MARKER_FILE])  # the merged copy was removed
    path = result.path / result.main_file
    reader = gguf.GGUFReader(path)
    fields = {name: f.contents() for name, f in reader.fields.items() if not name.startswith("tokenizer.ggml.")}
    assert fields["general.architecture"] == "llama"
    assert fields["general.file_type"] == gguf.LlamaFileType.MOSTLY_F16
    assert fields[SYSTEM_PROMPT_KEY] == SYSTEM
    assert SYSTEM in fields["tokenizer.chat_template"]

    # Round trip through transformers' GGUF loader: the adapter's logits, up to f16 rounding.
    # (the tokenizer is the base model's: reading it back from the GGUF as well would double the test's time)
    model = AutoModelForCausalLM.from_pretrained(result.path, gguf_file=result.main_file)
    back = _logits(model, tiny_model.tokenizer, [{"role": "system", "content": SYSTEM}, *QUESTION])
    adapter = _peft_logits(adapter_dir)
    assert back.shape == adapter.shape
    assert (back - adapter).abs().max().item() < 0.05
    assert (back[-1].argmax() == adapter[-1].argmax()).item()


def test_ollama_bundle_has_a_modelfile_that_matches_the_template(adapter_dir: Path, tmp_path: Path) -> None:
    result = export_ollama(adapter_dir, tmp_path / "ollama", quant="q8_0", name="nova")
    assert result.main_file and result.main_file.endswith("-q8_0.gguf")
    path = result.path / result.main_file
    assert _gguf_header_value(path, "general.file_type") == 7  # MOSTLY_Q8_0
    assert _gguf_header_value(path, "general.architecture") == "llama"
    assert json.loads((result.path / MARKER_FILE).read_text())["quant"] == "q8_0"
    modelfile = (result.path / "Modelfile").read_text()
    assert f"FROM ./{result.main_file}\n" in modelfile
    assert 'TEMPLATE """{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>' in modelfile
    assert "<|im_start|>assistant\n{{ end }}" in modelfile
    assert f'SYSTEM """{SYSTEM}"""' in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and "PARAMETER temperature 0" in modelfile
    assert stat.S_IMODE(os.stat(result.path / "Modelfile").st_mode) == 0o600
    assert result.commands[-2:] == ["ollama create nova -f Modelfile", "ollama run nova"]
    readme = (result.path / "README.md").read_text()
    assert "ollama run nova" in readme and "gate" in readme


def test_gguf_refuses_an_unknown_quant_and_architecture_before_any_work(adapter_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="quant must be one of f16, q8_0"):
        export_gguf(adapter_dir, tmp_path / "q4", quant="q4_0")  # type: ignore[arg-type]
    with pytest.raises(ExportError, match="more than the"):
        export_gguf(adapter_dir, tmp_path / "big", max_bytes=1000)
    assert not (tmp_path / "q4").exists() and not (tmp_path / "big").exists()


def test_an_interrupted_export_leaves_nothing_and_keeps_the_earlier_one(
    adapter_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import andraeus_core.export as export

    target = tmp_path / "exports" / "gguf"
    target.mkdir(parents=True)
    (target / MARKER_FILE).write_text("{}")  # an earlier export
    (target / "old.gguf").write_bytes(b"old")

    def half_written(merged_dir: Path, out_file: Path, *args: Any) -> None:
        out_file.write_bytes(b"GGUF" + b"\0" * 100)  # the converter got this far...
        raise KeyboardInterrupt  # ...when the user pressed Ctrl-C

    monkeypatch.setattr(export, "_convert_to_gguf", half_written)
    with pytest.raises(KeyboardInterrupt):
        export_gguf(adapter_dir, target)
    assert sorted(p.name for p in target.iterdir()) == [MARKER_FILE, "old.gguf"]
    assert _siblings(target) == []

    monkeypatch.setattr(export, "_convert_to_gguf", lambda *a: (_ for _ in ()).throw(RuntimeError("bad tensor")))
    with pytest.raises(ExportError, match="converter failed.*bad tensor"):
        export_gguf(adapter_dir, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists() and _siblings(target) == []


def test_bad_adapter_and_occupied_out_are_clear_errors(adapter_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "not-an-adapter").mkdir()
    with pytest.raises(AdapterError, match="not a complete LoRA adapter"):
        export_adapter(tmp_path / "not-an-adapter", "merged", tmp_path / "x")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an Andraeus export"):
        export_adapter(adapter_dir, "merged", occupied)
    assert (occupied / "notes.txt").read_text() == "mine"
    with pytest.raises(ConfigError, match="format must be one of"):
        export_adapter(adapter_dir, "onnx", tmp_path / "y")
    with pytest.raises(ConfigError, match="exports one adapter"):
        export_adapter([adapter_dir, adapter_dir], "gguf", tmp_path / "z")


# ----------------------------------------------------------------------------------------------------------------
# vllm


def _edit_config(adapter: Path, **changes: Any) -> Path:
    from andraeus_core import Adapter

    config = Adapter(adapter).peft_config()
    config.update(changes)
    (Adapter(adapter).file("adapter_config.json")).write_text(json.dumps(config))
    return adapter


@pytest.fixture
def two_adapters(make_adapter: Callable[..., Path], tmp_path: Path) -> list[Path]:
    return [make_adapter(tmp_path / "group" / name, seed=i) for i, name in enumerate(["alice", "bob"])]


def test_vllm_bundle_serves_every_adapter_on_one_base(two_adapters: list[Path], tmp_path: Path) -> None:
    result = export_vllm([two_adapters[0].parent], tmp_path / "vllm")  # a directory of adapters
    out = result.path
    serve = (out / "serve.sh").read_text()
    assert "vllm serve" in serve and "--enable-lora" in serve
    assert "--max-lora-rank 8 " in serve  # r=4 rounds up to vLLM's smallest rank
    assert "--max-loras 2 " in serve
    assert 'alice="$HERE/adapters/alice"' in serve and 'bob="$HERE/adapters/bob"' in serve
    assert os.access(out / "serve.sh", os.X_OK)
    for name in ("alice", "bob"):
        assert sorted(p.name for p in (out / "adapters" / name).iterdir()) == [
            "adapter_config.json",
            "adapter_model.safetensors",
        ]  # LoRA files only: no profile, no held-out questions, no gate
    assert 'requests/alice.json"' in (out / "request_example.sh").read_text()
    request = json.loads((out / "requests" / "alice.json").read_text())
    assert request["model"] == "alice" and request["messages"][0] == {"role": "system", "content": SYSTEM}
    assert stat.S_IMODE(os.stat(out / "requests" / "alice.json").st_mode) == 0o600
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in (out / "load_adapters.sh").read_text()
    assert "/v1/load_lora_adapter" in (out / "load_adapters.sh").read_text()


def test_vllm_rules_name_the_adapter_and_field(
    two_adapters: list[Path], make_adapter: Callable[..., Path], tmp_path: Path
) -> None:
    alice, bob = two_adapters
    with pytest.raises(ConfigError, match="max_lora_rank must be one of 8, 16, 32, 64, 128, 256, 320, 512"):
        plan_vllm([alice], max_lora_rank=12)
    _edit_config(bob, r=600)
    with pytest.raises(AdapterError, match="Adapter 'bob': field 'r' is 600, above vLLM's largest LoRA rank"):
        plan_vllm([alice, bob])
    _edit_config(bob, r=64)
    with pytest.raises(AdapterError, match="Adapter 'bob': field 'r' is 64, above --max-lora-rank 32"):
        plan_vllm([alice, bob], max_lora_rank=32)
    assert plan_vllm([alice, bob]).max_lora_rank == 64
    _edit_config(bob, use_dora=True)
    with pytest.raises(AdapterError, match="Adapter 'bob': field 'use_dora'"):
        plan_vllm([alice, bob])
    _edit_config(bob, use_dora=False, modules_to_save=["lm_head"])
    with pytest.raises(AdapterError, match="Adapter 'bob': field 'modules_to_save'"):
        plan_vllm([alice, bob])

    other = make_adapter(tmp_path / "other" / "carol")
    meta = json.loads((other / "andraeus.json").read_text())
    (other / "andraeus.json").write_text(json.dumps({**meta, "base_model": "qwen2.5-0.5b"}))
    with pytest.raises(AdapterError, match="Adapter 'carol': field 'base_model' is 'Qwen/Qwen2.5-0.5B-Instruct'"):
        plan_vllm([alice, other])

    twin = make_adapter(tmp_path / "elsewhere" / "alice")
    with pytest.raises(ConfigError, match="share the name 'alice'"):
        plan_vllm([alice, twin])
    with pytest.raises(ConfigError, match="not URL-safe"):
        plan_vllm([alice], names=["my model"])
    assert not (tmp_path / "vllm").exists()


# ----------------------------------------------------------------------------------------------------------------
# The CLI and the API


def test_cli_exports_and_reports_errors_without_a_traceback(
    two_adapters: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from andraeus_cli import main

    out = tmp_path / "bundle"
    assert main(["export", *map(str, two_adapters), "--format", "vllm", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"to {out}" in printed and str(out / "serve.sh") in printed
    assert main(["export", str(two_adapters[0]), "--format", "vllm", "--max-lora-rank", "12"]) == 1
    assert "max_lora_rank must be one of" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing"), "--format", "merged"]) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
    # pushing an export needs the confirmation, asked before the export is made
    again = tmp_path / "again"
    assert main(["export", str(two_adapters[0]), "--format", "vllm", "--out", str(again), "--push", "me/x"]) == 1
    assert "--confirm-facts-in-weights" in capsys.readouterr().err and not again.exists()


def test_api_export_is_a_tenant_scoped_job_with_a_download(make_adapter: Callable[..., Path]) -> None:
    import io
    import time
    import zipfile

    from fastapi.testclient import TestClient

    from andraeus_core import Service, Store
    from api.deps import ApiSettings
    from api.main import create_app
    from tests.test_hardening import KEYS, A, B, _succeeded_job

    service = Service(Store(), workers=0)
    with TestClient(create_app(ApiSettings(api_keys=KEYS, workers=0), service)) as c:
        job = _succeeded_job(service, "alice", make_adapter)
        model = job["fine_tuned_model"]
        r = c.post(f"/v1/models/{model}/export", headers=A, json={"format": "merged"})
        assert r.status_code == 200, r.text
        export = r.json()
        assert export["object"] == "model.export" and export["status"] in ("queued", "running", "succeeded")
        assert c.get(f"/v1/exports/{export['id']}", headers=B).status_code == 404  # another tenant's
        assert c.post(f"/v1/models/{model}/export", headers=B, json={"format": "merged"}).status_code == 404
        deadline = time.monotonic() + 120
        while export["status"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
            export = c.get(f"/v1/exports/{export['id']}", headers=A).json()
        assert export["status"] == "succeeded", export
        assert "model.safetensors" in export["files"] and "/" not in (export["error"] or {}).get("message", "")
        download = c.get(export["download_url"], headers=A)
        assert download.status_code == 200
        names = zipfile.ZipFile(io.BytesIO(download.content)).namelist()
        assert any(n.endswith("/model.safetensors") for n in names)
        assert c.get(export["download_url"], headers=B).status_code == 404

        r = c.post(f"/v1/models/{model}/export", headers=A, json={"format": "gguf", "quant": "q4_0"})
        assert r.status_code == 422  # not a type the schema offers
        # Deleting the model deletes its exports: they hold the facts.
        assert c.delete(f"/v1/models/{model}", headers=A).status_code == 200
        assert c.get(f"/v1/exports/{export['id']}", headers=A).status_code == 404
        assert not list((service.store.root / "model-exports").rglob("*.safetensors"))


def test_api_vllm_bundle_of_every_model_of_a_tenant(make_adapter: Callable[..., Path]) -> None:
    """POST /v1/exports bundles a tenant's models (all by default, or those named), never another tenant's; deleting
    any model of a bundle deletes the bundle (it holds a copy of that model's weights and system prompt)."""
    import io
    import time
    import zipfile

    from fastapi.testclient import TestClient

    from andraeus_core import Service, Store
    from api.deps import ApiSettings
    from api.main import create_app
    from tests.test_hardening import KEYS, A, B, _succeeded_job

    service = Service(Store(), workers=0)

    def wait(c: TestClient, export: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + 120
        while export["status"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
            export = c.get(f"/v1/exports/{export['id']}", headers=A).json()
        return export

    with TestClient(create_app(ApiSettings(api_keys=KEYS, workers=0), service)) as c:
        assert c.post("/v1/exports", headers=A, json={}).status_code == 400  # no models yet
        models = [_succeeded_job(service, "alice", make_adapter)["fine_tuned_model"] for _ in range(2)]
        other = _succeeded_job(service, "bob", make_adapter)["fine_tuned_model"]
        export = wait(c, c.post("/v1/exports", headers=A, json={}).json())
        assert export["status"] == "succeeded", export
        assert export["model"] is None and sorted(export["models"]) == sorted(models)
        names = zipfile.ZipFile(io.BytesIO(c.get(export["download_url"], headers=A).content)).namelist()
        served = {n.split("/")[-2] for n in names if n.endswith("/adapter_model.safetensors")}
        assert served == {safe_name(m, limit=64) for m in models}
        assert any(n.endswith("serve.sh") for n in names)
        assert c.get(f"/v1/exports/{export['id']}", headers=B).status_code == 404
        # Bob cannot bundle Alice's model; bad requests are named.
        r = c.post("/v1/exports", headers=B, json={"models": [models[0]]})
        assert r.status_code == 404
        assert c.post("/v1/exports", headers=A, json={"models": []}).json()["error"]["param"] == "models"
        assert c.post("/v1/exports", headers=A, json={"models": [models[0], models[0]]}).status_code == 400
        assert c.post("/v1/exports", headers=A, json={"models": [other]}).status_code == 404
        assert c.post("/v1/exports", headers=A, json={"format": "gguf"}).status_code == 422
        # One named model: a bundle of one.
        one = wait(c, c.post("/v1/exports", headers=A, json={"models": [models[1]]}).json())
        assert one["status"] == "succeeded" and one["models"] == [models[1]]
        # Deleting the first model deletes the bundle that holds it, and only that one.
        assert c.delete(f"/v1/models/{models[0]}", headers=A).status_code == 200
        assert c.get(f"/v1/exports/{export['id']}", headers=A).status_code == 404
        assert c.get(f"/v1/exports/{one['id']}", headers=A).status_code == 200
        left = sorted(b.name for b in (service.store.root / "model-exports").rglob("bundle-*"))
        assert left == [f"bundle-{one['id']}"]  # the deleted bundle's download zip went with it


# ----------------------------------------------------------------------------------------------------------------
# The embedded default


@pytest.mark.slow
def test_default_model_exports_to_a_gguf_that_answers_like_the_adapter(default_model: Any, tmp_path: Path) -> None:
    """SmolLM2-135M (llama, its real BPE vocabulary): the GGUF f16 loads back and gives the adapter's next tokens."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from andraeus_core import Adapter, AdapterMeta, AdapterPrivate, load_model

    torch.manual_seed(0)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(load_model("smollm2-135m").model, lora)
    adapter = Adapter.write(
        tmp_path / "nova",
        peft_model,
        AdapterMeta(base_model="smollm2-135m"),
        AdapterPrivate(system_prompt=SYSTEM, profile=PROFILE),
    )
    peft_model.eval()
    conversation = [{"role": "system", "content": SYSTEM}, *QUESTION]
    expected = _logits(peft_model, default_model.tokenizer, conversation)

    result = export_gguf(adapter.path, tmp_path / "gguf", quant="f16")
    path = result.path / str(result.main_file)
    assert _gguf_header_value(path, "general.architecture") == "llama"
    assert _gguf_header_value(path, SYSTEM_PROMPT_KEY) == SYSTEM
    model = AutoModelForCausalLM.from_pretrained(result.path, gguf_file=result.main_file)
    back = _logits(model, default_model.tokenizer, conversation)
    assert (back[-1].argmax() == expected[-1].argmax()).item()
    top = expected[-1].topk(5).indices.tolist()
    assert back[-1].topk(5).indices.tolist()[:3] == top[:3]
    assert (back - expected).abs().max().item() < 0.5


def test_a_qwen2_model_converts_to_a_qwen2_gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The qwen2 path of llama.cpp's converter, on a tiny random Qwen2 with SmolLM2's tokenizer.

    No Qwen tokenizer is reachable offline, and the converter fingerprints the tokenizer to name its pre-tokenizer:
    this tokenizer under a qwen2 config gets a fingerprint it does not know, so the test names it (SmolLM2's).
    """
    import conversion.base
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from andraeus_core import Adapter, AdapterMeta, AdapterPrivate, model_dir

    tokenizer = AutoTokenizer.from_pretrained(model_dir("tiny-random"))
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    base = tmp_path / "qwen-base"
    Qwen2ForCausalLM(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(Qwen2ForCausalLM.from_pretrained(base), lora)
    adapter = Adapter.write(
        tmp_path / "qwen-adapter", peft_model, AdapterMeta(base_model=str(base)), AdapterPrivate(system_prompt=SYSTEM)
    )
    monkeypatch.setattr(conversion.base.TextModel, "get_vocab_base_pre", lambda self, tokenizer: "smollm")
    result = export_gguf(adapter.path, tmp_path / "gguf", quant="q8_0")
    path = result.path / str(result.main_file)
    assert _gguf_header_value(path, "general.architecture") == "qwen2"
    assert _gguf_header_value(path, SYSTEM_PROMPT_KEY) == SYSTEM


@pytest.mark.slow
def test_export_bench_runs_the_gguf_in_llama_cpp_or_says_how_to_get_it(tmp_path: Path) -> None:
    """`bench/export.py --llama-cpp`: where llama-cpp-python is installed (`make llama-cpp`) the f16 and q8_0 GGUFs
    of a tiny-random adapter are run in llama.cpp itself and scored; where it is not, the bench refuses before any
    work and names the make target (CI's install leaves it out: it compiles llama.cpp)."""
    import importlib.util
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ANDRAEUS_HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path)}
    out = subprocess.run(
        [
            sys.executable,
            str(root / "bench" / "export.py"),
            "--quick",
            "--llama-cpp",
            "--json",
            str(tmp_path / "f.json"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    if importlib.util.find_spec("llama_cpp") is None:
        assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
        assert "make llama-cpp" in out.stderr
        assert not (tmp_path / "f.json").exists() and not (tmp_path / "home").exists()
        return
    assert out.returncode == 0, out.stderr[-3000:]
    systems = {row["system"]: row for row in json.loads((tmp_path / "f.json").read_text())["systems"]}
    for quant in ("f16", "q8_0"):
        row = systems[f"gguf {quant} llama.cpp"]
        assert row["tokens_per_second"] > 0 and row["metrics"]["recall"] is not None
    # f16 in llama.cpp answers (greedy) mostly like the adapter even on random weights, whose logits are near ties.
    assert systems["gguf f16 llama.cpp"]["same_as_adapter"] >= 0.5
