"""The pipelines page: choose a pipeline (`?pipeline=`), see its DAG and steps, run things."""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from typing import Any

import streamlit as st

from orchestrator_core.discovery import DiscoveredPipeline, discover_pipelines
from orchestrator_core.engine import Engine
from orchestrator_core.spec import display_path

from . import actions, fmt, links
from .dag import pipeline_dot
from .engine import engine_or_stop, get_engine
from .logs import download_button, tail_text
from .palette import chip_html, legend_html
from .plan_panel import render_pending
from .session import Keys, Params
from .snapshot import (
    LiveRun,
    PipelineSnapshot,
    expected_for,
    live_progress,
    live_run,
    pipeline_snapshot,
)
from .steps_table import steps_frame, styled
from .urlstate import url_choice

REFRESH_SECONDS = 1.0
# An idle page still looks now and then for a run started elsewhere (the CLI, cron).
IDLE_REFRESH_SECONDS = 5.0
# The per-step run buttons: label, widget key, icon, selection kind, help text.
STEP_RUN_BUTTONS = (
    ("Run step", Keys.RUN_STEP, ":material/play_arrow:", "step", "Run only this step."),
    (
        "Run from here",
        Keys.RUN_FROM,
        ":material/keyboard_double_arrow_right:",
        "from",
        "Run this step and everything downstream of it.",
    ),
    (
        "Run up to here",
        Keys.RUN_TO,
        ":material/keyboard_double_arrow_left:",
        "to",
        "Run everything this step depends on, then this step.",
    ),
)
LIVE_LOG_LINES = 40


def render() -> None:
    """Draw the whole page."""
    engine = engine_or_stop()
    st.title("Pipelines")
    found = discover_pipelines(engine.pipelines_dir)
    if not found:
        st.info(
            f"No pipelines in `{display_path(engine.pipelines_dir)}` yet. Add `<id>.yaml` (scripts "
            "in `<id>/`) or `<id>/pipeline.yaml`, then press Refresh."
        )
        _refresh_button(st, "Read the pipelines folder again.")
        st.stop()
    chosen = _choose(found)
    actions.show_flash()
    if not chosen.valid:
        _render_invalid(chosen)
        _render_invalid_controls(engine, chosen.id)
        _render_all(found)
        return
    snap = pipeline_snapshot(engine, chosen)
    _render_header(snap)
    _drop_pending_of_another_step()
    render_pending(chosen.id)
    _render_actions(snap)
    names = [v.name for v in snap.views]
    highlighted = st.query_params.get(Params.STEP)
    every = REFRESH_SECONDS if snap.active else IDLE_REFRESH_SECONDS
    live = st.fragment(run_every=every)(_live_section)
    live(chosen, highlighted if highlighted in names else names[0], snap.active)
    _render_step(snap, _choose_step(snap))
    _render_all(found)


def _badge(d: DiscoveredPipeline) -> str:
    label = d.id if d.name == d.id else f"{d.id} · {d.name}"
    return label + ("" if d.valid else "  [invalid]")


def _choose(found: list[DiscoveredPipeline]) -> DiscoveredPipeline:
    by_id = {d.id: d for d in found}

    def missing(wanted: str) -> None:
        st.warning(f"There is no pipeline '{wanted}'; showing '{found[0].id}' instead.")

    chosen = url_choice(
        "Pipeline",
        list(by_id),
        key=Keys.PIPELINE,
        param=Params.PIPELINE,
        format_func=lambda pid: _badge(by_id[pid]),
        clear_on_change=(Params.STEP,),
        missing=missing,
    )
    return by_id[chosen]


def _render_invalid(d: DiscoveredPipeline) -> None:
    st.header(d.name)
    st.error(
        f"Pipeline '{d.id}' is invalid and cannot run. Fix {len(d.problems)} problem(s) in "
        f"`{display_path(d.path)}`, then press Refresh discovery."
    )
    st.code("\n".join(str(p) for p in d.problems), language=None, wrap_lines=True)


def _render_invalid_controls(engine: Engine, pipeline_id: str) -> None:
    """Refresh after a fix, and stop a run that began before the file broke."""
    live = live_run(engine, pipeline_id)
    cols = st.columns([1, 1, 3], vertical_alignment="center")
    _refresh_button(cols[0], "Read the pipeline file again (after fixing it).")
    if live is None:
        return
    _cancel_button(cols[1], live, actions.cancel, (live.run_id, pipeline_id))
    cols[2].info(f"Run {live.run_id} began before the file broke and is still in progress.")


def _refresh_button(where: Any, help_text: str) -> None:
    where.button(
        "Refresh discovery",
        key=Keys.REFRESH,
        icon=":material/refresh:",
        help=help_text,
        width="stretch",
    )


