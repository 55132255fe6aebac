"""Helpers for the Mixpanel pipeline tests (a uniquely named module, imported by the tests)."""

from __future__ import annotations

import gzip
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[2]
STEPS_DIR = ROOT / "pipelines" / "mixpanel_pipeline"
STEP_SCRIPTS = (
    "01_download_update_data.py",
    "02_ingest_data.py",
    "03_set_abi_attribution.py",
    "04_check_broken_users.py",
    "05_count_user_events.py",
    "06_assign_economic_tier.py",
)
END = date(2024, 6, 30)


def ts(day: date, hour: int = 12, minute: int = 0, second: int = 0) -> int:
    """Epoch seconds of a UTC time on `day`."""
    return int(datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=UTC).timestamp())


def event_line(
    event: str, distinct_id: object, time: int, insert_id: str, **props: object
) -> bytes:
    """One raw export line, as Mixpanel writes it."""
    properties = {"time": time, "distinct_id": distinct_id, "$insert_id": insert_id, **props}
    return json.dumps({"event": event, "properties": properties}).encode()


def write_gz(path: Path, lines: list[bytes]) -> Path:
    """Write a gzip JSON-lines file (a hand-made cache file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as handle:
        for line in lines:
            handle.write(line + b"\n")
    return path


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A clean environment for the pipeline: no MIXPANEL_* from outside, paths under tmp."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIXPANEL_")}
    env.update(
        MIXPANEL_DB_PATH=str(tmp_path / "db" / "mixpanel.db"),
        MIXPANEL_CACHE_DIR=str(tmp_path / "cache"),
        MIXPANEL_END_DATE=END.isoformat(),
        MIXPANEL_WINDOW_DAYS="14",
        MIXPANEL_DEMO_USERS="200",
    )
    env.update(extra)
    return env


@dataclass
class StepRun:
    """A finished step subprocess."""

    code: int
    stdout: str
    stderr: str


def run_step(script: str, cwd: Path, env: dict[str, str], timeout: float = 120) -> StepRun:
    """Run one step script as the orchestrator would: a subprocess with cwd and env."""
    done = subprocess.run(
        [sys.executable, str(STEPS_DIR / script)],
        cwd=cwd,
        env={**env, "PIPELINE_ID": "mixpanel_pipeline", "PIPELINE_STEP": script},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return StepRun(done.returncode, done.stdout, done.stderr)


def table(db_path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Rows of a query on a database file."""
    with sqlite3.connect(db_path) as conn:
        return conn.execute(sql, params).fetchall()


HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    b"<body><h1>Bad Gateway</h1><p>The proxy could not reach the upstream.</p></body>\n</html>\n"
)
# What Mixpanel answers to an expired or wrong credential on the Query and Export APIs.
AUTH_400 = b'{"request": "/api/2.0/export", "error": "Unable to authenticate request"}'
LAST_SEEN_WHERE = re.compile(r'^properties\["\$last_seen"\] >= "(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)"$')


