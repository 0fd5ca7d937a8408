"""Users, tracks, favourites, shares and jobs in SQLite or PostgreSQL, and the artifact store.

Repository functions take an AsyncSession and run inside `Database.run`, one transaction each;
access checks live here: a user reads and changes only their own history and favourites, and a
shared track is readable by anyone in that channel.
"""

from .artifacts import ArtifactStore, LocalArtifactStore
from .db import Database
from .errors import ArtifactStoreError, Forbidden, InvalidTransition, NotFound, StorageError, StorageUnavailable
from .models import Favorite, Job, JobState, Platform, Share, Track, TrackStatus, User

__all__ = [
    "ArtifactStore",
    "ArtifactStoreError",
    "Database",
    "Favorite",
    "Forbidden",
    "InvalidTransition",
    "Job",
    "JobState",
    "LocalArtifactStore",
    "NotFound",
    "Platform",
    "Share",
    "StorageError",
    "StorageUnavailable",
    "Track",
    "TrackStatus",
    "User",
]
