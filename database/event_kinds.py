"""Which lifecycle kind a product event is: RevenueCat's names, renamed ones, and a project's own.

RevenueCat sends subscription events to Mixpanel under names a project can change. The rules
know its default names (`rc_trial_started_event`, ...) and its display names (`RC Trial
started`, ...) without help: both come down to the same key once case, spaces and a trailing
`_event` are set aside. A project maps its own names in `event_names.yaml` beside
`tiers.yaml`:

    events:
      "Subscription Started": initial_purchase
      "Free Trial Began": trial_started

A product event (one with a product_id) whose name matches no kind is counted and shown, so a
wrong or missing mapping shows up instead of silently making every lifecycle invalid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from database.config_files import did_you_mean, read_yaml
from database.errors import ConfigError, brief

# RevenueCat's event types (its Mixpanel integration sends each under a name of its own).
KINDS = (
    "initial_purchase",
    "trial_started",
    "trial_converted",
    "trial_cancelled",
    "renewal",
    "cancellation",
    "uncancellation",
    "non_subscription_purchase",
    "subscription_paused",
    "expiration",
    "billing_issue",
    "product_change",
)
# A valid lifecycle starts with one of these ...
START_KINDS = ("trial_started", "initial_purchase", "non_subscription_purchase")
# ... and each of these needs an earlier trial start.
TRIAL_OUTCOME_KINDS = ("trial_converted", "trial_cancelled")
TRIAL_START_KIND = "trial_started"
FILE_NAME = "event_names.yaml"
MAX_NAME_CHARS = 255


def name_key(name: str) -> str:
    """`RC Trial started`, `rc_trial_started_event` and `RC_TRIAL_STARTED` -> `rc_trial_started`."""
    key = re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")
    return key.removesuffix("_event")


# RevenueCat's default names and display names, by their key.
BUILT_IN: dict[str, str] = {f"rc_{kind}": kind for kind in KINDS}
# Spellings RevenueCat's display names use beside the default ones.
BUILT_IN.update(
    {
        "rc_trial_canceled": "trial_cancelled",
        "rc_non_renewing_purchase": "non_subscription_purchase",
    }
)


@dataclass(frozen=True)
class EventNames:
    """A project's own names (exact) on top of the built-in ones."""

    own: dict[str, str] = field(default_factory=dict)
    path: Path | None = None

    def kind_of(self, name: str) -> tuple[str | None, str | None]:
        """(kind, what said so: `event_names.yaml` or `built-in`), or (None, None)."""
        if name in self.own:
            return self.own[name], self.path.name if self.path else FILE_NAME
        kind = BUILT_IN.get(name_key(name))
        return (kind, "built-in") if kind else (None, None)

    def rows(self) -> list[dict[str, str]]:
        """The mapping as the /tiers page lists it: the project's names, then the built-in."""
        own = [{"Event name": n, "Kind": k, "From": FILE_NAME} for n, k in sorted(self.own.items())]
        built_in = [
            {
                "Event name": f"rc_{kind}_event / RC {kind.replace('_', ' ').capitalize()}",
                "Kind": kind,
                "From": "built-in",
            }
            for kind in KINDS
        ]
        return own + built_in


def _hint(kind: object) -> str:
    return did_you_mean(kind, KINDS) if isinstance(kind, str) and len(kind) < 100 else ""


def load_event_names(path: Path | None, *, required: bool = False) -> EventNames:
    """Read a project's event_names.yaml; no file means only the built-in names, unless the
    file is `required` (named by MIXPANEL_EVENT_NAMES_PATH: a typo must not go unnoticed)."""
    if path is None or (not required and not Path(path).exists()):
        return EventNames(path=path)
    path = Path(path)
    data = read_yaml(path, if_missing="create it, or unset MIXPANEL_EVENT_NAMES_PATH")
    if data is None:
        return EventNames(path=path)
    if not isinstance(data, dict) or set(data) - {"events"}:
        extra = sorted(map(str, set(data) - {"events"})) if isinstance(data, dict) else []
        hint = f" (unknown key '{extra[0]}')" if extra else ""
        raise ConfigError(f"{path}: expected a mapping with one key 'events'{hint}")
    events = data.get("events") or {}
    if not isinstance(events, dict):
        raise ConfigError(
            f"{path}: 'events' must map event names to kinds, e.g. "
            '"Subscription Started": initial_purchase'
        )
    own: dict[str, str] = {}
    for name, kind in events.items():
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS:
            raise ConfigError(
                f"{path}: event name {brief(name)} must be text of 1 to {MAX_NAME_CHARS} characters"
            )
        if not isinstance(kind, str) or kind not in KINDS:
            raise ConfigError(
                f"{path}: event {brief(name)} maps to {brief(kind)}, which is no kind{_hint(kind)}; "
                f"use one of: {', '.join(KINDS)}"
            )
        own[name] = kind
    return EventNames(own=own, path=path)
