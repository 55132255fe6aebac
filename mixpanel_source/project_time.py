"""The export's `time` of a project made before 2023: the project's wall clock, made true UTC.

Such projects export `time` as seconds of the project's local wall clock (as if it were UTC),
so an event at 23:30 in Los Angeles carries the epoch value of 23:30 UTC. `ProjectClock`
turns it into the true UTC instant, DST-aware. A wall-clock time that happens twice (the hour
when clocks go back) is read as its first occurrence: always the same instant for the same
reading, so two copies of one event (Mixpanel counts it once) still fold into one, whatever
their processing times. (Placing each copy by its own `mp_processing_time_ms` split such
copies an hour apart and counted their revenue twice.) A wall-clock time that never happens
(clocks went forward) keeps the offset from before the change.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

_EPOCH = datetime(1970, 1, 1)


class ProjectClock:
    """Converts local wall-clock epoch seconds of one time zone to true UTC epoch seconds."""

    def __init__(self, zone_name: str) -> None:
        self.zone = ZoneInfo(zone_name)
        # local hour -> its one UTC offset (seconds), or None when a change of offset falls in it
        self._hours: dict[int, int | None] = {}

    def _offset(self, local: int, fold: int) -> int:
        naive = _EPOCH + timedelta(seconds=local)
        offset = naive.replace(tzinfo=self.zone, fold=fold).utcoffset()
        return int(offset.total_seconds()) if offset is not None else 0

    def _hour_offset(self, hour: int) -> int | None:
        if hour not in self._hours:
            start, end = hour * 3600, hour * 3600 + 3599
            offsets = {self._offset(t, fold) for t in (start, end) for fold in (0, 1)}
            self._hours[hour] = offsets.pop() if len(offsets) == 1 else None
        return self._hours[hour]

    def to_utc(self, local: int) -> int:
        """True UTC epoch seconds of a local wall-clock reading `local`."""
        offset = self._hour_offset(local // 3600)
        if offset is not None:
            return local - offset
        # A change of offset in this hour: which readings exist, and when.
        naive = _EPOCH + timedelta(seconds=local)
        readings = []
        for fold in (0, 1):
            utc = local - self._offset(local, fold)
            back = datetime.fromtimestamp(utc, UTC).astimezone(self.zone).replace(tzinfo=None)
            if back == naive:
                readings.append(utc)
        if not readings:  # clocks went forward over it: the offset from before the change
            return local - self._offset(local, 0)
        return min(readings)

    def to_local(self, utc: int) -> int:
        """The wall-clock reading of a true UTC instant (what such a project exports)."""
        offset = datetime.fromtimestamp(utc, UTC).astimezone(self.zone).utcoffset()
        return utc + int(offset.total_seconds()) if offset is not None else utc
