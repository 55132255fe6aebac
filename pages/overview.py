"""Overview page (`/`): pipelines, what runs now, latest failures and the last runs."""

from ui import overview_page
from ui.entry import ensure_navigation

ensure_navigation()
overview_page.render()
