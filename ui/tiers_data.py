"""What the /tiers page shows, shaped from the Mixpanel database's queries. No Streamlit here.

The aggregates are SQL (`database.queries`); this module opens the file read-only, runs them,
and turns their lists of dicts into the frames, labels and CSV bytes the page shows.
"""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from database import queries
from database.connection import connect_readonly
from database.event_kinds import FILE_NAME
from database.rules import TIERS, TierThresholds
from database.settings import Settings, load_settings

PIPELINE_ID = "mixpanel_pipeline"
TIER_STEP = "assign_economic_tier"
NO_TIER = "none"  # the user_page filter value for users without a tier (the invalid ones)
ANY = ""
ABI_CHOICES = {ANY: "Any", "yes": "Yes", "no": "No"}

# One colour per tier, everywhere on the page: gold, blue, green, grey; invalid users in red.
TIER_COLOURS = {
    "premium": "#f2a900",
    "standard": "#1c83e1",
    "basic": "#21c354",
    "free": "#a3a8b8",
}
NO_TIER_COLOUR = "#ff4b4b"
ABI_COLOURS = {"ABI": "#803df5", "non-ABI": "#c9b8f7"}

REASON_TEXT = {
    "blank_id": "empty or placeholder id (undefined, null, ...)",
    "no_events": "no events in the window",
    "future_events": "an event after the end of the window",
    "bot_activity": "over 5,000 events on one UTC day",
}


class NotBuiltError(Exception):
    """The database file exists but holds no ingested data yet (no tables, or no window)."""


@dataclass(frozen=True)
class PagePaths:
    """The files the page reads, as the steps (run in `workdir`) would find them."""

    settings: Settings
    db: Path
    tiers: Path
    event_names: Path
    reports: Path
    cache: Path


def page_paths(
    workdir: Path, script_dir: Path | None, env: Mapping[str, str] | None = None
) -> PagePaths:
    """Read the MIXPANEL_* settings the way the steps do (relative paths from `workdir`);
    the tiers and event-name files default to the ones beside the step scripts.
    Raises SettingsError, with the step's own one-line message, for a bad value."""
    settings = load_settings(env, base_dir=workdir)
    folder = script_dir or Path(__file__).resolve().parents[1] / "pipelines" / PIPELINE_ID
    return PagePaths(
        settings=settings,
        db=settings.db_path,
        tiers=settings.tiers_path or folder / "tiers.yaml",
        event_names=settings.event_names_path or folder / FILE_NAME,
        reports=settings.reports_dir,
        cache=settings.cache_dir,
    )


def shown_path(path: Path, workdir: Path) -> str:
    """A path as the settings would name it: relative to the steps' working directory if inside."""
    try:
        return str(path.relative_to(workdir))
    except ValueError:
        return str(path)


def db_signature(path: Path) -> tuple[str, int, int, int, int]:
    """Changes whenever the database does (its file or its WAL): a cache key for the summary."""
    stats = []
    for candidate in (path, path.with_name(path.name + "-wal")):
        try:
            st = candidate.stat()
            stats += [st.st_mtime_ns, st.st_size]
        except FileNotFoundError:
            stats += [0, 0]
    return (str(path), *stats)  # type: ignore[return-value]


@dataclass(frozen=True)
class TierSummary:
    """Every aggregate the page shows, read in one go from one database file."""

    as_of: dict[str, Any]
    counts: dict[str, int]
    per_tier: list[dict[str, Any]]
    revenue: list[dict[str, Any]]
    abi: list[dict[str, Any]]
    invalid: list[dict[str, Any]]
    products: list[dict[str, Any]]
    countries: list[str] = field(default_factory=list)
    source: dict[str, Any] | None = None
    product_events: list[dict[str, Any]] = field(default_factory=list)
    identity: dict[str, int] = field(default_factory=dict)

    @property
    def stale_steps(self) -> list[str]:
        """Steps that have not run on the data ingested last (the tiers may be out of date)."""
        return [s for s, info in self.as_of["steps"].items() if not info["on_current_data"]]


def _has_tables(conn: sqlite3.Connection) -> bool:
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {"fact_mixpanel_user", "mixpanel_meta", "fact_user_products"} <= names


def load_summary(db_path: Path) -> TierSummary:
    """Open the database read-only, run every aggregate, close it.

    Raises MissingDataError (no file), NotBuiltError (no data ingested yet) and
    sqlite3.DatabaseError (not a database, or a damaged one)."""
    with closing(connect_readonly(db_path)) as conn:
        # One read transaction: every figure from the same moment, even while a step writes.
        conn.execute("BEGIN")
        if not _has_tables(conn):
            raise NotBuiltError(f"{db_path} holds no Mixpanel tables yet")
        as_of = queries.data_as_of(conn)
        if not as_of.get("window_start"):
            raise NotBuiltError(f"{db_path} holds no ingested data yet")
        return TierSummary(
            as_of=as_of,
            counts=queries.user_counts(conn),
            per_tier=queries.users_per_tier(conn),
            revenue=queries.revenue_per_tier(conn),
            abi=queries.abi_split_per_tier(conn),
            invalid=queries.invalid_users_per_reason(conn),
            products=queries.products(conn),
            countries=queries.countries(conn),
            source=queries.data_source(conn),
            product_events=queries.product_events(conn),
            identity=queries.identity_summary(conn),
        )


