"""The one exception family of the data layer: every instance is a user-facing, one-line message."""

from __future__ import annotations


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
