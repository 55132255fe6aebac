"""The one Engine per server process, shared by every browser session.

Keyed by the resolved pipelines folder, read from the environment at call time, so a test
that points ORCHESTRATOR_PIPELINES_DIR elsewhere gets an engine of its own.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from orchestrator_core.engine import Engine
from orchestrator_core.paths import resolve_pipelines_dir


def _shutdown(engine: Engine) -> None:
    # Called when the cache is cleared: runs of this engine must not be left orphaned.
    engine.shutdown()


@st.cache_resource(show_spinner=False, on_release=_shutdown)
def _engine_for(pipelines_dir: str) -> Engine:
    return Engine(Path(pipelines_dir), trigger="dashboard")


def pipelines_dir() -> Path:
    """The pipelines folder of this request: $ORCHESTRATOR_PIPELINES_DIR or ./pipelines."""
    return resolve_pipelines_dir()


def get_engine() -> Engine:
    """The shared engine of the current pipelines folder (created on first use)."""
    return _engine_for(str(pipelines_dir()))


def engine_or_stop() -> Engine:
    """The engine, or a clear error on the page (and nothing else) when it cannot start."""
    try:
        return get_engine()
    except (ValueError, OSError) as exc:
        st.error(f"The orchestrator cannot start: {exc}")
        st.stop()
        raise  # st.stop() does not return; this keeps type checkers content
