"""Make every page go through `dashboard.py`, even on the first visit after the server starts.

Until some script calls `st.navigation`, Streamlit treats a `pages/` folder beside the entry
file the old way and runs the requested page file on its own, so the first visitor of
`/pipelines` would miss the password gate and the sidebar. A page that finds itself run that
way switches the old mode off and reruns, this time through `dashboard.py`.
"""

from __future__ import annotations

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager


def ensure_navigation() -> None:
    """Rerun through the entry file when Streamlit ran this page in its `pages/` folder mode."""
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
