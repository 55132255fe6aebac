"""The real HTTP client and step 1 against a Mixpanel-like server on 127.0.0.1."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import date, timedelta
from pathlib import Path

import pytest
from mixpanel_helpers import END, base_env, event_line, run_step, ts

from database.errors import CredentialsError, DownloadError, SettingsError, SourceChangeError
from mixpanel_source import cache, download, profiles
from mixpanel_source.client import MixpanelClient


def _client(settings, waits: list[float]) -> MixpanelClient:
    return MixpanelClient(settings, sleep=waits.append, log=lambda _line: None)


def _export_settings(make_settings, fake, **extra):
    values = {
        "MIXPANEL_PROJECT_ID": "12345",
        "MIXPANEL_SERVICE_ACCOUNT_USERNAME": "sa.user",
        "MIXPANEL_SERVICE_ACCOUNT_SECRET": "s3cret",
        "MIXPANEL_EXPORT_URL": f"{fake.url}/api/2.0/export",
        "MIXPANEL_ENGAGE_URL": f"{fake.url}/api/query/engage",
        "MIXPANEL_WINDOW_DAYS": "12",
    }
    return make_settings(**{**values, **extra})


def _raw_lines(records) -> list[bytes]:
    return [line for line, _record in records]


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_export_sends_auth_params_and_gzip_then_splits_days(make_settings, fake_mixpanel):
    """Service-account auth, project_id/from/to params, gzip; lines land in their UTC day."""
    first = END - timedelta(days=11)
    fake_mixpanel.events = [
        event_line("app_open", "a", ts(first, 0, 0, 5), "i1"),
        event_line("app_open", "b", ts(first + timedelta(days=1), 23, 59, 59), "i2"),
        event_line("app_open", "c", ts(END, 10), "i3"),
    ]
    fake_mixpanel.profiles = [{"$distinct_id": "a", "$properties": {"$country_code": "DE"}}]
    settings = _export_settings(make_settings, fake_mixpanel)
    waits: list[float] = []

    result = download.download(
        settings, client_factory=lambda s: _client(s, waits), log=lambda _line: None
    )

    exports = [r for r in fake_mixpanel.requests if r["method"] == "GET"]
    assert [(r["query"]["from_date"], r["query"]["to_date"]) for r in exports] == [
        (first.isoformat(), (first + timedelta(days=9)).isoformat()),
        ((first + timedelta(days=10)).isoformat(), END.isoformat()),
    ]
    for request in fake_mixpanel.requests:
        assert request["query"]["project_id"] == "12345"
        assert request["headers"]["authorization"] == _basic("sa.user", "s3cret")
    assert "gzip" in exports[0]["headers"]["accept-encoding"]
    assert all(result.coverage_after.values())
    assert cache.read_lines(cache.day_path(settings.cache_dir, first))[0].startswith(b'{"event"')
    assert len(cache.read_lines(cache.day_path(settings.cache_dir, first + timedelta(days=1)))) == 1
    # A day without events still gets its (empty) file, so it counts as covered.
    assert cache.read_lines(cache.day_path(settings.cache_dir, first + timedelta(days=5))) == []
    profiles = cache.read_lines(cache.profiles_path(settings.cache_dir))
    assert [json.loads(p)["$distinct_id"] for p in profiles] == ["a"]


def test_legacy_secret_is_the_user_name_with_empty_password(make_settings, fake_mixpanel):
    settings = make_settings(
        MIXPANEL_SOURCE="export",
        MIXPANEL_API_SECRET="legacy-secret",
        MIXPANEL_EXPORT_URL=f"{fake_mixpanel.url}/export",
        MIXPANEL_ENGAGE_URL=f"{fake_mixpanel.url}/engage",
        MIXPANEL_WINDOW_DAYS="1",
    )
    download.download(settings, client_factory=lambda s: _client(s, []), log=lambda _l: None)
    assert fake_mixpanel.requests
    for request in fake_mixpanel.requests:
        assert request["headers"]["authorization"] == _basic("legacy-secret", "")
        assert "project_id" not in request["query"]


def test_engage_pages_with_session_id_until_a_short_page(make_settings, fake_mixpanel):
    fake_mixpanel.profiles = [{"$distinct_id": f"u{i}", "$properties": {}} for i in range(7)]
    fake_mixpanel.page_size = 3
    settings = _export_settings(make_settings, fake_mixpanel)
    with _client(settings, []) as client:
        synced = profiles.sync_profiles(settings, client, log=lambda _line: None)
    lines = cache.read_lines(cache.profiles_path(settings.cache_dir))
    assert [json.loads(p)["$distinct_id"] for p in lines] == [f"u{i}" for i in range(7)]
    assert (synced.complete, synced.synced, synced.total, synced.requests) == (True, 7, 7, 3)
    posts = [r for r in fake_mixpanel.requests if r["method"] == "POST"]
    assert [r["form"].get("page") for r in posts] == ["0", "1", "2"]
    session = posts[1]["form"]["session_id"]
    assert [r["form"].get("session_id") for r in posts] == [None, session, session]


def test_429_honours_retry_after_and_500_is_retried(make_settings, fake_mixpanel):
    fake_mixpanel.events = [event_line("app_open", "a", ts(END), "i1")]
    fake_mixpanel.export_faults = ["429", "500"]
    fake_mixpanel.retry_after = "7"
    settings = _export_settings(make_settings, fake_mixpanel)
    waits: list[float] = []
    with _client(settings, waits) as client:
        lines = client.export(END, END, _raw_lines)
    assert lines == [fake_mixpanel.events[0]]
    assert 7.0 in waits  # the server's Retry-After
    assert len([r for r in fake_mixpanel.requests if r["method"] == "GET"]) == 3


def test_retry_after_is_capped_by_max_retry_wait(make_settings, fake_mixpanel):
    fake_mixpanel.export_faults = ["429"]
    fake_mixpanel.retry_after = "3600"
    settings = _export_settings(make_settings, fake_mixpanel, MIXPANEL_MAX_RETRY_WAIT="0.5")
    waits: list[float] = []
    with _client(settings, waits) as client:
        client.export(END, END, _raw_lines)
    assert 0.5 in waits and 3600.0 not in waits


@pytest.mark.parametrize("fault", ["cut", "badgzip"])
def test_cut_response_leaves_no_cache_file(make_settings, fake_mixpanel, fault):
    fake_mixpanel.events = [event_line("app_open", "a", ts(END), f"i{n}") for n in range(500)]
    fake_mixpanel.export_faults = [fault] * 5
    settings = _export_settings(make_settings, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1")
    with pytest.raises(DownloadError, match="failed after 5 attempts"):
        download.download(settings, client_factory=lambda s: _client(s, []), log=lambda _l: None)
    events_dir = cache.events_dir(settings.cache_dir)
    assert not cache.day_path(settings.cache_dir, END).exists()
    assert list(events_dir.iterdir()) == [] if events_dir.exists() else True


def test_cut_response_then_success_writes_the_whole_day(make_settings, fake_mixpanel):
    fake_mixpanel.events = [event_line("app_open", "a", ts(END), f"i{n}") for n in range(50)]
    fake_mixpanel.export_faults = ["cut"]
    settings = _export_settings(make_settings, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1")
    download.download(settings, client_factory=lambda s: _client(s, []), log=lambda _l: None)
    assert len(cache.read_lines(cache.day_path(settings.cache_dir, END))) == 50


def test_a_body_of_several_gzip_members_is_read_whole(make_settings, fake_mixpanel):
    fake_mixpanel.events = [event_line("app_open", "a", ts(END), f"i{n}") for n in range(40)]
    fake_mixpanel.export_faults = ["members"]
    settings = _export_settings(make_settings, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1")
    download.download(settings, client_factory=lambda s: _client(s, []), log=lambda _l: None)
    assert len(cache.read_lines(cache.day_path(settings.cache_dir, END))) == 40


def test_401_stops_with_a_message_about_credentials(make_settings, fake_mixpanel):
    fake_mixpanel.export_faults = ["401"]
    settings = _export_settings(make_settings, fake_mixpanel)
    with pytest.raises(CredentialsError, match=r"rejected the credentials \(HTTP 401"):
        download.download(settings, client_factory=lambda s: _client(s, []), log=lambda _l: None)
    assert len(fake_mixpanel.requests) == 1  # no retry on bad credentials


def test_step_1_script_reports_bad_credentials_in_one_line(tmp_path: Path, fake_mixpanel):
    fake_mixpanel.export_faults = ["401"]
    env = base_env(
        tmp_path,
        MIXPANEL_PROJECT_ID="12345",
        MIXPANEL_API_SECRET="wrong",
        MIXPANEL_EXPORT_URL=f"{fake_mixpanel.url}/export",
        MIXPANEL_ENGAGE_URL=f"{fake_mixpanel.url}/engage",
    )
    run = run_step("01_download_update_data.py", tmp_path, env)
    assert run.code == 1
    # The legacy secret's deprecation warning, then the one line of the failure.
    warning, failure = run.stderr.strip().split("\n")
    assert warning.startswith("warning: MIXPANEL_API_SECRET is Mixpanel's legacy project secret")
    assert "retired on 2027-03-03" in warning
    assert failure.startswith("download_update_data failed: Mixpanel rejected the credentials")
    assert "check MIXPANEL_API_SECRET, MIXPANEL_PROJECT_ID" in failure
    assert "Traceback" not in run.stderr
    report = json.loads(
        (tmp_path / "reports/mixpanel_pipeline/download_update_data.json").read_text()
    )
    assert report["status"] == "failed" and "credentials" in report["error"]


def test_only_missing_and_recent_days_are_downloaded(make_settings, fake_mixpanel):
    settings = _export_settings(make_settings, fake_mixpanel, MIXPANEL_REFRESH_DAYS="2")
    days = settings.window.days
    cache.write_source(settings.cache_dir, settings.cache_source())
    for day in days[:5] + days[6:]:
        cache.write_lines_atomic(cache.day_path(settings.cache_dir, day), [])
    result = download.download(
        settings, client_factory=lambda s: _client(s, []), log=lambda _l: None
    )
    assert sorted(result.downloaded) == [days[5], days[-2], days[-1]]
    exports = [r["query"] for r in fake_mixpanel.requests if r["method"] == "GET"]
    assert [(q["from_date"], q["to_date"]) for q in exports] == [
        (days[5].isoformat(), days[5].isoformat()),
        (days[-2].isoformat(), days[-1].isoformat()),
    ]
    assert gzip.decompress(cache.day_path(settings.cache_dir, days[-1]).read_bytes()) == b""


def test_event_after_the_requested_range_stays_in_the_last_day(make_settings, fake_mixpanel):
    """A skewed clock's event after END_DATE is kept in END_DATE's file for step 4."""
    late = event_line("app_open", "skew", ts(END + timedelta(days=1), 3), "late")
    fake_mixpanel.events = [late]
    settings = _export_settings(make_settings, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1")
    # The fake filters by day like Mixpanel; make it return the line for END's request.
    fake_mixpanel.export_body = lambda _f, _t: late + b"\n"  # type: ignore[method-assign]
    download.download(settings, client_factory=lambda s: _client(s, []), log=lambda _l: None)
    assert cache.read_lines(cache.day_path(settings.cache_dir, END)) == [late]
    assert not cache.day_path(settings.cache_dir, END + timedelta(days=1)).exists()
    assert date.fromisoformat(END.isoformat()) == settings.window.end


def test_demo_files_are_never_taken_for_the_real_projects_data(make_settings, fake_mixpanel):
    """Demo data first (no credentials), then credentials: the demo files are dropped and the
    whole window comes from Mixpanel; a second project does the same again."""
    demo = make_settings(MIXPANEL_WINDOW_DAYS="12")
    download.download(demo, log=lambda _l: None)
    assert all(cache.coverage(demo.cache_dir, demo.window.days).values())
    fake_mixpanel.events = [event_line("app_open", "real", ts(END, 10), "r1")]
    real = _export_settings(make_settings, fake_mixpanel, MIXPANEL_REFRESH_DAYS="1")
    said: list[str] = []
    result = download.download(real, client_factory=lambda s: _client(s, []), log=said.append)
    assert result.cleared > 12
    assert "removed its" in said[0] and "demo data" in said[0] and "project 12345" in said[0]
    assert sorted(result.downloaded) == real.window.days, "every day comes from the project"
    lines = [
        line
        for day in real.window.days
        for line in cache.read_lines(cache.day_path(real.cache_dir, day))
    ]
    assert [json.loads(line)["properties"]["distinct_id"] for line in lines] == ["real"]
    again = download.download(real, client_factory=lambda s: _client(s, []), log=lambda _l: None)
    assert again.cleared == 0 and sorted(again.downloaded) == [END]
    # Another project's data never replaces this one's by accident ...
    other = _export_settings(make_settings, fake_mixpanel, MIXPANEL_PROJECT_ID="999")
    with pytest.raises(SourceChangeError, match="holds data of Mixpanel project 12345"):
        download.download(other, client_factory=lambda s: _client(s, []), log=lambda _l: None)
    assert sorted(cache.coverage(real.cache_dir, real.window.days).values()) == [True] * 12
    # ... only on purpose.
    other = _export_settings(
        make_settings, fake_mixpanel, MIXPANEL_PROJECT_ID="999", MIXPANEL_ALLOW_SOURCE_CHANGE="1"
    )
    moved = download.download(other, client_factory=lambda s: _client(s, []), log=lambda _l: None)
    assert moved.cleared > 0 and sorted(moved.downloaded) == other.window.days


@pytest.mark.parametrize("zone", ["Etc/GMT+7", "Etc/GMT-2"], ids=["utc-7", "utc+2"])
def test_a_project_in_its_own_time_zone_gets_whole_utc_days(make_settings, fake_mixpanel, zone):
    """A project made before 2023 reads from/to in its time zone. Each UTC day must hold
    exactly its own events: none lost at the day's edges, none of the next day filed under
    END_DATE (where they would look like events from the future)."""
    fake_mixpanel.zone = zone
    before = END - timedelta(days=1)
    fake_mixpanel.events = [
        event_line("app_open", "a", ts(before, 23, 30), "b1"),
        event_line("app_open", "a", ts(END, 0, 30), "e1"),
        event_line("app_open", "a", ts(END, 23, 30), "e2"),
        event_line("app_open", "a", ts(END + timedelta(days=1), 0, 30), "next"),
    ]
    settings = _export_settings(
        make_settings, fake_mixpanel, MIXPANEL_WINDOW_DAYS="2", MIXPANEL_PROJECT_TIMEZONE=zone
    )
    download.download(settings, client_factory=lambda s: _client(s, []), log=lambda _l: None)
    (request,) = [r["query"] for r in fake_mixpanel.requests if r["method"] == "GET"]
    assert (request["from_date"], request["to_date"]) == (
        (before - timedelta(days=1)).isoformat(),
        (END + timedelta(days=1)).isoformat(),
    )

    def lines(day):
        return [
            json.loads(x)["properties"]
            for x in cache.read_lines(cache.day_path(settings.cache_dir, day))
        ]

    assert [p["$insert_id"] for p in lines(before)] == ["b1"]
    assert [p["$insert_id"] for p in lines(END)] == ["e1", "e2"]
    # The cache holds true UTC times; the exported wall-clock value is kept beside them.
    assert [p["time"] for p in lines(END)] == [ts(END, 0, 30), ts(END, 23, 30)]
    offset = 3600 * (-7 if zone == "Etc/GMT+7" else 2)
    assert [p["time_project_local"] for p in lines(END)] == [
        ts(END, 0, 30) + offset,
        ts(END, 23, 30) + offset,
    ]


def test_an_unknown_project_time_zone_is_one_clear_line(make_settings):
    with pytest.raises(SettingsError) as info:
        make_settings(MIXPANEL_PROJECT_TIMEZONE="Mars/Olympus")
    assert str(info.value).startswith("MIXPANEL_PROJECT_TIMEZONE='Mars/Olympus' is not a time zone")


def test_a_cache_fetched_again_for_another_time_zone_says_what_changed(
    make_settings, fake_mixpanel
):
    settings = _export_settings(make_settings, fake_mixpanel, MIXPANEL_WINDOW_DAYS="1")
    download.download(settings, client_factory=lambda s: _client(s, []), log=lambda _l: None)
    zoned = _export_settings(
        make_settings,
        fake_mixpanel,
        MIXPANEL_WINDOW_DAYS="1",
        MIXPANEL_PROJECT_TIMEZONE="America/Los_Angeles",
    )
    said: list[str] = []
    download.download(zoned, client_factory=lambda s: _client(s, []), log=said.append)
    assert "project_timezone UTC then, America/Los_Angeles now" in said[0]
    assert "removed its" in said[0]
