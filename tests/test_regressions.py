"""Regression tests for the bugs a review found in the core (each fails on the code before the
fix): cancel/start race, timeouts after closed pipes, second Ctrl-C, hand-edited status files,
reset after a dead run, validation of env names/NUL/non-finite numbers, failing log and status
writes, per-file discovery, skipped-step fields, progress counts, cancel during a retry delay,
unique log names, leftovers of a step's group, the busy message and stopping a CLI run, seed
status entries, the documented `runs --json` keys, long histories and the engine's memory.

Real files in tmp dirs and real subprocesses; every wait has a deadline."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import psutil
import pytest

from orchestrator_core.discovery import discover_pipelines
from orchestrator_core.errors import OrchestratorError, PipelineInvalidError, RunNotFoundError
from orchestrator_core.history import RunHistory, new_run_id
from orchestrator_core.status import utc_now

PROJECT = Path(__file__).resolve().parent.parent
PROGRESS = re.compile(r"^\[(\d+)/(\d+)\] (\S+)\s+(\S+)")

# Step code: note this process's pid in `argv[1]/<name>` (atomically), then sleep.
NOTE_PID = """\
def note(name, pid=None):
    d = pathlib.Path(sys.argv[1])
    (d / (name + ".tmp")).write_text(str(pid or os.getpid()))
    os.replace(d / (name + ".tmp"), d / name)
"""
SLEEPER = NOTE_PID + "note(os.environ['PIPELINE_STEP'])\ntime.sleep(30)\n"


def read_pid(folder: Path, name: str) -> int:
    return int((folder / name).read_text())


def processes_running(script: Path) -> list[int]:
    """Pids of live processes whose command line names `script`."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if str(script) in (proc.info["cmdline"] or []):
            found.append(proc.pid)
    return found


@pytest.fixture
def pid_dir(tmp_path):
    d = tmp_path / "pids"
    d.mkdir()
    return d


# --- 1. a cancel that lands while the step's process starts ----------------------------------


@pytest.mark.timeout(60)
def test_cancel_landing_while_the_step_starts_is_never_lost(
    make_pipeline, engine, pipelines_dir, pid_dir, pid_gone, leftover_pids, read_status
):
    make_pipeline("p", [{"name": "s", "args": [str(pid_dir)], "code": SLEEPER}])
    script = pipelines_dir / "p" / "s.py"
    for i in range(20):
        started = threading.Event()

        def on_event(ev, started=started):
            if ev.kind == "step_started":
                started.set()

        run_id = engine.submit("p", on_event=on_event)
        assert started.wait(10)
        # Sweep the cancel across the few milliseconds in which the process is being spawned.
        time.sleep((i % 10) * 0.0005)
        engine.cancel(run_id)
        record = engine.wait(run_id, timeout=10)
        assert record is not None, f"round {i}: the cancel was lost and the step ran on"
        assert record["state"] == "cancelled", (i, record)
        assert record["steps"]["s"]["state"] == "cancelled", (i, record)
        entry = read_status("p")["s"]
        assert entry["state"] == "cancelled" and entry["pid"] is None, (i, entry)
        if (pid_dir / "s").exists():
            pid = read_pid(pid_dir, "s")
            leftover_pids.append(pid)
            assert pid_gone(pid), (i, pid)
            (pid_dir / "s").unlink()
    assert processes_running(script) == []


# --- 2. the timeout holds after the step closed its stdout and stderr ------------------------


def test_timeout_is_enforced_after_the_step_closes_its_output(
    make_pipeline, engine, pipelines_dir, pid_dir, pid_gone, leftover_pids, read_status
):
    code = (
        NOTE_PID
        + """\
note("s")
print("closing my output now", flush=True)
os.close(1)
os.close(2)
fd = os.open(os.devnull, os.O_WRONLY)
os.dup2(fd, 1)
os.dup2(fd, 2)
time.sleep(30)
"""
    )
    make_pipeline("p", [{"name": "s", "args": [str(pid_dir)], "timeout": 1, "code": code}])
    run_id = engine.submit("p")
    record = engine.wait(run_id, timeout=15)  # the step would sleep 30 s on its own
    pid = read_pid(pid_dir, "s")
    leftover_pids.append(pid)
    assert record is not None, "the timeout was not enforced once the output was closed"
    assert record["steps"]["s"]["state"] == "timed_out"
    assert pid_gone(pid)
    entry = read_status("p")["s"]
    assert entry["state"] == "timed_out"
    assert entry["error"].startswith("timed out after 1 s")
    log = (pipelines_dir / record["steps"]["s"]["log"]).read_text()
    assert "stdout closing my output now" in log
    assert "system timed out after 1 s; killing the process tree" in log


