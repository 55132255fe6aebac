"""Telling a whole Raw Event Export body from a cut one, record by record.

Mixpanel can answer HTTP 200 with a body that is not a whole export: a `terminated early`
trailer when it stopped the export, a last line cut in the middle, an HTML page from a proxy.
Such a body must never be cached as complete days (later runs would never fetch them again),
so `ExportRecords` raises `IncompleteExport` for it, and the client retries the request.
A record that arrives split over two lines is joined back; a line that still does not parse
is passed on as a bad line (the ingest quarantines it with its line number).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import orjson

# Lines longer than this are not export records (Mixpanel caps an event at 1 MB).
MAX_LINE_BYTES = 16 * 1024 * 1024
# A record split over more lines than this is not joined back.
MAX_JOINED_LINES = 3
TRAILER_MARKS = (b"terminated early",)


class IncompleteExport(Exception):
    """The body is not a whole export (cut, trailer, no records): retry the request."""


@dataclass
class BodyStats:
    """What reading one body found."""

    lines: int = 0
    records: int = 0
    joined: int = 0  # records rebuilt from a record split over several lines
    bad_lines: int = 0  # lines that still do not parse, passed on for the quarantine
    tolerated: bool = False  # the body ended badly the same way twice: taken as it is


def _record(line: bytes) -> dict | None:
    """The line's record: a JSON object with `event` or `properties` (`{"error": ...}` is none)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, dict) and ("event" in obj or "properties" in obj):
        return obj
    return None


def _join(pieces: list[bytes]) -> tuple[bytes, dict] | None:
    """The pieces as one record, if they make one. Joined as they are first (as Airbyte's and
    embulk's connectors do), else with an escaped newline (a raw one inside a string)."""
    for glue in (b"", b"\\n"):
        line = glue.join(pieces)
        obj = _record(line)
        if obj is not None:
            return line, obj
    return None


def _error_said(line: bytes) -> str | None:
    """The message of a line that is Mixpanel's JSON error object (`{"error": ...}` with no
    event), or None. Such a body is not an export, wherever the line stands."""
    if b'"error"' not in line:
        return None
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, dict) and "error" in obj and "event" not in obj:
        return str(obj["error"])
    return None


def _damaged_record(line: bytes) -> bool:
    """A line that starts like a record but is no JSON at all (a parsable object without
    `event`, like `{"error": ...}`, is Mixpanel saying something, not a damaged record)."""
    if not line.lstrip().startswith(b"{"):
        return False
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return True
    return False


def _shown(line: bytes) -> str:
    text = line[:60].decode("utf-8", "replace")
    return repr(text + ("..." if len(line) > 60 else ""))


def is_trailer(line: bytes) -> bool:
    """True for the line Mixpanel appends when it stopped an export before its end."""
    lowered = line.strip().lower()
    return any(lowered.startswith(mark) for mark in TRAILER_MARKS)


class ExportRecords:
    """Iterates an export body, given as byte chunks, as (raw line, record or None for a bad
    line).

    Raises `IncompleteExport` once the body turns out not to be a whole export: a trailer,
    a last line that is no complete record or has no newline, an over-long line, or lines
    none of which is a record. An empty body is a whole export of days without events.

    One bad end is not always a cut: a whole last line (newline and all) that starts like a
    record but does not parse may be a record Mixpanel holds damaged, and would then fail the
    day on every run. So `signature` (a hash of the body) is set once it has been read, and a
    body ending that way whose signature equals `tolerate` (the same bytes came twice) passes:
    its last line goes on as a bad line (the ingest quarantines it) and `stats.tolerated` says
    so. A trailer, or a body without its final newline, never passes.
    """

    def __init__(self, chunks: Iterable[bytes], tolerate: str | None = None) -> None:
        self._chunks = chunks
        self._tolerate = tolerate
        self.stats = BodyStats()
        self.signature: str | None = None

    def _split(self, digest: hashlib._Hash) -> Iterator[bytes]:
        """The body's lines; the last one, if it has no newline, as `self._unended`."""
        pieces: list[bytes] = []  # the line that has not ended yet, in pieces (no a + b loop)
        size = 0
        for chunk in self._chunks:
            digest.update(chunk)
            if b"\n" not in chunk:
                pieces.append(chunk)
                size += len(chunk)
                if size > MAX_LINE_BYTES:
                    raise IncompleteExport(
                        f"a line longer than {MAX_LINE_BYTES // 2**20} MB: not an export"
                    )
                continue
            parts = chunk.split(b"\n")
            if pieces:
                parts[0] = b"".join([*pieces, parts[0]])
            rest = parts.pop()
            pieces, size = ([rest], len(rest)) if rest else ([], 0)
            yield from parts
        self._unended = b"".join(pieces)

    def __iter__(self) -> Iterator[tuple[bytes, dict | None]]:
        stats = self.stats
        digest = hashlib.sha256()
        self._unended = b""
        first: bytes | None = None
        pending: list[bytes] = []  # lines that do not parse yet: a record split over lines?
        for line in self._split(digest):
            if not line.strip():
                continue
            stats.lines += 1
            first = line if first is None else first
            if len(line) > MAX_LINE_BYTES:
                raise IncompleteExport(
                    f"line {stats.lines} is longer than {MAX_LINE_BYTES // 2**20} MB: not an export"
                )
            if is_trailer(line):
                raise IncompleteExport(
                    f"Mixpanel stopped the export early (line {stats.lines} is {_shown(line)})"
                )
            obj = _record(line)
            if obj is not None:
                yield from self._bad(pending)
                stats.records += 1
                yield line, obj
                continue
            said = _error_said(line)
            if said is not None:
                raise IncompleteExport(
                    f"Mixpanel reported an error inside the export (line {stats.lines}: "
                    f"{_shown(said.encode())})"
                )
            pending.append(line)
            for start in range(len(pending) - 1):
                joined = _join(pending[start:])
                if joined is not None:
                    yield from self._bad(pending[:start])
                    pending.clear()
                    stats.joined += 1
                    stats.records += 1
                    yield joined
                    break
            if len(pending) >= MAX_JOINED_LINES:
                # The oldest piece starts no record that could still be joined: a bad line.
                yield from self._bad([pending.pop(0)])
        self.signature = f"{digest.hexdigest()}:{stats.lines}"
        unended = self._unended
        if unended.strip():
            # Without a Content-Length a closed connection looks like a clean end: a body
            # cut mid-line is only known by its missing newline. Never taken as it is.
            raise IncompleteExport(
                f"the body ends in the middle of a line ({len(unended)} bytes after the last "
                "newline)"
            )
        if pending:
            # A whole last line that starts like a record but is none: a cut, or a record
            # Mixpanel holds damaged. The second comes back the same; a trailer never passes.
            if self.signature != self._tolerate or not all(map(_damaged_record, pending)):
                raise IncompleteExport(
                    f"the last line is not a complete record ({_shown(pending[-1])}): the body "
                    "was cut"
                )
            stats.tolerated = True
            yield from self._bad(pending)
        if first is not None and not stats.records:
            raise IncompleteExport(
                f"none of its {stats.lines or 1} lines is an export record (the first is "
                f"{_shown(first)}): an error page, not an export"
            )

    def _bad(self, lines: list[bytes]) -> Iterator[tuple[bytes, None]]:
        for line in lines:
            self.stats.bad_lines += 1
            yield line, None
        lines.clear()
