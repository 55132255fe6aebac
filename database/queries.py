"""Read queries for the /tiers page: plain lists of dicts, no pandas, no Streamlit.

Open the database with `connect_readonly(settings.db_path)` (from database.connection) and
pass the connection in. Every function works on a database where later steps have not run
yet (tiers all NULL): counts are then zero rather than errors.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from database import pipeline_state
from database.rules import REASONS, TIERS

TIER_ORDER = (
    "CASE economic_tier "
    + " ".join(f"WHEN '{tier}' THEN {n}" for n, tier in enumerate(TIERS))
    + " ELSE 99 END"
)
USER_COLUMNS = (
    "distinct_id",
    "economic_tier",
    "valid_user",
    "invalid_reason",
    "country",
    "has_abi_attribution",
    "event_count",
    "active_days",
    "revenue_usd",
    "valid_product_count",
    "first_seen",
    "last_seen",
)
MAX_PAGE_SIZE = 500


def _dicts(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor]


def data_as_of(conn: sqlite3.Connection) -> dict[str, Any]:
    """The data's window, when it was ingested, the newest event, and when each step last ran."""
    meta = pipeline_state.get_meta(conn)
    events, newest = conn.execute(
        "SELECT COUNT(*), MAX(time) FROM fact_mixpanel_event WHERE event_date <= ?",
        (meta.get("window_end", "9999-12-31"),),
    ).fetchone()
    users = conn.execute("SELECT COUNT(*) FROM fact_mixpanel_user").fetchone()[0]
    steps = {}
    for step in pipeline_state.STEP_ORDER[1:]:
        record = pipeline_state.step_record(conn, step)
        current = record is not None and record.get("data_version") == int(
            meta.get("data_version", "0")
        )
        steps[step] = {
            "completed_at": record.get("completed_at") if record else None,
            "on_current_data": current,
        }
    return {
        "window_start": meta.get("window_start"),
        "window_end": meta.get("window_end"),
        "ingested_at": meta.get("ingested_at"),
        "newest_event_at": (pipeline_state.iso_from_epoch(newest) if newest is not None else None),
        "events": events,
        "users": users,
        "steps": steps,
    }


