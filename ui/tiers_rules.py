"""The /tiers page's rules section: the tier thresholds in force, and which lifecycle kind
each product event name was read as (names of no known kind first)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from database.errors import ConfigError
from database.event_kinds import load_event_names
from database.reports import read_report
from database.tiers_config import load_tiers

from . import fmt
from .tiers_data import (
    NO_TIER_COLOUR,
    TIER_STEP,
    UNKNOWN_KIND,
    PagePaths,
    TierSummary,
    product_events_frame,
    rules_rows,
    shown_path,
    threshold_changes,
)

COUNT = st.column_config.NumberColumn(format="localized")


def render_rules(workdir: Path, where: PagePaths, summary: TierSummary) -> None:
    path = where.tiers
    st.subheader("Rules in force")
    try:
        thresholds = load_tiers(path)
    except ConfigError as exc:
        st.error(f"The tier rules cannot be read: {fmt.plain(exc)}")
        return
    st.caption(
        f"From {fmt.code(shown_path(path, workdir))}. For each valid user the first rule that "
        "matches wins."
    )
    st.dataframe(rules_rows(thresholds), hide_index=True, width="stretch")
    report = read_report(where.reports, TIER_STEP) or {}
    changes = threshold_changes(thresholds, (report.get("figures") or {}).get("thresholds"))
    if changes:
        st.warning(
            f"{fmt.plain(path.name)} changed since the tiers were assigned "
            f"({fmt.plain('; '.join(changes))}). Run step {TIER_STEP} again to apply the new rules."
        )
    st.caption(
        "Invalid users (no tier): blank or placeholder id, no events in the window, an event "
        "after the window, or more than 5,000 events on one day."
    )
    _render_event_names(workdir, where, summary)


def _unknown_cell(value: Any) -> str:
    return f"color: {NO_TIER_COLOUR}; font-weight: 600" if value == UNKNOWN_KIND else ""


def _render_event_names(workdir: Path, where: PagePaths, summary: TierSummary) -> None:
    """Which lifecycle kind each product event name was read as, and the mapping in force."""
    st.markdown("**Event names**")
    shown = fmt.plain(shown_path(where.event_names, workdir))
    try:
        names = load_event_names(
            where.event_names, required=where.settings.event_names_path is not None
        )
    except ConfigError as exc:
        st.error(f"The event names cannot be read: {fmt.plain(exc)}")
        return
    unknown = [r for r in summary.product_events if r["kind"] is None]
    if unknown:
        events = sum(r["events"] for r in unknown)
        st.warning(
            f"{events:,} product events under {len(unknown):,} name(s) match no lifecycle kind "
            "(listed first below), so no lifecycle that holds them can be valid. If they are "
            f"RevenueCat events under names of your own, map them in {shown}."
        )
    frame = product_events_frame(summary)
    if frame.empty:
        st.caption("No product events in the window (or step count_user_events has not run).")
    else:
        st.dataframe(
            frame.style.map(_unknown_cell, subset=["Kind"]),
            hide_index=True,
            width="stretch",
            column_config={"Events": COUNT, "Users": COUNT},
        )
    st.caption(
        "RevenueCat's default names (rc_..._event) and its display names (RC ...) are known "
        f"without help; a project maps its own in {shown} ({len(names.own):,} there now)."
    )
    with st.expander("Every name the lifecycle rules know"):
        st.dataframe(names.rows(), hide_index=True, width="stretch")
