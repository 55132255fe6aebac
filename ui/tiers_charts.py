"""The /tiers page's charts (altair, which ships with Streamlit): one colour per tier throughout."""

from __future__ import annotations

import altair as alt
import pandas as pd

from database.rules import TIERS

from .tiers_data import ABI_COLOURS, TIER_COLOURS

BAR_HEIGHT = 34


def _tier_colour(legend: bool = False) -> alt.Color:
    return alt.Color(
        "Tier:N",
        scale=alt.Scale(domain=list(TIERS), range=[TIER_COLOURS[t] for t in TIERS]),
        legend=alt.Legend(title=None, orient="bottom") if legend else None,
    )


def tier_bars(frame: pd.DataFrame, value: str, *, title: str, money: bool = False) -> alt.Chart:
    """Horizontal bars, one per tier in tier order, labelled with their value."""
    fmt = "$,.0f" if money else ",d"
    base = alt.Chart(frame, title=alt.Title(title, anchor="start", fontSize=14)).encode(
        y=alt.Y("Tier:N", sort=list(TIERS), title=None),
        x=alt.X(f"{value}:Q", title=None, axis=alt.Axis(format=fmt, tickCount=4)),
        tooltip=["Tier", alt.Tooltip(f"{value}:Q", format=fmt)],
    )
    bars = base.mark_bar(cornerRadiusEnd=3).encode(color=_tier_colour())
    labels = base.mark_text(align="left", dx=4, color="#31333f").encode(
        text=alt.Text(f"{value}:Q", format=fmt)
    )
    return (bars + labels).properties(height=BAR_HEIGHT * len(TIERS))


def abi_bars(long: pd.DataFrame) -> alt.Chart:
    """Users per tier split into ABI-attributed and not, stacked, with the split in tooltips."""
    return (
        alt.Chart(
            long,
            title=alt.Title("ABI (dark) vs non-ABI (light) users", anchor="start", fontSize=14),
        )
        .mark_bar()
        .encode(
            y=alt.Y("Tier:N", sort=list(TIERS), title=None),
            x=alt.X("Users:Q", title=None, stack="normalize", axis=alt.Axis(format="%")),
            color=alt.Color(
                "Attribution:N",
                scale=alt.Scale(domain=list(ABI_COLOURS), range=list(ABI_COLOURS.values())),
                legend=None,  # a legend would squeeze the bars; the title names the colours
            ),
            order=alt.Order("Attribution:N"),
            tooltip=[
                "Tier",
                "Attribution",
                alt.Tooltip("Users:Q", format=",d"),
                alt.Tooltip("Revenue:Q", format="$,.2f"),
            ],
        )
        .properties(height=BAR_HEIGHT * len(TIERS))
    )
