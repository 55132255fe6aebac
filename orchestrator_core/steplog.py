"""A step's log file: one line per output line, with a timestamp and the stream's name.

The file is created by the first line written or by `open()`, which the engine calls once
the step has run a little while (see engine.RECORD_RUNNING_AFTER): a step that prints nothing
and ends sooner has no file, and readers show its log as empty. A log that cannot be opened
or written (a full disk, say) stops logging, never the step.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from .status import iso, utc_now


class StepLog:
    """The log of one step in one run, shared by its attempts; safe to write from any thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.error: str | None = None
        self._fd: int | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        """Create the file now, if no line has (so a silent step's log can be watched)."""
        with self._lock:
            self._open_locked()

    def _open_locked(self) -> None:
        if self._fd is not None or self.error is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            self.error = f"the log could not be opened: {exc}"

    def write(self, stream: str, text: str) -> None:
        """Append one line; `stream` is stdout, stderr or system (the orchestrator's own)."""
        line = f"{iso(utc_now())} {stream} {text}\n".encode("utf-8", "replace")
        with self._lock:
            self._open_locked()
            if self._fd is None:
                return
            try:
                os.write(self._fd, line)
            except OSError as exc:  # disk full, say: the step goes on, the log stops here
                self.error = f"the log could not be written from here on: {exc}"
                self._close_locked()

    def close(self) -> None:
        """Close the file; a later write opens it again."""
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
