"""Step states and the per-step status record kept in `.<id>.status.json`."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class StepState(StrEnum):
    """The state of one step; values go to JSON as they are."""

    NEVER_RUN = "never_run"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    INTERRUPTED = "interrupted"

    @property
    def is_active(self) -> bool:
        """True while the step is waiting or running in some run."""
        return self in (StepState.QUEUED, StepState.RUNNING)

    @property
    def is_problem(self) -> bool:
        """True for the end states a user has to look at."""
        return self in (
            StepState.FAILED,
            StepState.TIMED_OUT,
            StepState.CANCELLED,
            StepState.SKIPPED,
            StepState.INTERRUPTED,
        )


class RunState(StrEnum):
    """The final (or current) state of a whole run."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


# Fields that describe the latest execution; `reset` clears them, and keeps `tested*`.
RUN_FIELDS: tuple[str, ...] = (
    "state",
    "completed",
    "last_run",
    "started_at",
    "finished_at",
    "duration_s",
    "exit_code",
    "error",
    "run_id",
    "attempt",
    "pid",
    "pid_started",
    "skip_reason",
    "last_success_at",
    "success_script_sha256",
    "success_config_sha256",
)

ERROR_TAIL_BYTES = 2048


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def iso(ts: datetime | None) -> str | None:
    """ISO-8601 UTC with a trailing `Z` (millisecond precision), or None."""
    if ts is None:
        return None
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_iso(text: str | None) -> datetime | None:
    """Parse what `iso` wrote (and plain ISO strings); None for None or junk."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except (TypeError, ValueError):
        return None


def blank_entry() -> dict[str, Any]:
    """The entry of a step that has never run: the seed's fields plus ours."""
    return {
        "completed": False,
        "tested": False,
        "last_run": None,
        "state": StepState.NEVER_RUN.value,
        "started_at": None,
        "finished_at": None,
        "duration_s": None,
        "exit_code": None,
        "error": None,
        "run_id": None,
        "attempt": None,
        "pid": None,
    }


_TEXT_FIELDS = (
    "last_run",
    "started_at",
    "finished_at",
    "error",
    "run_id",
    "skip_reason",
    "tested_at",
    "tested_sha256",
    "last_success_at",
    "success_script_sha256",
    "success_config_sha256",
)
_INT_FIELDS = ("exit_code", "attempt", "pid", "orphan_pid")
_NUMBER_FIELDS = ("duration_s", "pid_started", "orphan_pid_started")


def _typed(key: str, value: Any) -> Any:
    """`value` when it has the field's type, else None: a hand-edited file must not break
    every command that reads it."""
    if value is None:
        return None
    if key in _TEXT_FIELDS:
        return value if isinstance(value, str) else None
    if key in _INT_FIELDS:
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if key in _NUMBER_FIELDS:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return value if ok and value == value and abs(value) != float("inf") else None
    return value


def normalise_entry(raw: Any) -> dict[str, Any]:
    """A complete entry from whatever a file held (older files may lack our fields, and a
    hand edit may have put a wrong type in one)."""
    entry = blank_entry()
    if isinstance(raw, dict):
        entry.update({str(k): _typed(str(k), v) for k, v in raw.items()})
    # A seed-style entry has no state: derive it from `completed` rather than the blank's.
    state = raw.get("state") if isinstance(raw, dict) else None
    try:
        entry["state"] = StepState(state).value
    except (ValueError, TypeError):
        entry["state"] = (
            StepState.SUCCEEDED.value if entry.get("completed") else StepState.NEVER_RUN.value
        )
    entry["completed"] = entry["state"] == StepState.SUCCEEDED.value
    entry["tested"] = bool(entry.get("tested"))
    return entry


def state_of(entry: dict[str, Any]) -> StepState:
    """The entry's state as an enum."""
    return StepState(entry.get("state", StepState.NEVER_RUN.value))


def error_tail(text: str, limit: int = ERROR_TAIL_BYTES) -> str | None:
    """The last `limit` bytes of `text`, cut at a line start where possible; None when empty."""
    text = text.strip()
    if not text:
        return None
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    cut = data[-limit:].decode("utf-8", "ignore")
    nl = cut.find("\n")
    return cut[nl + 1 :] if 0 <= nl < len(cut) - 1 else cut
