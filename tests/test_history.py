"""Run history: what a run record holds, how many are kept (and their logs deleted), and
listing the newest runs with many on disk."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from orchestrator_core.errors import OrchestratorError, RunNotFoundError
from orchestrator_core.history import RunHistory, new_run_id
from orchestrator_core.plan import Selection
from orchestrator_core.status import parse_iso, utc_now


def test_a_run_record_tells_what_ran_and_how(make_pipeline, run_to_end, pipelines_dir):
    make_pipeline(
        "p",
        [
            {"name": "a", "code": "print('hi from a')"},
            {"name": "b", "depends_on": ["a"], "code": "raise SystemExit(1)"},
        ],
    )
    record = run_to_end("p", Selection("from", "a"))
    path = pipelines_dir / ".runs" / "p" / f"{record['run_id']}.json"
    on_disk = json.loads(path.read_text())
    assert on_disk == RunHistory(pipelines_dir).get(record["run_id"])
    assert on_disk["pipeline_id"] == "p"
    assert on_disk["trigger"] == "dashboard"  # the Engine's default; the CLI says "cli"
    assert on_disk["selection"] == {"kind": "from", "step": "a"}
    assert on_disk["state"] == "failed"
    assert parse_iso(on_disk["started_at"]) <= parse_iso(on_disk["finished_at"])
    assert on_disk["duration_s"] >= 0
    a, b = on_disk["steps"]["a"], on_disk["steps"]["b"]
    assert (a["state"], a["exit_code"], a["attempts"]) == ("succeeded", 0, 1)
    assert (b["state"], b["exit_code"]) == ("failed", 1)
    assert a["duration_s"] >= 0 and a["started_at"] and a["finished_at"]
    assert a["log"] == f".runs/p/{record['run_id']}/a.log"
    assert "stdout hi from a" in (pipelines_dir / a["log"]).read_text()


def test_cli_runs_are_recorded_with_trigger_cli(make_pipeline, cli, pipelines_dir):
    make_pipeline("p", [{"name": "a"}])
    code, _, err = cli("run", "p", "--step", "a")
    assert code == 0, err
    (record,) = RunHistory(pipelines_dir).list("p")
    assert record["trigger"] == "cli"
    assert record["selection"] == {"kind": "step", "step": "a"}
    assert record["state"] == "succeeded"


def run_dirs(pipelines_dir):
    base = pipelines_dir / ".runs" / "p"
    return sorted(p.name for p in base.iterdir() if p.is_dir())


def test_keep_runs_prunes_old_records_and_their_logs(make_engine, make_pipeline, pipelines_dir):
    make_pipeline("p", [{"name": "a"}])
    engine = make_engine(keep_runs=3)
    ids = []
    for _ in range(5):
        run_id = engine.submit("p")
        engine.wait(run_id, timeout=30)
        ids.append(run_id)
    kept = [r["run_id"] for r in RunHistory(pipelines_dir).list("p")]
    assert kept == ids[:1:-1]  # the newest three, newest first
    assert run_dirs(pipelines_dir) == sorted(ids[2:])
    with pytest.raises(RunNotFoundError, match=f"no run '{ids[0]}'"):
        RunHistory(pipelines_dir).get(ids[0])


def test_keep_runs_from_the_environment(make_engine, make_pipeline, pipelines_dir, monkeypatch):
    make_pipeline("p", [{"name": "a"}])
    monkeypatch.setenv("ORCHESTRATOR_KEEP_RUNS", "2")
    engine = make_engine()
    for _ in range(3):
        engine.wait(engine.submit("p"), timeout=30)
    assert len(RunHistory(pipelines_dir).list("p")) == 2
    assert len(run_dirs(pipelines_dir)) == 2


@pytest.mark.parametrize("raw", ["0", "lots", "-5"])
def test_bad_keep_runs_setting_is_a_user_error(make_engine, make_pipeline, monkeypatch, raw):
    """Raised when a run would start (and later prune), not when the engine is made."""
    make_pipeline("p", [{"name": "a"}])
    monkeypatch.setenv("ORCHESTRATOR_KEEP_RUNS", raw)
    engine = make_engine()
    with pytest.raises(
        OrchestratorError, match=r"ORCHESTRATOR_KEEP_RUNS=.* must be a whole number >= 1"
    ):
        engine.submit("p")


def synthetic_runs(pipelines_dir, pipeline_id, count, start, *, logs=False):
    """Write `count` finished run records (a second apart from `start`); return their ids."""
    folder = pipelines_dir / ".runs" / pipeline_id
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(count):
        when = start + timedelta(seconds=i)
        run_id = new_run_id(when)
        record = {
            "run_id": run_id,
            "pipeline_id": pipeline_id,
            "trigger": "cli",
            "selection": {"kind": "all", "step": None},
            "state": "succeeded",
            "started_at": when.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "finished_at": when.strftime("%Y-%m-%dT%H:%M:%S.500Z"),
            "duration_s": 0.5,
            "steps": {
                "a": {
                    "state": "succeeded",
                    "duration_s": 0.5,
                    "log": f".runs/{pipeline_id}/{run_id}/a.log",
                }
            },
        }
        (folder / f"{run_id}.json").write_text(json.dumps(record))
        if logs:
            (folder / run_id).mkdir()
            (folder / run_id / "a.log").write_text("old log\n")
        ids.append(run_id)
    return ids


def test_newest_50_runs_are_kept_by_default(make_engine, make_pipeline, pipelines_dir):
    make_pipeline("p", [{"name": "a"}])
    old = synthetic_runs(pipelines_dir, "p", 55, utc_now() - timedelta(days=1), logs=True)
    engine = make_engine()
    assert engine.history.keep == 50
    new = engine.submit("p")
    engine.wait(new, timeout=30)
    kept = [r["run_id"] for r in RunHistory(pipelines_dir).list("p", limit=100)]
    assert kept == [new, *reversed(old[6:])]
    assert run_dirs(pipelines_dir) == sorted([*old[6:], new])


def test_listing_the_newest_20_with_2000_runs_on_disk(pipelines_dir, cli):
    start = utc_now() - timedelta(days=2)
    p_ids = synthetic_runs(pipelines_dir, "p", 1200, start)
    q_ids = synthetic_runs(pipelines_dir, "q", 800, start + timedelta(seconds=400.5))
    history = RunHistory(pipelines_dir)
    assert [r["run_id"] for r in history.list("p")] == p_ids[::-1][:20]
    newest_all = sorted(p_ids + q_ids, reverse=True)[:20]
    assert [r["run_id"] for r in history.list()] == newest_all
    assert [r["pipeline_id"] for r in history.list(limit=4)] == ["q", "p", "q", "p"]

    code, out, err = cli("runs", "--limit", "20", "--json")
    assert code == 0, err
    assert [r["run_id"] for r in json.loads(out)] == newest_all
    code, out, _ = cli("runs", "q", "--limit", "3")
    lines = out.splitlines()
    assert lines[0].split() == [
        "RUN",
        "PIPELINE",
        "TRIGGER",
        "STATE",
        "STARTED",
        "DURATION",
        "OK",
        "SELECTION",
    ]
    assert [line.split()[0] for line in lines[1:]] == q_ids[::-1][:3]


def test_a_record_left_running_by_a_dead_process_reads_interrupted(pipelines_dir):
    (run_id,) = synthetic_runs(pipelines_dir, "p", 1, utc_now())
    path = pipelines_dir / ".runs" / "p" / f"{run_id}.json"
    record = json.loads(path.read_text())
    record.update(state="running", pid=2**22 + 12345, pid_started=1.0, finished_at=None)
    path.write_text(json.dumps(record))
    assert RunHistory(pipelines_dir).get(run_id)["state"] == "interrupted"
