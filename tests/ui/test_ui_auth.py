"""The optional password gate on every page."""

from __future__ import annotations

from pathlib import Path

import pytest
from ui_helpers import Keys, page

from ui.auth import password_matches


@pytest.mark.parametrize("name", ["overview", "pipelines", "runs"])
def test_without_a_password_pages_render(three_steps: Path, name: str) -> None:
    at = page(name, pipeline="demo")
    assert not at.exception
    assert at.title[0].value == name.title()
    assert not at.text_input


@pytest.mark.parametrize("name", ["overview", "pipelines", "runs"])
def test_with_a_password_nothing_renders_until_it_is_given(
    three_steps: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_PASSWORD", "s3cret")
    at = page(name, pipeline="demo")
    assert not at.exception
    assert [t.value for t in at.title] == ["Pipeline orchestrator"]
    assert not at.table and not at.get("graphviz_chart")
    assert [b.key for b in at.button] == [Keys.LOGIN]
    at.text_input(key=Keys.PASSWORD).input("wrong")
    at.button(key=Keys.LOGIN).click().run()
    assert "Wrong password" in at.error[0].value
    assert [t.value for t in at.title] == ["Pipeline orchestrator"]
    at.text_input(key=Keys.PASSWORD).input("s3cret")
    at.button(key=Keys.LOGIN).click().run()
    assert not at.exception
    assert at.title[0].value == name.title()
    assert at.query_params.get("pipeline") == "demo", "the link survives the login"


def test_password_from_streamlit_secrets(three_steps: Path) -> None:
    from streamlit.testing.v1 import AppTest
    from ui_helpers import DASHBOARD

    at = AppTest.from_file(str(DASHBOARD), default_timeout=30)
    at.secrets["ORCHESTRATOR_PASSWORD"] = "from-secrets"
    at.run()
    assert [t.value for t in at.title] == ["Pipeline orchestrator"]
    at.text_input(key=Keys.PASSWORD).input("from-secrets")
    at.button(key=Keys.LOGIN).click().run()
    assert at.title[0].value == "Overview"


def test_password_comparison() -> None:
    assert password_matches("abc", "abc")
    assert not password_matches("abc", "abd")
    assert not password_matches("", "abc")
