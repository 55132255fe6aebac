"""The /tiers page through the whole app (AppTest), on real SQLite files the real steps wrote."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest
from ui_helpers import ROOT, Keys, chain, click, engine, page, texts, write_pipeline

from database import queries
from database.rules import TIERS, TierThresholds
from ui import tiers_data
from ui.tiers_data import UserFilter

PIPELINE = "mixpanel_pipeline"
STEPS_DIR = ROOT / "pipelines" / PIPELINE
SMALL = {
    "MIXPANEL_SOURCE": "demo",
    "MIXPANEL_DEMO_USERS": "100",
    "MIXPANEL_WINDOW_DAYS": "7",
    "MIXPANEL_END_DATE": "2024-06-30",
}
RUN_TIMEOUT = 120


def _clean_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    """No MIXPANEL_* from outside; small demo settings plus `values`."""
    for name in [n for n in os.environ if n.startswith("MIXPANEL_")]:
        monkeypatch.delenv(name)
    for name, value in {**SMALL, **values}.items():
        monkeypatch.setenv(name, value)


def _run_steps(workdir: Path, env: dict[str, str]) -> None:
    """The six step scripts as the orchestrator runs them: subprocesses, cwd = workdir."""
    for script in sorted(STEPS_DIR.glob("0*.py")):
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
        assert done.returncode == 0, f"{script.name} failed: {done.stderr}"


@pytest.fixture(scope="module")
def built_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real database: the six steps run once on demo data (100 users, 7 days)."""
    workdir = tmp_path_factory.mktemp("tiers_db")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIXPANEL_")}
    env.update(SMALL, MIXPANEL_DB_PATH=str(workdir / "mixpanel.db"))
    env["MIXPANEL_CACHE_DIR"] = str(workdir / "cache")
    _run_steps(workdir, env)
    return workdir / "mixpanel.db"


