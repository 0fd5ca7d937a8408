"""Real servers for the tests (and bench/faults.py), started on loopback in a throwaway directory.

PostgreSQL comes from Debian's `postgresql` package (make test installs it). Set
MELOMANIA_TEST_POSTGRES_URL to use a server you already run instead.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:g} s")


class PostgresServer:
    """A PostgreSQL cluster of our own on loopback, in a throwaway directory, that a test may stop,
    start and restart as an operator would (`pg_ctl`)."""

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            raise RuntimeError(
                "PostgreSQL is not installed: run `make test` (it installs Debian's postgresql), "
                "or set MELOMANIA_TEST_POSTGRES_URL"
            )
        self.bindir = Path(bins[-1]).parent
        # the server refuses to run as root; run it as the postgres user the package created
        self._as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.root = Path(tempfile.mkdtemp(prefix="melomania-pg-"))
        if self._as_pg:
            shutil.chown(self.root, "postgres")
        self.data, self.port = self.root / "data", free_port()
        initdb = [str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"]
        subprocess.run([*self._as_pg, *initdb, "-E", "UTF8"], check=True, capture_output=True)

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, *args: str, check: bool = True) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"
        command = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-o", opts]
        subprocess.run([*self._as_pg, *command, *args], check=check, capture_output=True)

    def start(self) -> None:
        self._pg_ctl("-w", "start")

    def stop(self, mode: str = "immediate") -> None:
        """`immediate`: as a crash or a power cut would, no connection told, the next start recovers."""
        self._pg_ctl("-w", "-m", mode, "stop", check=False)

    def restart(self, mode: str = "immediate") -> None:
        """Stop and start again, waiting until it takes connections (`pg_ctl restart -m immediate`)."""
        self._pg_ctl("-w", "-m", mode, "restart")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def own_postgres_server() -> Iterator[PostgresServer]:
    """A running server no other test shares, for tests that stop or restart it."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield an asyncpg URL for a fresh PostgreSQL cluster; stop and delete it afterwards."""
    if url := os.environ.get("MELOMANIA_TEST_POSTGRES_URL"):
        yield url
        return
    with own_postgres_server() as server:
        yield server.url


class RedisServer:
    """A private redis-server on loopback. `persist`: Redis's own defaults, as the project's
    docker-compose runs it (RDB snapshots at the default save points, no append-only file), so
    that a restart keeps what a real one would; otherwise nothing is ever written to disk."""

    def __init__(self, persist: bool = False) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError(
                "redis-server is not installed: run `make test` (it installs Debian's redis-server), "
                "or set MELOMANIA_TEST_REDIS_URL"
            )
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="melomania-redis-"))
        kept = [] if persist else ["--save", "", "--appendonly", "no"]
        self.command = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root), *kept]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> str:
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        return self.url

    def halt(self, crash: bool = False) -> None:
        """Stop the server: SIGTERM (it saves its snapshot first, when it persists), or SIGKILL
        (`crash`: whatever the last snapshot holds is all that comes back)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL if crash else signal.SIGTERM)
            self.process.wait(30)
            self.process = None

    def restart(self, crash: bool = False) -> None:
        self.halt(crash)
        self.start()

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def redis_server() -> Iterator[str]:
    """Yield a redis:// URL for a private redis-server on loopback, without persistence."""
    if url := os.environ.get("MELOMANIA_TEST_REDIS_URL"):
        yield url
        return
    server = RedisServer()
    try:
        yield server.start()
    finally:
        server.stop()
