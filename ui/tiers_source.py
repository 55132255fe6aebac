"""The /tiers page's word on where its data came from: demo data said in a banner, the
project named, a refusal the next run would meet, and a profile sync in progress."""

from __future__ import annotations

import streamlit as st

from database.sources import describe_source, source_switch
from mixpanel_source.profiles import progress_text, read_progress

from . import fmt
from .tiers_data import PagePaths, TierSummary


def render_source(where: PagePaths, summary: TierSummary) -> None:
    """Say, always and visibly, when the page shows demo data; else name the project."""
    source = summary.source
    if source is not None and source.get("source") == "demo":
        st.warning(
            "**Demo data.** These figures come from the pipeline's built-in demo source, not "
            "from a Mixpanel project. To load your project, set MIXPANEL\\_PROJECT\\_ID and a "
            "credential (see the pipeline's README) and run the pipeline: the demo data is "
            "replaced.",
            icon=":material/science:",
        )
    elif source is None:
        st.caption(
            "Where this data came from is not recorded (it was ingested by an older version); "
            r"the next run of step ingest\_data records it."
        )
    else:
        st.caption(f"Data of {fmt.plain(describe_source(source))}.")
    if source is not None and source_switch(source, where.settings.cache_source()):
        st.warning(
            f"The settings now name {fmt.plain(describe_source(where.settings.cache_source()))}, "
            f"but the database holds {fmt.plain(describe_source(source))}: the next run stops "
            r"without changing it, unless MIXPANEL\_ALLOW\_SOURCE\_CHANGE=1 is set."
        )
    progress = read_progress(where.cache)
    if progress["shortfall"] and not progress["full_in_progress"]:
        sent, announced = progress["shortfall"]
        st.info(
            f"Profiles: in the last full sync Engage sent {sent:,} of the {announced:,} profiles "
            "it announced, twice in a row; the figures use the profiles it sent."
        )
    if progress["full_in_progress"]:
        got = fmt.plain(progress_text(progress["fetched"] or 0, progress["total"]))
        if progress["synced"]:
            st.info(
                f"Profiles: a full refresh has got {got}. Until it ends, the figures use the "
                r"profiles of the last sync; the next run of step download\_update\_data goes on."
            )
        else:
            st.info(
                f"Profiles: the first full sync has got {got}. It goes on with the next run of "
                r"step download\_update\_data; the tiers are assigned once it has ended."
            )
