"""Events and profiles in the shape real projects export, not the demo source's.

Modelled on Mixpanel's export docs, the public connectors' test fixtures and a RevenueCat to
Mixpanel export: SDK events carry `$insert_id`, `mp_processing_time_ms`, `$mp_api_endpoint`,
`$device_id`, `$user_id` and often `$distinct_id_before_identity`; an anonymous user is
`$device:<id>`; `time` comes in seconds or milliseconds; RevenueCat sends server-side events
under display names such as `RC Initial purchase`, with `product_id`, `revenue` (negative for
a refund) and `store`, and no currency; Engage profiles can have an integer `$distinct_id`.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def epoch(day: date, hour: int = 12, minute: int = 0, second: int = 0) -> int:
    """Epoch seconds of a UTC time on `day`."""
    return int(datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=UTC).timestamp())


def insert_id(*parts: object) -> str:
    """A 36-character id like the SDKs' (a UUID's shape), stable for the same parts."""
    h = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def sdk_event(
    name: str,
    when: int,
    *,
    device_id: str | None = None,
    user_id: str | None = None,
    before: str | None = None,
    in_ms: bool = False,
    **props: object,
) -> bytes:
    """An event as a mobile SDK sends it (Simplified ID Merge), as the export returns it
    before any merge: distinct_id is the user id once known, else `$device:<device id>`."""
    distinct_id = user_id if user_id else f"$device:{device_id}"
    properties: dict[str, object] = {
        "time": when * 1000 + 417 if in_ms else when,
        "distinct_id": distinct_id,
        "$insert_id": insert_id(name, distinct_id, when, props.get("screen_name")),
        "$mp_api_endpoint": "api-js.mixpanel.com",
        "$mp_api_timestamp_ms": when * 1000 + 1_204,
        "mp_processing_time_ms": when * 1000 + 2_871,
        "mp_lib": "swift",
        "$lib_version": "4.3.0",
        "$os": "iOS",
        "$os_version": "17.5.1",
        "$model": "iPhone15,3",
        "$app_version_string": "3.4.1",
        "$app_build_number": "341",
        "mp_country_code": "US",
        "$city": "Austin",
        "$region": "Texas",
    }
    if device_id:
        properties["$device_id"] = device_id
    if user_id:
        properties["$user_id"] = user_id
    if before:
        properties["$distinct_id_before_identity"] = before
    properties.update(props)
    return json.dumps({"event": name, "properties": properties}).encode()


def rc_event(
    name: str,
    when: int,
    app_user_id: str,
    product_id: str,
    revenue: float | None,
    *,
    store: str = "APP_STORE",
) -> bytes:
    """A RevenueCat event as its Mixpanel integration sends it (server side, no SDK fields)."""
    properties: dict[str, object] = {
        "time": when,
        "distinct_id": app_user_id,
        "$insert_id": insert_id("rc", name, app_user_id, when),
        "$mp_api_endpoint": "api.mixpanel.com",
        "mp_processing_time_ms": when * 1000 + 5_120,
        "product_id": product_id,
        "store": store,
        "offer_code": None,
    }
    if revenue is not None:
        properties["revenue"] = revenue
    return json.dumps({"event": name, "properties": properties}).encode()


def profile(distinct_id: object, last_seen: str, **props: object) -> dict:
    """An Engage profile: `$distinct_id` as Mixpanel returns it (an int for numeric ids)."""
    properties: dict[str, object] = {
        "$last_seen": last_seen,
        "$os": "iOS",
        "$ios_app_version": "3.4.1",
        "$country_code": "US",
        "$region": "Texas",
        "$city": "Austin",
        "$name": f"User {distinct_id}",
        "$email": f"user{distinct_id}@example.com",
    }
    properties.update(props)
    return {"$distinct_id": distinct_id, "$properties": properties}


def sample_lines(name: str) -> list[bytes]:
    """A hand-written fixture file's lines (tests/mixpanel/fixtures/<name>)."""
    return [line for line in (FIXTURES / name).read_bytes().split(b"\n") if line.strip()]
