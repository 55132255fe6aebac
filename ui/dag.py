"""A pipeline's steps as Graphviz DOT: one node per step, filled with its state's colour.

Pure: step views in, DOT source out. Tested steps get a double border, outdated steps a
dashed one, and each node's label repeats the state in words (colour is never the only cue).
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator_core.pipeline_state import StepView
from orchestrator_core.status import StepState

from .palette import BORDER, style_of


def _quote(text: str) -> str:
    """A DOT double-quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def node_label(view: StepView) -> str:
    """The lines a node shows: name, state, and the tested/outdated markers."""
    lines = [view.name, style_of(view.state).label]
    marks = []
    if view.tested:
        marks.append("tested (stale)" if view.tested_stale else "tested")
    if view.outdated and not view.state.is_active:
        marks.append("outdated")
    if marks:
        lines.append(" · ".join(marks))
    return "\n".join(lines)


def node_tooltip(view: StepView) -> str:
    """Hover text: description, and why the step is outdated."""
    parts = [view.description or view.name]
    if view.outdated:
        parts.append("outdated: " + "; ".join(view.outdated))
    if view.skip_reason:
        parts.append("skipped: " + view.skip_reason)
    return "\n".join(parts)


def pipeline_dot(
    views: Sequence[StepView], *, selected: str | None = None, rankdir: str = "LR"
) -> str:
    """DOT source for the DAG of these steps (dependencies point to the steps that need them)."""
    lines = [
        "digraph pipeline {",
        f"  rankdir={rankdir};",
        '  bgcolor="transparent";',
        "  nodesep=0.3; ranksep=0.45;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11, '
        f'margin="0.15,0.06", color="{BORDER}", penwidth=1];',
        f'  edge [color="{BORDER}", arrowsize=0.7];',
    ]
    names = {v.name for v in views}
    for v in views:
        s = style_of(v.state)
        styles = ["rounded", "filled"]
        if v.outdated and not v.state.is_active:
            styles.append("dashed")
        if v.state is StepState.RUNNING:
            styles.append("bold")
        attrs = {
            "label": _quote(node_label(v)),
            "tooltip": _quote(node_tooltip(v)),
            "fillcolor": _quote(s.fill),
            "fontcolor": _quote(s.text),
            "style": _quote(",".join(styles)),
        }
        if v.tested:
            attrs["peripheries"] = "2"
        if v.name == selected:
            attrs["penwidth"] = "2.5"
            attrs["color"] = _quote("#0e1117")
        body = ", ".join(f"{k}={val}" for k, val in attrs.items())
        lines.append(f"  {_quote(v.name)} [{body}];")
    for v in views:
        for dep in v.depends_on:
            if dep in names:
                lines.append(f"  {_quote(dep)} -> {_quote(v.name)};")
    lines.append("}")
    return "\n".join(lines)
