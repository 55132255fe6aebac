"""Step 2: migrations, dedup, quarantine, day replacement, window trimming, users."""

from __future__ import annotations

import gzip
import json
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from mixpanel_helpers import END, base_env, event_line, run_step, table, ts, write_gz

from database import migrations
from database.connection import connect
from database.errors import MissingDataError
from database.event_format import event_seconds
from database.identity import resolve
from database.ingest import ingest
from mixpanel_source import cache

QUIET = {"log": lambda _line: None}


def _day(settings, offset: int):
    return settings.window.end - timedelta(days=offset)


def _write_day(settings, day, lines):
    return write_gz(cache.day_path(settings.cache_dir, day), lines)


def _write_profiles(settings, profiles):
    write_gz(cache.profiles_path(settings.cache_dir), [json.dumps(p).encode() for p in profiles])


def test_duplicates_fold_on_mixpanels_key(make_settings):
    settings = make_settings(MIXPANEL_WINDOW_DAYS="1")
    same = event_line("app_open", "a", ts(END), "x1")
    # The export repeats an event with another processing time: still one event.
    repeat = event_line("app_open", "a", ts(END), "x1", mp_processing_time_ms=5)
    other_insert_id = event_line("app_open", "a", ts(END), "x2")
    _write_day(settings, END, [same, repeat, same, other_insert_id])
    _write_profiles(settings, [])
    result = ingest(settings, **QUIET)
    assert result.days[0].lines == 4
    assert result.days[0].unique_events == 2
    assert table(settings.db_path, "SELECT insert_id FROM fact_mixpanel_event ORDER BY 1") == [
        ("x1",),
        ("x2",),
    ]


def test_bad_lines_are_quarantined_with_file_line_and_reason(make_settings):
    settings = make_settings(MIXPANEL_WINDOW_DAYS="1")
    good = event_line("app_open", "a", ts(END), "ok")
    lines = [
        good,
        b"{not json",
        b"[1, 2]",
        json.dumps({"properties": {"time": ts(END), "distinct_id": "a"}}).encode(),
        json.dumps({"event": "x", "properties": {"distinct_id": "a"}}).encode(),
        json.dumps({"event": "x", "properties": {"time": "noon", "distinct_id": "a"}}).encode(),
        json.dumps({"event": "x", "properties": {"time": ts(END)}}).encode(),
        b"",
        event_line("app_open", None, ts(END), "null-id"),
    ]
    path = _write_day(settings, END, lines)
    _write_profiles(settings, [])
    result = ingest(settings, **QUIET)
    assert result.quarantined == 6
    rows = table(
        settings.db_path,
        "SELECT file, line_number, reason FROM mixpanel_quarantine ORDER BY line_number",
    )
    assert rows == [
        (str(path), 2, "invalid_json"),
        (str(path), 3, "not_an_object"),
        (str(path), 4, "missing_event"),
        (str(path), 5, "missing_time"),
        (str(path), 6, "bad_time"),
        (str(path), 7, "missing_distinct_id"),
    ]
    # A null distinct_id is a key that is present: kept (step 4 calls it blank).
    assert table(settings.db_path, "SELECT distinct_id FROM fact_mixpanel_event ORDER BY 1") == [
        ("",),
        ("a",),
    ]
    assert result.quarantine_reasons["invalid_json"] == 1


def test_row_fields_follow_the_export(make_settings):
    settings = make_settings(MIXPANEL_WINDOW_DAYS="1")
    _write_day(
        settings,
        END,
        [
            event_line(
                "rc_renewal_event", 42, ts(END, 9) * 1000, "r1", product_id="p", revenue="9.99"
            ),
            json.dumps(
                {"event": "no_insert_id", "properties": {"time": ts(END), "distinct_id": "b"}}
            ).encode(),
        ],
    )
    _write_profiles(settings, [])
    ingest(settings, **QUIET)
    rows = table(
        settings.db_path,
        "SELECT event, distinct_id, time, event_date, product_id, revenue, insert_id "
        "FROM fact_mixpanel_event ORDER BY event",
    )
    assert rows[0][:4] == ("no_insert_id", "b", ts(END), END.isoformat())
    assert rows[0][6].startswith("sha1:")
    # Numbers become text ids; milliseconds become seconds; a numeric text revenue counts.
    assert rows[1][:6] == ("rc_renewal_event", "42", ts(END, 9), END.isoformat(), "p", 9.99)


