"""The one exception family of the data layer: every instance is a user-facing, one-line message."""

from __future__ import annotations

import reprlib

_BRIEF = reprlib.Repr()
_BRIEF.maxstring = _BRIEF.maxother = 60
_BRIEF.maxlist = _BRIEF.maxdict = _BRIEF.maxtuple = _BRIEF.maxset = 4
_BRIEF.maxlevel = 2


def brief(value: object) -> str:
    """A value's repr for a one-line message, however big or deep the value is."""
    return _BRIEF.repr(value)


class PipelineError(Exception):
    """A problem the user can fix (bad setting, missing input, rejected credentials)."""


class SettingsError(PipelineError):
    """An environment variable holds a value we cannot use."""


class MissingDataError(PipelineError):
    """An input an earlier step should have produced is not there (database, cache, step run)."""


class CredentialsError(PipelineError):
    """Mixpanel rejected the credentials (HTTP 401 or 403)."""


class DownloadError(PipelineError):
    """A Mixpanel request failed for good, after the retries it deserved."""


class ConfigError(PipelineError):
    """A configuration file (tiers.yaml) is missing a key or holds a bad value."""


class SourceChangeError(PipelineError):
    """A run would replace data of a Mixpanel project by demo data or another project's."""


class RequestRefused(DownloadError):
    """Mixpanel refused a request for good (an HTTP 4xx other than credentials or 429)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class CacheBusyError(PipelineError):
    """Another download is writing into the same cache folder."""


class CacheDamagedError(MissingDataError):
    """A file of the download cache cannot be read (cut short, not gzip)."""
