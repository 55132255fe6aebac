"""Running one step: cwd, env, args, exit codes, the streamed log, bounded memory, timeouts,
cancel and retries. Steps are real Python scripts run by a real engine."""

from __future__ import annotations

import json
import re
import threading

import psutil

from orchestrator_core import engine as engine_module
from orchestrator_core.status import parse_iso

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (stdout|stderr|system) ")

REPORT_ENV = """\
pathlib.Path("seen.json").write_text(json.dumps({
    "cwd": os.getcwd(),
    "argv": sys.argv[1:],
    "env": {k: os.environ.get(k) for k in (
        "INHERITED_FROM_TEST", "STEP_VAR", "PIPELINE_ID", "PIPELINE_STEP",
        "PIPELINE_RUN_ID", "PYTHONUNBUFFERED", "PIPELINE_STEP_TIMEOUT")},
}))
"""


def log_of(pipelines_dir, record, step):
    return (pipelines_dir / record["steps"][step]["log"]).read_text()


def test_step_gets_cwd_env_and_args(
    make_pipeline, run_to_end, pipelines_dir, monkeypatch, read_status
):
    monkeypatch.setenv("INHERITED_FROM_TEST", "from the parent")
    make_pipeline(
        "envy",
        [
            {
                "name": "show",
                "code": REPORT_ENV,
                "env": {"STEP_VAR": "step value"},
                "args": ["--flag", "two words", ""],
            }
        ],
    )
    record = run_to_end("envy")
    assert record["state"] == "succeeded"
    seen = json.loads((pipelines_dir.parent / "seen.json").read_text())
    assert seen["cwd"] == str(pipelines_dir.parent)
    assert seen["argv"] == ["--flag", "two words", ""]
    assert seen["env"] == {
        "INHERITED_FROM_TEST": "from the parent",
        "STEP_VAR": "step value",
        "PIPELINE_ID": "envy",
        "PIPELINE_STEP": "show",
        "PIPELINE_RUN_ID": record["run_id"],
        "PYTHONUNBUFFERED": "1",
        "PIPELINE_STEP_TIMEOUT": None,
    }
    entry = read_status("envy")["show"]
    assert entry["state"] == "succeeded" and entry["completed"] is True
    assert entry["exit_code"] == 0 and entry["error"] is None


def test_a_step_with_a_timeout_is_told_it(make_pipeline, run_to_end, pipelines_dir):
    make_pipeline("timed", [{"name": "show", "code": REPORT_ENV, "timeout": 90.5}])
    assert run_to_end("timed")["state"] == "succeeded"
    seen = json.loads((pipelines_dir.parent / "seen.json").read_text())
    assert seen["env"]["PIPELINE_STEP_TIMEOUT"] == "90.5"


def test_nonzero_exit_is_a_failure_with_the_stderr_tail(make_pipeline, run_to_end, read_status):
    make_pipeline(
        "p",
        [
            {"name": "noisy", "code": "print('bad input', file=sys.stderr)\nraise SystemExit(3)"},
            {"name": "quiet", "code": "raise SystemExit(4)"},
        ],
        continue_on_failure=True,
    )
    record = run_to_end("p")
    assert record["state"] == "failed"
    status = read_status("p")
    assert status["noisy"]["state"] == "failed" and status["noisy"]["completed"] is False
    assert status["noisy"]["exit_code"] == 3
    assert status["noisy"]["error"] == "bad input"
    assert status["quiet"]["error"] == "exited with code 4 (nothing on stderr)"


def test_error_keeps_only_the_last_2_kb_of_stderr(make_pipeline, run_to_end, read_status):
    code = "for i in range(3000):\n    print(f'problem line {i:05d}', file=sys.stderr)\nraise SystemExit(1)"
    make_pipeline("p", [{"name": "a", "code": code}])
    run_to_end("p")
    error = read_status("p")["a"]["error"]
    assert len(error.encode()) <= 2048
    assert error.endswith("problem line 02999")
    assert error.startswith("problem line ")  # cut at a line start


