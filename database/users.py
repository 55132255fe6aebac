"""Users from stored events and profiles: one row per (canonical) distinct_id.

Profiles are read from the cache's profiles file into a temp table, keyed through the identity
map (`merge_profiles`), then `rebuild_users` makes every user row anew from the per-day user
summaries (`mixpanel_user_day`) and the profiles, resetting every derived column.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson

from database.connection import transaction
from database.settings import Window
from mixpanel_source import cache

# Page cache (negative: KiB) and sorter threads while rebuilding users; see rebuild_users.
SORT_CACHE_KIB = -4096
SORT_THREADS = 2


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def load_profiles(path: Path) -> list[tuple]:
    """Profile rows (distinct_id, country, abi campaign, ad set, ad, profile JSON); later wins."""
    rows = []
    for line in cache.read_lines(path):
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(item, dict) or "$distinct_id" not in item:
            continue
        props = item.get("$properties")
        props = props if isinstance(props, dict) else {}
        rows.append(
            (
                _text(item["$distinct_id"]) or "",
                _text(props.get("$country_code")),
                _text(props.get("abi_~campaign_id")),
                _text(props.get("abi_~ad_set_id")),
                _text(props.get("abi_~ad_id")),
                orjson.dumps(props).decode(),
            )
        )
    return rows


REBUILD_USERS = [
    "DROP TABLE IF EXISTS temp._ids",
    # Every user of the stored events (window files, future events included), with the first
    # and last time of their window events and the country of the latest one naming it: the
    # largest fixed-width time || country (substr of time + 10^15 is printf's '%015d', faster).
    """
    CREATE TEMP TABLE _ids AS
    SELECT distinct_id, MIN(first_time) AS first_t, MAX(last_time) AS last_t,
           substr(MAX(CASE WHEN country IS NOT NULL THEN
                      CASE WHEN last_time BETWEEN 0 AND 999999999999999
                           THEN substr(last_time + 1000000000000000, 2)
                           ELSE printf('%015d', last_time) END || country END), 16) AS country
    FROM mixpanel_user_day WHERE event_date BETWEEN :start AND :end GROUP BY distinct_id
    """,
    # Users whose stored events all lie outside the window keep no times.
    "INSERT INTO _ids (distinct_id) SELECT DISTINCT distinct_id FROM mixpanel_user_day "
    "WHERE event_date NOT BETWEEN :start AND :end "
    "AND distinct_id NOT IN (SELECT distinct_id FROM _ids)",
    "INSERT INTO _ids (distinct_id) SELECT distinct_id FROM _profile "
    "WHERE distinct_id NOT IN (SELECT distinct_id FROM _ids)",
    "CREATE UNIQUE INDEX temp._ids_pk ON _ids(distinct_id)",
    # Products and every derived column are rebuilt by the later steps.
    "DELETE FROM fact_user_products",
    "DELETE FROM fact_mixpanel_user WHERE distinct_id NOT IN (SELECT distinct_id FROM _ids)",
    """
    INSERT INTO fact_mixpanel_user (distinct_id, first_seen, last_seen, country,
        abi_campaign_id, abi_ad_set_id, abi_ad_id, profile, valid_user, economic_tier,
        has_abi_attribution, invalid_reason, event_count, active_days, revenue_usd,
        valid_product_count)
    SELECT i.distinct_id,
           strftime('%Y-%m-%dT%H:%M:%SZ', i.first_t, 'unixepoch'),
           strftime('%Y-%m-%dT%H:%M:%SZ', i.last_t, 'unixepoch'),
           COALESCE(NULLIF(TRIM(p.country), ''), i.country),
           p.abi_campaign_id, p.abi_ad_set_id, p.abi_ad_id, p.profile,
           TRUE, NULL, FALSE, NULL, NULL, NULL, NULL, NULL
    FROM _ids i
    LEFT JOIN _profile p ON p.distinct_id = i.distinct_id
    WHERE TRUE
    ON CONFLICT(distinct_id) DO UPDATE SET
        first_seen = excluded.first_seen, last_seen = excluded.last_seen,
        country = excluded.country, abi_campaign_id = excluded.abi_campaign_id,
        abi_ad_set_id = excluded.abi_ad_set_id, abi_ad_id = excluded.abi_ad_id,
        profile = excluded.profile, valid_user = TRUE, economic_tier = NULL,
        has_abi_attribution = FALSE, invalid_reason = NULL, event_count = NULL,
        active_days = NULL, revenue_usd = NULL, valid_product_count = NULL
    """,
    "DROP TABLE temp._ids",
    "DROP TABLE temp._profile",
]


def stage_profiles(conn: sqlite3.Connection, profiles: list[tuple]) -> None:
    """Hold the profile rows in this connection's temp table `_profile` for `rebuild_users`."""
    with transaction(conn):
        conn.execute("DROP TABLE IF EXISTS temp._profile")
        conn.execute(
            "CREATE TEMP TABLE _profile (distinct_id TEXT PRIMARY KEY, country TEXT, "
            "abi_campaign_id TEXT, abi_ad_set_id TEXT, abi_ad_id TEXT, profile TEXT)"
        )
        conn.executemany("INSERT OR REPLACE INTO _profile VALUES (?, ?, ?, ?, ?, ?)", profiles)