def window_days(as_of: Mapping[str, Any]) -> int:
    """How many days the ingested window spans (both ends included)."""
    from datetime import date

    start, end = date.fromisoformat(as_of["window_start"]), date.fromisoformat(as_of["window_end"])
    return (end - start).days + 1


# --- frames for the charts and tables --------------------------------------------------------


def tier_frame(summary: TierSummary) -> pd.DataFrame:
    """One row per tier: users, share, revenue, revenue per user and share, ABI split."""
    revenue = {r["tier"]: r for r in summary.revenue}
    abi = {r["tier"]: r for r in summary.abi}
    rows = []
    for r in summary.per_tier:
        t = r["tier"]
        rows.append(
            {
                "Tier": t,
                "Users": r["users"],
                "Share": r["share"],
                "Revenue": revenue[t]["revenue_usd"],
                "Per user": revenue[t]["revenue_per_user_usd"],
                "Revenue share": revenue[t]["share"],
                "ABI users": abi[t]["abi_users"],
                "Non-ABI users": abi[t]["non_abi_users"],
                "ABI revenue": abi[t]["abi_revenue_usd"],
                "Non-ABI revenue": abi[t]["non_abi_revenue_usd"],
            }
        )
    return pd.DataFrame(rows)


def abi_long_frame(summary: TierSummary) -> pd.DataFrame:
    """Tier x ABI/non-ABI users and revenue, long form for a stacked chart."""
    rows = []
    for r in summary.abi:
        for label, users, revenue in (
            ("ABI", r["abi_users"], r["abi_revenue_usd"]),
            ("non-ABI", r["non_abi_users"], r["non_abi_revenue_usd"]),
        ):
            rows.append(
                {"Tier": r["tier"], "Attribution": label, "Users": users, "Revenue": revenue}
            )
    return pd.DataFrame(rows, columns=["Tier", "Attribution", "Users", "Revenue"])


def invalid_frame(summary: TierSummary) -> pd.DataFrame:
    """Invalid users per reason, with what the reason means."""
    return pd.DataFrame(
        [
            {
                "Reason": r["reason"],
                "Users": r["users"],
                "Meaning": REASON_TEXT.get(r["reason"], ""),
            }
            for r in summary.invalid
        ],
        columns=["Reason", "Users", "Meaning"],
    )


UNKNOWN_KIND = "(no known kind)"


def product_events_frame(summary: TierSummary) -> pd.DataFrame:
    """Each product event name of the window, the lifecycle kind it was read as, and what
    said so; names of no known kind first (a wrong or missing mapping)."""
    rows = sorted(summary.product_events, key=lambda r: (r["kind"] is not None, -r["events"]))
    return pd.DataFrame(
        [
            {
                "Event name": r["event"],
                "Kind": r["kind"] or UNKNOWN_KIND,
                "Known from": r["mapped_by"] or "",
                "Events": r["events"],
                "Users": r["users"],
            }
            for r in rows
        ],
        columns=["Event name", "Kind", "Known from", "Events", "Users"],
    )


def products_frame(summary: TierSummary) -> pd.DataFrame:
    """One row per product: users, users with a valid lifecycle, that share, revenue."""
    return pd.DataFrame(
        [
            {
                "Product": r["product_id"],
                "Users": r["users"],
                "Valid lifecycle": r["valid_lifecycle_users"],
                "Valid share": r["valid_lifecycle_share"],
                "Revenue": r["revenue_usd"],
            }
            for r in summary.products
        ],
        columns=["Product", "Users", "Valid lifecycle", "Valid share", "Revenue"],
    )


# --- the user explorer ----------------------------------------------------------------------

EXPLORER_COLUMNS = {
    "distinct_id": "User",
    "economic_tier": "Tier",
    "valid_user": "Valid",
    "invalid_reason": "Invalid because",
    "country": "Country",
    "has_abi_attribution": "ABI",
    "event_count": "Events",
    "active_days": "Active days",
    "revenue_usd": "Revenue",
    "valid_product_count": "Valid products",
    "first_seen": "First seen",
    "last_seen": "Last seen",
}


