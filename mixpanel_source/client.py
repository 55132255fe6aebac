"""The HTTP client for Mixpanel's Raw Event Export and Engage (profiles) APIs.

Limits we stay under (Mixpanel docs, "Rate Limits"): the Raw Export API allows 60 queries per
hour, 3 per second and 100 concurrent; the Query API (engage) 60 per hour and 5 concurrent.
We send one request at a time, pace them under both the per-second and the per-hour limits,
retry 429 (honouring Retry-After) and 5xx with backoff, and stop at once on 401/403.
`sleep` and `clock` are parameters so tests can run the retry paths without waiting.
"""

from __future__ import annotations

import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

import httpx
import orjson

from database.errors import CredentialsError, DownloadError, SettingsError
from database.settings import Settings

T = TypeVar("T")
MAX_ATTEMPTS = 5
BACKOFF_BASE_SECONDS = 2.0
USER_AGENT = "mixpanel-pipeline/1.0 (file-first orchestrator)"


class RateLimiter:
    """Spaces requests to stay under `per_second` and `per_hour`, sleeping when needed."""

    def __init__(
        self,
        per_second: float,
        per_hour: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        log: Callable[[str], None] = print,
    ) -> None:
        self.min_gap = 1.0 / per_second
        self.per_hour = per_hour
        self.clock = clock
        self.sleep = sleep
        self.log = log
        self.sent: deque[float] = deque()

    def wait_turn(self) -> None:
        """Block until one more request fits in both limits, then count it."""
        now = self.clock()
        while self.sent and now - self.sent[0] >= 3600:
            self.sent.popleft()
        wait = 0.0
        if len(self.sent) >= self.per_hour:
            wait = 3600 - (now - self.sent[0])
            self.log(f"waiting {wait:.0f}s to stay under Mixpanel's {self.per_hour} queries/hour")
        if self.sent:
            wait = max(wait, self.min_gap - (now - self.sent[-1]))
        if wait > 0:
            self.sleep(wait)
        self.sent.append(self.clock())