def test_log_has_timestamp_and_stream_on_every_line(make_pipeline, run_to_end, pipelines_dir):
    code = "print('to out')\nprint('to err', file=sys.stderr)\nprint('out again')"
    make_pipeline("p", [{"name": "a", "code": code}])
    record = run_to_end("p")
    lines = log_of(pipelines_dir, record, "a").splitlines()
    assert all(LOG_LINE.match(line) for line in lines), lines
    assert [line.split(" ", 1)[1] for line in lines if " stdout " in line] == [
        "stdout to out",
        "stdout out again",
    ]
    assert [line.split(" ", 1)[1] for line in lines if " stderr " in line] == ["stderr to err"]


def test_output_reaches_the_log_while_the_step_still_runs(
    make_pipeline, engine, pipelines_dir, tmp_path, wait_until, read_status
):
    go = tmp_path / "go"
    code = """\
    print("first line", flush=True)
    deadline = time.time() + 30
    while not pathlib.Path(sys.argv[1]).exists() and time.time() < deadline:
        time.sleep(0.02)
    print("after go", file=sys.stderr)
    """
    make_pipeline("p", [{"name": "slow", "code": code, "args": [str(go)]}])
    run_id = engine.submit("p")
    log = pipelines_dir / ".runs" / "p" / run_id / "slow.log"
    wait_until(lambda: log.exists() and "stdout first line" in log.read_text())
    assert read_status("p")["slow"]["state"] == "running"
    assert "after go" not in log.read_text()
    go.touch()
    record = engine.wait(run_id, timeout=30)
    assert record["state"] == "succeeded"
    assert "stderr after go" in log.read_text()


def test_a_step_printing_50_mb_keeps_memory_bounded(make_pipeline, engine, pipelines_dir):
    # 50 MB in 1 kB lines, then 10 MB on a single line with no newline at all.
    code = """\
    line = "x" * 1023 + "\\n"
    for _ in range(50 * 1024):
        sys.stdout.write(line)
    sys.stdout.write("y" * (10 * 1024 * 1024))
    sys.stdout.flush()
    """
    make_pipeline("big", [{"name": "flood", "code": code}])
    me = psutil.Process()
    before = me.memory_info().rss
    peak = before
    run_id = engine.submit("big")
    while (record := engine.wait(run_id, timeout=0.05)) is None:
        peak = max(peak, me.memory_info().rss)
    assert record["state"] == "succeeded"
    log = pipelines_dir / record["steps"]["flood"]["log"]
    assert log.stat().st_size > 60 * 1024 * 1024
    # 60 MB went through this process; it may grow by a small fraction of that, not by it.
    assert peak - before < 20 * 1024 * 1024, (before, peak)


def test_timeout_kills_the_whole_tree_and_records_timed_out(
    make_pipeline, run_to_end, process_tree, pid_gone, read_status, pipelines_dir
):
    make_pipeline("p", [process_tree.step("hang", timeout=2.5)])
    record = run_to_end("p")
    pids = process_tree.pids(timeout=1)
    assert all(pid_gone(pid) for pid in pids.values()), pids
    entry = read_status("p")["hang"]
    assert entry["state"] == "timed_out" and entry["completed"] is False
    assert entry["error"].startswith("timed out after 2.5 s")
    assert entry["pid"] is None
    assert record["state"] == "failed"
    assert record["steps"]["hang"]["state"] == "timed_out"
    assert "system timed out after 2.5 s; killing the process tree" in log_of(
        pipelines_dir, record, "hang"
    )


