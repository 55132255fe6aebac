"""Versioned schema migrations, recorded in `schema_migrations`.

Each migration runs in its own transaction together with its record, so a failure leaves the
database at the previous version. Every statement is written to be safe on a database made
before migrations existed (tables already there, holding rows): nothing is dropped or copied.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from database.connection import transaction
from database.errors import MissingDataError, PipelineError


@dataclass(frozen=True)
class Migration:
    """One schema change: a version number, a name for humans, and the function applying it."""

    version: int
    name: str
    apply: Callable[[sqlite3.Connection], None]


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _add_columns(conn: sqlite3.Connection, table: str, columns: list[tuple[str, str]]) -> None:
    # Old databases may already carry some of these columns (added by hand or by the seed's
    # scripts); adding only the missing ones keeps the migration idempotent.
    present = _columns(conn, table)
    for name, decl in columns:
        if name not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")


def _base_tables(conn: sqlite3.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS fact_mixpanel_event (
            insert_id TEXT NOT NULL,
            event TEXT NOT NULL,
            distinct_id TEXT NOT NULL,
            time INTEGER NOT NULL,
            event_date TEXT NOT NULL,
            product_id TEXT,
            revenue REAL,
            properties TEXT NOT NULL,
            UNIQUE (event, distinct_id, time, insert_id)
        )
        """
    )
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS fact_mixpanel_user (
            distinct_id TEXT PRIMARY KEY,
            first_seen TEXT,
            last_seen TEXT,
            country TEXT,
            abi_campaign_id TEXT,
            abi_ad_set_id TEXT,
            abi_ad_id TEXT,
            profile TEXT
        )
        """
    )


def _user_flags(conn: sqlite3.Connection) -> None:
    _add_columns(
        conn,
        "fact_mixpanel_user",
        [
            ("valid_user", "BOOLEAN DEFAULT TRUE"),
            ("economic_tier", "TEXT"),
            ("has_abi_attribution", "BOOLEAN DEFAULT FALSE"),
            ("invalid_reason", "TEXT"),
            ("event_count", "INTEGER"),
            ("active_days", "INTEGER"),
            ("revenue_usd", "REAL"),
            ("valid_product_count", "INTEGER"),
        ],
    )


def _user_products(conn: sqlite3.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS fact_user_products (
            user_product_id INTEGER PRIMARY KEY AUTOINCREMENT,
            distinct_id TEXT NOT NULL REFERENCES fact_mixpanel_user(distinct_id),
            product_id TEXT NOT NULL,
            valid_lifecycle BOOLEAN DEFAULT FALSE,
            UNIQUE (distinct_id, product_id)
        )
        """
    )
    # Extra figures for the products table on the tiers page.
    _add_columns(
        conn,
        "fact_user_products",
        [("event_count", "INTEGER NOT NULL DEFAULT 0"), ("revenue_usd", "REAL NOT NULL DEFAULT 0")],
    )


