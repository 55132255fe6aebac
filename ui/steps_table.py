"""The steps table: one row per step, its state cell coloured like the DAG node."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from pandas.io.formats.style import Styler

from orchestrator_core.pipeline_state import StepView
from orchestrator_core.status import StepState, parse_iso, utc_now

from . import fmt
from .palette import css_for

COLUMNS = [
    "Step",
    "Description",
    "State",
    "Completed",
    "Tested",
    "Last run",
    "Duration",
    "Exit code",
    "Outdated",
]


def tested_text(view: StepView) -> str:
    """`yes`, `yes (stale: script changed)` or an empty string."""
    if not view.tested:
        return ""
    return "yes (stale: script changed)" if view.tested_stale else "yes"


def steps_frame(views: Sequence[StepView]) -> pd.DataFrame:
    """The table's rows as text, in file order."""
    rows = []
    for v in views:
        outdated = "; ".join(v.outdated) if v.outdated else "up to date"
        duration = fmt.duration(v.duration_s)
        exit_code = "" if v.exit_code is None else str(v.exit_code)
        if v.state.is_active:  # the status file still holds the previous run's figures
            outdated = exit_code = duration = ""
            started = parse_iso(v.started_at)
            if v.state is StepState.RUNNING and started:
                duration = fmt.duration((utc_now() - started).total_seconds()) + " so far"
        rows.append(
            {
                "Step": v.name,
                "Description": v.description,
                "State": v.state.value,
                "Completed": "yes" if v.completed else "",
                "Tested": tested_text(v),
                "Last run": fmt.when(v.last_run),
                "Duration": duration,
                "Exit code": exit_code,
                "Outdated": outdated,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def styled(frame: pd.DataFrame) -> Styler:
    """The frame with each state cell in its state's colours."""
    return frame.style.map(css_for, subset=["State"]).hide(axis="index")
