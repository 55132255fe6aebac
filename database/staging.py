"""Parse cache day files into a scratch SQLite file (in worker processes, see parse_workers).

The main process then copies the rows in with one `INSERT ... SELECT` per day, so the only
per-row Python work (orjson parsing and binding) happens here, in parallel.
A line is quarantined, with its reason, when it is not JSON (`invalid_json`), not an object
(`not_an_object`), has no non-empty string `event` (`missing_event`), no `properties.time`
(`missing_time`), a non-numeric time (`bad_time`), or no `properties.distinct_id` key
(`missing_distinct_id`). Field rules: a JSON null distinct_id becomes ''; a missing
$insert_id becomes 'sha1:' + the SHA-1 of the line (Mixpanel cannot dedupe such events
either, so only exact repeats fold); time in milliseconds is turned into seconds; a text
revenue counts when it parses as a number.
"""

from __future__ import annotations

import gc
import hashlib
import math
import sqlite3
import zlib
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import NamedTuple

import orjson

from database.connection import PAGE_SIZE
from database.errors import MissingDataError
from database.event_format import event_seconds, utc_day
from database.identity import links_of
from mixpanel_source import cache

QUARANTINE_LINE_CHARS = 2000

SCHEMA = [
    # One row per stored event or rejected line of the batch; rejects carry a reason and text.
    """CREATE TABLE parsed (line_number INTEGER, reason TEXT, insert_id TEXT, event TEXT,
        distinct_id TEXT, time INTEGER, product_id TEXT, revenue REAL, properties TEXT,
        event_date TEXT, raw TEXT)""",
    # Each day's rows are the rowid ranges first..last of `parsed` and `user_day`.
    """CREATE TABLE day_summary (source_day TEXT PRIMARY KEY, first_rowid INTEGER,
        last_rowid INTEGER, first_user_day INTEGER, last_user_day INTEGER, lines INTEGER,
        unique_events INTEGER, quarantined INTEGER)""",
    """CREATE TABLE user_day (event_date TEXT, distinct_id TEXT, first_time INTEGER,
        last_time INTEGER, country TEXT)""",
    # What the batch's events say about identities (see database.identity): each link once,
    # with the time and day it was first seen in the batch.
    """CREATE TABLE link (alias TEXT, canonical TEXT, first_time INTEGER, via TEXT,
        source_day TEXT)""",
]

# Bound values cost CPU per row in the sqlite3 module, and a None costs several times a
# string (it takes the adapter lookup path), so plain events omit the NULL product and revenue
# and nothing binds the day: the copy into the database supplies `source_day`.
EVENT_COLUMNS = "parsed (insert_id, event, distinct_id, time, properties, event_date)"
PRICED_COLUMNS = (
    "parsed (insert_id, event, distinct_id, time, properties, event_date, product_id, revenue)"
)
REJECT_COLUMNS = "parsed (line_number, reason, raw)"
USER_DAY_COLUMNS = "user_day (event_date, distinct_id, first_time, last_time, country)"
LINK_COLUMNS = "link (alias, canonical, first_time, via, source_day)"
# Event properties that say who an event's user was before or besides its distinct_id.
IDENTITY_KEYS = ("$user_id", "$distinct_id_before_identity")
# Rows per INSERT statement: the sqlite3 module's fixed cost per executed statement is paid
# once per this many rows (about a quarter of the insert time at 100).
ROWS_PER_STATEMENT = 100
# Whole epoch seconds below this need no conversion (see event_format.event_seconds).
_PLAIN_SECONDS = 100_000_000_000
_MISSING = object()


class ParsedDay(NamedTuple):
    """One day file, parsed: rows to store (first line of each key only), rejects, figures."""

    # (insert_id, event, distinct_id, time, properties, event_date), product and revenue None
    plain: list[tuple]
    # the same columns plus product_id and revenue
    priced: list[tuple]
    # (line number, reason, raw line)
    rejects: list[tuple]
    # (event_date, distinct_id, first time, last time, latest country)
    user_days: list[tuple]
    lines: int
    unique_events: int
    # (alias, canonical, first time, via): the identity links the day's events state
    links: list[tuple]