def _cancel_button(
    where: Any,
    live: LiveRun | None,
    on_click: Callable[..., None],
    args: tuple,
    kwargs: dict | None = None,
) -> None:
    # A command-line run can be stopped from here too: it treats SIGTERM as Ctrl-C.
    can_cancel = live is not None and not live.cancelling and (live.ours or live.trigger == "cli")
    where.button(
        "Cancel run",
        key=Keys.CANCEL,
        icon=":material/stop:",
        disabled=not can_cancel,
        help="Stop the run: running steps are killed, the rest skipped.",
        on_click=on_click,
        args=args,
        kwargs=kwargs or {},
        width="stretch",
    )


def _render_header(snap: PipelineSnapshot) -> None:
    p = snap.found.pipeline
    assert p is not None
    st.header(p.name)
    parallel = (
        f"up to {p.max_parallel} steps at a time" if p.max_parallel > 1 else "one step at a time"
    )
    failure = "continues after a failure" if p.continue_on_failure else "stops at the first failure"
    st.caption(
        f"`{p.id}` · {display_path(snap.found.path)} · {len(p.steps)} steps · {parallel} · {failure}"
    )
    if p.description:
        st.markdown(p.description)
    for notice in snap.notices:
        st.warning(notice)


def _render_actions(snap: PipelineSnapshot) -> None:
    pid = snap.found.id
    busy = snap.active
    busy_help = "A run of this pipeline is in progress." if busy else None
    cols = st.columns([1.2, 1.4, 1, 1, 1], vertical_alignment="center")
    cols[0].button(
        "Run pipeline",
        key=Keys.RUN_ALL,
        type="primary",
        icon=":material/play_arrow:",
        disabled=busy,
        help=busy_help or "Run every step in dependency order (the plan is shown first).",
        on_click=actions.request_run,
        args=(pid, "all"),
        width="stretch",
    )
    cols[1].button(
        "Run only outdated",
        key=Keys.RUN_OUTDATED,
        icon=":material/update:",
        disabled=busy,
        help=busy_help
        or "Run the steps that never succeeded or changed since, and what depends on them.",
        on_click=actions.request_run,
        args=(pid, "outdated"),
        width="stretch",
    )
    live = snap.live
    _cancel_button(
        cols[2], live, actions.request, ("cancel", pid), {"run_id": live.run_id if live else None}
    )
    cols[3].button(
        "Reset all",
        key=Keys.RESET_ALL,
        icon=":material/restart_alt:",
        disabled=busy,
        help=busy_help or "Clear the run state of every step (tested marks are kept).",
        on_click=actions.request,
        args=("reset", pid),
        width="stretch",
    )
    _refresh_button(cols[4], "Read the pipeline files and status again.")
    if live is not None and not live.ours:
        where = (
            "Cancel run asks that process to stop it."
            if live.trigger == "cli"
            else "it can be stopped where it was started."
        )
        st.info(
            f"Run {live.run_id} was started by {live.trigger} (pid {live.pid}); "
            f"it is shown live here, and {where}"
        )
    elif live is not None and live.cancelling:
        st.warning(f"Cancelling run {live.run_id}…")


def _drop_pending_of_another_step() -> None:
    """A question about one step (reset it? run from it?) goes once another step is chosen:
    confirming it then would act on a step the page no longer shows."""
    pending = st.session_state.get(Keys.PENDING)
    selected = st.session_state.get(Keys.STEP)
    if pending and pending.get("step") and selected and pending["step"] != selected:
        del st.session_state[Keys.PENDING]


def _choose_step(snap: PipelineSnapshot) -> str:
    names = [v.name for v in snap.views]
    st.subheader("Step")
    return url_choice(
        "Step",
        names,
        key=Keys.STEP,
        param=Params.STEP,
    )


def _live_section(found: DiscoveredPipeline, step: str, was_active: bool) -> None:
    """The part that refreshes itself about once a second while a run is in progress."""
    engine = get_engine()
    snap = pipeline_snapshot(engine, found)
    if snap.active != was_active:
        if was_active:
            _flash_outcome(engine, found.id)
        else:
            actions.replay_flash()
        st.rerun()  # a run started or ended: redraw the buttons, start or stop polling
    if snap.live is not None:
        cache = st.session_state.setdefault(Keys.ETA_CACHE, {})
        if snap.live.run_id not in cache:
            cache.clear()
            cache[snap.live.run_id] = expected_for(engine, found.id, snap.live.run_id)
        progress = live_progress(snap, cache[snap.live.run_id])
        if progress is not None:
            st.progress(progress.fraction, text=f"Run {snap.live.run_id}: {progress.summary()}")
    counts: dict[str, int] = {}
    for v in snap.views:
        counts[v.state.value] = counts.get(v.state.value, 0) + 1
    st.markdown(
        "".join(chip_html(f"{n} {state}", state) for state, n in counts.items()),
        unsafe_allow_html=True,
    )
    st.graphviz_chart(pipeline_dot(snap.views, selected=step))
    st.markdown(legend_html(), unsafe_allow_html=True)
    st.table(styled(steps_frame(snap.views)))
    if snap.live is not None:
        for v in snap.views:
            if v.state.value == "running" and v.run_id:
                path = engine.history.log_path(found.id, v.run_id, v.name)
                st.caption(f"Live log of **{v.name}** (last {LIVE_LOG_LINES} lines)")
                st.code(tail_text(path, LIVE_LOG_LINES, started=True), language=None)


