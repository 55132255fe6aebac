"""Settings: defaults, the source choice, and one clear line for every bad value."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from mixpanel_helpers import base_env, run_step

from database.errors import SettingsError
from database.settings import Window, load_settings
from mixpanel_source.download import days_to_download, group_ranges


def test_defaults():
    settings = load_settings({}, today=date(2024, 7, 1))
    assert settings.source == "demo"
    assert settings.end_date == date(2024, 6, 30)
    assert settings.window == Window(date(2024, 4, 2), date(2024, 6, 30))
    assert len(settings.window.days) == 90
    assert settings.refresh_days == 3 and settings.demo_users == 2000
    assert settings.db_path == Path("database/mixpanel_data.db")
    assert settings.cache_dir == Path("data_cache/mixpanel")
    assert settings.export_url == "https://data.mixpanel.com/api/2.0/export"
    assert settings.engage_url == "https://mixpanel.com/api/query/engage"


def test_window_bounds_are_utc_days():
    window = Window.ending(date(2024, 6, 30), 2)
    assert window.start_ts == 1719619200  # 2024-06-29T00:00:00Z
    assert window.end_ts == 1719792000  # 2024-07-01T00:00:00Z


def test_source_defaults_to_export_with_project_and_credential():
    env = {"MIXPANEL_PROJECT_ID": "1", "MIXPANEL_API_SECRET": "s"}
    assert load_settings(env).source == "export"
    assert load_settings(env).auth == ("s", "")
    env = {
        "MIXPANEL_PROJECT_ID": "1",
        "MIXPANEL_SERVICE_ACCOUNT_USERNAME": "u",
        "MIXPANEL_SERVICE_ACCOUNT_SECRET": "p",
    }
    assert load_settings(env).auth == ("u", "p")
    assert load_settings({"MIXPANEL_API_SECRET": "s"}).source == "demo"
    assert load_settings({**env, "MIXPANEL_SOURCE": "demo"}).source == "demo"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"MIXPANEL_SOURCE": "csv"}, "MIXPANEL_SOURCE"),
        ({"MIXPANEL_SOURCE": "export"}, "MIXPANEL_SOURCE=export needs credentials"),
        ({"MIXPANEL_END_DATE": "30/06/2024"}, "MIXPANEL_END_DATE"),
        ({"MIXPANEL_WINDOW_DAYS": "ninety"}, "MIXPANEL_WINDOW_DAYS"),
        ({"MIXPANEL_WINDOW_DAYS": "0"}, "MIXPANEL_WINDOW_DAYS"),
        ({"MIXPANEL_REFRESH_DAYS": "-1"}, "MIXPANEL_REFRESH_DAYS"),
        ({"MIXPANEL_DEMO_USERS": "2k"}, "MIXPANEL_DEMO_USERS"),
        ({"MIXPANEL_PROJECT_ID": "my-project"}, "MIXPANEL_PROJECT_ID"),
        ({"MIXPANEL_EXPORT_URL": "data.mixpanel.com"}, "MIXPANEL_EXPORT_URL"),
        ({"MIXPANEL_SERVICE_ACCOUNT_USERNAME": "u"}, "MIXPANEL_SERVICE_ACCOUNT_SECRET"),
        (
            {
                "MIXPANEL_SOURCE": "export",
                "MIXPANEL_SERVICE_ACCOUNT_USERNAME": "u",
                "MIXPANEL_SERVICE_ACCOUNT_SECRET": "p",
            },
            "MIXPANEL_PROJECT_ID",
        ),
        ({"MIXPANEL_MAX_RETRY_WAIT": "soon"}, "MIXPANEL_MAX_RETRY_WAIT"),
    ],
)
def test_bad_values_name_the_variable(env, variable):
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    assert variable in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("script", ["01_download_update_data.py", "02_ingest_data.py"])
def test_a_step_with_a_bad_value_prints_one_line(tmp_path, script):
    run = run_step(script, tmp_path, base_env(tmp_path, MIXPANEL_WINDOW_DAYS="ninety"))
    assert run.code == 1
    assert run.stderr.count("\n") == 1
    assert "MIXPANEL_WINDOW_DAYS='ninety' is not a whole number" in run.stderr
    assert "Traceback" not in run.stderr


def test_missing_days_plus_refresh_days():
    window = Window.ending(date(2024, 6, 30), 10)
    covered = {day: True for day in window.days}
    covered[date(2024, 6, 22)] = False
    todo = days_to_download(window, covered, refresh_days=3)
    assert todo == [date(2024, 6, 22), date(2024, 6, 28), date(2024, 6, 29), date(2024, 6, 30)]
    assert days_to_download(window, covered, refresh_days=0) == [date(2024, 6, 22)]


def test_requests_cover_at_most_ten_consecutive_days():
    start = date(2024, 1, 1)
    days = [start + timedelta(days=i) for i in range(23)] + [date(2024, 3, 1)]
    assert group_ranges(days) == [
        (start, date(2024, 1, 10)),
        (date(2024, 1, 11), date(2024, 1, 20)),
        (date(2024, 1, 21), date(2024, 1, 23)),
        (date(2024, 3, 1), date(2024, 3, 1)),
    ]


def test_paths_of_the_wrong_kind_name_the_variable(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    cases = [
        ({"MIXPANEL_DB_PATH": str(tmp_path)}, f"MIXPANEL_DB_PATH={str(tmp_path)!r} is a folder"),
        ({"MIXPANEL_CACHE_DIR": str(a_file)}, f"MIXPANEL_CACHE_DIR={str(a_file)!r} is a file"),
        ({"MIXPANEL_TIERS_PATH": str(tmp_path)}, "MIXPANEL_TIERS_PATH="),
    ]
    for env, message in cases:
        with pytest.raises(SettingsError) as info:
            load_settings(env)
        assert str(info.value).startswith(message) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"MIXPANEL_PROJECT_TIMEZONE": "America"},
            "MIXPANEL_PROJECT_TIMEZONE='America' is not a time zone",
        ),
        ({"MIXPANEL_PROJECT_TIMEZONE": "a" * 300}, "MIXPANEL_PROJECT_TIMEZONE='aaaa"),
        ({"MIXPANEL_PROJECT_TIMEZONE": "../../etc/passwd"}, "is not a time zone name"),
        (
            {"MIXPANEL_END_DATE": "0001-01-01"},
            "MIXPANEL_END_DATE=0001-01-01 with MIXPANEL_WINDOW_DAYS=90 leaves the calendar",
        ),
        ({"MIXPANEL_END_DATE": "9999-12-31"}, "leaves the calendar"),
        (
            {"MIXPANEL_CACHE_DIR": "~nosuchuser-x/cache"},
            "starts with the home folder of an unknown user",
        ),
        (
            {"MIXPANEL_DB_PATH": "~nosuchuser-x/m.db"},
            "MIXPANEL_DB_PATH='~nosuchuser-x/m.db' starts with",
        ),
        (
            {"MIXPANEL_IDENTITY_MERGE": "maybe"},
            "MIXPANEL_IDENTITY_MERGE='maybe' is neither on nor off",
        ),
        ({"MIXPANEL_TIME_BUDGET": "-5"}, "MIXPANEL_TIME_BUDGET='-5' is not a number of seconds"),
        ({"MIXPANEL_TIME_BUDGET": "nan"}, "MIXPANEL_TIME_BUDGET='nan' is not a number of seconds"),
        (
            {"MIXPANEL_EXPORT_URL": "https://me:s3cret@data.mixpanel.com/api/2.0/export"},
            "MIXPANEL_EXPORT_URL must not carry credentials (user:password@host)",
        ),
    ],
)
def test_hostile_values_are_one_line_too(env, message):
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert len(str(info.value)) < 400


def test_paths_under_a_file_or_that_cannot_be_opened_are_one_line(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    for name in ("MIXPANEL_CACHE_DIR", "MIXPANEL_DB_PATH"):
        with pytest.raises(SettingsError, match=f"{name}=.* lies under .*a_file', which is a file"):
            load_settings({name: str(a_file / "below")})
    run = run_step("02_ingest_data.py", tmp_path, base_env(tmp_path, MIXPANEL_DB_PATH="/proc/m.db"))
    assert run.code == 1 and run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert "database /proc/m.db cannot be opened" in run.stderr
