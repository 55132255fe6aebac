"""Links between pages that keep their query parameters (`?pipeline=`, `?run=`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from streamlit.errors import StreamlitAPIException

from .session import Params

OVERVIEW_PAGE = "pages/overview.py"
PIPELINES_PAGE = "pages/pipelines.py"
RUNS_PAGE = "pages/runs.py"

URL_PATHS = {OVERVIEW_PAGE: "", PIPELINES_PAGE: "pipelines", RUNS_PAGE: "runs"}


def page_link(container: Any, page: str, label: str, params: dict[str, str], **kwargs: Any) -> None:
    """A link to a page of the app; a plain markdown link when the page is shown on its own."""
    try:
        container.page_link(page, label=label, query_params=params, **kwargs)
    except StreamlitAPIException:
        url = f"/{URL_PATHS[page]}?{urlencode(params)}"
        container.markdown(f"[{label}]({url})")


def pipeline_link(
    container: Any, pipeline_id: str, label: str | None = None, **kwargs: Any
) -> None:
    """A link to a pipeline on the pipelines page."""
    page_link(
        container, PIPELINES_PAGE, label or pipeline_id, {Params.PIPELINE: pipeline_id}, **kwargs
    )


def run_link(container: Any, run_id: str, label: str | None = None, **kwargs: Any) -> None:
    """A link to a run's detail on the runs page."""
    page_link(container, RUNS_PAGE, label or run_id, {Params.RUN: run_id}, **kwargs)
