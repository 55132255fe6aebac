"""Run one step: a subprocess in its own process group, its output streamed line by line
into a log file, with a timeout and a cancel that kill the whole process tree."""

from __future__ import annotations

import collections
import contextlib
import os
import selectors
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from .processes import kill_group_remnants, kill_tree, process_started, start_time_now
from .status import ERROR_TAIL_BYTES, StepState, error_tail, utc_now
from .steplog import StepLog

LineSink = Callable[[str, str], None]
MAX_LINE_BYTES = 64 * 1024  # longer lines are split so memory stays bounded
TAIL_LINES = 64
DRAIN_SECONDS = 1.0  # how long leftover children may hold the output after the step exits
POLL_SECONDS = 0.2
READ_BYTES = 64 * 1024


@dataclass(frozen=True)
class StepResult:
    """How one attempt of a step ended."""

    state: StepState
    exit_code: int | None
    started_at: datetime
    finished_at: datetime
    error: str | None
    pid: int | None

    @property
    def duration_s(self) -> float:
        """Wall time of the attempt, in seconds."""
        return round((self.finished_at - self.started_at).total_seconds(), 3)


class StepProcess:
    """One attempt of one step. `start`, then `wait` (in the owning thread); `cancel` from any."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: str,
        env: dict[str, str],
        log: StepLog,
        on_line: LineSink | None = None,
        kill_grace: float = 2.0,
    ) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        self.env = env
        self.log = log
        self.on_line = on_line
        self.kill_grace = kill_grace
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = utc_now()
        self._cancelled = False
        self._timed_out = False
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._start_lock = threading.Lock()
        self.spawned_at: float | None = None
        self.spawned_monotonic = 0.0
        self._notify_error: Exception | None = None
        self._spawn_error: str | None = None

    @property
    def pid(self) -> int | None:
        """The step process's pid once started."""
        return self.proc.pid if self.proc else None

    def start(self) -> int | None:
        """Launch the process and its output pumps; returns its pid (None if it could not start)."""
        with self._start_lock:  # a cancel that lands while the process starts is not lost
            if self._cancelled:
                return None
            return self._spawn()

    def _spawn(self) -> int | None:
        self.started_at = utc_now()
        started = start_time_now()
        self.spawned_monotonic = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            self._spawn_error = (
                f"could not start {self.argv[1] if len(self.argv) > 1 else self.argv[0]}: {exc}"
            )
            self._write("system", self._spawn_error)
            return None
        self.spawned_at = started if started is not None else process_started(self.proc.pid)
        return self.proc.pid

    def pid_started(self) -> float | None:
        """The process's start time as `process_started` reads it, to tell it from a later
        process with the same pid. Read from /proc once asked (by then the process has left
        exec, which the read would slow); the estimate taken at spawn if it has ended."""
        if self.proc is None:
            return None
        return process_started(self.proc.pid) or self.spawned_at

    def _write(self, stream: str, text: str) -> None:
        self.log.write(stream, text)

    def _emit_line(self, stream: str, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
        self._write(stream, text)
        if stream == "stderr":
            self._tail.append(text)
        if self.on_line is not None:
            self.on_line(stream, text)

    def _pump(self, deadline: float | None, notify: _Notify | None) -> bool:
        """Copy output line by line until both pipes close; False if the deadline passed.
        One thread serves both pipes (no reader threads), so a step costs little to run."""
        proc = self.proc
        pending = {proc.stdout.fileno(): b"", proc.stderr.fileno(): b""}
        names = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}
        exited_at: float | None = None
        with selectors.DefaultSelector() as sel:
            for fd in pending:
                sel.register(fd, selectors.EVENT_READ)
            while sel.get_map():
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    return False
                if exited_at is None and proc.poll() is not None:
                    exited_at = now
                if exited_at is not None and now - exited_at > DRAIN_SECONDS:
                    # A leftover child still holds the output pipes open: end the step's group.
                    self._write(
                        "system",
                        "processes left behind by the step still hold its output; killing them",
                    )
                    kill_tree(proc.pid, self.kill_grace)
                    exited_at = float("inf")
                if notify is not None and now >= notify.due and exited_at is None:
                    self._notify(notify)  # (not for a step that has ended, its output held open)
                    notify = None
                wait = POLL_SECONDS if deadline is None else min(POLL_SECONDS, deadline - now)
                if notify is not None and exited_at is None:
                    wait = min(wait, notify.due - now)
                for key, _ in sel.select(wait):
                    fd = key.fd
                    chunk = os.read(fd, READ_BYTES)
                    if not chunk:
                        sel.unregister(fd)
                        if pending[fd]:
                            self._emit_line(names[fd], pending[fd])
                        continue
                    buf = pending[fd] + chunk
                    *lines, rest = buf.split(b"\n")
                    if lines and notify is not None and exited_at is None:
                        # Output in the log means the step shows as running: record it first.
                        self._notify(notify)
                        notify = None
                    for line in lines:
                        self._emit_line(names[fd], line)
                    while len(rest) >= MAX_LINE_BYTES:  # bounded memory for endless lines
                        self._emit_line(names[fd], rest[:MAX_LINE_BYTES])
                        rest = rest[MAX_LINE_BYTES:]
                    pending[fd] = rest
        return True

    def cancel(self) -> None:
        """Stop the step: SIGTERM its process tree, SIGKILL after the grace period."""
        with self._start_lock:
            self._cancelled = True
            proc = self.proc
        if proc is not None and proc.poll() is None:
            kill_tree(proc.pid, self.kill_grace)

    def _notify(self, notify: _Notify) -> None:
        """Call `on_running`; if it fails, the step is stopped: a process whose start could
        not be recorded would run on with nobody able to find it after a crash."""
        notify.fired = True
        try:
            notify.callback()
        except Exception as exc:
            self._notify_error = exc
            self._write("system", f"the step's start could not be recorded ({exc}); stopping it")
            if self.proc.poll() is None:  # a reaped pid may already belong to another process
                kill_tree(self.proc.pid, self.kill_grace)

    def wait(
        self,
        timeout: float | None = None,
        *,
        on_running: Callable[[], None] | None = None,
        running_after: float = 0.0,
    ) -> StepResult:
        """Wait for the end (killing the tree on timeout) and say how it ended.

        `on_running` is called once the process has run for `running_after` seconds; a step
        that ends sooner never calls it. If it raises, the process tree is killed and `wait`
        raises that error once the process is gone."""
        if self.proc is None:
            now = utc_now()
            state = StepState.CANCELLED if self._cancelled else StepState.FAILED
            error = "cancelled before it started" if self._cancelled else self._spawn_error
            return StepResult(state, None, self.started_at, now, error, None)
        deadline = None if timeout is None else time.monotonic() + timeout
        notify = None
        if on_running is not None:
            notify = _Notify(on_running, self.spawned_monotonic + running_after)
        try:
            in_time = self._pump(deadline, notify)
        finally:
            self.proc.stdout.close()
            self.proc.stderr.close()
        if in_time and notify is not None and not notify.fired:
            # The output is closed: the process is exiting, or runs on without it.
            until = notify.due if deadline is None else min(notify.due, deadline)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=max(0.0, until - time.monotonic()))
            if self.proc.poll() is None and time.monotonic() >= notify.due:
                self._notify(notify)
        if in_time and deadline is not None:
            # The output is closed, but the process may live on (it closed its own stdout).
            try:
                self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                in_time = False
        if not in_time:
            self._timed_out = True
            self._write("system", f"timed out after {timeout:g} s; killing the process tree")
            kill_tree(self.proc.pid, self.kill_grace)
        code = self.proc.wait()
        # Nothing a step started outlives it (a background child, say).
        left = kill_group_remnants(self.proc.pid, self.spawned_at, self.kill_grace)
        if left:
            self._write("system", f"stopped {len(left)} process(es) the step left running: {left}")
        finished = utc_now()
        tail = error_tail("\n".join(self._tail))
        if self._cancelled:
            state, error = StepState.CANCELLED, _join("cancelled", tail)
        elif self._timed_out:
            state, error = StepState.TIMED_OUT, _join(f"timed out after {timeout:g} s", tail)
        elif code == 0:
            state, error = StepState.SUCCEEDED, None
        else:
            state = StepState.FAILED
            error = tail or f"exited with code {code} (nothing on stderr)"
        if self.log.error:
            error = _join(self.log.error, error)
        if self._notify_error is not None:
            raise self._notify_error
        return StepResult(state, code, self.started_at, finished, error, self.proc.pid)


@dataclass
class _Notify:
    """A callback due once the process has run for a while (see `StepProcess.wait`)."""

    callback: Callable[[], None]
    due: float
    fired: bool = False


def _join(head: str, tail: str | None) -> str:
    # The whole error stays within ERROR_TAIL_BYTES, the head included.
    if tail:
        tail = error_tail(tail, ERROR_TAIL_BYTES - len(head.encode()) - 1)
    return f"{head}\n{tail}" if tail else head
