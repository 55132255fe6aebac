"""Pacing Mixpanel requests under its limits, across processes, with the request log on disk.

Mixpanel counts queries per project and hour (Raw Export: 60/hour and 3/second; the Query
API, Engage: 60/hour and 5 at once). Two runs of step 1 (a cron job and a click) share one
budget, so every request is written to a log file under the cache folder before it is sent,
under an exclusive `flock`, and the next request waits for its turn by that log.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson

HOUR = 3600.0
# A wait this short is rounding, not a limit (a float clock may never get past it).
CLOCK_GRAIN = 0.001
# Another process's clock may run a little ahead; a logged time further ahead is damage.
CLOCK_SLACK = 60.0


class RateLimiter:
    """Spaces requests of one API to stay under `per_second` and `per_hour`, sleeping when
    needed; with `log_path`, the sent requests are shared with other processes via that file."""

    def __init__(
        self,
        name: str,
        per_second: float,
        per_hour: int,
        *,
        log_path: Path | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        log: Callable[[str], None] = print,
    ) -> None:
        self.name = name
        self.min_gap = 1.0 / per_second
        self.per_hour = per_hour
        self.log_path = log_path
        self.clock = clock
        self.sleep = sleep
        self.log = log
        self._sent: list[float] = []  # when there is no log file
        self.refused = ""

    def wait_needed(self, sent: list[float], now: float) -> tuple[float, str]:
        """Seconds until one more request fits both limits, given the times sent so far, and
        the limit that makes it wait."""
        recent = [t for t in sent if 0 <= now - t < HOUR]
        hourly = (
            HOUR - (now - sorted(recent)[-self.per_hour]) if len(recent) >= self.per_hour else 0
        )
        gap = self.min_gap - (now - max(recent)) if recent else 0.0
        if hourly >= gap:
            return max(0.0, hourly), f"limit of {self.per_hour} {self.name} queries per hour"
        return max(0.0, gap), f"limit of {1 / self.min_gap:g} queries per second"

    def wait_turn(self, deadline: float | None = None) -> bool:
        """Block until one more request fits, then count it as sent. Returns False, without
        waiting or counting, when the turn would come after `deadline` (a `clock` time);
        `refused` then says how long it would have waited, and for which limit."""
        while True:
            with self._locked() as sent:
                now = self.clock()
                if deadline is not None and now >= deadline:
                    self.refused = "one more request"
                    return False
                wait, limit = self.wait_needed(sent, now)
                if wait <= CLOCK_GRAIN:
                    sent[:] = [t for t in sent if now - t < HOUR] + [now]
                    return True
            if deadline is not None and now + wait > deadline:
                self.refused = f"the next request must wait {wait:.0f}s for Mixpanel's {limit}"
                return False
            if wait >= 1:
                self.log(
                    f"  waiting {wait:.0f}s to stay under Mixpanel's {self.per_hour} {self.name} "
                    "queries per hour"
                )
            self.sleep(wait)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[float]]:
        """The sent times, under the file lock; changes to the list are saved on exit."""
        if self.log_path is None:
            yield self._sent
            return
        path = self.log_path
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = _read(path)
                sent = _times(data.get(self.name), self.clock())
                before = list(sent)
                yield sent
                if sent != before:
                    data[self.name] = sent
                    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
                    tmp.write_bytes(orjson.dumps(data))
                    os.replace(tmp, path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _times(value: object, now: float) -> list[float]:
    """The request times of a log entry; anything else (a damaged or hand-made log: not a
    list, not numbers, times to come) is dropped rather than trusted."""
    if not isinstance(value, list):
        return []
    return [
        float(t)
        for t in value
        if isinstance(t, int | float)
        and not isinstance(t, bool)
        and math.isfinite(t)
        and now - HOUR <= t <= now + CLOCK_SLACK
    ]


def _read(path: Path) -> dict:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}  # no log yet, or a damaged one: start counting afresh
    return data if isinstance(data, dict) else {}
