"""`python dashboard.py` hands over to Streamlit, on the port and address from the environment."""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

import pytest
from ui_helpers import ROOT, free_port, serving


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
    argv = [sys.executable, str(ROOT / "dashboard.py")]
    # cwd: it finds its own folder and config from anywhere
    with (
        serving(argv, cwd=tmp_path, env=env, port=port, log=log) as url,
        urllib.request.urlopen(url, timeout=5) as resp,
    ):
        assert "<title>Streamlit</title>" in resp.read().decode()
