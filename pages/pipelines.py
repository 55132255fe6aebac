"""Pipelines page (`/pipelines?pipeline=<id>`): DAG, steps, runs and step actions."""

from ui import pipelines_page
from ui.entry import ensure_navigation

ensure_navigation()
pipelines_page.render()