# --- 3. Ctrl-C twice, and SIGTERM, in the CLI ------------------------------------------------

STUBBORN_CHILD = (
    "import os, pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "d = pathlib.Path(sys.argv[1]); (d / 'c.tmp').write_text(str(os.getpid())); "
    "os.replace(d / 'c.tmp', d / 'stubborn'); time.sleep(60)"
)
STEP_WITH_STUBBORN_CHILD = (
    NOTE_PID
    + f"""\
subprocess.Popen(
    [sys.executable, "-c", {STUBBORN_CHILD!r}, sys.argv[1]],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
note("step")
time.sleep(60)
"""
)


def test_second_ctrl_c_while_cancelling_gives_no_traceback_and_leaves_no_process(
    cli_start, make_pipeline, pid_dir, pid_gone, leftover_pids, read_status, wait_until
):
    make_pipeline(
        "p",
        [
            {"name": "long", "args": [str(pid_dir)], "code": STEP_WITH_STUBBORN_CHILD},
            {"name": "next", "depends_on": ["long"]},
        ],
    )
    run = cli_start("run", "p")
    wait_until(lambda: (pid_dir / "step").exists() and (pid_dir / "stubborn").exists(), 15)
    step, stubborn = read_pid(pid_dir, "step"), read_pid(pid_dir, "stubborn")
    leftover_pids.extend([step, stubborn])
    wait_until(lambda: read_status("p").get("long", {}).get("state") == "running")

    os.kill(run.pid, signal.SIGINT)
    # The step dies at the SIGTERM; its child ignores it and lives until the SIGKILL that
    # follows the CLI's 2 s grace: that is when an impatient user presses Ctrl-C again.
    wait_until(lambda: pid_gone(step), 10)
    assert not pid_gone(stubborn)
    os.kill(run.pid, signal.SIGINT)
    time.sleep(0.2)
    os.kill(run.pid, signal.SIGINT)
    out, err = run.communicate(timeout=30)

    assert run.returncode == 130, (out, err)
    assert "Traceback" not in err, err
    assert "interrupted: cancelling the running steps..." in err
    assert "still stopping the steps (SIGKILL follows after a short grace)..." in err
    assert "run cancelled" in out
    assert pid_gone(stubborn)
    status = read_status("p")
    assert status["long"]["state"] == "cancelled"
    assert status["next"]["state"] == "skipped"


# --- 4. a status file with wrong field types -------------------------------------------------

BAD_TYPES = {
    "a": {"duration_s": "abc", "last_success_at": 5, "pid": "abc", "error": 5, "state": ["x"]}
}


def test_status_file_with_wrong_field_types_breaks_no_command(
    cli, make_pipeline, pipelines_dir, read_status
):
    make_pipeline("p", [{"name": "a"}, {"name": "b", "depends_on": ["a"]}])
    status_file = pipelines_dir / ".p.status.json"

    def check(*args: str) -> tuple[str, str]:
        status_file.write_text(json.dumps(BAD_TYPES))
        code, out, err = cli(*args)
        assert code == 0, (args, out, err)
        assert "Traceback" not in err, (args, err)
        return out, err

    out, _ = check("status", "p")
    assert out.splitlines()[2].split()[:2] == ["a", "never_run"]
    out, _ = check("status", "p", "--json")
    a = json.loads(out)["steps"][0]
    assert a["name"] == "a" and a["state"] == "never_run"
    assert (a["duration_s"], a["pid"], a["error"]) == (None, None, None)
    assert a["outdated"] == ["never succeeded"]
    out, _ = check("plan", "p", "--only-outdated")
    assert "  run   a: " in out and "  run   b: " in out
    out, _ = check("reset", "p")
    assert out == "p: reset a, b\n"
    assert read_status("p")["a"]["state"] == "never_run"
    check("run", "p")
    status = read_status("p")
    assert status["a"]["state"] == status["b"]["state"] == "succeeded"
    assert isinstance(status["a"]["duration_s"], float)


