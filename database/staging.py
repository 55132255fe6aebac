"""Parse cache day files into a scratch SQLite file (runs in worker processes during ingest).

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
import sqlite3
import zlib
from pathlib import Path

import orjson

from database.event_format import event_seconds, utc_day

QUARANTINE_LINE_CHARS = 2000

SCHEMA = [
    # One row per non-blank line; rejected lines carry a reason and their text.
    """CREATE TABLE parsed (source_day TEXT, line_number INTEGER, reason TEXT, insert_id TEXT,
        event TEXT, distinct_id TEXT, time INTEGER, product_id TEXT, revenue REAL,
        properties TEXT, event_date TEXT, raw TEXT)""",
    """CREATE TABLE day_summary (source_day TEXT PRIMARY KEY, first_rowid INTEGER,
        last_rowid INTEGER, lines INTEGER, unique_events INTEGER, quarantined INTEGER)""",
    """CREATE TABLE user_day (source_day TEXT, event_date TEXT, distinct_id TEXT,
        first_time INTEGER, last_time INTEGER, country TEXT)""",
]

INSERT_EVENT = (
    "INSERT INTO parsed (insert_id, event, distinct_id, time, product_id, revenue, properties, "
    "event_date, source_day) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_REJECT = "INSERT INTO parsed (source_day, line_number, reason, raw) VALUES (?, ?, ?, ?)"
INSERT_USER_DAY = "INSERT INTO user_day VALUES (?, ?, ?, ?, ?, ?)"


def _text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def parse_day(data: bytes, day: str) -> tuple[list[tuple], list[tuple], list[tuple], int, int]:
    """Parse one day file's decompressed bytes.

    Returns (event rows, rejects, user-day summaries, non-blank lines, unique event keys).
    """
    loads, dumps, decode_error = orjson.loads, orjson.dumps, orjson.JSONDecodeError
    rows: list[tuple] = []
    rejects: list[tuple] = []
    keys: set[tuple] = set()
    # (event_date, distinct_id) -> [first, last, country time, country]
    users: dict[tuple[str, str], list] = {}
    day_names: dict[int, str] = {}
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
        if type(props) is not dict or props.get("time") is None:
            rejects.append((number, "missing_time", line))
            continue
        seconds = event_seconds(props["time"])
        if seconds is None:
            rejects.append((number, "bad_time", line))
            continue
        if "distinct_id" not in props:
            rejects.append((number, "missing_distinct_id", line))
            continue
        distinct_id = props["distinct_id"]
        if type(distinct_id) is not str:
            distinct_id = _text(distinct_id) or ""
        insert_id = props.get("$insert_id")
        if type(insert_id) is not str or not insert_id:
            insert_id = _text(insert_id) or "sha1:" + hashlib.sha1(line).hexdigest()
        product = props.get("product_id")
        if product is not None and type(product) is not str:
            product = _text(product)
        revenue = props.get("revenue")
        if revenue is not None and type(revenue) is not float:
            revenue = _number(revenue)
        event_date = day_names.get(seconds // 86400)
        if event_date is None:
            event_date = day_names[seconds // 86400] = utc_day(seconds).isoformat()
        rows.append(
            (
                insert_id,
                event,
                distinct_id,
                seconds,
                product,
                revenue,
                dumps(props).decode(),
                event_date,
                day,
            )
        )
        keys.add((event, distinct_id, seconds, insert_id))
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
    user_days = [(day, d, i, s[0], s[1], s[3]) for (d, i), s in users.items()]
    return rows, rejects, user_days, lines, len(keys)


def open_scratch(path: Path) -> sqlite3.Connection:
    """A throw-away database: no journal, no fsync (a crash just means parsing again)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    for statement in SCHEMA:
        conn.execute(statement)
    return conn


def stage_days(out_path: str, files: list[tuple[str, str]]) -> str:
    """Parse each (source_day, gzip file path) into a new scratch database at `out_path`."""
    conn = open_scratch(Path(out_path))
    gc_was_enabled = gc.isenabled()
    try:
        conn.execute("BEGIN")
        for day, file_path in files:
            data = zlib.decompress(Path(file_path).read_bytes(), wbits=31)
            # Parsing builds many small objects that all stay alive; pausing the cyclic GC
            # saves its repeated full scans (about a third of the parse time).
            gc.disable()
            try:
                rows, rejects, user_days, lines, unique = parse_day(data, day)
            finally:
                if gc_was_enabled:
                    gc.enable()
            first = conn.execute("SELECT IFNULL(MAX(rowid), 0) + 1 FROM parsed").fetchone()[0]
            conn.executemany(INSERT_EVENT, rows)
            conn.executemany(
                INSERT_REJECT,
                [
                    (day, n, reason, raw[:QUARANTINE_LINE_CHARS].decode("utf-8", "replace"))
                    for n, reason, raw in rejects
                ],
            )
            conn.executemany(INSERT_USER_DAY, user_days)
            last = conn.execute("SELECT IFNULL(MAX(rowid), 0) FROM parsed").fetchone()[0]
            conn.execute(
                "INSERT INTO day_summary VALUES (?, ?, ?, ?, ?, ?)",
                (day, first, last, lines, unique, len(rejects)),
            )
        conn.execute("CREATE INDEX user_day_source ON user_day(source_day)")
        conn.execute("COMMIT")
    finally:
        conn.close()
    return out_path
