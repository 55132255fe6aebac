"""File locks: a short one around status writes and the long one held while a pipeline runs.

Both use `flock`, which the kernel drops when the holder dies, so a crashed run never leaves
a lock that blocks the next one; the lock file's content only says who holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import PipelineBusyError
from .processes import process_alive, process_started


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the `with` block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_owner(path: Path) -> dict[str, Any] | None:
    """Who holds (or last held) a run lock: run_id, pid, pid_started, started_at; or None."""
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def owner_alive(owner: dict[str, Any] | None) -> bool:
    """True when the lock's recorded holder is still the live process it names."""
    return bool(owner) and process_alive(owner.get("pid"), owner.get("pid_started"))


def busy_message(pipeline_id: str, owner: dict[str, Any]) -> str:
    """What to tell someone who asks for a run while another one holds the pipeline."""
    pid = owner.get("pid", "?")
    if owner.get("trigger") == "dashboard":
        how = "or cancel it on the dashboard's pipelines page"
    else:
        how = f"or stop it with Ctrl-C in its terminal (or `kill {pid}`)"
    return (
        f"pipeline '{pipeline_id}' is already running: run {owner.get('run_id', '?')} "
        f"started {owner.get('started_at', '?')} by pid {pid}; wait for it to finish, {how}"
    )


class RunLock:
    """The lock held for the length of one run of one pipeline, across processes."""

    def __init__(self, path: Path, pipeline_id: str) -> None:
        self.path = path
        self.pipeline_id = pipeline_id
        self._fd: int | None = None
        self.took_over: dict[str, Any] | None = None

    def acquire(self, run_id: str, started_at: str, trigger: str = "cli") -> None:
        """Take the lock or raise PipelineBusyError naming the run that holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise PipelineBusyError(
                busy_message(self.pipeline_id, read_owner(self.path) or {})
            ) from None
        previous = read_owner(self.path)
        if previous and previous.get("run_id") and not owner_alive(previous):
            self.took_over = previous
        me = os.getpid()
        record = {
            "run_id": run_id,
            "pid": me,
            "pid_started": process_started(me),
            "started_at": started_at,
            "trigger": trigger,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Empty the lock file (no holder) and let go of the lock."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        finally:
            os.close(self._fd)
            self._fd = None
