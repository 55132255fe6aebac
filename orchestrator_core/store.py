"""Status files on disk: atomic writes under a lock, corrupt-file quarantine, crash recovery.

A write is temp file + fsync + `os.replace` while holding `.<id>.status.lock`, so a reader
never needs a lock to see a whole file and two writers never lose each other's changes.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import jsonio, paths
from .errors import OrchestratorError
from .locks import exclusive, owner_alive, read_owner
from .processes import process_alive
from .status import StepState, error_tail, iso, normalise_entry, utc_now

log = logging.getLogger(__name__)

ACTIVE_STATES = frozenset(s.value for s in StepState if s.is_active)

Entries = dict[str, dict[str, Any]]


def atomic_write_json(path: Path, data: Any, *, fsync: bool = True) -> bytes:
    """Write `data` as JSON so that readers see the old file or the new one, never a part.
    Returns the bytes written."""
    blob = jsonio.dumps(data)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return blob


def _read_bytes(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _copy(entries: Entries) -> Entries:
    # Entries are flat: copying each one is enough for a writer to change them in place.
    return {k: dict(v) if isinstance(v, dict) else v for k, v in entries.items()}


@dataclass
class _Parsed:
    blob: bytes
    raw: Entries
    normalised: Entries | None = None


@dataclass
class StatusSnapshot:
    """The step entries of one pipeline, plus anything the user should be told about the file."""

    entries: Entries
    notices: list[str] = field(default_factory=list)


class StatusStore:
    """Reads and writes the `.<id>.status.json` files of one pipelines folder."""

    def __init__(self, pipelines_dir: Path) -> None:
        self.pipelines_dir = pipelines_dir
        # The bytes last read or written per pipeline, what they parse to and, once asked for,
        # the normalised entries: while the file holds the same bytes, it is not parsed again.
        self._parsed: dict[str, _Parsed] = {}

    def path(self, pipeline_id: str) -> Path:
        """The status file of a pipeline."""
        return paths.status_path(self.pipelines_dir, pipeline_id)

    def _read_raw(
        self, pipeline_id: str, *, normalise: bool = True
    ) -> tuple[Entries | None, str | None]:
        """(entries, None), or (None, reason) when the file is corrupt; ({}, None) if missing.
        Writers skip `normalise`: they rewrite only the entries they change."""
        try:
            text = _read_bytes(self.path(pipeline_id))
        except FileNotFoundError:
            return {}, None
        except OSError as exc:  # never moved aside: the file may be fine for its owner
            raise OrchestratorError(
                f"cannot read {self.path(pipeline_id)}: {exc.strerror or exc}; "
                "check its permissions"
            ) from exc
        parsed = self._parsed.get(pipeline_id)
        if parsed is None or parsed.blob != text:
            try:
                data = jsonio.loads(text)
            except ValueError as exc:
                return None, f"not valid JSON ({exc})"
            if not isinstance(data, dict):
                return None, "not a JSON object keyed by step name"
            parsed = self._parsed[pipeline_id] = _Parsed(text, data)
        if not normalise:
            return _copy(parsed.raw), None
        if parsed.normalised is None:
            parsed.normalised = {str(k): normalise_entry(v) for k, v in parsed.raw.items()}
        return _copy(parsed.normalised), None

    def _write(self, pipeline_id: str, entries: Entries) -> None:
        blob = atomic_write_json(self.path(pipeline_id), entries)
        self._parsed[pipeline_id] = _Parsed(blob, _copy(entries))

    def _quarantine(self, pipeline_id: str, reason: str) -> str:
        src = self.path(pipeline_id)
        stamp = utc_now().strftime("%Y%m%dT%H%M%S%fZ")
        dst = src.with_name(f"{src.name}.corrupt-{stamp}")
        os.replace(src, dst)
        msg = (
            f"{src}: {reason}; moved aside to {dst.name} and started a fresh status file "
            "(the steps now show never_run)"
        )
        log.warning(msg)
        return msg

    def _load_locked(
        self, pipeline_id: str, notices: list[str], *, normalise: bool = True
    ) -> Entries:
        entries, problem = self._read_raw(pipeline_id, normalise=normalise)
        if entries is None:
            notices.append(self._quarantine(pipeline_id, problem or "unreadable"))
            entries = {}
        return entries

    def load(self, pipeline_id: str) -> StatusSnapshot:
        """Current entries, with steps of dead runs turned `interrupted` (and saved so)."""
        entries, _ = self._read_raw(pipeline_id)
        notices: list[str] = []
        if entries is None or self._stale_steps(pipeline_id, entries):
            # Repair under the lock, re-reading so a concurrent writer's change is not lost.
            with exclusive(paths.status_lock_path(self.pipelines_dir, pipeline_id)):
                entries = self._load_locked(pipeline_id, notices)
                if self._recover(pipeline_id, entries):
                    self._write(pipeline_id, entries)
        return StatusSnapshot(entries, notices)

    def update(
        self, pipeline_id: str, mutate: Callable[[Entries], None], *, recover: bool = False
    ) -> Entries:
        """The one way to change a status file: read, `mutate` in place, write, under the lock.
        With `recover`, steps of dead runs are marked `interrupted` first (user actions)."""
        notices: list[str] = []
        with exclusive(paths.status_lock_path(self.pipelines_dir, pipeline_id)):
            entries = self._load_locked(pipeline_id, notices, normalise=False)
            if recover:
                self._recover(pipeline_id, entries)
            mutate(entries)
            self._write(pipeline_id, entries)
        return entries

    def set_fields(self, pipeline_id: str, changes: dict[str, dict[str, Any]]) -> Entries:
        """Merge `{step: {field: value}}` into the file."""

        def apply(entries: Entries) -> None:
            for step, fields in changes.items():
                entry = entries.get(step)
                entry = dict(entry) if isinstance(entry, dict) else normalise_entry(None)
                entry.update(fields)
                entries[step] = normalise_entry(entry)

        return self.update(pipeline_id, apply)

    def _stale_steps(self, pipeline_id: str, entries: Entries) -> list[str]:
        active = [
            n
            for n, e in entries.items()
            if isinstance(e, dict)
            and isinstance(e.get("state"), str)
            and e["state"] in ACTIVE_STATES
        ]
        if not active:
            return []
        owner = read_owner(paths.run_lock_path(self.pipelines_dir, pipeline_id))
        live_run = owner.get("run_id") if owner_alive(owner) else None
        # A step with no run id belongs to no run that could still be going.
        return [
            n for n in active if not entries[n].get("run_id") or entries[n]["run_id"] != live_run
        ]

    def _recover(self, pipeline_id: str, entries: Entries) -> bool:
        stale = self._stale_steps(pipeline_id, entries)
        now = iso(utc_now())
        for name in stale:
            entry = normalise_entry(entries[name])
            was = entry["state"]
            # An orphan that outlived its run is remembered, so the next run of the pipeline
            # can find and stop it (Engine._take_over).
            # Without its start time, a pid may be anybody's by now: it is not stopped.
            orphan = entry.get("pid_started") is not None and process_alive(
                entry.get("pid"), entry.get("pid_started")
            )
            if orphan:
                how = f"its process {entry['pid']} is still running; the next run stops it"
            elif was == StepState.QUEUED.value:
                how = "it had not started"
            else:
                how = "its process is gone"
            note = f"the run {entry.get('run_id')} ended while this step was {was} ({how}); run it again"
            entry.update(
                state=StepState.INTERRUPTED.value,
                completed=False,
                finished_at=now,
                error=error_tail(f"{entry.get('error') or ''}\n{note}"),
                orphan_pid=entry.get("pid") if orphan else None,
                orphan_pid_started=entry.get("pid_started") if orphan else None,
                pid=None,
                pid_started=None,
            )
            entries[name] = entry
        return bool(stale)