def _ingest_bookkeeping(conn: sqlite3.Connection) -> None:
    # source_day: the cache file a row came from, so a re-downloaded day replaces exactly its rows
    # even when a line's own UTC date differs (events after END_DATE, time-zone spill-over).
    _add_columns(conn, "fact_mixpanel_event", [("source_day", "TEXT")])
    conn.execute("UPDATE fact_mixpanel_event SET source_day = event_date WHERE source_day IS NULL")
    conn.execute(
        "CREATE INDEX IF NOT EXISTS idx_fact_mixpanel_event_source_day "
        "ON fact_mixpanel_event(source_day)"
    )
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS mixpanel_ingested_file (
            file_key TEXT PRIMARY KEY,
            path TEXT NOT NULL,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            lines INTEGER NOT NULL,
            unique_events INTEGER NOT NULL,
            quarantined INTEGER NOT NULL,
            ingested_at TEXT NOT NULL
        )
        """
    )
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS mixpanel_quarantine (
            quarantine_id INTEGER PRIMARY KEY AUTOINCREMENT,
            file_key TEXT NOT NULL,
            file TEXT NOT NULL,
            line_number INTEGER NOT NULL,
            reason TEXT NOT NULL,
            line TEXT NOT NULL,
            quarantined_at TEXT NOT NULL
        )
        """
    )
    conn.execute(
        "CREATE INDEX IF NOT EXISTS idx_mixpanel_quarantine_file ON mixpanel_quarantine(file_key)"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS mixpanel_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
    )
    # Per file, day and user: first/last event time and the latest country. Kept beside the
    # events (replaced with them) so rebuilding users does not re-read every event's JSON.
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS mixpanel_user_day (
            source_day TEXT NOT NULL,
            event_date TEXT NOT NULL,
            distinct_id TEXT NOT NULL,
            first_time INTEGER NOT NULL,
            last_time INTEGER NOT NULL,
            country TEXT
        )
        """
    )
    conn.execute(
        "CREATE INDEX IF NOT EXISTS idx_mixpanel_user_day_source_day "
        "ON mixpanel_user_day(source_day)"
    )
    # Rows that were there before migrations get their summary too.
    conn.execute(
        """
        INSERT INTO mixpanel_user_day
        SELECT source_day, event_date, distinct_id, MIN(time), MAX(time),
               substr(MAX(CASE WHEN TRIM(IFNULL(country, '')) <> ''
                          THEN printf('%015d', time) || country END), 16)
        FROM (SELECT source_day, event_date, distinct_id, time,
                     CASE WHEN json_valid(properties)
                          THEN json_extract(properties, '$.mp_country_code') END AS country
              FROM fact_mixpanel_event
              WHERE source_day NOT IN (SELECT source_day FROM mixpanel_user_day))
        GROUP BY source_day, event_date, distinct_id
        """
    )


def _identity_and_event_kinds(conn: sqlite3.Connection) -> None:
    # Identity merge: a row's distinct_id is its person's canonical id; the id it was exported
    # under stays in original_distinct_id (NULL when not merged) and in its properties JSON.
    _add_columns(conn, "fact_mixpanel_event", [("original_distinct_id", "TEXT")])
    _add_columns(conn, "mixpanel_user_day", [("original_distinct_id", "TEXT")])
    # Partial: only merged rows are indexed, so loading unmerged events pays nothing for it.
    conn.execute(
        "CREATE INDEX IF NOT EXISTS idx_fact_mixpanel_event_original "
        "ON fact_mixpanel_event(original_distinct_id) WHERE original_distinct_id IS NOT NULL"
    )
    # What the events said about identities: each (alias, canonical) pair once, with the
    # first time and day it was seen. Mixpanel's merges are permanent, so a link stays even
    # when the day that showed it is fetched again or leaves the window.
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS mixpanel_identity_link (
            alias TEXT NOT NULL,
            canonical TEXT NOT NULL,
            first_time INTEGER NOT NULL,
            via TEXT NOT NULL,
            first_day TEXT NOT NULL,
            PRIMARY KEY (alias, canonical)
        ) WITHOUT ROWID
        """
    )
    # The resolved map: every alias with the canonical id it merges into.
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS mixpanel_identity (
            alias TEXT PRIMARY KEY,
            canonical TEXT NOT NULL,
            first_time INTEGER NOT NULL,
            via TEXT NOT NULL
        )
        """
    )
    # Events dropped because the merge made them repeats of an event stored under the
    # canonical id: the day's rows plus these equal its unique lines.
    _add_columns(
        conn, "mixpanel_ingested_file", [("merged_duplicates", "INTEGER NOT NULL DEFAULT 0")]
    )
    # Step count_user_events: each product event name, the lifecycle kind it was read as
    # (NULL: none known) and what said so, so a wrong or missing mapping shows.
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS mixpanel_product_event (
            event TEXT PRIMARY KEY,
            kind TEXT,
            mapped_by TEXT,
            events INTEGER NOT NULL,
            users INTEGER NOT NULL
        )
        """
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "base_tables", _base_tables),
    Migration(2, "user_flags_and_figures", _user_flags),
    Migration(3, "fact_user_products", _user_products),
    Migration(4, "ingest_bookkeeping", _ingest_bookkeeping),
    Migration(5, "identity_and_event_kinds", _identity_and_event_kinds),
)
LATEST_VERSION = MIGRATIONS[-1].version


def _ensure_table(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )


def current_version(conn: sqlite3.Connection) -> int:
    """The highest applied migration, 0 for a new or pre-migration database."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if not exists:
        return 0
    return conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]


def apply_migrations(conn: sqlite3.Connection) -> list[str]:
    """Bring the schema to the latest version; return the names of the migrations applied."""
    with transaction(conn):
        _ensure_table(conn)
    version = current_version(conn)
    if version > LATEST_VERSION:
        raise PipelineError(
            f"database schema version {version} is newer than this code knows ({LATEST_VERSION}); "
            "update the project before running the pipeline"
        )
    applied = []
    for migration in MIGRATIONS:
        if migration.version <= version:
            continue
        with transaction(conn):
            # Re-read under the write lock: another process may have applied it meanwhile.
            if current_version(conn) >= migration.version:
                continue
            migration.apply(conn)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (
                    migration.version,
                    migration.name,
                    datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                ),
            )
        applied.append(migration.name)
    return applied


def require_latest(conn: sqlite3.Connection) -> None:
    """Fail with a clear message unless step ingest_data has migrated this database."""
    version = current_version(conn)
    if version < LATEST_VERSION:
        raise MissingDataError(
            f"database schema is at version {version}, expected {LATEST_VERSION}; run step "
            "ingest_data (pipelines/mixpanel_pipeline/02_ingest_data.py) first"
        )
