"""The Mixpanel pipeline on data shaped like real projects', served by a real HTTP server.

One section per way a real project went wrong: cut exports, projects made before 2023,
identity merges, renamed RevenueCat events, profiles at scale, rate limits, a source that
changes, malformed answers, and rejected credentials.
"""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from mixpanel_helpers import END, STEP_SCRIPTS, STEPS_DIR, base_env, run_step, table, write_gz
from real_format import FIXTURES, epoch, profile, rc_event, sample_lines, sdk_event

from database.errors import DownloadError
from database.settings import load_settings
from mixpanel_source import cache, download, profiles
from mixpanel_source.client import MixpanelClient

CREDENTIALS = {
    "MIXPANEL_PROJECT_ID": "12345",
    "MIXPANEL_SERVICE_ACCOUNT_USERNAME": "pipeline.7f3a2c.mp-service-account",
    "MIXPANEL_SERVICE_ACCOUNT_SECRET": "a8Bc-SECRET-4dE9",
}


class FakeClock:
    """Time that passes only when slept through: runs hours of backoff in no time."""

    def __init__(self) -> None:
        self.now = 1_750_000_000.0
        self.waits: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(round(seconds, 2))
        self.now += seconds


def export_env(tmp_path: Path, fake, **extra: str) -> dict[str, str]:
    """A step's environment pointed at the fake Mixpanel, with service-account credentials."""
    values = {
        **CREDENTIALS,
        "MIXPANEL_EXPORT_URL": f"{fake.url}/api/2.0/export",
        "MIXPANEL_ENGAGE_URL": f"{fake.url}/api/query/engage",
        "MIXPANEL_MAX_RETRY_WAIT": "0",
    }
    return base_env(tmp_path, **{**values, **extra})


def legacy_env(tmp_path: Path, fake, **extra: str) -> dict[str, str]:
    """A step's environment with the legacy project secret instead of a service account."""
    env = {k: v for k, v in export_env(tmp_path, fake).items() if k not in CREDENTIALS}
    env.update(MIXPANEL_SOURCE="export", MIXPANEL_API_SECRET="legacy-secret-of-a", **extra)
    return env


def settings_of(env: dict[str, str]):
    return load_settings({k: v for k, v in env.items() if k.startswith("MIXPANEL_")})


def fetch(settings, clock: FakeClock | None = None, said: list[str] | None = None):
    """Step 1's download in this process, its waits on `clock` (no real sleeping)."""
    clock = clock or FakeClock()
    log = said.append if said is not None else (lambda _line: None)

    def factory(s):
        return MixpanelClient(s, sleep=clock.sleep, clock=clock.time, log=log, warn=log)

    return download.download(settings, client_factory=factory, log=log)


def _sent_before(settings, api: str, count: int, at: float) -> None:
    """What another process's requests leave in the shared request log."""
    log = cache.request_log_path(settings.cache_dir)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(json.dumps({api: [at + n * 0.001 for n in range(count)]}))


def step_1_until(tmp_path: Path, env: dict[str, str], fake, *, engage_requests: int):
    """Step 1 started in the background, once the fake has seen this many Engage requests
    (the test stops it)."""
    proc = subprocess.Popen(
        [sys.executable, str(STEPS_DIR / "01_download_update_data.py")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while len(posts(fake)) < engage_requests and time.monotonic() < deadline:
        time.sleep(0.05)
    if len(posts(fake)) < engage_requests:
        proc.kill()
        proc.communicate(timeout=30)
        raise AssertionError(f"step 1 did not reach Engage request {engage_requests}")
    return proc


def gets(fake) -> list[dict]:
    return [r for r in fake.requests if r["method"] == "GET"]


def posts(fake) -> list[dict]:
    return [r for r in fake.requests if r["method"] == "POST"]


def day_lines(settings, day: date) -> list[bytes]:
    return cache.read_lines(cache.day_path(settings.cache_dir, day))


def report(tmp_path: Path, step: str) -> dict:
    return json.loads((tmp_path / "reports" / "mixpanel_pipeline" / f"{step}.json").read_text())


def run_all(tmp_path: Path, env: dict[str, str]) -> list:
    runs = []
    for script in STEP_SCRIPTS:
        run = run_step(script, tmp_path, env)
        assert run.code == 0, f"{script}: {run.stderr}"
        runs.append(run)
    return runs


def users(env: dict[str, str]) -> dict[str, tuple]:
    rows = table(
        Path(env["MIXPANEL_DB_PATH"]),
        "SELECT distinct_id, event_count, revenue_usd, economic_tier, valid_user, country "
        "FROM fact_mixpanel_user",
    )
    return {row[0]: row[1:] for row in rows}


def a_day_of_events(day: date, n: int = 30) -> list[bytes]:
    return [
        sdk_event(
            "screen_view",
            epoch(day, 8) + 60 * i,
            device_id="D-1",
            user_id="u-1",
            screen_name=f"s{i}",
        )
        for i in range(n)
    ]


# --- 1. Cut exports ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault", ["terminated", "trailer", "html", "nolength", "errorjson", "cut", "badgzip"]
)
def test_a_cut_or_foreign_body_is_retried_and_only_the_whole_one_cached(
    tmp_path, fake_mixpanel, fault
):
    fake_mixpanel.events = a_day_of_events(END)
    fake_mixpanel.export_faults = [fault]
    settings = settings_of(export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1"))
    said: list[str] = []
    fetch(settings, said=said)
    assert len(gets(fake_mixpanel)) == 2, "the bad answer was retried once"
    assert day_lines(settings, END) == fake_mixpanel.events
    assert any("retry 1/4" in line for line in said), said


@pytest.mark.parametrize("fault", ["terminated", "html", "nolength"])
def test_a_body_that_stays_cut_fails_the_step_in_one_line_and_caches_nothing(
    tmp_path, fake_mixpanel, fault
):
    fake_mixpanel.events = a_day_of_events(END) + a_day_of_events(END - timedelta(days=1))
    fake_mixpanel.export_faults = [fault] * 5
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="2")
    run = run_step("01_download_update_data.py", tmp_path, env)
    assert run.code == 1
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert "export 2024-06-29..2024-06-30 failed after 5 attempts" in run.stderr
    events = cache.events_dir(settings_of(env).cache_dir)
    assert not list(events.glob("*.jsonl.gz")), "no day of that request is cached"
    assert "retry 4/4" in run.stdout


def test_a_damaged_last_record_sent_the_same_twice_is_quarantined_not_fatal(
    tmp_path, fake_mixpanel
):
    fake_mixpanel.events = a_day_of_events(END, 4)
    fake_mixpanel.export_faults = ["damaged-last"] * 5
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1")
    runs = run_all(tmp_path, env)
    assert len(gets(fake_mixpanel)) == 2, "taken as it is once it came back the same"
    assert "retry 1/4" in runs[0].stdout
    rows = table(Path(env["MIXPANEL_DB_PATH"]), "SELECT reason, line FROM mixpanel_quarantine")
    assert rows == [("invalid_json", '{"event": "app_open", "properties": {"time": 17196')]
    assert users(env)["u-1"][0] == 4


def test_a_request_that_hangs_ends_with_the_steps_time_budget(tmp_path, fake_mixpanel):
    """The server never answers: the step stops when its budget is spent, in one line, not
    after the 10-minute read timeout (or when the orchestrator kills it)."""
    fake_mixpanel.export_faults = ["hang"] * 5
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1", MIXPANEL_TIME_BUDGET="3")
    started = time.monotonic()
    run = run_step("01_download_update_data.py", tmp_path, env, timeout=60)
    assert run.code == 1 and run.stderr.count("\n") == 1
    assert "time budget of 3 s" in run.stderr
    assert time.monotonic() - started < 50, "it did not wait for the server's 60 s"


@pytest.mark.parametrize("api", ["export", "engage"])
def test_an_answer_that_trickles_in_ends_with_the_steps_time_budget(tmp_path, fake_mixpanel, api):
    fake_mixpanel.events = a_day_of_events(END, 20)
    (fake_mixpanel.export_faults if api == "export" else fake_mixpanel.engage_faults).append(
        "trickle"
    )
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1", MIXPANEL_TIME_BUDGET="3")
    started = time.monotonic()
    run = run_step("01_download_update_data.py", tmp_path, env, timeout=60)
    assert run.code == 1 and run.stderr.count("\n") == 1
    assert "the step's time budget ran out while the answer was still arriving" in run.stderr
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    "log",
    [
        {"export": 5, "engage": None},
        {"export": [1e300, float("inf"), "soon", True, None]},
        {"export": [time.time() + 10 * 365 * 86400] * 100},
        [1, 2, 3],
    ],
    ids=["wrong-types", "junk-values", "times-to-come", "not-an-object"],
)
def test_a_damaged_request_log_is_set_aside_not_trusted(tmp_path, fake_mixpanel, log):
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1", MIXPANEL_TIME_BUDGET="30")
    path = cache.request_log_path(settings_of(env).cache_dir)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(log).replace("Infinity", "1e999"))
    run = run_step("01_download_update_data.py", tmp_path, env)
    assert run.code == 0, run.stderr
    assert len(json.loads(path.read_text())["export"]) == 1


