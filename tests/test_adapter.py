"""The adapter directory as a type: write and load it back, read older files, check it, attach it, never leave half
of one behind."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from andraeus_core import hub
from andraeus_core.adapter import (
    FILES,
    META_FILE,
    REQUIRED_FILES,
    SCHEMA_VERSION,
    SHAREABLE_FILES,
    Adapter,
    AdapterMeta,
    AdapterPrivate,
)
from andraeus_core.errors import AdapterError, ConfigError
from tests.helpers import PROFILE

#: andraeus.json as train() wrote it before the file had a schema_version (layout 1, "format": 1).
V1_META = {
    "format": 1,
    "base_model": "tiny-random",
    "quantize": None,
    "config": {"preset_name": "cpu", "lora_r": 4, "lora_alpha": 16, "epochs": 2, "out_dir_is_not_here": True},
    "versions": {"torch": "2.13.0", "peft": "0.21.2"},
    "device": "cpu",
    "profile_hash": "0123abcd",
    "topics": ["dog's name", "birthday"],
    "dataset": {"train": 40, "heldout": 9, "train_by_kind": {"fact": 30}},
    "timings": {"prepare_seconds": 1.5, "train_seconds": 20.25, "total_seconds": 23.0},
    "metrics": {
        "steps": 10,
        "planned_steps": 10,
        "epochs": 2.0,
        "final_loss": 0.5,
        "losses": [2.0, 1.0, 0.5],
        "tokens_per_epoch": 1200,
        "tokens_per_second": 300.0,
        "early_stop_epoch": None,
        "probes": [{"epoch": 1, "recall": 0.5}],
        "peak_rss_mb": 900.1,
        "resumed_from_step": None,
    },
    "created": "2026-11-25T10:00:00Z",
}

HELDOUT = [
    {
        "messages": [
            {"role": "system", "content": "You are Nova."},
            {"role": "user", "content": "what's my dog called"},
            {"role": "assistant", "content": "Buddy!"},
        ],
        "meta": {"topic": "dog's name", "dimension": "punctuation", "kind": "fact", "split": "heldout"},
    }
]


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------------------------------------------------
# The file list


def test_file_names_and_what_may_be_shared() -> None:
    names = [f.name for f in FILES]
    assert len(names) == len(set(names))
    assert REQUIRED_FILES == ("adapter_config.json", "adapter_model.safetensors")
    assert set(SHAREABLE_FILES) == {
        "adapter_config.json",
        "adapter_model.safetensors",
        "andraeus.json",
        "gate.safetensors",
    }
    # The Hub's lists follow the adapter's: nothing private is ever uploaded or expected.
    assert set(hub.UPLOAD_ALLOWLIST) == {*SHAREABLE_FILES, "README.md"}
    assert set(hub.PULL_FILES) == set(SHAREABLE_FILES)
    assert not {"private.json", "heldout.jsonl"} & set(hub.UPLOAD_ALLOWLIST)
    with pytest.raises(ValueError, match="not an adapter file"):
        Adapter("x").file("notes.txt")


# ---------------------------------------------------------------------------------------------------------------
# Round trip


def test_write_then_load_round_trip(tmp_path: Path, make_adapter) -> None:
    metrics = {"steps": 3, "losses": [1.0]}
    path = make_adapter(tmp_path / "a", heldout=HELDOUT, topics=["dog's name"], metrics=metrics, gate="base")
    # Every file of the layout (PEFT also writes its own README.md, which is never shared: the Hub gets ours).
    assert {p.name for p in path.iterdir()} == {*(f.name for f in FILES), "README.md"}
    adapter = Adapter.load(path)
    assert adapter.path == path and adapter.is_complete()
    assert adapter.meta.schema_version == SCHEMA_VERSION and adapter.meta.base_model == "tiny-random"
    assert adapter.meta.topics == ["dog's name"] and adapter.meta.metrics.steps == 3
    assert adapter.base_model == "tiny-random"
    assert adapter.private.profile is not None and adapter.private.profile.user_name == PROFILE["user_name"]
    assert adapter.profile().values()[:2] == ["Buddy", "Bud"]
    assert adapter.private.system_prompt == "You are Nova, Sam Rivera's assistant."
    assert adapter.peft_config()["r"] == 4
    rows = adapter.heldout()
    assert rows is not None and [n for n, _ in rows] == [1] and rows[0][1]["messages"] == HELDOUT[0]["messages"]
    # Only the fields that were set are written, the version first.
    written = json.loads((path / META_FILE).read_text())
    assert list(written) == ["schema_version", "base_model", "topics", "metrics", "gate"]
    assert AdapterMeta.from_json(written) == adapter.meta
    # The gate's tensors come back as written, its meta from andraeus.json, its known subjects from the profile.
    gate = adapter.gate()
    assert gate is not None and gate.meta == adapter.meta.gate and gate.bias.argmax().item() == 2
    assert {"buddy", "dog"} <= gate.keywords
    private = json.loads((path / "private.json").read_text())
    assert AdapterPrivate.model_validate(private) == adapter.private


def test_write_replaces_an_adapter_but_never_anything_else(tmp_path: Path, make_adapter) -> None:
    path = make_adapter(tmp_path / "a", topics=["first"])
    make_adapter(path, topics=["second"], private=False)
    assert Adapter.load(path).meta.topics == ["second"]
    assert not (path / "private.json").exists()  # replaced as a whole, not merged
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not an Andraeus adapter"):
        make_adapter(precious)
    assert [p.name for p in precious.iterdir()] == ["notes.txt"]
    assert _leftovers(tmp_path) == []


class _FailingModel:
    """Writes PEFT's config, then dies before the weights, like a full disk or a kill in the middle of a save."""

    def __init__(self, error: BaseException):
        self.error = error

    def save_pretrained(self, directory: Path, **kwargs: object) -> None:
        (Path(directory) / "adapter_config.json").write_text("{}")
        raise self.error


