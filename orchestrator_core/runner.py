"""Run one step: a subprocess in its own process group, its output streamed line by line
into a log file, with a timeout and a cancel that kill the whole process tree."""

from __future__ import annotations

import collections
import os
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from .processes import kill_tree
from .status import StepState, error_tail, iso, utc_now

LineSink = Callable[[str, str], None]
MAX_LINE_BYTES = 64 * 1024  # longer lines are split so memory stays bounded
TAIL_LINES = 64
DRAIN_SECONDS = 1.0


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
        log_fd: int,
        on_line: LineSink | None = None,
        kill_grace: float = 2.0,
    ) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        self.env = env
        self.log_fd = log_fd
        self.on_line = on_line
        self.kill_grace = kill_grace
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = utc_now()
        self._cancelled = False
        self._timed_out = False
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._log_lock = threading.Lock()
        self._pumps: list[threading.Thread] = []
        self._spawn_error: str | None = None

    @property
    def pid(self) -> int | None:
        """The step process's pid once started."""
        return self.proc.pid if self.proc else None

    def start(self) -> int | None:
        """Launch the process and its output pumps; returns its pid (None if it could not start)."""
        if self._cancelled:
            return None
        self.started_at = utc_now()
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
        for pipe, stream in ((self.proc.stdout, "stdout"), (self.proc.stderr, "stderr")):
            t = threading.Thread(target=self._pump, args=(pipe, stream), daemon=True)
            t.start()
            self._pumps.append(t)
        return self.proc.pid

    def _write(self, stream: str, text: str) -> None:
        line = f"{iso(utc_now())} {stream} {text}\n".encode("utf-8", "replace")
        with self._log_lock:
            os.write(self.log_fd, line)

    def _pump(self, pipe, stream: str) -> None:
        keep_tail = stream == "stderr"
        with pipe:
            for raw in iter(lambda: pipe.readline(MAX_LINE_BYTES), b""):
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                self._write(stream, text)
                if keep_tail:
                    self._tail.append(text)
                if self.on_line is not None:
                    self.on_line(stream, text)

    def cancel(self) -> None:
        """Stop the step: SIGTERM its process tree, SIGKILL after the grace period."""
        self._cancelled = True
        if self.proc is not None and self.proc.poll() is None:
            kill_tree(self.proc.pid, self.kill_grace)

    def wait(self, timeout: float | None = None) -> StepResult:
        """Wait for the end (killing the tree on timeout) and say how it ended."""
        if self.proc is None:
            now = utc_now()
            state = StepState.CANCELLED if self._cancelled else StepState.FAILED
            error = "cancelled before it started" if self._cancelled else self._spawn_error
            return StepResult(state, None, self.started_at, now, error, None)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._timed_out = True
            self._write("system", f"timed out after {timeout:g} s; killing the process tree")
            kill_tree(self.proc.pid, self.kill_grace)
            code = self.proc.wait()
        self._drain()
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
        return StepResult(state, code, self.started_at, finished, error, self.proc.pid)

    def _drain(self) -> None:
        for t in self._pumps:
            t.join(DRAIN_SECONDS)
        if any(t.is_alive() for t in self._pumps):
            # A leftover child still holds the output pipes open: end the step's group.
            self._write(
                "system", "processes left behind by the step still hold its output; killing them"
            )
            kill_tree(self.proc.pid, self.kill_grace)
            for t in self._pumps:
                t.join(DRAIN_SECONDS)


def _join(head: str, tail: str | None) -> str:
    return f"{head}\n{tail}" if tail else head
