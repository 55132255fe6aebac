"""The runs page: run history filtered by pipeline and state; one run's timeline and logs."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from orchestrator_core.engine import Engine
from orchestrator_core.errors import RunNotFoundError
from orchestrator_core.plan import Selection
from orchestrator_core.status import RunState, utc_now

from . import fmt, links
from .engine import engine_or_stop, get_engine
from .logs import download_button, tail_text
from .palette import chip_html, css_for
from .session import Keys, Params
from .timeline import timeline_chart, timeline_frame, timeline_height
from .urlstate import url_choice

HISTORY_LIMIT = 200
RUN_COLUMNS = ["Run", "Pipeline", "State", "Trigger", "Selection", "Started", "Duration", "Steps"]
LOG_LINES = 300
ALL = ""


def render() -> None:
    """Draw the whole page."""
    engine = engine_or_stop()
    st.title("Runs")
    pids = engine.history.pipeline_ids()
    if not pids:
        st.info(
            "No runs yet. Start one on the Pipelines page, or from a terminal with "
            "`python -m orchestrator_core run <pipeline>`."
        )
        st.stop()
    wanted = st.query_params.get(Params.PIPELINE)
    if Keys.RUNS_PIPELINE not in st.session_state and wanted in pids:
        st.session_state[Keys.RUNS_PIPELINE] = wanted
    c1, c2 = st.columns(2)
    pipeline = c1.selectbox(
        "Pipeline",
        [ALL, *pids],
        key=Keys.RUNS_PIPELINE,
        format_func=lambda p: p or "All pipelines",
        on_change=_forget_run,
    )
    states = c2.multiselect(
        "State",
        [s.value for s in RunState],
        key=Keys.RUNS_STATES,
        placeholder="Any state",
        on_change=_forget_run,
    )
    records = engine.history.list(pipeline or None, limit=HISTORY_LIMIT)
    if states:
        records = [r for r in records if r.get("state") in states]
    table = pd.DataFrame(runs_rows(records), columns=RUN_COLUMNS)
    st.dataframe(table.style.map(css_for, subset=["State"]), hide_index=True, width="stretch")
    st.caption(f"{len(records)} run(s) shown, newest first (at most {HISTORY_LIMIT}).")
    ids = [r["run_id"] for r in records]
    asked = st.query_params.get(Params.RUN)
    if asked and asked not in ids:
        try:
            engine.history.get(asked)
            ids.insert(0, asked)
        except RunNotFoundError as exc:
            st.warning(str(exc))
    if not ids:
        st.info("No run matches these filters.")
        return
    by_id = {r["run_id"]: r for r in records}
    run_id = url_choice(
        "Run",
        ids,
        key=Keys.RUNS_RUN,
        param=Params.RUN,
        format_func=lambda rid: _label(by_id.get(rid), rid),
    )
    record = by_id.get(run_id) or engine.history.get(run_id)
    running = record.get("state") == RunState.RUNNING.value
    detail = st.fragment(run_every=1.0 if running else None)(_detail)
    detail(record["pipeline_id"], run_id, running)


def _forget_run() -> None:
    # New filters: show the newest matching run rather than the one in the URL.
    st.query_params.pop(Params.RUN, None)


def _label(record: dict[str, Any] | None, run_id: str) -> str:
    if not record:
        return run_id
    return f"{run_id} · {record.get('pipeline_id')} · {record.get('state')}"


def _selection_text(record: dict[str, Any]) -> str:
    sel = record.get("selection") or {}
    try:
        return Selection(sel.get("kind", "all"), sel.get("step")).describe()
    except Exception:  # an old or hand-edited record: show it as it is
        return str(sel)


def runs_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The history table's rows."""
    rows = []
    for r in records:
        steps = r.get("steps") or {}
        ok = sum(1 for s in steps.values() if s.get("state") == "succeeded")
        rows.append(
            {
                "Run": r.get("run_id"),
                "Pipeline": r.get("pipeline_id"),
                "State": r.get("state"),
                "Trigger": r.get("trigger"),
                "Selection": _selection_text(r),
                "Started": fmt.when(r.get("started_at")),
                "Duration": fmt.duration(r.get("duration_s")),
                "Steps": f"{ok}/{len(steps)} succeeded",
            }
        )
    return rows


def live_record(engine: Engine, pipeline_id: str, run_id: str) -> dict[str, Any] | None:
    """The run's record, with the status file's newer step states while it is running."""
    record = engine.history.read(pipeline_id, run_id)
    if record is None:
        return None
    if record.get("state") == RunState.RUNNING.value:
        try:
            record = engine.history.get(run_id)  # turns a dead run into `interrupted`
        except RunNotFoundError:
            return None
    if record.get("state") != RunState.RUNNING.value:
        return record
    entries = engine.status.load(pipeline_id).entries
    for name, step in (record.get("steps") or {}).items():
        entry = entries.get(name) or {}
        if entry.get("run_id") == run_id:
            for field in ("state", "started_at", "finished_at", "duration_s", "exit_code", "error"):
                if entry.get(field) is not None:
                    step[field] = entry[field]
    return record


def _detail(pipeline_id: str, run_id: str, was_running: bool) -> None:
    engine = get_engine()
    record = live_record(engine, pipeline_id, run_id)
    if record is None:
        st.warning(f"The record of run {run_id} is gone or unreadable.")
        return
    running = record.get("state") == RunState.RUNNING.value
    if running != was_running:
        st.rerun()
    state = record.get("state") or "running"
    st.subheader(f"Run {run_id}")
    st.markdown(
        chip_html(state, state)
        + f" &nbsp; {_selection_text(record)} · started by {record.get('trigger')}"
        + f" · {fmt.when(record.get('started_at'))}"
        + (f" · took {fmt.duration(record.get('duration_s'))}" if record.get("duration_s") else ""),
        unsafe_allow_html=True,
    )
    links.pipeline_link(
        st, pipeline_id, f"Open pipeline {pipeline_id}", icon=":material/account_tree:"
    )
    for note in (record.get("warnings") or []) + (record.get("notices") or []):
        st.warning(note)
    frame = timeline_frame(record, utc_now())
    if frame.empty:
        st.caption("No step has started yet.")
    else:
        st.altair_chart(timeline_chart(frame), width="stretch", height=timeline_height(frame) + 60)
    steps = record.get("steps") or {}
    order = [n for wave in record.get("plan") or [] for n in wave] or list(steps)
    for name in order:
        step = steps.get(name) or {}
        sstate = step.get("state") or "queued"
        title = f"{name} — {sstate}"
        if step.get("duration_s") is not None:
            title += f" · {fmt.duration(step['duration_s'])}"
        if step.get("exit_code") not in (None, 0):
            title += f" · exit code {step['exit_code']}"
        problem = sstate in ("failed", "timed_out", "interrupted")
        with st.expander(title, expanded=problem):
            if step.get("error"):
                st.error("Error output:" if problem else "Note:")
                st.code(step["error"], language=None, wrap_lines=True)
            log = engine.history.log_path(pipeline_id, run_id, name)
            started = step.get("started_at") is not None
            st.code(tail_text(log, LOG_LINES, started=started), language=None)
            file_name = f"{pipeline_id}-{run_id}-{name}.log"
            download_button(st, log, file_name, f"{Keys.RUNS_LOG_DOWNLOAD}_{name}")