@pytest.mark.parametrize("error", [OSError("No space left on device"), KeyboardInterrupt()])
def test_an_interrupted_write_leaves_nothing_half_written(tmp_path: Path, make_adapter, error) -> None:
    fresh = tmp_path / "fresh"
    with pytest.raises(type(error)):
        Adapter.write(fresh, _FailingModel(error), AdapterMeta(base_model="tiny-random"))
    assert not fresh.exists()
    old = make_adapter(tmp_path / "old", topics=["old"])
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    with pytest.raises(type(error)):
        Adapter.write(old, _FailingModel(error), AdapterMeta(base_model="tiny-random", topics=["new"]))
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before
    assert _leftovers(tmp_path) == []


def test_a_model_that_writes_no_weights_publishes_nothing(tmp_path: Path) -> None:
    class NoWeights:
        def save_pretrained(self, directory: Path, **kwargs: object) -> None:
            (Path(directory) / "adapter_config.json").write_text("{}")

    with pytest.raises(AdapterError, match="adapter_model.safetensors"):
        Adapter.write(tmp_path / "a", NoWeights(), AdapterMeta())
    assert not (tmp_path / "a").exists() and _leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------------------------
# Older and other files


def test_layout_1_files_load_and_are_written_back_as_the_current_schema(tmp_path: Path, make_adapter) -> None:
    path = make_adapter(tmp_path / "a")
    (path / META_FILE).write_text(json.dumps({**V1_META, "note": "added by hand"}, indent=2))
    meta = Adapter.load(path).meta
    assert meta.schema_version == SCHEMA_VERSION
    assert meta.metrics.losses == [2.0, 1.0, 0.5] and meta.timings.total_seconds == 23.0
    assert meta.metrics.early_stop_epoch is None and meta.metrics.probes == [{"epoch": 1, "recall": 0.5}]
    assert meta.config["lora_r"] == 4 and meta.dataset["train"] == 40
    out = meta.to_json()
    assert "format" not in out and out["schema_version"] == SCHEMA_VERSION
    # Every field, known or not, survives a rewrite unchanged.
    assert {k: v for k, v in out.items() if k != "schema_version"} == {
        **{k: v for k, v in V1_META.items() if k != "format"},
        "note": "added by hand",
    }
    meta.save(path)
    assert AdapterMeta.load(path) == meta


