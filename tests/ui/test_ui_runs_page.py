"""The runs page: history, filters, and a run's timeline and logs."""

from __future__ import annotations

import shutil
from pathlib import Path

from ui_helpers import Keys, chain, engine, page, texts, write_pipeline

from orchestrator_core import paths
from orchestrator_core.plan import Selection


def run_and_wait(pipeline_id: str, selection: Selection | None = None) -> str:
    run_id = engine().submit(pipeline_id, selection or Selection())
    assert engine().wait(run_id, 30) is not None
    return run_id


def test_no_runs_yet(three_steps: Path) -> None:
    at = page("runs")
    assert not at.exception
    assert "No runs yet" in at.info[0].value


def test_history_lists_runs_and_shows_the_newest_in_detail(pdir: Path) -> None:
    write_pipeline(pdir, "good", chain("a", "b"))
    write_pipeline(pdir, "bad", chain("x", x='print("nope", file=sys.stderr)\nreturn 2'))
    first = run_and_wait("good")
    second = run_and_wait("bad")
    at = page("runs")
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["Run"]) == [second, first]
    assert list(table["State"]) == ["failed", "succeeded"]
    assert at.query_params["run"] == second
    shown = texts(at)
    assert f"Run {second}" in shown
    assert "nope" in shown, "a failed step's error is shown"
    assert at.expander[0].label.startswith("x — failed")
    assert at.get("vega_lite_chart"), "the timeline chart is drawn"


def test_filters_by_pipeline_and_state(pdir: Path) -> None:
    write_pipeline(pdir, "good", chain("a"))
    write_pipeline(pdir, "bad", chain("x", x="return 1"))
    run_and_wait("good")
    bad = run_and_wait("bad")
    at = page("runs")
    at.multiselect(key=Keys.RUNS_STATES).select("failed").run()
    assert list(at.dataframe[0].value["Run"]) == [bad]
    at.selectbox(key=Keys.RUNS_PIPELINE).select("good").run()
    assert at.dataframe[0].value.empty
    assert "No run matches" in at.info[0].value


def test_run_in_url_opens_its_detail_with_logs(three_steps: Path) -> None:
    first = run_and_wait("demo")
    run_and_wait("demo", Selection("step", "load"))
    at = page("runs", run=first)
    assert not at.exception
    assert at.selectbox(key=Keys.RUNS_RUN).value == first
    labels = [e.label for e in at.expander]
    assert [lab.split(" — ")[0] for lab in labels] == ["extract", "transform", "load"]
    assert all("succeeded" in lab for lab in labels)
    assert any("step extract done" in c.value for c in at.code)
    assert len(at.get("download_button")) == 3


def test_unknown_run_in_url_says_so(three_steps: Path) -> None:
    run_and_wait("demo")
    at = page("runs", run="20000101T000000000000Z-abcdef")
    assert not at.exception
    assert "no run '20000101T000000000000Z-abcdef'" in at.warning[0].value


def test_missing_log_and_runs_folder_do_not_break_the_page(three_steps: Path) -> None:
    run_id = run_and_wait("demo")
    shutil.rmtree(paths.runs_dir(three_steps, "demo") / run_id)  # the logs, not the record
    at = page("runs", run=run_id)
    assert not at.exception
    assert "no log file" in texts(at)
    assert not at.get("download_button"), "nothing to download without a log file"
    shutil.rmtree(paths.runs_dir(three_steps))
    at = page("runs")
    assert not at.exception
    assert "No runs yet" in at.info[0].value
