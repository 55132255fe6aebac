"""The pure parts of the dashboard: DOT source, progress and ETA, log tails, formatting."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from ui_helpers import chain, engine, write_pipeline

from orchestrator_core.discovery import find_pipeline
from orchestrator_core.pipeline_state import mark_tested, step_views
from orchestrator_core.plan import Selection
from orchestrator_core.status import StepState, iso, utc_now
from ui import fmt
from ui.dag import pipeline_dot
from ui.logs import short_line, tail_lines, tail_text
from ui.palette import STATE_STYLES, legend_html
from ui.progress import expected_durations, run_progress


def views_of(pdir: Path, pipeline_id: str):
    pipeline = find_pipeline(pdir, pipeline_id).pipeline
    return pipeline, step_views(engine().status, pipeline)[0]


def test_dot_colours_each_node_by_state_and_marks_tested_and_outdated(pdir: Path) -> None:
    write_pipeline(pdir, "p", chain("a", "b", "c", b="return 1"))
    run_id = engine().submit("p", Selection())
    assert engine().wait(run_id, 30) is not None
    pipeline, _ = views_of(pdir, "p")
    mark_tested(engine().status, pipeline, "a")
    _, views = views_of(pdir, "p")
    dot = pipeline_dot(views, selected="b")
    lines = {ln.split(" [")[0].strip(): ln for ln in dot.splitlines() if " [label=" in ln}
    assert STATE_STYLES[StepState.SUCCEEDED].fill in lines['"a"']
    assert "peripheries=2" in lines['"a"'] and "tested" in lines['"a"']
    assert STATE_STYLES[StepState.FAILED].fill in lines['"b"']
    assert "dashed" in lines['"b"'] and "outdated" in lines['"b"']
    assert "penwidth=2.5" in lines['"b"'], "the chosen step stands out"
    assert STATE_STYLES[StepState.SKIPPED].fill in lines['"c"']
    assert '"a" -> "b";' in dot and '"b" -> "c";' in dot


def test_dot_quotes_awkward_names() -> None:
    from orchestrator_core.pipeline_state import StepView

    view = StepView(
        name='say "hi"',
        description="d",
        script="s.py",
        depends_on=(),
        state=StepState.NEVER_RUN,
        completed=False,
        tested=False,
        tested_stale=False,
        tested_at=None,
        last_run=None,
        started_at=None,
        finished_at=None,
        duration_s=None,
        exit_code=None,
        error=None,
        skip_reason=None,
        run_id=None,
        attempt=None,
        pid=None,
        outdated=(),
    )
    assert '"say \\"hi\\"" [label="say \\"hi\\"\\nnever run"' in pipeline_dot([view])


def test_legend_names_every_state() -> None:
    html = legend_html()
    for style in STATE_STYLES.values():
        assert style.label in html and style.fill in html


def test_expected_durations_are_medians_of_successful_runs() -> None:
    def record(run_id: str, a: float, a_state: str = "succeeded") -> dict:
        return {
            "run_id": run_id,
            "state": "succeeded",
            "steps": {
                "a": {"state": a_state, "duration_s": a},
                "b": {"state": "succeeded", "duration_s": 1.0},
            },
        }

    records = [record("1", 2.0), record("2", 4.0), record("3", 100.0, "failed"), record("4", 9.0)]
    assert expected_durations(records, exclude_run="4") == {"a": 3.0, "b": 1.0}


def test_progress_counts_done_steps_and_estimates_what_is_left() -> None:
    now = utc_now()
    started = iso(now - timedelta(seconds=10))
    waves = [["a"], ["b"], ["c"]]
    states = {"a": StepState.SUCCEEDED, "b": StepState.RUNNING, "c": StepState.QUEUED}
    expected = {"a": 6.0, "b": 8.0, "c": 5.0}
    p = run_progress(waves, states, {"b": iso(now - timedelta(seconds=4))}, started, expected, now)
    assert (p.total, p.done, p.running) == (3, 1, ("b",))
    assert round(p.elapsed_s) == 10
    assert round(p.eta_s) == 4 + 5
    assert 1 / 3 < p.fraction < 2 / 3
    assert "1 of 3 steps done" in p.summary() and "running: b" in p.summary()


def test_progress_without_history_has_no_eta_and_parallel_waves_overlap() -> None:
    now = utc_now()
    states = {"a": StepState.QUEUED, "b": StepState.QUEUED}
    assert run_progress([["a", "b"]], states, {}, iso(now), {"a": 3.0}, now).eta_s is None
    both = {"a": 3.0, "b": 5.0}
    assert run_progress([["a", "b"]], states, {}, iso(now), both, now, max_parallel=2).eta_s == 5.0
    assert run_progress([["a", "b"]], states, {}, iso(now), both, now, max_parallel=1).eta_s == 8.0


def test_log_tail_reads_only_the_end(tmp_path: Path) -> None:
    log = tmp_path / "step.log"
    log.write_text(
        "".join(f"2026-11-25T22:13:{i % 60:02d}.444Z stdout line {i}\n" for i in range(50_000))
    )
    lines = tail_lines(log, max_lines=3, max_bytes=4096)
    assert [ln.rsplit(" ", 1)[1] for ln in lines] == ["49997", "49998", "49999"]
    assert short_line(lines[-1]) == "22:13:19 out line 49999"
    assert tail_lines(tmp_path / "missing.log") == []
    assert tail_text(tmp_path / "missing.log") == "(no log file: the step has not started)"
    assert "printed nothing" in tail_text(tmp_path / "missing.log", started=True)


def test_formatting() -> None:
    assert fmt.duration(None) == ""
    assert fmt.duration(0.42) == "0.4 s"
    assert fmt.duration(125) == "2 min 05 s"
    assert fmt.duration(3 * 3600 + 120) == "3 h 02 min"
    now = utc_now()
    assert fmt.age(iso(now - timedelta(minutes=5)), now) == "5 min ago"
    assert fmt.timestamp("2026-11-25T22:13:17.444Z") == "2026-11-25 22:13:17 UTC"
    assert fmt.when(None) == ""
