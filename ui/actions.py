"""What the buttons do. Each is a widget callback: it acts, then leaves a message for the page.

Errors a user can act on (a busy pipeline, a step that is running) become one-line messages,
never tracebacks. Destructive actions and multi-step runs wait in `Keys.PENDING` until confirmed.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from orchestrator_core.engine import NothingToRunError
from orchestrator_core.errors import OrchestratorError, PipelineBusyError
from orchestrator_core.pipeline_state import mark_tested, reset_steps
from orchestrator_core.plan import Selection

from .engine import get_engine
from .session import Keys


def flash(kind: str, text: str) -> None:
    """Queue a message (`success`, `info`, `warning`, `error`) for the next render."""
    st.session_state.setdefault(Keys.FLASH, []).append((kind, text))


def show_flash() -> None:
    """Show the queued messages once (or the last ones again after `replay_flash`)."""
    messages = st.session_state.pop(Keys.FLASH, None)
    replay = st.session_state.pop(Keys.FLASH_REPLAY, False)
    if messages is None:
        messages = st.session_state.get(Keys.FLASH_SHOWN, []) if replay else []
    st.session_state[Keys.FLASH_SHOWN] = messages
    for kind, text in messages:
        getattr(st, kind)(text)


def replay_flash() -> None:
    """Show the same messages on the next run (a rerun the page made, not the user)."""
    st.session_state[Keys.FLASH_REPLAY] = True


def pending() -> dict[str, Any] | None:
    """The action waiting for confirmation, if any."""
    return st.session_state.get(Keys.PENDING)


def dismiss() -> None:
    """Drop the action waiting for confirmation."""
    st.session_state.pop(Keys.PENDING, None)


def start_run(pipeline_id: str, kind: str, step: str | None = None) -> str | None:
    """Submit a run now; returns its id, or None after leaving the engine's message."""
    dismiss()
    selection = Selection(kind, step)
    try:
        run_id = get_engine().submit(pipeline_id, selection)
    except NothingToRunError as exc:
        flash("info", f"Nothing to run: {exc}")
        return None
    except PipelineBusyError as exc:  # started elsewhere a moment ago: the page shows it now
        flash("error", f"{exc}. The page now shows that run; Cancel run stops it.")
        return None
    except OrchestratorError as exc:
        flash("error", str(exc))
        return None
    flash("success", f"Started run {run_id} of '{pipeline_id}': {selection.describe()}.")
    return run_id


def request_run(pipeline_id: str, kind: str, step: str | None = None) -> None:
    """Run at once when the plan has one step and nothing to warn about; otherwise show the
    plan (with its warnings: a dependency that has not succeeded) and ask first."""
    try:
        plan = get_engine().plan(pipeline_id, Selection(kind, step))
    except OrchestratorError as exc:
        flash("error", str(exc))
        return
    if not plan.steps:
        flash("info", f"Nothing to run in '{pipeline_id}': every step is up to date.")
        return
    if len(plan.steps) == 1 and not plan.warnings:
        start_run(pipeline_id, kind, step)
        return
    st.session_state[Keys.PENDING] = {
        "action": "run",
        "pipeline": pipeline_id,
        "kind": kind,
        "step": step,
    }


def request(action: str, pipeline_id: str, *, step: str | None = None, run_id: str | None = None):
    """Ask for confirmation of a destructive action: `reset` (a step or all) or `cancel`."""
    st.session_state[Keys.PENDING] = {
        "action": action,
        "pipeline": pipeline_id,
        "step": step,
        "run_id": run_id,
    }


def confirm() -> None:
    """Carry out the action waiting for confirmation."""
    action = st.session_state.pop(Keys.PENDING, None)
    if not action:
        return
    pipeline_id = action["pipeline"]
    if action["action"] == "run":
        start_run(pipeline_id, action["kind"], action.get("step"))
    elif action["action"] == "reset":
        reset(pipeline_id, action.get("step"))
    elif action["action"] == "cancel":
        cancel(action["run_id"], pipeline_id)


def cancel(run_id: str, pipeline_id: str | None = None) -> None:
    """Stop a run: this server's own through the engine, a command-line run by asking its
    process to stop (SIGTERM, which the CLI treats as Ctrl-C)."""
    engine = get_engine()
    if engine.cancel(run_id):
        flash("warning", f"Cancelling run {run_id}: its running steps are being stopped.")
        return
    if pipeline_id is not None:
        try:
            done = engine.stop_other_process_run(pipeline_id)
            flash("warning", done[0].upper() + done[1:] + ".")
            return
        except OrchestratorError as exc:
            flash("info", str(exc))
            return
    flash("info", f"Run {run_id} is not running in this dashboard any more.")


def reset(pipeline_id: str, step: str | None = None) -> None:
    """Clear the run state of one step or of all steps (`tested` is kept)."""
    engine = get_engine()
    try:
        names = reset_steps(engine.status, engine.load_pipeline(pipeline_id), step)
    except OrchestratorError as exc:
        flash("error", str(exc))
        return
    what = f"step '{step}'" if step else f"all {len(names)} steps"
    flash("success", f"Reset {what} of '{pipeline_id}'.")


def set_tested(pipeline_id: str, step: str, tested: bool) -> None:
    """Mark a step tested (with its script's current hash) or untested."""
    engine = get_engine()
    try:
        mark_tested(engine.status, engine.load_pipeline(pipeline_id), step, undo=not tested)
    except OrchestratorError as exc:
        flash("error", str(exc))
        return
    flash("success", f"Marked '{step}' {'tested' if tested else 'untested'}.")
