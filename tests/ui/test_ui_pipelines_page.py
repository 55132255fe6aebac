"""The pipelines page, driven through the whole app with AppTest on real pipelines folders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from ui_helpers import (
    Keys,
    chain,
    click,
    engine,
    page,
    step_states,
    texts,
    wait_until,
    write_pipeline,
)

from orchestrator_core import paths
from orchestrator_core.locks import owner_alive, read_owner
from orchestrator_core.plan import Selection


def wait_for_states(at, expected: dict[str, str], timeout: float = 30.0) -> None:
    """Rerun the page until its steps table shows `expected` (bounded)."""

    def shows() -> bool:
        at.run()
        states = step_states(at)
        return all(states.get(k) == v for k, v in expected.items())

    wait_until(shows, timeout, every=0.2)


def finish_active_runs(timeout: float = 30.0) -> None:
    for active in engine().active_runs():
        assert engine().wait(active.run_id, timeout) is not None, "run did not finish"


def test_query_param_chooses_the_pipeline(pdir: Path) -> None:
    write_pipeline(pdir, "alpha", chain("a"), name="Alpha Pipeline")
    write_pipeline(pdir, "beta", chain("x", "y"), name="Beta Pipeline")
    at = page("pipelines", pipeline="beta")
    assert not at.exception
    assert at.header[0].value == "Beta Pipeline"
    assert at.selectbox(key=Keys.PIPELINE).value == "beta"
    assert list(step_states(at)) == ["x", "y"]


def test_choosing_a_pipeline_puts_it_in_the_url(pdir: Path) -> None:
    write_pipeline(pdir, "alpha", chain("a"))
    write_pipeline(pdir, "beta", chain("x"))
    at = page("pipelines")
    assert at.query_params["pipeline"] == "alpha"
    at.selectbox(key=Keys.PIPELINE).select("beta").run()
    assert at.query_params["pipeline"] == "beta"
    assert list(step_states(at)) == ["x"]


def test_unknown_pipeline_in_url_falls_back_with_a_message(three_steps: Path) -> None:
    at = page("pipelines", pipeline="nope")
    assert not at.exception
    assert "There is no pipeline 'nope'" in texts(at)
    assert at.header[0].value == "Demo"


def test_no_pipelines_shows_how_to_add_one(pdir: Path) -> None:
    at = page("pipelines")
    assert not at.exception
    assert "No pipelines in" in at.info[0].value


def test_run_pipeline_shows_the_plan_then_every_step_succeeds(three_steps: Path) -> None:
    at = page("pipelines", pipeline="demo")
    assert set(step_states(at).values()) == {"never_run"}
    click(at, Keys.RUN_ALL)
    assert "Plan: all steps" in texts(at)
    assert not engine().active_runs(), "a multi-step run waits for confirmation"
    click(at, Keys.CONFIRM_YES)
    assert not at.exception
    assert "Started run" in at.success[0].value
    finish_active_runs()
    wait_for_states(at, dict.fromkeys(["extract", "transform", "load"], "succeeded"))
    frame = at.table[0].value
    assert set(frame["Completed"]) == {"yes"}
    assert set(frame["Exit code"]) == {"0"}
    assert set(frame["Outdated"]) == {"up to date"}


def test_run_step_runs_only_that_step(three_steps: Path) -> None:
    at = page("pipelines", pipeline="demo", step="extract")
    click(at, Keys.RUN_STEP)  # one step: starts at once
    assert "Started run" in at.success[0].value
    finish_active_runs()
    wait_for_states(at, {"extract": "succeeded"})
    assert step_states(at) == {
        "extract": "succeeded",
        "transform": "never_run",
        "load": "never_run",
    }


def test_run_step_with_an_unmet_dependency_shows_the_warning_first(three_steps: Path) -> None:
    at = page("pipelines", pipeline="demo", step="transform")
    click(at, Keys.RUN_STEP)
    assert not engine().active_runs(), "nothing starts before the warning was seen"
    assert "depends on 'extract'" in texts(at)
    click(at, Keys.CONFIRM_YES)
    assert "Started run" in at.success[0].value
    finish_active_runs()


def test_a_queued_step_does_not_show_the_previous_runs_figures(pdir: Path) -> None:
    go = pdir.parent / "go"
    wait = f"while not __import__('os').path.exists({str(go)!r}):\n    time.sleep(0.05)"
    write_pipeline(pdir, "two", chain("first", "second", first=wait))
    go.touch()
    assert engine().wait(engine().submit("two", Selection("all")), 30)["state"] == "succeeded"
    go.unlink()
    run_id = engine().submit("two", Selection("all"))
    try:
        at = page("pipelines", pipeline="two", step="second")
        wait_for_states(at, {"first": "running", "second": "queued"})
        entry = engine().status.load("two").entries["second"]
        assert entry["state"] == "queued" and entry["run_id"] == run_id
        assert (entry["duration_s"], entry["exit_code"], entry["finished_at"]) == (None, None, None)
        assert entry["last_run"] is not None, "the seed's last_run stays"
    finally:
        go.touch()
        finish_active_runs()


def test_run_from_here_runs_the_step_and_downstream(three_steps: Path) -> None:
    at = page("pipelines", pipeline="demo", step="transform")
    click(at, Keys.RUN_FROM)
    shown = texts(at)
    assert "Plan: from transform (and downstream)" in shown
    assert "depends on 'extract', which is not in this run" in shown
    click(at, Keys.CONFIRM_YES)
    finish_active_runs()
    wait_for_states(at, {"transform": "succeeded", "load": "succeeded"})
    assert step_states(at)["extract"] == "never_run"


def test_run_up_to_here_runs_the_step_and_upstream(three_steps: Path) -> None:
    at = page("pipelines", pipeline="demo", step="transform")
    click(at, Keys.RUN_TO)
    click(at, Keys.CONFIRM_YES)
    finish_active_runs()
    wait_for_states(at, {"extract": "succeeded", "transform": "succeeded"})
    assert step_states(at)["load"] == "never_run"


def test_mark_tested_then_untested(three_steps: Path) -> None:
    at = page("pipelines", pipeline="demo", step="load")
    click(at, Keys.MARK_TESTED)
    assert not at.exception
    frame = at.table[0].value.set_index("Step")
    assert frame.loc["load", "Tested"] == "yes"
    assert frame.loc["extract", "Tested"] == ""
    assert "peripheries=2" in at.get("graphviz_chart")[0].proto.spec
    (tested,) = [c.value for c in at.caption if c.value.startswith("Tested ")]
    assert tested.endswith(" UTC (just now)"), "a time as the other columns show it"
    click(at, Keys.MARK_UNTESTED)
    assert at.table[0].value.set_index("Step").loc["load", "Tested"] == ""


def test_tested_step_turns_stale_when_its_script_changes(three_steps: Path) -> None:
    at = page("pipelines", pipeline="demo", step="load")
    click(at, Keys.MARK_TESTED)
    script = three_steps / "demo" / "load.py"
    script.write_text(script.read_text() + "\n# changed\n")
    at.run()
    assert at.table[0].value.set_index("Step").loc["load", "Tested"].startswith("yes (stale")


def test_reset_step_asks_first_then_clears_it(three_steps: Path) -> None:
    run_id = engine().submit("demo", Selection("step", "extract"))
    assert engine().wait(run_id, 30) is not None
    at = page("pipelines", pipeline="demo", step="extract")
    assert step_states(at)["extract"] == "succeeded"
    click(at, Keys.RESET_STEP)
    assert "Reset step 'extract' of 'demo'?" in texts(at)
    assert step_states(at)["extract"] == "succeeded", "nothing happens before confirmation"
    click(at, Keys.CONFIRM_YES)
    assert step_states(at)["extract"] == "never_run"
    assert "Reset step 'extract'" in at.success[0].value


def test_a_question_about_one_step_goes_when_another_step_is_chosen(three_steps: Path) -> None:
    at = page("pipelines", pipeline="demo", step="extract")
    click(at, Keys.RESET_STEP)
    assert "Reset step 'extract' of 'demo'?" in texts(at)
    at.selectbox(key=Keys.STEP).select("load").run()
    assert "Reset step 'extract'" not in texts(at)
    assert Keys.CONFIRM_YES not in [b.key for b in at.button]


def _in_order(node):
    """Every element of the page, top to bottom."""
    for child in getattr(node, "children", {}).values():
        yield child
        yield from _in_order(child)


def test_a_steps_question_is_asked_in_the_step_panel(three_steps: Path) -> None:
    """Run from here asks beside its button, not at the top of a long page."""
    at = page("pipelines", pipeline="demo", step="transform")
    click(at, Keys.RUN_FROM)
    values = [str(getattr(el, "value", "")) for el in _in_order(at.main)]
    step_heading = values.index("Step")
    plan = next(i for i, v in enumerate(values) if v.startswith("**Plan: from transform"))
    assert plan > step_heading
    click(at, Keys.RESET_ALL)  # the page's own question stays at the top
    values = [str(getattr(el, "value", "")) for el in _in_order(at.main)]
    reset = next(i for i, v in enumerate(values) if v.startswith("Reset every step"))
    assert reset < values.index("Step")


def test_reset_all_can_be_called_off(three_steps: Path) -> None:
    run_id = engine().submit("demo", Selection("all"))
    assert engine().wait(run_id, 30) is not None
    at = page("pipelines", pipeline="demo")
    click(at, Keys.RESET_ALL)
    click(at, Keys.CONFIRM_NO)
    assert set(step_states(at).values()) == {"succeeded"}
    click(at, Keys.RESET_ALL)
    click(at, Keys.CONFIRM_YES)
    assert set(step_states(at).values()) == {"never_run"}


def test_cancel_a_long_step(pdir: Path) -> None:
    write_pipeline(pdir, "slow", chain("nap", "after", nap="time.sleep(60)"))
    at = page("pipelines", pipeline="slow", step="nap")
    click(at, Keys.RUN_STEP)
    wait_for_states(at, {"nap": "running"})
    assert at.button(key=Keys.RUN_ALL).disabled, "runs are refused while one is in progress"
    assert at.get("progress"), "a running pipeline shows a progress bar"
    click(at, Keys.CANCEL)
    assert "Cancel run" in texts(at)
    click(at, Keys.CONFIRM_YES)
    assert "Cancelling run" in texts(at) or " cancelled: " in texts(at)
    finish_active_runs()
    wait_for_states(at, {"nap": "cancelled"})
    assert not at.button(key=Keys.RUN_ALL).disabled


def panel_chips(at) -> list[str]:
    """The state shown in the step panel (one chip alone on its line)."""
    return [m.value.split(">")[1].split("<")[0] for m in at.markdown if m.value.startswith("<span")]


def test_the_step_panel_follows_a_run(pdir: Path) -> None:
    go = pdir.parent / "go"
    wait = (
        f"while not __import__('os').path.exists({str(go)!r}):\n    time.sleep(0.05)\nprint('went')"
    )
    write_pipeline(pdir, "slow", chain("nap", nap=wait))
    at = page("pipelines", pipeline="slow", step="nap")
    assert "never_run" in panel_chips(at)
    click(at, Keys.RUN_STEP)
    wait_for_states(at, {"nap": "running"})
    assert "running" in panel_chips(at), "the panel shows the step's state during the run"
    assert at.button(key=Keys.RESET_STEP).disabled
    go.touch()
    finish_active_runs()
    at.run()
    assert "succeeded" in panel_chips(at)
    assert any("went" in c.value for c in at.code), "the log in the panel"


def test_a_cli_run_shows_the_busy_message_and_can_be_cancelled_from_the_page(pdir: Path) -> None:
    write_pipeline(pdir, "slow", chain("nap", nap="time.sleep(60)"))
    at = page("pipelines", pipeline="slow", step="nap")  # rendered while idle
    cli = subprocess.Popen(
        [sys.executable, "-m", "orchestrator_core", "run", "slow"],
        env={**os.environ, "ORCHESTRATOR_PIPELINES_DIR": str(pdir)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        lock = paths.run_lock_path(pdir, "slow")
        wait_until(lambda: owner_alive(read_owner(lock)), 30)
        click(at, Keys.RUN_STEP)
        assert not at.exception
        assert "is already running" in at.error[0].value
        assert "The page now shows that run; Cancel run stops it." in at.error[0].value
        wait_for_states(at, {"nap": "running"})
        assert "started by cli" in texts(at)
        # Cancel works on a command-line run too: its process is asked to stop (SIGTERM).
        click(at, Keys.CANCEL)
        assert "Cancel run" in at.warning[0].value
        click(at, Keys.CONFIRM_YES)
        assert not at.exception
        # The CLI may stop before the page redraws; then the page shows the outcome instead.
        assert "Asked the command-line run" in texts(at) or " cancelled: " in texts(at)
        assert cli.wait(30) == 130, "the CLI treats the dashboard's stop like Ctrl-C"
        wait_for_states(at, {"nap": "cancelled"})
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGTERM)
            cli.wait(30)


def test_invalid_pipeline_shows_its_problems_not_a_traceback(pdir: Path) -> None:
    write_pipeline(pdir, "good", chain("a"))
    broken = pdir / "broken"
    broken.mkdir()
    (broken / "pipeline.yaml").write_text(
        'name: "Broken"\ndescription: "x"\nsteps:\n  - name: a\n    script: missing.py\n'
        "    description: step a\n    depends_on: [zzz]\n"
    )
    at = page("pipelines", pipeline="broken")
    assert not at.exception
    assert "invalid and cannot run" in at.error[0].value
    problems = at.code[0].value
    assert "missing.py" in problems
    assert "unknown step 'zzz'" in problems
    assert "pipeline.yaml" in problems
    assert "[invalid]" in at.selectbox(key=Keys.PIPELINE).format_func("broken")
    at.selectbox(key=Keys.PIPELINE).select("good").run()
    assert step_states(at) == {"a": "never_run"}, "the other pipelines keep working"


def test_a_run_whose_pipeline_file_broke_can_still_be_cancelled(pdir: Path) -> None:
    folder = write_pipeline(pdir, "slow", chain("nap", nap="time.sleep(60)"))
    run_id = engine().submit("slow", Selection("all"))
    text = (folder / "pipeline.yaml").read_text()
    (folder / "pipeline.yaml").write_text(text + "oops: [\n")
    at = page("pipelines", pipeline="slow")
    assert not at.exception
    assert "then press Refresh discovery" in at.error[0].value
    assert f"Run {run_id} began before the file broke" in texts(at)
    click(at, Keys.CANCEL)
    assert engine().wait(run_id, 30)["state"] == "cancelled"
    (folder / "pipeline.yaml").write_text(text)
    click(at, Keys.REFRESH)
    assert step_states(at) == {"nap": "cancelled"}, "fixed and refreshed: the page is back"


def test_yaml_syntax_error_names_the_line(pdir: Path) -> None:
    (pdir / "typo.yaml").write_text("name: x\nsteps: [\n")
    at = page("pipelines", pipeline="typo")
    assert not at.exception
    assert "line" in at.code[0].value


def test_corrupt_status_file_gets_a_message_and_a_fresh_start(three_steps: Path) -> None:
    paths.status_path(three_steps, "demo").write_text("{not json")
    at = page("pipelines", pipeline="demo")
    assert not at.exception
    assert "moved aside" in texts(at)
    assert set(step_states(at).values()) == {"never_run"}


def test_deleted_script_makes_the_pipeline_invalid_with_a_clear_message(three_steps: Path) -> None:
    (three_steps / "demo" / "load.py").unlink()
    at = page("pipelines", pipeline="demo")
    assert not at.exception
    assert "load.py" in at.code[0].value


def test_failed_step_shows_its_error_and_log(pdir: Path) -> None:
    boom = 'print("working on it")\nprint("database is locked", file=sys.stderr)\nreturn 3'
    write_pipeline(pdir, "fails", chain("boom", "never", boom=boom))
    at = page("pipelines", pipeline="fails", step="boom")
    run_id = engine().submit("fails", Selection("all"))
    assert engine().wait(run_id, 30) is not None
    at.run()
    assert step_states(at) == {"boom": "failed", "never": "skipped"}
    assert "boom failed (exit code 3)" in texts(at)
    assert any("database is locked" in c.value for c in at.code)
    assert at.expander[-2].label.startswith(f"Full log of run {run_id}")
    assert any("working on it" in c.value for c in at.code), "the log is in the expander"
    assert at.get("download_button"), "the full log can be downloaded"


def test_dag_source_carries_the_state_colours(three_steps: Path) -> None:
    run_id = engine().submit("demo", Selection("step", "extract"))
    assert engine().wait(run_id, 30) is not None
    at = page("pipelines", pipeline="demo")
    dot = at.get("graphviz_chart")[0].proto.spec
    assert '"extract" [label="extract\\nsucceeded' in dot
    assert 'fillcolor="#21c354"' in dot  # succeeded: green
    assert 'fillcolor="#ffffff"' in dot  # never run: white
    assert '"extract" -> "transform"' in dot
    assert "dashed" in dot, "outdated steps are marked"


@pytest.mark.parametrize("kind_key", [Keys.RUN_OUTDATED])
def test_run_only_outdated_when_all_is_up_to_date(three_steps: Path, kind_key: str) -> None:
    run_id = engine().submit("demo", Selection("all"))
    assert engine().wait(run_id, 30) is not None
    at = page("pipelines", pipeline="demo")
    click(at, kind_key)
    assert "every step is up to date" in at.info[0].value
    assert not engine().active_runs()
