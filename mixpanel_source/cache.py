"""The download cache: one gzip JSON-lines file per UTC day, plus one profiles file.

Layout under the cache dir:  events/YYYY-MM-DD.jsonl.gz  and  profiles/profiles.jsonl.gz, plus
source.json, which says where the files came from (demo data, or which Mixpanel project): files
of another source are never mixed in. A file only ever appears whole: it is written under a
temporary name and renamed into place, so "the file exists" is the completeness test.
events/days.json records, per day, what the download that wrote it found (records, lines),
so a day left empty by a bad download of older code can be told from a checked empty day.
requests.json is the request log that paces requests across processes (rate_limit.py); the
profile sync keeps its state and the pages of a full sync under profiles/ (profiles.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import os
import shutil
import zlib
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path
from typing import IO

import orjson

from database.errors import CacheBusyError, CacheDamagedError

TMP_MARK = ".tmp-"
# Level 5 is ~2x faster than the default 9 for a few percent more bytes.
COMPRESS_LEVEL = 5


def events_dir(cache_dir: Path) -> Path:
    """Folder holding the per-day event files."""
    return Path(cache_dir) / "events"


def day_path(cache_dir: Path, day: date) -> Path:
    """The cache file of one UTC day."""
    return events_dir(cache_dir) / f"{day.isoformat()}.jsonl.gz"


def profiles_path(cache_dir: Path) -> Path:
    """The cache file with every user profile."""
    return Path(cache_dir) / "profiles" / "profiles.jsonl.gz"


@contextlib.contextmanager
def download_lock(cache_dir: Path) -> Iterator[None]:
    """Hold the cache for one download: two at once (a cron job and a click) would remove
    each other's files in progress and mix their profile syncs. The kernel frees the lock
    when its holder dies, so a killed run never blocks the next one."""
    path = Path(cache_dir) / ".download.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise CacheBusyError(
                f"another download into {cache_dir} is running (pid {holder}); wait for it to "
                "end, or stop it, then run the step again"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def request_log_path(cache_dir: Path) -> Path:
    """The log of requests sent to Mixpanel in the last hour, shared by all processes."""
    return Path(cache_dir) / "requests.json"


def days_manifest_path(cache_dir: Path) -> Path:
    """What each day file's download found: {"YYYY-MM-DD": {"records", "lines", "at"}}."""
    return events_dir(cache_dir) / "days.json"


def read_json(path: Path) -> dict:
    """A JSON object file, or {} when it is missing or damaged (it is only a cache)."""
    try:
        data = orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: dict) -> None:
    """Write a JSON object file atomically (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    with open(tmp, "wb") as handle:
        handle.write(orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def record_days(cache_dir: Path, found: dict[date, dict]) -> None:
    """Note what the downloads of these days found (after their files were committed)."""
    path = days_manifest_path(cache_dir)
    manifest = read_json(path)
    manifest.update({day.isoformat(): info for day, info in found.items()})
    write_json(path, manifest)


def has_records(path: Path) -> bool:
    """True when a day file holds at least one export record (stops at the first)."""
    try:
        with gzip.open(path, "rb") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(obj, dict) and ("event" in obj or "properties" in obj):
                    return True
    except (OSError, EOFError, zlib.error):
        return False
    return False


def temp_path_for(path: Path) -> Path:
    """A hidden sibling name for writing `path` before the rename."""
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


class AtomicGzipWriter:
    """Writes lines to a temp gzip file; `commit` renames it into place, `abort` removes it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_path_for(self.path)
        self._raw: IO[bytes] = open(self.tmp, "wb")  # noqa: SIM115 - closed in commit/abort
        # mtime=0 and no file name (the temp name holds the pid) keep the bytes a function of
        # the content, so identical data hashes the same and is not ingested again.
        self._gz = gzip.GzipFile(
            filename="", fileobj=self._raw, mode="wb", compresslevel=COMPRESS_LEVEL, mtime=0
        )
        self.lines = 0

    def write_line(self, line: bytes) -> None:
        """Append one JSON line (without its newline)."""
        self._gz.write(line)
        self._gz.write(b"\n")
        self.lines += 1

    def write_lines(self, lines: Iterable[bytes]) -> None:
        """Append many JSON lines (each without its newline)."""
        for line in lines:
            self.write_line(line)

    def commit(self) -> Path:
        """Flush to disk and rename into place."""
        self._gz.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the temp file; the final name is left as it was."""
        try:
            self._gz.close()
        finally:
            self._raw.close()
            self.tmp.unlink(missing_ok=True)


def write_lines_atomic(path: Path, lines: Iterable[bytes]) -> int:
    """Write a whole gzip JSON-lines file atomically; return the number of lines."""
    writer = AtomicGzipWriter(path)
    try:
        writer.write_lines(lines)
    except BaseException:
        writer.abort()
        raise
    writer.commit()
    return writer.lines


def source_path(cache_dir: Path) -> Path:
    """The file that says which source (demo, or which Mixpanel project) the cache holds."""
    return Path(cache_dir) / "source.json"


def read_source(cache_dir: Path) -> dict | None:
    """The source the cache's files came from, or None when unknown (no or unreadable file)."""
    return read_json(source_path(cache_dir)) or None


def write_source(cache_dir: Path, source: dict) -> None:
    """Record the source of the files about to be written (atomically)."""
    write_json(source_path(cache_dir), source)


def clear(cache_dir: Path) -> int:
    """Delete every cached day file and every profile file (the profile sync's state and pages
    too); return how many day and profile files were removed."""
    removed = 0
    folder = events_dir(cache_dir)
    paths = list(folder.glob("*.jsonl.gz")) if folder.is_dir() else []
    for path in [*paths, profiles_path(cache_dir)]:
        if path.is_file():
            path.unlink()
            removed += 1
    days_manifest_path(cache_dir).unlink(missing_ok=True)
    profiles_folder = profiles_path(cache_dir).parent
    if profiles_folder.is_dir():
        shutil.rmtree(profiles_folder)
    return removed


def remove_stale_temp_files(cache_dir: Path) -> int:
    """Delete temp files left by an interrupted run; return how many were removed."""
    removed = 0
    profiles_folder = profiles_path(cache_dir).parent
    for folder in (events_dir(cache_dir), profiles_folder, profiles_folder / "sync"):
        if folder.is_dir():
            for path in folder.glob(f".*{TMP_MARK}*"):
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def is_complete(path: Path) -> bool:
    """True when the file is in place (only whole files get their final name)."""
    return path.is_file()


def coverage(cache_dir: Path, days: Iterable[date]) -> dict[date, bool]:
    """For each day, whether its complete cache file is present."""
    return {day: is_complete(day_path(cache_dir, day)) for day in days}


def gunzip(blob: bytes) -> bytes:
    """The content of a whole gzip file, every member of it (a concatenated file has several)."""
    out = []
    while blob:
        member = zlib.decompressobj(wbits=31)
        out.append(member.decompress(blob))
        if not member.eof:
            raise zlib.error("incomplete gzip member (the file was cut short)")
        blob = member.unused_data
    return b"".join(out)


def read_lines(path: Path) -> list[bytes]:
    """All non-blank lines of a gzip JSON-lines file, newline stripped; a damaged file is a
    CacheDamagedError that says what to do."""
    try:
        data = gunzip(Path(path).read_bytes())
    except zlib.error as exc:
        raise CacheDamagedError(
            f"{path}: a damaged cache file ({exc}); delete it and run step download_update_data "
            "to fetch it again"
        ) from None
    return [line for line in data.split(b"\n") if line.strip()]