def test_redownloaded_day_replaces_its_rows_and_unchanged_days_are_skipped(make_settings):
    settings = make_settings(MIXPANEL_WINDOW_DAYS="2")
    old_day, new_day = _day(settings, 1), _day(settings, 0)
    _write_day(settings, old_day, [event_line("e", "a", ts(old_day), "o1")])
    _write_day(settings, new_day, [event_line("e", "a", ts(new_day), f"n{i}") for i in range(3)])
    _write_profiles(settings, [])
    ingest(settings, **QUIET)

    _write_day(settings, new_day, [event_line("e", "b", ts(new_day), "late")])
    result = ingest(settings, **QUIET)

    assert [d.status for d in result.days] == ["unchanged", "ingested"]
    assert table(
        settings.db_path, "SELECT source_day, insert_id FROM fact_mixpanel_event ORDER BY 2"
    ) == [(new_day.isoformat(), "late"), (old_day.isoformat(), "o1")]
    assert {d.day: d.rows_in_db for d in result.days} == {old_day: 1, new_day: 1}


def test_identical_rewrite_is_not_reingested(make_settings):
    settings = make_settings(MIXPANEL_WINDOW_DAYS="1")
    lines = [event_line("e", "a", ts(END), "o1")]
    cache.write_lines_atomic(cache.day_path(settings.cache_dir, END), lines)
    _write_profiles(settings, [])
    ingest(settings, **QUIET)
    cache.write_lines_atomic(cache.day_path(settings.cache_dir, END), lines)
    assert ingest(settings, **QUIET).days[0].status == "unchanged"


def test_days_leaving_the_window_are_deleted(make_settings):
    settings = make_settings(MIXPANEL_WINDOW_DAYS="3")
    for offset in range(3):
        day = _day(settings, offset)
        _write_day(settings, day, [event_line("e", f"u{offset}", ts(day), f"i{offset}")])
    _write_profiles(settings, [])
    ingest(settings, **QUIET)

    later = make_settings(MIXPANEL_WINDOW_DAYS="2", MIXPANEL_END_DATE=END.isoformat())
    result = ingest(later, **QUIET)
    assert result.rows_deleted_outside_window == 1
    assert table(later.db_path, "SELECT MIN(source_day) FROM fact_mixpanel_event") == [
        (_day(settings, 1).isoformat(),)
    ]
    # The user seen only on the dropped day, without a profile, is gone too.
    assert table(
        later.db_path, "SELECT COUNT(*) FROM fact_mixpanel_user WHERE distinct_id='u2'"
    ) == [(0,)]


def test_users_come_from_events_and_profiles(make_settings):
    settings = make_settings(MIXPANEL_WINDOW_DAYS="2")
    d1, d2 = _day(settings, 1), _day(settings, 0)
    _write_day(
        settings,
        d1,
        [
            event_line("e", "a", ts(d1, 8), "1", mp_country_code="FR"),
            event_line("e", "b", ts(d1, 9), "2", mp_country_code="IT"),
        ],
    )
    _write_day(
        settings,
        d2,
        [
            event_line("e", "a", ts(d2, 7), "3", mp_country_code="ES"),
            event_line("e", "a", ts(d2, 9), "4"),
        ],
    )
    _write_profiles(
        settings,
        [
            {
                "$distinct_id": "b",
                "$properties": {
                    "$country_code": "DE",
                    "abi_~campaign_id": "c1",
                    "abi_~ad_id": "ad",
                },
            },
            {"$distinct_id": "ghost", "$properties": {"abi_~ad_set_id": "s"}},
        ],
    )
    result = ingest(settings, **QUIET)
    assert result.users == 3
    rows = table(
        settings.db_path,
        "SELECT distinct_id, first_seen, last_seen, country, abi_campaign_id, abi_ad_set_id, "
        "abi_ad_id, valid_user FROM fact_mixpanel_user ORDER BY 1",
    )
    assert rows == [
        # Latest event that names a country wins when there is no profile country.
        ("a", f"{d1}T08:00:00Z", f"{d2}T09:00:00Z", "ES", None, None, None, 1),
        ("b", f"{d1}T09:00:00Z", f"{d1}T09:00:00Z", "DE", "c1", None, "ad", 1),
        ("ghost", None, None, None, None, "s", None, 1),
    ]


