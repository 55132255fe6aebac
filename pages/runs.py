"""Runs page (`/runs?run=<id>`): the run history and one run's timeline and logs."""

from ui import runs_page
from ui.entry import ensure_navigation

ensure_navigation()
runs_page.render()
