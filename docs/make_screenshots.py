"""Make the README's screenshots: the pipelines page mid-run, the runs page, the tiers page.

Builds a demo pipelines folder in a temporary directory, gives it some history, serves the
dashboard on a free port and drives Debian's Chromium with Playwright:

    .venv/bin/python docs/make_screenshots.py          # docs/pipelines-page.png, docs/runs-page.png
    .venv/bin/python docs/make_screenshots.py tiers    # docs/tiers-page.png only

The tiers shot runs the real mixpanel_pipeline on demo data (2,000 users, 90 days) into a
database in the temporary directory.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
]

DEMO_STEPS = {
    "extract_orders": ([], 3, "orders"),
    "extract_customers": ([], 2, "customers"),
    "join": (["extract_orders", "extract_customers"], 6, "rows joined"),
    "aggregate": (["join"], 3, "regions aggregated"),
    "publish_report": (["aggregate"], 2, "report pages"),
}


def write_demo(pdir: Path) -> None:
    """A 5-step demo pipeline whose steps take a few seconds and print as they go."""
    folder = pdir / "daily_sales"
    folder.mkdir(parents=True)
    lines = [
        'name: "Daily sales"',
        'description: "Pull orders and customers, join them, aggregate per region, publish."',
        "max_parallel: 2",
        "steps:",
    ]
    for name, (deps, seconds, unit) in DEMO_STEPS.items():
        lines += [
            f'  - name: "{name}"',
            f'    script: "{name}.py"',
            f'    description: "{name.replace("_", " ").capitalize()} ({unit})"',
        ]
        if deps:
            lines.append(f"    depends_on: [{', '.join(deps)}]")
        (folder / f"{name}.py").write_text(
            textwrap.dedent(
                f"""\
                import time


                def main() -> int:
                    for i in range(1, {seconds * 2} + 1):
                        print(f"{name}: {{i * 1000}} {unit}", flush=True)
                        time.sleep(0.5)
                    return 0


                raise SystemExit(main())
                """
            )
        )
    (folder / "pipeline.yaml").write_text("\n".join(lines) + "\n")


def write_failing(pdir: Path) -> None:
    """A 2-step pipeline whose second step fails, so the history shows a failure."""
    folder = pdir / "nightly_export"
    folder.mkdir(parents=True)
    (folder / "pipeline.yaml").write_text(
        'name: "Nightly export"\ndescription: "Export yesterday\'s tiers to the warehouse"\n'
        "steps:\n"
        '  - {name: dump, script: dump.py, description: "Dump the tiers table"}\n'
        '  - {name: upload, script: upload.py, description: "Upload the dump", depends_on: [dump]}\n'
    )
    (folder / "dump.py").write_text('print("dumped 12840 rows")\n')
    (folder / "upload.py").write_text(
        "import sys\n\n"
        'print("connecting to warehouse...")\n'
        'print("upload failed: warehouse credentials expired; renew WAREHOUSE_TOKEN", file=sys.stderr)\n'
        "raise SystemExit(2)\n"
    )


def prepare(pdir: Path) -> None:
    """Pipelines plus history: one full demo run (for the ETA), a failing example run."""
    from orchestrator_core.engine import Engine
    from orchestrator_core.pipeline_state import mark_tested
    from orchestrator_core.plan import Selection

    write_demo(pdir)
    write_failing(pdir)
    example = ROOT / "pipelines" / "example_pipeline"
    if (example / "pipeline.yaml").exists():
        shutil.copytree(example, pdir / "example_pipeline")
    engine = Engine(pdir, trigger="cli")
    engine.wait(engine.submit("daily_sales", Selection()), 120)
    pipeline = engine.load_pipeline("daily_sales")
    for step in ("extract_orders", "extract_customers"):
        mark_tested(engine.status, pipeline, step)
    if (pdir / "example_pipeline").exists():
        engine.wait(engine.submit("example_pipeline", Selection()), 120)
    engine.wait(engine.submit("nightly_export", Selection()), 120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_tiers(pdir: Path) -> dict[str, str]:
    """The real mixpanel_pipeline on demo data, run once; returns the MIXPANEL_* it used."""
    from orchestrator_core.engine import Engine
    from orchestrator_core.plan import Selection

    shutil.copy(ROOT / "pipelines" / "mixpanel_pipeline.yaml", pdir)
    shutil.copytree(
        ROOT / "pipelines" / "mixpanel_pipeline",
        pdir / "mixpanel_pipeline",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    settings = {
        "MIXPANEL_SOURCE": "demo",
        "MIXPANEL_DEMO_USERS": "2000",
        "MIXPANEL_WINDOW_DAYS": "90",
        "MIXPANEL_END_DATE": "2024-06-30",
        "MIXPANEL_DB_PATH": "database/mixpanel_data.db",
        "MIXPANEL_CACHE_DIR": "data_cache/mixpanel",
    }
    for name in [n for n in os.environ if n.startswith("MIXPANEL_")]:
        del os.environ[name]
    os.environ.update(settings)  # the steps inherit them
    engine = Engine(pdir, trigger="dashboard")
    record = engine.wait(engine.submit("mixpanel_pipeline", Selection()), 600)
    if not record or record.get("state") != "succeeded":
        raise SystemExit(f"the mixpanel_pipeline demo run did not succeed: {record}")
    return settings


def serve(pdir: Path, port: int, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """The dashboard, run from the folder that holds `pdir` (with the project's Streamlit
    settings copied there), so the pages show paths relative to it, as a user's would."""
    env = {**os.environ, "ORCHESTRATOR_PIPELINES_DIR": str(pdir), **(extra_env or {})}
    env.pop("ORCHESTRATOR_PASSWORD", None)
    settings = pdir.parent / ".streamlit"
    settings.mkdir(exist_ok=True)
    shutil.copy(ROOT / ".streamlit" / "config.toml", settings / "config.toml")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(ROOT / "dashboard.py"),
            "--server.port",
            str(port),
        ],
        cwd=pdir.parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                return server
        except OSError:
            time.sleep(0.2)
    os.killpg(server.pid, signal.SIGKILL)
    raise SystemExit("the dashboard did not start")


