"""The HTTP client for Mixpanel's Raw Event Export and Engage (profiles) APIs.

Limits we stay under (Mixpanel docs, "Rate Limits"): the Raw Export API allows 60 queries per
hour, 3 per second and 100 concurrent; the Query API (Engage) 60 per hour and 5 concurrent.
We send one request at a time, paced under both limits by a request log shared with other
processes (`rate_limit.py`). A 429 waits `Retry-After`, or without it backs off towards the
hourly window (1, 2, 4 ... 60 minutes, as Airbyte's connector does), for as long as the
step's time budget allows; 5xx, broken connections and cut bodies are retried with backoff
(5 attempts). 401, 403 and a 400 that could not authenticate stop at once.
`sleep` and `clock` are parameters so tests can run the waits without waiting.
"""

from __future__ import annotations

import math
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

import httpx
import orjson

from database.errors import (
    CredentialsError,
    DownloadError,
    RequestRefused,
    SettingsError,
    brief,
)
from database.settings import Settings
from mixpanel_source.cache import request_log_path
from mixpanel_source.export_body import ExportRecords, IncompleteExport
from mixpanel_source.rate_limit import HOUR, RateLimiter

T = TypeVar("T")
MAX_ATTEMPTS = 5
BACKOFF_BASE_SECONDS = 2.0
# A 429 without Retry-After: 60 s, then doubling up to the hourly window.
RATE_LIMIT_FIRST_WAIT = 60.0
USER_AGENT = "mixpanel-pipeline/1.0 (file-first orchestrator)"
LEGACY_SECRET_RETIRED = "2027-03-03"
BODY_SNIPPET_CHARS = 200
READ_TIMEOUT = 600.0
# A page of 1,000 profiles is a few MB; an answer far bigger is no page.
MAX_ENGAGE_BYTES = 256 * 2**20
# A retry within the budget needs at least this long, or it is not worth sending.
MIN_RETRY_WAIT = 1.0
MAX_RETRY_AFTER = 30 * 86400.0


class _Retryable(Exception):
    """A failure worth another attempt; `wait` is the server's requested delay, if any."""

    def __init__(self, message: str, wait: float | None = None, *, rate_limited: bool = False):
        super().__init__(message)
        self.wait = wait
        self.rate_limited = rate_limited


class BudgetExhausted(DownloadError):
    """The step's time budget runs out before the next request could be sent."""


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # A wait the server asks for, however long (the step's settings cap it); not a number
        # of seconds that makes no sense.
        return min(seconds, MAX_RETRY_AFTER) if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - datetime.now(UTC)).total_seconds()), MAX_RETRY_AFTER)


def _snippet(body: bytes) -> str:
    """A body's start as one short line (error messages stay one line)."""
    text = " ".join(body[: BODY_SNIPPET_CHARS * 4].decode("utf-8", "replace").split())
    return text[:BODY_SNIPPET_CHARS] + ("..." if len(text) > BODY_SNIPPET_CHARS else "")


@dataclass
class EngagePage:
    """One page of the Engage answer, its fields checked."""

    results: list[dict]
    page: int
    page_size: int
    session_id: str | None
    total: int | None


def _engage_page(body: object, page: int) -> EngagePage:
    """Check an Engage answer's fields; a malformed one is a one-line DownloadError, never a
    page that looks short (which would end a sync early and call it complete)."""
    where = f"engage answer for page {page}"
    if not isinstance(body, dict):
        raise DownloadError(f"{where} is not a JSON object; Mixpanel's API may have changed")
    results = body.get("results")
    if not isinstance(results, list):
        raise DownloadError(f"{where} has no 'results' list; Mixpanel's API may have changed")
    odd = next((r for r in results if not isinstance(r, dict)), None)
    if odd is not None:
        raise DownloadError(f"{where} holds a result that is no profile: {brief(odd)}")

    def whole(key: str, default: int | None) -> int | None:
        value = body.get(key, default)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise DownloadError(
                f"{where} has a malformed field {key}={brief(value)}; expected a count"
            )
        return value

    session_id = body.get("session_id")
    if session_id is not None and not isinstance(session_id, str):
        raise DownloadError(f"{where} has a malformed field session_id={brief(session_id)}")
    answered = whole("page", page)
    if answered != page:
        raise DownloadError(f"{where} is page {answered}; Mixpanel's paging went wrong")
    page_size = whole("page_size", 1000) or 1000
    if len(results) >= page_size and not session_id:
        raise DownloadError(f"{where} is full but has no session_id to ask for the next page")
    return EngagePage(
        results=results,
        page=page,
        page_size=page_size,
        session_id=session_id or None,
        total=whole("total", None),
    )


