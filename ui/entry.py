"""Make every page go through `dashboard.py`, even on the first visit after the server starts.

Until some script calls `st.navigation`, Streamlit treats a `pages/` folder beside the entry
file the old way and runs the requested page file on its own, so the first visitor of
`/pipelines` would miss the password gate and the sidebar. A page that finds itself run that
way switches the old mode off and reruns, this time through `dashboard.py`.

That switch is a Streamlit internal (`PagesManager.uses_pages_directory`). Should a Streamlit
release drop it, a page run on its own still asks for the password and draws the sidebar itself:
it never shows anything the gate would have hidden.
"""

from __future__ import annotations

import threading

import streamlit as st

try:
    from streamlit.runtime.pages_manager import PagesManager
except ImportError:  # a Streamlit without it: the fallback below
    PagesManager = None

# Each script run of a session has a thread of its own: `dashboard.py` marks its runs here.
_run = threading.local()


def entered() -> None:
    """Called by `dashboard.py` before it runs the page: this run went through the gate."""
    _run.via_entry = True


def leave_pages_folder_mode() -> None:
    """Switch Streamlit's `pages/` folder mode off (and rerun) if it is on."""
    if PagesManager is not None and getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.rerun()


def ensure_navigation() -> None:
    """Called first by every page file: rerun through `dashboard.py` if Streamlit ran this
    page on its own, or at least put the password gate and the sidebar in front of it."""
    if getattr(_run, "via_entry", False):
        _run.via_entry = False
        return
    leave_pages_folder_mode()
    from .auth import require_password
    from .sidebar import render_sidebar

    require_password()
    render_sidebar()
