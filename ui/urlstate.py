"""Choices that live in the URL (`?pipeline=...&step=...`), so a link opens the same view."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import streamlit as st


def _to_url(key: str, param: str, clear: Sequence[str]) -> None:
    st.query_params[param] = str(st.session_state[key])
    for other in clear:
        st.query_params.pop(other, None)


def url_choice(
    label: str,
    options: Sequence[str],
    *,
    key: str,
    param: str,
    default: str | None = None,
    format_func: Callable[[Any], str] = str,
    clear_on_change: Sequence[str] = (),
    missing: Callable[[str], None] | None = None,
) -> str:
    """A selectbox whose value is the query parameter `param` (the URL is the truth).

    A value in the URL that is not an option falls back to `default` (or the first option),
    after telling `missing` about it."""
    wanted = st.query_params.get(param)
    if wanted not in options:
        if wanted and missing:
            missing(wanted)
        wanted = default if default in options else options[0]
    if st.session_state.get(key) != wanted:
        st.session_state[key] = wanted
    if st.query_params.get(param) != wanted:
        st.query_params[param] = wanted
    st.selectbox(
        label,
        options,
        key=key,
        format_func=format_func,
        on_change=_to_url,
        args=(key, param, tuple(clear_on_change)),
    )
    return wanted