@dataclass
class FakeMixpanel:
    """A Mixpanel-like server on 127.0.0.1: scripted answers, recorded requests.

    The export answers like the real one: lines of the days asked for, gzip when asked, a 400
    for a to_date after today in the project's time zone; for a project made before 2023
    (`zone`), `time` is the project's wall clock and days are its local days; each event is
    named by the canonical id *at export time* (`merge` folds an id into another, as Mixpanel's
    ID merge does). Engage pages with a session per query, `total` on page 0 only, a `where`
    on `$last_seen`, and sessions that can expire.
    """

    events: list[bytes] = field(default_factory=list)
    profiles: list[dict] = field(default_factory=list)
    page_size: int = 3
    # Scripted answers for the next export requests: "429" (with Retry-After), "429-bare",
    # "500", "cut" (short of its Content-Length), "badgzip", "members" (two gzip members),
    # "401", "403", "auth400", "terminated" (a `terminated early` trailer), "trailer" (another
    # non-JSON last line), "html" (an HTML page, HTTP 200), "nolength" (no Content-Length,
    # closed in the middle of a line), "errorjson" (HTTP 200 with a JSON error object),
    # "damaged-last" (a whole body whose last record is damaged, the same on every try),
    # "split" (a record split over two lines, else a good body), "hang" (never answers),
    # "trickle" (a whole answer, a byte every 0.2 s; for engage too).
    export_faults: list[str] = field(default_factory=list)
    # For engage: "429", "429-bare", "500", "401", "auth400", "lots" (page_size "lots"),
    # "noresults" (no results list), "badsession" (a session_id that is a number), "hang",
    # "nondict" (a result that is no object), "nosession" (a full page without a session_id),
    # "wrongpage" (an answer for another page than asked), "shortpage" (one profile short).
    engage_faults: list[str] = field(default_factory=list)
    retry_after: str = "7"
    zone: str | None = None
    aliases: dict[str, str] = field(default_factory=dict)
    requests: list[dict] = field(default_factory=list)
    sessions: dict[str, list[dict]] = field(default_factory=dict)
    url: str = ""
    omit_total: bool = (
        False  # Engage answers without `total` (it is not documented as always there)
    )
    _session_counter: int = 0

    def merge(self, alias: str, canonical: str) -> None:
        """From now on, export `alias`'s events under `canonical` (ID merge)."""
        self.aliases[alias] = canonical

    def expire_sessions(self) -> None:
        """Every Engage session so far stops being served."""
        self.sessions.clear()

    def _local(self, utc: int) -> int:
        if not self.zone:
            return utc
        offset = datetime.fromtimestamp(utc, UTC).astimezone(ZoneInfo(self.zone)).utcoffset()
        return utc + int(offset.total_seconds())

    def today(self) -> str:
        """Today in the project's time zone (UTC for projects made since 2023)."""
        return datetime.now(ZoneInfo(self.zone) if self.zone else UTC).date().isoformat()

    def exported(self, line: bytes) -> tuple[str | None, bytes]:
        """(the line's day as the export reads it, the line as the export sends it)."""
        try:
            record = json.loads(line)
            props = record["properties"]
            value = props["time"]
            in_ms = value >= 100_000_000_000
            seconds = int(value // 1000 if in_ms else value)
        except (ValueError, KeyError, TypeError):
            return None, line
        local = self._local(seconds)
        day = datetime.fromtimestamp(local, UTC).date().isoformat()
        changed = False
        if local != seconds:
            props["time"] = value + (local - seconds) * (1000 if in_ms else 1)
            changed = True
        canonical = self.aliases.get(str(props.get("distinct_id")))
        if canonical is not None:
            props["distinct_id"] = canonical
            changed = True
        return day, (json.dumps(record).encode() if changed else line)

    def export_body(self, from_date: str, to_date: str) -> bytes:
        """The lines whose day lies in the range (like the real export), one per line."""
        out = []
        for line in self.events:
            day, sent = self.exported(line)
            if from_date <= (day or from_date) <= to_date:
                out.append(sent + b"\n")
        return b"".join(out)

    def engage_answer(self, form: dict[str, str]) -> tuple[int, dict]:
        """The Engage answer to one request: status and JSON body."""
        page = int(form.get("page", "0"))
        session = form.get("session_id")
        if page > 0:
            if not session:
                return 400, {"error": "session_id is required when page is above 0"}
            if session not in self.sessions:
                return 400, {"error": f"no query found for session_id {session}"}
            matched = self.sessions[session]
        else:
            where = form.get("where")
            matched = self.profiles
            if where:
                found = LAST_SEEN_WHERE.match(where)
                if not found:
                    return 400, {"error": f"invalid where expression: {where}"}
                matched = [
                    p
                    for p in self.profiles
                    if str(p.get("$properties", {}).get("$last_seen", "")) >= found.group(1)
                ]
            self._session_counter += 1
            session = f"{1700000000 + self._session_counter}-SESS{self._session_counter:04d}"
            self.sessions[session] = list(matched)
        chunk = matched[page * self.page_size : (page + 1) * self.page_size]
        answer: dict = {
            "page": page,
            "page_size": self.page_size,
            "session_id": session,
            "status": "ok",
            "results": chunk,
        }
        if page == 0 and not self.omit_total:
            answer["total"] = len(matched)
        return 200, answer


def _handler(fake: FakeMixpanel) -> type[BaseHTTPRequestHandler]:
    from urllib.parse import parse_qs, urlparse

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _record(self, form: dict[str, list[str]]) -> dict:
            parsed = urlparse(self.path)
            request = {
                "method": self.command,
                "path": parsed.path,
                "query": {k: v[0] for k, v in parse_qs(parsed.query).items()},
                "form": {k: v[0] for k, v in form.items()},
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }
            fake.requests.append(request)
            return request

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if "Content-Length" not in (headers or {}):
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _gzip_if_asked(self, body: bytes, request: dict) -> None:
            if "gzip" in request["headers"].get("accept-encoding", ""):
                self._send(200, gzip.compress(body), {"Content-Encoding": "gzip"})
            else:
                self._send(200, body)

        def _fault(self, fault: str, body: bytes, request: dict) -> bool:
            if fault == "429":
                self._send(429, b'{"error": "rate limited"}', {"Retry-After": fake.retry_after})
            elif fault == "429-bare":
                self._send(
                    429,
                    b'{"error": "Query rate limit exceeded for project_id: 12345. 0/5 queries '
                    b'running concurrently and 61/60 queries running in the last hour."}',
                )
            elif fault == "500":
                self._send(500, b"internal error")
            elif fault in ("401", "403"):
                self._send(int(fault), b'{"error": "Invalid credentials", "status": "error"}')
            elif fault == "auth400":
                self._send(400, AUTH_400, {"Content-Type": "application/json"})
            elif fault == "cut":
                compressed = gzip.compress(body)
                self.send_response(200)
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(compressed) + 1000))
                self.end_headers()
                self.wfile.write(compressed[: len(compressed) // 2])
                self.wfile.flush()
                self.close_connection = True
            elif fault == "members":
                # A body of two gzip members, as concatenating two gzip streams gives.
                half = body.count(b"\n") // 2
                lines = body.split(b"\n")
                first, second = b"\n".join(lines[:half]) + b"\n", b"\n".join(lines[half:])
                compressed = gzip.compress(first) + gzip.compress(second)
                self._send(200, compressed, {"Content-Encoding": "gzip"})
            elif fault == "badgzip":
                # A whole, well-framed body whose gzip stream stops half-way.
                compressed = gzip.compress(body)[:-12]
                self._send(200, compressed, {"Content-Encoding": "gzip"})
            elif fault == "terminated":
                lines = body.split(b"\n")
                kept = b"\n".join(lines[: len(lines) // 2]) + b"\n" if len(lines) > 2 else b""
                self._gzip_if_asked(kept + b"terminated early\n", request)
            elif fault == "trailer":
                self._gzip_if_asked(body + b"[export stopped: internal error]\n", request)
            elif fault == "damaged-last":
                # A whole body whose last record Mixpanel holds damaged (the same every time).
                damaged = b'{"event": "app_open", "properties": {"time": 17196\n'
                self._gzip_if_asked(body + damaged, request)
            elif fault == "html":
                self._send(200, HTML_PAGE, {"Content-Type": "text/html; charset=utf-8"})
            elif fault == "errorjson":
                self._gzip_if_asked(b'{"error": "export failed, try again later"}\n', request)
            elif fault == "nolength":
                # HTTP/1.0-style: no Content-Length, the end of the body is the closed
                # connection, which comes in the middle of a line.
                self.send_response(200)
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body[: max(1, len(body) // 2 + 7)])
                self.wfile.flush()
                self.close_connection = True
            elif fault == "split":
                # The first record's line broken in the middle of its $insert_id.
                lines = body.split(b"\n")
                target = next((i for i, line in enumerate(lines) if b'"$insert_id"' in line), None)
                if target is not None:
                    line = lines[target]
                    cut = line.index(b'"$insert_id"') + len(b'"$insert_id": "') + 4
                    lines[target] = line[:cut] + b"\n" + line[cut:]
                self._gzip_if_asked(b"\n".join(lines), request)
            elif fault == "hang":
                time.sleep(60)
                self.close_connection = True
            elif fault == "trickle":  # a whole answer, sent a byte every 0.2 s
                payload = body or b'{"page": 0, "page_size": 1000, "results": []}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    for n in range(len(payload)):
                        self.wfile.write(payload[n : n + 1])
                        self.wfile.flush()
                        time.sleep(0.2)
                except OSError:
                    pass  # the client gave up
                self.close_connection = True
            else:
                return False
            return True

        def do_GET(self) -> None:
            request = self._record({})
            if request["path"].endswith("/loop"):
                self.send_response(302)
                self.send_header("Location", self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            query = request["query"]
            from_date, to_date = query.get("from_date", ""), query.get("to_date", "")
            if to_date > fake.today():
                self._send(400, b'{"error": "to_date cannot be later than today"}')
                return
            body = fake.export_body(from_date, to_date)
            if fake.export_faults and self._fault(fake.export_faults.pop(0), body, request):
                return
            self._gzip_if_asked(body, request)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = parse_qs(self.rfile.read(length).decode())
            request = self._record(form)
            if request["path"].endswith("/loop"):
                self.send_response(307)
                self.send_header("Location", self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if fake.engage_faults:
                fault = fake.engage_faults.pop(0)
                if fault == "lots":
                    self._send(200, b'{"page": 0, "page_size": "lots", "results": []}')
                    return
                if fault == "noresults":
                    self._send(200, b'{"page": 0, "page_size": 1000, "status": "ok"}')
                    return
                if fault == "badsession":
                    body = b'{"page": 0, "page_size": 1, "session_id": 17, "results": [{}]}'
                    self._send(200, body)
                    return
                if fault in ("nondict", "nosession", "wrongpage", "shortpage"):
                    status, answer = fake.engage_answer(request["form"])
                    if fault == "shortpage":  # a page one profile short of page_size
                        answer["results"] = answer["results"][:-1]
                    elif fault == "nondict":
                        answer["results"][1:2] = ["a profile that is not an object"]
                    elif fault == "nosession":
                        answer.pop("session_id")
                    else:
                        answer["page"] = answer["page"] + 5
                    self._send(status, json.dumps(answer).encode())
                    return
                if self._fault(fault, b"", request):
                    return
            status, answer = fake.engage_answer(request["form"])
            self._send(status, json.dumps(answer).encode(), {"Content-Type": "application/json"})

    return Handler


def start_fake_server() -> tuple[FakeMixpanel, ThreadingHTTPServer, threading.Thread]:
    """Start a FakeMixpanel on a free port of 127.0.0.1."""
    fake = FakeMixpanel()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    return fake, server, thread