def test_cancel_kills_the_whole_tree_and_records_cancelled(
    make_pipeline, engine, process_tree, pid_gone, read_status
):
    make_pipeline("p", [process_tree.step("hang"), {"name": "after", "depends_on": ["hang"]}])
    run_id = engine.submit("p")
    pids = process_tree.pids()
    assert engine.cancel(run_id) is True
    record = engine.wait(run_id, timeout=30)
    assert all(pid_gone(pid) for pid in pids.values()), pids
    assert record["state"] == "cancelled"
    status = read_status("p")
    assert status["hang"]["state"] == "cancelled"
    assert status["after"]["state"] == "skipped"
    assert status["after"]["skip_reason"] == "run cancelled"
    assert engine.cancel(run_id) is False  # already over


COUNTER = """\
counter = pathlib.Path(sys.argv[1])
n = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(n))
print(f"attempt number {n}")
if n < 3:
    print(f"failing on attempt {n}", file=sys.stderr)
    raise SystemExit(1)
"""


def test_retries_rerun_a_failed_step_after_the_delay(
    make_pipeline, run_to_end, tmp_path, pipelines_dir, read_status
):
    counter = tmp_path / "counter"
    make_pipeline(
        "p",
        [
            {
                "name": "flaky",
                "code": COUNTER,
                "args": [str(counter)],
                "retries": 3,
                "retry_delay": 0.3,
            }
        ],
    )
    record = run_to_end("p")
    assert counter.read_text() == "3"
    assert record["state"] == "succeeded"
    assert record["steps"]["flaky"]["attempts"] == 3
    entry = read_status("p")["flaky"]
    assert entry["state"] == "succeeded" and entry["attempt"] == 3
    log = log_of(pipelines_dir, record, "flaky")
    for n in (1, 2, 3):
        assert f"system attempt {n} of 4" in log
        assert f"stdout attempt number {n}" in log
    assert "system attempt 1 failed (exit code 1); retrying in 0.3 s" in log
    assert "system attempt 4 of 4" not in log
    # The delay is waited: from each "retrying" line to the next attempt's start.
    stamps = {line.split(" ", 2)[2]: parse_iso(line.split(" ", 1)[0]) for line in log.splitlines()}
    waited = stamps["attempt 2 of 4"] - stamps["attempt 1 failed (exit code 1); retrying in 0.3 s"]
    assert waited.total_seconds() >= 0.299


def test_retries_exhausted_leave_the_step_failed(make_pipeline, run_to_end, tmp_path, read_status):
    counter = tmp_path / "counter"
    make_pipeline("p", [{"name": "flaky", "code": COUNTER, "args": [str(counter)], "retries": 1}])
    record = run_to_end("p")
    assert counter.read_text() == "2"
    entry = read_status("p")["flaky"]
    assert entry["state"] == "failed" and entry["attempt"] == 2
    assert entry["error"] == "failing on attempt 2"
    assert record["steps"]["flaky"]["attempts"] == 2


def test_error_of_a_timed_out_step_stays_within_2_kb(make_pipeline, run_to_end, read_status):
    code = "for i in range(3000):\n    print('.' * 1008, f'progress {i:05d}', file=sys.stderr, flush=True)\ntime.sleep(30)"
    make_pipeline("p", [{"name": "a", "code": code, "timeout": 1}])
    run_to_end("p")
    entry = read_status("p")["a"]
    assert entry["state"] == "timed_out"
    assert entry["error"].startswith("timed out after 1 s\n....")
    assert entry["error"].endswith("progress 02999")
    assert len(entry["error"].encode()) <= 2048


def test_a_step_that_closes_its_output_but_runs_on_is_recorded_running(
    make_pipeline, engine, tmp_path, wait_until, read_status, monkeypatch
):
    """Output pipes that close early do not hide a running step: its state and pid are
    written, so a crash of the orchestrator still finds the process. (The `running` write
    is put off past the moment the pipes close, so it is made after the output ends.)"""
    monkeypatch.setattr(engine_module, "RECORD_RUNNING_AFTER", 1.0)
    go = tmp_path / "go"
    code = """\
    os.close(1)
    os.close(2)
    deadline = time.time() + 30
    while not pathlib.Path(sys.argv[1]).exists() and time.time() < deadline:
        time.sleep(0.02)
    """
    make_pipeline("p", [{"name": "quiet", "code": code, "args": [str(go)]}])
    run_id = engine.submit("p")
    entry = wait_until(lambda: (e := read_status("p").get("quiet", {})).get("pid") and e)
    assert entry["state"] == "running" and entry["run_id"] == run_id
    (active,) = [a for a in engine.active_runs() if a.run_id == run_id]
    assert active.running == ("quiet",)
    go.touch()
    record = engine.wait(run_id, timeout=30)
    assert record["state"] == "succeeded"
    assert read_status("p")["quiet"]["pid"] is None


