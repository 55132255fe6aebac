"""`python dashboard.py` hands over to Streamlit, on the port and address from the environment."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from test_ui_e2e_browser import free_port, stop, wait_for_health
from ui_helpers import ROOT


@pytest.mark.slow
def test_python_dashboard_py_serves_on_orchestrator_port(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    env = {
        **os.environ,
        "ORCHESTRATOR_PORT": str(port),
        "ORCHESTRATOR_HOST": "127.0.0.1",
        "ORCHESTRATOR_PIPELINES_DIR": str(tmp_path / "pipelines"),
    }
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, str(ROOT / "dashboard.py")],
            cwd=tmp_path,  # it finds its own folder and config from anywhere
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_health(url, server, log)
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert "<title>Streamlit</title>" in resp.read().decode()
    finally:
        stop(server)
