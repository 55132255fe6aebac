"""Step 2 logic: load changed cache days into SQLite, quarantine bad lines, rebuild users.

A day is re-read only when its file changed since its last ingest (size and mtime, then the
sha256 when those differ). Changed days are parsed into scratch databases (`staging.py`), in
worker processes when there is enough to do, and copied in batches: each day's rows are
replaced inside one transaction, keyed by the file they came from (`source_day`) and
deduplicated on Mixpanel's own key (event, distinct_id, time, $insert_id).
Days that left the window are deleted; then the identity map is applied (identity.py) and the
users are rebuilt (users.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import orjson

from database import identity, migrations, parse_workers, pipeline_state, staging, users
from database.connection import BackgroundCheckpoints, connect, transaction
from database.errors import MissingDataError, SourceChangeError
from database.settings import Settings, Window
from database.sources import describe_source, same_source, source_switch_error
from mixpanel_source import cache

BATCH_DAYS = 10
SCRATCH_PREFIX = ".ingest-"
# Below this many compressed bytes of changed files, starting worker processes costs more
# than it saves, so parsing runs in this process.
PARALLEL_MIN_BYTES = 8_000_000


@dataclass
class DayFile:
    """One day's cache file: what it held and what became of it in this run."""

    day: date
    status: str  # ingested | unchanged | missing
    lines: int = 0
    unique_events: int = 0
    quarantined: int = 0
    rows_in_db: int = 0
    merged_duplicates: int = 0  # rows the identity merge made repeats of stored events


@dataclass
class IngestResult:
    """What step 2 did, for the summary and the report."""

    window: Window
    migrations_applied: list[str]
    days: list[DayFile] = field(default_factory=list)
    rows_deleted_outside_window: int = 0
    profiles: int | None = None
    users: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    workers: int = 0
    identity: identity.MergeResult | None = None
    profiles_merged: int = 0  # profiles stored under an alias, joined to their canonical user
    source_changed_from: dict | None = None  # the data replaced by another source's

    @property
    def quarantined(self) -> int:
        """Quarantined lines over every window day file."""
        return sum(d.quarantined for d in self.days)


@dataclass
class _Changed:
    day: date
    path: Path
    size: int
    mtime_ns: int
    sha256: str


def _file_record(conn: sqlite3.Connection, key: str) -> tuple | None:
    return conn.execute(
        "SELECT size, mtime_ns, sha256, lines, unique_events, quarantined, merged_duplicates "
        "FROM mixpanel_ingested_file WHERE file_key = ?",
        (key,),
    ).fetchone()


def _save_record(
    conn: sqlite3.Connection,
    key: str,
    changed: _Changed,
    counts: tuple[int, int, int],
    *,
    copied: bool,
) -> None:
    """Note what the day's file held; `copied`: its rows were just replaced (so no repeat
    of them has been dropped by the identity merge yet)."""
    conn.execute(
        "INSERT INTO mixpanel_ingested_file (file_key, path, size, mtime_ns, sha256, lines, "
        "unique_events, quarantined, ingested_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(file_key) DO UPDATE SET path = excluded.path, size = excluded.size, "
        "mtime_ns = excluded.mtime_ns, sha256 = excluded.sha256, lines = excluded.lines, "
        "unique_events = excluded.unique_events, quarantined = excluded.quarantined, "
        "ingested_at = excluded.ingested_at, "
        "merged_duplicates = CASE WHEN ? THEN 0 ELSE merged_duplicates END",
        (
            key,
            str(changed.path),
            changed.size,
            changed.mtime_ns,
            changed.sha256,
            *counts,
            pipeline_state.now_iso(),
            copied,
        ),
    )


def _day_key(day: date) -> str:
    return f"events/{day.isoformat()}"


def _check_day(
    conn: sqlite3.Connection, path: Path, day: date, *, merge: bool
) -> DayFile | _Changed:
    """Unchanged days come back as a DayFile; changed ones as a _Changed to parse. Without
    the identity `merge`, a day whose repeats the merge dropped is read again to get them
    back."""
    previous = _file_record(conn, _day_key(day))
    if previous and previous[6] and not merge:
        previous = None
    stat = path.stat()
    if previous and previous[0] == stat.st_size and previous[1] == stat.st_mtime_ns:
        return DayFile(day, "unchanged", *previous[3:6])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    changed = _Changed(day, path, stat.st_size, stat.st_mtime_ns, digest)
    if previous and previous[2] == digest:
        # Same bytes rewritten (a refresh that found nothing new): only the stamp moves.
        with transaction(conn):
            _save_record(conn, _day_key(day), changed, previous[3:6], copied=False)
        return DayFile(day, "unchanged", *previous[3:6])
    return changed