def test_a_brief_silent_step_has_no_log_file_and_its_log_reads_empty(
    make_pipeline, run_to_end, pipelines_dir, cli, monkeypatch
):
    """A step that prints nothing and ends before RECORD_RUNNING_AFTER (made long here, so
    the test does not depend on how fast Python starts) gets no log file: it would cost every
    step of a chain a file creation. `logs` shows it empty, not as a step that never ran."""
    monkeypatch.setattr(engine_module, "RECORD_RUNNING_AFTER", 60.0)
    make_pipeline(
        "p",
        [
            {"name": "silent", "code": "pass"},
            {"name": "fails", "code": "sys.exit(3)"},
            {"name": "never", "depends_on": ["fails"]},
        ],
        continue_on_failure=True,
    )
    record = run_to_end("p")
    assert not (pipelines_dir / record["steps"]["silent"]["log"]).exists()
    code, out, err = cli("logs", record["run_id"], "silent")
    assert (code, out) == (0, ""), err
    code, out, _ = cli("logs", record["run_id"])
    assert out.split("\n") == [
        "===== silent (succeeded) =====",
        "===== fails (failed) =====",
        "===== never (skipped) =====",
        "(no log: the step did not start)",
        "",
    ]


def test_a_silent_step_that_runs_a_while_has_a_log_file_to_watch(
    make_pipeline, engine, pipelines_dir, tmp_path, wait_until
):
    go = tmp_path / "go"
    code = """    deadline = time.time() + 30
    while not pathlib.Path(sys.argv[1]).exists() and time.time() < deadline:
        time.sleep(0.02)
    """
    make_pipeline("p", [{"name": "quiet", "code": code, "args": [str(go)]}])
    run_id = engine.submit("p")
    log = pipelines_dir / ".runs" / "p" / run_id / "quiet.log"
    wait_until(log.exists)
    assert log.read_text() == ""
    go.touch()
    assert engine.wait(run_id, timeout=30)["state"] == "succeeded"


def test_worker_threads_end_with_the_run(make_pipeline, run_to_end, wait_until):
    """A long-lived dashboard runs pipeline after pipeline: no thread outlives its run."""
    steps = [{"name": f"s{i}"} for i in range(6)]
    make_pipeline("p", steps, max_parallel=3)
    for _ in range(3):
        assert run_to_end("p")["state"] == "succeeded"
    wait_until(
        lambda: not [t for t in threading.enumerate() if t.name.startswith("orchestrator-")],
        timeout=5,
    )


def test_a_step_that_ends_while_its_child_holds_the_output_is_never_recorded_running(
    make_pipeline, engine, read_status, monkeypatch
):
    """The step's own process is gone by the time its `running` write would be due (a child
    keeps the output open a while longer): no `running` state with a dead pid. Were it written
    at 0.3 s, it would show until the step's end at 0.8 s."""
    monkeypatch.setattr(engine_module, "RECORD_RUNNING_AFTER", 0.3)
    code = "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(0.8)'])"
    make_pipeline("p", [{"name": "parent", "code": code}])
    states = set()
    run_id = engine.submit("p")
    while (record := engine.wait(run_id, timeout=0.01)) is None:
        states.add(read_status("p").get("parent", {}).get("state"))
    assert record["state"] == "succeeded"
    assert "running" not in states
    assert states >= {"queued"}
