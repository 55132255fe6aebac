"""A page file run on its own, as Streamlit does with a `pages/` folder before any script
has called `st.navigation`, still puts the password gate and the sidebar in front of itself."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from ui_helpers import APP_TIMEOUT, ROOT, Keys


@pytest.mark.parametrize("name", ["overview", "pipelines", "runs", "tiers"])
def test_a_page_run_on_its_own_asks_for_the_password(
    three_steps: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_PASSWORD", "s3cret")
    at = AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=APP_TIMEOUT)
    at.run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Pipeline orchestrator"]
    assert [b.key for b in at.button] == [Keys.LOGIN]
    assert not at.table and not at.get("graphviz_chart")
    at.text_input(key=Keys.PASSWORD).input("s3cret")
    at.button(key=Keys.LOGIN).click().run()
    assert not at.exception
    assert at.title[0].value != "Pipeline orchestrator"
    assert "Pipelines folder" in at.sidebar.caption[0].value