# --- 5. reset of a step a dead run left `running` ---------------------------------------------


def test_reset_of_a_step_left_running_by_a_dead_run(cli, make_pipeline, pipelines_dir, read_status):
    make_pipeline("p", [{"name": "a"}, {"name": "b"}])
    assert not (pipelines_dir / ".p.lock").exists()  # nobody holds the pipeline
    (pipelines_dir / ".p.status.json").write_text(
        json.dumps({"a": {"state": "running", "run_id": "dead", "pid": 999999}})
    )
    code, out, err = cli("reset", "p", "a")
    assert (code, out) == (0, "p: reset a\n"), err
    entry = read_status("p")["a"]
    assert entry["state"] == "never_run"
    assert (entry["run_id"], entry["pid"], entry["error"]) == (None, None, None)


# --- 6. validation of env names, NUL characters and non-finite numbers -----------------------


def test_env_names_nul_characters_and_non_finite_numbers_are_rejected(cli, write_yaml):
    path = write_yaml(
        "demo",
        """\
        name: demo
        description: a demo
        steps:
          - name: a
            script: a.py
            description: first
            env:
              "A=B": x
              "OK": "a\\0b"
            args: ["a\\0b"]
            retry_delay: .inf
            timeout: .nan
        """,
        scripts=("a.py",),
    )
    code, out, err = cli("validate", "demo")
    assert code == 1, err
    path = path.relative_to(path.parent.parent)  # as shown from where the CLI runs
    assert out.splitlines() == [
        "INVALID  demo",
        f"  {path}: step 'a': timeout (line 12): must be a finite number, got nan",
        f"  {path}: step 'a': retry_delay (line 11): must be a finite number, got inf",
        f"  {path}: step 'a': env (line 8): variable name 'A=B' must be a non-empty string "
        "without '=' or NUL",
        f"  {path}: step 'a': env.OK (line 9): may not contain NUL characters",
        f"  {path}: step 'a': args (line 10): items may not contain NUL characters",
    ]


# --- 7. a log or status file that cannot be written -------------------------------------------


def test_a_log_that_cannot_be_written_does_not_stop_the_step_or_the_run(
    make_pipeline, pipelines_dir, read_status
):
    """A full disk, simulated without privileges: the CLI runs under RLIMIT_FSIZE, so a write
    past 64 KB fails with EFBIG (Python ignores SIGXFSZ). Status files and run records stay
    far below it; the step's log does not."""
    loud = "for i in range(20000):\n    print('line', i, 'x' * 40)\n"
    make_pipeline("p", [{"name": "loud", "code": loud}, {"name": "after", "depends_on": ["loud"]}])
    limit = 64 * 1024
    launcher = (
        "import resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
        "from orchestrator_core.cli import main; "
        f"sys.exit(main(['--pipelines-dir', {str(pipelines_dir)!r}, 'run', 'p']))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", launcher],
        cwd=pipelines_dir.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    status = read_status("p")
    assert status["loud"]["state"] == "succeeded"
    assert status["loud"]["error"].startswith("the log could not be written from here on: ")
    assert "File too large" in status["loud"]["error"]
    assert status["after"]["state"] == "succeeded"
    (log,) = (pipelines_dir / ".runs" / "p").glob("*/loud.log")
    assert 0 < log.stat().st_size <= limit


