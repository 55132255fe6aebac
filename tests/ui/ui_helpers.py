"""Helpers for the dashboard tests: write pipelines, open pages, read what a page shows."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from ui.engine import get_engine
from ui.session import Keys

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboard.py"
APP_TIMEOUT = 30


def write_pipeline(
    pdir: Path,
    pipeline_id: str,
    steps: list[dict],
    *,
    name: str | None = None,
    scripts: dict[str, str] | None = None,
) -> Path:
    """Write `<pdir>/<id>/pipeline.yaml` and one script per step (default: print and exit 0).

    A step dict has name and optionally depends_on, script body (`code`) and `timeout`."""
    folder = pdir / pipeline_id
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        f'name: "{name or pipeline_id.replace("_", " ").title()}"',
        f'description: "Test pipeline {pipeline_id}"',
        "steps:",
    ]
    for step in steps:
        script = f"{step['name']}.py"
        lines += [
            f'  - name: "{step["name"]}"',
            f'    script: "{script}"',
            f'    description: "Step {step["name"]}"',
        ]
        if step.get("depends_on"):
            deps = ", ".join(f'"{d}"' for d in step["depends_on"])
            lines.append(f"    depends_on: [{deps}]")
        if step.get("timeout"):
            lines.append(f"    timeout: {step['timeout']}")
        code = step.get("code") or f'print("step {step["name"]} done")'
        (folder / script).write_text(
            "import sys, time\n\n\ndef main() -> int:\n"
            + textwrap.indent(textwrap.dedent(code), "    ")
            + "\n    return 0\n\n\nraise SystemExit(main())\n"
        )
    for fname, body in (scripts or {}).items():
        (folder / fname).write_text(body)
    (folder / "pipeline.yaml").write_text("\n".join(lines) + "\n")
    return folder


def chain(*names: str, **code: str) -> list[dict]:
    """Steps a -> b -> c, each depending on the one before; `code` maps a name to its body."""
    out = []
    for i, n in enumerate(names):
        out.append({"name": n, "depends_on": [names[i - 1]] if i else [], "code": code.get(n)})
    return out


def wait_until(check: Callable[[], bool], timeout: float = 30.0, every: float = 0.1) -> None:
    """Poll `check` until it is true; fail the test when `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s")


def page(name: str, **params: str) -> AppTest:
    """An AppTest of the whole app, switched to `pages/<name>.py`, with these query params."""
    at = AppTest.from_file(str(DASHBOARD), default_timeout=APP_TIMEOUT)
    if name != "overview":
        at.switch_page(f"pages/{name}.py")
    at.query_params.update(params)
    return at.run()


def texts(at: AppTest) -> str:
    """Every piece of text the page shows (markdown, captions, alerts, code), joined."""
    parts = []
    for kind in ("markdown", "caption", "error", "warning", "info", "success", "code"):
        parts += [str(el.value) for el in getattr(at, kind)]
    parts += [el.value for el in at.title] + [el.value for el in at.header]
    parts += [el.value for el in at.subheader]
    return "\n".join(parts)


def step_states(at: AppTest) -> dict[str, str]:
    """Step -> state, as the steps table on the pipelines page shows it."""
    frame = at.table[0].value
    return dict(zip(frame["Step"], frame["State"], strict=True))


def engine():
    """The dashboard's shared engine, as the pages use it."""
    return get_engine()


def click(at: AppTest, key: str) -> AppTest:
    """Click a button by key and rerun."""
    return at.button(key=key).click().run()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_health(url: str, server: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    """Poll `/_stcore/health` until it answers ok; fail with the server's output otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the dashboard exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the dashboard did not answer within {timeout} s:\n{log.read_text()}")


def stop(server: subprocess.Popen) -> None:
    """Stop the server and everything it started (its process group)."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(15)


@contextlib.contextmanager
def serving(
    argv: list[str], *, cwd: Path, env: dict[str, str], port: int, log: Path
) -> Iterator[str]:
    """Start a dashboard server (its output into `log`), wait until it answers, yield its
    URL, and stop it and its process group afterwards."""
    with open(log, "wb") as out:
        server = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_health(url, server, log)
        yield url
    finally:
        stop(server)


__all__ = [
    "Keys",
    "chain",
    "click",
    "engine",
    "free_port",
    "page",
    "serving",
    "step_states",
    "stop",
    "texts",
    "wait_for_health",
    "wait_until",
    "write_pipeline",
]
