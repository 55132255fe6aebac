"""Where data came from, in words, and when replacing it must be asked for on purpose.

A source record is `Settings.cache_source()`: demo data (of an END_DATE and user count), or a
Mixpanel project on a host. The cache (`source.json`) and the database (`mixpanel_meta`) each
keep the record of the data they hold.
"""

from __future__ import annotations


def describe_source(source: dict | None) -> str:
    """A source record (see `Settings.cache_source`) in words."""
    if not source:
        return "data of an unknown source"
    if source.get("source") == "demo":
        return f"demo data (END_DATE {source.get('end_date')}, {source.get('demo_users')} users)"
    project = source.get("project_id")
    host = str(source.get("export_url") or "").split("/")[2:3]
    where = f" ({host[0]})" if host else ""
    return f"Mixpanel project {project}{where}" if project else f"a Mixpanel project{where}"


def source_switch(held: dict | None, wanted: dict) -> str | None:
    """Why replacing data of the `held` source by the `wanted` one must be asked for on
    purpose (export data would give way to demo data or another project), else None."""
    if not held or held.get("source") != "export":
        return None
    if wanted.get("source") != "export":
        return (
            "these settings would replace it with demo data (no Mixpanel credentials are set: "
            "MIXPANEL_PROJECT_ID with MIXPANEL_SERVICE_ACCOUNT_USERNAME/_SECRET, or "
            "MIXPANEL_API_SECRET)"
        )
    old, new = held.get("project_id"), wanted.get("project_id")
    if old and new:
        if old != new:
            return f"these settings name another project, {new} (MIXPANEL_PROJECT_ID)"
        return None
    # A legacy project secret without a project id: only its fingerprint names the project.
    if held.get("secret_fingerprint") != wanted.get("secret_fingerprint"):
        if not old and not new:
            return "these settings use another legacy project secret (MIXPANEL_API_SECRET)"
        return (
            "it cannot be told whether these settings name the same project (set "
            "MIXPANEL_PROJECT_ID to the project of the data held)"
        )
    return None


def source_switch_error(held: dict | None, wanted: dict, holder: str) -> str | None:
    """The one-line refusal for `source_switch`, naming what holds the data; None if allowed."""
    why = source_switch(held, wanted)
    if why is None:
        return None
    return (
        f"{holder} holds data of {describe_source(held)}, and {why}; nothing was changed. "
        "Set the credentials of that project, or set MIXPANEL_ALLOW_SOURCE_CHANGE=1 to "
        "switch on purpose"
    )
