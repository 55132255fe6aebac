"""Worker processes for the ingest: each runs `staging.stage_days` on the jobs it is given.

A worker is a plain interpreter started with `python -m database.parse_workers`; it reads one
JSON job [out_path, [[source_day, gzip path], ...]] a line on stdin and writes each out_path
(as JSON) to stdout once that scratch database is complete, or {"error": message} for a
problem the user can fix (a damaged day file), and stops.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import orjson

from database.errors import MissingDataError, PipelineError
from database.staging import stage_days


def serve() -> None:
    """Worker process: stage each job read from stdin (a JSON [out_path, files] a line),
    writing each out_path (as JSON) to stdout once its scratch database is complete."""
    for line in sys.stdin.buffer:
        out_path, files = orjson.loads(line)
        try:
            done: object = stage_days(out_path, files)
        except PipelineError as exc:  # a user's problem (a damaged file): one line, upstairs
            done = {"error": str(exc)}
        sys.stdout.buffer.write(orjson.dumps(done) + b"\n")
        sys.stdout.buffer.flush()
        if isinstance(done, dict):
            return


def _start_worker() -> tuple[subprocess.Popen[bytes], IO[bytes], IO[bytes]]:
    # A plain interpreter importing only what parsing needs: multiprocessing's spawn would
    # also re-import the parent's main script and all it imports (0.2 s of CPU per worker).
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "database.parse_workers"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=path),
    )
    assert proc.stdin is not None and proc.stdout is not None  # both are PIPEs
    return proc, proc.stdin, proc.stdout


class ParseWorkers:
    """Worker processes running `stage_days` on (out_path, files) jobs.

    Entering the `with` block starts them (job n goes to worker n % workers, so all work from
    the start); iterating yields each out_path in job order once it is complete; leaving waits
    for them, or kills them when the jobs were not all consumed.
    """

    def __init__(self, jobs: list[tuple[str, list[tuple[str, str]]]], workers: int) -> None:
        self._jobs = jobs
        self._count = min(workers, len(jobs))
        self._started: list[tuple[subprocess.Popen[bytes], IO[bytes], IO[bytes]]] = []
        self._finished = False

    def __enter__(self) -> ParseWorkers:
        try:
            for _ in range(self._count):
                self._started.append(_start_worker())
            for n, job in enumerate(self._jobs):
                self._started[n % self._count][1].write(orjson.dumps(job) + b"\n")
            for _, jobs_in, _ in self._started:
                jobs_in.close()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __iter__(self) -> Iterator[str]:
        for n, (out_path, _files) in enumerate(self._jobs):
            proc, _, done_out = self._started[n % self._count]
            line = done_out.readline()
            done = orjson.loads(line) if line else None
            if isinstance(done, dict) and isinstance(done.get("error"), str):
                raise MissingDataError(done["error"])
            if done != out_path:
                raise RuntimeError(
                    f"a parse worker failed (exit code {proc.wait()}); its error is printed above"
                )
            yield out_path
        self._finished = True

    def __exit__(self, *_exc: object) -> None:
        for proc, jobs_in, done_out in self._started:
            if not self._finished:
                proc.kill()
            proc.wait()
            with contextlib.suppress(OSError):  # unsent jobs of a killed worker
                jobs_in.close()
            done_out.close()


if __name__ == "__main__":
    serve()
