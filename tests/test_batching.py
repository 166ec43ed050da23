"""Issue 19: concurrent answers of one chat model are decoded in one batch, each as it would be alone.

tiny-random only. Every test holds the generation thread while it queues its answers, then lets go, so they all join
one batch at its first step (or, where said, one joins a batch already running): which answers share a batch is
fixed, not left to thread timing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from andraeus_core.chat import ChatModel, GenerationConfig, _Batch, default_max_batch, generation_scheduler
from andraeus_core.errors import ConfigError

QUESTIONS = ["hello", "What is the capital of France?", "Tell me a story about a dog.", "2 + 2?"]


@pytest.fixture
def batched(tiny_model) -> ChatModel:
    return ChatModel(tiny_model, max_batch=8)


@pytest.fixture
def serial(tiny_model) -> ChatModel:
    """The same weights answering one at a time through ``generate`` (the path before batching)."""
    return ChatModel(tiny_model, max_batch=1)


@pytest.fixture
def rows_seen(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of rows of every batched decoding step, in order."""
    seen: list[int] = []
    step = _Batch._step

    def counting(self: _Batch, scheduler: Any) -> None:
        seen.append(len(self.rows))
        step(self, scheduler)

    monkeypatch.setattr(_Batch, "_step", counting)
    return seen


