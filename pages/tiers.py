"""Economic tiers page (`/tiers`): the Mixpanel pipeline's tier results, from its database."""

from ui import tiers_page
from ui.entry import ensure_navigation

ensure_navigation()
tiers_page.render()
