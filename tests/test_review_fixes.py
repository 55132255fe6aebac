"""Fixes for what a review of the CLI found: unreadable files and folders, a Ctrl-C as a run
starts, a reader of stdout that leaves early, and pids that can no longer be identified."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator_core.history import RunHistory

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture
def locked(pipelines_dir: Path):
    """Paths made unreadable during a test, made readable again after it."""
    paths: list[Path] = []

    def lock(path: Path) -> Path:
        path.chmod(0)
        paths.append(path)
        return path

    yield lock
    for path in paths:
        path.chmod(0o755)


def test_an_unreadable_folder_is_one_invalid_entry_and_stops_nothing(
    make_pipeline, cli, pipelines_dir, locked
):
    make_pipeline("ok", [{"name": "a"}])
    (pipelines_dir / "private").mkdir()
    locked(pipelines_dir / "private")
    code, out, err = cli("list", "--json", unprivileged=True)
    assert code == 0, err
    by_id = {p["id"]: p for p in json.loads(out)}
    assert by_id["ok"]["valid"] is True
    assert by_id["private"]["valid"] is False
    assert "cannot be read (permission denied)" in by_id["private"]["problems"][0]
    code, _out, err = cli("run", "ok", unprivileged=True)
    assert code == 0, err


def test_a_status_file_that_cannot_be_read_is_not_moved_aside(
    make_pipeline, run_to_end, cli, pipelines_dir, locked
):
    make_pipeline("ok", [{"name": "a"}])
    run_to_end("ok")
    status = locked(pipelines_dir / ".ok.status.json")
    code, _out, err = cli("status", "ok", unprivileged=True)
    assert code == 2
    assert err.strip() == (f"error: cannot read {status}: Permission denied; check its permissions")
    assert status.exists()
    assert not list(pipelines_dir.glob(".ok.status.json.corrupt-*"))


def test_a_pid_without_its_start_time_is_never_stopped(make_pipeline, cli, pipelines_dir):
    """A hand-edited entry names a live process without `pid_started`: that pid may belong
    to anybody by now, so neither recovery nor the next run may signal it."""
    make_pipeline("p", [{"name": "d"}])
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (pipelines_dir / ".p.status.json").write_text(
            json.dumps({"d": {"state": "running", "pid": bystander.pid, "run_id": "old"}})
        )
        code, _out, err = cli("run", "p", "--step", "d")
        assert code == 0, err
        assert bystander.poll() is None, "the bystander was killed"
        (pipelines_dir / ".p.status.json").write_text(
            json.dumps({"d": {"state": "failed", "orphan_pid": bystander.pid}})
        )
        code, _out, err = cli("run", "p", "--step", "d")
        assert code == 0, err
        assert bystander.poll() is None, "the bystander was killed"
        assert f"note: did not stop pid {bystander.pid} of step 'd'" in err
    finally:
        bystander.kill()
        bystander.wait()


def test_ctrl_c_as_the_run_starts_cancels_and_records_it(make_pipeline, engine, pipelines_dir):
    """The CLI prints the run's header in its main thread; a Ctrl-C there reaches the caller,
    and the run still ends, cancelled, with nothing started."""
    make_pipeline("p", [{"name": "a"}, {"name": "b", "depends_on": ["a"]}])

    def sink(event):
        if event.kind == "run_started":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        engine.submit("p", on_event=sink)
    engine.shutdown()
    (record,) = RunHistory(pipelines_dir).list("p")
    assert record["state"] == "cancelled"
    assert {s["state"] for s in record["steps"].values()} == {"skipped"}


def test_a_failed_run_piped_into_head_still_exits_1(make_pipeline, pipelines_dir):
    """`run | head -1`: head leaves after the header, the run goes on and fails; with
    pipefail the shell must see the failure, not a success."""
    make_pipeline("p", [{"name": "slow", "code": "time.sleep(0.5)\nsys.exit(3)"}])
    cmd = (
        f"set -o pipefail; {sys.executable} -m orchestrator_core --pipelines-dir {pipelines_dir} "
        "run p | head -1"
    )
    proc = subprocess.run(
        ["bash", "-c", cmd], cwd=pipelines_dir.parent, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stdout.startswith("run ") and "Traceback" not in proc.stderr


def test_status_shows_the_last_error_lines_of_a_failed_step(make_pipeline, cli):
    make_pipeline(
        "p", [{"name": "c", "code": "print('disk is full', file=sys.stderr)\nsys.exit(4)"}]
    )
    assert cli("run", "p")[0] == 1
    code, out, _ = cli("status", "p")
    assert code == 0
    assert out.splitlines()[-2:] == ["c failed; last error lines:", "  disk is full"]


def test_an_unclosed_quote_names_the_line_where_it_starts(write_yaml, cli):
    write_yaml("q", 'name: "Quote\ndescription: d\nsteps: []\n\n\n\n')
    code, out, _ = cli("validate", "q")
    assert code == 1
    assert "while scanning a quoted scalar that starts on line 1" in out


def test_control_characters_in_a_name_or_script_are_problems_not_crashes(write_yaml, cli):
    write_yaml(
        "n",
        'name: n\ndescription: d\nsteps:\n  - name: "a\\0b"\n    script: "ok\\0.py"\n'
        "    description: d\n",
    )
    code, out, err = cli("validate")
    assert code == 1 and "Traceback" not in err
    assert "name (line 4): may not contain NUL or other control characters" in out
    assert "script (line 5): may not contain NUL or other control characters" in out


def test_hand_edited_status_and_run_records_break_no_command(
    make_pipeline, cli, run_to_end, pipelines_dir
):
    make_pipeline("p", [{"name": "a"}, {"name": "c"}])
    record = run_to_end("p")
    (pipelines_dir / ".p.status.json").write_text(
        json.dumps({"c": "junk", "a": {"state": "running"}})
    )
    code, out, err = cli("status", "p", "--json")
    assert code == 0, err
    states = {s["name"]: s["state"] for s in json.loads(out)["steps"]}
    assert states["a"] == "interrupted", "a running entry of no run is not running"
    code, _, err = cli("reset", "p")
    assert code == 0 and "Traceback" not in err, err
    runs = pipelines_dir / ".runs" / "p"
    (runs / "29991231T000000000000Z-aaaaaa.json").write_text("{}")
    (runs / f"{record['run_id']}.json").write_text(json.dumps({"steps": {"a": {}}}))
    code, out, err = cli("runs", "p", "--json")
    assert code == 0 and "Traceback" not in err, err
    assert [r["run_id"] for r in json.loads(out)] == [
        "29991231T000000000000Z-aaaaaa",
        record["run_id"],
    ]
    code, out, err = cli("logs", record["run_id"])
    assert code == 0 and "Traceback" not in err, err


def test_a_crashed_runs_history_survives_the_next_run(
    make_pipeline, cli, cli_start, read_status, wait_until, process_tree, pipelines_dir
):
    """kill -9 after `first` succeeded: the crashed run's record must keep saying so after
    the next run rewrites `first`'s status entry."""
    make_pipeline("p", [{"name": "first"}, process_tree.step("long", depends_on=["first"])])
    run = cli_start("run", "p")
    process_tree.pids()
    wait_until(lambda: read_status("p").get("long", {}).get("state") == "running")
    old_run_id = read_status("p")["long"]["run_id"]
    os.kill(run.pid, 9)
    run.wait(timeout=10)
    code, _out, err = cli("run", "p", "--step", "first")
    assert code == 0, err
    old = RunHistory(pipelines_dir).get(old_run_id)
    assert old["state"] == "interrupted"
    assert old["steps"]["first"]["state"] == "succeeded"
    assert old["steps"]["first"]["duration_s"] is not None
    assert old["steps"]["long"]["state"] == "interrupted"


def test_a_pipeline_id_ending_in_status_is_refused(make_pipeline, cli, pipelines_dir):
    """`.a.status.lock` is pipeline a's status lock: pipeline `a.status` may not use it as its
    run lock (a run of one would block the other's status writes)."""
    make_pipeline("a", [{"name": "s"}])
    make_pipeline("a.status", [{"name": "s"}])
    code, out, _ = cli("validate")
    assert code == 1
    assert "'a.status' may not end in '.status'" in out
    assert cli("run", "a")[0] == 0
