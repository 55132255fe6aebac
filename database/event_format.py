"""Reading times out of raw export lines `{"event": ..., "properties": {"time": ...}}`.

Step 1 splits an export into days by them (mixpanel_source.download), the ingest stores them
(staging.py): both read a time the same way.
"""

from __future__ import annotations

from datetime import date

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
# Exports made with time_in_ms=true carry milliseconds; no real event is 3,000 years ahead.
MS_THRESHOLD = 100_000_000_000
# The seconds of years 1 to 9999, the days a `date` can hold.
_FIRST_SECOND = (date(1, 1, 1).toordinal() - _EPOCH_ORDINAL) * 86400
_LAST_SECOND = (date(9999, 12, 31).toordinal() - _EPOCH_ORDINAL + 1) * 86400 - 1


def event_seconds(value: object) -> int | None:
    """A `properties.time` value as whole UTC epoch seconds, or None if it is not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    seconds = int(value)
    if abs(seconds) >= MS_THRESHOLD:
        seconds //= 1000
    if not _FIRST_SECOND <= seconds <= _LAST_SECOND:
        return None  # outside the calendar (1e20, say): a bad time, not a crash
    return seconds


def utc_day(seconds: int) -> date:
    """The UTC calendar day of an epoch second."""
    return date.fromordinal(_EPOCH_ORDINAL + seconds // 86400)
