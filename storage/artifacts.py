"""Content-addressed files (MP3, MIDI, PNG) under a data directory.

A key is `ab/<sha256>.<ext>`: the same bytes always get the same key, a key can never name a path
outside the store, and every write is a temp file renamed into place, so a reader never sees half
a file. `ArtifactStore` is the interface an S3-compatible store could implement later.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

from .errors import FULL_ERRNOS, ArtifactStoreError, NotFound

KEY = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{64}\.(mp3|mid|png)$")


class ArtifactStore(Protocol):
    def put(self, data: bytes, ext: str) -> str: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...


def key_for(data: bytes, ext: str) -> str:
    digest = hashlib.sha256(data).hexdigest()
    key = f"{digest[:2]}/{digest}.{ext}"
    if not KEY.match(key):
        raise ValueError(f"artifact type must be mp3, mid or png, got {ext!r}")
    return key


class LocalArtifactStore:
    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        if not isinstance(key, str) or not KEY.match(key):
            raise NotFound(f"not an artifact key: {key!r}")
        return self.root / key

    def put(self, data: bytes, ext: str) -> str:
        key = key_for(data, ext)
        dest = self.path(key)
        if dest.exists():
            return key  # same bytes, same key: nothing to write
        tmp_name = None
        try:
            dest.parent.mkdir(exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp_name, dest)
            tmp_name = None
        except OSError as exc:
            if exc.errno in FULL_ERRNOS:
                raise ArtifactStoreError("the artifact disk is full; nothing was saved (free space and retry)") from exc
            raise ArtifactStoreError(f"could not store the file: {exc.strerror or exc}") from exc
        finally:
            if tmp_name is not None:
                Path(tmp_name).unlink(missing_ok=True)
        return key

    def put_file(self, path: str | os.PathLike[str]) -> str:
        p = Path(path)
        return self.put(p.read_bytes(), p.suffix.lstrip("."))

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"artifact {key} is gone") from None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)
