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


def describe_change(held: dict | None, wanted: dict) -> str:
    """`X, not Y`, naming what differs when the two read the same (a zone, a host, a format)."""
    before, after = describe_source(held), describe_source(wanted)
    if before != after or not held:
        return f"{before}, not {after}"
    keys = sorted(
        k for k in {*held, *wanted} - {"secret_fingerprint"} if held.get(k) != wanted.get(k)
    )
    changes = "; ".join(f"{k} {held.get(k)} then, {wanted.get(k)} now" for k in keys)
    return f"{before} ({changes or 'another credential'})"


def _same_project(held: dict, wanted: dict) -> bool | None:
    """Whether two export sources are one project: two legacy secrets must be the same
    secret (a secret names its project, whatever project id is set beside it); else the
    project ids where both have one; None when it cannot be told."""
    prints = held.get("secret_fingerprint"), wanted.get("secret_fingerprint")
    if all(prints) and prints[0] != prints[1]:
        return False
    old, new = held.get("project_id"), wanted.get("project_id")
    if old and new:
        return old == new
    if all(prints):
        return True
    return None


def same_source(held: dict | None, wanted: dict | None) -> bool:
    """Whether data of `held` is data of `wanted`: the same demo, or the same project read the
    same way (host, time zone, format). A project id learned later (the legacy secret, then a
    project id beside it) is still the same project."""
    if not held or not wanted or held.get("source") != wanted.get("source"):
        return held == wanted
    if held.get("source") != "export":
        return held == wanted
    ignore = {"project_id", "secret_fingerprint"}
    rest = {k for k in {*held, *wanted} if k not in ignore}
    return all(held.get(k) == wanted.get(k) for k in rest) and bool(_same_project(held, wanted))


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
    same = _same_project(held, wanted)
    if same is None:
        return (
            "it cannot be told whether these settings name the same project: run once with "
            "MIXPANEL_PROJECT_ID set beside the legacy MIXPANEL_API_SECRET, so that the "
            "project id is recorded"
        )
    if not same:
        old, new = held.get("project_id"), wanted.get("project_id")
        if old and new and old != new:
            return f"these settings name another project, {new} (MIXPANEL_PROJECT_ID)"
        return (
            "these settings use another legacy project secret (MIXPANEL_API_SECRET), which "
            "names another project (for a new secret of the same project, switch on purpose)"
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
