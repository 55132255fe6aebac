"""The command line, run as a real subprocess: every command, its output, its --json keys
and its exit codes (0 ok, 1 a step did not succeed, 2 user error, 130 Ctrl-C)."""

from __future__ import annotations

import json
import os
import re
import signal

import pytest

PROGRESS = re.compile(r"^\[(\d+)/(\d+)\] (\S+)\s+(\S+)")


@pytest.fixture
def demo(make_pipeline, write_yaml):
    """A valid three-step pipeline, plus an invalid one beside it."""
    make_pipeline(
        "demo",
        [
            {"name": "load", "code": "print('loading rows')\nprint('a warning', file=sys.stderr)"},
            {"name": "clean", "depends_on": ["load"]},
            {"name": "report", "depends_on": ["clean"]},
        ],
        name="Demo pipeline",
    )
    write_yaml(
        "broken",
        "name: broken\ndescription: d\nsteps:\n  - name: a\n    script: gone.py\n    description: x\n    timeout: -1\n",
    )
    return "demo"


def progress_lines(out):
    return [m.groups() for line in out.splitlines() if (m := PROGRESS.match(line))]


def test_list_shows_valid_and_invalid_pipelines(cli, demo):
    code, out, err = cli("list")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "STEPS", "VALID", "STATES", "NAME"]
    assert lines[1].split()[:3] == ["broken", "-", "INVALID"]
    assert "2 problem(s)" in lines[1]
    assert lines[2].split()[:5] == ["demo", "3", "valid", "3", "never_run"]
    assert lines[2].endswith("Demo pipeline")


def test_list_json(cli, demo, pipelines_dir):
    code, out, _ = cli("list", "--json")
    assert code == 0
    items = {item["id"]: item for item in json.loads(out)}
    keys = {"id", "name", "description", "path", "layout", "valid", "steps", "states", "problems"}
    assert all(set(item) == keys for item in items.values())
    assert items["demo"]["valid"] is True and items["demo"]["steps"] == 3
    assert items["demo"]["states"] == {"never_run": 3}
    assert items["demo"]["path"] == str(pipelines_dir / "demo.yaml")
    assert items["demo"]["layout"] == "file"
    assert items["broken"]["valid"] is False and len(items["broken"]["problems"]) == 2


def test_list_with_no_pipelines(cli, pipelines_dir):
    code, out, _ = cli("list")
    assert (code, out.strip()) == (0, f"no pipelines in {pipelines_dir}")


def test_validate_prints_every_problem_and_exits_1(cli, demo):
    code, out, err = cli("validate")
    assert code == 1
    assert out.splitlines() == [
        "INVALID  broken",
        "  pipelines/broken.yaml: step 'a': timeout (line 7): must be greater than 0, got -1",
        "  pipelines/broken.yaml: step 'a': script (line 5): 'gone.py' not found at "
        "pipelines/broken/gone.py; create it or fix the name",
        "ok       demo (3 steps)",
    ]
    assert "Traceback" not in err


def test_validate_one_pipeline(cli, demo):
    assert cli("validate", "demo")[:2] == (0, "ok       demo (3 steps)\n")
    code, out, _ = cli("validate", "broken")
    assert code == 1 and "demo" not in out
    code, _, err = cli("validate", "dmeo")
    assert code == 2
    assert "error: no pipeline 'dmeo' in pipelines; did you mean 'demo'?" in err


