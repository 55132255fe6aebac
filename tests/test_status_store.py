"""The status file `.<id>.status.json`: its fields, tested flags, reset, concurrent writers
from two processes and a corrupt file moved aside."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import sys
import textwrap

import pytest

from orchestrator_core.errors import OrchestratorError, SelectionError
from orchestrator_core.pipeline_state import mark_tested, reset_steps, step_views
from orchestrator_core.store import StatusStore

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
WAIT_FOR_GO = """\
pathlib.Path(sys.argv[2]).write_text(str(os.getpid()))
deadline = time.time() + 30
while not pathlib.Path(sys.argv[1]).exists() and time.time() < deadline:
    time.sleep(0.02)
"""


def test_status_file_has_the_seed_fields_and_ours(make_pipeline, run_to_end, pipelines_dir):
    make_pipeline("p", [{"name": "a"}, {"name": "b", "depends_on": ["a"]}])
    record = run_to_end("p")
    path = pipelines_dir / ".p.status.json"
    status = json.loads(path.read_text())
    assert list(status) == ["a", "b"]
    a = status["a"]
    # The seed's fields, as the seed README shows them.
    assert a["completed"] is True and a["tested"] is False
    assert ISO_Z.match(a["last_run"])
    # Ours.
    assert a["state"] == "succeeded"
    assert ISO_Z.match(a["started_at"]) and ISO_Z.match(a["finished_at"])
    assert a["started_at"] <= a["finished_at"] == a["last_run"]
    assert isinstance(a["duration_s"], float) and a["duration_s"] >= 0
    assert a["exit_code"] == 0 and a["error"] is None
    assert a["run_id"] == record["run_id"] and a["attempt"] == 1
    assert a["pid"] is None  # only while running


def test_pid_and_state_while_running(make_pipeline, engine, read_status, tmp_path, wait_until):
    go, pidfile = tmp_path / "go", tmp_path / "pid"
    make_pipeline(
        "p", [{"name": "a", "code": WAIT_FOR_GO, "args": [str(go), str(pidfile)]}, {"name": "b"}]
    )
    run_id = engine.submit("p")
    wait_until(pidfile.exists)
    wait_until(lambda: read_status("p")["a"]["state"] == "running")
    status = read_status("p")
    assert status["a"]["pid"] == int(pidfile.read_text())
    assert status["a"]["run_id"] == run_id and status["a"]["completed"] is False
    assert status["b"]["state"] == "queued"
    go.touch()
    engine.wait(run_id, timeout=30)
    assert read_status("p")["a"]["pid"] is None


def sha256_of(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_mark_tested_records_when_and_the_script_hash(
    make_engine, make_pipeline, read_status, pipelines_dir
):
    engine = make_engine()
    make_pipeline("p", [{"name": "a"}, {"name": "b"}])
    pipeline = engine.load_pipeline("p")
    mark_tested(engine.status, pipeline, "a")
    entry = read_status("p")["a"]
    assert entry["tested"] is True and ISO_Z.match(entry["tested_at"])
    assert entry["tested_sha256"] == sha256_of(pipelines_dir / "p" / "a.py")
    assert entry["state"] == "never_run"  # marking tested runs nothing
    views = {v.name: v for v in step_views(engine.status, pipeline)[0]}
    assert views["a"].tested and not views["a"].tested_stale
    assert not views["b"].tested

    (pipelines_dir / "p" / "a.py").write_text("print('changed since it was tested')\n")
    views = {v.name: v for v in step_views(engine.status, pipeline)[0]}
    assert views["a"].tested and views["a"].tested_stale

    mark_tested(engine.status, pipeline, "a", undo=True)
    entry = read_status("p")["a"]
    assert entry["tested"] is False and entry["tested_at"] is None
    with pytest.raises(SelectionError, match="has no step 'c'"):
        mark_tested(engine.status, pipeline, "c")


def test_reset_clears_run_state_and_keeps_tested(engine, make_pipeline, run_to_end, read_status):
    make_pipeline("p", [{"name": "a"}, {"name": "b", "code": "raise SystemExit(1)"}])
    run_to_end("p")
    pipeline = engine.load_pipeline("p")
    mark_tested(engine.status, pipeline, "a")
    tested_at = read_status("p")["a"]["tested_at"]

    assert reset_steps(engine.status, pipeline, "b") == ["b"]
    status = read_status("p")
    assert status["b"]["state"] == "never_run" and status["b"]["error"] is None
    assert status["b"]["last_run"] is None and status["b"]["exit_code"] is None
    assert status["a"]["state"] == "succeeded"  # untouched

    assert reset_steps(engine.status, pipeline) == ["a", "b"]
    a = read_status("p")["a"]
    assert a["state"] == "never_run" and a["completed"] is False and a["run_id"] is None
    assert "last_success_at" not in a
    assert a["tested"] is True and a["tested_at"] == tested_at


def test_reset_refuses_a_running_step(engine, make_pipeline, read_status, tmp_path, wait_until):
    go, pidfile = tmp_path / "go", tmp_path / "pid"
    make_pipeline("p", [{"name": "a", "code": WAIT_FOR_GO, "args": [str(go), str(pidfile)]}])
    run_id = engine.submit("p")
    wait_until(pidfile.exists)
    with pytest.raises(
        OrchestratorError, match="cannot reset a of 'p' while it is queued or running"
    ):
        reset_steps(engine.status, engine.load_pipeline("p"))
    go.touch()
    engine.wait(run_id, timeout=30)


WRITER = """\
import sys
from pathlib import Path
from orchestrator_core.store import StatusStore

