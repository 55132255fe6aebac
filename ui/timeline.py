"""A run's steps on a time axis (Gantt style): when each started and ended, in its state colour."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import altair as alt
import pandas as pd

from orchestrator_core.status import parse_iso

from .palette import STATE_STYLES


def timeline_frame(record: Mapping[str, Any], now: datetime) -> pd.DataFrame:
    """One row per step that started: step, start, end (now while running), state, seconds."""
    rows = []
    order = [n for wave in record.get("plan") or [] for n in wave] or list(record.get("steps", {}))
    steps = record.get("steps") or {}
    for name in order:
        step = steps.get(name) or {}
        start = parse_iso(step.get("started_at"))
        if start is None:
            continue
        end = parse_iso(step.get("finished_at")) or now
        rows.append(
            {
                "step": name,
                "start": start,
                "end": max(end, start),
                "state": step.get("state") or "running",
                "seconds": round((end - start).total_seconds(), 1),
            }
        )
    return pd.DataFrame(rows, columns=["step", "start", "end", "state", "seconds"])


def timeline_chart(frame: pd.DataFrame) -> alt.Chart:
    """The Gantt chart of a `timeline_frame`."""
    present = set(frame["state"])
    shown = [s for s in STATE_STYLES if s.value in present]
    states = [s.value for s in shown]
    colours = [STATE_STYLES[s].fill for s in shown]
    order = list(dict.fromkeys(frame["step"]))
    return (
        alt.Chart(frame)
        .mark_bar(cornerRadius=3, stroke="#808495", strokeWidth=0.5)
        .encode(
            x=alt.X("start:T", title="time (UTC)", axis=alt.Axis(format="%H:%M:%S")),
            x2="end:T",
            y=alt.Y("step:N", sort=order, title=None),
            color=alt.Color(
                "state:N",
                scale=alt.Scale(domain=states, range=colours),
                legend=alt.Legend(title="state"),
            ),
            tooltip=["step", "state", "seconds", "start:T", "end:T"],
        )
        .properties(height=timeline_height(frame))
    )


def timeline_height(frame: pd.DataFrame) -> int:
    """Pixels for the chart: a readable row per step."""
    return max(90, 34 * frame["step"].nunique())
