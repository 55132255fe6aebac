"""One user per person across Mixpanel's identity merges.

The export names each event by the canonical distinct_id *at export time*: once an anonymous
user (`$device:<id>`) identifies, Mixpanel exports their earlier events under the user id, but
day files cached before that keep the old id. Left alone, one person becomes two users, each
with half the events and revenue (and the anonymous half looks like a user without purchases).

The events say who is who:
- `$user_id` with `$device_id` D: `$device:D` (and D itself) is that user (Simplified ID Merge);
- `$distinct_id_before_identity` B on an event of distinct_id X: B is X;
- an `$identify` event: `$anon_distinct_id` (or `$anon_id`) is `$identified_id` (Original API).

The ingest keeps each link once (`mixpanel_identity_link`, with when it was first seen:
Mixpanel's merges are permanent, so a link stays), resolves them into one map
(`mixpanel_identity`: the earliest link of an alias wins, chains are followed) and applies it
to every stored row of the window, old days included: `distinct_id` becomes the canonical id,
and the exported one stays in `original_distinct_id` and in the event's properties.
Placeholder ids (`undefined`, `null`, ...) never take part. MIXPANEL_IDENTITY_MERGE=0 undoes it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from database.connection import transaction

# The ids step check_broken_users calls blank (after trimming, any case).
BLANK_IDS = ("", "undefined", "null", "none", "nil", "(null)")
DEVICE_PREFIX = "$device:"
_BLANK = frozenset(BLANK_IDS)


def _id(value: object) -> str | None:
    """An id property as text, or None when absent or a placeholder (`undefined`, and
    `$device:undefined` too: a device id that is a placeholder names nobody)."""
    if value is None or isinstance(value, bool | dict | list):
        return None
    text = value if isinstance(value, str) else str(value)
    core = text.removeprefix(DEVICE_PREFIX)
    return None if core.strip().lower() in _BLANK else text


def links_of(event: str, distinct_id: str, props: dict) -> list[tuple[str, str, str]]:
    """The (alias, canonical, via) pairs one event states."""
    found = []
    user, device = _id(props.get("$user_id")), _id(props.get("$device_id"))
    if user and device:
        for alias in (DEVICE_PREFIX + device, device):
            if alias != user:
                found.append((alias, user, "$device_id"))
    before, canonical = _id(props.get("$distinct_id_before_identity")), _id(distinct_id)
    if before and canonical and before != canonical:
        found.append((before, canonical, "$distinct_id_before_identity"))
    if event == "$identify":
        anon = _id(props.get("$anon_distinct_id")) or _id(props.get("$anon_id"))
        identified = _id(props.get("$identified_id"))
        if anon and identified and anon != identified:
            found.append((anon, identified, "$identify"))
    return found


def resolve(links: Iterable[tuple[str, str, int, str]]) -> dict[str, tuple[str, int, str]]:
    """alias -> (canonical, first time, via) from (alias, canonical, first time, via) links.

    An alias that links to several ids keeps its earliest link (Mixpanel merges a device into
    the first user it identifies as); chains a -> b -> c resolve to c, however long; the
    members of a cycle all resolve to the smallest id among them."""
    first: dict[str, tuple[int, str, str]] = {}
    for alias, canonical, when, via in links:
        best = first.get(alias)
        if best is None or (when, canonical) < (best[0], best[1]):
            first[alias] = (when, canonical, via)
    final: dict[str, str] = {}  # every id walked so far -> the id its chain ends in
    for start in first:
        path: list[str] = []
        on_path: dict[str, int] = {}
        current = start
        while current in first and current not in final and current not in on_path:
            on_path[current] = len(path)
            path.append(current)
            current = first[current][1]
        if current in final:
            end = final[current]
        elif current in on_path:  # a cycle: its members are one person
            end = min(path[on_path[current] :])
        else:
            end = current
        for node in path:
            final[node] = end
    return {
        alias: (final[alias], when, via)
        for alias, (when, _canonical, via) in first.items()
        if final[alias] != alias
    }


@dataclass
class MergeResult:
    """What applying the identity map did, for the report."""

    enabled: bool
    links: int = 0  # distinct (alias, canonical) links stated by the stored days
    aliases: int = 0  # ids in the map
    ids_merged: int = 0  # exported ids whose rows are stored under another id
    users_merged_into: int = 0  # canonical ids those rows now belong to
    rows_rekeyed: int = 0  # rows moved to their canonical id in this ingest
    rows_restored: int = 0  # rows given back their exported id (a link changed, or merge off)
    duplicates_dropped: int = 0  # rows that the merge made repeats of stored events

    def as_dict(self) -> dict[str, object]:
        """JSON-ready figures."""
        return dict(self.__dict__)


_RESTORE = {
    "fact_mixpanel_event": "UPDATE OR IGNORE fact_mixpanel_event",
    "mixpanel_user_day": "UPDATE mixpanel_user_day",
}


def _restore(conn: sqlite3.Connection, where: str) -> int:
    """Give rows merged under `where` (a condition on original_distinct_id) their own id."""
    restored = 0
    for table, update in _RESTORE.items():
        count = conn.execute(
            f"{update} SET distinct_id = original_distinct_id, original_distinct_id = NULL "
            f"WHERE original_distinct_id IS NOT NULL AND {where}"
        ).rowcount
        if table == "fact_mixpanel_event":
            restored = count
    return restored


def _stored_counts(conn: sqlite3.Connection, result: MergeResult) -> None:
    result.ids_merged, result.users_merged_into = conn.execute(
        "SELECT COUNT(DISTINCT original_distinct_id), COUNT(DISTINCT distinct_id) "
        "FROM fact_mixpanel_event WHERE original_distinct_id IS NOT NULL"
    ).fetchone()


def apply_identity_map(conn: sqlite3.Connection, *, enabled: bool = True) -> MergeResult:
    """Resolve the stored links and re-key every stored row to its canonical id (or, when
    not `enabled`, give every merged row back its exported id)."""
    result = MergeResult(enabled=enabled)
    with transaction(conn):
        if not enabled:
            result.rows_restored = _restore(conn, "1")
            conn.execute("DELETE FROM mixpanel_identity")
            return result
        links = conn.execute(
            "SELECT alias, canonical, first_time, via FROM mixpanel_identity_link"
        ).fetchall()
        result.links = len(links)
        new_map = resolve(links)
        old_map = dict(conn.execute("SELECT alias, canonical FROM mixpanel_identity"))
        changed = [a for a, c in old_map.items() if new_map.get(a, (None,))[0] != c]
        added = [a for a in new_map if old_map.get(a) != new_map[a][0]]
        conn.execute("DROP TABLE IF EXISTS temp._changed")
        conn.execute("CREATE TEMP TABLE _changed (alias TEXT PRIMARY KEY)")
        conn.executemany("INSERT INTO _changed VALUES (?)", ((a,) for a in changed))
        result.rows_restored = _restore(
            conn, "original_distinct_id IN (SELECT alias FROM _changed)"
        )
        conn.execute("DELETE FROM mixpanel_identity WHERE alias IN (SELECT alias FROM _changed)")
        conn.execute("DROP TABLE temp._changed")
        conn.executemany(
            "INSERT OR REPLACE INTO mixpanel_identity (alias, canonical, first_time, via) "
            "VALUES (?, ?, ?, ?)",
            ((a, *new_map[a]) for a in added),
        )
        result.aliases = len(new_map)
        if new_map:
            _rekey(conn, result)
        _stored_counts(conn, result)
    return result


def _rekey(conn: sqlite3.Connection, result: MergeResult) -> None:
    """Move rows still under an alias (new days, or old days of a new alias) to its canonical."""
    conn.execute("DROP TABLE IF EXISTS temp._days")
    conn.execute(
        "CREATE TEMP TABLE _days AS SELECT DISTINCT source_day FROM mixpanel_user_day "
        "WHERE original_distinct_id IS NULL "
        "AND distinct_id IN (SELECT alias FROM mixpanel_identity)"
    )
    # The rows to move, found in one pass over those days.
    conn.execute("DROP TABLE IF EXISTS temp._moves")
    conn.execute(
        "CREATE TEMP TABLE _moves AS SELECT e.rowid AS id, m.canonical AS canonical "
        "FROM fact_mixpanel_event e JOIN mixpanel_identity m ON m.alias = e.distinct_id "
        "WHERE e.source_day IN (SELECT source_day FROM _days) AND e.original_distinct_id IS NULL"
    )
    moves = conn.execute("SELECT COUNT(*) FROM _moves").fetchone()[0]
    result.rows_rekeyed = conn.execute(
        "UPDATE OR IGNORE fact_mixpanel_event SET original_distinct_id = distinct_id, "
        "distinct_id = t.canonical FROM _moves t WHERE fact_mixpanel_event.rowid = t.id"
    ).rowcount
    if result.rows_rekeyed < moves:
        # Rows the unique key kept under their alias repeat an event stored under the canonical.
        dropped: dict[str, int] = {}
        for (day,) in conn.execute(
            "DELETE FROM fact_mixpanel_event WHERE rowid IN (SELECT id FROM _moves) "
            "AND original_distinct_id IS NULL RETURNING source_day"
        ).fetchall():
            dropped[day] = dropped.get(day, 0) + 1
        result.duplicates_dropped = sum(dropped.values())
        conn.executemany(
            "UPDATE mixpanel_ingested_file SET merged_duplicates = merged_duplicates + ? "
            "WHERE file_key = ?",
            ((n, f"events/{day}") for day, n in dropped.items()),
        )
    conn.execute(
        "UPDATE mixpanel_user_day SET original_distinct_id = distinct_id, "
        "distinct_id = m.canonical FROM mixpanel_identity m "
        "WHERE mixpanel_user_day.source_day IN (SELECT source_day FROM _days) "
        "AND mixpanel_user_day.original_distinct_id IS NULL "
        "AND mixpanel_user_day.distinct_id = m.alias"
    )
    conn.execute("DROP TABLE temp._moves")
    conn.execute("DROP TABLE temp._days")
