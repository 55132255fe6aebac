"""The six pipeline steps as functions, and `run_step`, which turns one into a script's exit code.

Step scripts stay thin: they name their step and call `run_step`. A user error becomes one
line on stderr and exit 1; a failed check is reported the same way after the report is saved.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from database import ingest, migrations, pipeline_state, rules
from database.connection import connect, database_problem, transaction
from database.errors import PipelineError, SourceChangeError
from database.event_kinds import load_event_names
from database.reports import StepReport
from database.settings import DEFAULT_DB_PATH, DEFAULT_REPORTS_DIR, Settings, load_settings
from database.sources import describe_source
from database.tiers_config import load_tiers
from mixpanel_source import download

Log = Callable[[str], None]
StepFunction = Callable[[Settings, StepReport, Log], None]


def _coverage(coverage: dict) -> dict[str, bool]:
    return {day.isoformat(): ok for day, ok in coverage.items()}


def download_update_data(settings: Settings, report: StepReport, log: Log) -> None:
    """Step 1: fetch missing and recent days (and profiles) into the cache."""
    refusal = pipeline_state.source_refusal(settings)
    if refusal:
        raise SourceChangeError(refusal)
    result = download.download(settings, log=log)
    before, after = sum(result.coverage_before.values()), sum(result.coverage_after.values())
    total = len(result.window.days)
    synced = result.profiles
    assert synced is not None  # every source syncs profiles
    report.figures.update(
        settings=settings.describe(),
        window={"start": result.window.start.isoformat(), "end": result.window.end.isoformat()},
        covered_days_before=before,
        covered_days_after=after,
        window_days=total,
        coverage_before=_coverage(result.coverage_before),
        coverage_after=_coverage(result.coverage_after),
        fetched_ranges=[[a.isoformat(), b.isoformat()] for a, b in result.ranges],
        healed_days=[d.isoformat() for d in result.healed],
        lines_per_fetched_day={d.isoformat(): n for d, n in sorted(result.downloaded.items())},
        joined_records=result.joined_records,
        bad_lines=result.bad_lines,
        requests=result.requests,
        profiles=synced.profiles,
        profile_sync=synced.as_dict(),
        stale_temp_files_removed=result.stale_temp_files,
    )
    log(
        f"coverage before: {before}/{total} days, after: {after}/{total} days; fetched "
        f"{len(result.downloaded)} days ({sum(result.downloaded.values()):,} lines), "
        f"{synced.profiles:,} profiles"
    )
    missing = [d for d, ok in report.figures["coverage_after"].items() if not ok]
    report.check(
        "window_fully_cached", not missing, f"days without a cache file: {', '.join(missing)}"
    )
    report.check(
        "profiles_synced",
        synced.complete,
        f"the first full profile sync is not done yet: {synced.note}; run the step again to "
        "continue it",
    )


def ingest_data(settings: Settings, report: StepReport, log: Log) -> None:
    """Step 2: migrate, load changed days, quarantine bad lines, rebuild users."""
    result = ingest.ingest(settings, log=log)
    by_status = {
        s: sum(d.status == s for d in result.days) for s in ("ingested", "unchanged", "missing")
    }
    days = {
        d.day.isoformat(): {
            "status": d.status,
            "lines": d.lines,
            "unique_events": d.unique_events,
            "rows_in_db": d.rows_in_db,
            "quarantined": d.quarantined,
            "merged_duplicates": d.merged_duplicates,
        }
        for d in result.days
    }
    report.figures.update(
        window={"start": result.window.start.isoformat(), "end": result.window.end.isoformat()},
        migrations_applied=result.migrations_applied,
        days_by_status=by_status,
        rows_deleted_outside_window=result.rows_deleted_outside_window,
        events_in_db=sum(d.rows_in_db for d in result.days),
        quarantined_lines=result.quarantined,
        quarantined_by_reason=result.quarantine_reasons,
        profiles=result.profiles,
        profiles_merged=result.profiles_merged,
        identity=result.identity.as_dict() if result.identity else None,
        source=describe_source(settings.cache_source()),
        source_replaced=describe_source(result.source_changed_from)
        if result.source_changed_from
        else None,
        users=result.users,
        days=days,
    )
    log(
        f"days: {by_status['ingested']} ingested, {by_status['unchanged']} unchanged, "
        f"{by_status['missing']} missing; {sum(d.rows_in_db for d in result.days):,} events, "
        f"{result.users:,} users, {result.quarantined} quarantined lines"
    )
    missing = [d for d, v in days.items() if v["status"] == "missing"]
    report.check(
        "window_fully_cached",
        not missing,
        f"{len(missing)} window days have no cache file ({', '.join(missing[:5])}"
        f"{', ...' if len(missing) > 5 else ''}); run step download_update_data",
    )
    mismatched = [
        f"{d} ({v['rows_in_db']} rows vs {v['unique_events']} unique lines)"
        for d, v in days.items()
        if v["status"] != "missing"
        and v["rows_in_db"] + v["merged_duplicates"] != v["unique_events"]
    ]
    report.check(
        "rows_match_unique_cache_lines",
        not mismatched,
        f"days whose rows differ from the cache: {', '.join(mismatched[:5])}",
    )
    report.check(
        "profiles_cached",
        result.profiles is not None,
        "no profiles file in the cache; run step download_update_data",
    )
    if report.failed_checks:  # the later steps wait for an ingest that passes its checks
        ingest.forget_done(settings)


def _open(settings: Settings, step: str) -> sqlite3.Connection:
    conn = connect(settings.db_path)
    try:
        migrations.require_latest(conn)
        pipeline_state.require_previous_step(conn, step)
    except BaseException:
        conn.close()
        raise
    return conn


def _record(conn: sqlite3.Connection, step: str) -> None:
    with transaction(conn):
        pipeline_state.record_step(conn, step)


def _inconsistent(conn: sqlite3.Connection, where: str) -> int:
    return conn.execute(f"SELECT COUNT(*) FROM fact_mixpanel_user WHERE {where}").fetchone()[0]


def set_abi_attribution(settings: Settings, report: StepReport, log: Log) -> None:
    """Step 3: flag users with ABI campaign, ad set or ad ids."""
    with closing(_open(settings, "set_abi_attribution")) as conn:
        counts = rules.set_abi_attribution(conn)
        report.figures.update(counts)
        log(f"{counts['with_abi']:,} of {counts['users']:,} users have ABI attribution")
        unset = _inconsistent(conn, "has_abi_attribution IS NULL")
        report.check("every_user_flagged", unset == 0, f"{unset} users without a flag")
        _record(conn, "set_abi_attribution")


def check_broken_users(settings: Settings, report: StepReport, log: Log) -> None:
    """Step 4: mark invalid users and why."""
    with closing(_open(settings, "check_broken_users")) as conn:
        window = pipeline_state.ingested_window(conn)
        counts = rules.check_broken_users(conn, window)
        report.figures.update(
            window={"start": window.start.isoformat(), "end": window.end.isoformat()},
            users_per_reason={r: counts[r] for r in rules.REASONS},
            valid_users=counts["valid"],
            invalid_users=counts["invalid"],
        )
        reasons = ", ".join(f"{r} {counts[r]}" for r in rules.REASONS)
        log(f"{counts['valid']:,} valid, {counts['invalid']:,} invalid users ({reasons})")
        bad = _inconsistent(
            conn,
            "(valid_user AND invalid_reason IS NOT NULL) OR (NOT valid_user AND invalid_reason IS NULL)"
            " OR valid_user IS NULL",
        )
        report.check("flag_matches_reason", bad == 0, f"{bad} users whose flag and reason disagree")
        _record(conn, "check_broken_users")


def count_user_events(
    settings: Settings, report: StepReport, log: Log, *, default_event_names: Path | None = None
) -> None:
    """Step 5: per-user counts and revenue; rebuild fact_user_products."""
    names_path = settings.event_names_path or default_event_names
    # A file named by MIXPANEL_EVENT_NAMES_PATH must be there; the default one may be missing.
    names = load_event_names(names_path, required=settings.event_names_path is not None)
    with closing(_open(settings, "count_user_events")) as conn:
        window = pipeline_state.ingested_window(conn)
        totals = rules.count_user_events(conn, window, names)
        report.figures.update(
            totals,
            event_names_file=str(names_path) if names_path else None,
            own_event_names=names.own,
        )
        log(
            f"{totals['events_counted']:,} window events, {totals['users_with_events']:,} active "
            f"users, ${totals['revenue_usd']:,.2f} revenue, {totals['user_products']:,} user "
            f"products ({totals['valid_lifecycle_products']:,} with a valid lifecycle)"
        )
        unknown = totals["unknown_product_event_names"]
        if unknown:
            shown = ", ".join(f"{name!r} ({n:,})" for name, n in list(unknown.items())[:5])
            warn(
                f"warning: {totals['product_events_of_unknown_kind']:,} product events have a "
                f"name of no known lifecycle kind: {shown}; if they are RevenueCat events under "
                f"names of your own, map them in {names_path or 'event_names.yaml'}"
            )
        report.check(
            "every_window_event_counted",
            totals["events_counted"] == totals["window_events_in_db"],
            f"{totals['events_counted']} counted vs {totals['window_events_in_db']} in the window",
        )
        stray = conn.execute(
            "SELECT COUNT(*) FROM fact_user_products p JOIN fact_mixpanel_user u "
            "USING (distinct_id) WHERE NOT u.valid_user"
        ).fetchone()[0]
        report.check("products_only_for_valid_users", stray == 0, f"{stray} rows of invalid users")
        _record(conn, "count_user_events")


def assign_economic_tier(
    settings: Settings, report: StepReport, log: Log, *, default_tiers: Path | None = None
) -> None:
    """Step 6: give each valid user a tier from tiers.yaml."""
    path = settings.tiers_path or default_tiers
    if path is None:
        raise PipelineError("no tiers file given; set MIXPANEL_TIERS_PATH")
    thresholds = load_tiers(path)
    with closing(_open(settings, "assign_economic_tier")) as conn:
        counts = rules.assign_economic_tier(conn, thresholds)
        report.figures.update(
            tiers_file=str(path),
            thresholds=thresholds.__dict__,
            users_per_tier={t: counts[t] for t in rules.TIERS},
            users_without_tier=counts["no_tier"],
        )
        log("tiers: " + ", ".join(f"{t} {counts[t]:,}" for t in rules.TIERS))
        missing = _inconsistent(conn, "valid_user AND economic_tier IS NULL")
        extra = _inconsistent(conn, "NOT valid_user AND economic_tier IS NOT NULL")
        report.check("every_valid_user_has_tier", missing == 0, f"{missing} valid users lack one")
        report.check("no_invalid_user_has_tier", extra == 0, f"{extra} invalid users have one")
        _record(conn, "assign_economic_tier")


def _fail(step: str, message: str) -> None:
    print(f"{step} failed: {message}", file=sys.stderr)


def warn(message: str) -> None:
    """A warning line on stderr: the step goes on (the log shows it)."""
    print(message, file=sys.stderr)


def _record_crash(report: StepReport, reports_dir: Path, exc: BaseException) -> None:
    """Replace the step's report with a failed one naming the unexpected error."""
    report.error = f"internal error: {exc!r}"
    with contextlib.suppress(OSError):
        report.write(reports_dir)