COPY_EVENTS = """
INSERT OR IGNORE INTO fact_mixpanel_event (insert_id, event, distinct_id, time, event_date,
    product_id, revenue, properties, source_day)
SELECT insert_id, event, distinct_id, time, event_date, product_id, revenue, properties, ?
FROM stage.parsed WHERE rowid BETWEEN ? AND ? AND reason IS NULL
"""
COPY_REJECTS = """
INSERT INTO mixpanel_quarantine (file_key, file, line_number, reason, line, quarantined_at)
SELECT ?, ?, line_number, reason, raw, ? FROM stage.parsed
WHERE rowid BETWEEN ? AND ? AND reason IS NOT NULL
"""
COPY_USER_DAYS = """
INSERT INTO mixpanel_user_day (source_day, event_date, distinct_id, first_time, last_time,
    country)
SELECT ?, event_date, distinct_id, first_time, last_time, country
FROM stage.user_day WHERE rowid BETWEEN ? AND ?
"""
# A link already known keeps its first sighting unless this one is earlier.
COPY_LINKS = """
INSERT INTO mixpanel_identity_link (alias, canonical, first_time, via, first_day)
SELECT alias, canonical, first_time, via, source_day FROM stage.link WHERE TRUE
ON CONFLICT (alias, canonical) DO UPDATE SET first_time = excluded.first_time,
    via = excluded.via, first_day = excluded.first_day
WHERE excluded.first_time < mixpanel_identity_link.first_time
"""


# The tables holding rows of one day file, replaced together when it is ingested again.
DAY_TABLES = ("fact_mixpanel_event", "mixpanel_user_day")


def _copy_batch(conn: sqlite3.Connection, scratch: str, batch: list[_Changed]) -> list[DayFile]:
    """Replace each day of the batch with its parsed rows (one transaction for the batch)."""
    conn.execute("ATTACH DATABASE ? AS stage", (scratch,))
    try:
        done = []
        now = pipeline_state.now_iso()
        with transaction(conn):
            for changed in batch:
                day, key = changed.day.isoformat(), _day_key(changed.day)
                first, last, first_user, last_user, lines, unique, rejected = conn.execute(
                    "SELECT first_rowid, last_rowid, first_user_day, last_user_day, lines, "
                    "unique_events, quarantined FROM stage.day_summary WHERE source_day = ?",
                    (day,),
                ).fetchone()
                for table in DAY_TABLES:
                    conn.execute(f"DELETE FROM {table} WHERE source_day = ?", (day,))
                conn.execute("DELETE FROM mixpanel_quarantine WHERE file_key = ?", (key,))
                conn.execute(COPY_EVENTS, (day, first, last))
                conn.execute(COPY_REJECTS, (key, str(changed.path), now, first, last))
                conn.execute(COPY_USER_DAYS, (day, first_user, last_user))
                _save_record(conn, key, changed, (lines, unique, rejected), copied=True)
                done.append(DayFile(changed.day, "ingested", lines, unique, rejected))
            conn.execute(COPY_LINKS)
        return done
    finally:
        conn.execute("DETACH DATABASE stage")