@pytest.fixture
def prefills_seen(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of prompts read by every prefill pass of a batch, in order."""
    seen: list[int] = []
    prefill = _Batch._prefill

    def counting(self: _Batch, tasks: list[Any]) -> Any:
        seen.append(len(tasks))
        return prefill(self, tasks)

    monkeypatch.setattr(_Batch, "_prefill", counting)
    return seen


@contextmanager
def _held() -> Iterator[Callable[[int], None]]:
    """Hold the generation thread; ``wait_queued(n)`` waits until n more tasks are queued behind it; exit lets go."""
    scheduler = generation_scheduler()
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        release.wait(60)

    from andraeus_core.chat import on_generation_thread

    holder = threading.Thread(target=on_generation_thread, args=(hold,), daemon=True)
    holder.start()
    assert entered.wait(30)

    def wait_queued(n: int) -> None:
        deadline = time.monotonic() + 30
        while len(scheduler._ready) < n:
            assert time.monotonic() < deadline, "the answers were not queued"
            time.sleep(0.01)

    try:
        yield wait_queued
    finally:
        release.set()
        holder.join(30)


class _Answer:
    """One streamed answer in its own thread (like one API client)."""

    def __init__(self, chat: ChatModel, question: str, config: GenerationConfig, **kw: Any):
        self.usage: dict[str, Any] = {}
        self.pieces: list[str] = []
        self.error: BaseException | None = None
        self.finished_at = 0.0
        self.stream = chat.stream([{"role": "user", "content": question}], config, usage=self.usage, **kw)
        self.thread = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        try:
            for piece in self.stream:
                self.pieces.append(piece)
        except BaseException as exc:  # noqa: BLE001 - re-raised by text()
            self.error = exc
        self.finished_at = time.perf_counter()

    def text(self, timeout: float = 60) -> str:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the answer did not finish"
        if self.error is not None:
            raise self.error
        return "".join(self.pieces)


def _together(chat: ChatModel, requests: list[tuple[str, GenerationConfig]], **kw: Any) -> list[_Answer]:
    """Start every request while the generation thread is held, so that they run as one batch."""
    answers = [_Answer(chat, q, c, **kw) for q, c in requests]
    with _held() as wait_queued:
        for a in answers:
            a.thread.start()
        wait_queued(len(answers))
    for a in answers:
        a.text()
    return answers


def _wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _alone(chat: ChatModel, question: str, config: GenerationConfig, **kw: Any) -> tuple[str, dict[str, Any]]:
    usage: dict[str, Any] = {}
    text = "".join(chat.stream([{"role": "user", "content": question}], config, usage=usage, **kw))
    return text, usage


def test_batched_greedy_answers_equal_each_answer_alone(batched, serial, rows_seen, prefills_seen) -> None:
    requests = [(q, GenerationConfig(max_new_tokens=n)) for q, n in zip(QUESTIONS, (24, 9, 30, 17), strict=True)]
    answers = _together(batched, requests)
    assert max(rows_seen) == len(requests)  # they really ran as one batch
    assert prefills_seen == [len(requests)]  # and their prompts (of different lengths) were read in one pass
    for (question, config), answer in zip(requests, answers, strict=True):
        text, usage = _alone(serial, question, config)
        assert answer.text() == text  # the same text as through generate, alone
        assert answer.usage == usage
        assert _alone(batched, question, config)[0] == text  # and as a batch of one


def test_each_row_keeps_its_own_max_tokens_and_stop_strings(batched, serial, rows_seen) -> None:
    full, _ = _alone(serial, "hello", GenerationConfig(max_new_tokens=20))
    stop = full[4:7]
    assert stop.strip(), "the tiny model's greedy answer should be long enough to cut"
    requests = [
        ("hello", GenerationConfig(max_new_tokens=20, stop=[stop])),
        ("hello", GenerationConfig(max_new_tokens=3)),
        ("hello", GenerationConfig(max_new_tokens=20)),
    ]
    cut, short, whole = _together(batched, requests)
    assert max(rows_seen) == 3
    assert whole.text() == full and whole.usage["finish_reason"] == "length"
    assert cut.text() == full[: full.index(stop)] and cut.usage["finish_reason"] == "stop"
    assert cut.usage["completion_tokens"] < 20
    assert short.usage == {"completion_tokens": 3, "finish_reason": "length"} and full.startswith(short.text())


def test_a_row_that_ends_at_its_first_token_never_joins_the_batch(batched, serial, rows_seen, prefills_seen) -> None:
    """Read in the same pass as the others, an answer of one token ends there; the rest decode as they would alone."""
    requests = [
        (QUESTIONS[1], GenerationConfig(max_new_tokens=12)),
        (QUESTIONS[2], GenerationConfig(max_new_tokens=1)),
        (QUESTIONS[3], GenerationConfig(max_new_tokens=1)),
        (QUESTIONS[0], GenerationConfig(max_new_tokens=7)),
    ]
    answers = _together(batched, requests)
    assert prefills_seen == [4] and max(rows_seen) == 2
    for (question, config), answer in zip(requests, answers, strict=True):
        assert (answer.text(), answer.usage) == _alone(serial, question, config)
    assert [a.usage["completion_tokens"] for a in answers] == [12, 1, 1, 7]


def test_a_newcomer_whose_prompt_cannot_be_read_fails_alone(batched, serial, monkeypatch) -> None:
    # Answers arriving together are read in one pass; when that pass fails for one of them (say its adapter file
    # broke since it was last loaded), the others are read again alone and answer as if nothing happened.
    prefill = _Batch._prefill
    passes: list[int] = []

    def failing(self: _Batch, tasks: list[Any]) -> Any:
        passes.append(len(tasks))
        if any(task.config.max_new_tokens == 13 for task in tasks):
            raise RuntimeError("adapter file broken")
        return prefill(self, tasks)

    monkeypatch.setattr(_Batch, "_prefill", failing)
    requests = [(q, GenerationConfig(max_new_tokens=n)) for q, n in zip(QUESTIONS[:3], (12, 13, 14), strict=True)]
    answers = [_Answer(batched, q, c) for q, c in requests]
    with _held() as wait_queued:
        for a in answers:
            a.thread.start()
        wait_queued(len(answers))
    with pytest.raises(RuntimeError, match="adapter file broken"):
        answers[1].text()
    for i in (0, 2):
        assert answers[i].text() == _alone(serial, *requests[i])[0]
    # Read only now: the failing answer's error can reach its reader before the third newcomer is read again.
    assert passes[:4] == [3, 1, 1, 1]  # one pass for all three, then each alone


def test_a_cancelled_row_leaves_the_batch_and_the_others_go_on(batched, serial, rows_seen) -> None:
    cancel = threading.Event()
    long = _Answer(batched, "hello", GenerationConfig(max_new_tokens=4000), cancel=cancel)
    other = _Answer(batched, "2 + 2?", GenerationConfig(max_new_tokens=40))
    with _held() as wait_queued:
        long.thread.start()
        other.thread.start()
        wait_queued(2)
    _wait_for(lambda: bool(long.pieces))
    cancel.set()  # e.g. the HTTP client went away
    long.text(10)
    assert long.usage["completion_tokens"] < 4000
    assert other.text() == _alone(serial, "2 + 2?", GenerationConfig(max_new_tokens=40))[0]
    # They shared a batch (from its first step, or the second when "other" was queued a moment later), the
    # cancelled row left, and the other finished alone.
    assert max(rows_seen) == 2 and rows_seen[-1] == 1

    # A reader that goes away (closes its stream) cancels its row too.
    stream = batched.stream([{"role": "user", "content": "hello"}], GenerationConfig(max_new_tokens=4000))
    next(stream)
    stream.close()
    assert _alone(batched, "hello", GenerationConfig(max_new_tokens=5))[1]["completion_tokens"] == 5


def test_a_newcomer_joins_a_running_batch_at_a_step_boundary(batched, serial, rows_seen) -> None:
    long = _Answer(batched, "Tell me a story about a dog.", GenerationConfig(max_new_tokens=600))
    long.thread.start()
    _wait_for(lambda: len(long.pieces) >= 5)
    short = _Answer(batched, "hello", GenerationConfig(max_new_tokens=12))
    short.thread.start()
    assert short.text() == _alone(serial, "hello", GenerationConfig(max_new_tokens=12))[0]
    assert long.text() == _alone(serial, "Tell me a story about a dog.", GenerationConfig(max_new_tokens=600))[0]
    assert short.finished_at < long.finished_at
    assert rows_seen[0] == 1 and 2 in rows_seen and rows_seen[-1] == 1


def test_sampled_rows_keep_their_own_seed_beside_greedy_rows(batched, rows_seen) -> None:
    sampled = GenerationConfig(max_new_tokens=20, temperature=1.0, top_p=0.9, seed=7)
    greedy = GenerationConfig(max_new_tokens=20)
    alone_sampled = _alone(batched, "hello", sampled)[0]
    alone_greedy = _alone(batched, "2 + 2?", greedy)[0]
    other_seed = _alone(batched, "hello", sampled.model_copy(update={"seed": 8}))[0]
    assert other_seed != alone_sampled  # the seed matters
    seed_8 = sampled.model_copy(update={"seed": 8})
    answers = _together(batched, [("hello", sampled), ("2 + 2?", greedy), ("hello", seed_8), ("hello", sampled)])
    assert max(rows_seen) == 4
    assert [a.text() for a in answers] == [alone_sampled, alone_greedy, other_seed, alone_sampled]


def test_repetition_penalty_matches_generate(batched, serial) -> None:
    config = GenerationConfig(max_new_tokens=24, repetition_penalty=1.3)
    texts = [a.text() for a in _together(batched, [(q, config) for q in QUESTIONS[:3]])]
    assert texts == [_alone(serial, q, config)[0] for q in QUESTIONS[:3]]


@pytest.fixture
def fresh_model(shared_models_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """A tiny-random copy of its own: PEFT injects the adapter's layers into the model it wraps."""
    from andraeus_core.models import load_model

    monkeypatch.setenv("ANDRAEUS_MODELS_DIR", str(shared_models_dir))
    return load_model("tiny-random")


@pytest.fixture
def stacked_rows(monkeypatch: pytest.MonkeyPatch) -> list[list[str | None]]:
    """The per-row adapters of every forward pass that went through LoraRows.rows (the stacked path)."""
    from andraeus_core.lora_rows import LoraRows

    seen: list[list[str | None]] = []
    rows = LoraRows.rows

    def spy(self: LoraRows, names: Sequence[str | None]):
        seen.append(list(names))
        return rows(self, names)

    monkeypatch.setattr(LoraRows, "rows", spy)
    return seen


def _sorted(names: Sequence[str | None]) -> list[str]:
    return sorted(str(n) for n in names)


def test_adapter_on_and_off_rows_share_a_batch(
    tmp_path: Path, make_adapter, fresh_model, rows_seen, stacked_rows
) -> None:
    """Answers with the adapter on and off (``use_adapter=False``, the gate's base route) run in one batch, each row
    with its own adapter state (LoraRows.rows), each with the text it has alone."""
    chat = ChatModel(fresh_model, make_adapter(tmp_path / "a", weights="large"), max_batch=8)
    config = GenerationConfig(max_new_tokens=10)
    on = _alone(chat, "hello", config)[0]
    off = _alone(chat, "hello", config, use_adapter=False)[0]
    assert on != off
    rows_seen.clear()
    answers = [
        _Answer(chat, "hello", config),
        _Answer(chat, "hello", config, use_adapter=False),
        _Answer(chat, "hello", config),
        _Answer(chat, "hello", config, use_adapter=False),
    ]
    with _held() as wait_queued:
        for a in answers:
            a.thread.start()
        wait_queued(4)
    assert [a.text() for a in answers] == [on, off, on, off]
    assert max(rows_seen) == 4
    # one pass, rows on and off (in the order they joined)
    assert _sorted([chat.adapter_name, None, chat.adapter_name, None]) in map(_sorted, stacked_rows)


def test_the_gate_routes_rows_of_one_batch(tmp_path: Path, make_adapter, fresh_model) -> None:
    """A gate that sends everything to the base model: batched answers are the base model's, as alone."""
    chat = ChatModel(fresh_model, make_adapter(tmp_path / "a", weights="large", gate="base"), max_batch=8)
    config = GenerationConfig(max_new_tokens=8)
    base = _alone(chat, "What colour are ripe bananas?", config, use_adapter=False)[0]
    adapter = _alone(chat, "What colour are ripe bananas?", config, gate=False)[0]
    assert base != adapter
    routed = _Answer(chat, "What colour are ripe bananas?", config)
    forced = _Answer(chat, "What colour are ripe bananas?", config, gate=False)
    with _held() as wait_queued:
        routed.thread.start()
        forced.thread.start()
        wait_queued(2)
    assert (routed.text(), forced.text()) == (base, adapter)


def test_the_batch_size_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANDRAEUS_CHAT_BATCH", raising=False)
    assert default_max_batch() == 8  # on by default
    monkeypatch.setenv("ANDRAEUS_CHAT_BATCH", "1")
    assert default_max_batch() == 1  # off
    monkeypatch.setenv("ANDRAEUS_CHAT_BATCH", "8")
    assert default_max_batch() == 8
    for bad in ("0", "many"):
        monkeypatch.setenv("ANDRAEUS_CHAT_BATCH", bad)
        with pytest.raises(ConfigError, match="ANDRAEUS_CHAT_BATCH"):
            default_max_batch()


def test_a_stop_string_split_across_pieces_leaks_nothing(serial) -> None:
    """A stop string that starts inside a piece already decoded ("t e" after " mult") is cut where it starts: the
    possible start of a stop string is held back from the reader until the next text decides (one-at-a-time path)."""
    full, _ = _alone(serial, "hello", GenerationConfig(max_new_tokens=20))
    for start in range(1, 8):
        stop = full[start : start + 3]
        if not stop.strip():
            continue
        cut, usage = _alone(serial, "hello", GenerationConfig(max_new_tokens=20, stop=[stop]))
        assert cut == full[: full.index(stop)] and usage["finish_reason"] == "stop", (stop, cut)


EXIT_SCRIPT = """
import sys, threading
from andraeus_core.chat import ChatModel, GenerationConfig
from andraeus_core.models import load_model
chat = ChatModel(load_model("tiny-random"), max_batch=int(sys.argv[1]))
config = GenerationConfig(max_new_tokens=400)
streams = [chat.stream([{"role": "user", "content": f"story {i}"}], config) for i in range(3)]
threads = [threading.Thread(target=lambda s=s: [None for _ in s], daemon=True) for s in streams[1:]]
for t in threads:
    t.start()
print(next(iter(streams[0])) is not None, flush=True)
sys.exit(0)  # while the batch is still decoding the other answers
"""


@pytest.mark.parametrize("max_batch", [8, 1])
def test_a_process_that_exits_mid_batch_exits_cleanly(tmp_path: Path, max_batch: int) -> None:
    """Exiting while a batch still decodes (``andraeus chat --once`` returning right after its answer) neither aborts
    ("terminate called without an active exception": torch still running on the daemon generation thread while the
    interpreter finalises, or a daemon reader thread freeing a tensor then) nor hangs: at exit the generation thread
    ends its work at the next token, and the readers hold no torch objects."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    script_file = tmp_path / "exit_mid_batch.py"  # run from a file: it aborted more often than with -c
    script_file.write_text(EXIT_SCRIPT)
    for _ in range(6):  # the abort was a race (about 1 run in 5 aborted before the readers held no tensor)
        t = time.monotonic()
        script = [sys.executable, str(script_file), str(max_batch)]
        done = subprocess.run(script, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "terminate called" not in done.stderr
        assert done.stdout.strip() == "True"
        assert time.monotonic() - t < 60


# ---------------------------------------------------------------------------------------------------------------
# Several adapters on one base model (AdapterHost)


def _models(n: int) -> list[Any]:
    from andraeus_core.models import load_model

    return [load_model("tiny-random") for _ in range(n)]


def test_answers_of_different_adapters_share_a_batch(
    tmp_path: Path, make_adapter, shared_models_dir, rows_seen, stacked_rows
):
    """Three adapters in one host and the base route: one batch, each row with its own adapter (LoraRows.rows: the
    adapters stacked), and every greedy answer is the one its adapter gives with a model of its own."""
    from andraeus_core.chat import AdapterHost

    dirs = [make_adapter(tmp_path / f"a{i}", weights="large", seed=i + 1) for i in range(3)]
    host_model, *own_models = _models(4)
    host = AdapterHost(host_model, capacity=4)
    hosted = [ChatModel(host_model, d, max_batch=8, host=host) for d in dirs]
    assert len({c.adapter_name for c in hosted}) == 3 and all(c.model is host.model for c in hosted)
    own = [ChatModel(m, d, max_batch=1) for m, d in zip(own_models, dirs, strict=True)]
    config = GenerationConfig(max_new_tokens=10)
    expected = [_alone(c, "hello", config)[0] for c in own]
    base = _alone(own[0], "hello", config, use_adapter=False)[0]
    assert len({*expected, base}) == 4  # the adapters really answer differently
    rows_seen.clear()
    answers = [_Answer(c, "hello", config) for c in hosted] + [_Answer(hosted[1], "hello", config, use_adapter=False)]
    answers += [_Answer(c, "hello", config) for c in reversed(hosted)]
    with _held() as wait_queued:
        for a in answers:
            a.thread.start()
        wait_queued(len(answers))
    assert [a.text() for a in answers] == [*expected, base, *reversed(expected)]
    assert max(rows_seen) == len(answers)  # one batch
    names = [c.adapter_name for c in hosted]
    assert _sorted([*names, None, *names]) in map(_sorted, stacked_rows)  # every row in one stacked pass
    from andraeus_core.chat import on_generation_thread
    from andraeus_core.lora_rows import lora_rows

    # the batch over, its stacked copy of the adapters is freed (asked on the generation thread, after the batch)
    assert on_generation_thread(lambda: lora_rows(host.model).stacked) == ()
    # alone, through the host, each still answers as its own model does
    assert [_alone(c, "hello", config)[0] for c in hosted] == expected


def test_a_host_unloads_the_least_recently_used_adapter_and_loads_it_again(
    tmp_path: Path, make_adapter, shared_models_dir
):
    from andraeus_core.chat import AdapterHost

    dirs = [make_adapter(tmp_path / f"a{i}", weights="large", seed=i + 1) for i in range(3)]
    (host_model,) = _models(1)
    host = AdapterHost(host_model, capacity=2)
    hosted = [ChatModel(host_model, d, max_batch=8, host=host) for d in dirs]
    assert host.loaded_names() == [hosted[1].adapter_name, hosted[2].adapter_name]  # the first was unloaded
    assert hosted[0].adapter_name not in host.model.peft_config
    config = GenerationConfig(max_new_tokens=10)
    own = ChatModel(_models(1)[0], dirs[0], max_batch=1)
    assert _alone(hosted[0], "hello", config)[0] == _alone(own, "hello", config)[0]  # loaded again on use
    assert host.loaded_names()[-1] == hosted[0].adapter_name and len(host.loaded_names()) == 2
    # a deleted model's adapter leaves memory
    host.remove(dirs[0])
    assert hosted[0].adapter_name not in host.model.peft_config
    # names are hashes of the directory, never the user's words
    assert all(n.startswith("a") and len(n) == 17 for n in host.loaded_names())
    # every adapter deleted (PEFT's model then holds none), then one asked for again: it answers as before
    expected = _alone(hosted[1], "hello", config)[0]
    for d in dirs[1:]:
        host.remove(d)
    assert host.loaded_names() == [] and not host.model.peft_config
    assert _alone(hosted[1], "hello", config)[0] == expected


def test_a_broken_adapter_leaves_the_host_as_it_was(tmp_path: Path, make_adapter, shared_models_dir):
    from andraeus_core.chat import AdapterHost
    from andraeus_core.errors import AdapterError

    good = make_adapter(tmp_path / "good", weights="large")
    bad = make_adapter(tmp_path / "bad", weights="large")
    (bad / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    (host_model,) = _models(1)
    host = AdapterHost(host_model, capacity=4)
    chat = ChatModel(host_model, good, max_batch=8, host=host)
    config = GenerationConfig(max_new_tokens=8)
    before = _alone(chat, "hello", config)[0]
    with pytest.raises(AdapterError):
        ChatModel(host_model, bad, max_batch=8, host=host)
    assert host.loaded_names() == [chat.adapter_name]
    assert list(host.model.peft_config) == [chat.adapter_name]
    assert _alone(chat, "hello", config)[0] == before
