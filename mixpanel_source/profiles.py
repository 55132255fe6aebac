"""User profiles from the Engage API: one full sync, resumable, then only what changed.

Engage allows 60 queries an hour and gives 1,000 profiles a page, so a project of 500,000
profiles takes more than 8 hours to download whole. Step 1 therefore:
- runs the first full sync page by page, saving each page and its progress as it arrives, so a
  run cut short (its time budget, a timeout, a kill) continues where it stopped;
- afterwards asks only for the profiles updated since the last sync, with Engage's `where`
  on `$last_seen` (Mixpanel's "Updated at"; Airbyte's connector filters the same way);
- runs a full sync again when asked (MIXPANEL_PROFILES_FULL_REFRESH=1), keeping the old file
  until the new one is whole.

State lives in profiles/state.json; the pages of a full sync in progress in profiles/sync/.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import orjson

from database.errors import CacheDamagedError, DownloadError, RequestRefused
from database.pipeline_state import iso_from_epoch, now_iso
from database.settings import Settings
from mixpanel_source import cache
from mixpanel_source.client import BudgetExhausted, EngagePage, MixpanelClient

# `$last_seen` is kept in the project's time zone: a day of overlap covers any offset.
CHANGED_OVERLAP = timedelta(days=1)
WHERE_UPDATED_SINCE = 'properties["$last_seen"] >= "{since}"'
# Engage paging that goes on this far past Mixpanel's total (or, without a total, past
# MAX_PAGES, 200 million profiles) is not ending: it is an error, not a complete sync.
EXTRA_PAGES = 10
MAX_PAGES = 200_000


def state_path(cache_dir: Path) -> Path:
    """The profile sync's state file."""
    return cache.profiles_path(cache_dir).parent / "state.json"


def pages_dir(cache_dir: Path) -> Path:
    """Where a full sync in progress keeps its pages."""
    return cache.profiles_path(cache_dir).parent / "sync"


@dataclass
class ProfileSync:
    """What step 1 did with the profiles, for the log, the report and the /tiers page."""

    mode: str  # full | resumed | incremental | demo
    complete: bool  # the profiles file holds a whole sync (the first full sync has ended)
    fetched: int = 0  # profiles received in this run
    synced: int = 0  # of a full sync in progress or just ended: profiles received so far
    total: int | None = None  # of that full sync: Mixpanel's count
    changed: int = 0  # incremental: profiles updated since the last sync
    profiles: int = 0  # in the profiles file
    requests: int = 0
    note: str = ""

    def as_dict(self) -> dict[str, object]:
        """JSON-ready figures."""
        return dict(self.__dict__)


def progress_text(synced: int, total: int | None) -> str:
    """`profiles 120,000 of 497,139`, or without a total `profiles 120,000 so far`."""
    return (
        f"profiles {synced:,} of {total:,}" if total is not None else f"profiles {synced:,} so far"
    )


def read_progress(cache_dir: Path) -> dict:
    """The sync state as the page shows it: synced, full sync progress, last change time."""
    state, _dropped = _checked_state(cache.read_json(state_path(cache_dir)))
    full = state.get("full")
    return {
        "synced": bool(state.get("synced")),
        "profiles": state.get("profiles"),
        "changed_since": state.get("changed_since"),
        "full_synced_at": state.get("full_synced_at"),
        "full_in_progress": full is not None,
        "fetched": (full or {}).get("fetched"),
        "total": (full or {}).get("total"),
        "full_started_at": (full or {}).get("started_at"),
        "shortfall": state.get("shortfall"),
    }


def _last_page(answer: EngagePage, fetched: int, total: int | None) -> bool:
    """Whether paging ends here: at an empty page, once Mixpanel's total is reached, or
    without a total at a short page (Mixpanel's own rule). A short page before the total
    is not the end: the next page is asked for."""
    if not answer.results:
        return True
    if total is not None:
        return fetched >= total
    return len(answer.results) < answer.page_size


