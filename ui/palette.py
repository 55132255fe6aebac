"""One colour per step state, shared by the DAG, the steps table, the legend and the timeline.

Streamlit's own palette: green succeeded, red failed, blue running, grey queued, and so on.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from orchestrator_core.status import StepState


@dataclass(frozen=True)
class StateStyle:
    """How a state looks: fill colour, text colour on that fill, and its label."""

    fill: str
    text: str
    label: str


STATE_STYLES: dict[StepState, StateStyle] = {
    StepState.NEVER_RUN: StateStyle("#ffffff", "#31333f", "never run"),
    StepState.QUEUED: StateStyle("#a3a8b8", "#0e1117", "queued"),
    StepState.RUNNING: StateStyle("#1c83e1", "#ffffff", "running"),
    StepState.SUCCEEDED: StateStyle("#21c354", "#0e1117", "succeeded"),
    StepState.FAILED: StateStyle("#ff4b4b", "#ffffff", "failed"),
    StepState.TIMED_OUT: StateStyle("#ffa421", "#0e1117", "timed out"),
    StepState.CANCELLED: StateStyle("#555867", "#ffffff", "cancelled"),
    StepState.SKIPPED: StateStyle("#e6eaf1", "#31333f", "skipped"),
    StepState.INTERRUPTED: StateStyle("#803df5", "#ffffff", "interrupted"),
}

# Run states share the step colours of the same name.
RUN_STATE_STYLES: dict[str, StateStyle] = {
    "running": STATE_STYLES[StepState.RUNNING],
    "succeeded": STATE_STYLES[StepState.SUCCEEDED],
    "failed": STATE_STYLES[StepState.FAILED],
    "cancelled": STATE_STYLES[StepState.CANCELLED],
    "interrupted": STATE_STYLES[StepState.INTERRUPTED],
}

BORDER = "#808495"


def style_of(state: str | StepState) -> StateStyle:
    """The style of a step or run state given as enum or string (unknown -> never run)."""
    try:
        return STATE_STYLES[StepState(state)]
    except ValueError:
        return STATE_STYLES[StepState.NEVER_RUN]


def css_for(state: str | StepState) -> str:
    """Inline CSS that colours a table cell like the state."""
    s = style_of(state)
    return f"background-color: {s.fill}; color: {s.text}"


def chip_html(text: str, state: str | StepState) -> str:
    """A small coloured label, as HTML."""
    s = style_of(state)
    return (
        f'<span style="background:{s.fill};color:{s.text};border:1px solid {BORDER};'
        f"border-radius:0.5rem;padding:0.05rem 0.45rem;margin:0 0.25rem 0.25rem 0;"
        f'display:inline-block;font-size:0.8rem">{escape(text)}</span>'
    )


def legend_html() -> str:
    """The legend under the DAG: every state's colour, then the markers."""
    chips = "".join(chip_html(style.label, state) for state, style in STATE_STYLES.items())
    markers = (
        '<span style="font-size:0.8rem;color:#808495">'
        "double border = tested &middot; tested (stale) = script changed since it was tested "
        "&middot; dashed border = outdated</span>"
    )
    return f"<div>{chips}<br>{markers}</div>"