@pytest.fixture
def tiers_env(pdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The dashboard's pipelines folder, MIXPANEL_* cleared, and no cached summaries."""
    _clean_env(monkeypatch)
    st.cache_data.clear()
    yield pdir
    st.cache_data.clear()


@pytest.fixture
def with_pipeline(tiers_env: Path) -> Path:
    """A copy of the real mixpanel_pipeline in the dashboard's pipelines folder."""
    shutil.copy(ROOT / "pipelines" / f"{PIPELINE}.yaml", tiers_env / f"{PIPELINE}.yaml")
    shutil.copytree(STEPS_DIR, tiers_env / PIPELINE, ignore=shutil.ignore_patterns("__pycache__"))
    return tiers_env


@pytest.fixture
def on_built(tiers_env: Path, built_db: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The page pointed at the built database."""
    monkeypatch.setenv("MIXPANEL_DB_PATH", str(built_db))
    return built_db


def sql(db: Path, query: str, params: tuple = ()) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(query, params).fetchall()


def frame_with(at: AppTest, column: str) -> pd.DataFrame:
    """The first table on the page that has this column."""
    for el in at.dataframe:
        if column in el.value.columns:
            return el.value
    raise AssertionError(f"no table with column {column!r}")


def rules_text(at: AppTest) -> str:
    """The rules table, as text."""
    for el in at.dataframe:
        if el.value.columns[-1].startswith("A valid user whose"):
            return el.value.to_string()
    raise AssertionError("no rules table")


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def shown_path_of(path: Path, workdir: Path) -> str:
    return tiers_data.shown_path(path, workdir)


def shown(markdown: str) -> str:
    """Markdown source as it reads on the page (backslash escapes removed)."""
    return re.sub(r"\\(.)", r"\1", markdown)


def alerts(at: AppTest, kind: str) -> str:
    return "\n".join(shown(str(el.value)) for el in getattr(at, kind))


def no_traceback(at: AppTest) -> None:
    assert not at.exception, at.exception[0].message if at.exception else ""


# --- without a database ---------------------------------------------------------------------


def test_no_database_says_so_and_offers_to_run_the_pipeline(with_pipeline: Path) -> None:
    at = page("tiers")
    no_traceback(at)
    assert "No tier data yet: the database `database/mixpanel_data.db` does not exist" in texts(at)
    button = at.button(key=Keys.TIERS_RUN)
    assert button.label == "Run the Mixpanel pipeline" and not button.disabled
    link = at.get("page_link")[0]
    assert link.proto.label == "Watch it on the Pipelines page"
    assert "pipeline=mixpanel_pipeline" in link.proto.query_string
    assert not at.subheader, "nothing but the message and the button"


def test_without_the_pipeline_the_button_says_why_it_cannot_run(tiers_env: Path) -> None:
    at = page("tiers")
    no_traceback(at)
    assert at.button(key=Keys.TIERS_RUN).disabled
    assert "There is no pipeline 'mixpanel_pipeline'" in shown(texts(at))


def test_a_pipeline_problem_shows_as_text(tiers_env: Path) -> None:
    """An invalid mixpanel_pipeline.yaml whose problem quotes a step name full of Markdown:
    the reason the button cannot run shows as the text it is."""
    (tiers_env / "mixpanel_pipeline.yaml").write_text(
        'name: M\ndescription: d\nsteps:\n  - name: "**BOLD** [x](https://evil.example)"\n'
        '    script: "nope.py"\n    description: d\n'
    )
    at = page("tiers")
    no_traceback(at)
    assert at.button(key=Keys.TIERS_RUN).disabled
    caption = next(c.value for c in at.caption if "is invalid" in shown(c.value))
    assert "](https://evil.example)" not in caption and "**BOLD**" not in caption
    assert "**BOLD** [x](https://evil.example)" in shown(caption)


def test_the_button_runs_the_pipeline_and_then_the_page_shows_tiers(
    with_pipeline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = with_pipeline.parent
    # Relative paths mean what they mean to the steps: relative to the pipelines' parent.
    monkeypatch.setenv("MIXPANEL_DB_PATH", "data/mixpanel.db")
    monkeypatch.setenv("MIXPANEL_CACHE_DIR", "data/cache")
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    at = click(page("tiers"), Keys.TIERS_RUN)
    no_traceback(at)
    assert "Started run" in at.success[0].value
    record = engine().history.list(PIPELINE, limit=1)[0]
    assert record["trigger"] == "dashboard"
    assert record["selection"]["kind"] == "all"
    final = engine().wait(record["run_id"], RUN_TIMEOUT)
    assert final is not None, "the run did not finish in time"
    assert final["state"] == "succeeded", final
    db = workdir / "data" / "mixpanel.db"
    assert db.is_file()

    at.run()
    no_traceback(at)
    assert "Data as of" in [h.value for h in at.subheader]
    users = sql(db, "SELECT COUNT(*) FROM fact_mixpanel_user")[0][0]
    assert metric(at, "Users") == f"{users:,}"
    assert metric(at, "Window (UTC)") == "7 days"
    assert "Window 2024-06-24 to 2024-06-30 (UTC)" in texts(at)
    assert "read from `data/mixpanel.db`" in texts(at)
    assert metric(at, "Last successful run") == "just now"
    assert any(record["run_id"] in link.proto.label for link in at.get("page_link"))
    assert at.button(key=Keys.TIERS_RUN).label == "Run the pipeline again"

    # The rules file changes after the tiers were assigned: the page says they are out of date.
    tiers_yaml = with_pipeline / PIPELINE / "tiers.yaml"
    tiers_yaml.write_text(
        tiers_yaml.read_text().replace("min_revenue_usd: 100", "min_revenue_usd: 150")
    )
    at.run()
    assert "R ≥ $150, or R ≥ $50 and P ≥ 2" in rules_text(at)
    assert "tiers.yaml changed since the tiers were assigned" in shown(texts(at))
    assert "premium_min_revenue_usd: 100.0 then, 150.0 now" in shown(texts(at))


def test_a_run_in_progress_shows_progress_and_disables_the_button(
    tiers_env: Path, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    write_pipeline(
        tiers_env,
        PIPELINE,
        chain(
            "download_update_data",
            code={
                "download_update_data": (
                    "from pathlib import Path\n"
                    f"deadline = time.monotonic() + {RUN_TIMEOUT}\n"
                    f"while not Path({str(gate)!r}).exists() and time.monotonic() < deadline:\n"
                    "    time.sleep(0.05)\n"
                )
            },
        ),
    )
    at = click(page("tiers"), Keys.TIERS_RUN)
    no_traceback(at)
    run_id = engine().active_runs()[0].run_id
    progress = at.get("progress")
    assert progress and progress[0].text.startswith(f"Run {run_id}: 0 of 1 steps done")
    assert at.button(key=Keys.TIERS_RUN).disabled
    gate.touch()
    assert engine().wait(run_id, RUN_TIMEOUT) is not None
    at.run()
    assert not at.get("progress")
    assert not at.button(key=Keys.TIERS_RUN).disabled


# --- on a real database ---------------------------------------------------------------------


def test_tiers_revenue_and_abi_split_match_the_database(on_built: Path) -> None:
    at = page("tiers")
    no_traceback(at)
    table = frame_with(at, "Per user").set_index("Tier")
    assert list(table.index) == list(TIERS)
    counts = dict(
        sql(
            on_built,
            "SELECT economic_tier, COUNT(*) FROM fact_mixpanel_user "
            "WHERE economic_tier IS NOT NULL GROUP BY 1",
        )
    )
    assert sum(counts.values()) > 0
    for tier in TIERS:
        assert table.loc[tier, "Users"] == counts.get(tier, 0)
    revenue = dict(
        sql(
            on_built,
            "SELECT economic_tier, ROUND(SUM(revenue_usd), 2) FROM fact_mixpanel_user "
            "WHERE economic_tier IS NOT NULL GROUP BY 1",
        )
    )
    for tier in TIERS:
        assert table.loc[tier, "Revenue"] == pytest.approx(revenue.get(tier, 0.0))
    abi = dict(
        sql(
            on_built,
            "SELECT economic_tier, SUM(has_abi_attribution) FROM fact_mixpanel_user "
            "WHERE economic_tier IS NOT NULL GROUP BY 1",
        )
    )
    for tier in TIERS:
        assert table.loc[tier, "ABI users"] == abi.get(tier, 0)
        assert table.loc[tier, "ABI users"] + table.loc[tier, "Non-ABI users"] == counts.get(
            tier, 0
        )
    assert len(at.get("vega_lite_chart")) == 3, "users, revenue and ABI charts"


def test_invalid_reasons_products_and_rules_are_shown(on_built: Path) -> None:
    at = page("tiers")
    reasons = frame_with(at, "Reason").set_index("Reason")["Users"].to_dict()
    for reason, users in reasons.items():
        expected = sql(
            on_built,
            "SELECT COUNT(*) FROM fact_mixpanel_user WHERE ',' || invalid_reason || ',' LIKE ?",
            (f"%,{reason},%",),
        )[0][0]
        assert users == expected, reason
    assert reasons["blank_id"] > 0 and reasons["bot_activity"] == 1
    products = frame_with(at, "Valid share").set_index("Product")
    for product, users, valid in sql(
        on_built,
        "SELECT product_id, COUNT(*), SUM(valid_lifecycle) FROM fact_user_products GROUP BY 1",
    ):
        assert products.loc[product, "Users"] == users
        assert products.loc[product, "Valid share"] == pytest.approx(valid / users)
    text = rules_text(at)
    assert "R ≥ $100, or R ≥ $50 and P ≥ 2" in text
    assert "R ≥ $20, or R > $0 and D ≥ 30" in text
    assert "R > $0, or D ≥ 10" in text


def test_stale_tiers_are_flagged(tiers_env: Path, built_db: Path, monkeypatch) -> None:
    db = tiers_env.parent / "stale.db"
    shutil.copy(built_db, db)
    with sqlite3.connect(db) as conn:  # a newer ingest that the later steps have not seen
        conn.execute("UPDATE mixpanel_meta SET value = '99' WHERE key = 'data_version'")
    monkeypatch.setenv("MIXPANEL_DB_PATH", str(db))
    at = page("tiers")
    no_traceback(at)
    warning = " ".join(w.value for w in at.warning)
    assert "The tiers do not reflect the data ingested" in warning
    assert "assign_economic_tier" in warning and "ingest_data" in warning


def test_a_corrupt_database_file_gives_a_clear_message(
    with_pipeline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = with_pipeline.parent / "broken.db"
    db.write_bytes(b"this is not a database, just some text\n" * 200)
    monkeypatch.setenv("MIXPANEL_DB_PATH", str(db))
    at = page("tiers")
    no_traceback(at)
    assert "cannot be read as the Mixpanel database (file is not a database)" in shown(
        at.error[0].value
    )
    assert not at.button(key=Keys.TIERS_RUN).disabled


def test_an_empty_database_file_is_not_built_yet(
    tiers_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tiers_env.parent / "empty.db"
    db.touch()
    monkeypatch.setenv("MIXPANEL_DB_PATH", str(db))
    at = page("tiers")
    no_traceback(at)
    assert "holds no ingested data" in at.info[0].value


# --- the user explorer ----------------------------------------------------------------------


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> dict[str, Callable[[], bytes]]:
    """File name -> the callable a download button registered (what a click would send)."""
    seen: dict[str, Callable[[], bytes]] = {}
    original = MediaFileManager.add_deferred

    def recording(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        seen[file_name] = data_callable
        return original(self, data_callable, mimetype, coordinates, file_name=file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", recording)
    return seen


def caption_with(at: AppTest, text: str) -> str:
    """The caption holding `text`, as it reads on the page."""
    return next(shown(c.value) for c in at.caption if text in shown(c.value))


def test_explorer_filters_by_tier_country_abi_and_search(on_built: Path) -> None:
    at = page("tiers")
    total = sql(on_built, "SELECT COUNT(*) FROM fact_mixpanel_user")[0][0]
    assert caption_with(at, "users match").startswith(f"{total:,} users match (all users)")
    assert len(frame_with(at, "Invalid because")) == 50

    at.selectbox(key=Keys.TIERS_TIER).select("basic").run()
    shown = frame_with(at, "Invalid because")
    basic = sql(on_built, "SELECT COUNT(*) FROM fact_mixpanel_user WHERE economic_tier = 'basic'")
    assert caption_with(at, "users match").startswith(f"{basic[0][0]:,} users match (tier basic)")
    assert set(shown["Tier"]) == {"basic"}

    country, n = sql(
        on_built,
        "SELECT country, COUNT(*) FROM fact_mixpanel_user WHERE economic_tier = 'basic' "
        "AND country IS NOT NULL GROUP BY 1 ORDER BY 2 DESC LIMIT 1",
    )[0]
    at.selectbox(key=Keys.TIERS_COUNTRY).select(country).run()
    assert caption_with(at, "users match").startswith(f"{n:,} users match")
    assert set(frame_with(at, "Invalid because")["Country"]) == {country}

    at.radio(key=Keys.TIERS_ABI).set_value("yes").run()
    abi = sql(
        on_built,
        "SELECT COUNT(*) FROM fact_mixpanel_user WHERE economic_tier = 'basic' AND country = ? "
        "AND has_abi_attribution",
        (country,),
    )[0][0]
    assert caption_with(at, "users match").startswith(f"{abi:,} users match")

    at.selectbox(key=Keys.TIERS_TIER).select("none")
    at.selectbox(key=Keys.TIERS_COUNTRY).select("")
    at.radio(key=Keys.TIERS_ABI).set_value("")
    at.text_input(key=Keys.TIERS_SEARCH).input("bot-").run()
    no_traceback(at)
    shown = frame_with(at, "Invalid because")
    assert list(shown["User"]) == ["bot-000001"]
    assert list(shown["Invalid because"]) == ["bot_activity"]
    assert caption_with(at, "users match").startswith(
        '1 users match (no tier (invalid), id contains "bot-")'
    )


def test_explorer_pages_through_all_users(on_built: Path) -> None:
    at = page("tiers")
    total = sql(on_built, "SELECT COUNT(*) FROM fact_mixpanel_user")[0][0]
    pages = -(-total // 50)
    assert pages >= 2
    first = list(frame_with(at, "Invalid because")["User"])
    at.number_input(key=Keys.TIERS_PAGE).set_value(pages).run()
    last = list(frame_with(at, "Invalid because")["User"])
    assert len(last) == total - (pages - 1) * 50
    assert not set(first) & set(last)
    assert f"page {pages} of {pages}" in caption_with(at, "users match")
    # A narrower filter starts again on page 1.
    at.selectbox(key=Keys.TIERS_TIER).select("standard").run()
    assert at.number_input(key=Keys.TIERS_PAGE).value == 1
    assert "page 1 of" in caption_with(at, "users match")


def test_csv_download_holds_every_row_of_the_filter(on_built: Path, downloads) -> None:
    at = page("tiers")
    at.selectbox(key=Keys.TIERS_TIER).select("free").run()
    no_traceback(at)
    assert at.get("download_button")[0].proto.deferred_file_id
    data = downloads["tier-users-free.csv"]()
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
    expected = [
        r[0]
        for r in sql(
            on_built,
            "SELECT distinct_id FROM fact_mixpanel_user WHERE economic_tier = 'free' "
            "ORDER BY COALESCE(revenue_usd, 0) DESC, distinct_id",
        )
    ]
    assert len(expected) > 50, "more than one page: the file holds all, not the page"
    assert [r["distinct_id"] for r in rows] == expected
    assert list(rows[0]) == list(queries.USER_COLUMNS)
    assert {r["economic_tier"] for r in rows} == {"free"}


def test_export_query_and_page_query_agree(built_db: Path) -> None:
    from database.connection import connect_readonly

    conn = connect_readonly(built_db)
    try:
        for args in ({}, {"tier": "none"}, {"abi": True, "search": "u0"}, {"country": "US"}):
            exported = queries.users_for_export(conn, **args)
            paged: list[dict] = []
            offset = 0
            while True:
                rows, total = queries.user_page(conn, **args, limit=7, offset=offset)
                paged += rows
                offset += 7
                if offset >= total:
                    break
            assert exported == paged, args
        assert len(queries.users_for_export(conn, limit=3)) == 3
    finally:
        conn.close()


# --- the pure parts -------------------------------------------------------------------------


def test_paths_are_the_steps_own_read_from_the_one_settings_reader(tmp_path: Path) -> None:
    default = tiers_data.page_paths(tmp_path, tmp_path / "s", {})
    assert default.db == tmp_path / "database" / "mixpanel_data.db"
    assert default.tiers == tmp_path / "s" / "tiers.yaml"
    assert default.event_names == tmp_path / "s" / "event_names.yaml"
    assert default.cache == tmp_path / "data_cache" / "mixpanel"
    assert default.reports == tmp_path / "reports" / "mixpanel_pipeline"
    chosen = tiers_data.page_paths(
        tmp_path,
        None,
        {
            "MIXPANEL_DB_PATH": " x/y.db ",
            "MIXPANEL_TIERS_PATH": "t.yaml",
            "MIXPANEL_EVENT_NAMES_PATH": "/abs/names.yaml",
        },
    )
    assert chosen.db == tmp_path / "x" / "y.db"
    assert chosen.tiers == tmp_path / "t.yaml"
    assert chosen.event_names == Path("/abs/names.yaml")


def test_user_filter_reads_as_it_queries() -> None:
    flt = UserFilter(tier="none", country="DE", abi="no", search="  ab ")
    assert flt.query_args() == {"tier": "none", "country": "DE", "abi": False, "search": "ab"}
    assert flt.describe() == 'no tier (invalid), country DE, ABI no, id contains "ab"'
    assert flt.file_name() == "tier-users-none-DE-abi-no-search.csv"
    assert UserFilter().query_args() == {"tier": None, "country": None, "abi": None, "search": None}
    assert UserFilter().describe() == "all users"
    assert tiers_data.page_count(0, 50) == 1 and tiers_data.page_count(101, 50) == 3


def test_threshold_changes_and_last_tier_run() -> None:
    now = TierThresholds(premium_min_revenue_usd=150)
    assert tiers_data.threshold_changes(now, None) == []
    assert tiers_data.threshold_changes(now, TierThresholds().__dict__) == [
        "premium_min_revenue_usd: 100 then, 150 now"
    ]
    records = [
        {"run_id": "b", "steps": {"ingest_data": {"state": "failed"}}},
        {"run_id": "a", "steps": {"assign_economic_tier": {"state": "succeeded"}}},
    ]
    assert tiers_data.last_tier_run(records)["run_id"] == "a"
    assert tiers_data.last_tier_run(records[:1]) is None


# --- where the data came from, profiles, event names ----------------------------------------


def _copy_db(built_db: Path, tiers_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    db = tiers_env.parent / "copy.db"
    shutil.copy(built_db, db)
    monkeypatch.setenv("MIXPANEL_DB_PATH", str(db))
    return db


def test_demo_data_is_always_said_to_be_demo_data(on_built: Path) -> None:
    at = page("tiers")
    no_traceback(at)
    assert alerts(at, "warning").startswith("**Demo data.** These figures come from the")
    assert "set MIXPANEL_PROJECT_ID and a credential" in alerts(at, "warning")
    assert "MIXPANEL_ALLOW_SOURCE_CHANGE" not in alerts(at, "warning"), "demo to a project is free"


def test_a_projects_data_names_the_project_and_a_switch_is_announced(
    tiers_env: Path, built_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = _copy_db(built_db, tiers_env, monkeypatch)
    source = {
        "source": "export",
        "format": 2,
        "project_id": "12345",
        "export_url": "https://data-eu.mixpanel.com/api/2.0/export",
    }
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE mixpanel_meta SET value = ? WHERE key = 'source'", (json.dumps(source),)
        )
    at = page("tiers")
    no_traceback(at)
    assert "Demo data" not in alerts(at, "warning")
    assert "Data of Mixpanel project 12345 (data-eu.mixpanel.com)." in [
        shown(c.value) for c in at.caption
    ]
    # The settings (no credentials) would switch it to demo data: the page says what will happen.
    assert (
        "The settings now name demo data (END_DATE 2024-06-30, 100 users), but the database "
        "holds Mixpanel project 12345 (data-eu.mixpanel.com): the next run stops without "
        "changing it, unless MIXPANEL_ALLOW_SOURCE_CHANGE=1 is set."
    ) in alerts(at, "warning")


def test_a_first_profile_sync_in_progress_says_how_far_it_got(
    on_built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir = tmp_path / "cache"
    state = cache_dir / "profiles" / "state.json"
    state.parent.mkdir(parents=True)
    state.write_text(
        json.dumps(
            {
                "full": {
                    "started_at": "2024-07-01T02:00:00Z",
                    "next_page": 120,
                    "session_id": "1700000001-SESS0001",
                    "fetched": 120000,
                    "total": 497139,
                }
            }
        )
    )
    monkeypatch.setenv("MIXPANEL_CACHE_DIR", str(cache_dir))
    at = page("tiers")
    no_traceback(at)
    assert "Profiles: the first full sync has got profiles 120,000 of 497,139." in alerts(
        at, "info"
    )


def test_product_events_of_no_known_kind_are_shown_as_text(
    tiers_env: Path, built_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A project's own purchase event, unmapped: step 5 counts it, the page lists it first
    and warns; a name full of Markdown and HTML shows as the text it is."""
    db = _copy_db(built_db, tiers_env, monkeypatch)
    odd = "**Purchase** <b>Completed</b> [x](http://example.com)"
    with sqlite3.connect(db) as conn:
        user, day = conn.execute(
            "SELECT distinct_id, event_date FROM fact_mixpanel_event e JOIN fact_mixpanel_user u "
            "USING (distinct_id) WHERE u.valid_user LIMIT 1"
        ).fetchone()
        for n in range(2):
            conn.execute(
                "INSERT INTO fact_mixpanel_event (insert_id, event, distinct_id, time, event_date,"
                " product_id, revenue, properties, source_day) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (f"odd-{n}", odd, user, 1719700000 + n, day, "coins_100", 4.99, "{}", day),
            )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIXPANEL_")}
    env.update(SMALL, MIXPANEL_DB_PATH=str(db), MIXPANEL_CACHE_DIR=str(tiers_env.parent / "c"))
    for script in ("05_count_user_events.py", "06_assign_economic_tier.py"):
        done = subprocess.run(
            [sys.executable, str(STEPS_DIR / script)],
            cwd=tiers_env.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
        assert done.returncode == 0, done.stderr
    at = page("tiers")
    no_traceback(at)
    assert (
        "2 product events under 1 name(s) match no lifecycle kind (listed first below)"
        in alerts(at, "warning")
    )
    names = frame_with(at, "Known from")
    assert names.iloc[0].to_dict() == {
        "Event name": odd,
        "Kind": "(no known kind)",
        "Known from": "",
        "Events": 2,
        "Users": 1,
    }
    known = names[names["Kind"] != "(no known kind)"]
    assert set(known["Known from"]) == {"built-in"} and "renewal" in set(known["Kind"])
    assert odd not in texts(at), "the name is only in the table, never in Markdown"


def test_a_bad_setting_is_one_line_on_the_page(on_built: Path, monkeypatch) -> None:
    monkeypatch.setenv("MIXPANEL_WINDOW_DAYS", "ninety")
    at = page("tiers")
    no_traceback(at)
    assert alerts(at, "error") == (
        "The Mixpanel settings cannot be used: MIXPANEL_WINDOW_DAYS='ninety' is not a whole "
        "number; set it to e.g. 90"
    )


def test_text_from_the_data_never_turns_into_markdown(
    tiers_env: Path, built_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A country code full of Markdown, chosen in the explorer, and a database path with a
    backtick: the captions show them as the text they are, no link, no bold, no code break."""
    odd_dir = tiers_env.parent / "odd`dir"
    odd_dir.mkdir()
    db = odd_dir / "m.db"
    shutil.copy(built_db, db)
    monkeypatch.setenv("MIXPANEL_DB_PATH", str(db))
    country = "**PWNED** [click me](https://evil.example/x)"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE fact_mixpanel_user SET country = ? WHERE distinct_id = "
            "(SELECT MIN(distinct_id) FROM fact_mixpanel_user)",
            (country,),
        )
    at = page("tiers")
    at.selectbox(key=Keys.TIERS_COUNTRY).set_value(country).run()
    no_traceback(at)
    caption = next(c.value for c in at.caption if "users match" in c.value)
    assert "(https://evil.example/x)" not in caption and "**PWNED**" not in caption
    assert shown(caption).startswith(f"1 users match (country {country})")
    read_from = next(c.value for c in at.caption if "pipeline, read from" in c.value)
    assert f"``{shown_path_of(db, tiers_env.parent)}``" in read_from


def test_the_csv_never_hands_a_spreadsheet_a_formula(
    tiers_env: Path, built_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = _copy_db(built_db, tiers_env, monkeypatch)
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE fact_mixpanel_user SET distinct_id = '=HYPERLINK(\"http://evil\")', "
            "country = '@SUM(1)' WHERE distinct_id = (SELECT MIN(distinct_id) FROM "
            "fact_mixpanel_user)"
        )
    rows = list(csv.reader(io.StringIO(tiers_data.users_csv(db, UserFilter()).decode())))
    header, body = rows[0], rows[1:]
    odd = next(r for r in body if "HYPERLINK" in r[header.index("distinct_id")])
    assert odd[header.index("distinct_id")] == '\'=HYPERLINK("http://evil")'
    assert odd[header.index("country")] == "'@SUM(1)"
    assert all(not cell.startswith(("=", "+", "@")) for row in body for cell in row)
