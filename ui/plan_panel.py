"""The confirmation panel: the plan of a multi-step run, or what a reset or cancel will do."""

from __future__ import annotations

import streamlit as st

from orchestrator_core.errors import OrchestratorError
from orchestrator_core.plan import Selection

from . import actions
from .engine import get_engine
from .session import Keys


def render_pending(pipeline_id: str, *, step_actions: bool = False) -> None:
    """Show the action waiting for confirmation, if it belongs to this pipeline: the page's
    own (run all, reset all, cancel) at the top, a step's (run from it, reset it) with
    `step_actions` in the step panel, beside the button that asked."""
    action = actions.pending()
    if not action:
        return
    if action["pipeline"] != pipeline_id:
        actions.dismiss()
        return
    if bool(action.get("step")) != step_actions:
        return
    with st.container(border=True):
        if action["action"] == "run":
            label = _render_plan(pipeline_id, action["kind"], action.get("step"))
            if label is None:
                return
        elif action["action"] == "reset":
            what = f"step '{action['step']}'" if action.get("step") else "every step"
            st.warning(
                f"Reset {what} of '{pipeline_id}'? Its run state (completed, last run, errors) "
                "is cleared; tested marks and logs are kept."
            )
            label = "Reset"
        else:
            st.warning(
                f"Cancel run {action['run_id']}? Running steps are killed, the rest are skipped."
            )
            label = "Cancel the run"
        c1, c2, _ = st.columns([1, 1, 3])
        c1.button(label, key=Keys.CONFIRM_YES, type="primary", on_click=actions.confirm)
        c2.button("Back", key=Keys.CONFIRM_NO, on_click=actions.dismiss)


def _render_plan(pipeline_id: str, kind: str, step: str | None) -> str | None:
    selection = Selection(kind, step)
    try:
        plan = get_engine().plan(pipeline_id, selection)
    except OrchestratorError as exc:
        actions.dismiss()
        st.error(str(exc))
        return None
    st.markdown(
        f"**Plan: {selection.describe()}** — {len(plan.steps)} steps in {len(plan.waves)} "
        f"wave{'s' if len(plan.waves) != 1 else ''}"
    )
    rows = [
        {"Wave": i, "Step": name, "Why": plan.reasons.get(name, "")}
        for i, wave in enumerate(plan.waves, start=1)
        for name in wave
    ]
    st.dataframe(rows, hide_index=True, width="stretch")
    for warning in plan.warnings:
        st.warning(warning)
    if plan.skipped and kind != "all":
        st.caption(f"Not in this run: {', '.join(plan.skipped)}")
    return "Start run"
