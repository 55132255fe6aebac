"""Pipeline settings, read from MIXPANEL_* environment variables at call time.

A bad value raises `SettingsError` naming the variable, so a step fails with one clear line.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from database.errors import SettingsError, brief

DEFAULT_EXPORT_URL = "https://data.mixpanel.com/api/2.0/export"
DEFAULT_ENGAGE_URL = "https://mixpanel.com/api/query/engage"
DEFAULT_DB_PATH = "database/mixpanel_data.db"
DEFAULT_CACHE_DIR = "data_cache/mixpanel"
DEFAULT_REPORTS_DIR = "reports/mixpanel_pipeline"
SOURCES = ("export", "demo")
# Without MIXPANEL_TIME_BUDGET or a step timeout (a run by hand), step 1 stops after this.
DEFAULT_TIME_BUDGET = 3600.0
# What the step keeps back of its timeout to save its progress before it would be killed.
TIMEOUT_MARGIN = 120.0
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Window:
    """The analysis window: `start` to `end` inclusive, whole UTC days."""

    start: date
    end: date

    @property
    def days(self) -> list[date]:
        """Every day of the window, oldest first."""
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]

    @property
    def start_ts(self) -> int:
        """Epoch seconds of the window's first instant (UTC)."""
        return int(
            datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC).timestamp()
        )

    @property
    def end_ts(self) -> int:
        """Epoch seconds just after the window's last instant: events at or after it are future."""
        return (
            int(datetime(self.end.year, self.end.month, self.end.day, tzinfo=UTC).timestamp())
            + 86400
        )

    @classmethod
    def ending(cls, end: date, days: int) -> Window:
        """The `days` days ending on `end`, inclusive."""
        return cls(start=end - timedelta(days=days - 1), end=end)


@dataclass(frozen=True)
class Settings:
    """Everything a step needs to know, validated once."""

    source: str
    project_id: str | None
    service_account_username: str | None
    service_account_secret: str | None
    api_secret: str | None
    export_url: str
    engage_url: str
    db_path: Path
    cache_dir: Path
    end_date: date
    window_days: int
    refresh_days: int
    demo_users: int
    # Projects made before 2023 read the export's from/to dates in the project's time zone.
    project_timezone: str
    max_retry_wait: float
    tiers_path: Path | None
    reports_dir: Path
    # Seconds step 1 may spend (waits for rate limits included); None: no limit.
    time_budget: float | None = DEFAULT_TIME_BUDGET
    identity_merge: bool = True
    event_names_path: Path | None = None
    profiles_full_refresh: bool = False
    allow_source_change: bool = False

    @property
    def window(self) -> Window:
        """The window these settings ask for."""
        return Window.ending(self.end_date, self.window_days)

    @property
    def auth(self) -> tuple[str, str] | None:
        """HTTP Basic credentials: the service account, else the legacy secret as user name."""
        if self.service_account_username and self.service_account_secret:
            return (self.service_account_username, self.service_account_secret)
        if self.api_secret:
            return (self.api_secret, "")
        return None

    def cache_source(self) -> dict[str, object]:
        """Where cached files come from: files of another source are not reused. The demo
        places its users relative to END_DATE, so a new END_DATE is another demo source."""
        if self.source == "demo":
            return {
                "source": "demo",
                "end_date": self.end_date.isoformat(),
                "demo_users": self.demo_users,
            }
        source: dict[str, object] = {
            "source": self.source,
            # 2: times of projects made before 2023 are stored as true UTC
            "format": 2,
            "project_id": self.project_id,
            "export_url": self.export_url,
            "engage_url": self.engage_url,
            "project_timezone": self.project_timezone,
        }
        if self.credential_kind == "api_secret":
            # The legacy secret names its project: a one-way fingerprint of it (the secret
            # itself is never written) tells projects apart where no project id is set.
            digest = hashlib.sha256(f"mixpanel-project-secret:{self.api_secret}".encode())
            source["secret_fingerprint"] = digest.hexdigest()[:16]
        return source

    @property
    def utc_project(self) -> bool:
        """True when the export's dates and times are UTC (projects made since 2023)."""
        zone = ZoneInfo(self.project_timezone)
        return all(
            zone.utcoffset(datetime(year, month, 1)) == timedelta(0)
            for year in (2000, 2024)
            for month in (1, 7)
        )

    @property
    def credential_kind(self) -> str | None:
        """`service_account`, `api_secret` (the legacy project secret) or None."""
        if self.service_account_username and self.service_account_secret:
            return "service_account"
        return "api_secret" if self.api_secret else None

    def describe(self) -> dict[str, object]:
        """The settings as JSON-ready values, without secrets, for reports."""
        return {
            "source": self.source,
            "project_id": self.project_id,
            "credentials": self.credential_kind,
            "export_url": self.export_url,
            "engage_url": self.engage_url,
            "db_path": str(self.db_path),
            "cache_dir": str(self.cache_dir),
            "end_date": self.end_date.isoformat(),
            "window_days": self.window_days,
            "refresh_days": self.refresh_days,
            "demo_users": self.demo_users,
            "project_timezone": self.project_timezone,
            "time_budget_s": self.time_budget,
            "identity_merge": self.identity_merge,
            "event_names_path": str(self.event_names_path) if self.event_names_path else None,
            "profiles_full_refresh": self.profiles_full_refresh,
            "allow_source_change": self.allow_source_change,
        }


