"""Helpers for the Mixpanel pipeline tests (a uniquely named module, imported by the tests)."""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

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


@dataclass
class FakeMixpanel:
    """A Mixpanel-like server on 127.0.0.1: scripted answers, recorded requests."""

    events: list[bytes] = field(default_factory=list)
    profiles: list[dict] = field(default_factory=list)
    page_size: int = 3
    # Scripted answers for the next export requests: "429", "500", "cut", "401", "badgzip",
    # "members" (a whole body in two gzip members).
    export_faults: list[str] = field(default_factory=list)
    engage_faults: list[str] = field(default_factory=list)
    retry_after: str = "7"
    utc_offset_hours: int = 0
    requests: list[dict] = field(default_factory=list)
    url: str = ""

    def export_body(self, from_date: str, to_date: str) -> bytes:
        """The lines whose day lies in the range (like the real export): the UTC day, or the
        day in the project's time zone when `utc_offset_hours` is set (projects before 2023)."""
        out = []
        shift = timedelta(hours=self.utc_offset_hours)
        for line in self.events:
            try:
                when = json.loads(line)["properties"]["time"]
                day = (datetime.fromtimestamp(when, UTC) + shift).date().isoformat()
            except (ValueError, KeyError, TypeError):
                day = from_date
            if from_date <= day <= to_date:
                out.append(line + b"\n")
        return b"".join(out)


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

        def _fault(self, fault: str, body: bytes) -> bool:
            if fault == "429":
                self._send(429, b'{"error": "rate limited"}', {"Retry-After": fake.retry_after})
            elif fault == "500":
                self._send(500, b"internal error")
            elif fault == "401":
                self._send(401, b'{"error": "Invalid credentials"}')
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
            else:
                return False
            return True

        def do_GET(self) -> None:
            request = self._record({})
            body = fake.export_body(
                request["query"].get("from_date", ""), request["query"].get("to_date", "")
            )
            if fake.export_faults and self._fault(fake.export_faults.pop(0), body):
                return
            if "gzip" in request["headers"].get("accept-encoding", ""):
                self._send(200, gzip.compress(body), {"Content-Encoding": "gzip"})
            else:
                self._send(200, body)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = parse_qs(self.rfile.read(length).decode())
            request = self._record(form)
            if fake.engage_faults and self._fault(fake.engage_faults.pop(0), b""):
                return
            page = int(request["form"].get("page", "0"))
            chunk = fake.profiles[page * fake.page_size : (page + 1) * fake.page_size]
            answer = {
                "page": page,
                "page_size": fake.page_size,
                "session_id": "sess-1",
                "status": "ok",
                "total": len(fake.profiles),
                "results": chunk,
            }
            self._send(200, json.dumps(answer).encode(), {"Content-Type": "application/json"})

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
