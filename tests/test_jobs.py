"""Service, directly (no HTTP): uploads, the job rules, a real job on tiny-random from queue to chat, recovery after
a crash, previews. tests/test_api.py checks that the REST layer maps the same onto OpenAI's shapes."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from andraeus_core import Service, Store
from andraeus_core.errors import ConfigError, ConflictError, NotFoundError, ProfileError, QueueFullError
from andraeus_core.jobs import fine_tuned_model_id, parse_training_file, resolve_hyperparameters
from andraeus_core.update import UPDATE_EPOCHS

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = (ROOT / "examples" / "minimal.csv").read_bytes()
CHAT_LINE = {
    "messages": [
        {"role": "system", "content": "You are Nova."},
        {"role": "user", "content": "What's my dog called?"},
        {"role": "assistant", "content": "Buddy."},
    ]
}


@pytest.fixture
def service() -> Service:
    return Service(Store(), workers=0, max_queued=3, base_models=["tiny-random", "smollm2-135m"])


def _file(service: Service, tenant: str = "t1", name: str = "minimal.csv", data: bytes = MINIMAL) -> str:
    return service.upload_file(tenant, name, "fine-tune", data)["id"]


# ---------------------------------------------------------------------------------------------------------------
# Files


def test_uploads_are_validated_and_problems_named(service: Service) -> None:
    record = service.upload_file("t1", "../../etc/minimal.csv", "fine-tune", MINIMAL)
    assert record["filename"] == "minimal.csv" and (record["kind"], record["fmt"]) == ("profile", "csv")
    chat = service.upload_file("t1", "chat.jsonl", "fine-tune", (json.dumps(CHAT_LINE) + "\n").encode())
    assert (chat["kind"], chat["fmt"]) == ("chat", "jsonl")
    with pytest.raises(ConfigError, match="purpose must be 'fine-tune'"):
        service.upload_file("t1", "minimal.csv", "assistants", MINIMAL)
    with pytest.raises(ProfileError, match=r"unknown training file type '\.txt'.*\.yaml, \.yml, \.json, \.csv"):
        service.upload_file("t1", "notes.txt", "fine-tune", b"hi")
    with pytest.raises(ProfileError, match="bad.csv.*row 3"):
        service.upload_file("t1", "bad.csv", "fine-tune", b"topic,value\ndog's name,Buddy\nbirthday,\n")
    with pytest.raises(ProfileError, match="chat.jsonl, line 1") as info:
        service.upload_file("t1", "chat.jsonl", "fine-tune", b'{"messages": "no"}\n')
    assert "/tmp" not in str(info.value)  # the server's temporary path is not shown
    assert service.get_file("t1", record["id"]) == record
    with pytest.raises(NotFoundError):
        service.get_file("t2", record["id"])
    with pytest.raises(NotFoundError):
        service.delete_file("t2", record["id"])
    service.delete_file("t1", record["id"])
    with pytest.raises(NotFoundError):
        service.get_file("t1", record["id"])


def test_training_files_by_suffix() -> None:
    kind, fmt, profile = parse_training_file(
        "me.YML", b"user_name: Sam\nfacts:\n  - topic: dog's name\n    value: Rex\n"
    )
    assert (kind, fmt, profile.user_name) == ("profile", "yaml", "Sam")
    kind, fmt, examples = parse_training_file("c.jsonl", (json.dumps(CHAT_LINE) + "\n").encode())
    assert (kind, fmt, len(examples)) == ("chat", "jsonl", 1)


# ---------------------------------------------------------------------------------------------------------------
# Job rules


def test_hyperparameters_map_onto_the_preset() -> None:
    base, resolved = resolve_hyperparameters("tiny-random", {}, seed=3)
    assert base.preset_name == "cpu" and base.seed == 3 and base.base_model == "tiny-random"  # no CUDA here
    assert resolved == {"n_epochs": base.epochs, "batch_size": base.batch_size, "learning_rate_multiplier": 1.0}
    config, resolved = resolve_hyperparameters(
        "tiny-random", {"n_epochs": 2, "learning_rate_multiplier": 0.5, "batch_size": 4}, seed=0
    )
    assert (config.epochs, config.batch_size) == (2, 4) and config.learning_rate == pytest.approx(
        base.learning_rate / 2
    )
    assert resolved == {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5}
    for hyper, param in [
        ({"n_epochs": 0}, "n_epochs"),
        ({"n_epochs": True}, "n_epochs"),
        ({"learning_rate_multiplier": 11}, "learning_rate_multiplier"),
        ({"batch_size": "8"}, "batch_size"),
    ]:
        with pytest.raises(ConfigError) as info:
            resolve_hyperparameters("tiny-random", hyper, seed=0)
        assert info.value.param == param and param in str(info.value)


def test_create_job_rules(service: Service) -> None:
    fid = _file(service)
    with pytest.raises(ConfigError, match="Unknown base model 'gpt-9'"):
        service.create_job("t1", model="gpt-9", training_file=fid)
    with pytest.raises(NotFoundError, match="file-nope"):
        service.create_job("t1", model="tiny-random", training_file="file-nope")
    with pytest.raises(NotFoundError):  # another tenant's file
        service.create_job("t2", model="tiny-random", training_file=fid)
    with pytest.raises(ConfigError, match="seed"):
        service.create_job("t1", model="tiny-random", training_file=fid, seed=-1)
    job, created = service.create_job("t1", model="tiny-random", training_file=fid, idempotency_key="k")
    assert created and job["status"] == "queued" and job["hyperparameters"]["n_epochs"] >= 1
    again, created = service.create_job("t1", model="tiny-random", training_file=fid, idempotency_key="k")
    assert not created and again["id"] == job["id"]
    with pytest.raises(ConflictError, match="Idempotency-Key"):
        service.create_job("t1", model="tiny-random", training_file=fid, idempotency_key="k", seed=7)
    service.create_job("t1", model="tiny-random", training_file=fid)
    service.create_job("t1", model="tiny-random", training_file=fid)
    with pytest.raises(QueueFullError) as full:
        service.create_job("t1", model="tiny-random", training_file=fid)
    assert full.value.retry_after > 0
    events, _ = service.store.list_events("t1", job["id"])
    assert [e["message"] for e in events] == ["Fine-tuning job created and queued."]


def test_cancel_rules(service: Service) -> None:
    job, _ = service.create_job("t1", model="tiny-random", training_file=_file(service))
    with pytest.raises(NotFoundError):
        service.cancel_job("t2", job["id"])
    assert service.cancel_job("t1", job["id"])["status"] == "cancelled"
    with pytest.raises(ConflictError, match="already cancelled"):
        service.cancel_job("t1", job["id"])
    with pytest.raises(ConflictError, match="needs a succeeded job"):
        service.evaluation("t1", job["id"], ("base",))


def test_base_models_are_listed_but_not_deletable(service: Service) -> None:
    assert [m["id"] for m in service.list_models("t1")] == ["tiny-random", "smollm2-135m"]
    assert service.get_model("t1", "tiny-random")["owned_by"] == "andraeus"
    with pytest.raises(ConfigError, match="is a base model"):
        service.delete_model("t1", "tiny-random")
    with pytest.raises(NotFoundError):
        service.get_model("t1", "ft:tiny-random:andraeus:ftjob-nope")
    assert fine_tuned_model_id("tiny-random", None, "ftjob-1") == "ft:tiny-random:andraeus:ftjob-1"


def test_variations_preview(service: Service) -> None:
    items = service.variations(MINIMAL, "minimal.csv", per_fact=3, seed=0)
    assert {i["topic"] for i in items} == {"dog's name", "birthday", "home city"}
    assert all(i["question"] and i["answers"] for i in items)
    with pytest.raises(ProfileError, match="need a profile"):
        service.variations((json.dumps(CHAT_LINE) + "\n").encode(), "c.jsonl", per_fact=3, seed=0)


# ---------------------------------------------------------------------------------------------------------------
# A real job


def test_a_job_trains_registers_its_model_and_serves_it(service: Service, tiny_model) -> None:
    from andraeus_core import GenerationConfig

    job, _ = service.create_job(
        "t1", model="tiny-random", training_file=_file(service), hyperparameters={"n_epochs": 1}, suffix="mine"
    )
    claimed = service.store.claim_next_job()
    assert claimed is not None and claimed["id"] == job["id"]
    service.run_job(claimed)
    done = service.get_job("t1", job["id"])
    assert done["status"] == "succeeded", done["error"]
    model_id = done["fine_tuned_model"]
    assert model_id == f"ft:tiny-random:mine:{job['id']}" and done["trained_tokens"] > 0
    events, _ = service.store.list_events("t1", job["id"], limit=100)
    messages = [e["message"] for e in events]
    assert messages[0] == "The job has successfully completed." and "Training started." in messages
    assert any(e["type"] == "metrics" and e["data"]["train_loss"] is not None for e in events)
    assert service.store.list_checkpoints("t1", job["id"])[0]["model"] == model_id
    assert model_id in [m["id"] for m in service.list_models("t1")]
    assert model_id not in [m["id"] for m in service.list_models("t2")]

    completion = service.complete(
        "t1", model_id, [{"role": "user", "content": "hi"}], GenerationConfig(max_new_tokens=4)
    )
    text = "".join(completion)
    assert completion.prompt_tokens > 0 and completion.completion_tokens >= 1 and text == completion.text
    with zipfile.ZipFile(service.model_zip("t1", model_id)) as archive:
        assert "adapter_model.safetensors" in archive.namelist() and "private.json" not in archive.namelist()
    report = service.evaluation("t1", job["id"], ())
    # a profile job fits a gate: the report is the gated system, with the adapter alone as its only comparison
    assert report["n"] > 0 and report["system"] == "adapter+gate" and set(report["baselines"]) == {"adapter_alone"}
    assert (adapter_dir := Path(done["adapter_path"])).joinpath("gate.safetensors").is_file()
    assert service.evaluation("t1", job["id"], ()) == report  # kept, not recomputed

    # Facts change: a job on the fine-tuned model continues from its adapter (OpenAI's fine-tune-a-fine-tune),
    # for its own tenant only, from a profile only; the new model names its parent.
    changed = MINIMAL.replace(b"Portland", b"Denver").replace(b"Buddy,Bud", b"Max,")
    new_file = _file(service, data=changed)
    with pytest.raises(NotFoundError, match="does not exist"):
        service.create_job("t2", model=model_id, training_file=_file(service, "t2", data=changed))
    chat_file = _file(service, name="chat.jsonl", data=(json.dumps(CHAT_LINE) + "\n").encode())
    with pytest.raises(ConfigError, match="needs a profile"):
        service.create_job("t1", model=model_id, training_file=chat_file)
    child_job, _ = service.create_job("t1", model=model_id, training_file=new_file)
    assert child_job["hyperparameters"]["n_epochs"] == UPDATE_EPOCHS  # an update's fewer epochs by default
    claimed = service.store.claim_next_job()
    assert claimed is not None and claimed["id"] == child_job["id"]
    service.run_job(claimed)
    child = service.get_job("t1", child_job["id"])
    assert child["status"] == "succeeded", child["error"]
    assert child["fine_tuned_model"].startswith("ft:tiny-random:")  # named for the base, as OpenAI names them
    assert service.get_model("t1", child["fine_tuned_model"])["parent"] == model_id
    assert service.get_model("t1", model_id)["parent"] is None
    from andraeus_core.adapter import Adapter

    meta = Adapter.load(child["adapter_path"]).meta
    assert meta.version == 2 and meta.parent is not None and meta.parent.version == 1

    assert adapter_dir.is_dir()
    service.delete_model("t1", model_id)
    assert not adapter_dir.exists()
    with pytest.raises(NotFoundError):
        service.chat_model("t1", model_id)


def test_recover_never_leaves_a_job_running(make_adapter) -> None:
    service = Service(Store(), workers=0)
    store = service.store
    fid = store.add_file("t", "p.csv", "fine-tune", b"topic,value\ndog,Rex\n", "profile", "csv")["id"]

    def running(epoch: float) -> dict:
        job = store.add_job(
            {
                "id": f"ftjob-{epoch}",
                "tenant": "t",
                "model": "tiny-random",
                "training_file": fid,
                "hyperparameters": {"n_epochs": 2},
                "seed": 0,
            }
        )
        store.update_job(job["id"], status="running", progress_epoch=epoch)
        return job

    early, resumable, written = running(0.5), running(1.0), running(2.0)
    make_adapter(Path(written["adapter_path"]), metrics={"steps": 4, "epochs": 2, "tokens_per_epoch": 10})
    service.recover()
    assert store.get_job("t", early["id"])["status"] == "failed"
    assert store.get_job("t", early["id"])["error"]["code"] == "server_restart"
    again = store.get_job("t", resumable["id"])
    assert again["status"] == "queued" and again["resume"] == 1 and again["restarts"] == 1
    finished = store.get_job("t", written["id"])
    assert finished["status"] == "succeeded" and finished["trained_tokens"] == 20
    assert store.get_model("t", finished["fine_tuned_model"]) is not None
    # A job the server keeps dying under is failed rather than retried forever.
    store.update_job(resumable["id"], status="running", restarts=2)
    service.recover()
    assert store.get_job("t", resumable["id"])["error"]["code"] == "server_restart"
