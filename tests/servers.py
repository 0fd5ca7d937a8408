"""Real servers for the tests, started on loopback in a throwaway directory.

PostgreSQL comes from Debian's `postgresql` package (make test installs it). Set
MELOMANIA_TEST_POSTGRES_URL to use a server you already run instead.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield an asyncpg URL for a fresh PostgreSQL cluster; stop and delete it afterwards."""
    if url := os.environ.get("MELOMANIA_TEST_POSTGRES_URL"):
        yield url
        return
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        raise RuntimeError(
            "PostgreSQL is not installed: run `make test` (it installs Debian's postgresql), "
            "or set MELOMANIA_TEST_POSTGRES_URL"
        )
    bindir = Path(bins[-1]).parent
    # the server refuses to run as root; run it as the postgres user the package created
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="melomania-pg-"))
    if as_pg:
        shutil.chown(root, "postgres")
    data, port = root / "data", free_port()
    subprocess.run(
        [*as_pg, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"
    subprocess.run(
        [*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o", opts, "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)