def test_a_record_split_over_two_lines_is_joined_and_counted_in_the_report(tmp_path, fake_mixpanel):
    fake_mixpanel.events = a_day_of_events(END, 5)
    fake_mixpanel.export_faults = ["split"]
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1")
    fake_mixpanel.profiles = [profile("u-1", "2024-06-30T08:00:00")]
    runs = run_all(tmp_path, env)
    assert len(gets(fake_mixpanel)) == 1, "a joined record needs no retry"
    assert report(tmp_path, "download_update_data")["figures"]["joined_records"] == 1
    assert "1 records joined back from split lines" in runs[0].stdout
    assert day_lines(settings_of(env), END) == fake_mixpanel.events
    assert report(tmp_path, "ingest_data")["figures"]["quarantined_lines"] == 0


def test_lines_that_still_do_not_parse_are_quarantined_by_the_ingest(tmp_path, fake_mixpanel):
    good = a_day_of_events(END, 4)
    fake_mixpanel.events = [good[0], b'{"event": "broken', good[1], b"%%%", *good[2:]]
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1")
    run_all(tmp_path, env)
    rows = table(
        Path(env["MIXPANEL_DB_PATH"]), "SELECT reason, line FROM mixpanel_quarantine ORDER BY 2"
    )
    assert rows == [("invalid_json", "%%%"), ("invalid_json", '{"event": "broken')]
    assert report(tmp_path, "download_update_data")["figures"]["bad_lines"] == 2


def test_a_day_left_empty_by_a_bad_download_is_fetched_again(tmp_path, fake_mixpanel):
    """Older code cached an HTML page (or an empty body) as a complete day; its neighbours
    have data. Those days are fetched again; a day a checked download found empty is not."""
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="6", MIXPANEL_REFRESH_DAYS="0")
    settings = settings_of(env)
    days = settings.window.days
    cache.write_source(settings.cache_dir, settings.cache_source())
    for day in days:
        write_gz(cache.day_path(settings.cache_dir, day), a_day_of_events(day, 2))
    html_day, empty_day, checked_day = days[1], days[3], days[5]
    write_gz(cache.day_path(settings.cache_dir, html_day), [b"<!DOCTYPE html>", b"<html></html>"])
    write_gz(cache.day_path(settings.cache_dir, empty_day), [])
    write_gz(cache.day_path(settings.cache_dir, checked_day), [])
    cache.record_days(settings.cache_dir, {checked_day: {"lines": 0, "records": 0}})
    fake_mixpanel.events = [line for day in days for line in a_day_of_events(day, 3)]
    said: list[str] = []
    result = fetch(settings, said=said)
    assert result.healed == [html_day, empty_day]
    assert [(r["query"]["from_date"], r["query"]["to_date"]) for r in gets(fake_mixpanel)] == [
        (html_day.isoformat(), html_day.isoformat()),
        (empty_day.isoformat(), empty_day.isoformat()),
    ]
    assert len(day_lines(settings, html_day)) == 3 and len(day_lines(settings, empty_day)) == 3
    assert day_lines(settings, checked_day) == []
    assert any("hold no records while the days beside them do" in line for line in said)
    # Healed once: the next run fetches nothing.
    fake_mixpanel.requests.clear()
    assert fetch(settings).healed == [] and gets(fake_mixpanel) == []


# --- 2. Projects made before 2023 -------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "end", "instants"),
    [
        # Los Angeles, UTC-7 until clocks go back on 2024-11-03 at 02:00 (01:xx happens twice:
        # 08:15 UTC is 01:15 PDT, and 09:15 UTC is 01:15 PST, which is read as the first).
        (
            "America/Los_Angeles",
            date(2024, 11, 5),
            [
                "2024-11-02T06:59:59",
                "2024-11-03T08:15:00",
                "2024-11-03T10:15:00",
                "2024-11-04T07:30:00",
                "2024-11-05T23:59:00",
            ],
        ),
        # Berlin, UTC+2 after clocks go forward on 2024-03-31 at 02:00 (02:xx never happens).
        (
            "Europe/Berlin",
            date(2024, 4, 1),
            [
                "2024-03-29T23:30:00",
                "2024-03-31T00:59:59",
                "2024-03-31T01:00:00",
                "2024-03-31T22:30:00",
                "2024-04-01T21:59:59",
            ],
        ),
    ],
    ids=["utc-7-dst-ends", "utc+2-dst-starts"],
)
def test_a_pre_2023_projects_times_are_stored_as_true_utc(
    tmp_path, fake_mixpanel, zone, end, instants
):
    fake_mixpanel.zone = zone
    stamps = [int(datetime.fromisoformat(i).replace(tzinfo=UTC).timestamp()) for i in instants]
    fake_mixpanel.events = [
        sdk_event("app_open", t, device_id="D-9", user_id="u-9", in_ms=n % 2 == 1, seq=n)
        for n, t in enumerate(stamps)
    ]
    env = export_env(
        tmp_path,
        fake_mixpanel,
        MIXPANEL_PROJECT_TIMEZONE=zone,
        MIXPANEL_END_DATE=end.isoformat(),
        MIXPANEL_WINDOW_DAYS="5",
    )
    run_all(tmp_path, env)
    rows = table(
        Path(env["MIXPANEL_DB_PATH"]),
        "SELECT time, event_date, source_day, json_extract(properties, '$.time_project_local') "
        "FROM fact_mixpanel_event ORDER BY time",
    )
    assert [r[0] for r in rows] == stamps
    utc_days = [datetime.fromtimestamp(t, UTC).date().isoformat() for t in stamps]
    assert [r[1] for r in rows] == utc_days
    assert [r[2] for r in rows] == utc_days
    assert all(r[3] is not None for r in rows)  # the exported wall clock is kept
    users_seen = users(env)
    assert users_seen["u-9"][0] == 5
    for request in gets(fake_mixpanel):
        assert request["query"]["to_date"] <= fake_mixpanel.today()


def test_copies_of_one_event_in_the_repeated_hour_count_once(tmp_path, fake_mixpanel):
    """New York, 2023-11-05 01:30 happens twice. Two copies of one purchase (one $insert_id),
    processed 5 s and 90 min later, are one event, as Mixpanel counts it: one revenue."""
    fake_mixpanel.zone = "America/New_York"
    when = int(datetime(2023, 11, 5, 5, 30, tzinfo=UTC).timestamp())  # 01:30 EDT
    copies = []
    for delay in (5, 5400):
        record = json.loads(rc_event("RC Initial purchase", when, "u-1", "pro_yearly", 59.99))
        record["properties"]["mp_processing_time_ms"] = (when + delay) * 1000
        copies.append(json.dumps(record).encode())
    fake_mixpanel.events = copies
    env = export_env(
        tmp_path,
        fake_mixpanel,
        MIXPANEL_PROJECT_TIMEZONE="America/New_York",
        MIXPANEL_END_DATE="2023-11-06",
        MIXPANEL_WINDOW_DAYS="3",
    )
    run_all(tmp_path, env)
    assert users(env)["u-1"][:3] == (1, 59.99, "standard")


