"""The one way a file or a directory appears: complete, or not at all.

Everything Andraeus writes that someone else may read while it is being written (adapters, converted models, caches,
uploads, zips, JSONL exports) is written under a temporary name next to its target and then renamed into place with
``os.replace``, which is atomic on one filesystem. Temporary names carry the process id, the thread id and a random
part, so two processes, two worker threads of one service, or two calls in one thread never share one.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = [
    "PRIVATE_FILE_MODE",
    "atomic_write",
    "claim_dir",
    "publish_dir",
    "publish_file",
    "safe_name",
    "start_sweeper",
    "sweep_dirs",
    "temp_path",
]


def temp_path(target: str | Path, tag: str = "tmp") -> Path:
    """A hidden sibling of ``target`` that no other process, thread or call uses: ``.<name>.<tag>-<pid>-<tid>-<hex>``.

    The name starts with a dot so that directory listings (and globs like ``*.json``) skip half-written files.
    """
    target = Path(target)
    unique = f"{os.getpid()}-{threading.get_ident()}-{secrets.token_hex(4)}"
    return target.with_name(f".{target.name}.{tag}-{unique}")


#: Mode of files that hold personal data (uploads, private.json, held-out questions, evaluation reports).
PRIVATE_FILE_MODE = 0o600


@contextmanager
def publish_file(target: str | Path, *, private: bool = False) -> Iterator[Path]:
    """Write a file under a temporary name, then move it to ``target`` in one step.

    Yields the temporary path; write it however you like (``zipfile``, ``save_file``...). When the block ends
    normally the file is flushed to disk and replaces ``target``; when it raises, the temporary file is removed and
    ``target`` is untouched. The parent directory is created. ``private``: the file is readable by its owner only
    (mode 0600) by the time it appears under its name.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    try:
        yield tmp
        if private:
            os.chmod(tmp, PRIVATE_FILE_MODE)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(target: str | Path, data: str | bytes, *, encoding: str = "utf-8", private: bool = False) -> Path:
    """Write ``data`` (text or bytes) to ``target`` so that readers see the old file or the whole new one, never a
    part of it. ``private``: mode 0600 from the moment the file is created. Returns ``target`` as a Path."""
    target = Path(target)
    with publish_file(target, private=private) as tmp:
        payload = data.encode(encoding) if isinstance(data, str) else data
        if private:  # created 0600, so the data is never readable by others, not even under the temporary name
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
        else:
            tmp.write_bytes(payload)
    return target


@contextmanager
def publish_dir(target: str | Path, *, replace: bool = True) -> Iterator[Path]:
    """Build a directory under a temporary name, then move it to ``target`` in one step.

    Yields a fresh, empty temporary directory next to ``target``. When the block ends normally it becomes
    ``target``; when it raises, it is removed and ``target`` is untouched.

    Args:
        target: the directory to publish.
        replace: what to do when ``target`` already exists at the end. True: the old directory is moved aside,
            the new one moved in, then the old one deleted (if the move in fails, the old one is put back); writers
            that may replace one directory at the same time must hold a lock. False: the existing directory wins
            and the new copy is discarded, so any number of writers of the same content (pulls of one commit) may
            race each other.

    Raises:
        OSError: the directory could not be moved into place.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    tmp.mkdir()
    try:
        yield tmp
        if not replace:
            try:
                os.replace(tmp, target)  # refused when another writer's directory is already there
            except OSError:
                if not target.exists():
                    raise
            return
        old = None
        if target.exists():
            old = temp_path(target, "old")
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except OSError:
            if old is not None:
                os.replace(old, target)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def safe_name(text: str, limit: int = 48) -> str:
    """``text`` as a file-name component: runs of anything but letters, digits, ``.``, ``_`` and ``-`` become ``-``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:limit]
    return slug or "model"


# ----------------------------------------------------------------------------------------------------------------
# Directories owned by a process (the web app's per-session folders), and sweeping the orphans

OWNER_FILE = ".owner"
#: A directory without an owner marker younger than this may be one another process is just creating.
_UNMARKED_GRACE_S = 60.0


def claim_dir(path: str | Path) -> Path:
    """Create ``path`` (mode 0700) marked as owned by this process, for :func:`sweep_dirs`; returns it.

    Cheap when the directory is already claimed (one ``stat``), so callers may call it on every access.
    """
    path = Path(path)
    marker = path / OWNER_FILE
    if not marker.is_file():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask and ignored for an existing directory
        marker.write_text(f"{os.getpid()}\n")
    return path


def _owner_alive(directory: Path) -> bool | None:
    """True/False: the owning process is alive/gone; None: the directory carries no readable owner marker."""
    try:
        pid = int((directory / OWNER_FILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a live process of another user
        return True
    return True


def _idle_seconds(directory: Path) -> float:
    """Seconds since anything directly in ``directory`` (or the directory itself) last changed."""
    newest = directory.stat().st_mtime
    for child in directory.iterdir():
        try:
            newest = max(newest, child.stat().st_mtime)
        except OSError:
            continue
    return time.time() - newest


def sweep_dirs(root: str | Path, *, max_idle_s: float) -> list[Path]:
    """Remove the sub-directories of ``root`` whose owner process is gone, that carry no owner marker (older than a
    minute), or that nobody touched for ``max_idle_s`` seconds; returns what was removed.

    Used for the web app's session folders: they hold a profile (``private.json``) and a process that dies (or a
    session whose end was never signalled) would otherwise leave them behind for ever.
    """
    root = Path(root)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for child in root.iterdir():
        try:
            if not child.is_dir() or child.is_symlink():
                continue
            alive = _owner_alive(child)
            idle = _idle_seconds(child)
            if alive is False or (alive is None and idle > _UNMARKED_GRACE_S) or idle > max_idle_s:
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
        except OSError:  # removed by someone else meanwhile
            continue
    if removed:
        logger.info("Removed %d orphaned folder(s) under %s", len(removed), root)
    return removed


_sweepers: dict[str, threading.Thread] = {}
_sweepers_lock = threading.Lock()


def start_sweeper(root: str | Path, *, max_idle_s: float, interval_s: float = 600.0) -> None:
    """Run :func:`sweep_dirs` on ``root`` now and then every ``interval_s`` seconds in a daemon thread (one per root
    per process; later calls for the same root do nothing)."""
    key = str(Path(root).resolve())
    with _sweepers_lock:
        if key in _sweepers and _sweepers[key].is_alive():
            return
        sweep_dirs(root, max_idle_s=max_idle_s)

        def loop() -> None:
            while True:
                time.sleep(interval_s)
                try:
                    sweep_dirs(root, max_idle_s=max_idle_s)
                except Exception:  # noqa: BLE001 - a sweep must never stop the timer
                    logger.exception("Sweeping %s failed", root)

        thread = threading.Thread(target=loop, name="andraeus-sweeper", daemon=True)
        thread.start()
        _sweepers[key] = thread
