"""What a user sees of a pipeline's steps now, and the actions on them that are not runs:
mark tested / untested and reset. Shared by the CLI and the dashboard."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .errors import OrchestratorError, SelectionError
from .fingerprint import script_sha256
from .plan import outdated_reasons
from .spec import Pipeline, did_you_mean
from .status import RUN_FIELDS, StepState, blank_entry, iso, normalise_entry, state_of, utc_now
from .store import Entries, StatusStore


@dataclass(frozen=True)
class StepView:
    """One step as the status table shows it."""

    name: str
    description: str
    script: str
    depends_on: tuple[str, ...]
    state: StepState
    completed: bool
    tested: bool
    tested_stale: bool
    tested_at: str | None
    last_run: str | None
    started_at: str | None
    finished_at: str | None
    duration_s: float | None
    exit_code: int | None
    error: str | None
    skip_reason: str | None
    run_id: str | None
    attempt: int | None
    pid: int | None
    outdated: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON form (documented in the README)."""
        out = asdict(self)
        out["state"] = self.state.value
        out["depends_on"] = list(self.depends_on)
        out["outdated"] = list(self.outdated)
        return out


def step_views(store: StatusStore, pipeline: Pipeline) -> tuple[list[StepView], list[str]]:
    """The steps in file order with their state, tested/stale flags and outdated reasons,
    plus notices about the status file (a corrupt file moved aside, say)."""
    snapshot = store.load(pipeline.id)
    hashes = {s.name: script_sha256(pipeline.script_path(s)) for s in pipeline.steps}
    outdated = outdated_reasons(pipeline, snapshot.entries, hashes)
    views = []
    for step in pipeline.steps:
        entry = normalise_entry(snapshot.entries.get(step.name))
        tested = bool(entry.get("tested"))
        views.append(
            StepView(
                name=step.name,
                description=step.description,
                script=step.script,
                depends_on=step.depends_on,
                state=state_of(entry),
                completed=bool(entry.get("completed")),
                tested=tested,
                # Marked tested by an older version (no sha256 kept): not known to be stale.
                tested_stale=tested
                and entry.get("tested_sha256") is not None
                and entry.get("tested_sha256") != hashes[step.name],
                tested_at=entry.get("tested_at"),
                last_run=entry.get("last_run"),
                started_at=entry.get("started_at"),
                finished_at=entry.get("finished_at"),
                duration_s=entry.get("duration_s"),
                exit_code=entry.get("exit_code"),
                error=entry.get("error"),
                skip_reason=entry.get("skip_reason"),
                run_id=entry.get("run_id"),
                attempt=entry.get("attempt"),
                pid=entry.get("pid"),
                outdated=tuple(outdated[step.name]),
            )
        )
    return views, snapshot.notices


def _require(pipeline: Pipeline, step: str) -> None:
    if step not in pipeline.step_names:
        raise SelectionError(
            f"pipeline '{pipeline.id}' has no step '{step}'{did_you_mean(step, pipeline.step_names)}"
        )


def mark_tested(store: StatusStore, pipeline: Pipeline, step: str, *, undo: bool = False) -> None:
    """Mark a step tested (recording when, and its script's sha256) or untested."""
    _require(pipeline, step)
    fields: dict[str, Any] = {"tested": not undo}
    if undo:
        fields.update(tested_at=None, tested_sha256=None)
    else:
        fields.update(
            tested_at=iso(utc_now()),
            tested_sha256=script_sha256(pipeline.script_path(pipeline.step(step))),
        )
    store.set_fields(pipeline.id, {step: fields})


def reset_steps(store: StatusStore, pipeline: Pipeline, step: str | None = None) -> list[str]:
    """Clear the run state of one step or all (keeping `tested`); refuses while one is active."""
    names = pipeline.step_names if step is None else [step]
    if step is not None:
        _require(pipeline, step)

    def apply(entries: Entries) -> None:
        busy = [n for n in names if state_of(normalise_entry(entries.get(n))).is_active]
        if busy:
            raise OrchestratorError(
                f"cannot reset {', '.join(busy)} of '{pipeline.id}' while it is queued or running; "
                "cancel the run first"
            )
        fresh = blank_entry()
        for n in names:
            entry = entries.get(n)
            if entry is None:
                continue
            if not isinstance(entry, dict):  # hand-edited junk: start the entry afresh
                entry = {}
            for key in RUN_FIELDS:
                entry.pop(key, None)
            entry.update({k: v for k, v in fresh.items() if k not in ("tested",)})
            entries[n] = normalise_entry(entry)

    store.update(pipeline.id, apply, recover=True)
    return names
