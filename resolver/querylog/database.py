"""The query log's database file: opened with the schema in place, and watched for deletion,
replacement and damage so that rows never go to a file nobody can read.

Description:
    Only the writer thread uses a `LogDatabase`. Before each write it compares the file at the
    path with the one its connection has open (device, inode, size and modification time of
    the database, and which -wal and -shm files it has, as the writer's own last write left
    them): three `stat` calls. A file that was deleted or replaced means a new connection,
    and a new file when none is there, never the old -wal and -shm files. A file that is not
    a database, found so on opening, on writing, or after another program overwrote it in
    place, is moved aside as `queries.db.corrupt-<unix time>` and a new one is started. Each
    of these is said once, as a warning. Other failures (a locked database, a full disk) are
    said once each, as an error; the writer then waits `retry_after_s` before it opens the
    file again.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aidns.resolver.querylog.schema import connect

log = logging.getLogger(__name__)

CORRUPT_ERRORS = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
CORRUPT_WORDS = ("malformed", "not a database", "corrupt")


def is_corrupt(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    return name.startswith(CORRUPT_ERRORS) or any(word in text for word in CORRUPT_WORDS)


COMPANIONS = ("-wal", "-shm")


@dataclass(frozen=True, slots=True)
class FileState:
    """What `stat` says about the database file and its -wal and -shm files."""

    identity: tuple[int, int]  # device, inode
    size: int
    modified_ns: int
    companions: tuple[tuple[int, int] | None, ...]  # identities of -wal and -shm


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def file_state(path: Path) -> FileState | None:
    """The file's state; None when there is no file at `path`."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    companions = tuple(_identity(path.with_name(path.name + suffix)) for suffix in COMPANIONS)
    return FileState((found.st_dev, found.st_ino), found.st_size, found.st_mtime_ns, companions)


def is_database(path: Path) -> bool:
    """Whether the file's first page is a database's. Read through SQLite, which keeps its
    locks on the file when this connection closes; a plain open and close would drop them."""
    uri = "file:" + urllib.parse.quote(str(path)) + "?immutable=1"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
            connection.execute("PRAGMA schema_version").fetchone()
    except sqlite3.Error as exc:
        return not is_corrupt(exc)
    return True


class LogDatabase:
    """The SQLite file of the query log, as the writer thread sees it."""

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout_s: float = 1.0,
        retry_after_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._connection: sqlite3.Connection | None = None
        self._seen: FileState | None = None  # as our own last write left the file
        self._failing: str | None = None
        self._retry_at = -math.inf

    def write(self, work: Callable[[sqlite3.Connection], object]) -> bool:
        """Run `work` in one transaction; True only when the file at the path kept it."""
        connection = self.connection()
        if connection is None:
            return False
        before = self._seen
        try:
            with connection:
                work(connection)
        except sqlite3.Error as exc:
            if is_corrupt(exc):
                self._close()
                self._open(exc)
            else:
                self._fail(exc)
            return False
        self._seen = after = file_state(self.path)
        if self._failing is not None:
            log.warning("query log %s is writable again", self.path)
            self._failing = None
        # deleted or replaced during the write: the rows went to a file nobody can read
        return before is not None and after is not None and before.identity == after.identity

    def connection(self) -> sqlite3.Connection | None:
        """A connection to the file now at the path, or None while it fails."""
        if self._connection is not None:
            self._check_file()
        if self._connection is None and self._clock() >= self._retry_at:
            self._open()
        return self._connection

    def close(self) -> None:
        self._close()

    def _check_file(self) -> None:
        now = file_state(self.path)
        seen = self._seen
        if now is not None and now == seen:
            return
        if now is None:
            change, outcome = "was deleted while aidns ran", ""
        elif seen is None or now.identity != seen.identity:
            change, outcome = "was replaced while aidns ran", "now writing to the new file"
        elif now.companions != seen.companions:
            change, outcome = "lost its -wal or -shm file while aidns ran", "reopened it"
        elif now.size == 0 or not is_database(self.path):
            self._close()
            overwritten = sqlite3.DatabaseError("file is not a database")
            self._open(overwritten, change="was overwritten while aidns ran")
            return
        else:
            self._seen = now  # another program wrote to it through SQLite
            return
        self._close()
        if seen is not None:
            self._remove_companions(seen)
        self._open(change=change, outcome=outcome)

    def _remove_companions(self, seen: FileState) -> None:
        """Remove the -wal and -shm files of the file we had open: SQLite would read the old
        pages in them over a new file at the path."""
        for suffix, identity in zip(COMPANIONS, seen.companions, strict=True):
            companion = self.path.with_name(self.path.name + suffix)
            if identity is not None and _identity(companion) == identity:
                with contextlib.suppress(OSError):
                    companion.unlink()

    def _open(
        self, corrupt: sqlite3.Error | None = None, change: str = "", outcome: str = ""
    ) -> None:
        """Open the file at the path, moving it aside first when it is `corrupt`; say what
        `change` to the file made this necessary, and the `outcome` when one was there."""
        path = self.path
        aside: Path | None = None
        existed = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if corrupt is None:
                existed = path.exists()
                try:
                    self._connection = connect(path, timeout_s=self.busy_timeout_s)
                except sqlite3.DatabaseError as exc:
                    if not is_corrupt(exc):
                        raise
                    corrupt = exc
            if corrupt is not None:
                aside = self._move_aside()
                self._connection = connect(path, timeout_s=self.busy_timeout_s)
            self._seen = file_state(path)
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)
            return
        if aside is not None:
            log.warning(
                "query log %s%s: %s; moved it to %s and started a new one",
                path,
                f" {change}" if change else "",
                corrupt,
                aside,
            )
        elif change:
            outcome = outcome if existed and outcome else "started a new one"
            log.warning("query log %s %s; %s", path, change, outcome)

    def _move_aside(self) -> Path:
        stamp = int(time.time())
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        serial = 1
        while aside.exists():
            serial += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{serial}")
        self.path.rename(aside)
        for suffix in COMPANIONS:
            self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)
        return aside

    def _fail(self, exc: Exception) -> None:
        """Say it once, close, and try again after `retry_after_s`."""
        reason = str(exc)
        if self._failing != reason:
            log.error(
                "query log %s: %s; still answering, dropping records until it recovers",
                self.path,
                reason,
            )
            self._failing = reason
        self._close()
        self._retry_at = self._clock() + self.retry_after_s

    def _close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
            self._connection = None
        self._seen = None