def _check_not_endless(page: int, page_size: int, total: int | None) -> None:
    limit = MAX_PAGES if total is None else -(-total // page_size) + EXTRA_PAGES
    if page + 1 >= limit:
        said = "no total" if total is None else f"a total of {total:,} profiles"
        raise DownloadError(
            f"Engage still sends full pages at page {page:,} with {said}; its paging is not "
            "ending, so the sync stops here"
        )


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _checked_state(data: dict) -> tuple[dict, str | None]:
    """The state file's content with every field of the right type, and what was dropped (a
    damaged or hand-edited file restarts what it can no longer describe, never crashes)."""
    state: dict = {}
    dropped = []
    if isinstance(data.get("synced"), bool):
        state["synced"] = data["synced"]
    for key in ("changed_since", "full_synced_at"):
        if isinstance(data.get(key), str):
            state[key] = data[key]
    if _whole(data.get("profiles")):
        state["profiles"] = data["profiles"]
    short = data.get("shortfall")
    if isinstance(short, list) and len(short) == 2 and all(map(_whole, short)):
        state["shortfall"] = short
    full = data.get("full")
    if full is not None:
        ok = (
            isinstance(full, dict)
            and isinstance(full.get("started_at"), str)
            and _whole(full.get("next_page"))
            and _whole(full.get("fetched"))
            and (full.get("total") is None or _whole(full.get("total")))
            and (full.get("session_id") is None or isinstance(full.get("session_id"), str))
            and (full["next_page"] == 0 or full.get("session_id"))
            and (full.get("short_before") is None or isinstance(full.get("short_before"), list))
        )
        if ok:
            state["full"] = dict(full)
        else:
            dropped.append("the full sync in progress")
    return state, ", ".join(dropped) or None


def _profile_id(line: bytes) -> str | None:
    try:
        item = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(item, dict) or item.get("$distinct_id") is None:
        return None
    return str(item["$distinct_id"])


def _by_id(lines: Iterable[bytes], into: dict[str, bytes]) -> dict[str, bytes]:
    """Profiles keyed by id, later ones replacing earlier (the newest answer wins)."""
    for line in lines:
        key = _profile_id(line)
        if key is not None:
            into[key] = line
    return into


class _Syncer:
    def __init__(self, settings: Settings, client: MixpanelClient, log: Callable[[str], None]):
        self.settings = settings
        self.client = client
        self.log = log
        self.cache_dir = settings.cache_dir
        self.state, dropped = _checked_state(cache.read_json(state_path(self.cache_dir)))
        if dropped:
            log(f"profiles: {state_path(self.cache_dir)} is damaged; {dropped} starts again")
            shutil.rmtree(pages_dir(self.cache_dir), ignore_errors=True)
        self.requests_before = client.requests

    def save(self) -> None:
        cache.write_json(state_path(self.cache_dir), self.state)

    def _changed_since(self) -> datetime | None:
        try:
            return datetime.strptime(str(self.state.get("changed_since")), "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            return None

    def run(self) -> ProfileSync:
        profiles_file = cache.profiles_path(self.cache_dir)
        if not self.state and profiles_file.is_file():
            # A profiles file of an older version, written whole: changes since it was written.
            written = int(profiles_file.stat().st_mtime)
            self.state = {"synced": True, "changed_since": iso_from_epoch(written)}
        full = self.state.get("full")
        synced = (
            bool(self.state.get("synced"))
            and profiles_file.is_file()
            and self._changed_since() is not None
        )
        if not isinstance(full, dict) and (self.settings.profiles_full_refresh or not synced):
            why = "a full refresh was asked for" if synced else "no full sync has ended yet"
            self.log(f"profiles: full sync from page 0 ({why})")
            full = self.state["full"] = {"started_at": now_iso(), "next_page": 0, "fetched": 0}
            shutil.rmtree(pages_dir(self.cache_dir), ignore_errors=True)
            self.save()
            return self.full_sync(full, "full")
        if isinstance(full, dict):
            self.log(
                f"profiles: resuming the full sync at page {full.get('next_page', 0)} "
                f"({progress_text(int(full.get('fetched') or 0), full.get('total'))})"
            )
            return self.full_sync(full, "resumed")
        return self.incremental()

    def _result(self, mode: str, **figures: object) -> ProfileSync:
        synced = bool(self.state.get("synced"))
        return ProfileSync(
            mode=mode,
            complete=synced,
            profiles=int(self.state.get("profiles") or 0),
            requests=self.client.requests - self.requests_before,
            **figures,  # type: ignore[arg-type]
        )

    def full_sync(self, full: dict, mode: str) -> ProfileSync:
        page = int(full.get("next_page") or 0)
        session = full.get("session_id")
        fetched_now = 0
        while True:
            try:
                answer = self.client.engage_page(page, session if page else None)
            except BudgetExhausted as exc:
                note = (
                    f"the full sync stopped at {progress_text(full['fetched'], full.get('total'))}"
                    f" ({exc}); the next run continues at page {page}"
                )
                self.log(f"profiles: {note}")
                return self._full_result(mode, full, fetched_now, note)
            except RequestRefused as exc:
                if mode != "resumed" or page == 0 or exc.status != 400:
                    raise
                # The saved Engage session is no longer served: pages need a session from
                # page 0 (Mixpanel's rule), so the sync starts again. (Any other failure
                # keeps the pages saved so far for the next run.)
                self.log(
                    f"profiles: page {page} of the saved session failed ({exc}); "
                    "starting the full sync again from page 0"
                )
                full.update(next_page=0, fetched=0, session_id=None, started_at=now_iso())
                shutil.rmtree(pages_dir(self.cache_dir), ignore_errors=True)
                self.save()
                page, session, mode = 0, None, "full"
                continue
            if page == 0:
                full["total"] = answer.total
                session = answer.session_id
            pages_dir(self.cache_dir).mkdir(parents=True, exist_ok=True)
            cache.write_lines_atomic(
                pages_dir(self.cache_dir) / f"page-{page:06d}.jsonl.gz",
                (orjson.dumps(p) for p in answer.results),
            )
            fetched_now += len(answer.results)
            full.update(
                fetched=int(full.get("fetched") or 0) + len(answer.results),
                next_page=page + 1,
                session_id=session,
            )
            self.save()
            self.log(f"  {progress_text(full['fetched'], full.get('total'))} (page {page})")
            if _last_page(answer, full["fetched"], full.get("total")):
                break
            _check_not_endless(page, answer.page_size, full.get("total"))
            page += 1
        note = f"full sync ended: {progress_text(full['fetched'], full.get('total'))}"
        total = full.get("total")
        short = [full["fetched"], total] if total is not None and full["fetched"] < total else None
        if short and not full.get("short_before"):
            # Engage's pages ended before the profiles it announced: not complete. Download
            # again once; a second shortfall (of any size: a project grows) is taken as it is.
            self.state["full"] = {
                "started_at": now_iso(),
                "next_page": 0,
                "fetched": 0,
                "short_before": short,
            }
            self.save()
            shutil.rmtree(pages_dir(self.cache_dir), ignore_errors=True)
            why = (
                f"Engage's pages ended at {short[0]:,} of the {total:,} profiles it announced; "
                "the full sync is done again with the next run"
            )
            if not self.state.get("synced"):
                raise DownloadError(why)
            self.log(f"warning: profiles: {why} (until then, the profiles of the last sync)")
            return self._full_result(mode, full, fetched_now, why)
        if short:
            note += " (Engage's pages ended short of its total twice in a row: taken as they are)"
            self.log(f"warning: profiles: {note}")
        self._finish_full(full, short)
        return self._full_result(mode, full, fetched_now, note)

    def _full_result(self, mode: str, full: dict, fetched_now: int, note: str) -> ProfileSync:
        return self._result(
            mode, fetched=fetched_now, synced=full["fetched"], total=full.get("total"), note=note
        )

    def _finish_full(self, full: dict, short: list[int] | None) -> None:
        """Put the pages together as the profiles file; the sync is complete (`short`: what
        Engage sent of its total, when it sent less twice in a row)."""
        folder = pages_dir(self.cache_dir)
        profiles: dict[str, bytes] = {}
        for path in sorted(folder.glob("page-*.jsonl.gz")):
            _by_id(cache.read_lines(path), profiles)
        count = cache.write_lines_atomic(cache.profiles_path(self.cache_dir), profiles.values())
        self.state.pop("full", None)
        self.state.pop("shortfall", None)
        if short:
            self.state["shortfall"] = short
        self.state.update(
            synced=True,
            profiles=count,
            full_synced_at=full["started_at"],
            changed_since=full["started_at"],
        )
        self.save()
        shutil.rmtree(folder, ignore_errors=True)

    def incremental(self) -> ProfileSync:
        started = now_iso()
        since_at = self._changed_since()
        assert since_at is not None  # run() starts a full sync without it
        since = (since_at - CHANGED_OVERLAP).strftime("%Y-%m-%dT%H:%M:%S")
        where = WHERE_UPDATED_SINCE.format(since=since)
        changed: dict[str, bytes] = {}
        page, session, total, received = 0, None, None, 0
        note = f"profiles updated since {since}"
        try:
            while True:
                answer = self.client.engage_page(page, session, where=where)
                if page == 0:
                    session, total = answer.session_id, answer.total
                received += len(answer.results)
                _by_id((orjson.dumps(p) for p in answer.results), changed)
                if _last_page(answer, received, total):
                    break
                _check_not_endless(page, answer.page_size, total)
                page += 1
        except BudgetExhausted as exc:
            note = f"{note}: stopped after page {page} ({exc}); the next run asks again"
            self.log(f"profiles: {note}")
        else:
            if total is not None and received < total:
                # Some changes did not come: the next run asks for the same span again.
                note = (
                    f"{note}: Engage announced {total:,} and sent {received:,}; the next run "
                    "asks for them again"
                )
                self.log(f"warning: profiles: {note}")
            else:
                self.state["changed_since"] = started
        if changed:
            try:
                profiles = _by_id(cache.read_lines(cache.profiles_path(self.cache_dir)), {})
            except CacheDamagedError as exc:
                # Changes alone are not all profiles: the next run syncs them all again.
                self.state.pop("synced", None)
                self.save()
                raise CacheDamagedError(
                    f"{exc}; the next run downloads every profile again"
                ) from None
            profiles.update(changed)
            self.state["profiles"] = cache.write_lines_atomic(
                cache.profiles_path(self.cache_dir), profiles.values()
            )
        self.save()
        self.log(f"profiles: {len(changed):,} {note}")
        return self._result("incremental", fetched=len(changed), changed=len(changed), note=note)


def sync_profiles(
    settings: Settings, client: MixpanelClient, log: Callable[[str], None] = print
) -> ProfileSync:
    """Bring the profiles file up to date: continue or start a full sync, or fetch changes."""
    return _Syncer(settings, client, log).run()


def mark_synced(cache_dir: Path, profiles: int) -> None:
    """Record a profiles file written whole by another source (the demo)."""
    now = now_iso()
    cache.write_json(
        state_path(cache_dir),
        {"synced": True, "profiles": profiles, "full_synced_at": now, "changed_since": now},
    )
