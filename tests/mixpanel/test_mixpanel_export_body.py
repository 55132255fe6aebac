"""Telling whole export bodies from cut ones, and project wall clocks from UTC (pure parts)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from real_format import sample_lines

from mixpanel_source.export_body import ExportRecords, IncompleteExport
from mixpanel_source.project_time import ProjectClock


def _body(lines: list[bytes]) -> list[bytes]:
    """A body as it arrives: every line with its newline, in chunks that cut lines apart."""
    data = b"".join(line + b"\n" for line in lines)
    return [data[i : i + 97] for i in range(0, len(data), 97)]


def _read(
    lines: list[bytes], tolerate: str | None = None
) -> tuple[list[tuple[bytes, dict | None]], ExportRecords]:
    body = ExportRecords(_body(lines), tolerate)
    return list(body), body


def _utc(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def test_a_real_days_export_reads_whole():
    lines = sample_lines("export_2024-06-29.jsonl")
    records, body = _read(lines)
    assert [line for line, _ in records] == lines
    assert all(record is not None for _, record in records)
    assert (body.stats.records, body.stats.joined, body.stats.bad_lines) == (len(lines), 0, 0)


def test_an_empty_body_is_a_whole_export_of_days_without_events():
    records, body = _read([])
    assert records == [] and body.stats.lines == 0
    assert _read([b"", b"  "])[0] == []


@pytest.mark.parametrize("trailer", [b"terminated early", b"Terminated early: internal error"])
def test_a_terminated_early_trailer_is_an_incomplete_export(trailer):
    lines = [*sample_lines("export_2024-06-29.jsonl")[:3], trailer]
    with pytest.raises(IncompleteExport, match="Mixpanel stopped the export early"):
        _read(lines)


def test_any_last_line_that_is_no_record_is_an_incomplete_export():
    lines = [*sample_lines("export_2024-06-29.jsonl")[:3], b"[export stopped]"]
    with pytest.raises(IncompleteExport, match="last line is not a complete record"):
        _read(lines)
    cut = sample_lines("export_2024-06-29.jsonl")[:2]
    cut.append(cut[-1][:40])
    with pytest.raises(IncompleteExport, match="the body was cut"):
        _read(cut)


@pytest.mark.parametrize(
    "lines",
    [
        [b"<!DOCTYPE html>", b"<html><body>502 Bad Gateway</body></html>"],
        [b'{"error": "export failed, try again later"}'],
        [b"not json at all"],
    ],
    ids=["html", "error-object", "garbage"],
)
def test_a_body_in_which_no_line_is_a_record_is_not_an_export(lines):
    with pytest.raises(IncompleteExport):
        _read(lines)


def test_a_record_split_over_two_lines_is_joined_back():
    first, second, third = sample_lines("export_2024-06-29.jsonl")[:3]
    cut = len(second) // 2
    records, body = _read([first, second[:cut], second[cut:], third])
    assert [line for line, _ in records] == [first, second, third]
    assert body.stats.joined == 1 and body.stats.bad_lines == 0


def test_a_raw_newline_inside_a_value_is_joined_too():
    record = {"event": "note", "properties": {"time": 1719640000, "distinct_id": "a", "text": "x"}}
    raw = json.dumps(record).encode().replace(b'"x"', b'"one\ntwo"')
    before, after = raw.split(b"\n")
    records, body = _read([before, after])
    assert body.stats.joined == 1
    assert records[0][1]["properties"]["text"] in ("onetwo", "one\ntwo")


def test_lines_that_still_do_not_parse_pass_on_as_bad_lines():
    good = sample_lines("export_2024-06-29.jsonl")[:4]
    lines = [good[0], b"{broken", b"also broken", b"]", good[1], b"<noise>", good[2], good[3]]
    records, body = _read(lines)
    assert [line for line, record in records if record is None] == [
        b"{broken",
        b"also broken",
        b"]",
        b"<noise>",
    ]
    assert [line for line, record in records if record is not None] == good
    assert body.stats.bad_lines == 4 and body.stats.joined == 0


def test_hostile_lines_are_bad_lines_or_a_clear_error_never_a_crash():
    good = sample_lines("export_2024-06-29.jsonl")[0]
    deep = b"[" * 5000 + b"]" * 5000  # beyond orjson's nesting limit
    binary = bytes(b for b in range(256) if b != 10)
    _records, body = _read([good, deep, binary, good])
    assert body.stats.bad_lines == 2 and body.stats.records == 2
    huge = b'{"event": "x", "properties": {"blob": "' + b"a" * (17 * 2**20) + b'"}}'
    with pytest.raises(IncompleteExport, match="longer than 16 MB"):
        _read([good, huge])


@pytest.mark.parametrize(
    ("zone", "local", "utc"),
    [
        ("America/Los_Angeles", "2024-06-30T23:30:00", "2024-07-01T06:30:00"),  # UTC-7
        ("America/Los_Angeles", "2024-01-15T23:30:00", "2024-01-16T07:30:00"),  # UTC-8
        ("Europe/Berlin", "2024-06-30T01:30:00", "2024-06-29T23:30:00"),  # UTC+2
        ("Europe/Berlin", "2024-03-31T01:59:59", "2024-03-31T00:59:59"),  # last second of CET
        ("Europe/Berlin", "2024-03-31T03:00:00", "2024-03-31T01:00:00"),  # first of CEST
        ("Europe/Berlin", "2024-03-31T02:30:00", "2024-03-31T01:30:00"),  # never shown: gap
        ("Asia/Kathmandu", "2024-06-30T05:45:00", "2024-06-30T00:00:00"),  # UTC+5:45
        ("UTC", "2024-06-30T12:00:00", "2024-06-30T12:00:00"),
    ],
)
def test_a_project_wall_clock_becomes_true_utc(zone, local, utc):
    assert ProjectClock(zone).to_utc(_utc(local)) == _utc(utc)


def test_the_hour_clocks_go_back_is_read_as_its_first_occurrence():
    """The same reading is always the same instant, so two copies of one event (Mixpanel
    counts it once) fold into one whatever their processing times."""
    clock = ProjectClock("Europe/Berlin")
    shown = _utc("2024-10-27T02:30:00")  # happens at 00:30 UTC and again at 01:30 UTC
    first, second = _utc("2024-10-27T00:30:00"), _utc("2024-10-27T01:30:00")
    assert clock.to_utc(shown) == first
    assert clock.to_local(first) == clock.to_local(second) == shown
    assert clock.to_utc(_utc("2024-10-27T03:00:00")) == _utc("2024-10-27T02:00:00")


def test_an_error_object_anywhere_in_a_body_makes_it_no_export():
    good = sample_lines("export_2024-06-29.jsonl")[:3]
    error = b'{"error": "export stopped: too many events"}'
    damaged = b'{"event": "x", "properties": {"ti'
    for lines in ([*good, error], [good[0], error, *good[1:]], [*good, error, damaged]):
        once = ExportRecords(_body(lines))
        with pytest.raises(IncompleteExport, match="Mixpanel reported an error inside the export"):
            list(once)
        with pytest.raises(IncompleteExport):  # not even when it comes back the same
            _read(lines, tolerate=once.signature)
