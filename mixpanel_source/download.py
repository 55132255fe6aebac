"""Step 1 logic: find the window days missing from the cache, then fetch them (export or demo)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson

from database.event_format import line_day
from database.settings import Settings, Window
from mixpanel_source import cache, demo
from mixpanel_source.client import MixpanelClient

MAX_DAYS_PER_REQUEST = 10


def days_to_download(window: Window, covered: dict[date, bool], refresh_days: int) -> list[date]:
    """The missing days plus the newest `refresh_days` of the window (late data), oldest first."""
    newest = set(window.days[-refresh_days:]) if refresh_days > 0 else set()
    return [day for day in window.days if not covered.get(day) or day in newest]


def group_ranges(days: list[date], max_days: int = MAX_DAYS_PER_REQUEST) -> list[tuple[date, date]]:
    """Consecutive days grouped into (first, last) ranges of at most `max_days` days."""
    ranges: list[tuple[date, date]] = []
    for day in sorted(days):
        if ranges:
            first, last = ranges[-1]
            if day == last + timedelta(days=1) and (day - first).days < max_days:
                ranges[-1] = (first, day)
                continue
        ranges.append((day, day))
    return ranges


class DaySplitter:
    """Sorts the lines of one export response into per-day temp files; commits them together.

    A line's day is the UTC date of its `time`, kept inside the requested range: a line before
    `first` goes to `first`, one after `last` goes to `last` (so an event later than END_DATE
    stays in END_DATE's file for the broken-user check), and a line without a usable time goes
    to `first`, where the ingest step quarantines it with its line number.
    """

    def __init__(self, cache_dir: Path, first: date, last: date, *, strict: bool = False) -> None:
        self.cache_dir = cache_dir
        self.first = first
        self.last = last
        # For a project that reads the range in its own time zone the request is a day wider
        # on each side: lines of other UTC days are dropped (their own requests fetch them).
        self.strict = strict
        self.dropped = 0
        self.writers: dict[date, cache.AtomicGzipWriter] = {}

    def add(self, line: bytes) -> None:
        """File one raw line under its day."""
        day = line_day(line) or self.first
        if self.strict and not self.first <= day <= self.last:
            self.dropped += 1
            return
        day = min(max(day, self.first), self.last)
        writer = self.writers.get(day)
        if writer is None:
            writer = self.writers[day] = cache.AtomicGzipWriter(cache.day_path(self.cache_dir, day))
        writer.write_line(line)

    def commit(self) -> dict[date, int]:
        """Write every day of the range (empty ones too) into place; return lines per day."""
        day = self.first
        while day <= self.last:
            if day not in self.writers:
                self.writers[day] = cache.AtomicGzipWriter(cache.day_path(self.cache_dir, day))
            day += timedelta(days=1)
        counts = {}
        for day, writer in sorted(self.writers.items()):
            writer.commit()
            counts[day] = writer.lines
        self.writers.clear()
        return counts

    def abort(self) -> None:
        """Remove every temp file; no day file is touched."""
        for writer in self.writers.values():
            writer.abort()
        self.writers.clear()


@dataclass
class DownloadResult:
    """What step 1 did, for the summary and the report."""

    source: str
    window: Window
    coverage_before: dict[date, bool]
    coverage_after: dict[date, bool] = field(default_factory=dict)
    downloaded: dict[date, int] = field(default_factory=dict)
    ranges: list[tuple[date, date]] = field(default_factory=list)
    requests: int = 0
    profiles: int = 0
    stale_temp_files: int = 0
    cleared: int = 0


def _describe_source(source: dict | None) -> str:
    if not source:
        return "data of an unknown source"
    if source.get("source") == "demo":
        return f"demo data (END_DATE {source.get('end_date')}, {source.get('demo_users')} users)"
    return f"Mixpanel project {source.get('project_id')} ({source.get('export_url')})"


def _check_source(settings: Settings, log: Callable[[str], None]) -> int:
    """Empty the cache when its files came from another source than the settings name (demo
    data before credentials were set, another project, the demo of another END_DATE), so
    they are never counted as downloaded. Returns how many files were removed."""
    wanted = settings.cache_source()
    held = cache.read_source(settings.cache_dir)
    removed = 0
    if held != wanted:
        removed = cache.clear(settings.cache_dir)
        if removed:
            log(
                f"the cache held {_describe_source(held)}, not {_describe_source(wanted)}: "
                f"removed its {removed} file(s); the whole window is fetched again"
            )
        cache.write_source(settings.cache_dir, wanted)
    return removed


def _export(
    settings: Settings,
    ranges: list[tuple[date, date]],
    result: DownloadResult,
    client: MixpanelClient,
    log: Callable[[str], None],
) -> None:
    strict = not settings.utc_project
    for first, last in ranges:

        def write_days(lines: Iterator[bytes], first: date = first, last: date = last) -> dict:
            splitter = DaySplitter(settings.cache_dir, first, last, strict=strict)
            try:
                for line in lines:
                    splitter.add(line)
            except BaseException:
                splitter.abort()
                raise
            return splitter.commit()

        # A project made before 2023 reads from/to in its own time zone: asking a day more on
        # each side covers every second of the UTC days wanted, whatever the offset.
        wide = timedelta(days=1) if strict else timedelta(0)
        # (but never a to_date after today, which the export refuses)
        to_date = max(last, min(last + wide, datetime.now(UTC).date()))
        counts = client.export(first - wide, to_date, write_days)
        result.downloaded.update(counts)
        log(f"  {first.isoformat()}..{last.isoformat()}: {sum(counts.values()):,} lines")
    profiles = client.profiles()
    result.profiles = cache.write_lines_atomic(
        cache.profiles_path(settings.cache_dir),
        (orjson.dumps(p) for p in profiles if isinstance(p, dict)),
    )
    result.requests = client.requests


def download(
    settings: Settings,
    *,
    client_factory: Callable[[Settings], MixpanelClient] | None = None,
    log: Callable[[str], None] = print,
) -> DownloadResult:
    """Bring the cache up to date for the settings' window and return what was done."""
    window = settings.window
    result = DownloadResult(source=settings.source, window=window, coverage_before={})
    result.stale_temp_files = cache.remove_stale_temp_files(settings.cache_dir)
    result.cleared = _check_source(settings, log)
    result.coverage_before = cache.coverage(settings.cache_dir, window.days)
    todo = days_to_download(window, result.coverage_before, settings.refresh_days)
    result.ranges = group_ranges(todo)
    covered = sum(result.coverage_before.values())
    log(
        f"window {window.start.isoformat()}..{window.end.isoformat()} ({len(window.days)} days): "
        f"{covered} cached, {len(todo)} to fetch from {settings.source} "
        f"(missing + newest {settings.refresh_days})"
    )
    if settings.source == "demo":
        result.downloaded = demo.write_days(settings, todo)
        result.profiles = demo.write_profiles(settings)
    else:
        factory = client_factory or (lambda s: MixpanelClient(s, log=log))
        with factory(settings) as client:
            _export(settings, result.ranges, result, client, log)
    result.coverage_after = cache.coverage(settings.cache_dir, window.days)
    return result
