"""Step 1 logic: find the window days missing from the cache, then fetch them (export or demo),
and bring the profiles up to date."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson

from database.errors import SourceChangeError
from database.event_format import MS_THRESHOLD, event_seconds, utc_day
from database.settings import Settings, Window
from database.sources import describe_change, same_source, source_switch_error
from mixpanel_source import cache, demo, profiles
from mixpanel_source.client import MixpanelClient
from mixpanel_source.export_body import BodyStats, ExportRecords
from mixpanel_source.project_time import ProjectClock

MAX_DAYS_PER_REQUEST = 10
# The property that keeps an event's `time` as a project made before 2023 exported it.
LOCAL_TIME_PROPERTY = "time_project_local"


def days_to_download(window: Window, covered: dict[date, bool], refresh_days: int) -> list[date]:
    """The missing days plus the newest `refresh_days` of the window (late data), oldest first."""
    newest = set(window.days[-refresh_days:]) if refresh_days > 0 else set()
    return [day for day in window.days if not covered.get(day) or day in newest]


def days_to_heal(window: Window, cache_dir: Path, covered: dict[date, bool]) -> list[date]:
    """Cached days that hold no records while a neighbouring day has data, and that no
    checked download found empty: what a bad download of older code left (an HTML page or a
    cut body cached as a whole day). They are fetched again."""
    manifest = cache.read_json(cache.days_manifest_path(cache_dir))
    looked: dict[date, dict] = {}  # files of older versions found to hold records

    def has_data(day: date) -> bool | None:
        """True: records; False: none, unchecked; None: not cached, or checked empty."""
        if not covered.get(day):
            return None
        info = manifest.get(day.isoformat())
        if isinstance(info, dict) and isinstance(info.get("records"), int):
            return True if info["records"] > 0 else None
        if isinstance(info, dict) and info.get("has_records") is True:
            return True
        if cache.has_records(cache.day_path(cache_dir, day)):
            looked[day] = {"has_records": True}
            return True
        return False

    found = {day: has_data(day) for day in window.days}
    if looked:  # noted, so that later runs do not open these files again
        cache.record_days(cache_dir, looked)
    one_day = timedelta(days=1)
    return [
        day
        for day, data in found.items()
        if data is False and (found.get(day - one_day) or found.get(day + one_day))
    ]


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
    """Sorts the records of one export response into per-day temp files; commits them together.

    A record's day is the UTC date of its `time`, kept inside the requested range: a record
    before `first` goes to `first`, one after `last` goes to `last` (so an event later than
    END_DATE stays in END_DATE's file for the broken-user check), and a line without a usable
    time goes to `first`, where the ingest step quarantines it with its line number.
    With a `clock` (a project made before 2023), `time` is the project's wall clock: it is
    rewritten as true UTC, the exported value kept in `time_project_local`.
    """

    def __init__(
        self,
        cache_dir: Path,
        first: date,
        last: date,
        *,
        strict: bool = False,
        clock: ProjectClock | None = None,
    ) -> None:
        self.cache_dir = cache_dir
        self.first = first
        self.last = last
        # For a project that reads the range in its own time zone the request is a day wider
        # on each side: lines of other UTC days are dropped (their own requests fetch them).
        self.strict = strict
        self.clock = clock
        self.dropped = 0
        self.writers: dict[date, cache.AtomicGzipWriter] = {}
        self.records: dict[date, int] = {}

    def _utc_time(self, obj: dict) -> tuple[int | None, bool]:
        """The record's UTC epoch seconds, and whether `time` was rewritten to get them."""
        props = obj.get("properties")
        if not isinstance(props, dict):
            return None, False
        exported = props.get("time")
        seconds = event_seconds(exported)
        if seconds is None or self.clock is None:
            return seconds, False
        try:
            utc = self.clock.to_utc(seconds)
        except (ValueError, OverflowError):  # at the calendar's ends: no wall clock to read
            return seconds, False
        if event_seconds(utc) != utc:  # moved off the calendar: keep what was exported
            return seconds, False
        if utc != seconds:
            shift = utc - seconds
            in_ms = abs(exported) >= MS_THRESHOLD  # type: ignore[arg-type]
            props["time"] = exported + (shift * 1000 if in_ms else shift)  # type: ignore[operator]
        props[LOCAL_TIME_PROPERTY] = exported
        return utc, True

    def add(self, line: bytes, obj: dict | None) -> None:
        """File one raw line (`obj`: its record, None for a line that does not parse)."""
        seconds = None
        if obj is not None:
            seconds, rewritten = self._utc_time(obj)
            if rewritten:
                line = orjson.dumps(obj)
        day = self.first if seconds is None else utc_day(seconds)
        if self.strict and not self.first <= day <= self.last:
            self.dropped += 1
            return
        day = min(max(day, self.first), self.last)
        writer = self.writers.get(day)
        if writer is None:
            writer = self.writers[day] = cache.AtomicGzipWriter(cache.day_path(self.cache_dir, day))
        writer.write_line(line)
        if obj is not None:
            self.records[day] = self.records.get(day, 0) + 1

    def commit(self) -> dict[date, dict[str, int]]:
        """Write every day of the range (empty ones too) into place; return, per day, its
        lines and records."""
        day = self.first
        while day <= self.last:
            if day not in self.writers:
                self.writers[day] = cache.AtomicGzipWriter(cache.day_path(self.cache_dir, day))
            day += timedelta(days=1)
        counts = {}
        for day, writer in sorted(self.writers.items()):
            writer.commit()
            counts[day] = {"lines": writer.lines, "records": self.records.get(day, 0)}
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
    healed: list[date] = field(default_factory=list)
    requests: int = 0
    profiles: profiles.ProfileSync | None = None
    stale_temp_files: int = 0
    cleared: int = 0
    joined_records: int = 0
    bad_lines: int = 0
    dropped_other_days: int = 0


def _check_source(settings: Settings, log: Callable[[str], None]) -> int:
    """Empty the cache when its files came from another source than the settings name (demo
    data before credentials were set, another project, the demo of another END_DATE), so
    they are never counted as downloaded. Returns how many files were removed. Refuses
    (SourceChangeError) to drop a Mixpanel project's files for demo data or another
    project's, unless MIXPANEL_ALLOW_SOURCE_CHANGE says so."""
    wanted = settings.cache_source()
    held = cache.read_source(settings.cache_dir)
    removed = 0
    if held != wanted:
        refusal = source_switch_error(held, wanted, f"the download cache {settings.cache_dir}")
        if refusal and not settings.allow_source_change:
            raise SourceChangeError(refusal)
        if not same_source(held, wanted):
            removed = cache.clear(settings.cache_dir)
        if removed:
            log(
                f"the cache held {describe_change(held, wanted)}: removed its {removed} "
                "file(s); the whole window is fetched again"
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
    clock = None if settings.utc_project else ProjectClock(settings.project_timezone)
    # The export refuses a to_date after today in the project's time zone.
    zone_today = datetime.now(ZoneInfo(settings.project_timezone)).date()
    for first, last in ranges:

        def write_days(
            records: ExportRecords, first: date = first, last: date = last
        ) -> tuple[dict[date, dict[str, int]], BodyStats, int]:
            splitter = DaySplitter(settings.cache_dir, first, last, strict=strict, clock=clock)
            try:
                for line, obj in records:
                    splitter.add(line, obj)
            except BaseException:
                splitter.abort()
                raise
            return splitter.commit(), records.stats, splitter.dropped

        # A project made before 2023 reads from/to in its own time zone: asking a day more on
        # each side covers every second of the UTC days wanted, whatever the offset.
        wide = timedelta(days=1) if strict else timedelta(0)
        from_date = first - wide
        to_date = max(from_date, min(last + wide, zone_today))
        counts, stats, dropped = client.export(from_date, to_date, write_days)
        cache.record_days(settings.cache_dir, counts)
        result.downloaded.update({day: c["lines"] for day, c in counts.items()})
        result.joined_records += stats.joined
        result.bad_lines += stats.bad_lines
        result.dropped_other_days += dropped
        notes = []
        if stats.joined:
            notes.append(f"{stats.joined} records joined back from split lines")
        if stats.bad_lines:
            notes.append(f"{stats.bad_lines} bad lines kept for the quarantine")
        log(
            f"  {first.isoformat()}..{last.isoformat()}: {sum(c['records'] for c in counts.values()):,}"
            f" records{' (' + '; '.join(notes) + ')' if notes else ''}"
        )
    result.profiles = profiles.sync_profiles(settings, client, log)
    result.requests = client.requests


def download(
    settings: Settings,
    *,
    client_factory: Callable[[Settings], MixpanelClient] | None = None,
    log: Callable[[str], None] = print,
) -> DownloadResult:
    """Bring the cache up to date for the settings' window and return what was done."""
    with cache.download_lock(settings.cache_dir):
        return _download(settings, client_factory, log)


def _download(
    settings: Settings,
    client_factory: Callable[[Settings], MixpanelClient] | None,
    log: Callable[[str], None],
) -> DownloadResult:
    window = settings.window
    result = DownloadResult(source=settings.source, window=window, coverage_before={})
    result.stale_temp_files = cache.remove_stale_temp_files(settings.cache_dir)
    result.cleared = _check_source(settings, log)
    result.coverage_before = cache.coverage(settings.cache_dir, window.days)
    todo = days_to_download(window, result.coverage_before, settings.refresh_days)
    result.healed = [
        d for d in days_to_heal(window, settings.cache_dir, result.coverage_before) if d not in todo
    ]
    if result.healed:
        log(
            f"{len(result.healed)} cached day(s) hold no records while the days beside them do "
            f"(a bad download?): fetching {', '.join(d.isoformat() for d in result.healed[:5])}"
            f"{', ...' if len(result.healed) > 5 else ''} again"
        )
    todo = sorted({*todo, *result.healed})
    result.ranges = group_ranges(todo)
    covered = sum(result.coverage_before.values())
    log(
        f"window {window.start.isoformat()}..{window.end.isoformat()} ({len(window.days)} days): "
        f"{covered} cached, {len(todo)} to fetch from {settings.source} "
        f"(missing + newest {settings.refresh_days})"
    )
    if settings.source == "demo":
        counts = demo.write_days(settings, todo)
        cache.record_days(
            settings.cache_dir, {d: {"lines": n, "records": n} for d, n in counts.items()}
        )
        result.downloaded = counts
        written = demo.write_profiles(settings)
        profiles.mark_synced(settings.cache_dir, written)
        result.profiles = profiles.ProfileSync("demo", True, written, written, written, 0, written)
    else:
        factory = client_factory or (lambda s: MixpanelClient(s, log=log))
        with factory(settings) as client:
            _export(settings, result.ranges, result, client, log)
    result.coverage_after = cache.coverage(settings.cache_dir, window.days)
    return result