@pytest.mark.parametrize("zone", ["Etc/GMT+12", "Pacific/Kiritimati"], ids=["utc-12", "utc+14"])
def test_to_date_is_never_after_today_in_the_projects_zone(tmp_path, fake_mixpanel, zone):
    """Whatever the time of day, the export's 400 "to_date cannot be later than today" (the
    fake refuses it as Mixpanel does) never comes: yesterday UTC is the default END_DATE."""
    fake_mixpanel.zone = zone
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_PROJECT_TIMEZONE=zone)
    env.pop("MIXPANEL_END_DATE")
    env["MIXPANEL_WINDOW_DAYS"] = "3"
    run = run_step("01_download_update_data.py", tmp_path, env)
    assert run.code == 0, run.stderr
    for request in gets(fake_mixpanel):
        assert request["query"]["to_date"] <= fake_mixpanel.today()


def test_an_end_date_after_today_in_the_projects_zone_is_one_line(tmp_path, fake_mixpanel):
    future = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_END_DATE=future)
    run = run_step("01_download_update_data.py", tmp_path, env)
    assert run.code == 1 and run.stderr.count("\n") == 1
    assert f"MIXPANEL_END_DATE={future} is after today in the project's time zone" in run.stderr
    assert fake_mixpanel.requests == []


# --- 3. One user per person across identity merges --------------------------------------------


def _merge_story(fake, env_extra: dict[str, str] | None = None, tmp_path: Path | None = None):
    """A person buys while anonymous (cached under $device:D), identifies two days later."""
    d1, d3 = END - timedelta(days=2), END
    fake.events = [
        sdk_event("app_open", epoch(d1, 9), device_id="D-77"),
        sdk_event("screen_view", epoch(d1, 9, 5), device_id="D-77", screen_name="paywall"),
        rc_event("RC Initial purchase", epoch(d1, 9, 6), "$device:D-77", "pro_yearly", 59.99),
    ]
    fake.profiles = [profile("$device:D-77", "2024-06-28T09:06:00", **{"abi_~campaign_id": "c-1"})]
    env = export_env(
        tmp_path, fake, MIXPANEL_WINDOW_DAYS="3", MIXPANEL_REFRESH_DAYS="1", **(env_extra or {})
    )
    return d1, d3, env


def _identify_on(fake, day: date) -> None:
    fake.merge("$device:D-77", "user-77")
    fake.events += [
        sdk_event(
            "$identify",
            epoch(day, 10),
            device_id="D-77",
            user_id="user-77",
            **{"$anon_distinct_id": "$device:D-77", "$identified_id": "user-77"},
        ),
        sdk_event(
            "app_open",
            epoch(day, 10, 1),
            device_id="D-77",
            user_id="user-77",
            before="$device:D-77",
        ),
        rc_event("RC Non subscription purchase", epoch(day, 10, 2), "user-77", "coins_1500", 49.99),
    ]
    # Updated now: the incremental profile sync asks for what changed since the last one.
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fake.profiles = [profile("user-77", now, **{"$country_code": "CA"})]


def test_one_user_per_person_across_a_merge_between_two_runs(tmp_path, fake_mixpanel):
    _d1, d3, env = _merge_story(fake_mixpanel, tmp_path=tmp_path)
    run_all(tmp_path, env)
    assert set(users(env)) == {"$device:D-77"}
    _identify_on(fake_mixpanel, d3)
    run_all(tmp_path, env)
    assert len(gets(fake_mixpanel)) == 2, "the second run fetched only the newest day"
    after = users(env)
    assert set(after) == {"user-77"}, "the device's cached day joined its person"
    events, revenue, tier, valid, country = after["user-77"]
    assert (events, revenue, tier, valid) == (6, 109.98, "premium", 1)
    assert country == "CA"
    # The exported id stays with each merged event.
    rows = table(
        Path(env["MIXPANEL_DB_PATH"]),
        "SELECT original_distinct_id, json_extract(properties, '$.distinct_id') "
        "FROM fact_mixpanel_event WHERE original_distinct_id IS NOT NULL",
    )
    assert rows == [("$device:D-77", "$device:D-77")] * 3
    identity = report(tmp_path, "ingest_data")["figures"]["identity"]
    assert identity["ids_merged"] == 1 and identity["users_merged_into"] == 1
    # The device's old profile is an alias's: the person's own profile wins.
    assert report(tmp_path, "ingest_data")["figures"]["profiles_merged"] == 1
    products = table(
        Path(env["MIXPANEL_DB_PATH"]),
        "SELECT distinct_id, product_id, valid_lifecycle FROM fact_user_products ORDER BY 2",
    )
    assert products == [("user-77", "coins_1500", 1), ("user-77", "pro_yearly", 1)]

    # Turned off, the ingest gives every row its exported id back.
    off = {**env, "MIXPANEL_IDENTITY_MERGE": "0"}
    runs = run_all(tmp_path, off)
    assert "identity merge is off" in runs[1].stdout
    assert set(users(off)) == {"$device:D-77", "user-77"}
    assert users(off)["user-77"][2] == "standard", "half the revenue: the wrong tier"


def test_a_profile_under_an_alias_joins_its_person(tmp_path, fake_mixpanel):
    _d1, d3, env = _merge_story(fake_mixpanel, tmp_path=tmp_path)
    _identify_on(fake_mixpanel, d3)
    fake_mixpanel.aliases.clear()  # the export still names the first day's events by device
    fake_mixpanel.profiles = [
        profile(
            "$device:D-77",
            "2024-06-28T09:06:00",
            **{"abi_~campaign_id": "c-1", "$country_code": "MX"},
        )
    ]
    run_all(tmp_path, env)
    (user,) = table(
        Path(env["MIXPANEL_DB_PATH"]),
        "SELECT distinct_id, country, abi_campaign_id, has_abi_attribution FROM fact_mixpanel_user",
    )
    assert user == ("user-77", "MX", "c-1", 1)
    assert report(tmp_path, "ingest_data")["figures"]["profiles_merged"] == 1


def test_placeholder_ids_never_merge_people(tmp_path, fake_mixpanel):
    """An SDK bug that sends `$user_id: "undefined"` must not fold every device into one."""
    fake_mixpanel.events = [
        sdk_event("app_open", epoch(END, 9 + n), device_id=f"D-{n}", user_id="undefined")
        for n in range(3)
    ] + [sdk_event("app_open", epoch(END, 15), device_id="D-5", user_id="u-5", before="null")]
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1")
    run_all(tmp_path, env)
    assert report(tmp_path, "ingest_data")["figures"]["identity"]["aliases"] == 2  # D-5 only
    assert set(users(env)) == {"undefined", "u-5"}


