"""The user rules of steps 3 to 6, each one set of SQL statements over the whole table.

Booleans are stored as 1/0. "Window events" are events whose UTC `event_date` lies in the
ingested window; later events (from END_DATE's file) only feed the `future_events` check.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from database.connection import transaction
from database.event_kinds import (
    START_KINDS,
    TRIAL_OUTCOME_KINDS,
    TRIAL_START_KIND,
    EventNames,
)
from database.identity import BLANK_IDS
from database.settings import Window

# Trimming means Python's str.strip() for the usual whitespace, not SQLite's spaces-only default.
WHITESPACE = "char(32, 9, 10, 11, 12, 13)"
REASONS = ("blank_id", "no_events", "future_events", "bot_activity")
BOT_EVENTS_PER_DAY = 5000
# The most frequent product event names of no known kind that reports list.
UNKNOWN_NAMES_SHOWN = 20
TIERS = ("premium", "standard", "basic", "free")


def _trimmed(column: str) -> str:
    return f"TRIM(COALESCE({column}, ''), {WHITESPACE})"


def _sql_list(values: tuple[str, ...]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def set_abi_attribution(conn: sqlite3.Connection) -> dict[str, int]:
    """Set `has_abi_attribution` from the three ABI ids; return users with and without it."""
    attributed = " OR ".join(
        f"{_trimmed(c)} <> ''" for c in ("abi_campaign_id", "abi_ad_set_id", "abi_ad_id")
    )
    with transaction(conn):
        conn.execute(f"UPDATE fact_mixpanel_user SET has_abi_attribution = ({attributed})")
    with_abi, total = conn.execute(
        "SELECT COALESCE(SUM(has_abi_attribution), 0), COUNT(*) FROM fact_mixpanel_user"
    ).fetchone()
    return {"users": total, "with_abi": with_abi, "without_abi": total - with_abi}


def _window_params(window: Window) -> dict[str, object]:
    return {
        "start": window.start.isoformat(),
        "end": window.end.isoformat(),
        "end_ts": window.end_ts,
        "bot": BOT_EVENTS_PER_DAY,
    }


CHECK_BROKEN = [
    "DROP TABLE IF EXISTS temp._per_day",
    "DROP TABLE IF EXISTS temp._flags",
    """
    CREATE TEMP TABLE _per_day AS
    SELECT distinct_id, event_date, COUNT(*) AS n, MAX(time) AS last_t
    FROM fact_mixpanel_event GROUP BY distinct_id, event_date
    """,
    """
    CREATE TEMP TABLE _flags AS
    SELECT distinct_id,
           SUM(CASE WHEN event_date BETWEEN :start AND :end THEN n ELSE 0 END) AS window_events,
           MAX(last_t) >= :end_ts AS future,
           MAX(n) > :bot AS bot
    FROM _per_day GROUP BY distinct_id
    """,
    "CREATE UNIQUE INDEX temp._flags_pk ON _flags(distinct_id)",
    f"""
    UPDATE fact_mixpanel_user SET invalid_reason = NULLIF(RTRIM(
        CASE WHEN LOWER({_trimmed("distinct_id")}) IN ({_sql_list(BLANK_IDS)})
             THEN 'blank_id,' ELSE '' END
        || CASE WHEN COALESCE(f.window_events, 0) = 0 THEN 'no_events,' ELSE '' END
        || CASE WHEN COALESCE(f.future, 0) THEN 'future_events,' ELSE '' END
        || CASE WHEN COALESCE(f.bot, 0) THEN 'bot_activity,' ELSE '' END,
        ','), '')
    FROM (SELECT u.distinct_id AS id, f.window_events, f.future, f.bot
          FROM fact_mixpanel_user u LEFT JOIN _flags f ON f.distinct_id = u.distinct_id) AS f
    WHERE f.id = fact_mixpanel_user.distinct_id
    """,
    "UPDATE fact_mixpanel_user SET valid_user = (invalid_reason IS NULL)",
    "DROP TABLE temp._per_day",
    "DROP TABLE temp._flags",
]


def check_broken_users(conn: sqlite3.Connection, window: Window) -> dict[str, int]:
    """Set `valid_user` and `invalid_reason`; return users per reason plus valid/invalid."""
    params = _window_params(window)
    with transaction(conn):
        for statement in CHECK_BROKEN:
            conn.execute(statement, params if ":" in statement else ())
    counts = {reason: 0 for reason in REASONS}
    for reasons, users in conn.execute(
        "SELECT invalid_reason, COUNT(*) FROM fact_mixpanel_user "
        "WHERE invalid_reason IS NOT NULL GROUP BY invalid_reason"
    ):
        for reason in reasons.split(","):
            counts[reason] = counts.get(reason, 0) + users
    valid, total = conn.execute(
        "SELECT COALESCE(SUM(valid_user), 0), COUNT(*) FROM fact_mixpanel_user"
    ).fetchone()
    return {**counts, "valid": valid, "invalid": total - valid}


COUNT_EVENTS = [
    "DROP TABLE IF EXISTS temp._stats",
    """
    CREATE TEMP TABLE _stats AS
    SELECT distinct_id, COUNT(*) AS n, COUNT(DISTINCT event_date) AS days,
           ROUND(SUM(COALESCE(revenue, 0)), 2) AS revenue
    FROM fact_mixpanel_event WHERE event_date BETWEEN :start AND :end GROUP BY distinct_id
    """,
    "CREATE UNIQUE INDEX temp._stats_pk ON _stats(distinct_id)",
    """
    UPDATE fact_mixpanel_user SET event_count = COALESCE(s.n, 0),
        active_days = COALESCE(s.days, 0), revenue_usd = COALESCE(s.revenue, 0.0)
    FROM (SELECT u.distinct_id AS id, s.n, s.days, s.revenue
          FROM fact_mixpanel_user u LEFT JOIN _stats s ON s.distinct_id = u.distinct_id) AS s
    WHERE s.id = fact_mixpanel_user.distinct_id
    """,
    "DELETE FROM fact_user_products",
    # One row per valid user and product. The lifecycle is valid when the first event (by time,
    # then insert_id) starts it and every trial outcome has an earlier trial start; an event's
    # kind comes from its name (temp table _kind, see database.event_kinds).
    f"""
    INSERT INTO fact_user_products (distinct_id, product_id, valid_lifecycle, event_count,
                                    revenue_usd)
    SELECT distinct_id, product_id,
           MAX(rn = 1 AND kind IN ({_sql_list(START_KINDS)}))
             AND NOT MAX(kind IN ({_sql_list(TRIAL_OUTCOME_KINDS)}) AND trials_before = 0),
           COUNT(*), ROUND(SUM(COALESCE(revenue, 0)), 2)
    FROM (
        SELECT e.distinct_id, e.product_id, COALESCE(k.kind, '') AS kind, e.revenue,
               ROW_NUMBER() OVER w AS rn,
               COALESCE(SUM(k.kind = '{TRIAL_START_KIND}') OVER (w
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS trials_before
        FROM fact_mixpanel_event e
        JOIN fact_mixpanel_user u ON u.distinct_id = e.distinct_id AND u.valid_user
        LEFT JOIN _kind k ON k.event = e.event
        WHERE e.event_date BETWEEN :start AND :end
          AND e.product_id IS NOT NULL AND {_trimmed("e.product_id")} <> ''
        WINDOW w AS (PARTITION BY e.distinct_id, e.product_id ORDER BY e.time, e.insert_id)
    )
    GROUP BY distinct_id, product_id
    """,
    """
    UPDATE fact_mixpanel_user SET valid_product_count = COALESCE(
        (SELECT SUM(valid_lifecycle) FROM fact_user_products p
         WHERE p.distinct_id = fact_mixpanel_user.distinct_id), 0)
    """,
    # Every product event name of the window with the kind it was read as, for the report
    # and the /tiers page (all users: a wrong mapping shows whoever sent the events).
    "DELETE FROM mixpanel_product_event",
    f"""
    INSERT INTO mixpanel_product_event (event, kind, mapped_by, events, users)
    SELECT e.event, k.kind, k.mapped_by, COUNT(*), COUNT(DISTINCT e.distinct_id)
    FROM fact_mixpanel_event e LEFT JOIN _kind k ON k.event = e.event
    WHERE e.event_date BETWEEN :start AND :end
      AND e.product_id IS NOT NULL AND {_trimmed("e.product_id")} <> ''
    GROUP BY e.event
    """,
    "DROP TABLE temp._stats",
    "DROP TABLE temp._kind",
]


def _stage_kinds(conn: sqlite3.Connection, names: EventNames) -> None:
    """Temp table `_kind`: each event name stored, with its lifecycle kind and its source."""
    conn.execute("DROP TABLE IF EXISTS temp._kind")
    conn.execute("CREATE TEMP TABLE _kind (event TEXT PRIMARY KEY, kind TEXT, mapped_by TEXT)")
    events = [row[0] for row in conn.execute("SELECT DISTINCT event FROM fact_mixpanel_event")]
    conn.executemany(
        "INSERT INTO _kind VALUES (?, ?, ?)",
        ((event, *names.kind_of(event)) for event in events),
    )


def count_user_events(
    conn: sqlite3.Connection, window: Window, names: EventNames | None = None
) -> dict[str, object]:
    """Set event counts, active days, revenue and products; return the totals."""
    params = _window_params(window)
    with transaction(conn):
        _stage_kinds(conn, names or EventNames())
        for statement in COUNT_EVENTS:
            conn.execute(statement, params if ":start" in statement else ())
    events, revenue, users_with_events = conn.execute(
        "SELECT COALESCE(SUM(event_count), 0), ROUND(COALESCE(SUM(revenue_usd), 0), 2), "
        "COALESCE(SUM(event_count > 0), 0) FROM fact_mixpanel_user"
    ).fetchone()
    products, valid_lifecycle = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(valid_lifecycle), 0) FROM fact_user_products"
    ).fetchone()
    window_events = conn.execute(
        "SELECT COUNT(*) FROM fact_mixpanel_event WHERE event_date BETWEEN ? AND ?",
        (params["start"], params["end"]),
    ).fetchone()[0]
    unknown_events, unknown_names = conn.execute(
        "SELECT COALESCE(SUM(events), 0), COUNT(*) FROM mixpanel_product_event WHERE kind IS NULL"
    ).fetchone()
    unknown = dict(
        conn.execute(
            "SELECT event, events FROM mixpanel_product_event WHERE kind IS NULL "
            "ORDER BY events DESC, event LIMIT ?",
            (UNKNOWN_NAMES_SHOWN,),
        )
    )
    return {
        "events_counted": events,
        "window_events_in_db": window_events,
        "users_with_events": users_with_events,
        "revenue_usd": revenue,
        "user_products": products,
        "valid_lifecycle_products": valid_lifecycle,
        "product_events_by_kind": dict(
            conn.execute(
                "SELECT COALESCE(kind, '(unknown)'), SUM(events) FROM mixpanel_product_event "
                "GROUP BY kind ORDER BY kind"
            )
        ),
        "product_events_of_unknown_kind": unknown_events,
        "unknown_product_event_name_count": unknown_names,
        "unknown_product_event_names": unknown,
    }


@dataclass(frozen=True)
class TierThresholds:
    """The numbers of the tier rules (see tiers.yaml)."""

    premium_min_revenue_usd: float = 100
    premium_min_revenue_usd_with_products: float = 50
    premium_min_valid_products: int = 2
    standard_min_revenue_usd: float = 20
    standard_min_active_days_with_revenue: int = 30
    basic_min_active_days: int = 10


def assign_economic_tier(conn: sqlite3.Connection, t: TierThresholds) -> dict[str, int]:
    """Set `economic_tier` for valid users (first matching rule), NULL for invalid ones."""
    r, d, p = (
        "COALESCE(revenue_usd, 0)",
        "COALESCE(active_days, 0)",
        "COALESCE(valid_product_count, 0)",
    )
    with transaction(conn):
        conn.execute(
            f"""
            UPDATE fact_mixpanel_user SET economic_tier = CASE
                WHEN NOT valid_user THEN NULL
                WHEN {r} >= :p_r OR ({r} >= :p_rp AND {p} >= :p_p) THEN 'premium'
                WHEN {r} >= :s_r OR ({r} > 0 AND {d} >= :s_d) THEN 'standard'
                WHEN {r} > 0 OR {d} >= :b_d THEN 'basic'
                ELSE 'free' END
            """,
            {
                "p_r": t.premium_min_revenue_usd,
                "p_rp": t.premium_min_revenue_usd_with_products,
                "p_p": t.premium_min_valid_products,
                "s_r": t.standard_min_revenue_usd,
                "s_d": t.standard_min_active_days_with_revenue,
                "b_d": t.basic_min_active_days,
            },
        )
    counts = {tier: 0 for tier in TIERS}
    counts.update(
        conn.execute(
            "SELECT economic_tier, COUNT(*) FROM fact_mixpanel_user "
            "WHERE economic_tier IS NOT NULL GROUP BY economic_tier"
        )
    )
    counts["no_tier"] = conn.execute(
        "SELECT COUNT(*) FROM fact_mixpanel_user WHERE economic_tier IS NULL"
    ).fetchone()[0]
    return counts