@pytest.mark.parametrize("keep_going", [False, True], ids=["halt", "continue_on_failure"])
def test_a_status_that_cannot_be_written_ends_the_run_without_leaving_a_step_running(
    make_pipeline, engine, pipelines_dir, pid_dir, leftover_pids, keep_going
):
    """Every status write fails once the first step turned the status lock file into a folder
    (as on a broken disk; permissions play no part, so it holds as root too). The run must
    end rather than wait forever for a step whose end it could not record; with
    continue_on_failure the next step starts, and since it cannot be recorded as running it
    must be stopped, not left running unwatched."""
    sabotage = "os.remove('pipelines/.p.status.lock'); os.mkdir('pipelines/.p.status.lock')\n"
    make_pipeline(
        "p",
        [
            {"name": "breaks_the_disk", "code": sabotage},
            {"name": "long", "args": [str(pid_dir)], "code": SLEEPER},
        ],
        continue_on_failure=keep_going,
    )
    run_id = engine.submit("p")
    record = engine.wait(run_id, timeout=20)
    if (pid_dir / "long").exists():
        leftover_pids.append(read_pid(pid_dir, "long"))
    assert record is not None, "the run hung after a status write failed"
    assert record["state"] == "failed"
    first = record["steps"]["breaks_the_disk"]
    assert first["state"] == "failed" and first["error"].startswith("internal error: ")
    if keep_going:
        assert record["steps"]["long"]["state"] == "failed"
        assert record["steps"]["long"]["error"].startswith("internal error: ")
    else:  # the skips of the halted run could not be written either
        assert any("could not be recorded" in n for n in record["notices"]), record["notices"]
    assert processes_running(pipelines_dir / "p" / "long.py") == []
    saved = RunHistory(pipelines_dir).get(run_id)  # the record on disk is not left `running`
    assert saved["state"] == "failed" and saved["finished_at"] is not None


# --- 8. discovery sees scripts change without the YAML changing ------------------------------


def test_discovery_sees_scripts_appear_and_symlinks_move_in_one_process(
    write_yaml, pipelines_dir, tmp_path, make_engine
):
    path = write_yaml(
        "p",
        "name: p\ndescription: d\nsteps:\n  - name: a\n    script: sub/x.py\n    description: x\n",
    )
    scripts = pipelines_dir / "p"
    (scripts / "sub").mkdir()
    (scripts / "real.py").write_text("print('real')\n")
    (tmp_path / "outside.py").write_text("print('outside')\n")
    yaml_stat = path.stat().st_mtime_ns
    engine = make_engine()

    def found():
        return {d.id: d for d in discover_pipelines(pipelines_dir)}["p"]

    assert "'sub/x.py' not found" in str(found().problems[0])
    (scripts / "sub" / "x.py").write_text("print('x')\n")
    assert found().valid

    (scripts / "sub" / "x.py").unlink()
    os.symlink("../real.py", scripts / "sub" / "x.py")
    assert found().valid
    assert engine.load_pipeline("p").id == "p"

    (scripts / "sub" / "x.py").unlink()
    os.symlink(tmp_path / "outside.py", scripts / "sub" / "x.py")
    (problem,) = found().problems
    assert "'sub/x.py' resolves outside the scripts folder" in str(problem)
    with pytest.raises(PipelineInvalidError, match="resolves outside the scripts folder"):
        engine.submit("p")
    assert path.stat().st_mtime_ns == yaml_stat  # the YAML was never touched


# --- 9. a skipped step keeps nothing of its previous run --------------------------------------


def test_skipped_step_does_not_keep_the_previous_runs_fields(
    make_pipeline, run_to_end, tmp_path, read_status
):
    flag = tmp_path / "up_fails"
    make_pipeline(
        "p",
        [
            {
                "name": "up",
                "args": [str(flag)],
                "code": "sys.exit(1 if pathlib.Path(sys.argv[1]).exists() else 0)",
            },
            {
                "name": "down",
                "depends_on": ["up"],
                "code": "print('down broke', file=sys.stderr); sys.exit(3)",
            },
        ],
    )
    assert run_to_end("p")["state"] == "failed"
    before = read_status("p")["down"]
    assert (before["state"], before["exit_code"], before["error"]) == ("failed", 3, "down broke")
    flag.write_text("")
    record = run_to_end("p")
    assert record["steps"]["down"]["state"] == "skipped"
    down = read_status("p")["down"]
    assert down["state"] == "skipped"
    assert down["skip_reason"] == "not started: step 'up' failed"
    assert down["run_id"] == record["run_id"]
    for key in ("exit_code", "duration_s", "started_at", "error", "attempt", "pid"):
        assert down[key] is None, (key, down[key])


