"""How long the dashboard's pages take to render on the server, with 100 pipelines of 20 steps.

Each page is run through Streamlit's AppTest (the same script run a browser session triggers,
without the network), several times, and the median and worst times are printed next to a
baseline in the same run: the same page with one 3-step pipeline, and an empty Streamlit script.

    .venv/bin/python benchmarks/bench_dashboard.py [--pipelines 100] [--steps 20] [--repeat 10]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "dashboard.py"


def write_pipeline(pdir: Path, pipeline_id: str, steps: int) -> None:
    """A pipeline of `steps` steps: a chain with a fan-out every fifth step."""
    folder = pdir / pipeline_id
    folder.mkdir(parents=True)
    lines = [f'name: "Pipeline {pipeline_id}"', f'description: "Benchmark pipeline {pipeline_id}"']
    lines.append("steps:")
    for i in range(steps):
        deps = [f"s{i - 1:02d}"] if i else []
        if i >= 5 and i % 5 == 0:
            deps.append(f"s{i - 5:02d}")
        lines += [
            f'  - name: "s{i:02d}"',
            f'    script: "s{i:02d}.py"',
            f'    description: "Step {i}"',
        ]
        if deps:
            lines.append(f"    depends_on: [{', '.join(deps)}]")
        (folder / f"s{i:02d}.py").write_text("raise SystemExit(0)\n")
    (folder / "pipeline.yaml").write_text("\n".join(lines) + "\n")


def fill_status(pdir: Path, pipeline_id: str) -> None:
    """Give the steps a realistic status: most succeeded, one failed, some never run."""
    from orchestrator_core.discovery import find_pipeline
    from orchestrator_core.fingerprint import script_sha256
    from orchestrator_core.status import iso, utc_now
    from orchestrator_core.store import StatusStore

    pipeline = find_pipeline(pdir, pipeline_id).pipeline
    now = iso(utc_now())
    changes = {}
    for i, step in enumerate(pipeline.steps):
        if i >= len(pipeline.steps) - 3:
            continue
        state = "failed" if i == len(pipeline.steps) - 4 else "succeeded"
        changes[step.name] = {
            "state": state,
            "last_run": now,
            "started_at": now,
            "finished_at": now,
            "duration_s": 1.5,
            "exit_code": 0 if state == "succeeded" else 1,
            "error": None if state == "succeeded" else "Traceback ...\nValueError: bad row",
            "run_id": "20260101T000000000000Z-000000",
            "last_success_at": now,
            "success_script_sha256": script_sha256(pipeline.script_path(step)),
            "success_config_sha256": step.config_sha256(),
            "tested": i % 3 == 0,
        }
    StatusStore(pdir).set_fields(pipeline_id, changes)


def fill_history(pdir: Path, pipeline_id: str, runs: int) -> None:
    """`runs` finished run records, one with a failed step, each step with a short log."""
    from orchestrator_core.history import RunHistory, new_run_id
    from orchestrator_core.status import iso, utc_now

    history = RunHistory(pdir, keep=runs)
    for r in range(runs):
        started = utc_now()
        run_id = new_run_id(started)
        steps = {}
        for i in range(3):
            log = history.log_path(pipeline_id, run_id, f"s{i:02d}")
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(f"{iso(started)} stdout step s{i:02d} done\n")
            failed = r == 0 and i == 2
            steps[f"s{i:02d}"] = {
                "state": "failed" if failed else "succeeded",
                "started_at": iso(started),
                "finished_at": iso(started),
                "duration_s": 1.5,
                "exit_code": 1 if failed else 0,
                "attempts": 1,
                "error": "ValueError: bad row" if failed else None,
                "log": str(log.relative_to(pdir)),
            }
        history.write(
            {
                "run_id": run_id,
                "pipeline_id": pipeline_id,
                "trigger": "cli",
                "selection": {"kind": "all", "step": None},
                "state": "failed" if r == 0 else "succeeded",
                "started_at": iso(started),
                "finished_at": iso(started),
                "duration_s": 4.5,
                "pid": 1,
                "plan": [[n] for n in steps],
                "warnings": [],
                "notices": [],
                "steps": steps,
            },
            fsync=False,
        )


def time_page(page: str, params: dict[str, str], repeat: int) -> tuple[float, float, float]:
    """(first, median, worst) seconds: a first run, then `repeat` full runs of one page."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(DASHBOARD), default_timeout=120)
    if page != "overview":
        at.switch_page(f"pages/{page}.py")
    at.query_params.update(params)
    return _time_runs(at, repeat, page)


def _time_runs(at: Any, repeat: int, what: str) -> tuple[float, float, float]:
    """The first run's time, then the median and worst of `repeat` more."""
    start = time.perf_counter()
    at.run()
    first = time.perf_counter() - start
    if at.exception:
        raise SystemExit(f"{what}: {at.exception[0].message}")
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times), max(times)


def time_empty(repeat: int) -> tuple[float, float, float]:
    """The floor: an AppTest run of a script that writes one line."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_string("import streamlit as st\nst.write('hello')\n")
    return _time_runs(at, repeat, "empty script")


def build(pdir: Path, pipelines: int, steps: int, runs: int) -> str:
    for n in range(pipelines):
        write_pipeline(pdir, f"p{n:03d}", steps)
        fill_status(pdir, f"p{n:03d}")
        fill_history(pdir, f"p{n:03d}", runs)
    return f"p{pipelines // 2:03d}"


# What Streamlit logs on every AppTest render, outside a server session: noise, not figures.
BARE_MODE_NOISE = ("missing ScriptRunContext", "No runtime found")


def quiet_streamlit() -> None:
    """Drop Streamlit's bare-mode log lines (it resets its loggers' levels, so a filter it is)."""
    for name in (
        "streamlit.runtime.scriptrunner_utils.script_run_context",
        "streamlit.runtime.caching.cache_data_api",
    ):
        logging.getLogger(name).addFilter(
            lambda record: not any(text in record.getMessage() for text in BARE_MODE_NOISE)
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=20, help="run records per pipeline")
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()

    import streamlit as st

    quiet_streamlit()

    rows = []
    with tempfile.TemporaryDirectory() as big, tempfile.TemporaryDirectory() as small:
        cases = [
            (Path(big) / "pipelines", args.pipelines, args.steps),
            (Path(small) / "pipelines", 1, 3),
        ]
        for pdir, n, s in cases:
            pdir.mkdir()
            chosen = build(pdir, n, s, args.runs)
            os.environ["ORCHESTRATOR_PIPELINES_DIR"] = str(pdir)
            os.chdir(pdir.parent)
            st.cache_resource.clear()
            label = f"{n} x {s} steps"
            for page, params in (
                ("pipelines", {"pipeline": chosen}),
                ("overview", {}),
                ("runs", {}),
            ):
                rows.append((page, label, *time_page(page, params, args.repeat)))
            st.cache_resource.clear()
    rows.append(("(empty script)", "-", *time_empty(args.repeat)))

    print(
        f"Server time per page render (AppTest, no browser); {args.runs} past runs per pipeline;"
        f" first render, then median and worst of {args.repeat} more"
    )
    print(f"{'page':<16} {'pipelines':<16} {'first':>9} {'median':>9} {'worst':>9}")
    for page, label, first, median, worst in rows:
        print(
            f"{page:<16} {label:<16} {first * 1000:>7.0f}ms {median * 1000:>7.0f}ms"
            f" {worst * 1000:>7.0f}ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