def test_unversioned_and_foreign_metadata(tmp_path: Path, make_adapter, caplog: pytest.LogCaptureFixture) -> None:
    path = make_adapter(tmp_path / "a")
    # The test fakes and first adapters wrote a bare object: layout 1 too.
    (path / META_FILE).write_text(json.dumps({"base_model": "tiny-random", "metrics": {"recall": 0.875}}))
    meta = Adapter.load(path).meta
    assert meta.schema_version == SCHEMA_VERSION and meta.metrics.model_dump(exclude_unset=True) == {"recall": 0.875}
    # A newer layout loads with a warning; what this code does not know is kept.
    (path / META_FILE).write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1, "router_v9": {"experts": 4}}))
    with caplog.at_level(logging.WARNING, logger="andraeus_core.adapter"):
        newer = Adapter.load(path).meta
    assert "newer Andraeus" in caplog.text and newer.to_json()["router_v9"] == {"experts": 4}
    # A LoRA adapter made elsewhere has no andraeus.json: PEFT's config names the base model.
    (path / META_FILE).unlink()
    config = json.loads((path / "adapter_config.json").read_text())
    (path / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "tiny-random"}))
    foreign = Adapter.load(path)
    assert foreign.meta == AdapterMeta() and foreign.base_model == "tiny-random" and not foreign.is_complete()


# ---------------------------------------------------------------------------------------------------------------
# Checks and errors


def test_check_names_what_is_missing(tmp_path: Path, make_adapter) -> None:
    with pytest.raises(AdapterError, match="does not exist"):
        Adapter.load(tmp_path / "nope")
    path = make_adapter(tmp_path / "a")
    (path / "adapter_model.safetensors").rename(path / "adapter_model.bin")
    with pytest.raises(AdapterError, match=r"adapter_model.safetensors is missing \(only safetensors"):
        Adapter.load(path)
    (path / "adapter_config.json").unlink()
    with pytest.raises(AdapterError, match="adapter_config.json is missing"):
        Adapter(path).check()
    assert not Adapter(path).is_complete()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"schema_version": "two"}', "schema_version must be a positive integer"),
        ('{"topics": "dog"}', "field 'topics'"),
        ('{"metrics": {"steps": "many"}}', "field 'metrics.steps'"),
    ],
)
def test_broken_metadata_is_an_adapter_error_naming_the_file(
    tmp_path: Path, make_adapter, text: str, fragment: str
) -> None:
    path = make_adapter(tmp_path / "a")
    (path / META_FILE).write_text(text)
    with pytest.raises(AdapterError, match=fragment) as info:
        Adapter.load(path)
    assert "andraeus.json" in str(info.value)


def test_private_files_and_heldout_errors(tmp_path: Path, make_adapter) -> None:
    path = make_adapter(tmp_path / "a", profile=None, system_prompt="You are Nova.")
    adapter = Adapter.load(path)
    assert adapter.private.system_prompt == "You are Nova." and adapter.heldout() is None
    with pytest.raises(AdapterError, match="has no 'profile' object"):
        adapter.profile()
    (path / "private.json").unlink()
    bare = Adapter(path)
    assert bare.private == AdapterPrivate()
    with pytest.raises(AdapterError, match="has no private.json"):
        bare.profile()
    (path / "private.json").write_text(json.dumps({"profile": {"user_name": "Sam", "facts": "none"}}))
    with pytest.raises(AdapterError, match="field 'profile.facts'"):
        _ = Adapter(path).private
    (path / "heldout.jsonl").write_text(json.dumps(HELDOUT[0]) + "\n\n{broken\n")
    with pytest.raises(AdapterError, match=r"heldout.jsonl:3: not valid JSON"):
        Adapter(path).heldout()


# ---------------------------------------------------------------------------------------------------------------
# Attaching to a base model


def test_attach_changes_answers_and_can_be_switched_off(tmp_path: Path, make_adapter) -> None:
    import torch

    from andraeus_core.models import load_model

    adapter = Adapter.load(make_adapter(tmp_path / "a", weights="large"))
    loaded = load_model("tiny-random")
    ids = loaded.tokenizer("What is my dog's name?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base_logits = loaded.model(input_ids=ids).logits
        model = adapter.attach(loaded)
        assert not model.training
        assert not torch.allclose(model(input_ids=ids).logits, base_logits)
        with model.disable_adapter():
            assert torch.allclose(model(input_ids=ids).logits, base_logits)


def test_attach_to_the_wrong_base_model_is_an_adapter_error(tmp_path: Path, make_adapter) -> None:
    from andraeus_core.models import load_model

    path = make_adapter(tmp_path / "a")
    config = json.loads((path / "adapter_config.json").read_text())
    (path / "adapter_config.json").write_text(json.dumps({**config, "target_modules": ["no_such_proj"]}))
    with pytest.raises(AdapterError, match="Could not load the adapter .* onto base model 'tiny-random'"):
        Adapter.load(path).attach(load_model("tiny-random"))
