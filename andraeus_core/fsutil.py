"""The one way a file or a directory appears: complete, or not at all.

Everything Andraeus writes that someone else may read while it is being written (adapters, converted models, caches,
uploads, zips, JSONL exports) is written under a temporary name next to its target and then renamed into place with
``os.replace``, which is atomic on one filesystem. Temporary names carry the process id, the thread id and a random
part, so two processes, two worker threads of one service, or two calls in one thread never share one.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_write", "publish_dir", "publish_file", "safe_name", "temp_path"]


def temp_path(target: str | Path, tag: str = "tmp") -> Path:
    """A hidden sibling of ``target`` that no other process, thread or call uses: ``.<name>.<tag>-<pid>-<tid>-<hex>``.

    The name starts with a dot so that directory listings (and globs like ``*.json``) skip half-written files.
    """
    target = Path(target)
    unique = f"{os.getpid()}-{threading.get_ident()}-{secrets.token_hex(4)}"
    return target.with_name(f".{target.name}.{tag}-{unique}")


@contextmanager
def publish_file(target: str | Path) -> Iterator[Path]:
    """Write a file under a temporary name, then move it to ``target`` in one step.

    Yields the temporary path; write it however you like (``zipfile``, ``save_file``...). When the block ends
    normally the file is flushed to disk and replaces ``target``; when it raises, the temporary file is removed and
    ``target`` is untouched. The parent directory is created.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(target: str | Path, data: str | bytes, *, encoding: str = "utf-8") -> Path:
    """Write ``data`` (text or bytes) to ``target`` so that readers see the old file or the whole new one, never a
    part of it. Returns ``target`` as a Path."""
    target = Path(target)
    with publish_file(target) as tmp:
        tmp.write_bytes(data.encode(encoding) if isinstance(data, str) else data)
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
