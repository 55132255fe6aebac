"""Fixtures for the dashboard tests: a real pipelines folder in a tmp dir, a fresh engine each test.

Helpers the tests import live in `ui_helpers.py` (a unique module name: the core tests have a
`conftest` of their own)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from ui_helpers import chain, write_pipeline


@pytest.fixture
def pdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty pipelines folder that the dashboard uses, with no password set."""
    folder = tmp_path / "pipelines"
    folder.mkdir()
    monkeypatch.setenv("ORCHESTRATOR_PIPELINES_DIR", str(folder))
    monkeypatch.delenv("ORCHESTRATOR_PASSWORD", raising=False)
    monkeypatch.chdir(tmp_path)
    st.cache_resource.clear()
    yield folder
    st.cache_resource.clear()  # shuts the engine down: no run outlives its test


@pytest.fixture
def three_steps(pdir: Path) -> Path:
    """A valid pipeline `demo`: extract -> transform -> load, each quick."""
    write_pipeline(pdir, "demo", chain("extract", "transform", "load"))
    return pdir
