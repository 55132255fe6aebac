"""Reading step logs with bounded memory: the tail for the page, the whole file for download."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

TAIL_BYTES = 256 * 1024


def tail_lines(path: Path, max_lines: int = 200, max_bytes: int = TAIL_BYTES) -> list[str]:
    """The last `max_lines` lines of a file, reading at most its last `max_bytes` bytes.
    A missing file gives an empty list."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            start = max(0, size - max_bytes)
            fh.seek(start)
            data = fh.read(max_bytes)
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    if start > 0 and lines:
        lines = lines[1:]  # the first line was cut in the middle
    return lines[-max_lines:]


def short_line(line: str) -> str:
    """`2026-11-25T22:13:17.444Z stdout hello` -> `22:13:17 out hello` (other lines as they are)."""
    stamp, _, rest = line.partition(" ")
    if len(stamp) == 24 and stamp[10] == "T" and stamp.endswith("Z"):
        stream, _, text = rest.partition(" ")
        tag = {"stdout": "out", "stderr": "ERR", "system": "sys"}.get(stream)
        if tag:
            return f"{stamp[11:19]} {tag} {text}"
    return line


def tail_text(path: Path, max_lines: int = 200, *, started: bool = False) -> str:
    """The tail of a log as one block of short lines; a note when the file is missing or empty.
    A step that `started` may have no file: one that ends quickly in silence gets none."""
    lines = tail_lines(path, max_lines)
    if not lines:
        if path.exists():
            return "(no output yet)"
        if started:
            return "(no log file: the step printed nothing, or its log was removed)"
        return "(no log file: the step has not started)"
    return "\n".join(short_line(x) for x in lines)


def download_button(where: Any, path: Path, file_name: str, key: str) -> None:
    """A "Download log" button in `where` (a column, or `st`), if the step has a log file."""
    if path.exists():
        where.download_button(
            "Download log",
            data=reader(path),
            file_name=file_name,
            mime="text/plain",
            key=key,
            icon=":material/download:",
            on_click="ignore",
        )


def reader(path: Path):
    """A callable that opens the log for a download button only when it is clicked."""

    def _read() -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            return f"log not readable: {exc}\n".encode()

    return _read