def _text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def _number(value: object) -> float | None:
    """A revenue as a finite number, or None ("Infinity", "nan" and huge ints count as none)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value) if isinstance(value, int | float | str) else None
    except (ValueError, OverflowError):
        return None
    return number if number is not None and math.isfinite(number) else None


def parse_day(data: bytes, day: str, said_links: dict | None = None) -> ParsedDay:
    """Parse one day file's decompressed bytes (the day names `source_day`, for dates only).

    `said_links` remembers the identity links of each combination of ids across the days
    of a batch (a user's ids repeat from day to day)."""
    said_links = {} if said_links is None else said_links
    loads, dumps, decode_error = orjson.loads, orjson.dumps, orjson.JSONDecodeError
    plain: list[tuple] = []
    priced: list[tuple] = []
    rejects: list[tuple] = []
    keys: set[tuple] = set()
    # (event_date, distinct_id) -> [first, last, country time, country]
    users: dict[tuple[str, str], list] = {}
    day_names: dict[int, str] = {}
    # (alias, canonical, via) -> first time; (distinct_id, $user_id, $device_id,
    # $distinct_id_before_identity) -> first time
    links: dict[tuple[str, str, str], int] = {}
    said: dict[tuple, int] = {}
    lines = 0
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line or line.isspace():
            continue
        lines += 1
        try:
            obj = loads(line)
        except decode_error:
            rejects.append((number, "invalid_json", line))
            continue
        if type(obj) is not dict:
            rejects.append((number, "not_an_object", line))
            continue
        event = obj.get("event")
        if type(event) is not str or not event:
            rejects.append((number, "missing_event", line))
            continue
        props = obj.get("properties")
        if type(props) is not dict:
            rejects.append((number, "missing_time", line))
            continue
        seconds = props.get("time")
        if type(seconds) is not int or not 0 <= seconds < _PLAIN_SECONDS:
            if seconds is None:
                rejects.append((number, "missing_time", line))
                continue
            seconds = event_seconds(seconds)
            if seconds is None:
                rejects.append((number, "bad_time", line))
                continue
        distinct_id = props.get("distinct_id", _MISSING)
        if type(distinct_id) is not str:
            if distinct_id is _MISSING:
                rejects.append((number, "missing_distinct_id", line))
                continue
            distinct_id = _text(distinct_id) or ""
        insert_id = props.get("$insert_id")
        if type(insert_id) is not str or not insert_id:
            insert_id = _text(insert_id) or "sha1:" + hashlib.sha1(line).hexdigest()
        if event == "$identify" or IDENTITY_KEYS[0] in props or IDENTITY_KEYS[1] in props:
            if event == "$identify":  # rare, and with ids of its own: its links now
                for link in links_of(event, distinct_id, props):
                    if seconds < links.get(link, seconds + 1):
                        links[link] = seconds
            else:
                # A user's events repeat the same ids: their links are read once per day
                # and combination of ids, after the loop, with the combination's first time.
                ids = (
                    distinct_id,
                    props.get("$user_id"),
                    props.get("$device_id"),
                    props.get("$distinct_id_before_identity"),
                )
                try:
                    if seconds < said.get(ids, seconds + 1):
                        said[ids] = seconds
                except TypeError:  # an id that is a list or an object: no link (links_of)
                    pass
        event_date = day_names.get(seconds // 86400)
        if event_date is None:
            event_date = day_names[seconds // 86400] = utc_day(seconds).isoformat()
        key = (event, distinct_id, seconds, insert_id)
        if key not in keys:
            # Only the first line of a key is stored, as the database's unique key would keep.
            keys.add(key)
            product = props.get("product_id")
            revenue = props.get("revenue")
            if product is None and revenue is None:
                plain.append(
                    (insert_id, event, distinct_id, seconds, dumps(props).decode(), event_date)
                )
            else:
                if product is not None and type(product) is not str:
                    product = _text(product)
                if revenue is not None and (
                    type(revenue) is not float or not math.isfinite(revenue)
                ):
                    revenue = _number(revenue)
                priced.append(
                    (
                        insert_id,
                        event,
                        distinct_id,
                        seconds,
                        dumps(props).decode(),
                        event_date,
                        product,
                        revenue,
                    )
                )
        country = props.get("mp_country_code")
        if country is not None and type(country) is not str:
            country = _text(country)
        if country is not None:
            country = country.strip() or None
        summary = users.get((event_date, distinct_id))
        if summary is None:
            users[(event_date, distinct_id)] = [
                seconds,
                seconds,
                seconds if country else None,
                country,
            ]
            continue
        if seconds < summary[0]:
            summary[0] = seconds
        if seconds > summary[1]:
            summary[1] = seconds
        if country and (summary[2] is None or seconds >= summary[2]):
            summary[2], summary[3] = seconds, country
    user_days = [(d, i, s[0], s[1], s[3]) for (d, i), s in users.items()]
    for ids, seconds in said.items():
        found = said_links.get(ids)
        if found is None:
            distinct_id, user, device, before = ids
            props = {"$user_id": user, "$device_id": device, "$distinct_id_before_identity": before}
            found = said_links[ids] = links_of("", distinct_id, props)
        for link in found:
            if seconds < links.get(link, seconds + 1):
                links[link] = seconds
    found = [(a, c, t, v) for (a, c, v), t in links.items()]
    return ParsedDay(plain, priced, rejects, user_days, lines, len(keys), found)


def _in_key_order(rows: list[tuple]) -> None:
    # Rows in distinct_id order make the copy's inserts into the events' unique index
    # (event, distinct_id, time, insert_id) sweep forwards through it, one sweep per event name,
    # instead of jumping around: a quarter less copy time, for a cheap sort on one text key.
    rows.sort(key=itemgetter(2))


def open_scratch(path: Path) -> sqlite3.Connection:
    """A throw-away database: no journal, no fsync (a crash just means parsing again)."""
    conn = sqlite3.connect(path, isolation_level=None)
    # The database's page size rather than 4 KB: fewer pages to write here and to read in the
    # copy (a few percent of each).
    conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    for statement in SCHEMA:
        conn.execute(statement)
    return conn


def insert_rows(conn: sqlite3.Connection, target: str, rows: list[tuple]) -> None:
    """Insert equal-width rows in their order into `target` ("table (columns)")."""
    if not rows:
        return
    one = "(" + ", ".join("?" * len(rows[0])) + ")"
    size = ROWS_PER_STATEMENT
    whole = len(rows) - len(rows) % size
    if whole:
        flat = chain.from_iterable
        conn.executemany(
            f"INSERT INTO {target} VALUES " + ", ".join([one] * size),
            (tuple(flat(rows[i : i + size])) for i in range(0, whole, size)),
        )
    conn.executemany(f"INSERT INTO {target} VALUES {one}", rows[whole:])


def _last_rowid(conn: sqlite3.Connection, table: str) -> int:
    return conn.execute(f"SELECT IFNULL(MAX(rowid), 0) FROM {table}").fetchone()[0]


def stage_days(out_path: str, files: list[tuple[str, str]]) -> str:
    """Parse each (source_day, gzip file path) into a new scratch database at `out_path`."""
    conn = open_scratch(Path(out_path))
    gc_was_enabled = gc.isenabled()
    # (alias, canonical) -> (first time, via, day): a link of many days is kept once
    links: dict[tuple[str, str], tuple[int, str, str]] = {}
    said_links: dict[tuple, list] = {}
    try:
        conn.execute("BEGIN")
        for day, file_path in files:
            try:
                data = cache.gunzip(Path(file_path).read_bytes())
            except zlib.error as exc:
                raise MissingDataError(
                    f"{file_path}: not a readable gzip file ({exc}); delete it and run step "
                    "download_update_data to fetch the day again"
                ) from None
            # Parsing builds many small objects that all stay alive; pausing the cyclic GC
            # saves its repeated full scans (about a third of the parse time).
            gc.disable()
            try:
                parsed = parse_day(data, day, said_links)
                _in_key_order(parsed.plain)
                _in_key_order(parsed.priced)
            finally:
                if gc_was_enabled:
                    gc.enable()
            first, first_user = _last_rowid(conn, "parsed") + 1, _last_rowid(conn, "user_day") + 1
            for alias, canonical, when, via in parsed.links:
                known = links.get((alias, canonical))
                if known is None or when < known[0]:
                    links[(alias, canonical)] = (when, via, day)
            insert_rows(conn, EVENT_COLUMNS, parsed.plain)
            insert_rows(conn, PRICED_COLUMNS, parsed.priced)
            insert_rows(
                conn,
                REJECT_COLUMNS,
                [
                    (n, why, raw[:QUARANTINE_LINE_CHARS].decode("utf-8", "replace"))
                    for n, why, raw in parsed.rejects
                ],
            )
            insert_rows(conn, USER_DAY_COLUMNS, parsed.user_days)
            conn.execute(
                "INSERT INTO day_summary VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    day,
                    first,
                    _last_rowid(conn, "parsed"),
                    first_user,
                    _last_rowid(conn, "user_day"),
                    parsed.lines,
                    parsed.unique_events,
                    len(parsed.rejects),
                ),
            )
        insert_rows(conn, LINK_COLUMNS, [(a, c, *rest) for (a, c), rest in links.items()])
        conn.execute("COMMIT")
    finally:
        conn.close()
    return out_path
