"""What a page shows of one pipeline right now: its steps, file notices and the run in progress.

Everything is read from the status, lock and run files, so a run started by the CLI (another
process) shows up the same way as one started from this dashboard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator_core import paths
from orchestrator_core.discovery import DiscoveredPipeline
from orchestrator_core.engine import Engine
from orchestrator_core.locks import owner_alive, read_owner
from orchestrator_core.pipeline_state import StepView, step_views
from orchestrator_core.status import StepState, utc_now

from .progress import RunProgress, expected_durations, run_progress


@dataclass(frozen=True)
class LiveRun:
    """A run of the pipeline in progress, in this server or in another process."""

    run_id: str
    pipeline_id: str
    trigger: str
    pid: int | None
    started_at: str | None
    record: dict[str, Any] | None
    ours: bool  # started by this server's engine, so it can be cancelled from here
    cancelling: bool = False


@dataclass(frozen=True)
class PipelineSnapshot:
    """One valid pipeline's steps and live run, as read now."""

    found: DiscoveredPipeline
    views: list[StepView]
    notices: list[str]
    live: LiveRun | None

    @property
    def active(self) -> bool:
        """True while a run of this pipeline is in progress (here or elsewhere)."""
        return self.live is not None or any(v.state.is_active for v in self.views)

    def view(self, name: str) -> StepView | None:
        """The view of the step called `name`, if there is one."""
        return next((v for v in self.views if v.name == name), None)


def live_run(engine: Engine, pipeline_id: str) -> LiveRun | None:
    """The run of `pipeline_id` in progress now, or None."""
    for active in engine.active_runs():
        if active.pipeline_id == pipeline_id:
            record = engine.history.read(pipeline_id, active.run_id)
            return LiveRun(
                run_id=active.run_id,
                pipeline_id=pipeline_id,
                trigger=active.trigger,
                pid=None,
                started_at=active.started_at,
                record=record,
                ours=True,
                cancelling=active.cancelling,
            )
    owner = read_owner(paths.run_lock_path(engine.pipelines_dir, pipeline_id))
    if not owner or not owner.get("run_id") or not owner_alive(owner):
        return None
    run_id = str(owner["run_id"])
    record = engine.history.read(pipeline_id, run_id)
    return LiveRun(
        run_id=run_id,
        pipeline_id=pipeline_id,
        trigger=owner.get("trigger") or (record or {}).get("trigger") or "another process",
        pid=owner.get("pid"),
        started_at=owner.get("started_at"),
        record=record,
        ours=False,
    )


def pipeline_snapshot(engine: Engine, found: DiscoveredPipeline) -> PipelineSnapshot:
    """Read a valid pipeline's state now."""
    assert found.pipeline is not None
    live = live_run(engine, found.id)
    views, notices = step_views(engine.status, found.pipeline)
    return PipelineSnapshot(found, views, list(notices), live)


def expected_for(engine: Engine, pipeline_id: str, exclude_run: str | None) -> dict[str, float]:
    """Step durations to expect, from the pipeline's last 20 finished runs."""
    return expected_durations(engine.history.list(pipeline_id, limit=20), exclude_run)


def live_progress(snap: PipelineSnapshot, expected: dict[str, float]) -> RunProgress | None:
    """Progress of the snapshot's live run, or None when nothing runs."""
    live = snap.live
    if live is None:
        return None
    in_run = {v.name: v for v in snap.views if v.run_id == live.run_id}
    record = live.record or {}
    waves = record.get("plan") or [list(in_run)]
    states: dict[str, StepState] = {}
    for wave in waves:
        for name in wave:
            view = in_run.get(name)
            states[name] = view.state if view else StepState.QUEUED
    started = {n: v.started_at for n, v in in_run.items()}
    return run_progress(
        waves,
        states,
        started,
        record.get("started_at") or live.started_at,
        expected,
        utc_now(),
        int(record.get("max_parallel") or 1),
    )
