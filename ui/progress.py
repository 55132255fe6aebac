"""Progress of a run: steps done, elapsed time, and an ETA from the durations of past runs.

Pure: run records and step states in, numbers out.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orchestrator_core.status import StepState, parse_iso

FINISHED = frozenset(
    {
        StepState.SUCCEEDED,
        StepState.FAILED,
        StepState.TIMED_OUT,
        StepState.CANCELLED,
        StepState.SKIPPED,
        StepState.INTERRUPTED,
    }
)


@dataclass(frozen=True)
class RunProgress:
    """Where a run stands."""

    total: int
    done: int
    running: tuple[str, ...]
    fraction: float  # 0..1, counting part of each running step from its expected duration
    elapsed_s: float
    eta_s: float | None  # None when some remaining step has never succeeded before

    def summary(self) -> str:
        """`2 of 5 steps done · running: load · 12 s elapsed · about 30 s left`."""
        from .fmt import duration

        parts = [f"{self.done} of {self.total} steps done"]
        if self.running:
            parts.append("running: " + ", ".join(self.running))
        parts.append(f"{duration(self.elapsed_s)} elapsed")
        if self.eta_s is not None:
            parts.append(f"about {duration(self.eta_s)} left")
        elif self.done < self.total:
            parts.append("no estimate yet (no earlier successful run of every step)")
        return " · ".join(parts)


def expected_durations(
    records: Iterable[Mapping[str, Any]], exclude_run: str | None = None
) -> dict[str, float]:
    """Step -> median duration of its successful attempts in these finished runs."""
    samples: dict[str, list[float]] = {}
    for record in records:
        if record.get("run_id") == exclude_run or record.get("state") == "running":
            continue
        for name, step in (record.get("steps") or {}).items():
            if (
                step.get("state") == StepState.SUCCEEDED.value
                and step.get("duration_s") is not None
            ):
                samples.setdefault(name, []).append(float(step["duration_s"]))
    return {name: statistics.median(values) for name, values in samples.items()}


def run_progress(
    waves: Sequence[Sequence[str]],
    states: Mapping[str, StepState],
    started: Mapping[str, str | None],
    run_started_at: str | None,
    expected: Mapping[str, float],
    now: datetime,
    max_parallel: int = 1,
) -> RunProgress:
    """Progress of a run whose plan is `waves`, given each step's state and start time."""
    steps = [n for wave in waves for n in wave]
    total = len(steps)
    done = sum(1 for n in steps if states.get(n) in FINISHED)
    running = tuple(n for n in steps if states.get(n) is StepState.RUNNING)
    run_start = parse_iso(run_started_at)
    elapsed = max(0.0, (now - run_start).total_seconds()) if run_start else 0.0

    remaining: dict[str, float | None] = {}
    partial = 0.0
    for n in steps:
        if states.get(n) in FINISHED:
            continue
        guess = expected.get(n)
        if states.get(n) is StepState.RUNNING:
            step_start = parse_iso(started.get(n))
            ran = max(0.0, (now - step_start).total_seconds()) if step_start else 0.0
            if guess:
                partial += min(ran / guess, 0.95)
                remaining[n] = max(guess - ran, 0.0)
            else:
                remaining[n] = None
        else:
            remaining[n] = guess

    eta: float | None
    if any(v is None for v in remaining.values()):
        eta = None
    elif max_parallel <= 1:
        eta = sum(v or 0.0 for v in remaining.values())
    else:
        # Steps of one wave may overlap: count the longest of each wave.
        eta = sum(max((remaining.get(n) or 0.0) for n in wave) for wave in waves)
    fraction = (done + partial) / total if total else 1.0
    return RunProgress(total, done, running, min(fraction, 1.0), elapsed, eta)