class MixpanelClient:
    """One-request-at-a-time client with pacing, retries and a time budget."""

    def __init__(
        self,
        settings: Settings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        log: Callable[[str], None] = print,
        warn: Callable[[str], None] | None = None,
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
        self.clock = clock
        self.log = log
        self.max_attempts = max_attempts
        self.requests = 0
        # The step stops itself before the orchestrator's timeout would kill it.
        self.deadline = None if settings.time_budget is None else clock() + settings.time_budget
        shared = request_log_path(settings.cache_dir)
        self.export_limiter = RateLimiter(
            "export", 3, 60, log_path=shared, clock=clock, sleep=sleep, log=log
        )
        self.engage_limiter = RateLimiter(
            "engage", 3, 60, log_path=shared, clock=clock, sleep=sleep, log=log
        )
        if settings.credential_kind == "api_secret":
            (warn or _stderr)(
                "warning: MIXPANEL_API_SECRET is Mixpanel's legacy project secret, deprecated "
                f"and retired on {LEGACY_SECRET_RETIRED}; create a service account and set "
                "MIXPANEL_SERVICE_ACCOUNT_USERNAME, MIXPANEL_SERVICE_ACCOUNT_SECRET and "
                "MIXPANEL_PROJECT_ID instead (set MIXPANEL_PROJECT_ID beside the secret for one "
                "run first: the data held is then recognised as that project's)"
            )
        self.http = httpx.Client(
            auth=httpx.BasicAuth(*auth),
            timeout=httpx.Timeout(connect=15.0, read=READ_TIMEOUT, write=60.0, pool=15.0),
            headers={"User-Agent": USER_AGENT},
            follow_redirects=True,
            max_redirects=5,
        )

    def close(self) -> None:
        """Release the connection pool."""
        self.http.close()

    def __enter__(self) -> MixpanelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def remaining(self) -> float | None:
        """Seconds left of the step's time budget (None: no budget)."""
        return None if self.deadline is None else self.deadline - self.clock()

    def _past_deadline(self) -> bool:
        return self.deadline is not None and self.clock() > self.deadline

    def _timeout(self) -> httpx.Timeout:
        """The request's timeouts: a read may wait as long as the budget has left, at most
        READ_TIMEOUT (an export of many days can take minutes to its first byte)."""
        left = self.remaining()
        read = READ_TIMEOUT if left is None else max(1.0, min(READ_TIMEOUT, left))
        return httpx.Timeout(connect=min(15.0, read), read=read, write=60.0, pool=15.0)

    def _params(self) -> dict[str, str]:
        return {"project_id": self.settings.project_id} if self.settings.project_id else {}

    def _budget_error(self, what: str, why: str) -> BudgetExhausted:
        budget = self.settings.time_budget or 0
        return BudgetExhausted(
            f"{what}: {why}, which the step's time budget of {budget:.0f} s does not allow "
            "(MIXPANEL_TIME_BUDGET, or the step's timeout); run the step again later"
        )

    def _take_turn(self, limiter: RateLimiter, what: str) -> None:
        if not limiter.wait_turn(self.deadline):
            raise self._budget_error(what, limiter.refused)
        self.requests += 1

    def _with_retries(self, what: str, attempt_once: Callable[[], T]) -> T:
        attempt = 0  # failures other than 429; a 429 is retried while the budget lasts
        rate_limited = 0
        last = ""
        while True:
            try:
                return attempt_once()
            except BudgetExhausted:
                if not last:
                    raise
                raise self._budget_error(what, f"{last}; one more try") from None
            except _Retryable as exc:
                last = str(exc)
                if exc.rate_limited:
                    rate_limited += 1
                    backoff = min(RATE_LIMIT_FIRST_WAIT * 2 ** (rate_limited - 1), HOUR)
                    label = f"rate limited {rate_limited}x"
                else:
                    attempt += 1
                    if attempt >= self.max_attempts:
                        raise DownloadError(
                            f"{what} failed after {self.max_attempts} attempts: {exc}"
                        ) from None
                    backoff = BACKOFF_BASE_SECONDS * 2 ** (attempt - 1)
                    label = f"retry {attempt}/{self.max_attempts - 1}"
                wait = min(
                    exc.wait if exc.wait is not None else backoff, self.settings.max_retry_wait
                )
                left = self.remaining()
                if left is not None and wait > left - MIN_RETRY_WAIT:
                    # Our own backoff shrinks to what is left; a wait the server asked for
                    # (Retry-After) does not, as a sooner try would be refused again.
                    if exc.wait is not None or left < 2 * MIN_RETRY_WAIT:
                        raise self._budget_error(what, f"{exc}; one more try") from None
                    wait = left - MIN_RETRY_WAIT
                shown = f"{wait:.0f}s" if wait >= 10 else f"{wait:.1f}s"
                self.log(f"  {what}: {exc}; {label}, waiting {shown}")
                self.sleep(wait)

    def _credential_error(self, response: httpx.Response, detail: str) -> CredentialsError:
        if self.settings.credential_kind == "api_secret":
            names = "MIXPANEL_API_SECRET"
        else:
            names = "MIXPANEL_SERVICE_ACCOUNT_USERNAME and MIXPANEL_SERVICE_ACCOUNT_SECRET"
        return CredentialsError(
            f"Mixpanel rejected the credentials (HTTP {response.status_code}{detail} from "
            f"{response.url.host}): check {names}, MIXPANEL_PROJECT_ID, and the EU/US host "
            "(MIXPANEL_EXPORT_URL, MIXPANEL_ENGAGE_URL)"
        )

    def _check_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if status in (401, 403):
            raise self._credential_error(response, "")
        if status == 429:
            header = response.headers.get("Retry-After")
            wait = _retry_after(header)
            note = "" if header else " without Retry-After"
            raise _Retryable(f"HTTP 429 rate limited{note}", wait, rate_limited=True)
        if status >= 500:
            raise _Retryable(f"HTTP {status} server error")
        if status != 200:
            body = _snippet(response.read())
            if status == 400 and "authenticate" in body.lower():
                raise self._credential_error(response, f" {body!r}")
            hint = ""
            if "to_date" in body:
                hint = (
                    "; for a project made before 2023 set MIXPANEL_PROJECT_TIMEZONE to its "
                    "time zone, and keep MIXPANEL_END_DATE at yesterday or earlier"
                )
            raise RequestRefused(
                f"Mixpanel answered HTTP {status} for {response.url.host}{response.url.path}: "
                f"{body}{hint}",
                status,
            )

    def _send(self, what: str, attempt_once: Callable[[], T]) -> T:
        """Run one request's attempt, turning every HTTP client failure into ours."""
        try:
            return attempt_once()
        except httpx.TooManyRedirects:
            raise DownloadError(
                f"{what}: redirected too many times (a redirect loop); check "
                "MIXPANEL_EXPORT_URL and MIXPANEL_ENGAGE_URL"
            ) from None
        except httpx.TransportError as exc:
            raise _Retryable(f"connection problem ({type(exc).__name__}: {exc})") from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise DownloadError(f"{what}: {type(exc).__name__}: {exc}") from None

    def export(self, first: date, last: date, handle_records: Callable[[ExportRecords], T]) -> T:
        """Stream the raw events of `first`..`last` into `handle_records`, retrying whole
        requests. The records raise `IncompleteExport` (caught here: the request is retried)
        once the body turns out cut or not an export, so a handler that commits only after
        the loop never keeps a partial response."""
        params = {**self._params(), "from_date": first.isoformat(), "to_date": last.isoformat()}
        what = f"export {first.isoformat()}..{last.isoformat()}"
        last_bad_end: list[str | None] = [None]  # the signature of the last body that ended badly

        def request() -> T:
            self._take_turn(self.export_limiter, what)
            with self.http.stream(
                "GET",
                self.settings.export_url,
                params=params,
                headers={"Accept-Encoding": "gzip", "Accept": "text/plain"},
                timeout=self._timeout(),
            ) as response:
                self._check_status(response)
                if "html" in response.headers.get("Content-Type", "").lower():
                    raise _Retryable("HTTP 200 with an HTML page, not an export")
                gzipped = response.headers.get("Content-Encoding", "").lower() == "gzip"
                records = ExportRecords(
                    _decoded(response.iter_raw(), gzipped, self._past_deadline),
                    tolerate=last_bad_end[0],
                )
                try:
                    return handle_records(records)
                except IncompleteExport as exc:
                    last_bad_end[0] = records.signature
                    raise _Retryable(str(exc)) from None

        return self._with_retries(what, lambda: self._send(what, request))

    def engage_page(
        self, page: int, session_id: str | None, where: str | None = None
    ) -> EngagePage:
        """One page of profiles from the Engage API (`where`: a filter expression)."""
        form: dict[str, str] = {"page": str(page)}
        if session_id:
            form["session_id"] = session_id
        if where:
            form["where"] = where
        what = f"engage page {page}"

        def request() -> EngagePage:
            self._take_turn(self.engage_limiter, what)
            with self.http.stream(
                "POST",
                self.settings.engage_url,
                params=self._params(),
                data=form,
                headers={"Accept-Encoding": "gzip"},
                timeout=self._timeout(),
            ) as response:
                self._check_status(response)
                parts, size = [], 0
                for chunk in response.iter_bytes():
                    if self._past_deadline():  # an answer that trickles in
                        raise BudgetExhausted(
                            f"{what}: the step's time budget ran out while the answer was "
                            "still arriving; run the step again later"
                        )
                    size += len(chunk)
                    if size > MAX_ENGAGE_BYTES:
                        raise DownloadError(
                            f"{what}: the answer is larger than {MAX_ENGAGE_BYTES // 2**20} MB, "
                            "far more than a page of profiles"
                        )
                    parts.append(chunk)
            try:
                body = orjson.loads(b"".join(parts))
            except orjson.JSONDecodeError as exc:
                raise _Retryable("engage answer is not valid JSON (cut response?)") from exc
            return _engage_page(body, page)

        return self._with_retries(what, lambda: self._send(what, request))


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


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


def _decoded(
    chunks: Iterator[bytes], gzipped: bool, past_deadline: Callable[[], bool]
) -> Iterator[bytes]:
    """The body's bytes, gunzipped if need be; `IncompleteExport` for a gzip stream without
    its end (cut, even if the connection closed cleanly), `BudgetExhausted` once the step's
    time is up (a body that trickles in would otherwise outlast it)."""
    decoder = _Gunzip() if gzipped else None
    for chunk in chunks:
        if past_deadline():
            raise BudgetExhausted(
                "the step's time budget ran out while the answer was still arriving; run the "
                "step again later"
            )
        try:
            data = decoder.feed(chunk) if decoder else chunk
        except zlib.error as exc:
            raise IncompleteExport(f"response is not valid gzip ({exc})") from exc
        if data:
            yield data
    if decoder is not None:
        tail = decoder.flush()
        if tail:
            yield tail
        if not decoder.eof:
            raise IncompleteExport("response cut short (incomplete gzip stream)")