def shoot(url: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1900})
        page.goto(f"{url}/pipelines?pipeline=daily_sales&step=join")
        page.get_by_role("button", name="Run pipeline").click()
        page.get_by_role("button", name="Start run").click()
        table = page.get_by_test_id("stTable")
        running = table.locator("tr", has_text="join").locator(
            "td", has_text=re.compile("^running$")
        )
        expect(running).to_have_count(1, timeout=60_000)
        page.wait_for_timeout(2500)  # let the live log fill a little
        page.screenshot(path=str(DOCS / "pipelines-page.png"), full_page=True)
        done = table.locator("td", has_text=re.compile("^succeeded$"))
        expect(done).to_have_count(len(DEMO_STEPS), timeout=60_000)
        page.goto(f"{url}/runs")
        expect(page.get_by_text("Download log").first).to_be_attached(timeout=30_000)
        page.wait_for_timeout(1500)  # the timeline chart draws after the page
        page.screenshot(path=str(DOCS / "runs-page.png"), full_page=True)
        browser.close()


def shoot_tiers(url: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2600})
        page.goto(f"{url}/tiers")
        expect(page.get_by_text("Rules in force")).to_be_visible(timeout=60_000)
        expect(page.get_by_test_id("stVegaLiteChart")).to_have_count(3, timeout=30_000)
        page.wait_for_timeout(2000)  # charts and tables draw after the page
        page.screenshot(path=str(DOCS / "tiers-page.png"), full_page=True)
        browser.close()


def _in_demo_project(prepare_project, take) -> None:
    """Build a project in a temp folder, serve the dashboard on it and take the shots."""
    with tempfile.TemporaryDirectory() as tmp:
        pdir = Path(tmp) / "pipelines"
        pdir.mkdir()
        os.chdir(tmp)  # steps write their output beside the pipelines folder
        settings = prepare_project(pdir)
        port = free_port()
        server = serve(pdir, port, settings)
        try:
            take(f"http://127.0.0.1:{port}")
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)


def main() -> int:
    if sys.argv[1:] == ["tiers"]:
        _in_demo_project(prepare_tiers, shoot_tiers)
        print(f"wrote {DOCS / 'tiers-page.png'}")
        return 0
    _in_demo_project(prepare, shoot)
    print(f"wrote {DOCS / 'pipelines-page.png'} and {DOCS / 'runs-page.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
