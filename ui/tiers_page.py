"""The economic tiers page (`/tiers`): what the Mixpanel pipeline found, read from its database.

Data as of (window, last successful run), users, revenue and ABI split per tier, invalid users
per reason, products, a user explorer with CSV download, and the rules in force. Without a
database it says so and offers to run the pipeline. Every aggregate is SQL (database.queries),
run on a read-only connection opened per render; the summary is cached until the file changes.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import streamlit as st

from database.errors import MissingDataError, SettingsError
from mixpanel_source.profiles import read_progress
from orchestrator_core import paths
from orchestrator_core.discovery import DiscoveredPipeline, discover_pipelines
from orchestrator_core.engine import Engine
from orchestrator_core.spec import display_path

from . import actions, fmt, links
from .engine import engine_or_stop, get_engine
from .session import Keys
from .snapshot import expected_for, live_progress, live_run, pipeline_snapshot
from .tiers_charts import abi_bars, tier_bars
from .tiers_data import (
    ABI_CHOICES,
    NO_TIER_COLOUR,
    PIPELINE_ID,
    TIER_COLOURS,
    TIER_STEP,
    NotBuiltError,
    PagePaths,
    TierSummary,
    UserFilter,
    abi_long_frame,
    db_signature,
    invalid_frame,
    last_tier_run,
    load_summary,
    page_count,
    page_paths,
    products_frame,
    shown_path,
    tier_frame,
    tier_option_label,
    tier_options,
    user_page,
    users_csv,
    window_days,
)
from .tiers_rules import render_rules
from .tiers_source import render_source

REFRESH_SECONDS = 1.0
PAGE_SIZE = 50
SUMMARY_TTL_SECONDS = 600
HISTORY_SCAN = 50
MONEY = st.column_config.NumberColumn(format="dollar")
PERCENT = st.column_config.NumberColumn(format="percent")
COUNT = st.column_config.NumberColumn(format="localized")
CHART_HEIGHT = 190


@st.cache_data(ttl=SUMMARY_TTL_SECONDS, max_entries=8, show_spinner=False)
def _cached_summary(db_path: str, signature: tuple) -> TierSummary:
    # `signature` (mtime and size of the file and its WAL) is only the cache key: a pipeline
    # run that writes the database makes the next render read it again.
    return load_summary(Path(db_path))


def render() -> None:
    """Draw the whole page."""
    engine = engine_or_stop()
    st.title("Economic tiers")
    workdir = paths.workdir(engine.pipelines_dir)
    found = _mixpanel_pipeline(engine)
    try:
        where = page_paths(workdir, _script_dir(found))
    except SettingsError as exc:
        st.error(f"The Mixpanel settings cannot be used: {fmt.plain(exc)}")
        st.stop()
        raise AssertionError("st.stop() does not return") from None
    db = where.db
    st.caption(
        f"Results of the `{PIPELINE_ID}` pipeline, read from {fmt.code(shown_path(db, workdir))} "
        "(set MIXPANEL_DB_PATH to read another database)."
    )
    actions.show_flash()
    summary = _summary_or_guard(engine, found, db)
    render_source(where, summary)
    _render_as_of(engine, found, summary, where)
    _render_tiers(summary)
    _render_invalid_and_products(summary)
    _render_explorer(db, summary)
    render_rules(workdir, where, summary)


def _mixpanel_pipeline(engine: Engine) -> DiscoveredPipeline | None:
    return next((d for d in discover_pipelines(engine.pipelines_dir) if d.id == PIPELINE_ID), None)


def _script_dir(found: DiscoveredPipeline | None) -> Path | None:
    """The folder of the pipeline's tier step, where tiers.yaml and event_names.yaml live."""
    if found is not None and found.valid and TIER_STEP in found.pipeline.step_names:
        return found.pipeline.script_path(found.pipeline.step(TIER_STEP)).parent
    return None