def test_plan_human_and_json(cli, demo):
    code, out, _ = cli("plan", "demo")
    assert code == 0
    assert out.splitlines() == [
        "plan for demo: all steps, 3 step(s)",
        "wave 1:",
        "  run   load: whole pipeline",
        "wave 2:",
        "  run   clean: whole pipeline",
        "wave 3:",
        "  run   report: whole pipeline",
    ]
    code, out, _ = cli("plan", "demo", "--step", "clean", "--json")
    assert code == 0
    plan = json.loads(out)
    assert set(plan) == {"pipeline", "selection", "steps", "waves", "skipped", "warnings"}
    assert plan["selection"] == {"kind": "step", "step": "clean"}
    assert plan["steps"] == [{"name": "clean", "reason": "selected step"}]
    assert plan["waves"] == [["clean"]]
    assert {"name": "load", "reason": "not selected"} in plan["skipped"]
    assert plan["warnings"] == [
        "step 'clean' depends on 'load', which is not in this run and is never_run; "
        "its input may be missing"
    ]


@pytest.mark.parametrize(
    ("option", "steps"),
    [
        (["--from", "clean"], ["clean", "report"]),
        (["--to", "clean"], ["load", "clean"]),
        (["--only-outdated"], ["load", "clean", "report"]),
    ],
)
def test_plan_selections(cli, demo, option, steps):
    code, out, _ = cli("plan", "demo", *option, "--json")
    assert code == 0
    assert [s["name"] for s in json.loads(out)["steps"]] == steps


def test_run_prints_a_line_per_start_and_end_with_progress(cli, demo):
    code, out, err = cli("run", "demo")
    assert code == 0, err
    assert progress_lines(out) == [
        ("0", "3", "start", "load"),
        ("1", "3", "succeeded", "load"),
        ("1", "3", "start", "clean"),
        ("2", "3", "succeeded", "clean"),
        ("2", "3", "start", "report"),
        ("3", "3", "succeeded", "report"),
    ]
    lines = out.splitlines()
    run_id = re.match(r"run (\S+) of demo: all steps, 3 step\(s\)", lines[0]).group(1)
    assert re.match(r"run succeeded in \d+\.\d\ds: 3 succeeded$", lines[-2])
    assert lines[-1] == f"logs: python -m orchestrator_core logs {run_id}"
    # Without --follow the steps' own output is not shown.
    assert "loading rows" not in out and "a warning" not in err


def test_run_follow_shows_the_output(cli, demo):
    code, out, err = cli("run", "demo", "--step", "load", "--follow")
    assert code == 0
    assert "  load | loading rows" in out.splitlines()
    assert "  load | a warning" in err.splitlines()


def test_run_selections(cli, demo, pipelines_dir):
    code, out, err = cli("run", "demo", "--step", "clean")
    assert code == 0
    assert "warning: step 'clean' depends on 'load', which is not in this run" in err
    assert [g[3] for g in progress_lines(out) if g[2] == "start"] == ["clean"]
    code, out, _ = cli("run", "demo", "--to", "clean")
    assert [g[3] for g in progress_lines(out) if g[2] == "start"] == ["load", "clean"]
    code, out, _ = cli("run", "demo", "--only-outdated")
    assert code == 0
    assert [g[3] for g in progress_lines(out) if g[2] == "start"] == ["report"]
    code, out, _ = cli("run", "demo", "--only-outdated")
    assert (code, out.strip()) == (
        0,
        "nothing to run in 'demo' for only outdated steps: every step is up to date",
    )
    (pipelines_dir / "demo" / "clean.py").write_text("print('clean v2')\n")
    code, out, _ = cli("run", "demo", "--from", "clean")
    assert [g[3] for g in progress_lines(out) if g[2] == "start"] == ["clean", "report"]


FAILING = [
    {"name": "bad", "code": "print('boom', file=sys.stderr)\nraise SystemExit(5)"},
    {"name": "other"},
    {"name": "after_bad", "depends_on": ["bad"]},
]


def test_run_exits_1_when_a_step_fails_and_the_rest_is_skipped(cli, make_pipeline, read_status):
    make_pipeline("f", FAILING)
    code, out, err = cli("run", "f")
    assert code == 1
    assert ("1", "3", "failed", "bad") in progress_lines(out)
    assert any(
        line.startswith("[") and "skipped" in line and "other" in line for line in out.splitlines()
    )
    assert re.search(r"run failed in \S+: 1 failed, 2 skipped", out)
    assert read_status("f")["other"]["state"] == "skipped"
    assert "Traceback" not in err