# --- 10. progress counts of retries and of skips after a failure ------------------------------


def test_cli_progress_counts_retries_and_skips(cli, make_pipeline):
    make_pipeline(
        "p",
        [
            {"name": "a", "retries": 1, "code": "sys.exit(1)"},
            {"name": "b"},
            {"name": "c"},
            {"name": "d"},
        ],
    )
    code, out, err = cli("run", "p")
    assert code == 1, err
    lines = [m.groups() for line in out.splitlines() if (m := PROGRESS.match(line))]
    assert lines == [
        ("0", "4", "start", "a"),
        ("0", "4", "retry", "a"),
        ("1", "4", "failed", "a"),
        ("2", "4", "skipped", "b"),
        ("3", "4", "skipped", "c"),
        ("4", "4", "skipped", "d"),
    ]
    assert "[0/4] retry   a (attempt 2, previous failed)" in out


# --- 11. cancel during the delay before a retry ----------------------------------------------


def test_cancel_during_retry_delay_records_cancelled(make_pipeline, engine, read_status):
    make_pipeline(
        "p",
        [{"name": "a", "retries": 2, "retry_delay": 30, "code": "print('no'); sys.exit(1)"}],
    )
    retrying = threading.Event()
    run_id = engine.submit(
        "p", on_event=lambda ev: retrying.set() if ev.kind == "step_retry" else None
    )
    assert retrying.wait(15)
    assert engine.cancel(run_id)
    record = engine.wait(run_id, timeout=10)  # long before the 30 s delay is over
    assert record is not None
    assert record["state"] == "cancelled"
    assert record["steps"]["a"]["state"] == "cancelled"
    entry = read_status("p")["a"]
    assert entry["state"] == "cancelled"
    assert entry["error"].startswith("cancelled while waiting to retry; attempt 1: ")
    assert entry["attempt"] == 1


# --- 12. step names that make the same file name ----------------------------------------------


def test_steps_a_space_b_and_a_underscore_b_keep_separate_logs(cli, make_pipeline, pipelines_dir):
    make_pipeline(
        "p",
        [
            {"name": "a b", "script": "space.py", "code": "print('from the space step')"},
            {"name": "a_b", "script": "under.py", "code": "print('from the underscore step')"},
        ],
    )
    code, out, err = cli("run", "p")
    assert code == 0, err
    run_id = re.search(r"^logs: python -m orchestrator_core logs (\S+)$", out, re.M).group(1)
    record = RunHistory(pipelines_dir).get(run_id)
    assert record["steps"]["a b"]["log"] != record["steps"]["a_b"]["log"]

    code, out, _ = cli("logs", run_id, "a b")
    assert code == 0
    assert "stdout from the space step" in out and "underscore" not in out
    code, out, _ = cli("logs", run_id, "a_b")
    assert code == 0
    assert "stdout from the underscore step" in out and "space" not in out


# --- 13. a pipelines folder that cannot be written --------------------------------------------

DISK_HINT = "; check that the folder exists, is writable and has free space\n"


def test_an_unwritable_lock_file_is_one_clear_error(cli, make_pipeline, pipelines_dir):
    """The run's lock file cannot be opened for writing (it is a folder): the same path as a
    read-only or full disk, and one that holds for root too (root ignores 0555 folders)."""
    make_pipeline("p", [{"name": "a"}])
    lock = pipelines_dir / ".p.lock"
    lock.mkdir()
    code, out, err = cli("run", "p")
    assert code == 2, (out, err)
    assert err == f"error: [Errno 21] Is a directory: '{lock}'{DISK_HINT}"


# --- 14. a background child a step left behind ------------------------------------------------


