"""Reading times out of raw export lines `{"event": ..., "properties": {"time": ...}}`.

The ingest parses lines in SQL (see staging.py); this is for splitting an export by day.
"""

from __future__ import annotations

from datetime import date

import orjson

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


def line_day(line: bytes) -> date | None:
    """The UTC day of a raw line's `properties.time`, or None when the line has no usable time."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    props = obj.get("properties") if isinstance(obj, dict) else None
    seconds = event_seconds(props.get("time")) if isinstance(props, dict) else None
    return None if seconds is None else utc_day(seconds)
