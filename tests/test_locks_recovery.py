"""One run of a pipeline at a time across processes, stale locks, and recovery after a run's
process is killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from orchestrator_core.errors import PipelineBusyError
from orchestrator_core.history import RunHistory
from orchestrator_core.plan import Selection

WAIT_FOR_GO = """\
deadline = time.time() + 30
while not pathlib.Path(sys.argv[1]).exists() and time.time() < deadline:
    time.sleep(0.02)
"""


def test_same_pipeline_never_runs_twice_across_processes(
    make_pipeline, cli, cli_start, engine, read_status, wait_until, tmp_path, pipelines_dir
):
    go = tmp_path / "go"
    make_pipeline("p", [{"name": "slow", "code": WAIT_FOR_GO, "args": [str(go)]}])
    first = cli_start("run", "p")
    wait_until(lambda: read_status("p").get("slow", {}).get("state") == "running", timeout=20)
    owner = json.loads((pipelines_dir / ".p.lock").read_text())
    run_id = read_status("p")["slow"]["run_id"]
    assert owner["run_id"] == run_id and owner["pid"] == first.pid

    code, _out, err = cli("run", "p")
    assert code == 2
    assert err.strip() == (
        f"error: pipeline 'p' is already running: run {run_id} started {owner['started_at']} "
        f"by pid {first.pid}; wait for it to finish, or stop it with Ctrl-C in its terminal "
        f"(or `kill {first.pid}`)"
    )
    assert "Traceback" not in err

    # Another process reading the status meanwhile sees it running, not interrupted.
    code, out, _ = cli("status", "p", "--json")
    assert code == 0 and json.loads(out)["steps"][0]["state"] == "running"

    with pytest.raises(PipelineBusyError) as busy:
        engine.submit("p", Selection("step", "slow"))
    message = str(busy.value)
    assert run_id in message and owner["started_at"] in message and f"pid {first.pid}" in message

    go.touch()
    _out, err = first.communicate(timeout=30)
    assert first.returncode == 0, err
    assert (pipelines_dir / ".p.lock").read_text() == ""  # released: nobody holds it
    code, _, _ = cli("run", "p")
    assert code == 0


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_lock_file_naming_a_dead_pid_is_taken_over(make_pipeline, run_to_end, pipelines_dir):
    make_pipeline("p", [{"name": "a"}])
    pid = dead_pid()
    (pipelines_dir / ".p.lock").write_text(
        json.dumps(
            {
                "run_id": "old-run",
                "pid": pid,
                "pid_started": 1.0,
                "started_at": "2020-01-01T00:00:00.000Z",
            }
        )
    )
    record = run_to_end("p")
    assert record["state"] == "succeeded"
    assert record["notices"] == [f"took over the lock of run old-run (pid {pid} is gone)"]


def test_kill_9_of_a_cli_run_leaves_interrupted_steps_and_the_next_run_cleans_up(
    make_pipeline, cli, cli_start, read_status, wait_until, process_tree, pid_gone, pipelines_dir
):
    make_pipeline(
        "p",
        [process_tree.step("long"), {"name": "after", "depends_on": ["long"]}, {"name": "quick"}],
    )
    run = cli_start("run", "p")
    pids = process_tree.pids()
    wait_until(lambda: read_status("p").get("long", {}).get("state") == "running")
    old_run_id = read_status("p")["long"]["run_id"]
    os.kill(run.pid, signal.SIGKILL)
    run.wait(timeout=10)
    assert not pid_gone(pids["step"])  # the step outlived its CLI: an orphan

    code, out, err = cli("status", "p", "--json")
    assert code == 0, err
    steps = {s["name"]: s for s in json.loads(out)["steps"]}
    assert steps["long"]["state"] == "interrupted"
    assert steps["after"]["state"] == "interrupted"  # it was queued in the dead run
    assert steps["long"]["error"] == (
        f"the run {old_run_id} ended while this step was running (its process {pids['step']} "
        "is still running; the next run stops it); run it again"
    )
    assert steps["long"]["pid"] is None  # not running for us: kept as orphan_pid instead
    assert steps["after"]["error"] == (
        f"the run {old_run_id} ended while this step was queued (it had not started); run it again"
    )
    # ... and saved so, for anyone reading the file.
    saved = read_status("p")
    assert saved["long"]["state"] == "interrupted" and saved["after"]["state"] == "interrupted"
    history = {r["run_id"]: r for r in RunHistory(pipelines_dir).list("p")}
    assert history[old_run_id]["state"] == "interrupted"

    code, out, err = cli("run", "p", "--step", "quick")
    assert code == 0, err
    assert f"note: stopped process {pids['step']} left running by step 'long'" in err.splitlines()
    assert all(pid_gone(pid) for pid in pids.values()), pids
    (latest,) = [r for r in RunHistory(pipelines_dir).list("p") if r["run_id"] != old_run_id]
    assert latest["notices"][0].startswith(f"took over the lock of run {old_run_id}")
    assert f"stopped process {pids['step']} left running by step 'long'" in latest["notices"]
    saved = read_status("p")
    assert saved["long"]["state"] == "interrupted" and saved["long"]["pid"] is None
    assert saved["long"]["orphan_pid"] is None
    assert saved["quick"]["state"] == "succeeded"