def _premigration_db(path):
    """A database made before migrations existed: base tables holding rows."""
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE fact_mixpanel_event (insert_id TEXT NOT NULL, event TEXT NOT NULL,
            distinct_id TEXT NOT NULL, time INTEGER NOT NULL, event_date TEXT NOT NULL,
            product_id TEXT, revenue REAL, properties TEXT NOT NULL,
            UNIQUE(event, distinct_id, time, insert_id));
        CREATE TABLE fact_mixpanel_user (distinct_id TEXT PRIMARY KEY, first_seen TEXT,
            last_seen TEXT, country TEXT, abi_campaign_id TEXT, abi_ad_set_id TEXT,
            abi_ad_id TEXT, profile TEXT);
        """
    )
    conn.executemany(
        "INSERT INTO fact_mixpanel_event VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                "i1",
                "app_open",
                "a",
                ts(END),
                END.isoformat(),
                None,
                None,
                '{"mp_country_code":"NL"}',
            ),
            ("i2", "rc_renewal_event", "a", ts(END, 13), END.isoformat(), "p", 4.5, "{}"),
            ("i3", "app_open", "b", ts(END, 1), END.isoformat(), None, None, "not json"),
        ],
    )
    conn.executemany(
        "INSERT INTO fact_mixpanel_user VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            ("a", "x", "y", "NL", "c", None, None, "{}"),
            ("old", None, None, None, None, None, None, None),
        ],
    )
    conn.commit()
    conn.close()


def test_upgrade_of_a_premigration_database_keeps_every_row(tmp_path):
    path = tmp_path / "old.db"
    _premigration_db(path)
    before_events = table(path, "SELECT * FROM fact_mixpanel_event ORDER BY insert_id")
    before_users = table(path, "SELECT * FROM fact_mixpanel_user ORDER BY distinct_id")

    conn = connect(path)
    applied = migrations.apply_migrations(conn)
    again = migrations.apply_migrations(conn)
    conn.close()

    assert applied == [m.name for m in migrations.MIGRATIONS] and again == []
    assert table(path, "SELECT version FROM schema_migrations ORDER BY 1") == [
        (1,),
        (2,),
        (3,),
        (4,),
        (5,),
    ]
    events = table(
        path,
        "SELECT insert_id, event, distinct_id, time, event_date, product_id, revenue, "
        "properties FROM fact_mixpanel_event ORDER BY insert_id",
    )
    assert events == before_events
    users = table(
        path,
        "SELECT distinct_id, first_seen, last_seen, country, abi_campaign_id, abi_ad_set_id, "
        "abi_ad_id, profile FROM fact_mixpanel_user ORDER BY distinct_id",
    )
    assert users == before_users
    assert table(
        path, "SELECT valid_user, has_abi_attribution, economic_tier FROM fact_mixpanel_user"
    ) == [
        (1, 0, None),
        (1, 0, None),
    ]
    assert table(path, "SELECT DISTINCT source_day FROM fact_mixpanel_event") == [
        (END.isoformat(),)
    ]
    columns = {r[1] for r in table(path, "PRAGMA table_info(fact_user_products)")}
    assert {"user_product_id", "distinct_id", "product_id", "valid_lifecycle"} <= columns


def test_upgraded_database_rows_survive_an_ingest_of_other_days(make_settings, tmp_path):
    settings = make_settings(MIXPANEL_WINDOW_DAYS="2", MIXPANEL_DB_PATH=str(tmp_path / "old.db"))
    _premigration_db(settings.db_path)
    earlier = _day(settings, 1)
    _write_day(settings, earlier, [event_line("e", "c", ts(earlier), "new")])
    _write_profiles(settings, [])
    ingest(settings, **QUIET)
    ids = table(settings.db_path, "SELECT insert_id FROM fact_mixpanel_event ORDER BY 1")
    assert ids == [("i1",), ("i2",), ("i3",), ("new",)]
    assert table(
        settings.db_path, "SELECT country FROM fact_mixpanel_user WHERE distinct_id='a'"
    ) == [("NL",)]


def test_newer_schema_is_refused(tmp_path):
    conn = connect(tmp_path / "x.db", create=True)
    migrations.apply_migrations(conn)
    conn.execute("INSERT INTO schema_migrations VALUES (99, 'future', '2030-01-01T00:00:00Z')")
    with pytest.raises(Exception, match="newer than this code"):
        migrations.apply_migrations(conn)
    conn.close()


def test_parallel_parsing_gives_the_same_tables(make_settings, tmp_path):
    """Worker processes (used for big ingests) produce exactly what in-process parsing does."""
    results = []
    for workers in (0, 2):
        settings = make_settings(
            MIXPANEL_WINDOW_DAYS="12", MIXPANEL_DB_PATH=str(tmp_path / f"w{workers}.db")
        )
        for offset in range(12):
            day = _day(settings, offset)
            lines = [
                event_line("e", f"u{i % 7}", ts(day, i % 24), f"{offset}-{i}") for i in range(40)
            ]
            _write_day(settings, day, [*lines, b"broken"])
        _write_profiles(settings, [])
        result = ingest(settings, log=lambda _l: None, workers=workers)
        assert result.workers == workers
        results.append(
            (
                table(settings.db_path, "SELECT * FROM fact_mixpanel_event ORDER BY insert_id"),
                table(settings.db_path, "SELECT * FROM fact_mixpanel_user ORDER BY distinct_id"),
                table(
                    settings.db_path,
                    "SELECT file_key, line_number, reason FROM mixpanel_quarantine ORDER BY 1",
                ),
            )
        )
    assert results[0] == results[1]
    assert len(results[0][0]) == 480 and len(results[0][2]) == 12


def test_times_outside_the_calendar_are_bad_times_not_crashes(make_settings):
    """1e20 passes as a number but is no day at all: quarantined, and step 1's day split
    (which reads the same times) files it under the range's first day instead of failing."""
    settings = make_settings(MIXPANEL_WINDOW_DAYS="1")
    odd = [1e20, -1e15, 1e17, 2**62]
    lines = [event_line("app_open", "a", ts(END), "ok")] + [
        json.dumps({"event": "x", "properties": {"time": t, "distinct_id": "a"}}).encode()
        for t in odd
    ]
    assert all(event_seconds(t) is None for t in odd)  # what step 1's day split reads
    _write_day(settings, END, lines)
    _write_profiles(settings, [])
    result = ingest(settings, **QUIET)
    assert result.quarantined == len(odd)
    assert table(settings.db_path, "SELECT DISTINCT reason FROM mixpanel_quarantine") == [
        ("bad_time",)
    ]


