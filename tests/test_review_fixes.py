"""Fixes for what a review of the CLI found: unreadable files and folders, a Ctrl-C as a run
starts, a reader of stdout that leaves early, and pids that can no longer be identified.

Permission checks run without root's capabilities (`setpriv`), so they hold as root too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator_core.history import RunHistory

PROJECT = Path(__file__).resolve().parent.parent


def cli_without_privileges(pipelines_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI as a user whom file permissions bind (root gives up its capabilities)."""
    prefix = ["setpriv", "--bounding-set", "-all", "--inh-caps", "-all"] if os.getuid() == 0 else []
    return subprocess.run(
        [
            *prefix,
            sys.executable,
            "-m",
            "orchestrator_core",
            "--pipelines-dir",
            str(pipelines_dir),
            *args,
        ],
        cwd=pipelines_dir.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )


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
    make_pipeline, pipelines_dir, locked
):
    make_pipeline("ok", [{"name": "a"}])
    (pipelines_dir / "private").mkdir()
    locked(pipelines_dir / "private")
    proc = cli_without_privileges(pipelines_dir, "list", "--json")
    assert proc.returncode == 0, proc.stderr
    by_id = {p["id"]: p for p in json.loads(proc.stdout)}
    assert by_id["ok"]["valid"] is True
    assert by_id["private"]["valid"] is False
    assert "cannot be read (permission denied)" in by_id["private"]["problems"][0]
    proc = cli_without_privileges(pipelines_dir, "run", "ok")
    assert proc.returncode == 0, proc.stderr


def test_a_status_file_that_cannot_be_read_is_not_moved_aside(
    make_pipeline, run_to_end, pipelines_dir, locked
):
    make_pipeline("ok", [{"name": "a"}])
    run_to_end("ok")
    status = locked(pipelines_dir / ".ok.status.json")
    proc = cli_without_privileges(pipelines_dir, "status", "ok")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: cannot read {status}: Permission denied; check its permissions"
    )
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
