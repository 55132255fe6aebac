"""The optional password gate: when ORCHESTRATOR_PASSWORD is set, nothing renders without it.

The password comes from the environment or `.streamlit/secrets.toml`, read on every run.
Anyone who can open the dashboard can run the pipelines' scripts: bind beyond localhost
only with a password (and preferably behind TLS).
"""

from __future__ import annotations

import hashlib
import hmac
import os

import streamlit as st

from .session import Keys

ENV_PASSWORD = "ORCHESTRATOR_PASSWORD"


def configured_password() -> str | None:
    """The password from the environment, else from Streamlit secrets; None when unset."""
    value = os.environ.get(ENV_PASSWORD)
    if not value:
        try:
            value = st.secrets.get(ENV_PASSWORD)
        except (FileNotFoundError, KeyError):  # no secrets file, or one that does not parse
            value = None
    return str(value) if value else None


def password_matches(given: str, expected: str) -> bool:
    """Constant-time comparison (of digests, so the length does not leak either)."""
    a = hashlib.sha256(given.encode("utf-8")).digest()
    b = hashlib.sha256(expected.encode("utf-8")).digest()
    return hmac.compare_digest(a, b)


def _check() -> None:
    expected = configured_password()
    given = st.session_state.get(Keys.PASSWORD, "")
    ok = bool(expected) and password_matches(given, expected or "")
    st.session_state[Keys.AUTHENTICATED] = ok
    st.session_state[Keys.PASSWORD] = ""
    if not ok:
        st.session_state[Keys.FLASH] = [("error", "Wrong password; try again.")]


def is_locked() -> bool:
    """True while a password is configured and this session has not given it."""
    return configured_password() is not None and not st.session_state.get(Keys.AUTHENTICATED)


def require_password() -> None:
    """Stop the page behind a password form until the right password is given."""
    if not is_locked():
        return
    st.title("Pipeline orchestrator")
    st.caption("This dashboard is protected by a password (ORCHESTRATOR_PASSWORD).")
    for kind, text in st.session_state.pop(Keys.FLASH, []):
        getattr(st, kind)(text)
    with st.form("login", border=True):
        st.text_input("Password", type="password", key=Keys.PASSWORD)
        st.form_submit_button("Log in", type="primary", on_click=_check, key=Keys.LOGIN)
    st.stop()
