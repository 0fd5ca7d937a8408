"""Errors storage callers can cause or meet, with messages a person can act on."""


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