def test_run_continue_on_failure_flag(cli, make_pipeline, read_status):
    make_pipeline("f", FAILING)
    code, out, _ = cli("run", "f", "--continue-on-failure")
    assert code == 1
    status = read_status("f")
    assert status["other"]["state"] == "succeeded"
    assert status["after_bad"]["skip_reason"] == "upstream failed: bad"
    assert "upstream failed: bad" in out


def test_run_exits_1_on_a_timeout(cli, make_pipeline, read_status):
    make_pipeline("t", [{"name": "slow", "code": "time.sleep(30)", "timeout": 0.5}])
    code, out, _ = cli("run", "t")
    assert code == 1
    assert ("1", "1", "timed_out", "slow") in progress_lines(out)
    assert read_status("t")["slow"]["state"] == "timed_out"


def test_run_max_parallel_option(cli, make_pipeline, pipelines_dir):
    make_pipeline("m", [{"name": "a"}, {"name": "b"}])
    code, _, _ = cli("run", "m", "--max-parallel", "2")
    assert code == 0
    (record_file,) = (pipelines_dir / ".runs" / "m").glob("*.json")
    assert json.loads(record_file.read_text())["max_parallel"] == 2


def test_status_human_and_json(cli, demo, pipelines_dir):
    cli("run", "demo", "--step", "load")
    code, out, _ = cli("status", "demo")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "demo: Demo pipeline"
    assert lines[1].split() == [
        "STEP",
        "STATE",
        "TESTED",
        "LAST",
        "RUN",
        "DURATION",
        "EXIT",
        "OUTDATED",
    ]
    load = lines[2].split()
    assert load[:3] == ["load", "succeeded", "no"] and load[5] == "0"
    assert lines[2].endswith("up to date")
    assert lines[3].split()[:2] == ["clean", "never_run"] and lines[3].endswith("never succeeded")

    code, out, _ = cli("status", "demo", "--json")
    data = json.loads(out)
    assert set(data) == {"pipeline", "name", "steps"}
    assert data["pipeline"] == "demo" and data["name"] == "Demo pipeline"
    first = data["steps"][0]
    for key in (
        "name",
        "description",
        "script",
        "depends_on",
        "state",
        "completed",
        "tested",
        "tested_stale",
        "tested_at",
        "last_run",
        "started_at",
        "finished_at",
        "duration_s",
        "exit_code",
        "error",
        "skip_reason",
        "run_id",
        "attempt",
        "pid",
        "outdated",
    ):
        assert key in first, key
    assert (first["name"], first["state"], first["completed"]) == ("load", "succeeded", True)
    assert data["steps"][1]["outdated"] == ["never succeeded"]


def test_mark_tested_and_undo(cli, demo, pipelines_dir):
    code, out, _ = cli("mark-tested", "demo", "clean")
    assert (code, out.strip()) == (0, "demo: clean marked tested")
    steps = {s["name"]: s for s in json.loads(cli("status", "demo", "--json")[1])["steps"]}
    assert steps["clean"]["tested"] is True and steps["clean"]["tested_stale"] is False
    assert "yes" in cli("status", "demo")[1].splitlines()[3].split()
    (pipelines_dir / "demo" / "clean.py").write_text("print('edited after testing')\n")
    assert "yes (stale)" in cli("status", "demo")[1]
    code, out, _ = cli("mark-tested", "demo", "clean", "--undo")
    assert (code, out.strip()) == (0, "demo: clean marked untested")
    steps = {s["name"]: s for s in json.loads(cli("status", "demo", "--json")[1])["steps"]}
    assert steps["clean"]["tested"] is False


