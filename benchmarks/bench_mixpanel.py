"""Benchmark of the Mixpanel pipeline, steps 2 to 6, on 1,000,000 events of 50,000 users.

Usage:  .venv/bin/python benchmarks/bench_mixpanel.py [--events N] [--users N] [--identity]
            [--keep DIR]

`--identity` makes the events shaped like a mobile SDK's under Simplified ID Merge: every event
carries `$device_id`, events of identified users `$user_id`, and 30% of the users are
anonymous (`$device:<id>`) until a day inside the window, so the ingest's identity merge has
links to resolve and old days to re-key.

Generates the cache in a child process (so its memory does not count), runs the steps
in-process through the same functions the step scripts call, then measures two baselines in
the same run: a bare loop that decompresses and `orjson.loads` every line, and a bare
`executemany` of the same rows into a table without constraints or indexes.
Targets: ingest >= 150,000 events/s, steps 3-6 together < 10 s, peak RSS < 500 MB.
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import zlib
from datetime import date, timedelta
from pathlib import Path

import orjson

from database.reports import StepReport
from database.settings import Settings, load_settings
from database.staging import parse_day
from database.steps import (
    assign_economic_tier,
    check_broken_users,
    count_user_events,
    ingest_data,
    set_abi_attribution,
)
from mixpanel_source import cache

END_DATE = date(2024, 6, 30)
WINDOW_DAYS = 90
TIERS = Path(__file__).resolve().parents[1] / "pipelines" / "mixpanel_pipeline" / "tiers.yaml"
APP_EVENTS = ("app_open", "session_start", "screen_view", "screen_view", "button_click")
PRODUCTS = (("pro_monthly", 9.99), ("pro_yearly", 59.99), ("coins_500", 19.99))


def generate(cache_dir: Path, events: int, users: int, identity: bool = False) -> None:
    """Write `events` events of `users` users over the window into a cache dir, fast."""
    rng = random.Random(7)
    ids = [f"u{i:06d}" for i in range(users)]
    # The day from which each user is identified (0: from the start; only with `identity`).
    known_from = [rng.randrange(WINDOW_DAYS) if rng.random() < 0.3 else 0 for _ in range(users)]
    countries = [rng.choice(("US", "GB", "DE", "FR", "BR", "IN")) for _ in range(users)]
    payers = set(rng.sample(range(users), users // 10))
    per_day = events // WINDOW_DAYS
    start = END_DATE - timedelta(days=WINDOW_DAYS - 1)
    for d in range(WINDOW_DAYS):
        day = start + timedelta(days=d)
        base = int(time.mktime(day.timetuple())) - time.timezone
        count = per_day + (events - per_day * WINDOW_DAYS if d == WINDOW_DAYS - 1 else 0)
        lines = []
        for n in range(count):
            # Skewed activity: a few heavy users, a long tail of light ones, all present.
            u = int(users * rng.random() ** 2.5) if n % 20 else n * 7919 % users
            props: dict[str, object] = {
                "time": base + rng.randrange(86_400),
                "distinct_id": ids[u]
                if not identity or d >= known_from[u]
                else f"$device:D{u:06d}",
                "$insert_id": f"{d:03d}{n:07d}{rng.getrandbits(40):010x}",
                "mp_country_code": countries[u],
                "$os": "iOS" if u % 2 else "Android",
                "mp_lib": "swift",
                "mp_processing_time_ms": base * 1000 + n,
            }
            if identity:
                props["$device_id"] = f"D{u:06d}"
                if d >= known_from[u]:
                    props["$user_id"] = ids[u]
            name = rng.choice(APP_EVENTS)
            if u in payers and rng.random() < 0.05:
                product, price = PRODUCTS[u % 3]
                name = "rc_initial_purchase_event" if rng.random() < 0.3 else "rc_renewal_event"
                props.update(product_id=product, revenue=price, currency="USD")
            lines.append(orjson.dumps({"event": name, "properties": props}))
        cache.write_lines_atomic(cache.day_path(cache_dir, day), lines)
    profiles = (
        orjson.dumps(
            {
                "$distinct_id": ids[u],
                "$properties": {"$country_code": countries[u]}
                | ({"abi_~campaign_id": f"c{u % 50}"} if u % 5 < 2 else {}),
            }
        )
        for u in range(users)
    )
    cache.write_lines_atomic(cache.profiles_path(cache_dir), profiles)


def peak_mb() -> float:
    """Peak resident memory of this process so far, in MB (ru_maxrss is KB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(label: str, fn, settings: Settings) -> tuple[float, StepReport]:
    """Run one step function quietly; return seconds and its report."""
    report = StepReport(label)
    started = time.perf_counter()
    fn(settings, report, lambda _line: None)
    elapsed = time.perf_counter() - started
    if not report.ok:
        raise SystemExit(f"{label} failed: {report.error or report.failed_checks}")
    return elapsed, report


def baseline_parse(cache_dir: Path) -> tuple[int, float]:
    """Decompress and orjson.loads every line, nothing else."""
    started = time.perf_counter()
    n = 0
    for path in sorted(cache.events_dir(cache_dir).glob("*.jsonl.gz")):
        for line in zlib.decompress(path.read_bytes(), wbits=31).split(b"\n"):
            if line:
                orjson.loads(line)
                n += 1
    return n, time.perf_counter() - started


def baseline_insert(cache_dir: Path, db_path: Path, *, unique: bool) -> tuple[int, float]:
    """A bare executemany of the parsed rows (parse untimed); `unique` adds the events' key."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)  # left by a --keep run
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA page_size = 16384")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA cache_size = -131072")
    key = ", UNIQUE (event, distinct_id, time, insert_id)" if unique else ""
    conn.execute(
        "CREATE TABLE e (insert_id TEXT NOT NULL, event TEXT NOT NULL, distinct_id TEXT NOT NULL, "
        "time INTEGER NOT NULL, product_id TEXT, revenue REAL, properties TEXT NOT NULL, "
        f"event_date TEXT NOT NULL, source_day TEXT{key})"
    )
    n, elapsed = 0, 0.0
    conn.execute("BEGIN")
    for path in sorted(cache.events_dir(cache_dir).glob("*.jsonl.gz")):
        day = path.name[:10]
        parsed = parse_day(zlib.decompress(path.read_bytes(), wbits=31), day)
        # The same nine columns, NULLs included, as this baseline has always bound.
        rows = [(i, e, d, t, None, None, p, ed, day) for i, e, d, t, p, ed in parsed.plain]
        rows += [(i, e, d, t, pr, r, p, ed, day) for i, e, d, t, p, ed, pr, r in parsed.priced]
        started = time.perf_counter()
        conn.executemany("INSERT OR IGNORE INTO e VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        elapsed += time.perf_counter() - started
        n += len(rows)
    conn.execute("COMMIT")
    conn.close()
    return n, elapsed


def main() -> int:
    """Generate, run steps 2-6, run the baselines, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--identity", action="store_true", help="SDK-shaped ids to merge")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--generate-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate_only:
        generate(args.generate_only, args.events, args.users, args.identity)
        return 0

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_mixpanel_"))
    work.mkdir(parents=True, exist_ok=True)
    cache_dir, db_path = work / "cache", work / "mixpanel.db"
    settings = load_settings(
        {
            "MIXPANEL_SOURCE": "demo",
            "MIXPANEL_CACHE_DIR": str(cache_dir),
            "MIXPANEL_DB_PATH": str(db_path),
            "MIXPANEL_END_DATE": END_DATE.isoformat(),
            "MIXPANEL_WINDOW_DAYS": str(WINDOW_DAYS),
            "MIXPANEL_TIERS_PATH": str(TIERS),
        }
    )
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    try:
        started = time.perf_counter()
        if not cache.day_path(cache_dir, END_DATE).is_file():
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--generate-only",
                    str(cache_dir),
                    "--events",
                    str(args.events),
                    "--users",
                    str(args.users),
                    *(["--identity"] if args.identity else []),
                ],
                check=True,
            )
        print(
            f"cache: {args.events:,} events, {args.users:,} users in {work} "
            f"({time.perf_counter() - started:.1f}s to generate"
            f"{'; SDK-shaped ids to merge' if args.identity else ''})"
        )

        results = []
        for label, fn in (
            ("ingest_data", ingest_data),
            ("set_abi_attribution", set_abi_attribution),
            ("check_broken_users", check_broken_users),
            ("count_user_events", count_user_events),
            ("assign_economic_tier", assign_economic_tier),
        ):
            seconds, report = timed(label, fn, settings)
            results.append((label, seconds, peak_mb()))
            if label == "ingest_data" and args.identity:
                merge = report.figures["identity"]
                print(
                    f"identity merge: {merge['links']:,} links, {merge['ids_merged']:,} ids merged "
                    f"into {merge['users_merged_into']:,} users, {merge['rows_rekeyed']:,} rows "
                    "re-keyed"
                )
        with sqlite3.connect(db_path) as conn:
            events = conn.execute("SELECT COUNT(*) FROM fact_mixpanel_event").fetchone()[0]
        pipeline_peak = peak_mb()

        parsed, parse_seconds = baseline_parse(cache_dir)
        inserted, insert_seconds = baseline_insert(cache_dir, work / "bare.db", unique=False)
        keyed, keyed_seconds = baseline_insert(cache_dir, work / "keyed.db", unique=True)
        children_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

        print(f"\n{'step':<22}{'seconds':>9}{'events/s':>12}{'peak MB':>9}")
        for label, seconds, peak in results:
            print(f"{label:<22}{seconds:>9.2f}{events / seconds:>12,.0f}{peak:>9.0f}")
        later = sum(s for label, s, _ in results[1:])
        print(f"{'steps 3-6 together':<22}{later:>9.2f}{events / later:>12,.0f}")
        print("\nbaselines (same run)")
        print(f"{'decompress+loads':<22}{parse_seconds:>9.2f}{parsed / parse_seconds:>12,.0f}")
        print(f"{'bare executemany':<22}{insert_seconds:>9.2f}{inserted / insert_seconds:>12,.0f}")
        print(f"{'  + the unique key':<22}{keyed_seconds:>9.2f}{keyed / keyed_seconds:>12,.0f}")
        ingest_rate = events / results[0][1]
        print("\ntargets")
        print(
            f"  ingest >= 150,000 events/s: {ingest_rate:,.0f} "
            f"{'ok' if ingest_rate >= 150_000 else 'MISSED'}"
        )
        print(f"  steps 3-6 < 10 s: {later:.2f} s {'ok' if later < 10 else 'MISSED'}")
        print(
            f"  peak memory < 500 MB: {pipeline_peak:.0f} MB "
            f"{'ok' if pipeline_peak < 500 else 'MISSED'} (largest child process, a parse "
            f"worker or the generator: {children_peak:.0f} MB)"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