class _Retryable(Exception):
    """A failure worth another attempt; `wait` is the server's requested delay, if any."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class MixpanelClient:
    """One-request-at-a-time client with pacing, retries and atomic-friendly streaming."""

    def __init__(
        self,
        settings: Settings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        log: Callable[[str], None] = print,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        auth = settings.auth
        if auth is None:
            raise SettingsError(
                "no Mixpanel credentials: set MIXPANEL_SERVICE_ACCOUNT_USERNAME and "
                "MIXPANEL_SERVICE_ACCOUNT_SECRET (or MIXPANEL_API_SECRET)"
            )
        self.settings = settings
        self.sleep = sleep
        self.log = log
        self.max_attempts = max_attempts
        self.requests = 0
        self.export_limiter = RateLimiter(3, 60, clock=clock, sleep=sleep, log=log)
        self.engage_limiter = RateLimiter(3, 60, clock=clock, sleep=sleep, log=log)
        self.http = httpx.Client(
            auth=httpx.BasicAuth(*auth),
            # Exports of many days can take minutes before the first byte arrives.
            timeout=httpx.Timeout(connect=15.0, read=600.0, write=60.0, pool=15.0),
            headers={"User-Agent": USER_AGENT},
            follow_redirects=True,
        )

    def close(self) -> None:
        """Release the connection pool."""
        self.http.close()

    def __enter__(self) -> MixpanelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _params(self) -> dict[str, str]:
        return {"project_id": self.settings.project_id} if self.settings.project_id else {}

    def _with_retries(self, what: str, attempt_once: Callable[[], T]) -> T:
        last = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return attempt_once()
            except _Retryable as exc:
                last = str(exc)
                if attempt == self.max_attempts:
                    break
                backoff = BACKOFF_BASE_SECONDS * 2 ** (attempt - 1)
                wait = min(
                    exc.wait if exc.wait is not None else backoff, self.settings.max_retry_wait
                )
                self.log(
                    f"  {what}: {last}; retry {attempt}/{self.max_attempts - 1} in {wait:.1f}s"
                )
                self.sleep(wait)
        raise DownloadError(f"{what} failed after {self.max_attempts} attempts: {last}")

    def _check_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if status in (401, 403):
            raise CredentialsError(
                f"Mixpanel rejected the credentials (HTTP {status} from {response.url.host}): "
                "check MIXPANEL_SERVICE_ACCOUNT_USERNAME/MIXPANEL_SERVICE_ACCOUNT_SECRET "
                "(or MIXPANEL_API_SECRET), MIXPANEL_PROJECT_ID, and the EU/US host"
            )
        if status == 429:
            raise _Retryable(
                "HTTP 429 rate limited", _retry_after(response.headers.get("Retry-After"))
            )
        if status >= 500:
            raise _Retryable(f"HTTP {status} server error")
        if status != 200:
            body = response.read()[:300].decode("utf-8", "replace").strip()
            raise DownloadError(f"Mixpanel answered HTTP {status} for {response.url}: {body}")

    def export(self, first: date, last: date, handle_lines: Callable[[Iterator[bytes]], T]) -> T:
        """Stream the raw events of `first`..`last` into `handle_lines`, retrying whole requests.

        `handle_lines` must consume the iterator to the end; the iterator raises if the response
        turns out cut or corrupt, so a handler that commits only after the loop never keeps a
        partial response.
        """
        params = {**self._params(), "from_date": first.isoformat(), "to_date": last.isoformat()}
        what = f"export {first.isoformat()}..{last.isoformat()}"

        def attempt_once() -> T:
            self.export_limiter.wait_turn()
            self.requests += 1
            try:
                with self.http.stream(
                    "GET",
                    self.settings.export_url,
                    params=params,
                    headers={"Accept-Encoding": "gzip", "Accept": "text/plain"},
                ) as response:
                    self._check_status(response)
                    gzipped = response.headers.get("Content-Encoding", "").lower() == "gzip"
                    return handle_lines(_lines(response.iter_raw(), gzipped))
            except httpx.TransportError as exc:
                raise _Retryable(f"connection problem ({type(exc).__name__}: {exc})") from exc

        return self._with_retries(what, attempt_once)

    def profiles(self) -> list[dict]:
        """Every profile from the Engage API, following `page` and `session_id` until a short page."""
        results: list[dict] = []
        page = 0
        session_id: str | None = None
        while True:
            form: dict[str, str] = {"page": str(page)}
            if session_id:
                form["session_id"] = session_id

            def attempt_once(form: dict[str, str] = form, page: int = page) -> dict:
                self.engage_limiter.wait_turn()
                self.requests += 1
                try:
                    response = self.http.post(
                        self.settings.engage_url,
                        params=self._params(),
                        data=form,
                        headers={"Accept-Encoding": "gzip"},
                    )
                except httpx.TransportError as exc:
                    raise _Retryable(f"connection problem ({type(exc).__name__}: {exc})") from exc
                self._check_status(response)
                try:
                    body = orjson.loads(response.content)
                except orjson.JSONDecodeError as exc:
                    raise _Retryable("engage answer is not valid JSON (cut response?)") from exc
                if not isinstance(body, dict) or not isinstance(body.get("results"), list):
                    raise DownloadError(f"engage answer has no 'results' list (page {page})")
                return body

            body = self._with_retries(f"engage page {page}", attempt_once)
            batch = body["results"]
            results.extend(batch)
            page_size = int(body.get("page_size") or 1000)
            session_id = body.get("session_id") or session_id
            if len(batch) < page_size or not session_id:
                return results
            page = int(body.get("page", page)) + 1


class _Gunzip:
    """Decompresses a stream of one or more gzip members (RFC 1952 lets a body hold several)."""

    def __init__(self) -> None:
        self._member = zlib.decompressobj(wbits=31)

    def feed(self, data: bytes) -> bytes:
        out = []
        while data:
            if self._member.eof:  # the next member starts here
                self._member = zlib.decompressobj(wbits=31)
            out.append(self._member.decompress(data))
            data = self._member.unused_data if self._member.eof else b""
        return b"".join(out)

    def flush(self) -> bytes:
        return self._member.flush()

    @property
    def eof(self) -> bool:
        """True when the last member read so far ended with its trailer."""
        return self._member.eof


def _lines(chunks: Iterator[bytes], gzipped: bool) -> Iterator[bytes]:
    """Split a (possibly gzip) byte stream into lines; raise `_Retryable` if it ends early."""
    decoder = _Gunzip() if gzipped else None
    rest = b""
    for chunk in chunks:
        try:
            data = decoder.feed(chunk) if decoder else chunk
        except zlib.error as exc:
            raise _Retryable(f"response is not valid gzip ({exc})") from exc
        if not data:
            continue
        data = rest + data
        parts = data.split(b"\n")
        rest = parts.pop()
        for part in parts:
            if part.strip():
                yield part
    if decoder is not None:
        rest += decoder.flush()
        # Without the gzip trailer the body was cut, even if the connection closed cleanly.
        if not decoder.eof:
            raise _Retryable("response cut short (incomplete gzip stream)")
    if rest.strip():
        yield rest
