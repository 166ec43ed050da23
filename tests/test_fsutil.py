"""fsutil: files and directories appear complete or not at all, from many threads and processes at once."""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest

from andraeus_core import fsutil
from andraeus_core.fsutil import atomic_write, publish_dir, publish_file, safe_name, temp_path


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_atomic_write_text_and_bytes_creates_parents_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "notes.txt"
    assert atomic_write(target, "héllo") == target
    assert target.read_text(encoding="utf-8") == "héllo"
    atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert _leftovers(target.parent) == []


def test_temp_names_are_hidden_siblings_unique_per_process_thread_and_call(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    names = {temp_path(target).name for _ in range(100)}
    assert len(names) == 100
    name = next(iter(names))
    assert name.startswith(".state.json.tmp-") and f"-{os.getpid()}-{threading.get_ident()}-" in name
    assert temp_path(target).parent == tmp_path
    other_thread: list[str] = []
    worker = threading.Thread(target=lambda: other_thread.append(temp_path(target).name))
    worker.start()
    worker.join()
    assert f"-{threading.get_ident()}-" not in other_thread[0]


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    atomic_write(target, b"old")
    with pytest.raises(KeyboardInterrupt), publish_file(target) as tmp:
        tmp.write_bytes(b"half of the new")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_many_threads_writing_one_file_never_leave_a_mix(tmp_path: Path) -> None:
    target = tmp_path / "shared.txt"
    payloads = [str(i) * 50_000 for i in range(10)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: atomic_write(target, p), payloads * 3))
    assert target.read_text() in payloads
    assert _leftovers(tmp_path) == []


def _write_many(args: tuple[str, str]) -> int:
    target, payload = args
    for _ in range(20):
        atomic_write(target, payload)
    return os.getpid()


def test_processes_writing_one_file_never_leave_a_mix(tmp_path: Path) -> None:
    target = tmp_path / "shared.txt"
    payloads = ["a" * 100_000, "b" * 100_000]
    # spawn: a fresh interpreter per worker (forking a process that may hold torch's threads is unsafe).
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        pids = set(pool.map(_write_many, [(str(target), p) for p in payloads]))
    assert len(pids) == 2
    assert target.read_text() in payloads
    assert _leftovers(tmp_path) == []


def test_publish_dir_replaces_a_directory_in_one_step(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with publish_dir(target) as tmp:
        assert tmp.is_dir() and tmp.parent == tmp_path and not target.exists()
        (tmp / "one.txt").write_text("1")
    assert sorted(p.name for p in target.iterdir()) == ["one.txt"]
    with publish_dir(target) as tmp:
        (tmp / "two.txt").write_text("2")
        assert (target / "one.txt").is_file()  # the old directory is there until the new one is complete
    assert sorted(p.name for p in target.iterdir()) == ["two.txt"]
    assert _leftovers(tmp_path) == []


def test_publish_dir_interrupted_keeps_the_old_directory(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with publish_dir(target) as tmp:
        (tmp / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"), publish_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError("boom")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    assert _leftovers(tmp_path) == []


def test_publish_dir_puts_the_old_directory_back_when_the_move_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out"
    with publish_dir(target) as tmp:
        (tmp / "old.txt").write_text("old")
    real_replace = os.replace

    def failing_replace(src: os.PathLike, dst: os.PathLike) -> None:
        if Path(dst) == target and ".tmp-" in Path(src).name:
            raise OSError("cross-device link")
        real_replace(src, dst)

    monkeypatch.setattr(fsutil.os, "replace", failing_replace)
    with pytest.raises(OSError, match="cross-device"), publish_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
    monkeypatch.undo()
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    assert _leftovers(tmp_path) == []


def test_publish_dir_without_replace_keeps_the_first_copy(tmp_path: Path) -> None:
    target = tmp_path / "pulled"

    def publish(tag: str) -> None:
        with publish_dir(target, replace=False) as tmp:
            (tmp / "who.txt").write_text(tag)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(publish, [str(i) for i in range(12)]))
    assert sorted(p.name for p in target.iterdir()) == ["who.txt"]
    first = (target / "who.txt").read_text()
    publish("late")
    assert (target / "who.txt").read_text() == first
    assert _leftovers(tmp_path) == []


def test_safe_name() -> None:
    assert safe_name("Qwen/Qwen2.5 7B: instruct!") == "Qwen-Qwen2.5-7B-instruct"
    assert safe_name("...") == "model"
    assert len(safe_name("x" * 100)) == 48


def test_private_writes_are_owner_only_from_the_start(tmp_path: Path) -> None:
    target = atomic_write(tmp_path / "private.json", "{}", private=True)
    assert target.stat().st_mode & 0o777 == 0o600
    with publish_file(tmp_path / "report.zip", private=True) as tmp:
        tmp.write_bytes(b"zip")
    assert (tmp_path / "report.zip").stat().st_mode & 0o777 == 0o600


def test_orphaned_folders_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    from andraeus_core.fsutil import OWNER_FILE, claim_dir, sweep_dirs

    root = tmp_path / "sessions"
    mine = claim_dir(root / "mine")
    assert mine.stat().st_mode & 0o777 == 0o700 and (mine / OWNER_FILE).read_text().strip() == str(os.getpid())
    (mine / "private.json").write_text("{}")
    dead = claim_dir(root / "dead")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (dead / OWNER_FILE).write_text(gone.stdout)  # a process that has exited
    (dead / "private.json").write_text("{}")
    unmarked_old = root / "unmarked-old"
    unmarked_old.mkdir()
    unmarked_new = root / "unmarked-new"
    unmarked_new.mkdir()
    old = time.time() - 3600
    os.utime(unmarked_old, (old, old))
    idle = claim_dir(root / "idle")
    for path in (idle / OWNER_FILE, idle):
        os.utime(path, (old, old))
    removed = sweep_dirs(root, max_idle_s=1800)
    assert sorted(p.name for p in removed) == ["dead", "idle", "unmarked-old"]
    assert sorted(p.name for p in root.iterdir()) == ["mine", "unmarked-new"]
    assert sweep_dirs(tmp_path / "nothing-here", max_idle_s=1) == []


def test_the_web_app_sweeps_session_folders_left_by_a_dead_process(isolated_home: Path) -> None:
    """Session folders hold private.json: those of a server that died are removed when the next one starts."""
    from andraeus_core.fsutil import OWNER_FILE, claim_dir
    from andraeus_web import build_demo

    left = claim_dir(isolated_home / "sessions" / "from-a-dead-server")
    (left / OWNER_FILE).write_text("999999999\n")
    (left / "private.json").write_text('{"profile": {}}')
    build_demo()
    assert not left.exists()
