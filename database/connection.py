"""SQLite connections: WAL, a busy timeout, foreign keys, and explicit transactions."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from database.errors import MissingDataError, PipelineError

BUSY_TIMEOUT_MS = 10_000
PAGE_SIZE = 16_384
# SQLite's default: checkpoint once the WAL holds this many pages.
WAL_AUTOCHECKPOINT = 1000


def connect(db_path: Path, *, create: bool = False) -> sqlite3.Connection:
    """Open the database in autocommit mode; without `create`, a missing file is a user error."""
    db_path = Path(db_path)
    if not create and not db_path.is_file():
        raise MissingDataError(
            f"database {db_path} does not exist; run step ingest_data "
            "(pipelines/mixpanel_pipeline/02_ingest_data.py) first"
        )
    try:
        if create:
            db_path.parent.mkdir(parents=True, exist_ok=True)
        new_file = not db_path.is_file() or db_path.stat().st_size == 0
        # isolation_level=None: we open every transaction ourselves, none is left open by accident.
        conn = sqlite3.connect(db_path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    except (OSError, sqlite3.OperationalError) as exc:
        raise PipelineError(
            f"database {db_path} cannot be opened ({exc}); check MIXPANEL_DB_PATH and that its "
            "folder can be written"
        ) from None
    try:
        if new_file:
            # Larger pages halved the time to maintain the events' 4-column unique index in
            # the benchmark; the size can only be chosen before the first table exists.
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL is safe in WAL mode (a crash may lose the last commit, never corrupt the file).
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA cache_size = -65536")
    except sqlite3.DatabaseError as exc:  # "file is not a database", a damaged file
        conn.close()
        problem = database_problem(db_path, exc)
        if problem is None:
            raise
        raise problem from None
    return conn


def database_problem(db_path: Path, exc: sqlite3.Error) -> PipelineError | None:
    """The one line for an error of the database file or its disk (by SQLite's own error
    name: busy, full, damaged, not a database, cannot be opened or written), or None for any
    other error, which is a bug of ours and keeps its traceback."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return PipelineError(
            f"the database is busy ({exc}); another run may be writing, run the step again later"
        )
    if name.startswith("SQLITE_FULL"):
        return PipelineError(
            f"database {db_path}: {exc}; free some space on its disk, then run the step again"
        )
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return PipelineError(
            f"database {db_path} cannot be used ({exc}); move it aside and run the pipeline to "
            "build a new one, or point MIXPANEL_DB_PATH at the right file"
        )
    if name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM")):
        return PipelineError(
            f"database {db_path} cannot be read or written ({exc}); check MIXPANEL_DB_PATH, "
            "its folder's permissions and its disk"
        )
    return None


def connect_readonly(db_path: Path) -> sqlite3.Connection:
    """Open the database read-only (for pages and reports): never creates or changes the file."""
    db_path = Path(db_path)
    if not db_path.is_file():
        raise MissingDataError(
            f"database {db_path} does not exist; run the mixpanel_pipeline (step ingest_data) first"
        )
    conn = sqlite3.connect(
        f"{db_path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, timeout=10
    )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the block in one write transaction: commit on success, roll back on any error."""
    # IMMEDIATE takes the write lock up front, so a concurrent writer waits instead of failing late.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class BackgroundCheckpoints:
    """Copies the WAL into the database from a thread of its own while `conn` writes.

    A bulk load otherwise spends about a quarter of its time in the automatic checkpoint that
    follows each commit; in a thread (sqlite3 releases the GIL) that runs beside the next batch.
    Call `committed` after each commit; leave the `with` block before closing `conn`.
    """

    def __init__(self, conn: sqlite3.Connection, db_path: Path) -> None:
        self._conn, self._db_path = conn, Path(db_path)
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)

    def __enter__(self) -> BackgroundCheckpoints:
        self._conn.execute("PRAGMA wal_autocheckpoint = 0")
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()
        # Back to automatic checkpoints: the next commit or the close copies what is left.
        self._conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT}")

    def committed(self) -> None:
        """Tell the thread there are new pages in the WAL."""
        self._wake.set()

    def _run(self) -> None:
        with closing(sqlite3.connect(self._db_path, isolation_level=None)) as conn:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            while not self._stop.is_set():
                self._wake.wait()
                self._wake.clear()
                try:
                    # PASSIVE never blocks the writer; pages it cannot copy yet wait for the
                    # next round (or the automatic checkpoint after the block).
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:
                    # Only the copy is delayed: the WAL stays valid and complete.
                    continue