def test_reset_one_step_or_all(cli, demo, read_status):
    cli("run", "demo")
    cli("mark-tested", "demo", "load")
    code, out, _ = cli("reset", "demo", "clean")
    assert (code, out.strip()) == (0, "demo: reset clean")
    status = read_status("demo")
    assert status["clean"]["state"] == "never_run" and status["load"]["state"] == "succeeded"
    code, out, _ = cli("reset", "demo")
    assert (code, out.strip()) == (0, "demo: reset load, clean, report")
    status = read_status("demo")
    assert {s["state"] for s in status.values()} == {"never_run"}
    assert status["load"]["tested"] is True


def test_logs_of_a_run_and_of_one_step(cli, demo, pipelines_dir):
    code, out, _ = cli("run", "demo", "--to", "clean")
    run_id = re.search(r"logs (\S+)$", out.strip()).group(1)
    code, out, _ = cli("logs", run_id)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "===== load (succeeded) ====="
    assert re.match(r"^\S+Z stdout loading rows$", lines[1])
    assert re.match(r"^\S+Z stderr a warning$", lines[2])
    assert "===== clean (succeeded) =====" in lines
    code, out, _ = cli("logs", run_id, "load")
    assert code == 0 and "=====" not in out and "stdout loading rows" in out
    code, _, err = cli("logs", run_id, "lod")
    assert code == 2 and f"error: run {run_id} has no step 'lod'; did you mean 'load'?" in err
    code, _, err = cli("logs", "no-such-run")
    assert code == 2 and "error: no run 'no-such-run'" in err


def test_pipelines_dir_from_the_environment(cli, demo, pipelines_dir):
    code, out, _ = cli(
        "validate",
        "demo",
        env={"ORCHESTRATOR_PIPELINES_DIR": str(pipelines_dir)},
        pipelines_dir_arg=None,
    )
    assert (code, out) == (0, "ok       demo (3 steps)\n")
    # The option wins over the environment, and may also follow the command.
    code, out, _ = cli(
        "list",
        "--pipelines-dir",
        str(pipelines_dir),
        env={"ORCHESTRATOR_PIPELINES_DIR": "/nonexistent"},
        pipelines_dir_arg=None,
    )
    assert code == 0 and "demo" in out


def test_keep_runs_from_the_environment_in_the_cli(cli, demo, pipelines_dir):
    for _ in range(3):
        assert cli("run", "demo", "--step", "load", env={"ORCHESTRATOR_KEEP_RUNS": "2"})[0] == 0
    assert len(list((pipelines_dir / ".runs" / "demo").glob("*.json"))) == 2


USER_ERRORS = [
    (["run"], "the following arguments are required: pipeline"),
    (["run", "demo", "--step", "load", "--from", "load"], "not allowed with argument"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["run", "demo", "--max-parallel", "two"], "invalid int value: 'two'"),
    (["run", "demo", "--max-parallel", "0"], "error: --max-parallel must be at least 1, got 0"),
    (
        ["run", "demo", "--step", "lod"],
        "error: pipeline 'demo' has no step 'lod'; did you mean 'load'?",
    ),
    (["plan", "demo", "--to", "Load"], "did you mean 'load'? (names are case-sensitive)"),
    (["run", "dmeo"], "error: no pipeline 'dmeo' in pipelines; did you mean 'demo'?"),
    (
        ["status", "nothing_like_it"],
        "error: no pipeline 'nothing_like_it' in pipelines (known: broken, demo)",
    ),
    (["run", "broken"], "error: pipeline 'broken' is invalid: pipelines/broken.yaml: step 'a'"),
    (["status", "broken"], "error: pipeline 'broken' is invalid"),
    (["mark-tested", "demo", "nope"], "error: pipeline 'demo' has no step 'nope'"),
    (["reset", "demo", "nope"], "error: pipeline 'demo' has no step 'nope'"),
    (["runs", "--limit", "0"], "error: --limit must be at least 1"),
    (["runs", "dmeo"], "error: no pipeline 'dmeo' in pipelines; did you mean 'demo'?"),
]