def _summary_or_guard(engine: Engine, found: DiscoveredPipeline | None, db: Path) -> TierSummary:
    """The summary, or (with no usable database) a message, the run button, and a stop."""
    shown = shown_path(db, paths.workdir(engine.pipelines_dir))
    try:
        return _cached_summary(str(db), db_signature(db))
    except MissingDataError:
        st.info(
            f"No tier data yet: the database {fmt.code(shown)} does not exist. Run the Mixpanel pipeline "
            "to build it; without Mixpanel credentials it runs on demo data."
        )
    except NotBuiltError:
        st.info(
            f"No tier data yet: {fmt.code(shown)} holds no ingested data. Run the Mixpanel pipeline "
            "to fill it."
        )
    except sqlite3.DatabaseError as exc:
        st.error(
            f"{fmt.code(shown)} cannot be read as the Mixpanel database ({fmt.plain(exc)}). Move the file aside "
            "and run the pipeline to build a new one, or point MIXPANEL_DB_PATH at the right file."
        )
    _render_run_controls(engine, found)
    st.stop()
    raise AssertionError("st.stop() does not return")


# --- running the pipeline -------------------------------------------------------------------


def _render_run_controls(
    engine: Engine, found: DiscoveredPipeline | None, *, again: bool = False
) -> None:
    """The button that runs the pipeline, a link to watch it, and its progress while it runs."""
    running = live_run(engine, PIPELINE_ID) is not None
    problem = _cannot_run(found)
    cols = st.columns([1.3, 1.6, 2.7], vertical_alignment="center")
    cols[0].button(
        "Run the pipeline again" if again else "Run the Mixpanel pipeline",
        key=Keys.TIERS_RUN,
        type="secondary" if again else "primary",
        icon=":material/play_arrow:",
        disabled=running or problem is not None,
        help=(
            fmt.plain(problem)
            if problem
            else ("A run of it is in progress." if running else "Run all six steps, in order.")
        ),
        on_click=actions.start_run,
        args=(PIPELINE_ID, "all"),
        width="stretch",
    )
    links.pipeline_link(
        cols[1], PIPELINE_ID, "Watch it on the Pipelines page", icon=":material/account_tree:"
    )
    if problem:
        cols[2].caption(fmt.plain(problem))
    if found is not None and found.valid:
        progress = st.fragment(run_every=REFRESH_SECONDS if running else None)(_run_progress)
        progress(found, running)


def _cannot_run(found: DiscoveredPipeline | None) -> str | None:
    if found is None:
        return (
            f"There is no pipeline '{PIPELINE_ID}' in {display_path(get_engine().pipelines_dir)}."
        )
    if not found.valid:
        return f"Pipeline '{PIPELINE_ID}' is invalid: {found.problems[0]}"
    return None


def _run_progress(found: DiscoveredPipeline, was_running: bool) -> None:
    """Refreshes itself about once a second while a run of the pipeline is in progress."""
    engine = get_engine()
    snap = pipeline_snapshot(engine, found)
    if (snap.live is not None) != was_running:
        if was_running:
            _flash_outcome(engine)
        st.rerun()  # started or ended: redraw the page (new data) and start or stop polling
    if snap.live is None:
        return
    progress = live_progress(snap, expected_for(engine, PIPELINE_ID, snap.live.run_id))
    if progress is not None:
        st.progress(progress.fraction, text=f"Run {snap.live.run_id}: {progress.summary()}")


def _flash_outcome(engine: Engine) -> None:
    last = engine.history.list(PIPELINE_ID, limit=1)
    if not last:
        return
    record = last[0]
    state = record.get("state")
    kind = {"succeeded": "success", "cancelled": "warning"}.get(state, "error")
    actions.flash(
        kind,
        f"Run {record['run_id']} of {PIPELINE_ID} {state} in "
        f"{fmt.duration(record.get('duration_s'))}.",
    )


# --- data as of -----------------------------------------------------------------------------