store = StatusStore(Path(sys.argv[1]))
tag, count = sys.argv[2], int(sys.argv[3])
for i in range(count):
    store.set_fields("shared", {f"{tag}-{i}": {"state": "succeeded"}, tag: {"exit_code": i}})
"""


def test_two_processes_writing_lose_nothing_and_readers_always_parse(pipelines_dir, tmp_path):
    count = 150
    writer = tmp_path / "writer.py"
    writer.write_text(textwrap.dedent(WRITER))
    procs = [
        subprocess.Popen([sys.executable, str(writer), str(pipelines_dir), tag, str(count)])
        for tag in ("left", "right")
    ]
    path = pipelines_dir / ".shared.status.json"
    parsed = 0
    while any(p.poll() is None for p in procs):
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        data = json.loads(text)  # never a half-written file
        assert isinstance(data, dict)
        parsed += 1
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert parsed > 0
    data = json.loads(path.read_text())
    for tag in ("left", "right"):
        assert all(f"{tag}-{i}" in data for i in range(count)), tag
        assert data[tag]["exit_code"] == count - 1
    assert len(data) == 2 * count + 2
    assert not list(pipelines_dir.glob("*.tmp"))


@pytest.mark.parametrize("junk", ["{not json", "[1, 2, 3]", ""])
def test_corrupt_status_file_is_moved_aside_and_the_pipeline_keeps_working(
    make_pipeline, run_to_end, engine, pipelines_dir, read_status, caplog, junk
):
    make_pipeline("p", [{"name": "a"}])
    path = pipelines_dir / ".p.status.json"
    path.write_text(junk)
    pipeline = engine.load_pipeline("p")
    with caplog.at_level(logging.WARNING):
        views, notices = step_views(engine.status, pipeline)
    (aside,) = pipelines_dir.glob(".p.status.json.corrupt-*")
    assert re.fullmatch(r"\.p\.status\.json\.corrupt-\d{8}T\d{6}\d{6}Z", aside.name)
    assert aside.read_text() == junk
    (notice,) = notices
    assert f"moved aside to {aside.name}" in notice
    assert any(aside.name in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert views[0].state.value == "never_run"
    assert run_to_end("p")["state"] == "succeeded"
    assert read_status("p")["a"]["state"] == "succeeded"


def test_a_seed_style_status_file_is_read(make_pipeline, engine, pipelines_dir):
    make_pipeline("p", [{"name": "a"}, {"name": "b"}])
    (pipelines_dir / ".p.status.json").write_text(
        json.dumps(
            {
                "a": {"completed": True, "tested": True, "last_run": "2024-01-15T10:30:00Z"},
                "b": {"completed": False, "tested": False, "last_run": None},
            }
        )
    )
    views = {
        v.name: v for v in step_views(StatusStore(pipelines_dir), engine.load_pipeline("p"))[0]
    }
    assert views["a"].state.value == "succeeded" and views["a"].tested
    assert views["a"].last_run == "2024-01-15T10:30:00Z"
    assert views["b"].state.value == "never_run"