def test_a_background_child_left_by_a_successful_step_is_stopped(
    make_pipeline, run_to_end, pipelines_dir, pid_dir, pid_gone, leftover_pids
):
    child = NOTE_PID + "note('child')\ntime.sleep(60)\n"
    code = f"""\
child = {child!r}
subprocess.Popen(
    [sys.executable, "-c", "import os, pathlib, sys, time\\n" + child, sys.argv[1]],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
)
deadline = time.monotonic() + 10
while not (pathlib.Path(sys.argv[1]) / "child").exists() and time.monotonic() < deadline:
    time.sleep(0.01)
print("left a child behind")
"""
    make_pipeline("p", [{"name": "s", "args": [str(pid_dir)], "code": code}])
    record = run_to_end("p")
    pid = read_pid(pid_dir, "child")
    leftover_pids.append(pid)
    assert record["steps"]["s"]["state"] == "succeeded"
    assert pid_gone(pid)
    log = (pipelines_dir / record["steps"]["s"]["log"]).read_text()
    assert f"system stopped 1 process(es) the step left running: [{pid}]" in log


# --- 15. the busy message, and stopping a command-line run from elsewhere ----------------------


def test_busy_message_says_how_to_stop_a_cli_run_and_the_engine_can_stop_it(
    cli,
    cli_start,
    make_pipeline,
    make_engine,
    pipelines_dir,
    pid_dir,
    pid_gone,
    leftover_pids,
    read_status,
    wait_until,
):
    make_pipeline(
        "p",
        [
            {"name": "long", "args": [str(pid_dir)], "code": SLEEPER},
            {"name": "next", "depends_on": ["long"]},
        ],
    )
    run = cli_start("run", "p")
    wait_until(lambda: (pid_dir / "long").exists(), 15)
    step = read_pid(pid_dir, "long")
    leftover_pids.append(step)
    owner = json.loads((pipelines_dir / ".p.lock").read_text())
    assert (owner["pid"], owner["trigger"]) == (run.pid, "cli")

    code, _, err = cli("run", "p")
    assert code == 2
    assert err == (
        f"error: pipeline 'p' is already running: run {owner['run_id']} started "
        f"{owner['started_at']} by pid {run.pid}; wait for it to finish, or stop it with "
        f"Ctrl-C in its terminal (or `kill {run.pid}`)\n"
    )

    engine = make_engine()
    said = engine.stop_other_process_run("p")
    assert said == f"asked the command-line run {owner['run_id']} (pid {run.pid}) to stop"
    out, err = run.communicate(timeout=30)
    assert run.returncode == 130, (out, err)
    assert "interrupted: cancelling the running steps..." in err and "Traceback" not in err
    assert pid_gone(step)
    status = read_status("p")
    assert status["long"]["state"] == "cancelled"
    assert status["next"]["state"] == "skipped"
    with pytest.raises(OrchestratorError, match="no run of 'p' is in progress in another process"):
        engine.stop_other_process_run("p")


def test_busy_message_for_a_dashboard_run_points_to_the_dashboard(
    cli, make_pipeline, engine, pid_dir, wait_until
):
    make_pipeline("p", [{"name": "long", "args": [str(pid_dir)], "code": SLEEPER}])
    run_id = engine.submit("p")
    wait_until(lambda: (pid_dir / "long").exists(), 15)
    code, _, err = cli("run", "p")
    assert code == 2
    assert err.startswith(f"error: pipeline 'p' is already running: run {run_id} started ")
    assert err.endswith(
        f"by pid {os.getpid()}; wait for it to finish, or cancel it on the dashboard's "
        "pipelines page\n"
    )
    # This process is the holder: nothing here may be stopped "in another process".
    with pytest.raises(OrchestratorError, match="no run of 'p' is in progress in another process"):
        engine.stop_other_process_run("p")
    engine.cancel(run_id)
    assert engine.wait(run_id, timeout=15)["state"] == "cancelled"


# --- 16. a seed-style status entry ------------------------------------------------------------


def test_seed_style_entry_reads_succeeded_not_stale_and_asks_for_one_more_run(
    cli, make_pipeline, pipelines_dir
):
    make_pipeline("p", [{"name": "a"}])
    (pipelines_dir / ".p.status.json").write_text(
        json.dumps({"a": {"completed": True, "tested": True, "last_run": "2024-01-15T10:30:00Z"}})
    )
    code, out, err = cli("status", "p", "--json")
    assert code == 0, err
    (a,) = json.loads(out)["steps"]
    assert a["state"] == "succeeded" and a["completed"] is True
    assert a["tested"] is True and a["tested_stale"] is False
    assert a["last_run"] == "2024-01-15T10:30:00Z"
    assert a["outdated"] == ["succeeded, but with no record of which script; run it once more"]