def _text(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = _text(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(
            f"{name}={raw!r} is not a whole number; set it to e.g. {default}"
        ) from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={value} is out of range; use a value from {low} to {high}")
    return value


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    value = _text(env, name) or default
    if not value.startswith(("http://", "https://")):
        raise SettingsError(f"{name}={brief(value)} is not an http(s) URL; e.g. {default}")
    if "@" in value.split("/")[2]:
        # user:pass@host would reach reports and messages; credentials have variables.
        raise SettingsError(
            f"{name} must not carry credentials (user:password@host); set "
            "MIXPANEL_SERVICE_ACCOUNT_USERNAME and MIXPANEL_SERVICE_ACCOUNT_SECRET instead"
        )
    return value


def _end_date(env: Mapping[str, str], today: date) -> date:
    raw = _text(env, "MIXPANEL_END_DATE")
    if raw is None:
        return today - timedelta(days=1)
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise SettingsError(
            f"MIXPANEL_END_DATE={raw!r} is not a date; use YYYY-MM-DD, e.g. 2024-06-30"
        ) from None


def _timezone(env: Mapping[str, str]) -> str:
    raw = _text(env, "MIXPANEL_PROJECT_TIMEZONE") or "UTC"
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError, OSError, UnicodeError):
        # (a folder of the zone database, "America", or a name too long for a file name)
        raise SettingsError(
            f"MIXPANEL_PROJECT_TIMEZONE={brief(raw)} is not a time zone name; use the one in your "
            "Mixpanel project settings (e.g. America/Los_Angeles), or UTC (projects made since "
            "2023)"
        ) from None
    return raw


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _text(env, name)
    if raw is None:
        return default
    if raw.lower() in TRUE_WORDS:
        return True
    if raw.lower() in FALSE_WORDS:
        return False
    raise SettingsError(f"{name}={raw!r} is neither on nor off; use 1 or 0")


def _seconds(env: Mapping[str, str], name: str, low: float, high: float) -> float | None:
    raw = _text(env, name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:  # (nan compares false)
        raise SettingsError(f"{name}={raw!r} is not a number of seconds from {low:g} to {high:g}")
    return value


def _time_budget(env: Mapping[str, str]) -> float | None:
    budget = _seconds(env, "MIXPANEL_TIME_BUDGET", 1, 30 * 86400)
    if budget is not None:
        return budget
    # Run by the orchestrator with a timeout: stop in time to save what was fetched.
    timeout = _seconds(env, "PIPELINE_STEP_TIMEOUT", 0, float("inf"))
    if timeout:
        return max(timeout - TIMEOUT_MARGIN, timeout / 2)
    return DEFAULT_TIME_BUDGET


def _path(
    env: Mapping[str, str],
    name: str,
    default: str,
    *,
    folder: bool,
    base_dir: Path | None = None,
) -> Path:
    """A path setting that must name a file (or a folder), if anything is there yet;
    relative to `base_dir` when given, else to the current directory."""
    raw = _text(env, name) or default
    try:
        path = Path(raw).expanduser()
    except RuntimeError:  # ~someone/ of a user this machine does not know
        raise SettingsError(
            f"{name}={brief(raw)} starts with the home folder of an unknown user"
        ) from None
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    try:
        if folder and path.exists() and not path.is_dir():
            raise SettingsError(f"{name}={str(path)!r} is a file; it must name a folder")
        if not folder and path.is_dir():
            raise SettingsError(f"{name}={str(path)!r} is a folder; it must name a file")
        # The folders it would be made in: the nearest one that exists must be a folder.
        above = next((p for p in path.parents if p.exists()), None)
    except OSError as exc:  # a name too long, say
        raise SettingsError(
            f"{name}={brief(raw)} cannot be used as a path ({exc.strerror})"
        ) from None
    if above is not None and not above.is_dir():
        raise SettingsError(f"{name}={str(path)!r} lies under {str(above)!r}, which is a file")
    return path


def load_settings(
    env: Mapping[str, str] | None = None,
    *,
    today: date | None = None,
    base_dir: Path | None = None,
) -> Settings:
    """Read and validate the MIXPANEL_* variables (from `os.environ` unless given).

    The one place that reads them: the steps and the /tiers page both call it. Relative
    paths are relative to `base_dir` (the steps' working folder), else the current one."""
    env = os.environ if env is None else env
    today = today or datetime.now(UTC).date()

    project_id = _text(env, "MIXPANEL_PROJECT_ID")
    if project_id is not None and not project_id.isdigit():
        raise SettingsError(
            f"MIXPANEL_PROJECT_ID={project_id!r} is not a number; copy the project id "
            "from your Mixpanel project settings"
        )
    username = _text(env, "MIXPANEL_SERVICE_ACCOUNT_USERNAME")
    secret = _text(env, "MIXPANEL_SERVICE_ACCOUNT_SECRET")
    if (username is None) != (secret is None):
        missing = (
            "MIXPANEL_SERVICE_ACCOUNT_SECRET"
            if secret is None
            else ("MIXPANEL_SERVICE_ACCOUNT_USERNAME")
        )
        raise SettingsError(
            f"{missing} is not set; a service account needs both user name and secret"
        )
    api_secret = _text(env, "MIXPANEL_API_SECRET")
    has_credential = username is not None or api_secret is not None

    source = _text(env, "MIXPANEL_SOURCE")
    if source is None:
        source = "export" if project_id and has_credential else "demo"
    elif source.lower() not in SOURCES:
        raise SettingsError(f"MIXPANEL_SOURCE={source!r} is not one of: {', '.join(SOURCES)}")
    source = source.lower()
    if source == "export":
        if not has_credential:
            raise SettingsError(
                "MIXPANEL_SOURCE=export needs credentials: set MIXPANEL_SERVICE_ACCOUNT_USERNAME "
                "and MIXPANEL_SERVICE_ACCOUNT_SECRET (or the legacy MIXPANEL_API_SECRET)"
            )
        if username is not None and project_id is None:
            raise SettingsError(
                "MIXPANEL_PROJECT_ID is not set; a service account needs the project id"
            )

    window_days = _int(env, "MIXPANEL_WINDOW_DAYS", 90, 1, 3650)
    end_date = _end_date(env, today)
    if end_date.toordinal() - window_days < 1 or end_date == date.max:
        raise SettingsError(
            f"MIXPANEL_END_DATE={end_date.isoformat()} with MIXPANEL_WINDOW_DAYS={window_days} "
            "leaves the calendar; use a real day, e.g. yesterday's"
        )
    max_retry_wait = _seconds(env, "MIXPANEL_MAX_RETRY_WAIT", 0, 86400)
    tiers = _text(env, "MIXPANEL_TIERS_PATH")
    names = _text(env, "MIXPANEL_EVENT_NAMES_PATH")
    at = {"base_dir": base_dir}
    db_path = _path(env, "MIXPANEL_DB_PATH", DEFAULT_DB_PATH, folder=False, **at)
    cache_dir = _path(env, "MIXPANEL_CACHE_DIR", DEFAULT_CACHE_DIR, folder=True, **at)
    tiers_path = _path(env, "MIXPANEL_TIERS_PATH", "", folder=False, **at) if tiers else None
    names_path = _path(env, "MIXPANEL_EVENT_NAMES_PATH", "", folder=False, **at) if names else None
    project_timezone = _timezone(env)
    if source == "export":
        zone_today = datetime.now(ZoneInfo(project_timezone)).date()
        if end_date > max(zone_today, today):
            raise SettingsError(
                f"MIXPANEL_END_DATE={end_date.isoformat()} is after today in the project's time "
                f"zone ({zone_today.isoformat()}, {project_timezone}); the export has no data "
                "for it yet: leave it unset (yesterday) or set an earlier day"
            )

    return Settings(
        source=source,
        project_id=project_id,
        service_account_username=username,
        service_account_secret=secret,
        api_secret=api_secret,
        export_url=_url(env, "MIXPANEL_EXPORT_URL", DEFAULT_EXPORT_URL),
        engage_url=_url(env, "MIXPANEL_ENGAGE_URL", DEFAULT_ENGAGE_URL),
        db_path=db_path,
        cache_dir=cache_dir,
        end_date=end_date,
        window_days=window_days,
        refresh_days=_int(env, "MIXPANEL_REFRESH_DAYS", 3, 0, 3650),
        project_timezone=project_timezone,
        demo_users=_int(env, "MIXPANEL_DEMO_USERS", 2000, 1, 10_000_000),
        max_retry_wait=3600.0 if max_retry_wait is None else max_retry_wait,
        tiers_path=tiers_path,
        reports_dir=Path(DEFAULT_REPORTS_DIR)
        if base_dir is None
        else base_dir / DEFAULT_REPORTS_DIR,
        time_budget=_time_budget(env),
        identity_merge=_flag(env, "MIXPANEL_IDENTITY_MERGE", True),
        event_names_path=names_path,
        profiles_full_refresh=_flag(env, "MIXPANEL_PROFILES_FULL_REFRESH", False),
        allow_source_change=_flag(env, "MIXPANEL_ALLOW_SOURCE_CHANGE", False),
    )
