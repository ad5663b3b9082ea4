"""What went wrong with the database or the data folder, in words an operator can act on.

One classification for every caller: the service's best-effort writes (the answer cache,
its hit counter, the usage ledger), the writes that must succeed (start-up, ingestion,
uploads: a ``StorageError`` naming the path and the cause), the CLI's one-line message
and the web app's error codes. SQLite reports a full disk, a read-only file and a held
lock only in its message text (its extended codes do not reach Python through
SQLAlchemy); PostgreSQL reports SQLSTATEs; the file system reports an errno.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Literal

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from rag.errors import DatabaseBusy, DiskFull, ReadOnlyStorage, StorageError
from rag.redact import mask_passwords

log = logging.getLogger(__name__)


class Cause(StrEnum):
    LOCKED = "locked"
    FULL = "full"
    READ_ONLY = "read_only"
    CANNOT_OPEN = "cannot_open"
    IO = "io"
    OTHER = "other"


_SQLITE_MESSAGES = (
    ("is locked", Cause.LOCKED),
    ("database or disk is full", Cause.FULL),
    ("readonly database", Cause.READ_ONLY),
    ("unable to open database file", Cause.CANNOT_OPEN),
    ("disk i/o error", Cause.IO),
)
_SQLSTATES = {
    "55P03": Cause.LOCKED,  # lock_not_available (lock_timeout)
    "53100": Cause.FULL,  # disk_full
    "25006": Cause.READ_ONLY,  # read_only_sql_transaction (a standby)
    "58030": Cause.IO,  # io_error
}
_ERRNOS = {
    errno.ENOSPC: Cause.FULL,
    errno.EDQUOT: Cause.FULL,
    errno.EROFS: Cause.READ_ONLY,
    errno.EACCES: Cause.READ_ONLY,
    errno.EPERM: Cause.READ_ONLY,
    errno.EIO: Cause.IO,
}
_REASONS = {
    Cause.LOCKED: "another connection holds the write lock (a backup, VACUUM or migration?)",
    Cause.FULL: "disk full",
    Cause.READ_ONLY: "it is read-only",
    Cause.CANNOT_OPEN: "the file cannot be opened or created",
    Cause.IO: "disk I/O error",
}
_ERRORS: dict[Cause, type[StorageError]] = {
    Cause.LOCKED: DatabaseBusy,
    Cause.FULL: DiskFull,
    Cause.READ_ONLY: ReadOnlyStorage,
}


def cause_of(exc: BaseException) -> Cause | None:
    """Why the database or file system failed, or None when ``exc`` is neither."""
    inner = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    if isinstance(inner, OSError) and not isinstance(inner, TimeoutError):
        return _ERRNOS.get(inner.errno or 0, Cause.OTHER)
    if not isinstance(inner, SQLAlchemyError | sqlite3.Error) and inner is exc:
        return None
    state = getattr(inner, "sqlstate", None)
    if isinstance(state, str) and state in _SQLSTATES:
        return _SQLSTATES[state]
    text = str(inner).lower()
    return next((cause for needle, cause in _SQLITE_MESSAGES if needle in text), Cause.OTHER)


def reason(exc: BaseException, path: Path | None = None) -> str:
    """A few words on the cause; with ``path`` (a SQLite file), which part is read-only."""
    cause = cause_of(exc) or Cause.OTHER
    if (
        cause in (Cause.READ_ONLY, Cause.CANNOT_OPEN)
        and path is not None
        and (found := _unwritable(path))
    ):
        return found
    if cause is Cause.OTHER:
        return _first_line(exc)
    return _REASONS[cause]


def storage_error(exc: BaseException, path: Path | None, action: str = "write") -> StorageError:
    """The ``StorageError`` an operator reads: the database's path and the cause."""
    cause = cause_of(exc) or Cause.OTHER
    if cause is Cause.CANNOT_OPEN and path is not None and _unwritable(path):
        cause = Cause.READ_ONLY
    where = f"the database {path}" if path is not None else "the database"
    return _ERRORS.get(cause, StorageError)(f"cannot {action} {where}: {reason(exc, path)}")


def as_storage_error(
    exc: BaseException, path: Path | None, action: str = "write"
) -> StorageError | None:
    """``storage_error`` for a failure with a known cause; None for anything else (a bug,
    or a database error this module cannot name), which should stay what it is."""
    if cause_of(exc) in (None, Cause.OTHER):
        return None
    return storage_error(exc, path, action)


@contextmanager
def storage_errors(path: Path | None, action: str = "write") -> Iterator[None]:
    """Work that must reach the database: a known storage failure becomes a ``StorageError``."""
    try:
        yield
    except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
        if (error := as_storage_error(exc, path, action)) is None:
            raise
        raise error from exc


def _unwritable(path: Path) -> str | None:
    """Which of the folder or the file refuses writes, by trying: as root, or on a
    read-only mount or an immutable file, the permission bits do not tell."""
    folder = path.parent
    if not folder.is_dir():
        return f"the folder {folder} does not exist"
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return f"the folder is read-only ({exc.strerror})"
    if path.exists():
        try:
            with path.open("r+b"):
                pass
        except OSError as exc:
            return f"the file is read-only ({exc.strerror})"
    return None


def _first_line(exc: BaseException) -> str:
    inner = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    # A driver may quote the URL it was given (an invalid DSN): never its password.
    text = mask_passwords(str(inner)).strip().splitlines()
    return f"{type(inner).__name__}: {text[0]}" if text else type(inner).__name__


Operation = Literal["read", "write"]
FailureObserver = Callable[[str, str], None]
"""Called with what failed ("cache", "hits", "ledger", "budget") and whether it was a read."""


class BestEffort:
    """Database work an answer can do without: a failure is logged once while it lasts,
    counted by the observers, and swallowed.

    ``failing`` holds what is failing now ("cache write", "budget read") and why
    (readiness reports it); the next success of that work clears it, with a log line.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.observers: list[FailureObserver] = []
        self.failing: dict[str, str] = {}

    @asynccontextmanager
    async def attempt(self, what: str, op: Operation = "write") -> AsyncIterator[None]:
        try:
            yield
        except Exception as exc:
            self._failed(what, op, exc)
        else:
            if self.failing.pop(f"{what} {op}", None) is not None:
                log.info("%s %ss work again", what, op)

    def _failed(self, what: str, op: Operation, exc: Exception) -> None:
        if f"{what} {op}" not in self.failing:
            # Once per outage, not per answer; never the question, only the cause.
            # Anything that is not the database may be a bug: its traceback is wanted.
            log.warning(
                "%s %s failed on the database %s, answers go on without it: %s",
                what,
                op,
                self.path or "",
                reason(exc, self.path),
                exc_info=exc if cause_of(exc) is None else None,
            )
        # Without the path: readiness reports this to whoever asks.
        self.failing[f"{what} {op}"] = reason(exc)
        for observe in self.observers:
            try:
                observe(what, op)
            except Exception:  # a metric must not fail what it counts
                log.exception("counting a database failure failed")