def _flash_outcome(engine: Engine, pipeline_id: str) -> None:
    """Tell how the run that just ended went."""
    last = engine.history.list(pipeline_id, limit=1)
    if not last:
        return
    r = last[0]
    steps = r.get("steps") or {}
    ok = sum(1 for s in steps.values() if s.get("state") == "succeeded")
    text = (
        f"Run {r['run_id']} {r.get('state')}: {ok} of {len(steps)} steps succeeded "
        f"in {fmt.duration(r.get('duration_s'))}."
    )
    kind = {"succeeded": "success", "cancelled": "warning"}.get(r.get("state"), "error")
    actions.flash(kind, text)


def _render_step(snap: PipelineSnapshot, step: str) -> None:
    view = snap.view(step)
    if view is None:
        return
    pid = snap.found.id
    busy = snap.active
    deps = ", ".join(view.depends_on) or "none"
    st.markdown(
        f"script <code>{escape(view.script)}</code> · depends on: {escape(deps)}",
        unsafe_allow_html=True,
    )
    if view.description:
        st.caption(view.description)
    cols = st.columns(5, vertical_alignment="center")
    busy_help = "A run of this pipeline is in progress." if busy else None
    for col, (label, key, icon, kind, what) in zip(cols, STEP_RUN_BUTTONS, strict=False):
        col.button(
            label,
            key=key,
            icon=icon,
            disabled=busy,
            help=busy_help or what,
            on_click=actions.request_run,
            args=(pid, kind, step),
            width="stretch",
        )
    label, key, icon = (
        ("Mark untested", Keys.MARK_UNTESTED, ":material/remove_done:")
        if view.tested
        else ("Mark tested", Keys.MARK_TESTED, ":material/done_all:")
    )
    cols[3].button(
        label,
        key=key,
        icon=icon,
        on_click=actions.set_tested,
        args=(pid, step, not view.tested),
        width="stretch",
    )
    cols[4].button(
        "Reset step",
        key=Keys.RESET_STEP,
        icon=":material/restart_alt:",
        disabled=busy or view.state.is_active,
        help=busy_help or "Clear this step's run state (its tested mark is kept).",
        on_click=actions.request,
        args=("reset", pid),
        kwargs={"step": step},
        width="stretch",
    )
    render_pending(pid, step_actions=True)
    # The buttons change only when a run starts or ends (the whole page is redrawn then);
    # the step's state, error and log follow the run, like the table above.
    details = st.fragment(run_every=REFRESH_SECONDS if busy else None)(_step_details)
    details(snap.found, step)


def _step_details(found: DiscoveredPipeline, step: str) -> None:
    """The selected step's state, notes, error and log; refreshed while a run is in progress."""
    engine = get_engine()
    view = pipeline_snapshot(engine, found).view(step)
    if view is None:
        return
    pid = found.id
    when = f" · {fmt.duration(view.duration_s)}" if view.duration_s is not None else ""
    st.markdown(chip_html(view.state.value, view.state) + escape(when), unsafe_allow_html=True)
    if view.tested:
        stale = " — its script changed since; test it again" if view.tested_stale else ""
        st.caption(f"Tested {fmt.when(view.tested_at)}{stale}")
    if view.outdated and not view.state.is_active:
        st.caption("Outdated: " + "; ".join(view.outdated))
    if view.skip_reason and view.state.value == "skipped":
        st.info(f"Skipped: {view.skip_reason}")
    if view.state.is_problem and view.error:
        st.error(f"{view.name} {view.state.value} (exit code {view.exit_code}). Error output:")
        st.code(view.error, language=None, wrap_lines=True)
    if view.run_id:
        path = engine.history.log_path(pid, view.run_id, view.name)
        with st.expander(f"Full log of run {view.run_id}", expanded=False):
            st.code(tail_text(path, 500, started=view.started_at is not None), language=None)
            c1, c2 = st.columns(2)
            name = f"{pid}-{view.run_id}-{view.name}.log"
            download_button(c1, path, name, Keys.STEP_LOG_DOWNLOAD)
            links.run_link(c2, view.run_id, "Open the run")


def _render_all(found: list[DiscoveredPipeline]) -> None:
    invalid = sum(1 for d in found if not d.valid)
    with st.expander(f"All pipelines ({len(found)}, {invalid} invalid)"):
        rows = [
            {
                "Pipeline": d.id,
                "Name": d.name,
                "Valid": "valid" if d.valid else "invalid",
                "Steps": len(d.pipeline.steps) if d.pipeline else None,
                "Problem": str(d.problems[0]) if d.problems else "",
            }
            for d in found
        ]
        st.dataframe(rows, hide_index=True, width="stretch")