# --- 18. `runs --json` has every key the README documents -------------------------------------


def documented_run_keys() -> tuple[set[str], set[str]]:
    """(record keys, step keys) from the README's `runs [PIPELINE] --json` table."""
    text = (PROJECT / "README.md").read_text()
    section = text.split("`runs [PIPELINE] --json`", 1)[1].split("\n\n", 2)[1]
    keys: set[str] = set()
    step_keys: set[str] = set()
    for row in section.splitlines():
        if not row.startswith("| `"):
            continue
        cells = row.split("|")
        names = re.findall(r"`(\w+)`", cells[1])
        keys.update(names)
        if names == ["steps"]:
            step_keys.update(re.findall(r'"(\w+)"', cells[3]))
    return keys, step_keys


def test_runs_json_has_every_key_the_readme_documents(cli, make_pipeline):
    keys, step_keys = documented_run_keys()
    assert {"run_id", "pid", "plan", "max_parallel", "notices", "steps"} <= keys
    assert {"state", "attempts", "log", "exit_code"} <= step_keys
    make_pipeline("p", [{"name": "a"}, {"name": "b", "depends_on": ["a"]}])
    assert cli("run", "p")[0] == 0
    code, out, _ = cli("runs", "--json")
    assert code == 0
    (record,) = json.loads(out)
    assert keys <= set(record), keys - set(record)
    for name in ("a", "b"):
        assert step_keys <= set(record["steps"][name]), step_keys - set(record["steps"][name])


# --- 19. the newest 20 of 10,000 runs ---------------------------------------------------------


def test_listing_the_newest_20_of_10000_runs(pipelines_dir, cli):
    start = utc_now() - timedelta(days=1)
    ids: dict[str, list[str]] = {"p": [], "q": []}
    for i in range(10_000):
        pipeline_id = "p" if i % 3 else "q"
        when = start + timedelta(seconds=i)
        run_id = new_run_id(when)
        folder = pipelines_dir / ".runs" / pipeline_id
        if not ids[pipeline_id]:
            folder.mkdir(parents=True)
        stamp = when.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        (folder / f"{run_id}.json").write_text(
            f'{{"run_id": "{run_id}", "pipeline_id": "{pipeline_id}", "trigger": "cli", '
            f'"state": "succeeded", "started_at": "{stamp}", "finished_at": "{stamp}", '
            f'"duration_s": 0.1, "steps": {{}}}}'
        )
        ids[pipeline_id].append(run_id)
    history = RunHistory(pipelines_dir)
    newest = sorted(ids["p"] + ids["q"], reverse=True)[:20]
    assert [r["run_id"] for r in history.list()] == newest
    assert [r["run_id"] for r in history.list("p")] == ids["p"][::-1][:20]
    assert [r["run_id"] for r in history.list("q", limit=5)] == ids["q"][::-1][:5]
    code, out, err = cli("runs", "--json")
    assert code == 0, err
    assert [r["run_id"] for r in json.loads(out)] == newest


# --- 20. the engine forgets old finished runs -------------------------------------------------


def test_engine_keeps_at_most_100_finished_runs_in_memory(make_pipeline, make_engine):
    """With only 3 runs kept on disk, `wait` can answer for a pruned run only from memory:
    the newest 100 are answered, the ones before them are forgotten."""
    make_pipeline("p", [{"name": "a", "code": ""}])
    engine = make_engine(keep_runs=3)
    run_ids = []
    for _ in range(105):
        run_id = engine.submit("p")
        assert engine.wait(run_id, timeout=30)["state"] == "succeeded"
        run_ids.append(run_id)
    # The oldest are forgotten (the bound applies as each run is submitted, so the 5th
    # oldest may still be held until the next submit).
    for run_id in run_ids[:4]:
        with pytest.raises(RunNotFoundError):
            engine.wait(run_id)
    for run_id in run_ids[5:]:
        assert engine.wait(run_id, timeout=0)["run_id"] == run_id
    assert engine.active_runs() == []
