"""What the database knows about its own data: the ingested window and which steps ran on it.

Each ingest bumps `data_version`; each later step records the version it processed, so a step
can refuse to run on top of a predecessor that has not seen the current data.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime

import orjson

from database.connection import connect_readonly
from database.errors import MissingDataError
from database.settings import Settings, Window
from database.sources import source_switch_error

STEP_ORDER = (
    "download_update_data",
    "ingest_data",
    "set_abi_attribution",
    "check_broken_users",
    "count_user_events",
    "assign_economic_tier",
)


def now_iso() -> str:
    """The current UTC time as ISO-8601 with a Z."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_from_epoch(seconds: int) -> str:
    """Epoch seconds as ISO-8601 UTC with a Z."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def get_meta(conn: sqlite3.Connection) -> dict[str, str]:
    """Every key/value in `mixpanel_meta`."""
    return dict(conn.execute("SELECT key, value FROM mixpanel_meta"))


def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    """Insert or replace one key (the caller owns the transaction)."""
    conn.execute(
        "INSERT INTO mixpanel_meta (key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def data_version(conn: sqlite3.Connection) -> int:
    """How many ingests this database has seen (0: none)."""
    return int(get_meta(conn).get("data_version", "0"))


def ingested_window(conn: sqlite3.Connection) -> Window:
    """The window of the last ingest; a user error if no ingest has run."""
    meta = get_meta(conn)
    if "window_start" not in meta:
        raise MissingDataError(
            "no data has been ingested yet; run step ingest_data "
            "(pipelines/mixpanel_pipeline/02_ingest_data.py) first"
        )
    return Window(date.fromisoformat(meta["window_start"]), date.fromisoformat(meta["window_end"]))


def record_step(conn: sqlite3.Connection, step: str) -> None:
    """Note that `step` finished on the current data version (caller owns the transaction)."""
    payload = {"data_version": data_version(conn), "completed_at": now_iso()}
    set_meta(conn, f"step:{step}", orjson.dumps(payload).decode())


def forget_step(conn: sqlite3.Connection, step: str) -> None:
    """Drop the record that `step` ran (the caller owns the transaction)."""
    conn.execute("DELETE FROM mixpanel_meta WHERE key = ?", (f"step:{step}",))


def step_record(conn: sqlite3.Connection, step: str) -> dict | None:
    """The record of `step`'s last run, or None."""
    raw = get_meta(conn).get(f"step:{step}")
    return orjson.loads(raw) if raw else None


def require_previous_step(conn: sqlite3.Connection, step: str) -> None:
    """Fail unless the step before `step` has run on the current data."""
    previous = STEP_ORDER[STEP_ORDER.index(step) - 1]
    record = step_record(conn, previous)
    if record is None or record.get("data_version") != data_version(conn):
        number = STEP_ORDER.index(previous) + 1
        raise MissingDataError(
            f"step {previous} has not run on the current data; run "
            f"pipelines/mixpanel_pipeline/{number:02d}_{previous}.py first"
        )


def data_source(conn: sqlite3.Connection) -> dict | None:
    """The source (see `Settings.cache_source`) of the data the last ingest loaded."""
    raw = get_meta(conn).get("source")
    try:
        source = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None
    return source if isinstance(source, dict) else None


def source_refusal(settings: Settings) -> str | None:
    """Why these settings must not replace the database's data (export data would give way
    to demo data or another project's), or None; a missing or unreadable file has none."""
    if settings.allow_source_change or not settings.db_path.is_file():
        return None
    try:
        conn = connect_readonly(settings.db_path)
        try:
            held = data_source(conn) if _has_meta(conn) else None
        finally:
            conn.close()
    except sqlite3.Error:
        return None  # step 2 names a broken database itself
    return source_switch_error(held, settings.cache_source(), f"the database {settings.db_path}")


def _has_meta(conn: sqlite3.Connection) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'mixpanel_meta'"
        ).fetchone()
        is not None
    )
