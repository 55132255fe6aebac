"""The overview page: how many pipelines, which are invalid, what runs now, what failed lately."""

from __future__ import annotations

from typing import Any

import streamlit as st

from orchestrator_core.discovery import DiscoveredPipeline, discover_pipelines
from orchestrator_core.engine import Engine
from orchestrator_core.spec import display_path

from . import fmt, links
from .engine import engine_or_stop, get_engine
from .palette import chip_html
from .snapshot import expected_for, live_progress, live_run, pipeline_snapshot

RECENT_RUNS = 10
FAILURES = 5
FAILURE_STATES = ("failed", "interrupted")


def render() -> None:
    """Draw the whole page."""
    engine = engine_or_stop()
    st.title("Overview")
    found = discover_pipelines(engine.pipelines_dir)
    if not found:
        st.info(
            f"No pipelines in `{display_path(engine.pipelines_dir)}` yet. Add `<id>.yaml` or "
            "`<id>/pipeline.yaml` there; see the README for the format."
        )
        st.stop()
    running = _running_ids(engine, found)
    recent = engine.history.list(limit=50)
    failures = [r for r in recent if r.get("state") in FAILURE_STATES][:FAILURES]
    invalid = [d for d in found if not d.valid]
    cols = st.columns(4)
    cols[0].metric("Pipelines", len(found))
    cols[1].metric("Invalid", len(invalid))
    cols[2].metric("Running now", len(running))
    cols[3].metric("Failed (last 50 runs)", sum(1 for r in recent if r.get("state") == "failed"))
    section = st.fragment(run_every=1.0 if running else None)(_running_section)
    section(bool(running))
    if invalid:
        st.subheader("Invalid pipelines")
        for d in invalid:
            c1, c2 = st.columns([1, 3])
            links.pipeline_link(c1, d.id, icon=":material/warning:")
            c2.caption(
                str(d.problems[0])
                + (f" (+{len(d.problems) - 1} more)" if len(d.problems) > 1 else "")
            )
    st.subheader("Latest failures")
    if not failures:
        st.caption("No failed runs lately.")
    for r in failures:
        c1, c2, c3 = st.columns([1.3, 1, 3])
        links.run_link(c1, r["run_id"], icon=":material/error:")
        links.pipeline_link(c2, r["pipeline_id"])
        c3.caption(failure_text(r))
    st.subheader(f"Last {RECENT_RUNS} runs")
    if not recent:
        st.caption("No runs yet.")
    for r in recent[:RECENT_RUNS]:
        c1, c2, c3, c4 = st.columns([1.3, 1, 0.8, 2])
        links.run_link(c1, r["run_id"])
        links.pipeline_link(c2, r["pipeline_id"])
        c3.markdown(chip_html(r.get("state") or "", r.get("state") or ""), unsafe_allow_html=True)
        c4.caption(
            f"{fmt.when(r.get('started_at'))} · {fmt.duration(r.get('duration_s'))} · {r.get('trigger')}"
        )


def failure_text(record: dict[str, Any]) -> str:
    """`failed 5 min ago · step load: <last line of its error>`."""
    steps = record.get("steps") or {}
    bad = [n for n, s in steps.items() if s.get("state") in ("failed", "timed_out", "interrupted")]
    text = f"{record.get('state')} {fmt.age(record.get('started_at'))}"
    if bad:
        text += " · step " + ", ".join(bad)
        errors = [steps[n]["error"].strip() for n in bad if (steps[n].get("error") or "").strip()]
        if errors:
            text += ": " + errors[0].splitlines()[-1][:160]
    return text


def _running_ids(engine: Engine, found: list[DiscoveredPipeline]) -> list[str]:
    ours = {a.pipeline_id for a in engine.active_runs()}
    return [d.id for d in found if d.id in ours or live_run(engine, d.id) is not None]


def _running_section(was_running: bool) -> None:
    engine = get_engine()
    found = discover_pipelines(engine.pipelines_dir)
    st.subheader("Running now")
    # Counted as the page above counts (else each would rerun the other for ever).
    running = set(_running_ids(engine, found))
    shown = 0
    for d in found:
        if d.id not in running:
            continue
        shown += 1
        c1, c2 = st.columns([1, 3])
        links.pipeline_link(c1, d.id, icon=":material/play_circle:")
        if not d.valid:  # its file broke during the run: the run goes on
            c2.caption("running; its pipeline file is invalid now, so no progress is shown")
            continue
        snap = pipeline_snapshot(engine, d)
        progress = snap.live and live_progress(snap, expected_for(engine, d.id, snap.live.run_id))
        if progress:
            c2.progress(progress.fraction, text=progress.summary())
    if bool(shown) != was_running:
        st.rerun()
    if not shown:
        st.caption("Nothing is running.")
