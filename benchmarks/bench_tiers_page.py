"""How long the /tiers page takes to render on the server with 100,000 users.

Builds a database through the real schema (the migrations step ingest_data applies): users
with countries, ABI ids, broken ones of every reason, revenue, active days and products, plus
events for the window, then runs the real ABI and tier rules over it (tiers.yaml). The page is
run through Streamlit's AppTest (the script run a browser session triggers, without the
network) several times: first render (cold, nothing cached), then the median and worst of the
next ones, also with the user explorer filtered. Baselines in the same run: an empty Streamlit
script and the /runs page of an empty pipelines folder. Target: < 1 s per render.

    .venv/bin/python benchmarks/bench_tiers_page.py [--users 100000] [--events-per-user 10]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "dashboard.py"
TIERS_YAML = ROOT / "pipelines" / "mixpanel_pipeline" / "tiers.yaml"
END_DATE = date(2024, 6, 30)
WINDOW_DAYS = 90
COUNTRIES = ("US", "US", "US", "GB", "DE", "FR", "BR", "IN", "JP", "CA", "ES", "IT", "MX", "AU")
PRODUCTS = (("pro_monthly", 9.99), ("pro_yearly", 59.99), ("coins_100", 4.99), ("coins_500", 19.99))
REASONS = ("blank_id", "no_events", "future_events", "bot_activity", "no_events,future_events")


def build_database(db_path: Path, users: int, events_per_user: int, seed: int = 7) -> None:
    """A database like the pipeline leaves it, with `users` users, filled by bulk inserts."""
    from database import migrations, pipeline_state, rules
    from database.connection import connect, transaction
    from database.tiers_config import load_tiers

    rng = random.Random(seed)
    start = END_DATE - timedelta(days=WINDOW_DAYS - 1)
    with closing(connect(db_path, create=True)) as conn:
        migrations.apply_migrations(conn)
        user_rows, product_rows, event_rows = [], [], []
        for i in range(users):
            distinct_id = f"u{i:07d}-{rng.getrandbits(32):08x}"
            reason = rng.choice(REASONS) if rng.random() < 0.04 else None
            payer = reason is None and rng.random() < 0.25
            days = 0 if reason and "no_events" in reason else rng.randint(1, 60)
            revenue = round(rng.choice((4.99, 9.99, 19.99, 59.99)) * rng.randint(1, 6), 2)
            abi = rng.random() < 0.4
            first = start + timedelta(days=rng.randint(0, WINDOW_DAYS - 1))
            user_rows.append(
                (
                    distinct_id,
                    f"{first.isoformat()}T08:00:00Z",
                    f"{END_DATE.isoformat()}T20:00:00Z",
                    rng.choice(COUNTRIES),
                    f"cmp_{rng.randint(1, 40):03d}" if abi else None,
                    f"adset_{rng.randint(1, 200):04d}" if abi and rng.random() < 0.7 else None,
                    None,
                    "{}",
                    reason is None,
                    reason,
                    days * rng.randint(3, 12),
                    days,
                    revenue if payer else 0.0,
                )
            )
            if payer:
                for product, price in rng.sample(PRODUCTS, rng.randint(1, 3)):
                    product_rows.append((distinct_id, product, rng.random() < 0.8, 3, price))
            for n in range(events_per_user if days else 0):
                day = start + timedelta(days=rng.randrange(WINDOW_DAYS))
                event_rows.append(
                    (f"{i:07d}{n:04d}", "screen_view", distinct_id, 1_700_000_000 + n, day)
                )
        with transaction(conn):
            conn.executemany(
                "INSERT INTO fact_mixpanel_user (distinct_id, first_seen, last_seen, country, "
                "abi_campaign_id, abi_ad_set_id, abi_ad_id, profile, valid_user, invalid_reason, "
                "event_count, active_days, revenue_usd) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                user_rows,
            )
            conn.executemany(
                "INSERT INTO fact_user_products (distinct_id, product_id, valid_lifecycle, "
                "event_count, revenue_usd) VALUES (?,?,?,?,?)",
                product_rows,
            )
            conn.executemany(
                "INSERT INTO fact_mixpanel_event (insert_id, event, distinct_id, time, event_date, "
                "properties, source_day) VALUES (?, ?, ?, ?, ?, '{}', ?)",
                ((*row[:4], row[4].isoformat(), row[4].isoformat()) for row in event_rows),
            )
            conn.execute(
                "UPDATE fact_mixpanel_user SET valid_product_count = COALESCE((SELECT "
                "SUM(valid_lifecycle) FROM fact_user_products p "
                "WHERE p.distinct_id = fact_mixpanel_user.distinct_id), 0)"
            )
            for key, value in {
                "window_start": start.isoformat(),
                "window_end": END_DATE.isoformat(),
                "ingested_at": pipeline_state.now_iso(),
                "data_version": "1",
            }.items():
                pipeline_state.set_meta(conn, key, value)
        rules.set_abi_attribution(conn)
        rules.assign_economic_tier(conn, load_tiers(TIERS_YAML))
        with transaction(conn):
            for step in pipeline_state.STEP_ORDER[1:]:
                pipeline_state.record_step(conn, step)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def timed(run: Callable[[], object], repeat: int) -> tuple[float, float, float]:
    """(first, median, worst) seconds of `run`: once cold, then `repeat` more times."""
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times), max(times)


def app_for(page: str):
    """An AppTest of the whole dashboard, switched to `pages/<page>.py`."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(DASHBOARD), default_timeout=120)
    at.switch_page(f"pages/{page}.py")
    return at