def test_a_concatenated_day_file_is_read_whole_and_a_corrupt_one_is_named(make_settings):
    settings = make_settings(MIXPANEL_WINDOW_DAYS="1")
    path = cache.day_path(settings.cache_dir, END)
    path.parent.mkdir(parents=True, exist_ok=True)
    one, two = (event_line("app_open", "a", ts(END), f"i{n}") + b"\n" for n in range(2))
    path.write_bytes(gzip.compress(one) + gzip.compress(two))
    _write_profiles(settings, [])
    result = ingest(settings, **QUIET)
    assert result.days[0].unique_events == 2 and result.days[0].rows_in_db == 2
    path.write_bytes(gzip.compress(one)[:-10])
    # The same one line whether the day is parsed here or in worker processes.
    for workers in (0, 2):
        with pytest.raises(MissingDataError) as info:
            ingest(settings, **QUIET, workers=workers)
        assert str(info.value).startswith(f"{path}: not a readable gzip file")
        assert "delete it and run step download_update_data" in str(info.value)


def test_a_file_that_is_no_database_is_one_line_for_every_step(make_settings, tmp_path):
    env = base_env(tmp_path)
    Path(env["MIXPANEL_DB_PATH"]).parent.mkdir(parents=True)
    Path(env["MIXPANEL_DB_PATH"]).write_bytes(b"not a database, just text\n" * 400)
    for script in ("02_ingest_data.py", "03_set_abi_attribution.py"):
        run = run_step(script, tmp_path, env)
        assert run.code == 1 and run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
        assert "cannot be used (file is not a database); move it aside" in run.stderr


def test_identity_chains_resolve_to_their_end_however_long():
    chain = [(f"a{n}", f"a{n + 1}", 100 + n, "$distinct_id_before_identity") for n in range(200)]
    resolved = resolve(chain)
    assert {canonical for canonical, _t, _v in resolved.values()} == {"a200"}
    assert len(resolved) == 200
    # A cycle is one person, under its smallest id; what leads into it joins them.
    cycle = [("x", "y", 1, "v"), ("y", "z", 2, "v"), ("z", "x", 3, "v"), ("w", "x", 4, "v")]
    assert {a: c for a, (c, _t, _v) in resolve(cycle).items()} == {"y": "x", "z": "x", "w": "x"}
    # The earliest link of an alias wins (a device merges into the first user it meets).
    shared = [("$device:D", "u2", 50, "v"), ("$device:D", "u1", 10, "v")]
    assert resolve(shared) == {"$device:D": ("u1", 10, "v")}
