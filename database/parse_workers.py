"""Worker processes for the ingest: each runs `staging.stage_days` on the jobs it is given.

A worker is a plain interpreter started with `python -m database.parse_workers JOBS`, where
JOBS is a JSON file of its jobs [[out_path, [[source_day, gzip path], ...]], ...]; it writes
each out_path (as JSON) to stdout once that scratch database is complete, or {"error": message}
for a problem the user can fix (a damaged day file, a full disk), and stops. (Jobs go in a
file, not down a pipe: a long window's jobs overfill a pipe, and a parent blocked writing them
while a worker waits for it to read would hang both.)
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import orjson

from database.errors import MissingDataError, PipelineError
from database.staging import stage_days


def serve(jobs_file: str) -> None:
    """Worker process: stage each job of `jobs_file`, writing each out_path (as JSON) to
    stdout once its scratch database is complete."""
    for out_path, files in orjson.loads(Path(jobs_file).read_bytes()):
        try:
            done: object = stage_days(out_path, files)
        except PipelineError as exc:  # a user's problem (a damaged file): one line, upstairs
            done = {"error": str(exc)}
        except (OSError, sqlite3.OperationalError) as exc:  # the machine's: a full disk, say
            done = {
                "error": f"a parse worker could not write {out_path} ({exc}); check the free "
                "space beside the database"
            }
        sys.stdout.buffer.write(orjson.dumps(done) + b"\n")
        sys.stdout.buffer.flush()
        if isinstance(done, dict):
            return


def _start_worker(jobs_file: Path) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    # A plain interpreter importing only what parsing needs: multiprocessing's spawn would
    # also re-import the parent's main script and all it imports (0.2 s of CPU per worker).
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "database.parse_workers", str(jobs_file)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=path),
    )
    assert proc.stdout is not None  # a PIPE
    return proc, proc.stdout


class ParseWorkers:
    """Worker processes running `stage_days` on (out_path, files) jobs.

    Entering the `with` block starts them (job n goes to worker n % workers, so all work from
    the start); iterating yields each out_path in job order once it is complete; leaving waits
    for them, or kills them when the jobs were not all consumed.
    """

    def __init__(self, jobs: list[tuple[str, list[tuple[str, str]]]], workers: int) -> None:
        self._jobs = jobs
        self._count = min(workers, len(jobs))
        self._started: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []
        self._finished = False

    def __enter__(self) -> ParseWorkers:
        try:
            folder = Path(self._jobs[0][0]).parent
            for n in range(self._count):
                jobs_file = folder / f"jobs-{n}.json"
                jobs_file.write_bytes(orjson.dumps(self._jobs[n :: self._count]))
                self._started.append(_start_worker(jobs_file))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __iter__(self) -> Iterator[str]:
        for n, (out_path, _files) in enumerate(self._jobs):
            proc, done_out = self._started[n % self._count]
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
        for proc, done_out in self._started:
            if not self._finished:
                proc.kill()
            proc.wait()
            done_out.close()


if __name__ == "__main__":
    serve(sys.argv[1])
