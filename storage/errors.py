"""Errors storage callers can cause or meet, with messages a person can act on."""

import errno

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})  # no room to write


class StorageError(Exception):
    """Base for everything storage raises on purpose."""


class NotFound(StorageError):
    pass


class Forbidden(StorageError):
    """The user may not read or change this (someone else's private track, say)."""


class InvalidTransition(StorageError):
    """A job was asked to move to a state it cannot reach from where it is."""


class StorageUnavailable(StorageError):
    """The database stayed unreachable after retries; nothing was written."""


class ArtifactStoreError(StorageError):
    """Files could not be stored (a full disk, say); nothing was recorded."""


def out_of_space(exc: BaseException) -> bool:
    """Whether `exc` says a disk or database is full: the OS (ENOSPC, EDQUOT, EFBIG), SQLite
    (SQLITE_FULL) or PostgreSQL (SQLSTATE 53100, disk_full), also when wrapped by
    SQLAlchemy or by one of ours."""
    import sqlite3

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
            return True
        if isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return True
        if getattr(exc, "sqlstate", None) == "53100":  # disk_full
            return True
        exc = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def storage_trouble(exc: BaseException) -> bool:
    """Whether `exc` came from storage: one of ours, or the database driver's own."""
    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(exc, (StorageError, SQLAlchemyError))