def _render_as_of(
    engine: Engine, found: DiscoveredPipeline | None, summary: TierSummary, where: PagePaths
) -> None:
    as_of, counts = summary.as_of, summary.counts
    st.subheader("Data as of")
    run = last_tier_run(engine.history.list(PIPELINE_ID, limit=HISTORY_SCAN))
    finished = (run or {}).get("finished_at") or _status_success(engine, found)
    tiers_at = as_of["steps"].get(TIER_STEP, {}).get("completed_at")
    cols = st.columns(4)
    cols[0].metric(
        "Window (UTC)",
        f"{window_days(as_of)} days",
        help="Events whose UTC date lies in the window count; later ones only flag a user.",
    )
    cols[1].metric(
        "Users",
        f"{counts['users']:,}",
        help=f"{counts['valid']:,} valid (given a tier), {counts['invalid']:,} invalid.",
    )
    cols[2].metric("Events", f"{as_of['events']:,}", help="Events stored for the window.")
    cols[3].metric(
        "Last successful run",
        fmt.age(finished) or "none recorded",
        help=fmt.timestamp(finished) or "No run of the pipeline has assigned tiers yet.",
    )
    facts = [
        f"Window {as_of['window_start']} to {as_of['window_end']} (UTC)",
        f"{counts['valid']:,} valid and {counts['invalid']:,} invalid users",
        f"ingested {fmt.when(as_of['ingested_at'])}",
        f"newest event {fmt.timestamp(as_of['newest_event_at']) or 'none'}",
        f"tiers assigned {fmt.when(tiers_at) or 'never'}",
    ]
    merged = summary.identity
    if not where.settings.identity_merge:
        facts.append(r"identity merge off (MIXPANEL\_IDENTITY\_MERGE=0)")
    elif merged.get("ids_merged"):
        facts.append(
            f"{merged['ids_merged']:,} ids merged into {merged['users_merged_into']:,} users "
            "(identity merge)"
        )
    synced = read_progress(where.cache)
    if synced["synced"] and synced["changed_since"]:
        facts.append(f"profiles synced {fmt.when(synced['changed_since'])}")
    st.caption(" · ".join(facts))
    if run is not None:
        c1, c2 = st.columns([2, 5], vertical_alignment="center")
        c1.caption(f"Last successful run, started by {run.get('trigger')}:")
        links.run_link(c2, run["run_id"], f"Run {run['run_id']}", icon=":material/history:")
    stale = summary.stale_steps
    if stale:
        st.warning(
            "The tiers do not reflect the data ingested "
            f"{fmt.timestamp(as_of['ingested_at'])}: step(s) {', '.join(stale)} have not run "
            "on it yet. Run the pipeline to bring them up to date."
        )
    _render_run_controls(engine, found, again=True)


def _status_success(engine: Engine, found: DiscoveredPipeline | None) -> str | None:
    """When the tier step last succeeded, from the status file (the history may be pruned)."""
    if found is None or not found.valid:
        return None
    entry = engine.status.load(PIPELINE_ID).entries.get(TIER_STEP) or {}
    return entry.get("last_success_at")


# --- tiers ----------------------------------------------------------------------------------


def _tier_cell(value: Any) -> str:
    colour = TIER_COLOURS.get(str(value))
    if colour is None:
        return f"color: {NO_TIER_COLOUR}" if value in (None, "") else ""
    return f"background-color: {colour}; color: #0e1117"


def _render_tiers(summary: TierSummary) -> None:
    st.subheader("Tiers")
    frame = tier_frame(summary)
    if frame["Users"].sum() == 0:
        st.info("No valid user has a tier yet: run the pipeline's last step, assign_economic_tier.")
    c1, c2, c3 = st.columns(3)
    height = CHART_HEIGHT
    c1.altair_chart(
        tier_bars(frame, "Users", title="Users per tier"), width="stretch", height=height
    )
    c2.altair_chart(
        tier_bars(frame, "Revenue", title="Revenue per tier (USD)", money=True),
        width="stretch",
        height=height,
    )
    c3.altair_chart(abi_bars(abi_long_frame(summary)), width="stretch", height=height)
    st.dataframe(
        frame.style.map(_tier_cell, subset=["Tier"]),
        hide_index=True,
        width="stretch",
        column_config={
            "Users": COUNT,
            "Share": st.column_config.NumberColumn(format="percent", help="Of valid users"),
            "Revenue": MONEY,
            "Per user": st.column_config.NumberColumn(format="dollar", help="Revenue per user"),
            "Revenue share": PERCENT,
            "ABI users": COUNT,
            "Non-ABI users": COUNT,
            "ABI revenue": MONEY,
            "Non-ABI revenue": MONEY,
        },
    )
    st.caption(
        "Valid users only; invalid users get no tier. Revenue in USD over the window, refunds "
        "subtracted. ABI: the profile carries an ABI campaign, ad set or ad id."
    )