def users_per_tier(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Valid users per tier (every tier listed, in tier order) with their share of valid users."""
    counts = dict(
        conn.execute(
            "SELECT economic_tier, COUNT(*) FROM fact_mixpanel_user "
            "WHERE valid_user AND economic_tier IS NOT NULL GROUP BY economic_tier"
        )
    )
    total = sum(counts.values())
    return [
        {"tier": t, "users": counts.get(t, 0), "share": counts.get(t, 0) / total if total else 0.0}
        for t in TIERS
    ]


def revenue_per_tier(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Revenue (USD) per tier: total, per user, and share of all tiered revenue."""
    rows = {
        r["tier"]: r
        for r in _dicts(
            conn.execute(
                "SELECT economic_tier AS tier, COUNT(*) AS users, "
                "ROUND(COALESCE(SUM(revenue_usd), 0), 2) AS revenue_usd "
                "FROM fact_mixpanel_user WHERE valid_user AND economic_tier IS NOT NULL "
                "GROUP BY economic_tier"
            )
        )
    }
    total = sum(r["revenue_usd"] for r in rows.values())
    out = []
    for tier in TIERS:
        row = rows.get(tier, {"users": 0, "revenue_usd": 0.0})
        out.append(
            {
                "tier": tier,
                "users": row["users"],
                "revenue_usd": row["revenue_usd"],
                "revenue_per_user_usd": round(row["revenue_usd"] / row["users"], 2)
                if row["users"]
                else 0.0,
                "share": row["revenue_usd"] / total if total else 0.0,
            }
        )
    return out


def abi_split_per_tier(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Per tier: users and revenue with and without ABI attribution."""
    rows = {
        (r["tier"], r["abi"]): r
        for r in _dicts(
            conn.execute(
                "SELECT economic_tier AS tier, COALESCE(has_abi_attribution, 0) AS abi, "
                "COUNT(*) AS users, ROUND(COALESCE(SUM(revenue_usd), 0), 2) AS revenue_usd "
                "FROM fact_mixpanel_user WHERE valid_user AND economic_tier IS NOT NULL "
                "GROUP BY economic_tier, COALESCE(has_abi_attribution, 0)"
            )
        )
    }
    out = []
    for tier in TIERS:
        abi = rows.get((tier, 1), {"users": 0, "revenue_usd": 0.0})
        other = rows.get((tier, 0), {"users": 0, "revenue_usd": 0.0})
        out.append(
            {
                "tier": tier,
                "abi_users": abi["users"],
                "non_abi_users": other["users"],
                "abi_revenue_usd": abi["revenue_usd"],
                "non_abi_revenue_usd": other["revenue_usd"],
            }
        )
    return out


def invalid_users_per_reason(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Invalid users per reason code (a user with two reasons counts under both)."""
    counts = dict.fromkeys(REASONS, 0)
    for reasons, users in conn.execute(
        "SELECT invalid_reason, COUNT(*) FROM fact_mixpanel_user "
        "WHERE NOT valid_user AND invalid_reason IS NOT NULL GROUP BY invalid_reason"
    ):
        for reason in reasons.split(","):
            counts[reason] = counts.get(reason, 0) + users
    return [{"reason": reason, "users": users} for reason, users in counts.items()]


def products(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Per product: valid users, users with a valid lifecycle, that share, and revenue."""
    rows = _dicts(
        conn.execute(
            "SELECT product_id, COUNT(*) AS users, "
            "COALESCE(SUM(valid_lifecycle), 0) AS valid_lifecycle_users, "
            "ROUND(COALESCE(SUM(revenue_usd), 0), 2) AS revenue_usd "
            "FROM fact_user_products GROUP BY product_id ORDER BY users DESC, product_id"
        )
    )
    for row in rows:
        row["valid_lifecycle_share"] = row["valid_lifecycle_users"] / row["users"]
    return rows


def countries(conn: sqlite3.Connection) -> list[str]:
    """Every country code among users, sorted (for a filter widget)."""
    return [
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT country FROM fact_mixpanel_user WHERE country IS NOT NULL "
            "ORDER BY country"
        )
    ]


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def user_page(
    conn: sqlite3.Connection,
    *,
    tier: str | None = None,
    country: str | None = None,
    abi: bool | None = None,
    valid: bool | None = None,
    search: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """One page of users matching the filters, plus the total number of matches.

    `tier`: one of TIERS, or "none" for users without a tier; `search`: substring of the
    distinct_id (case-insensitive). Ordered by revenue, then distinct_id, so pages are stable.
    """
    clause, params = user_filter_sql(
        tier=tier, country=country, abi=abi, valid=valid, search=search
    )
    total = conn.execute(f"SELECT COUNT(*) FROM fact_mixpanel_user {clause}", params).fetchone()[0]
    limit = max(1, min(int(limit), MAX_PAGE_SIZE))
    return _select_users(conn, clause, params, limit, max(0, int(offset))), total


def _select_users(
    conn: sqlite3.Connection, clause: str, params: list[Any], limit: int, offset: int = 0
) -> list[dict[str, Any]]:
    """Users matching a `user_filter_sql` clause, highest revenue first (then by id, so pages
    are stable), with the flag columns as booleans."""
    rows = _dicts(
        conn.execute(
            f"SELECT {', '.join(USER_COLUMNS)} FROM fact_mixpanel_user {clause} "
            "ORDER BY COALESCE(revenue_usd, 0) DESC, distinct_id LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
    )
    for row in rows:
        for flag in ("valid_user", "has_abi_attribution"):
            row[flag] = None if row[flag] is None else bool(row[flag])
    return rows


MAX_EXPORT_ROWS = 100_000


def user_filter_sql(
    *,
    tier: str | None = None,
    country: str | None = None,
    abi: bool | None = None,
    valid: bool | None = None,
    search: str | None = None,
) -> tuple[str, list[Any]]:
    """The WHERE clause (with its parameters) that `user_page` and `users_for_export` share."""
    where: list[str] = []
    params: list[Any] = []
    if tier is not None:
        if tier == "none":
            where.append("economic_tier IS NULL")
        elif tier in TIERS:
            where.append("economic_tier = ?")
            params.append(tier)
        else:
            raise ValueError(f"unknown tier {tier!r}; use one of {', '.join(TIERS)} or 'none'")
    if country is not None:
        where.append("country = ?")
        params.append(country)
    if abi is not None:
        where.append("COALESCE(has_abi_attribution, 0) = ?")
        params.append(int(abi))
    if valid is not None:
        where.append("COALESCE(valid_user, 1) = ?")
        params.append(int(valid))
    if search:
        where.append("distinct_id LIKE ? ESCAPE '\\'")
        params.append(f"%{_like_escape(search)}%")
    return (f"WHERE {' AND '.join(where)}" if where else ""), params


def users_for_export(
    conn: sqlite3.Connection,
    *,
    tier: str | None = None,
    country: str | None = None,
    abi: bool | None = None,
    valid: bool | None = None,
    search: str | None = None,
    limit: int = MAX_EXPORT_ROWS,
) -> list[dict[str, Any]]:
    """Every user matching the filters (at most `limit`), in `user_page`'s order and columns."""
    clause, params = user_filter_sql(
        tier=tier, country=country, abi=abi, valid=valid, search=search
    )
    return _select_users(conn, clause, params, max(0, min(int(limit), MAX_EXPORT_ROWS)))


def user_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """All users, valid ones, invalid ones and users with a tier, in one pass."""
    total, valid, tiered = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(COALESCE(valid_user, 1)), 0), "
        "COUNT(economic_tier) FROM fact_mixpanel_user"
    ).fetchone()
    return {"users": total, "valid": valid, "invalid": total - valid, "tiered": tiered}


def _table_exists(conn: sqlite3.Connection, name: str) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        is not None
    )


def data_source(conn: sqlite3.Connection) -> dict[str, Any] | None:
    """Where the stored data came from (`source`: demo or export, the project), or None when
    the database predates that record."""
    return pipeline_state.data_source(conn)


def product_events(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Per product event name of the window: the lifecycle kind step 5 read it as (None: no
    known kind), what said so, events and users. Empty before step 5 has run."""
    if not _table_exists(conn, "mixpanel_product_event"):
        return []
    return _dicts(
        conn.execute(
            "SELECT event, kind, mapped_by, events, users FROM mixpanel_product_event "
            "ORDER BY events DESC, event"
        )
    )


def identity_summary(conn: sqlite3.Connection) -> dict[str, int]:
    """How the identity merge folded ids: exported ids merged, users they became, and
    aliases known. Zeros for a database made before the merge existed."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(fact_mixpanel_event)")}
    if "original_distinct_id" not in columns:
        return {"ids_merged": 0, "users_merged_into": 0, "aliases": 0}
    merged, into = conn.execute(
        "SELECT COUNT(DISTINCT original_distinct_id), COUNT(DISTINCT distinct_id) "
        "FROM fact_mixpanel_event WHERE original_distinct_id IS NOT NULL"
    ).fetchone()
    aliases = conn.execute("SELECT COUNT(*) FROM mixpanel_identity").fetchone()[0]
    return {"ids_merged": merged, "users_merged_into": into, "aliases": aliases}
