"""A real PostgreSQL server on 127.0.0.1 (initdb + pg_ctl in a temp dir) for the scale-out tests.

As root the server runs as the ``postgres`` OS user (PostgreSQL refuses to run as root).
Without the binaries the tests skip, unless ``TROVE_PG_REQUIRED`` is set (CI), where that
is a failure.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

PG_BIN_GLOBS = ("/usr/lib/postgresql/*/bin",)
RUN_AS = "postgres"
SUPERUSER = "postgres"


@dataclass(frozen=True)
class PostgresServer:
    port: int
    data_dir: Path

    def admin_dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={dbname}"

    def url(self, dbname: str) -> str:
        """The SQLAlchemy URL of ``dbname`` (psycopg 3 driver)."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, prefix: str = "trove") -> str:
        """A fresh empty database; returns its SQLAlchemy URL."""
        name = f"{prefix}_{secrets.token_hex(4)}"
        with psycopg.connect(self.admin_dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def find_bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian layout), or one on PATH."""
    for pattern in PG_BIN_GLOBS:
        found = sorted(glob.glob(pattern), key=lambda p: int(Path(p).parent.name or 0))
        for candidate in reversed(found):
            if (Path(candidate) / "initdb").exists():
                return Path(candidate)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", RUN_AS, "--", *argv]


@contextmanager
def start_postgres(
    also_listen: str | None = None, client_cidr: str | None = None
) -> Iterator[PostgresServer]:
    """``also_listen``/``client_cidr``: a second address and the clients trusted there (e2e: pods)."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        reason = "PostgreSQL binaries (initdb, pg_ctl) not found: apt-get install postgresql"
        if os.environ.get("TROVE_PG_REQUIRED"):
            pytest.fail(f"TROVE_PG_REQUIRED is set but {reason}")
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="trove-pg-", dir="/tmp"))
    data_dir = base / "data"
    if os.geteuid() == 0:
        shutil.chown(base, RUN_AS, RUN_AS)
    port = free_port()

    def run(argv: list[str]) -> None:
        subprocess.run(_as_server_user(argv), check=True, capture_output=True, cwd=base, timeout=120)

    run([str(bin_dir / "initdb"), "-D", str(data_dir), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8"])
    listen = "127.0.0.1" + (f",{also_listen}" if also_listen else "")
    if client_cidr:
        with (data_dir / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {client_cidr} trust\n")
    options = f"-h {listen} -p {port} -k {base} -c fsync=off -c max_connections=300"
    try:
        run(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data_dir),
                "-l",
                str(base / "log"),
                "-o",
                options,
                "-w",
                "start",
            ]
        )
    except subprocess.CalledProcessError as exc:
        log = (base / "log").read_text() if (base / "log").exists() else ""
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr!r}\n{log}") from exc
    try:
        yield PostgresServer(port=port, data_dir=data_dir)
    finally:
        subprocess.run(
            _as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-m", "immediate", "stop"]),
            capture_output=True,
            cwd=base,
            timeout=60,
        )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session (skips without the binaries, see the module doc)."""
    with start_postgres() as server:
        yield server


@pytest.fixture(scope="module")
def database_url(postgres: PostgresServer) -> str:
    """A fresh database per test module."""
    return postgres.create_database()


def dsn_of(url: str) -> str:
    """The libpq DSN of a ``postgresql+psycopg://`` URL (for direct checks with psycopg)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)
