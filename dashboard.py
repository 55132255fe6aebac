"""The dashboard's entry point: `streamlit run dashboard.py`, or `python dashboard.py`.

Only the page setup lives here: the password gate, the shared sidebar and the navigation.
The pages are in `pages/`, their logic in the `ui` package.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import streamlit as st
from streamlit import runtime


def _hand_over_to_streamlit() -> None:
    """`python dashboard.py [streamlit flags]`: re-run this file under `streamlit run`."""
    root = Path(__file__).resolve().parent
    pipelines = os.environ.get("ORCHESTRATOR_PIPELINES_DIR")
    if pipelines:  # keep a relative path meaning what it meant before the chdir below
        os.environ["ORCHESTRATOR_PIPELINES_DIR"] = str(Path(pipelines).resolve())
    os.chdir(root)  # Streamlit reads .streamlit/config.toml from the working directory
    argv = [sys.executable, "-m", "streamlit", "run", str(root / "dashboard.py")]
    if os.environ.get("ORCHESTRATOR_PORT"):
        argv += ["--server.port", os.environ["ORCHESTRATOR_PORT"]]
    if os.environ.get("ORCHESTRATOR_HOST"):
        argv += ["--server.address", os.environ["ORCHESTRATOR_HOST"]]
    os.execv(sys.executable, [*argv, *sys.argv[1:]])


def main() -> None:
    """Build the app: page config, password gate, sidebar, navigation."""
    from ui.auth import is_locked, require_password
    from ui.entry import entered, leave_pages_folder_mode
    from ui.sidebar import render_sidebar

    leave_pages_folder_mode()

    st.set_page_config(
        page_title="Pipeline orchestrator", page_icon=":material/account_tree:", layout="wide"
    )
    pages = [
        st.Page(
            "pages/overview.py",
            title="Overview",
            icon=":material/dashboard:",
            url_path="",
            default=True,
        ),
        st.Page(
            "pages/pipelines.py",
            title="Pipelines",
            icon=":material/account_tree:",
            url_path="pipelines",
        ),
        st.Page("pages/runs.py", title="Runs", icon=":material/history:", url_path="runs"),
        st.Page("pages/tiers.py", title="Economic tiers", icon=":material/paid:", url_path="tiers"),
    ]
    # Behind the password gate the menu is hidden too, so nothing shows until it is given.
    page = st.navigation(pages, position="hidden" if is_locked() else "sidebar")
    require_password()
    render_sidebar()
    entered()
    page.run()


if __name__ == "__main__" and not runtime.exists():
    _hand_over_to_streamlit()
else:
    main()
