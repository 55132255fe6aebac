"""End to end in a real browser: start the dashboard, click Run pipeline, watch it finish live."""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ui_helpers import ROOT, chain, free_port, serving, write_pipeline

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
]
EXAMPLE = ROOT / "pipelines" / "example_pipeline"
STEPS = ("fetch_data", "clean_data", "summarize_data")

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def chromium_path() -> str:
    if CHROMIUM.exists():
        return str(CHROMIUM)
    message = f"Chromium is missing at {CHROMIUM}; install it with `apt-get install chromium`"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def dashboard_url(tmp_path: Path) -> Iterator[str]:
    """The dashboard served by a real `streamlit run` on a free port, with a tmp pipelines dir."""
    pdir = tmp_path / "pipelines"
    if (EXAMPLE / "pipeline.yaml").exists():
        shutil.copytree(EXAMPLE, pdir / "example_pipeline")
    else:
        write_pipeline(pdir, "example_pipeline", chain(*STEPS))
    port = free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "ORCHESTRATOR_PIPELINES_DIR": str(pdir)}
    env.pop("ORCHESTRATOR_PASSWORD", None)
    argv = [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.port", str(port)]
    argv += ["--server.address", "127.0.0.1", "--server.headless", "true"]
    with serving(argv, cwd=ROOT, env=env, port=port, log=log) as url:
        yield url


def test_run_pipeline_in_the_browser(
    dashboard_url: str, chromium_path: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"{dashboard_url}/pipelines?pipeline=example_pipeline")
            table = page.get_by_test_id("stTable")
            for step in STEPS:
                expect(table.locator("tr", has_text=step)).to_contain_text(
                    "never_run", timeout=30_000
                )
            page.evaluate("window.__sameDocument = true")  # gone if the page reloads

            page.get_by_role("button", name="Run pipeline").click()
            expect(page.get_by_text("Plan: all steps")).to_be_visible(timeout=15_000)
            page.get_by_role("button", name="Start run").click()

            for step in STEPS:
                row = table.locator("tr", has_text=step)
                expect(row.locator("td", has_text=re.compile(r"^succeeded$"))).to_have_count(
                    1, timeout=60_000
                )
            assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
            expect(page.get_by_text(re.compile(r"^Run .* succeeded: 3 of 3 steps"))).to_be_visible()
            page.screenshot(path=str(tmp_path / "pipelines-page.png"), full_page=True)
        finally:
            browser.close()