def run_step(step: str, function: StepFunction, *, log: Log = print) -> int:
    """Run one step with settings from the environment; return the process exit code."""
    report = StepReport(step)
    reports_dir = Path(DEFAULT_REPORTS_DIR)
    db_path = Path(DEFAULT_DB_PATH)
    try:
        settings = load_settings()
        reports_dir, db_path = settings.reports_dir, settings.db_path
        log(f"{step}: database {settings.db_path}, cache {settings.cache_dir}")
        function(settings, report, log)
    except PipelineError as exc:
        report.error = str(exc)
    except sqlite3.Error as exc:
        problem = database_problem(db_path, exc)
        if problem is None:  # a bug in our SQL: its traceback is shown
            _record_crash(report, reports_dir, exc)
            raise
        report.error = str(problem)
    except OSError as exc:  # the machine's side: a full disk, a folder that cannot be written
        where = f"{exc.filename}: " if exc.filename else ""
        report.error = (
            f"{where}{exc.strerror or exc}; check the path, its permissions and free space"
        )
    except Exception as exc:  # a bug: its traceback is shown, and no old "ok" report stays
        _record_crash(report, reports_dir, exc)
        raise
    except KeyboardInterrupt:
        report.error = "interrupted"
        report.write(reports_dir)
        _fail(step, "interrupted")
        return 130
    try:
        path = report.write(reports_dir)
    except OSError as exc:
        _fail(step, report.error or f"its report cannot be written to {reports_dir} ({exc})")
        return 1
    if report.error:
        _fail(step, report.error)
        return 1
    if report.failed_checks:  # one line, however many checks failed
        _fail(step, "; ".join(f"check {c.name}: {c.detail}" for c in report.failed_checks))
        return 1
    log(f"{step}: ok, report {path}")
    return 0