def test_a_real_projects_day_from_the_fixture(tmp_path, fake_mixpanel):
    """A hand-written day in the real export's shape: $identify, ms times, RC display names,
    a refund, an integer profile id, an anonymous profile."""
    fake_mixpanel.events = sample_lines("export_2024-06-29.jsonl")
    fake_mixpanel.profiles = json.loads((FIXTURES / "profiles_sample.json").read_text())
    fake_mixpanel.page_size = 1000
    env = export_env(
        tmp_path, fake_mixpanel, MIXPANEL_END_DATE="2024-06-29", MIXPANEL_WINDOW_DAYS="1"
    )
    run_all(tmp_path, env)
    found = users(env)
    assert set(found) == {"user_58213", "90210", "$device:0A1B2C3D-4E5F-4061-8273-9485A6B7C8D9"}
    assert found["user_58213"][:2] == (6, 0.0)  # anonymous events merged by $identify
    assert found["90210"][:2] == (4, 59.99)  # the refund subtracted
    assert found["90210"][4] == "DE"  # from the profile with an integer $distinct_id
    lifecycles = table(
        Path(env["MIXPANEL_DB_PATH"]),
        "SELECT distinct_id, product_id, valid_lifecycle FROM fact_user_products ORDER BY 1, 2",
    )
    assert lifecycles == [
        ("90210", "coins_1500", 1),
        ("90210", "pro_yearly", 1),
        ("user_58213", "pro_monthly_trial7", 1),
    ]
    figures = report(tmp_path, "count_user_events")["figures"]
    assert figures["product_events_of_unknown_kind"] == 0
    assert figures["product_events_by_kind"] == {
        "cancellation": 1,
        "initial_purchase": 1,
        "non_subscription_purchase": 1,
        "trial_started": 1,
    }
    times = table(
        Path(env["MIXPANEL_DB_PATH"]),
        "SELECT time FROM fact_mixpanel_event WHERE event = 'app_open'",
    )
    assert times == [(1719655200,)]  # milliseconds made seconds


# --- 4. Renamed events ------------------------------------------------------------------------


def _lifecycle_events(names: dict[str, str], user: str, day: date) -> list[bytes]:
    return [
        rc_event(names["trial_started"], epoch(day, 9), user, "pro_monthly", 0),
        rc_event(names["trial_converted"], epoch(day, 10), user, "pro_monthly", 9.99),
        rc_event(names["renewal"], epoch(day, 11), user, "pro_monthly", 9.99),
    ]


@pytest.mark.parametrize(
    "names",
    [
        {
            "trial_started": "rc_trial_started_event",
            "trial_converted": "rc_trial_converted_event",
            "renewal": "rc_renewal_event",
        },
        {
            "trial_started": "RC Trial started",
            "trial_converted": "RC Trial converted",
            "renewal": "RC Renewal",
        },
    ],
    ids=["default-names", "display-names"],
)
def test_revenuecat_default_and_display_names_give_the_same_lifecycles(
    tmp_path, fake_mixpanel, names
):
    fake_mixpanel.events = _lifecycle_events(names, "u-1", END)
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1")
    run_all(tmp_path, env)
    assert table(
        Path(env["MIXPANEL_DB_PATH"]),
        "SELECT product_id, valid_lifecycle, revenue_usd FROM fact_user_products",
    ) == [("pro_monthly", 1, 19.98)]


def test_a_projects_own_names_are_mapped_and_unknown_ones_shown(tmp_path, fake_mixpanel):
    own = {
        "trial_started": "Free Trial Began",
        "trial_converted": "Trial Paid",
        "renewal": "Subscription Renewed",
    }
    fake_mixpanel.events = [
        *_lifecycle_events(own, "u-1", END),
        rc_event("Purchase Completed", epoch(END, 12), "u-2", "coins_100", 4.99),
        rc_event("Purchase Completed", epoch(END, 13), "u-2", "coins_100", 4.99),
    ]
    names = tmp_path / "event_names.yaml"
    names.write_text(
        'events:\n  "Free Trial Began": trial_started\n  "Trial Paid": trial_converted\n'
        '  "Subscription Renewed": renewal\n'
    )
    env = export_env(
        tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1", MIXPANEL_EVENT_NAMES_PATH=str(names)
    )
    for script in STEP_SCRIPTS[:4]:
        assert run_step(script, tmp_path, env).code == 0
    step5 = run_step("05_count_user_events.py", tmp_path, env)
    assert step5.code == 0
    assert step5.stderr.startswith(
        "warning: 2 product events have a name of no known lifecycle kind: 'Purchase Completed' (2)"
    )
    assert str(names) in step5.stderr
    figures = report(tmp_path, "count_user_events")["figures"]
    assert figures["unknown_product_event_names"] == {"Purchase Completed": 2}
    assert figures["product_events_by_kind"]["(unknown)"] == 2
    db = Path(env["MIXPANEL_DB_PATH"])
    assert table(db, "SELECT event, kind, mapped_by FROM mixpanel_product_event ORDER BY 1") == [
        ("Free Trial Began", "trial_started", "event_names.yaml"),
        ("Purchase Completed", None, None),
        ("Subscription Renewed", "renewal", "event_names.yaml"),
        ("Trial Paid", "trial_converted", "event_names.yaml"),
    ]
    assert table(db, "SELECT distinct_id, valid_lifecycle FROM fact_user_products ORDER BY 1") == [
        ("u-1", 1),
        ("u-2", 0),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'events:\n  "Trial Began": trial_start\n',
            "maps to 'trial_start', which is no kind (did you mean 'trial_started'?)",
        ),
        ("events: [a, b]\n", "'events' must map event names to kinds"),
        ("event:\n  x: renewal\n", "unknown key 'event'"),
        ("events:\n  x: [renewal]\n", "maps to ['renewal'], which is no kind"),
        ("events: {x: renewal\n", "not valid YAML at line"),
        # Named by MIXPANEL_EVENT_NAMES_PATH but not there (a typo): never ignored.
        (None, "file not found; create it, or unset MIXPANEL_EVENT_NAMES_PATH"),
    ],
)
def test_a_bad_event_names_file_fails_step_5_in_one_line(tmp_path, fake_mixpanel, text, message):
    fake_mixpanel.events = a_day_of_events(END, 2)
    names = tmp_path / "event_names.yaml"
    if text is not None:
        names.write_text(text)
    env = export_env(
        tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1", MIXPANEL_EVENT_NAMES_PATH=str(names)
    )
    for script in STEP_SCRIPTS[:4]:
        assert run_step(script, tmp_path, env).code == 0
    run = run_step("05_count_user_events.py", tmp_path, env)
    assert run.code == 1 and run.stderr.count("\n") == 1
    assert run.stderr.startswith(f"count_user_events failed: {names}: ")
    assert message in run.stderr


# --- 5. Profiles at scale ---------------------------------------------------------------------


def _many_profiles(n: int, last_seen: str = "2024-06-01T00:00:00") -> list[dict]:
    # Every third id an integer, as Engage returns numeric ids.
    return [profile(i if i % 3 == 0 else f"user-{i}", last_seen) for i in range(n)]