def _batches(changed: list[_Changed]) -> list[list[_Changed]]:
    # A short first batch lets the copying start while the workers parse the rest; a short
    # last one leaves little to copy once they are done.
    short = max(1, BATCH_DAYS // 3)
    if len(changed) <= 2 * short:
        return [changed[i : i + short] for i in range(0, len(changed), short)]
    middle = changed[short:-short]
    return [
        changed[:short],
        *(middle[i : i + BATCH_DAYS] for i in range(0, len(middle), BATCH_DAYS)),
        changed[-short:],
    ]


@contextmanager
def _staged(
    changed: list[_Changed], scratch_dir: Path, workers: int
) -> Iterator[Iterable[tuple[str, list[_Changed]]]]:
    """(scratch db, batch) pairs in order; with `workers` > 0 the parsing starts on entry."""
    jobs = []
    for n, batch in enumerate(_batches(changed)):
        files = [(c.day.isoformat(), str(c.path)) for c in batch]
        jobs.append((str(scratch_dir / f"batch-{n:04d}.db"), files, batch))
    if workers == 0:
        yield ((staging.stage_days(out, files), batch) for out, files, batch in jobs)
        return
    with parse_workers.ParseWorkers([(out, files) for out, files, _ in jobs], workers) as done:
        yield zip(done, [batch for _, _, batch in jobs], strict=True)


def _remove_stale_scratch(folder: Path) -> None:
    # Left by a killed run; an hour is far longer than any ingest keeps one.
    for path in folder.glob(f"{SCRATCH_PREFIX}*"):
        if path.is_dir() and time.time() - path.stat().st_mtime > 3600:
            shutil.rmtree(path, ignore_errors=True)


def _worker_count(changed: list[_Changed], workers: int | None) -> int:
    if workers is not None:
        return workers
    if sum(c.size for c in changed) < PARALLEL_MIN_BYTES or len(changed) < 2:
        return 0
    return max(1, min(2, os.cpu_count() or 1, len(_batches(changed))))


def _delete_outside(conn: sqlite3.Connection, window: Window) -> int:
    start, end = window.start.isoformat(), window.end.isoformat()
    with transaction(conn):
        deleted = conn.execute(
            "DELETE FROM fact_mixpanel_event WHERE source_day < ? OR source_day > ?", (start, end)
        ).rowcount
        conn.execute(
            "DELETE FROM mixpanel_user_day WHERE source_day < ? OR source_day > ?", (start, end)
        )
        outside = "substr(file_key, 8) < ? OR substr(file_key, 8) > ?"
        conn.execute(
            f"DELETE FROM mixpanel_quarantine WHERE file_key LIKE 'events/%' AND ({outside})",
            (start, end),
        )
        conn.execute(
            f"DELETE FROM mixpanel_ingested_file WHERE file_key LIKE 'events/%' AND ({outside})",
            (start, end),
        )
    return deleted


# Every table holding data of one source: emptied when another source's data replaces it.
SOURCE_TABLES = (
    "fact_user_products",
    "fact_mixpanel_user",
    *DAY_TABLES,
    "mixpanel_identity_link",
    "mixpanel_identity",
    "mixpanel_quarantine",
    "mixpanel_ingested_file",
    "mixpanel_product_event",
)


def _check_sources(
    conn: sqlite3.Connection, settings: Settings, log: Callable[[str], None]
) -> dict | None:
    """Refuse to load another source's data over a Mixpanel project's (SourceChangeError)
    unless MIXPANEL_ALLOW_SOURCE_CHANGE says so; drop the old source's rows when allowed.
    Returns the source whose data was dropped, if any."""
    wanted = settings.cache_source()
    held = pipeline_state.data_source(conn)
    dropped = None
    if held is not None and held != wanted:
        refusal = source_switch_error(held, wanted, f"the database {settings.db_path}")
        if refusal and not settings.allow_source_change:
            raise SourceChangeError(refusal)
        if not same_source(held, wanted):
            dropped = held
    in_cache = cache.read_source(settings.cache_dir)
    if in_cache is not None and not same_source(in_cache, wanted):
        raise MissingDataError(
            f"the download cache {settings.cache_dir} holds {describe_source(in_cache)}, not "
            f"{describe_source(wanted)}; run step download_update_data first"
        )
    with transaction(conn):
        if dropped is not None:
            for table in SOURCE_TABLES:
                conn.execute(f"DELETE FROM {table}")
        pipeline_state.set_meta(
            conn, "source", orjson.dumps(wanted, option=orjson.OPT_SORT_KEYS).decode()
        )
    if dropped is not None:
        log(
            f"the database held {describe_source(dropped)}: its rows are replaced by "
            f"{describe_source(wanted)}"
        )
    return dropped


def rows_per_source_day(conn: sqlite3.Connection, window: Window) -> dict[str, int]:
    """Rows in the database per cache day of the window."""
    return dict(
        conn.execute(
            "SELECT source_day, COUNT(*) FROM fact_mixpanel_event "
            "WHERE source_day BETWEEN ? AND ? GROUP BY source_day",
            (window.start.isoformat(), window.end.isoformat()),
        )
    )


def _copy_changed(
    conn: sqlite3.Connection,
    settings: Settings,
    changed: list[_Changed],
    workers: int,
    days: dict[date, DayFile],
    log: Callable[[str], None],
    checkpoints: BackgroundCheckpoints,
) -> int | None:
    """Parse and copy the changed days (recording them in `days`); meanwhile read and stage
    the profiles (see `users.stage_profiles`) and return their count (None without a file)."""
    _remove_stale_scratch(settings.db_path.parent)
    scratch_dir = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=settings.db_path.parent))
    try:
        with _staged(changed, scratch_dir, workers) as staged:
            # Now: this process would otherwise wait for the workers' first batch.
            profiles_file = cache.profiles_path(settings.cache_dir)
            profiles = users.load_profiles(profiles_file) if profiles_file.is_file() else None
            users.stage_profiles(conn, profiles or [])
            for scratch, batch in staged:
                for day_file in _copy_batch(conn, scratch, batch):
                    days[day_file.day] = day_file
                    quarantined = day_file.quarantined
                    log(
                        f"  {day_file.day.isoformat()}: {day_file.unique_events:,} events"
                        + (f", {quarantined} quarantined" if quarantined else "")
                    )
                checkpoints.committed()
                Path(scratch).unlink(missing_ok=True)
    finally:
        shutil.rmtree(scratch_dir, ignore_errors=True)
    return None if profiles is None else len(profiles)