def checked(at) -> None:
    """Run the app once; stop the benchmark if the page raised."""
    at.run()
    if at.exception:
        raise SystemExit(f"the page failed: {at.exception[0].message}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--events-per-user", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()

    import streamlit as st
    from bench_dashboard import quiet_streamlit
    from streamlit.testing.v1 import AppTest

    from ui.session import Keys

    quiet_streamlit()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pdir = Path(tmp) / "pipelines"
        pdir.mkdir()
        db = Path(tmp) / "database" / "mixpanel_data.db"
        started = time.perf_counter()
        build_database(db, args.users, args.events_per_user)
        built = time.perf_counter() - started
        os.environ["ORCHESTRATOR_PIPELINES_DIR"] = str(pdir)
        os.environ["MIXPANEL_DB_PATH"] = str(db)
        os.environ.pop("ORCHESTRATOR_PASSWORD", None)
        os.chdir(tmp)

        def fresh() -> None:
            st.cache_resource.clear()
            st.cache_data.clear()

        # Baselines first, so the tiers page's first render does not pay Streamlit's imports.
        empty = AppTest.from_string("import streamlit as st\nst.write('hello')\n")
        baselines = [("(empty script)", "-", *timed(empty.run, args.repeat))]
        at = app_for("runs")
        baselines.append(
            ("runs (baseline)", "no pipelines", *timed(lambda: checked(at), args.repeat))
        )
        fresh()
        at = app_for("tiers")
        rows.append(("tiers", "default view", *timed(lambda: checked(at), args.repeat)))
        fresh()
        at = app_for("tiers")
        checked(at)
        at.selectbox(key=Keys.TIERS_TIER).select("premium")
        at.selectbox(key=Keys.TIERS_COUNTRY).select("US")
        at.text_input(key=Keys.TIERS_SEARCH).input("u00")
        rows.append(("tiers", "explorer filtered", *timed(lambda: checked(at), args.repeat)))

        def cold() -> None:
            fresh()
            checked(app_for("tiers"))

        rows.append(("tiers", "no cache, new session", *timed(cold, max(3, args.repeat // 3))))
        fresh()

    print(
        f"Server time per render of /tiers (AppTest, no browser): {args.users:,} users, "
        f"{args.users * args.events_per_user:,} events (database built in {built:.1f} s)"
    )
    print(
        f"first render (cold cache; its own imports on the first line), then median and worst "
        f"of {args.repeat} more; target < 1 s"
    )
    print(f"{'page':<16} {'case':<24} {'first':>9} {'median':>9} {'worst':>9}")
    for page, case, first, median, worst in [*rows, *baselines]:
        print(
            f"{page:<16} {case:<24} {first * 1000:>7.0f}ms {median * 1000:>7.0f}ms"
            f" {worst * 1000:>7.0f}ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
