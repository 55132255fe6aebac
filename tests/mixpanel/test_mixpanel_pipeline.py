"""The six scripts as real subprocesses on demo data: reports, idempotence, step order."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from mixpanel_helpers import STEP_SCRIPTS, base_env, run_step, table, write_gz

from database.connection import connect_readonly
from database.queries import (
    abi_split_per_tier,
    data_as_of,
    invalid_users_per_reason,
    products,
    revenue_per_tier,
    user_page,
    users_per_tier,
)
from database.settings import load_settings
from database.steps import run_step as run_in_process
from mixpanel_source import cache

TABLES = {
    "fact_mixpanel_event": "SELECT * FROM fact_mixpanel_event ORDER BY source_day, insert_id, event",
    "fact_mixpanel_user": "SELECT * FROM fact_mixpanel_user ORDER BY distinct_id",
    "fact_user_products": (
        "SELECT distinct_id, product_id, valid_lifecycle, event_count, revenue_usd "
        "FROM fact_user_products ORDER BY distinct_id, product_id"
    ),
}


def _run_all(tmp_path: Path, env: dict[str, str]) -> list[str]:
    outputs = []
    for script in STEP_SCRIPTS:
        run = run_step(script, tmp_path, env)
        assert run.code == 0, f"{script} failed: {run.stderr}"
        assert run.stderr == ""
        outputs.append(run.stdout)
    return outputs


def _report(tmp_path: Path, step: str) -> dict:
    return json.loads((tmp_path / "reports" / "mixpanel_pipeline" / f"{step}.json").read_text())


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, dict[str, str], dict[str, list]]:
    """The whole pipeline run once on demo data (200 users, 14 days); tables after it."""
    tmp_path = tmp_path_factory.mktemp("pipeline")
    env = base_env(tmp_path)
    _run_all(tmp_path, env)
    db = Path(env["MIXPANEL_DB_PATH"])
    return tmp_path, env, {name: table(db, sql) for name, sql in TABLES.items()}


def test_running_the_pipeline_twice_gives_identical_tables(demo_run):
    tmp_path, env, first = demo_run
    outputs = _run_all(tmp_path, env)
    db = Path(env["MIXPANEL_DB_PATH"])
    assert {name: table(db, sql) for name, sql in TABLES.items()} == first
    # The second ingest found the refreshed days byte-identical: nothing re-read.
    assert "0 ingested, 14 unchanged, 0 missing" in outputs[1]


def test_reports_hold_the_figures_and_checks(demo_run):
    tmp_path, _env, tables = demo_run
    for script in STEP_SCRIPTS:
        step = script[3:-3]
        report = _report(tmp_path, step)
        assert report["step"] == step and report["status"] == "ok"
        assert report["checks"] and all(c["ok"] for c in report["checks"])
        assert report["finished_at"].endswith("Z")

    download = _report(tmp_path, "download_update_data")
    assert download["figures"]["covered_days_after"] == 14
    assert set(download["figures"]["coverage_after"].values()) == {True}

    ingest = _report(tmp_path, "ingest_data")
    days = ingest["figures"]["days"]
    assert len(days) == 14
    assert all(d["rows_in_db"] == d["unique_events"] for d in days.values())
    assert ingest["figures"]["events_in_db"] == len(tables["fact_mixpanel_event"])
    assert ingest["figures"]["quarantined_lines"] == 0

    broken = _report(tmp_path, "check_broken_users")["figures"]["users_per_reason"]
    # The demo holds every kind of broken user.
    assert all(broken[reason] >= 1 for reason in broken), broken

    tiers = _report(tmp_path, "assign_economic_tier")["figures"]["users_per_tier"]
    valid = _report(tmp_path, "check_broken_users")["figures"]["valid_users"]
    assert sum(tiers.values()) == valid


def test_tiers_page_queries_on_the_demo_run(demo_run):
    _, env, tables = demo_run
    conn = connect_readonly(Path(env["MIXPANEL_DB_PATH"]))
    try:
        as_of = data_as_of(conn)
        assert as_of["window_end"] == env["MIXPANEL_END_DATE"]
        assert all(step["on_current_data"] for step in as_of["steps"].values())
        per_tier = users_per_tier(conn)
        assert [r["tier"] for r in per_tier] == ["premium", "standard", "basic", "free"]
        assert abs(sum(r["share"] for r in per_tier) - 1) < 1e-9
        revenue = revenue_per_tier(conn)
        split = abi_split_per_tier(conn)
        for r, s, t in zip(revenue, split, per_tier, strict=True):
            assert r["users"] == t["users"] == s["abi_users"] + s["non_abi_users"]
            assert round(s["abi_revenue_usd"] + s["non_abi_revenue_usd"], 2) == r["revenue_usd"]
        reasons = {r["reason"]: r["users"] for r in invalid_users_per_reason(conn)}
        assert set(reasons) == {"blank_id", "no_events", "future_events", "bot_activity"}
        assert sum(p["users"] for p in products(conn)) == len(tables["fact_user_products"])

        rows, total = user_page(conn, tier="premium", limit=5)
        assert total == per_tier[0]["users"] and len(rows) == min(5, total)
        assert all(r["economic_tier"] == "premium" and r["valid_user"] for r in rows)
        rows, total = user_page(conn, valid=False, limit=500)
        assert total == sum(1 for u in tables["fact_mixpanel_user"] if u[8] == 0)
        rows, _ = user_page(conn, search="bot-")
        assert [r["distinct_id"] for r in rows] == ["bot-000001"]
        assert rows[0]["invalid_reason"] == "bot_activity"
        page1, total = user_page(conn, limit=7, offset=0)
        page2, _ = user_page(conn, limit=7, offset=7)
        assert total == len(tables["fact_mixpanel_user"])
        assert not {r["distinct_id"] for r in page1} & {r["distinct_id"] for r in page2}
        rows, _ = user_page(conn, country="DE", abi=True)
        assert all(r["country"] == "DE" and r["has_abi_attribution"] for r in rows)
        with pytest.raises(ValueError, match="unknown tier"):
            user_page(conn, tier="gold")
    finally:
        conn.close()


def test_demo_download_is_deterministic(tmp_path, demo_run):
    """The same END_DATE and user count give the same bytes; one day regenerates identically."""
    _first_dir, env, _ = demo_run
    settings = load_settings({k: v for k, v in env.items() if k.startswith("MIXPANEL_")})
    copy = tmp_path / "cache"
    env2 = {**env, "MIXPANEL_CACHE_DIR": str(copy), "MIXPANEL_DB_PATH": str(tmp_path / "x.db")}
    assert run_step("01_download_update_data.py", tmp_path, env2).code == 0
    for day in settings.window.days:
        a = cache.day_path(settings.cache_dir, day).read_bytes()
        assert cache.day_path(copy, day).read_bytes() == a
    one_day = settings.window.days[3]
    cache.day_path(copy, one_day).unlink()
    assert run_step("01_download_update_data.py", tmp_path, env2).code == 0
    assert (
        cache.day_path(copy, one_day).read_bytes()
        == cache.day_path(settings.cache_dir, one_day).read_bytes()
    )


def test_later_steps_need_the_ingest(tmp_path):
    env = base_env(tmp_path)
    run = run_step("04_check_broken_users.py", tmp_path, env)
    assert run.code == 1
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert "does not exist; run step ingest_data" in run.stderr


def test_a_step_refuses_to_run_on_data_its_predecessor_has_not_seen(demo_run, tmp_path):
    _src, env, _ = demo_run
    db = tmp_path / "db" / "copy.db"
    db.parent.mkdir()
    shutil.copy(env["MIXPANEL_DB_PATH"], db)
    env = {**env, "MIXPANEL_DB_PATH": str(db)}
    assert run_step("02_ingest_data.py", tmp_path, env).code == 0
    run = run_step("05_count_user_events.py", tmp_path, env)
    assert run.code == 1
    assert "step check_broken_users has not run on the current data" in run.stderr
    assert "04_check_broken_users.py" in run.stderr


def test_ingest_fails_its_check_when_the_cache_has_gaps(tmp_path):
    env = base_env(tmp_path, MIXPANEL_WINDOW_DAYS="3")
    settings = load_settings({k: v for k, v in env.items() if k.startswith("MIXPANEL_")})
    write_gz(cache.day_path(settings.cache_dir, settings.window.end), [])
    write_gz(cache.profiles_path(settings.cache_dir), [])
    run = run_step("02_ingest_data.py", tmp_path, env)
    assert run.code == 1
    assert run.stderr.count("\n") == 1
    assert "check window_fully_cached: 2 window days have no cache file" in run.stderr
    assert "run step download_update_data" in run.stderr
    report = _report(tmp_path, "ingest_data")
    assert report["status"] == "failed"
    assert report["figures"]["days_by_status"] == {"ingested": 1, "unchanged": 0, "missing": 2}
    # The later steps do not build on an ingest that failed its checks.
    run = run_step("03_set_abi_attribution.py", tmp_path, env)
    assert run.code == 1
    assert "step ingest_data has not run on the current data" in run.stderr
    cache.profiles_path(settings.cache_dir).unlink()
    two = run_step("02_ingest_data.py", tmp_path, env)
    assert two.code == 1 and two.stderr.count("\n") == 1, "one line, however many checks failed"
    assert "check window_fully_cached" in two.stderr and "; check profiles_cached" in two.stderr


def test_a_failed_ingest_leaves_later_steps_waiting(demo_run, tmp_path):
    """Steps 3-6 ran on the last good ingest; a new ingest that fails (a day file gone
    from the cache) must not let step 5 run on data step 4 has not seen."""
    _src, env, _ = demo_run
    db = tmp_path / "db" / "copy.db"
    db.parent.mkdir()
    shutil.copy(env["MIXPANEL_DB_PATH"], db)
    cache_dir = tmp_path / "cache_copy"
    shutil.copytree(env["MIXPANEL_CACHE_DIR"], cache_dir)
    env = {**env, "MIXPANEL_DB_PATH": str(db), "MIXPANEL_CACHE_DIR": str(cache_dir)}
    settings = load_settings({k: v for k, v in env.items() if k.startswith("MIXPANEL_")})
    cache.day_path(cache_dir, settings.window.days[3]).unlink()
    assert run_step("02_ingest_data.py", tmp_path, env).code == 1
    for script in ("03_set_abi_attribution.py", "05_count_user_events.py"):
        run = run_step(script, tmp_path, env)
        assert run.code == 1, script
        assert "has not run on the current data" in run.stderr


def test_bad_tiers_file_fails_step_6_in_one_line(demo_run, tmp_path):
    _, env, _ = demo_run
    bad = tmp_path / "tiers.yaml"
    bad.write_text("premium:\n  min_revenue_usd: -1\n")
    run = run_step("06_assign_economic_tier.py", tmp_path, {**env, "MIXPANEL_TIERS_PATH": str(bad)})
    assert run.code == 1
    assert run.stderr.strip() == (
        f"assign_economic_tier failed: {bad}: key 'premium.min_revenue_usd' must be a number "
        ">= 0, got -1"
    )


def test_a_bug_in_our_sql_keeps_its_traceback_and_is_no_damaged_database(tmp_path, monkeypatch):
    """Only SQLite's own file and disk errors become a one-line 'move it aside'; a UNIQUE
    violation or wrong bindings are bugs: raised, with the report saying 'internal error'."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("MIXPANEL_")]:
        monkeypatch.delenv(name)

    def buggy(_settings, _report, _log):
        raise sqlite3.IntegrityError("UNIQUE constraint failed: mixpanel_meta.key")

    with pytest.raises(sqlite3.IntegrityError):
        run_in_process("ingest_data", buggy, log=lambda _l: None)
    assert _report(tmp_path, "ingest_data")["error"].startswith("internal error: IntegrityError")

    def busy(_settings, _report, _log):
        error = sqlite3.OperationalError("database is locked")
        error.sqlite_errorname = "SQLITE_BUSY"
        raise error

    assert run_in_process("ingest_data", busy, log=lambda _l: None) == 1
    assert "the database is busy" in _report(tmp_path, "ingest_data")["error"]