@pytest.mark.parametrize(
    ("args", "message"), USER_ERRORS, ids=[" ".join(a) for a, _ in USER_ERRORS]
)
def test_user_errors_exit_2_with_one_clear_line(cli, demo, args, message):
    code, _out, err = cli(*args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_bad_environment_settings_are_user_errors(cli, demo, tmp_path):
    code, _, err = cli("run", "demo", env={"ORCHESTRATOR_KEEP_RUNS": "many"})
    assert code == 2 and "ORCHESTRATOR_KEEP_RUNS='many' must be a whole number >= 1" in err
    for command in (("status", "demo"), ("plan", "demo")):  # they prune nothing
        code, _, err = cli(*command, env={"ORCHESTRATOR_KEEP_RUNS": "many"})
        assert code == 0, (command, err)
    assert "Traceback" not in err
    a_file = tmp_path / "not_a_folder"
    a_file.write_text("")
    code, _out, err = cli("list", pipelines_dir_arg=a_file)
    assert code == 2 and f"the pipelines folder {a_file} is not a folder" in err
    code, _out, err = cli("validate", pipelines_dir_arg=tmp_path / "typo")
    assert code == 2, "a mistyped folder must not pass a CI check"
    assert f"the pipelines folder {tmp_path / 'typo'} does not exist" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "hangup"])
def test_ctrl_c_cancels_the_running_steps_and_exits_130(
    cli_start, make_pipeline, process_tree, pid_gone, read_status, wait_until, pipelines_dir, sig
):
    """Ctrl-C, and SIGHUP (the terminal closed), cancel the steps: none outlives the CLI."""
    make_pipeline("c", [process_tree.step("long"), {"name": "next", "depends_on": ["long"]}])
    run = cli_start("run", "c")
    pids = process_tree.pids()
    wait_until(lambda: read_status("c").get("long", {}).get("state") == "running")
    os.kill(run.pid, sig)
    out, err = run.communicate(timeout=30)
    assert run.returncode == 130
    assert "interrupted: cancelling the running steps..." in err
    assert "Traceback" not in err
    assert "run cancelled" in out
    assert all(pid_gone(pid) for pid in pids.values()), pids
    status = read_status("c")
    assert status["long"]["state"] == "cancelled"
    assert status["next"]["state"] == "skipped"
    (record_file,) = (pipelines_dir / ".runs" / "c").glob("*.json")
    assert json.loads(record_file.read_text())["state"] == "cancelled"


def test_corrupt_status_file_warns_and_the_pipeline_keeps_working(cli, demo, pipelines_dir):
    (pipelines_dir / ".demo.status.json").write_text("{ half a file")
    code, out, err = cli("status", "demo")
    assert code == 0
    (aside,) = pipelines_dir.glob(".demo.status.json.corrupt-*")
    assert f"warning: {pipelines_dir / '.demo.status.json'}: not valid JSON" in err
    assert f"moved aside to {aside.name}" in err
    assert err.count("moved aside") == 1
    assert "Traceback" not in err
    assert out.splitlines()[2].split()[:2] == ["load", "never_run"]
    assert cli("run", "demo")[0] == 0


def test_runs_json_has_the_documented_keys(cli, demo):
    assert cli("runs", "demo")[:2] == (0, "no runs yet\n")
    cli("run", "demo", "--step", "load")
    code, out, _ = cli("runs", "demo", "--json")
    assert code == 0
    (record,) = json.loads(out)
    for key in (
        "run_id",
        "pipeline_id",
        "trigger",
        "selection",
        "state",
        "started_at",
        "finished_at",
        "duration_s",
        "steps",
    ):
        assert key in record, key
    assert record["steps"]["load"]["state"] == "succeeded"
    assert set(record["steps"]["load"]) >= {"state", "duration_s", "log", "exit_code"}