def ingest(
    settings: Settings, *, log: Callable[[str], None] = print, workers: int | None = None
) -> IngestResult:
    """Migrate, load the window's changed cache days and the profiles, rebuild users.

    `workers`: parser processes (None: decide by the amount of changed data; 0: in-process).
    """
    window = settings.window
    conn = connect(settings.db_path, create=True)
    # A bigger page cache for the bulk copy; the unique index is the hot part.
    conn.execute("PRAGMA cache_size = -131072")
    try:
        result = IngestResult(window=window, migrations_applied=migrations.apply_migrations(conn))
        if result.migrations_applied:
            log(f"migrations applied: {', '.join(result.migrations_applied)}")
        result.source_changed_from = _check_sources(conn, settings, log)
        # From here the data changes: later steps' records (and this step's own) no longer
        # match the data, so none of them runs on a half-done ingest.
        with transaction(conn):
            pipeline_state.set_meta(
                conn, "data_version", str(pipeline_state.data_version(conn) + 1)
            )
            pipeline_state.forget_step(conn, "ingest_data")
        result.rows_deleted_outside_window = _delete_outside(conn, window)
        days: dict[date, DayFile] = {}
        changed: list[_Changed] = []
        for day in window.days:
            path = cache.day_path(settings.cache_dir, day)
            if not cache.is_complete(path):
                days[day] = DayFile(day, "missing")
                continue
            checked = _check_day(conn, path, day, merge=settings.identity_merge)
            if isinstance(checked, DayFile):
                days[day] = checked
            else:
                changed.append(checked)
        result.workers = _worker_count(changed, workers)
        if changed:
            log(f"parsing {len(changed)} changed days ({result.workers or 'no'} worker processes)")
        # The WAL is copied into the database beside the copying and the rebuild, not after.
        with BackgroundCheckpoints(conn, settings.db_path) as checkpoints:
            result.profiles = _copy_changed(
                conn, settings, changed, result.workers, days, log, checkpoints
            )
            result.identity = identity.apply_identity_map(conn, enabled=settings.identity_merge)
            result.profiles_merged = users.merge_profiles(conn)
            _log_identity(result, log)
            result.days = [days[day] for day in window.days]
            result.users = users.rebuild_users(conn, window)
            checkpoints.committed()
            counts = rows_per_source_day(conn, window)
            merged_away = dict(
                conn.execute(
                    "SELECT substr(file_key, 8), merged_duplicates FROM mixpanel_ingested_file "
                    "WHERE file_key LIKE 'events/%' AND merged_duplicates > 0"
                )
            )
            result.quarantine_reasons = dict(
                conn.execute(
                    "SELECT reason, COUNT(*) FROM mixpanel_quarantine GROUP BY reason "
                    "ORDER BY reason"
                )
            )
        for day_file in result.days:
            day_file.rows_in_db = counts.get(day_file.day.isoformat(), 0)
            day_file.merged_duplicates = merged_away.get(day_file.day.isoformat(), 0)
        with transaction(conn):
            pipeline_state.set_meta(conn, "window_start", window.start.isoformat())
            pipeline_state.set_meta(conn, "window_end", window.end.isoformat())
            pipeline_state.set_meta(conn, "ingested_at", pipeline_state.now_iso())
            pipeline_state.record_step(conn, "ingest_data")
        return result
    finally:
        conn.close()


def _log_identity(result: IngestResult, log: Callable[[str], None]) -> None:
    merge = result.identity
    if merge is None:
        return
    if not merge.enabled:
        restored = (
            f"; {merge.rows_restored:,} rows given back their exported id"
            if merge.rows_restored
            else ""
        )
        log(f"identity merge is off (MIXPANEL_IDENTITY_MERGE=0){restored}")
        return
    if merge.aliases or merge.rows_restored:
        log(
            f"identity: {merge.ids_merged:,} ids merged into {merge.users_merged_into:,} users "
            f"({merge.aliases:,} aliases known; {merge.rows_rekeyed:,} rows re-keyed now, "
            f"{merge.duplicates_dropped:,} repeats dropped, {result.profiles_merged:,} profiles "
            "moved)"
        )


def forget_done(settings: Settings) -> None:
    """Take back the ingest's record (its checks failed): later steps then refuse to run."""
    conn = connect(settings.db_path)
    try:
        with transaction(conn):
            pipeline_state.forget_step(conn, "ingest_data")
    finally:
        conn.close()
