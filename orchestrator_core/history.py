"""Run history on disk: one JSON record per run and a folder of step logs beside it.

    <pipelines_dir>/.runs/<pipeline_id>/<run_id>.json
    <pipelines_dir>/.runs/<pipeline_id>/<run_id>/<step>.log

Run ids start with their UTC start time, so sorting names sorts runs; listing the newest
few reads only those files, however many runs are kept.
"""

from __future__ import annotations

import os
import secrets
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from . import jsonio, paths
from .errors import OrchestratorError, RunNotFoundError
from .processes import process_alive
from .status import RunState, utc_now
from .store import StatusStore, atomic_write_json

DEFAULT_KEEP_RUNS = 50
ENV_KEEP_RUNS = "ORCHESTRATOR_KEEP_RUNS"


def new_run_id(now: datetime | None = None) -> str:
    """A unique, time-sortable run id such as `20261125T220604123456Z-3fa2c1`."""
    now = now or utc_now()
    return now.strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(3)


def keep_runs_setting() -> int:
    """How many runs per pipeline to keep: $ORCHESTRATOR_KEEP_RUNS or 50."""
    raw = os.environ.get(ENV_KEEP_RUNS, "")
    if not raw:
        return DEFAULT_KEEP_RUNS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise OrchestratorError(f"{ENV_KEEP_RUNS}={raw!r} must be a whole number >= 1")
    return value


class RunHistory:
    """Reads and writes run records and step logs under `<pipelines_dir>/.runs/`."""

    def __init__(self, pipelines_dir: Path, keep: int = DEFAULT_KEEP_RUNS) -> None:
        self.pipelines_dir = pipelines_dir
        self.keep = keep

    def record_path(self, pipeline_id: str, run_id: str) -> Path:
        """Where a run's record lives."""
        return paths.runs_dir(self.pipelines_dir, pipeline_id) / f"{run_id}.json"

    def log_path(self, pipeline_id: str, run_id: str, step: str) -> Path:
        """Where a step's log of a run lives (the folder is created on demand)."""
        return self.pipelines_dir / paths.log_relpath(pipeline_id, run_id, step)

    def write(self, record: dict[str, Any], *, fsync: bool = True) -> None:
        """Save a run record atomically."""
        path = self.record_path(record["pipeline_id"], record["run_id"])
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, record, fsync=fsync)

    def read(self, pipeline_id: str, run_id: str) -> dict[str, Any] | None:
        """One run's record, or None when it is missing or unreadable (a dead run reads
        `interrupted`)."""
        return self._read(self.record_path(pipeline_id, run_id))

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            data = jsonio.loads(path.read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        _complete(data, path.parent.name, path.stem)
        if data.get("state") == RunState.RUNNING.value:
            self._fill_live_steps(data)
            if not process_alive(data.get("pid"), data.get("pid_started")):
                data["state"] = RunState.INTERRUPTED.value
                data.setdefault("finished_at", None)
                for step in data.get("steps", {}).values():
                    if step.get("state") in ("queued", "running"):
                        step["state"] = "interrupted"
        return data

    def settle(self, pipeline_id: str, run_id: str) -> None:
        """Write down the record of a run whose process died, with its steps as the status
        file has them now: the next run of the pipeline is about to change those entries."""
        path = self.record_path(pipeline_id, run_id)
        record = self._read(path) if path.exists() else None
        if record is not None and record.get("state") == RunState.INTERRUPTED.value:
            self.write(record)

    def _fill_live_steps(self, record: dict[str, Any]) -> None:
        """A running record is written at the start and the end only: take the current step
        states from the status file (which also turns the steps of a dead run `interrupted`)."""
        entries = StatusStore(self.pipelines_dir).load(record.get("pipeline_id", "")).entries
        for name, step in record.get("steps", {}).items():
            entry = entries.get(name)
            if entry and entry.get("run_id") == record.get("run_id"):
                step.update(
                    state=entry.get("state"),
                    started_at=entry.get("started_at"),
                    finished_at=entry.get("finished_at"),
                    duration_s=entry.get("duration_s"),
                    exit_code=entry.get("exit_code"),
                    attempts=entry.get("attempt") or 0,
                    error=entry.get("error") or entry.get("skip_reason"),
                )

    def _ids(self, pipeline_id: str) -> list[str]:
        try:
            with os.scandir(paths.runs_dir(self.pipelines_dir, pipeline_id)) as it:
                return [
                    e.name[:-5]
                    for e in it
                    if e.name.endswith(".json") and not e.name.startswith(".")
                ]
        except FileNotFoundError:
            return []

    def pipeline_ids(self) -> list[str]:
        """Pipelines that have any run history."""
        try:
            with os.scandir(paths.runs_dir(self.pipelines_dir)) as it:
                return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
        except FileNotFoundError:
            return []

    def list(self, pipeline_id: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """The newest `limit` runs (of one pipeline or all), newest first."""
        pids = [pipeline_id] if pipeline_id else self.pipeline_ids()
        ids = sorted(((rid, pid) for pid in pids for rid in self._ids(pid)), reverse=True)
        out: list[dict[str, Any]] = []
        for rid, pid in ids:
            record = self._read(self.record_path(pid, rid))
            if record is not None:
                out.append(record)
            if len(out) >= limit:
                break
        return out

    def get(self, run_id: str) -> dict[str, Any]:
        """One run's record, found in whichever pipeline it belongs to."""
        for pid in self.pipeline_ids():
            path = self.record_path(pid, run_id)
            if path.exists():
                record = self._read(path)
                if record is not None:
                    return record
        raise RunNotFoundError(
            f"no run '{run_id}' in {paths.runs_dir(self.pipelines_dir)}; "
            "list runs with `python -m orchestrator_core runs`"
        )

    def prune(self, pipeline_id: str) -> int:
        """Delete all but the newest `keep` runs of a pipeline, logs included; returns how many."""
        ids = sorted(self._ids(pipeline_id), reverse=True)
        removed = 0
        for rid in ids[self.keep :]:
            self.record_path(pipeline_id, rid).unlink(missing_ok=True)
            shutil.rmtree(paths.runs_dir(self.pipelines_dir, pipeline_id) / rid, ignore_errors=True)
            removed += 1
        return removed


def _complete(record: dict[str, Any], pipeline_id: str, run_id: str) -> None:
    """Fill what a hand-edited or truncated record lacks, so readers never fail on it."""
    record["run_id"] = record.get("run_id") if isinstance(record.get("run_id"), str) else run_id
    if not isinstance(record.get("pipeline_id"), str):
        record["pipeline_id"] = pipeline_id
    if not isinstance(record.get("state"), str):
        record["state"] = "unknown"
    for key in ("trigger", "started_at", "finished_at", "duration_s"):
        record.setdefault(key, None)
    if not isinstance(record.get("selection"), dict):
        record["selection"] = {"kind": "all", "step": None}
    steps = record.get("steps")
    steps = steps if isinstance(steps, dict) else {}
    for name, step in list(steps.items()):
        step = step if isinstance(step, dict) else {}
        if not isinstance(step.get("state"), str):
            step["state"] = "unknown"
        if not isinstance(step.get("log"), str):
            step["log"] = paths.log_relpath(record["pipeline_id"], record["run_id"], str(name))
        steps[name] = step
    record["steps"] = steps