@dataclass(frozen=True)
class UserFilter:
    """The explorer's filters as the page holds them: empty strings mean "any"."""

    tier: str = ANY  # a tier, NO_TIER, or ANY
    country: str = ANY
    abi: str = ANY  # "yes", "no" or ANY
    search: str = ""

    def query_args(self) -> dict[str, Any]:
        """Keyword arguments for `queries.user_page` / `queries.users_for_export`."""
        return {
            "tier": self.tier or None,
            "country": self.country or None,
            "abi": {"yes": True, "no": False}.get(self.abi),
            "search": self.search.strip() or None,
        }

    def describe(self) -> str:
        """`tier premium, country US, ABI yes, id contains "u00"` or `all users`."""
        parts = []
        if self.tier:
            parts.append("no tier (invalid)" if self.tier == NO_TIER else f"tier {self.tier}")
        if self.country:
            parts.append(f"country {self.country}")
        if self.abi:
            parts.append(f"ABI {self.abi}")
        if self.search.strip():
            parts.append(f'id contains "{self.search.strip()}"')
        return ", ".join(parts) or "all users"

    def file_name(self) -> str:
        """A CSV file name that says which users it holds."""
        parts = ["tier-users"]
        for value in (self.tier, self.country, f"abi-{self.abi}" if self.abi else ""):
            if value:
                parts.append(value)
        if self.search.strip():
            parts.append("search")
        return "-".join(parts) + ".csv"


def tier_options() -> list[str]:
    """The explorer's tier choices: any, each tier, then users without a tier."""
    return [ANY, *TIERS, NO_TIER]


def tier_option_label(value: str) -> str:
    """How a tier choice reads in the select box."""
    return {ANY: "Any tier", NO_TIER: "No tier (invalid)"}.get(value, value)


def page_count(total: int, page_size: int) -> int:
    """How many pages `total` rows fill (at least one, so an empty result has page 1)."""
    return max(1, -(-total // page_size))


def user_page(
    db_path: Path, flt: UserFilter, page: int, page_size: int
) -> tuple[pd.DataFrame, int]:
    """One page (1-based) of matching users, as the explorer table shows it, and the total."""
    with closing(connect_readonly(db_path)) as conn:
        rows, total = queries.user_page(
            conn, **flt.query_args(), limit=page_size, offset=(page - 1) * page_size
        )
    return users_frame(rows), total


def users_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows of `queries.user_page` with readable column names."""
    frame = pd.DataFrame(list(rows), columns=list(EXPLORER_COLUMNS))
    return frame.rename(columns=EXPLORER_COLUMNS)


def users_csv(db_path: Path, flt: UserFilter, limit: int = queries.MAX_EXPORT_ROWS) -> bytes:
    """Every user matching the filter (up to `limit`), as UTF-8 CSV in the explorer's order."""
    with closing(connect_readonly(db_path)) as conn:
        rows = queries.users_for_export(conn, **flt.query_args(), limit=limit)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(queries.USER_COLUMNS)
    writer.writerows([_cell(row[c]) for c in queries.USER_COLUMNS] for row in rows)
    return out.getvalue().encode("utf-8")


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP's CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as the text it is: text that would start a formula
    gets a leading apostrophe (numbers stay numbers)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


# --- the rules ------------------------------------------------------------------------------


def money(value: float) -> str:
    """`$100` or `$49.99`."""
    return f"${value:,.0f}" if float(value).is_integer() else f"${value:,.2f}"


def rules_rows(t: TierThresholds) -> list[dict[str, str]]:
    """The tier rules in force, in the order they are tried (the first match wins)."""
    r_p, r_pp = money(t.premium_min_revenue_usd), money(t.premium_min_revenue_usd_with_products)
    return [
        {
            "Tier": "premium",
            "A valid user whose window revenue R, active days D, valid products P": (
                f"R ≥ {r_p}, or R ≥ {r_pp} and P ≥ {t.premium_min_valid_products}"
            ),
        },
        {
            "Tier": "standard",
            "A valid user whose window revenue R, active days D, valid products P": (
                f"R ≥ {money(t.standard_min_revenue_usd)}, or R > $0 and "
                f"D ≥ {t.standard_min_active_days_with_revenue}"
            ),
        },
        {
            "Tier": "basic",
            "A valid user whose window revenue R, active days D, valid products P": (
                f"R > $0, or D ≥ {t.basic_min_active_days}"
            ),
        },
        {
            "Tier": "free",
            "A valid user whose window revenue R, active days D, valid products P": (
                "every other valid user"
            ),
        },
    ]


def threshold_changes(current: TierThresholds, used: Mapping[str, Any] | None) -> list[str]:
    """Thresholds that differ between the tiers file now and the last tier run's report."""
    if not used:
        return []
    changes = []
    for name, value in current.__dict__.items():
        if name in used and float(used[name]) != float(value):
            changes.append(f"{name}: {used[name]} then, {value} now")
    return changes


def last_tier_run(records: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The newest run record (newest first) in which the tier step succeeded."""
    for record in records:
        step = (record.get("steps") or {}).get(TIER_STEP) or {}
        if step.get("state") == "succeeded":
            return record
    return None
