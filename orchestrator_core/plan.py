"""What a selection runs, in which order and waves, and why each step runs or is skipped.

Pure: it takes a pipeline, its status entries and the scripts' current hashes, and returns
data. Nothing here reads files or starts processes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import dag
from .errors import SelectionError
from .spec import Pipeline, did_you_mean
from .status import StepState, parse_iso, state_of

SELECTION_KINDS = ("all", "step", "from", "to", "outdated")


@dataclass(frozen=True)
class Selection:
    """Which steps a run covers: all, one `step`, `from` a step down, `to` a step up, or
    the `outdated` ones and what depends on them."""

    kind: str = "all"
    step: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in SELECTION_KINDS:
            raise SelectionError(f"unknown selection '{self.kind}'; use one of {SELECTION_KINDS}")
        if (self.kind in ("step", "from", "to")) != (self.step is not None):
            raise SelectionError(f"selection '{self.kind}' needs exactly one step name")

    def describe(self) -> str:
        """Short human text: `all steps`, `step load`, `from load`, ..."""
        return {
            "all": "all steps",
            "step": f"step {self.step}",
            "from": f"from {self.step} (and downstream)",
            "to": f"up to {self.step} (and upstream)",
            "outdated": "only outdated steps",
        }[self.kind]

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"kind": self.kind, "step": self.step}


@dataclass(frozen=True)
class Plan:
    """The steps a run will start (in order, and as parallel waves), with reasons."""

    pipeline_id: str
    selection: Selection
    steps: tuple[str, ...]
    waves: tuple[tuple[str, ...], ...]
    reasons: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON form (documented in the README)."""
        return {
            "pipeline": self.pipeline_id,
            "selection": self.selection.to_dict(),
            "steps": [{"name": n, "reason": self.reasons[n]} for n in self.steps],
            "waves": [list(w) for w in self.waves],
            "skipped": [{"name": n, "reason": r} for n, r in self.skipped.items()],
            "warnings": list(self.warnings),
        }


def outdated_reasons(
    pipeline: Pipeline, entries: Mapping[str, Mapping[str, Any]], hashes: Mapping[str, str | None]
) -> dict[str, list[str]]:
    """Step -> why it is outdated (an empty list when it is up to date)."""
    out: dict[str, list[str]] = {}
    for step in pipeline.steps:
        entry = entries.get(step.name) or {}
        reasons: list[str] = []
        success = parse_iso(entry.get("last_success_at"))
        state = state_of(entry) if entry else StepState.NEVER_RUN
        if success is None and state is StepState.SUCCEEDED:
            # A status file from before fingerprints were kept: completed, but with what?
            reasons.append("succeeded, but with no record of which script; run it once more")
        elif success is None:
            reasons.append("never succeeded")
        else:
            if entry.get("success_script_sha256") != hashes.get(step.name):
                reasons.append("script changed since its last success")
            if entry.get("success_config_sha256") != step.config_sha256():
                reasons.append("args/env/timeout changed since its last success")
            if state not in (StepState.SUCCEEDED, StepState.NEVER_RUN) and not state.is_active:
                reasons.append(f"last run {state.value}")
            for dep in step.depends_on:
                dep_success = parse_iso((entries.get(dep) or {}).get("last_success_at"))
                if dep_success and dep_success > success:
                    reasons.append(f"upstream step '{dep}' succeeded after it")
        out[step.name] = reasons
    return out


def _require_step(pipeline: Pipeline, name: str) -> None:
    if name not in pipeline.step_names:
        hint = did_you_mean(name, pipeline.step_names)
        raise SelectionError(
            f"pipeline '{pipeline.id}' has no step '{name}'{hint} "
            f"(steps: {', '.join(pipeline.step_names)})"
        )


def make_plan(
    pipeline: Pipeline,
    selection: Selection,
    entries: Mapping[str, Mapping[str, Any]],
    hashes: Mapping[str, str | None],
) -> Plan:
    """The plan for `selection`; raises SelectionError for a step the pipeline lacks."""
    graph = pipeline.graph()
    if selection.step is not None:
        _require_step(pipeline, selection.step)
    outdated = outdated_reasons(pipeline, entries, hashes)
    chosen: set[str]
    reasons: dict[str, str] = {}
    if selection.kind == "all":
        chosen = set(graph)
        reasons = dict.fromkeys(graph, "whole pipeline")
    elif selection.kind == "step":
        chosen = {selection.step}
        reasons[selection.step] = "selected step"
    elif selection.kind == "from":
        chosen = {selection.step} | dag.downstream(graph, selection.step)
        reasons = {n: f"downstream of {selection.step}" for n in chosen}
        reasons[selection.step] = "selected step"
    elif selection.kind == "to":
        chosen = {selection.step} | dag.upstream(graph, selection.step)
        reasons = {n: f"upstream of {selection.step}" for n in chosen}
        reasons[selection.step] = "selected step"
    else:
        stale = {n for n, r in outdated.items() if r}
        chosen = set(stale)
        for n in stale:
            chosen |= dag.downstream(graph, n)
        for n in chosen:
            reasons[n] = (
                "outdated: " + "; ".join(outdated[n])
                if outdated[n]
                else "depends on an outdated step"
            )
    sub = {n: tuple(d for d in graph[n] if d in chosen) for n in graph if n in chosen}
    waves = tuple(tuple(w) for w in dag.waves(sub))
    order = tuple(n for w in waves for n in w)
    skipped = {
        n: ("up to date" if selection.kind == "outdated" else "not selected")
        for n in graph
        if n not in chosen
    }
    warnings: list[str] = []
    for n in order:
        for dep in graph[n]:
            if dep in chosen:
                continue
            dep_state = state_of(entries[dep]) if dep in entries else StepState.NEVER_RUN
            if dep_state is not StepState.SUCCEEDED:
                warnings.append(
                    f"step '{n}' depends on '{dep}', which is not in this run and is "
                    f"{dep_state.value}; its input may be missing"
                )
    return Plan(
        pipeline_id=pipeline.id,
        selection=selection,
        steps=order,
        waves=waves,
        reasons={n: reasons[n] for n in order},
        skipped=skipped,
        warnings=tuple(warnings),
    )
