"""Fixtures for the Mixpanel pipeline tests: real tmp folders, real SQLite, a real HTTP server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mixpanel_helpers import FakeMixpanel, base_env, start_fake_server

from database.settings import Settings, load_settings


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings like a step would read them, pointed into tmp_path."""

    def make(**extra: str) -> Settings:
        env = base_env(tmp_path, **extra)
        return load_settings({k: v for k, v in env.items() if k.startswith("MIXPANEL_")})

    return make


@pytest.fixture
def fake_mixpanel() -> Iterator[FakeMixpanel]:
    """A running fake Mixpanel on a free port; stopped after the test."""
    fake, server, thread = start_fake_server()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