def merge_profiles(conn: sqlite3.Connection) -> int:
    """Key the staged profiles by canonical id (see database.identity): a profile stored under
    an alias becomes its person's, unless that person has a profile of their own. Returns how
    many profiles were moved."""
    with transaction(conn):
        moved = conn.execute(
            "SELECT COUNT(*) FROM _profile WHERE distinct_id IN (SELECT alias FROM mixpanel_identity)"
        ).fetchone()[0]
        if not moved:
            return 0
        conn.execute("DROP TABLE IF EXISTS temp._profile_merged")
        conn.execute("CREATE TEMP TABLE _profile_merged AS SELECT * FROM _profile WHERE 0")
        conn.execute("CREATE UNIQUE INDEX temp._profile_merged_pk ON _profile_merged(distinct_id)")
        conn.execute(
            "INSERT OR IGNORE INTO _profile_merged SELECT COALESCE(m.canonical, p.distinct_id), "
            "p.country, p.abi_campaign_id, p.abi_ad_set_id, p.abi_ad_id, p.profile "
            "FROM _profile p LEFT JOIN mixpanel_identity m ON m.alias = p.distinct_id "
            "ORDER BY m.alias IS NOT NULL, p.distinct_id"
        )
        conn.execute("DROP TABLE temp._profile")
        conn.execute("ALTER TABLE temp._profile_merged RENAME TO _profile")
    return moved


def rebuild_users(conn: sqlite3.Connection, window: Window) -> int:
    """Rebuild `fact_mixpanel_user` from the stored events and the profiles staged by
    `stage_profiles` on this connection; return the count."""
    params = {"start": window.start.isoformat(), "end": window.end.isoformat()}
    cache_size = conn.execute("PRAGMA cache_size").fetchone()[0]
    # The GROUP BY sorts every user-day row. The sorter works in chunks the size of the page
    # cache: chunks of a few MB, two sorted at a time on threads, take a third less time than
    # one in-cache sort (the pages needed here are read once, so the small cache costs nothing).
    conn.execute(f"PRAGMA cache_size = {SORT_CACHE_KIB}")
    conn.execute(f"PRAGMA threads = {SORT_THREADS}")
    try:
        with transaction(conn):
            for statement in REBUILD_USERS:
                conn.execute(statement, params if ":start" in statement else ())
    finally:
        conn.execute(f"PRAGMA cache_size = {cache_size}")
        conn.execute("PRAGMA threads = 0")
    return conn.execute("SELECT COUNT(*) FROM fact_mixpanel_user").fetchone()[0]