def test_after_the_first_sync_only_changed_profiles_are_fetched(tmp_path, fake_mixpanel):
    fake_mixpanel.page_size = 1000
    fake_mixpanel.profiles = _many_profiles(2500)
    settings = settings_of(export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1"))
    first = fetch(settings).profiles
    assert (first.mode, first.complete, first.synced, first.total, first.requests) == (
        "full",
        True,
        2500,
        2500,
        3,
    )
    fake_mixpanel.requests.clear()
    quiet = fetch(settings).profiles
    assert (quiet.mode, quiet.changed, quiet.requests) == ("incremental", 0, 1)
    (request,) = posts(fake_mixpanel)
    assert request["form"]["where"].startswith('properties["$last_seen"] >= "')
    # Two profiles change: the next sync brings just them.
    changed_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fake_mixpanel.profiles[7] = profile("user-7", changed_at, **{"$country_code": "FR"})
    fake_mixpanel.profiles.append(profile("user-new", changed_at))
    fake_mixpanel.requests.clear()
    again = fetch(settings).profiles
    assert (again.changed, again.profiles, again.requests) == (2, 2501, 1)
    stored = {
        str(json.loads(p)["$distinct_id"]): json.loads(p)
        for p in cache.read_lines(cache.profiles_path(settings.cache_dir))
    }
    assert stored["user-7"]["$properties"]["$country_code"] == "FR"
    assert stored["0"]["$distinct_id"] == 0 and "user-new" in stored
    # A full refresh can be asked for.
    fake_mixpanel.requests.clear()
    refresh = fetch(
        settings_of(
            export_env(
                tmp_path,
                fake_mixpanel,
                MIXPANEL_WINDOW_DAYS="1",
                MIXPANEL_PROFILES_FULL_REFRESH="1",
            )
        )
    ).profiles
    assert (refresh.mode, refresh.synced, refresh.requests) == ("full", 2501, 3)


def test_a_first_full_sync_cut_short_resumes_where_it_stopped(tmp_path, fake_mixpanel):
    """Step 1 is killed while page 2 is on its way; the next run asks for page 2 of the same
    session, never for page 0 again, and the report says how far the sync got."""
    fake_mixpanel.page_size = 1000
    fake_mixpanel.profiles = _many_profiles(3500)
    fake_mixpanel.engage_faults = ["ok", "ok", "hang"]
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1")
    settings = settings_of(env)
    proc = step_1_until(tmp_path, env, fake_mixpanel, engage_requests=3)
    try:
        progress = profiles.read_progress(settings.cache_dir)
        assert (progress["fetched"], progress["total"], progress["synced"]) == (2000, 3500, False)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert not cache.profiles_path(settings.cache_dir).exists()
    session = posts(fake_mixpanel)[1]["form"]["session_id"]
    fake_mixpanel.requests.clear()
    run = run_step("01_download_update_data.py", tmp_path, env)
    assert run.code == 0, run.stderr
    pages = [(r["form"]["page"], r["form"].get("session_id")) for r in posts(fake_mixpanel)]
    assert pages == [("2", session), ("3", session)]
    assert "resuming the full sync at page 2 (profiles 2,000 of 3,500)" in run.stdout
    assert "profiles 3,500 of 3,500 (page 3)" in run.stdout
    assert len(cache.read_lines(cache.profiles_path(settings.cache_dir))) == 3500
    sync = report(tmp_path, "download_update_data")["figures"]["profile_sync"]
    assert (sync["mode"], sync["complete"], sync["synced"], sync["fetched"]) == (
        "resumed",
        True,
        3500,
        1500,
    )


def test_a_sync_without_engages_total_pages_to_the_end(tmp_path, fake_mixpanel):
    fake_mixpanel.page_size, fake_mixpanel.omit_total = 2, True
    fake_mixpanel.profiles = _many_profiles(100)
    settings = settings_of(export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1"))
    synced = fetch(settings).profiles
    assert (synced.complete, synced.synced, synced.total, synced.requests) == (True, 100, None, 51)


def test_a_short_page_before_the_total_never_ends_the_sync_as_complete(tmp_path, fake_mixpanel):
    """Page 1 comes back one profile short of 10 while Engage announced 30: the sync goes on
    to the next pages; when they end short of the total, the first sync is not called
    complete but done again."""
    fake_mixpanel.page_size = 10
    fake_mixpanel.profiles = _many_profiles(30)
    fake_mixpanel.engage_faults = ["ok", "shortpage"]
    settings = settings_of(export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1"))
    with pytest.raises(DownloadError, match="Engage's pages ended at 29 of the 30 profiles"):
        fetch(settings)
    assert not cache.profiles_path(settings.cache_dir).exists()
    assert [r["form"]["page"] for r in posts(fake_mixpanel)] == ["0", "1", "2", "3"]
    again = fetch(settings).profiles
    assert (again.complete, again.synced) == (True, 30)
    assert profiles.read_progress(settings.cache_dir)["shortfall"] is None


def test_a_shortfall_that_comes_back_is_taken_and_said_never_blocking(tmp_path, fake_mixpanel):
    """A project whose Engage total stays one above what its pages hold, while it grows: the
    second full sync in a row that ends short is taken (with a warning, on the page too);
    a refresh that ends short keeps the last profiles meanwhile, never failing the step."""
    fake_mixpanel.page_size = 10
    fake_mixpanel.profiles = _many_profiles(30)
    settings = settings_of(export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1"))
    fake_mixpanel.engage_faults = ["ok", "shortpage"]
    with pytest.raises(DownloadError):
        fetch(settings)
    fake_mixpanel.profiles.append(profile("user-new", "2024-06-01T00:00:00"))  # it grows
    fake_mixpanel.engage_faults = ["ok", "shortpage"]
    said: list[str] = []
    taken = fetch(settings, said=said).profiles
    assert (taken.complete, taken.synced, taken.total) == (True, 30, 31)
    assert any("warning: profiles:" in line and "twice in a row" in line for line in said)
    assert profiles.read_progress(settings.cache_dir)["shortfall"] == [30, 31]
    refresh = settings_of(
        export_env(
            tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1", MIXPANEL_PROFILES_FULL_REFRESH="1"
        )
    )
    fake_mixpanel.engage_faults = ["ok", "shortpage"]
    kept = fetch(refresh).profiles
    assert kept.complete and "done again with the next run" in kept.note
    assert len(cache.read_lines(cache.profiles_path(settings.cache_dir))) == 30
    done = fetch(settings).profiles  # the refresh goes on (no setting needed), now whole
    assert (done.synced, done.total) == (31, 31)
    assert profiles.read_progress(settings.cache_dir)["shortfall"] is None


def test_changes_that_do_not_all_come_are_asked_for_again(tmp_path, fake_mixpanel):
    fake_mixpanel.page_size = 10
    fake_mixpanel.profiles = _many_profiles(5)
    settings = settings_of(export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1"))
    fetch(settings)
    since = profiles.read_progress(settings.cache_dir)["changed_since"]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fake_mixpanel.profiles += [profile(f"new-{n}", now) for n in range(6)]
    fake_mixpanel.engage_faults = ["shortpage"]
    said: list[str] = []
    short = fetch(settings, said=said).profiles
    assert short.changed == 5 and "Engage announced 6 and sent 5" in short.note
    assert profiles.read_progress(settings.cache_dir)["changed_since"] == since
    whole = fetch(settings).profiles
    assert whole.changed == 6 and "announced" not in whole.note  # the same span, all of it


def test_an_outage_while_resuming_keeps_the_pages_saved_so_far(tmp_path, fake_mixpanel):
    """A first sync was cut at page 2; the next run meets 5xx answers there: it fails, in one
    line, keeping pages 0 and 1; the run after that still goes on from page 2."""
    fake_mixpanel.page_size = 1000
    fake_mixpanel.profiles = _many_profiles(3500)
    settings = settings_of(
        export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1", MIXPANEL_TIME_BUDGET="600")
    )
    clock = FakeClock()
    _sent_before(settings, "engage", 58, clock.now)  # pages 0 and 1 fit this hour
    assert fetch(settings, clock).profiles.synced == 2000
    clock.now += 3600
    fake_mixpanel.engage_faults = ["500"] * 5
    with pytest.raises(DownloadError, match="engage page 2 failed after 5 attempts"):
        fetch(settings, clock)
    progress = profiles.read_progress(settings.cache_dir)
    assert (progress["fetched"], progress["full_in_progress"]) == (2000, True)
    fake_mixpanel.requests.clear()
    clock.now += 3600
    done = fetch(settings, clock).profiles
    assert (done.mode, done.complete, done.synced) == ("resumed", True, 3500)
    assert [r["form"]["page"] for r in posts(fake_mixpanel)] == ["2", "3"]


@pytest.mark.parametrize(
    "state",
    [
        {"full": {"started_at": "2024-07-01T00:00:00Z", "next_page": "abc", "fetched": 1}},
        {"full": {"started_at": 5, "next_page": 3, "fetched": "many", "total": "x"}},
        {"full": {"next_page": 2, "fetched": 2000}},
        {"full": ["not", "a", "mapping"], "synced": "yes", "profiles": -4},
        {"synced": True, "changed_since": "yesterday"},
    ],
)
def test_a_damaged_profile_state_starts_the_sync_again_never_crashes(
    tmp_path, fake_mixpanel, state
):
    fake_mixpanel.page_size = 1000
    fake_mixpanel.profiles = _many_profiles(1500)
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1")
    path = profiles.state_path(settings_of(env).cache_dir)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(state))
    run = run_step("01_download_update_data.py", tmp_path, env)
    assert run.code == 0, run.stderr
    assert len(cache.read_lines(cache.profiles_path(settings_of(env).cache_dir))) == 1500
    assert profiles.read_progress(settings_of(env).cache_dir)["synced"] is True


def test_a_full_sync_whose_session_expired_starts_again(tmp_path, fake_mixpanel):
    fake_mixpanel.page_size = 1000
    fake_mixpanel.profiles = _many_profiles(2500)
    settings = settings_of(
        export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1", MIXPANEL_TIME_BUDGET="600")
    )
    clock = FakeClock()
    # Other runs used 59 of the hour's 60 queries: page 0 fits, page 1 not within the budget.
    _sent_before(settings, "engage", 59, clock.now)
    first = fetch(settings, clock)
    assert first.profiles.synced == 1000 and not first.profiles.complete
    fake_mixpanel.expire_sessions()
    clock.now += 3600  # an hour later: the limit allows the rest
    said: list[str] = []
    again = fetch(settings, clock, said)
    assert again.profiles.complete and again.profiles.synced == 2500
    assert any("starting the full sync again from page 0" in line for line in said)
    assert [r["form"]["page"] for r in posts(fake_mixpanel)] == ["0", "1", "0", "1", "2"]


def test_an_unfinished_first_sync_fails_step_1_saying_how_far_it_got(tmp_path, fake_mixpanel):
    fake_mixpanel.page_size = 1000
    fake_mixpanel.profiles = _many_profiles(2500)
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1", MIXPANEL_TIME_BUDGET="5")
    settings = settings_of(env)
    # 59 engage queries in the last hour (another run): one more fits, then an hour's wait.
    _sent_before(settings, "engage", 59, time.time() - 60)
    run = run_step("01_download_update_data.py", tmp_path, env)
    assert run.code == 1 and run.stderr.count("\n") == 1
    assert "check profiles_synced: the first full profile sync is not done yet" in run.stderr
    assert "profiles 1,000 of 2,500" in run.stderr and "run the step again" in run.stderr
    figures = report(tmp_path, "download_update_data")["figures"]["profile_sync"]
    assert (figures["synced"], figures["total"], figures["complete"]) == (1000, 2500, False)


def test_step_1s_timeout_fits_a_first_full_sync_of_a_large_project():
    """500,000 profiles are 500 Engage pages at 60 an hour: over 8 hours."""
    import yaml

    spec = yaml.safe_load((STEPS_DIR.parent / "mixpanel_pipeline.yaml").read_text())
    step = next(s for s in spec["steps"] if s["name"] == "download_update_data")
    assert step["timeout"] >= 500 / 60 * 3600 + 600


# --- 6. Rate limits ---------------------------------------------------------------------------


def test_a_429_storm_without_retry_after_backs_off_towards_the_hourly_window(
    tmp_path, fake_mixpanel
):
    fake_mixpanel.events = a_day_of_events(END, 3)
    fake_mixpanel.export_faults = ["429-bare"] * 8
    env = export_env(
        tmp_path,
        fake_mixpanel,
        MIXPANEL_WINDOW_DAYS="1",
        MIXPANEL_TIME_BUDGET="36000",
        MIXPANEL_MAX_RETRY_WAIT="3600",
    )
    clock, said = FakeClock(), []
    fetch(settings_of(env), clock, said)
    assert clock.waits[:8] == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    waits = [line for line in said if "HTTP 429 rate limited without Retry-After" in line]
    assert len(waits) == 8 and "waiting 3600s" in waits[-1]
    assert len(day_lines(settings_of(env), END)) == 3


def test_a_429_storm_gives_up_only_when_the_budget_runs_out(tmp_path, fake_mixpanel):
    fake_mixpanel.export_faults = ["429-bare"] * 50
    env = export_env(
        tmp_path,
        fake_mixpanel,
        MIXPANEL_WINDOW_DAYS="1",
        MIXPANEL_TIME_BUDGET="7200",
        MIXPANEL_MAX_RETRY_WAIT="3600",
    )
    clock = FakeClock()
    with pytest.raises(DownloadError) as info:
        fetch(settings_of(env), clock)
    # 60 + 120 + ... + 1920 = 3780 s; the next doubling does not fit, so it is shortened to
    # what is left: the budget is used to its end, not given up with half of it left.
    assert clock.waits == [60, 120, 240, 480, 960, 1920, 3419]
    assert "one more try, which the step's time budget of 7200 s does not allow" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_429_storm_in_a_real_step_prints_each_wait_and_ends_in_one_line(tmp_path, fake_mixpanel):
    fake_mixpanel.export_faults = ["429-bare"] * 50
    env = export_env(
        tmp_path,
        fake_mixpanel,
        MIXPANEL_WINDOW_DAYS="1",
        MIXPANEL_TIME_BUDGET="2",
        MIXPANEL_MAX_RETRY_WAIT="0.3",
    )
    run = run_step("01_download_update_data.py", tmp_path, env)
    assert run.code == 1 and run.stderr.count("\n") == 1
    assert "rate limited without Retry-After" in run.stderr
    assert "which the step's time budget of 2 s does not allow" in run.stderr
    printed = [x for x in run.stdout.splitlines() if "rate limited" in x and "waiting" in x]
    assert len(printed) >= 2
    # Every answered 429 was waited for, but for the last, when the budget ran out.
    assert len(gets(fake_mixpanel)) - len(printed) in (0, 1)


def test_pacing_holds_across_processes_through_the_request_log(tmp_path, fake_mixpanel):
    """Another process sent 60 exports within the hour: this run sends none, and says why."""
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1", MIXPANEL_TIME_BUDGET="3")
    settings = settings_of(env)
    _sent_before(settings, "export", 60, time.time() - 30)
    run = run_step("01_download_update_data.py", tmp_path, env)
    assert run.code == 1 and run.stderr.count("\n") == 1
    assert "the next request must wait" in run.stderr
    assert "for Mixpanel's limit of 60 export queries per hour" in run.stderr
    assert fake_mixpanel.requests == []
    # And what this process sends, the next one counts.
    log = json.loads(cache.request_log_path(settings.cache_dir).read_text())
    assert len(log["export"]) == 60


# --- 7. The source never changes silently -----------------------------------------------------


def test_a_run_without_credentials_after_an_export_run_changes_nothing(tmp_path, fake_mixpanel):
    fake_mixpanel.events = a_day_of_events(END, 4)
    fake_mixpanel.profiles = [profile("u-1", "2024-06-30T08:00:00")]
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1")
    run_all(tmp_path, env)
    settings = settings_of(env)
    db = Path(env["MIXPANEL_DB_PATH"])
    cached = {p: p.read_bytes() for p in settings.cache_dir.rglob("*") if p.is_file()}
    before = table(db, "SELECT * FROM fact_mixpanel_user")

    cron = {k: v for k, v in env.items() if k not in CREDENTIALS}  # an unset variable in cron
    for script in STEP_SCRIPTS[:2]:
        run = run_step(script, tmp_path, cron)
        assert run.code == 1 and run.stderr.count("\n") == 1, script
        assert "holds data of Mixpanel project 12345" in run.stderr
        assert "would replace it with demo data" in run.stderr
        assert "MIXPANEL_ALLOW_SOURCE_CHANGE=1" in run.stderr
    assert {p: p.read_bytes() for p in cached} == cached
    assert table(db, "SELECT * FROM fact_mixpanel_user") == before

    on_purpose = {**cron, "MIXPANEL_ALLOW_SOURCE_CHANGE": "1"}
    run_all(tmp_path, on_purpose)
    assert "u-1" not in users(on_purpose), "no row of the project is left among demo data"
    source = table(db, "SELECT value FROM mixpanel_meta WHERE key = 'source'")[0][0]
    assert json.loads(source)["source"] == "demo"


def test_a_run_naming_another_project_is_refused_too(tmp_path, fake_mixpanel):
    fake_mixpanel.events = a_day_of_events(END, 2)
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1")
    run_all(tmp_path, env)
    run = run_step("01_download_update_data.py", tmp_path, {**env, "MIXPANEL_PROJECT_ID": "777"})
    assert run.code == 1
    assert "these settings name another project, 777 (MIXPANEL_PROJECT_ID)" in run.stderr


def test_with_the_legacy_secret_another_projects_secret_is_refused_too(tmp_path, fake_mixpanel):
    """Without MIXPANEL_PROJECT_ID the legacy secret alone names the project: a run with
    another secret, or with a service account, cannot be told to be the same project."""
    fake_mixpanel.events = a_day_of_events(END, 2)
    legacy = legacy_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1")
    run_all(tmp_path, legacy)
    other_secret = {**legacy, "MIXPANEL_API_SECRET": "legacy-secret-of-b"}
    run = run_step("01_download_update_data.py", tmp_path, other_secret)
    assert run.code == 1
    assert "these settings use another legacy project secret (MIXPANEL_API_SECRET)" in run.stderr
    assert "legacy-secret-of" not in run.stderr + run.stdout
    service_account = {**export_env(tmp_path, fake_mixpanel), "MIXPANEL_WINDOW_DAYS": "1"}
    run = run_step("01_download_update_data.py", tmp_path, service_account)
    assert run.code == 1
    assert "it cannot be told whether these settings name the same project" in run.stderr
    for path in [*tmp_path.rglob("*.json"), *tmp_path.rglob("*.db")]:
        assert b"legacy-secret-of" not in path.read_bytes(), path


# --- 8. No tracebacks from the client ---------------------------------------------------------


def test_a_redirect_loop_is_a_one_line_download_error(tmp_path, fake_mixpanel):
    env = export_env(
        tmp_path,
        fake_mixpanel,
        MIXPANEL_WINDOW_DAYS="1",
        MIXPANEL_EXPORT_URL=f"{fake_mixpanel.url}/loop",
    )
    run = run_step("01_download_update_data.py", tmp_path, env)
    assert run.code == 1 and run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert "redirected too many times (a redirect loop)" in run.stderr


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("lots", "malformed field page_size='lots'"),
        ("noresults", "has no 'results' list"),
        ("badsession", "malformed field session_id=17"),
        ("nondict", "holds a result that is no profile: 'a profile that is not an object'"),
        ("nosession", "is full but has no session_id to ask for the next page"),
        ("wrongpage", "engage answer for page 0 is page 5; Mixpanel's paging went wrong"),
    ],
)
def test_a_malformed_engage_answer_is_a_one_line_download_error(
    tmp_path, fake_mixpanel, fault, message
):
    fake_mixpanel.engage_faults = [fault]
    fake_mixpanel.profiles = _many_profiles(7)
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1")
    run = run_step("01_download_update_data.py", tmp_path, env)
    assert run.code == 1 and run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert message in run.stderr
    assert not cache.profiles_path(settings_of(env).cache_dir).exists(), "never called complete"


# --- 9. Credentials ---------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["401", "403", "auth400"])
@pytest.mark.parametrize("api", ["export", "engage"])
def test_a_rejected_credential_stops_at_once_naming_the_variables(
    tmp_path, fake_mixpanel, fault, api
):
    (fake_mixpanel.export_faults if api == "export" else fake_mixpanel.engage_faults).append(fault)
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1")
    run = run_step("01_download_update_data.py", tmp_path, env)
    assert run.code == 1 and run.stderr.count("\n") == 1
    assert "Mixpanel rejected the credentials" in run.stderr
    assert (
        "check MIXPANEL_SERVICE_ACCOUNT_USERNAME and MIXPANEL_SERVICE_ACCOUNT_SECRET" in run.stderr
    )
    assert CREDENTIALS["MIXPANEL_SERVICE_ACCOUNT_SECRET"] not in run.stderr + run.stdout
    sent = gets(fake_mixpanel) if api == "export" else posts(fake_mixpanel)
    assert len(sent) == 1, "no retry with a rejected credential"
    if fault == "auth400":
        assert "Unable to authenticate request" in run.stderr


def test_no_secret_reaches_the_log_or_the_report(tmp_path, fake_mixpanel):
    fake_mixpanel.events = a_day_of_events(END, 2)
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1")
    runs = run_all(tmp_path, env)
    secret = CREDENTIALS["MIXPANEL_SERVICE_ACCOUNT_SECRET"]
    assert all(secret not in r.stdout + r.stderr for r in runs)
    for path in (tmp_path / "reports").rglob("*.json"):
        assert secret not in path.read_text()
    for path in Path(env["MIXPANEL_CACHE_DIR"]).rglob("*.json"):
        assert secret not in path.read_text()
    assert (
        secret
        not in gzip.decompress(
            cache.profiles_path(Path(env["MIXPANEL_CACHE_DIR"])).read_bytes()
        ).decode()
    )


# --- the identity merge's edges ---------------------------------------------------------------


def test_a_repeat_the_merge_dropped_comes_back_when_the_merge_is_off(tmp_path, fake_mixpanel):
    """The same purchase was exported under the device and the user (same event, time and
    $insert_id): merged, it is one event; with the merge off, both rows are back."""
    when = epoch(END, 12)
    purchase = json.loads(rc_event("RC Initial purchase", when, "u1", "pro_yearly", 59.99))
    as_device = json.loads(json.dumps(purchase))
    as_device["properties"]["distinct_id"] = "$device:D1"
    fake_mixpanel.events = [
        json.dumps(purchase).encode(),
        json.dumps(as_device).encode(),
        sdk_event("app_open", epoch(END, 13), device_id="D1", user_id="u1"),
    ]
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1")
    run_all(tmp_path, env)
    assert set(users(env)) == {"u1"} and users(env)["u1"][:2] == (2, 59.99)
    assert (
        report(tmp_path, "ingest_data")["figures"]["days"][END.isoformat()]["merged_duplicates"]
        == 1
    )
    off = {**env, "MIXPANEL_IDENTITY_MERGE": "0", "MIXPANEL_REFRESH_DAYS": "0"}
    run_all(tmp_path, off)
    assert users(off) == {
        "u1": (2, 59.99, "standard", 1, "US"),
        "$device:D1": (1, 59.99, "standard", 1, None),
    }
    # And on again: one person, once more, and the day read only when it must be.
    runs = run_all(tmp_path, {**env, "MIXPANEL_REFRESH_DAYS": "0"})
    assert set(users(env)) == {"u1"}
    assert "0 ingested, 1 unchanged" in runs[1].stdout


def test_a_placeholder_device_id_never_merges_people(tmp_path, fake_mixpanel):
    fake_mixpanel.events = [
        sdk_event("app_open", epoch(END, 9), user_id="alice", before="$device:undefined"),
        sdk_event(
            "$identify",
            epoch(END, 10),
            user_id="bob",
            **{"$anon_distinct_id": "$device:null", "$identified_id": "bob"},
        ),
        json.dumps(
            {
                "event": "app_open",
                "properties": {
                    "time": epoch(END, 11),
                    "distinct_id": "$device:undefined",
                    "$insert_id": "x1",
                },
            }
        ).encode(),
    ]
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1")
    run_all(tmp_path, env)
    assert set(users(env)) == {"alice", "bob", "$device:undefined"}
    assert report(tmp_path, "ingest_data")["figures"]["identity"]["aliases"] == 0


@pytest.mark.parametrize(
    ("zone", "exported"),
    [("America/Los_Angeles", 253402300799000), ("Asia/Tokyo", -62135596800)],
    ids=["year-9999-in-ms", "year-1"],
)
def test_times_at_the_calendars_ends_never_crash_a_pre_2023_projects_download(
    tmp_path, fake_mixpanel, zone, exported
):
    """A corrupt `time` that a UTC project stores as it is (flagged later as a future event,
    or quarantined) does the same for a project in its own zone: no conversion, no crash."""
    odd = json.dumps(
        {
            "event": "app_open",
            "properties": {"time": exported, "distinct_id": "u-1", "$insert_id": "odd"},
        }
    ).encode()
    fake_mixpanel.events = [*a_day_of_events(END, 2), odd]
    fake_mixpanel.zone = zone
    # Every line in every answer, in the project's wall clock where the fake can convert it.
    fake_mixpanel.export_body = lambda _f, _t: b"".join(  # type: ignore[method-assign]
        fake_mixpanel.exported(line)[1] + b"\n" for line in fake_mixpanel.events
    )
    env = export_env(
        tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1", MIXPANEL_PROJECT_TIMEZONE=zone
    )
    run = run_step("01_download_update_data.py", tmp_path, env)
    assert run.code == 0, run.stderr
    kept = [json.loads(x)["properties"]["$insert_id"] for x in day_lines(settings_of(env), END)]
    # Its UTC day lies outside the days asked for: like any such line of a widened request,
    # it is left to the request of its own day (there is none).
    normal = [json.loads(x)["properties"]["$insert_id"] for x in fake_mixpanel.events[:2]]
    assert kept == normal


def test_two_downloads_into_one_cache_never_run_at_once(tmp_path, fake_mixpanel):
    """A cron job and a click: the second download stops at once in one line, touching
    nothing of the first's; once the first is gone (even killed), the next one runs."""
    fake_mixpanel.page_size = 1000
    fake_mixpanel.profiles = _many_profiles(2500)
    fake_mixpanel.engage_faults = ["ok", "hang"]
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1")
    first = step_1_until(tmp_path, env, fake_mixpanel, engage_requests=2)
    try:
        state_before = profiles.state_path(settings_of(env).cache_dir).read_bytes()
        second = run_step("01_download_update_data.py", tmp_path, env)
        assert second.code == 1 and second.stderr.count("\n") == 1
        assert (
            f"another download into {settings_of(env).cache_dir} is running (pid {first.pid})"
            in second.stderr
        )
        assert profiles.state_path(settings_of(env).cache_dir).read_bytes() == state_before
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    third = run_step("01_download_update_data.py", tmp_path, env)
    assert third.code == 0, third.stderr
    assert len(cache.read_lines(cache.profiles_path(settings_of(env).cache_dir))) == 2500


def test_a_body_ending_in_an_error_object_twice_is_never_taken_as_whole(tmp_path, fake_mixpanel):
    """`{"error": ...}` as the last line is Mixpanel saying the export stopped, however often
    it comes back the same: only a last line that is no JSON at all may be a damaged record."""
    fake_mixpanel.events = a_day_of_events(END, 3)
    fake_mixpanel.export_body = lambda _f, _t: b"".join(  # type: ignore[method-assign]
        [*(line + b"\n" for line in fake_mixpanel.events), b'{"error": "export stopped"}\n']
    )
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1")
    run = run_step("01_download_update_data.py", tmp_path, env)
    assert run.code == 1 and "failed after 5 attempts" in run.stderr
    assert not cache.day_path(settings_of(env).cache_dir, END).exists()


@pytest.mark.parametrize("revenue", ["Infinity", "-inf", "nan", "1e999"])
def test_a_revenue_that_is_no_finite_number_counts_as_none(tmp_path, fake_mixpanel, revenue):
    record = json.loads(rc_event("RC Renewal", epoch(END, 9), "u-1", "pro_monthly", 9.99))
    odd = json.loads(json.dumps(record))
    odd["properties"].update(revenue=revenue, **{"$insert_id": "odd"})
    fake_mixpanel.events = [json.dumps(record).encode(), json.dumps(odd).encode()]
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1")
    run_all(tmp_path, env)
    assert users(env)["u-1"][:2] == (2, 9.99)
    assert report(tmp_path, "count_user_events")["figures"]["revenue_usd"] == 9.99


def test_an_unfinished_ingest_leaves_steps_3_to_6_waiting(tmp_path, fake_mixpanel):
    """Engage is down: step 1 fails, step 2 fails its profiles check, and the later steps
    refuse to run on an ingest without profiles (no user would keep its ABI attribution)."""
    fake_mixpanel.events = a_day_of_events(END, 3)
    fake_mixpanel.engage_faults = ["500"] * 5
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1")
    assert run_step("01_download_update_data.py", tmp_path, env).code == 1
    ingest_run = run_step("02_ingest_data.py", tmp_path, env)
    assert ingest_run.code == 1 and "check profiles_cached" in ingest_run.stderr
    later = run_step("03_set_abi_attribution.py", tmp_path, env)
    assert later.code == 1 and "step ingest_data has not run on the current data" in later.stderr


def test_a_lifecycle_of_events_of_no_known_kind_is_false_not_null(tmp_path, fake_mixpanel):
    fake_mixpanel.events = [rc_event("Purchase Completed", epoch(END, 9), "u-1", "coins", 1.0)]
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1")
    run_all(tmp_path, env)
    rows = table(Path(env["MIXPANEL_DB_PATH"]), "SELECT valid_lifecycle FROM fact_user_products")
    assert rows == [(0,)]


def test_a_damaged_profiles_file_is_one_line_and_heals(tmp_path, fake_mixpanel):
    fake_mixpanel.events = a_day_of_events(END, 2)
    fake_mixpanel.page_size = 1000
    fake_mixpanel.profiles = _many_profiles(5)
    env = export_env(tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1")
    run_all(tmp_path, env)
    path = cache.profiles_path(settings_of(env).cache_dir)
    path.write_bytes(path.read_bytes()[:-9])  # cut short
    ingest_run = run_step("02_ingest_data.py", tmp_path, env)
    assert ingest_run.code == 1 and ingest_run.stderr.count("\n") == 1
    assert f"{path}: a damaged cache file" in ingest_run.stderr
    # Step 1 meets it when changes are to be merged in: one line, and the next run syncs all.
    fake_mixpanel.profiles.append(
        profile("user-new", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    )
    first = run_step("01_download_update_data.py", tmp_path, env)
    assert first.code == 1 and "the next run downloads every profile again" in first.stderr
    again = run_step("01_download_update_data.py", tmp_path, env)
    assert again.code == 0, again.stderr
    assert len(cache.read_lines(path)) == 6
    assert run_step("02_ingest_data.py", tmp_path, env).code == 0


def test_moving_from_the_legacy_secret_to_a_service_account_keeps_the_data(tmp_path, fake_mixpanel):
    """What the deprecation warning says to do: the project id beside the secret for one run
    (recorded, nothing fetched again), then the service account: the same project."""
    fake_mixpanel.events = a_day_of_events(END, 3)
    legacy = legacy_env(
        tmp_path, fake_mixpanel, MIXPANEL_WINDOW_DAYS="3", MIXPANEL_REFRESH_DAYS="1"
    )
    run_all(tmp_path, legacy)
    fake_mixpanel.requests.clear()
    run_all(tmp_path, {**legacy, "MIXPANEL_PROJECT_ID": "12345"})
    assert len(gets(fake_mixpanel)) == 1, "only the newest day again: nothing was emptied"
    fake_mixpanel.requests.clear()
    service_account = {
        **export_env(tmp_path, fake_mixpanel),
        "MIXPANEL_WINDOW_DAYS": "3",
        "MIXPANEL_REFRESH_DAYS": "1",
    }
    runs = run_all(tmp_path, service_account)
    assert len(gets(fake_mixpanel)) == 1 and "removed its" not in runs[0].stdout
    assert users(service_account)["u-1"][0] == 3


def test_another_legacy_secret_is_refused_even_beside_the_same_project_id(tmp_path, fake_mixpanel):
    """A legacy secret names its project whatever MIXPANEL_PROJECT_ID says beside it."""
    fake_mixpanel.events = a_day_of_events(END, 2)
    legacy = legacy_env(
        tmp_path, fake_mixpanel, MIXPANEL_PROJECT_ID="111", MIXPANEL_WINDOW_DAYS="1"
    )
    run_all(tmp_path, legacy)
    other = {**legacy, "MIXPANEL_API_SECRET": "legacy-secret-of-b"}
    for script in STEP_SCRIPTS[:2]:
        run = run_step(script, tmp_path, other)
        assert run.code == 1, script
        assert "these settings use another legacy project secret" in run.stderr
