"""The sidebar every page shares: where the pipelines are and what runs now."""

from __future__ import annotations

import streamlit as st

from orchestrator_core.spec import display_path

from .auth import configured_password
from .engine import get_engine, pipelines_dir


def render_sidebar() -> None:
    """Pipelines folder, runs of this server, and the security note."""
    with st.sidebar:
        st.caption(f"Pipelines folder: `{display_path(pipelines_dir())}`")
        try:
            active = get_engine().active_runs()
        except (ValueError, OSError):
            active = []
        if active:
            st.caption("Running from this dashboard: " + ", ".join(a.pipeline_id for a in active))
        if configured_password() is None:
            st.caption(
                "No password set: anyone who can open this dashboard can run the pipelines' "
                "scripts. Set ORCHESTRATOR_PASSWORD before binding beyond localhost."
            )