def _render_invalid_and_products(summary: TierSummary) -> None:
    left, right = st.columns(2)
    with left:
        st.subheader("Invalid users")
        st.dataframe(
            invalid_frame(summary),
            hide_index=True,
            width="stretch",
            column_config={"Users": COUNT},
        )
        st.caption(
            f"{summary.counts['invalid']:,} invalid users; one with two reasons counts under both."
        )
    with right:
        st.subheader("Products")
        products = products_frame(summary)
        if products.empty:
            st.caption("No valid user bought or started a product in the window.")
        else:
            st.dataframe(
                products,
                hide_index=True,
                width="stretch",
                column_config={
                    "Users": COUNT,
                    "Valid lifecycle": COUNT,
                    "Valid share": st.column_config.ProgressColumn(
                        format="percent", min_value=0.0, max_value=1.0, width="small"
                    ),
                    "Revenue": MONEY,
                },
            )
            st.caption(
                "Valid users per product. A valid lifecycle starts with a trial or a purchase, "
                "and every trial outcome follows a trial start."
            )


# --- user explorer --------------------------------------------------------------------------


def _first_page() -> None:
    st.session_state[Keys.TIERS_PAGE] = 1


def _render_explorer(db: Path, summary: TierSummary) -> None:
    st.subheader("User explorer")
    countries = ["", *summary.countries]
    if st.session_state.get(Keys.TIERS_COUNTRY) not in countries:
        st.session_state.pop(Keys.TIERS_COUNTRY, None)
    c1, c2, c3, c4 = st.columns([1, 1, 1.4, 1.6], vertical_alignment="bottom")
    tier = c1.selectbox(
        "Tier",
        tier_options(),
        key=Keys.TIERS_TIER,
        format_func=tier_option_label,
        on_change=_first_page,
    )
    country = c2.selectbox(
        "Country",
        countries,
        key=Keys.TIERS_COUNTRY,
        format_func=lambda c: c or "Any country",
        on_change=_first_page,
    )
    abi = c3.radio(
        "ABI attribution",
        list(ABI_CHOICES),
        key=Keys.TIERS_ABI,
        format_func=ABI_CHOICES.__getitem__,
        horizontal=True,
        on_change=_first_page,
    )
    search = c4.text_input(
        "Search by user id",
        key=Keys.TIERS_SEARCH,
        placeholder="part of a distinct_id",
        on_change=_first_page,
    )
    flt = UserFilter(tier=tier or "", country=country or "", abi=abi or "", search=search or "")
    page = max(1, int(st.session_state.get(Keys.TIERS_PAGE) or 1))
    frame, total = user_page(db, flt, page, PAGE_SIZE)
    pages = page_count(total, PAGE_SIZE)
    if page > pages:  # the filter shrank the result under the page that was open
        page = pages
        frame, total = user_page(db, flt, page, PAGE_SIZE)
    st.session_state[Keys.TIERS_PAGE] = page
    st.dataframe(
        frame.style.map(_tier_cell, subset=["Tier"]),
        hide_index=True,
        width="stretch",
        column_config={"Revenue": MONEY, "Events": COUNT},
    )
    n1, n2, n3 = st.columns([1, 3, 1.4], vertical_alignment="center")
    n1.number_input("Page", min_value=1, max_value=pages, step=1, key=Keys.TIERS_PAGE)
    first = (page - 1) * PAGE_SIZE + 1 if total else 0
    n2.caption(
        f"{total:,} users match ({fmt.plain(flt.describe())}); showing {first:,} to "
        f"{min(page * PAGE_SIZE, total):,}, page {page} of {pages}, highest revenue first."
    )
    n3.download_button(
        "Download CSV",
        data=lambda: users_csv(db, flt),
        file_name=flt.file_name(),
        mime="text/csv",
        key=Keys.TIERS_CSV,
        icon=":material/download:",
        disabled=total == 0,
        help=f"Every matching user ({total:,}; at most 100,000), in this order.",
        on_click="ignore",
        width="stretch",
    )
