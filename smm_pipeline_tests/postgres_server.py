"""A throwaway Postgres for tests: the server binaries of the `pgserver` package, listening on
127.0.0.1 with password authentication, so a test reaches it exactly as a deployment reaches its
Postgres (host, port, user, password and database from environment variables).

Fixtures (import them into a test module, or into conftest.py for every module):

- `postgres_server` (session): one server for the whole session, started on first use (about
  2 s) and stopped, with its data directory deleted, at the end of the session.
- `postgres_database` (per test): a fresh, empty database on that server; its `env()` is the
  `DAGSTER_PG_*` variables that deploy/dagster.postgres.yaml reads.

As root (CI), Postgres refuses to run as root: the server runs as the system user `pgserver`
(pgserver's own convention; created with useradd when missing), and its directory is handed to
that user. Nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

HOST = "127.0.0.1"
USERNAME = "smm_test"
START_ATTEMPTS = 3  # a free port taken by someone else between the probe and the start
_database_numbers = itertools.count(1)


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    username: str
    password: str
    root: Path  # data directory, socket and log

    def connect(self, database: str = "postgres"):
        """A psycopg2 connection (over TCP, with the password)."""
        import psycopg2

        return psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.username,
            password=self.password,
            dbname=database,
        )

    def sqlalchemy_url(self, database: str):
        import sqlalchemy

        return sqlalchemy.URL.create(
            "postgresql+psycopg2",
            username=self.username,
            password=self.password,
            host=self.host,
            port=self.port,
            database=database,
        )

    def create_database(self, name: str) -> PostgresDatabase:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"not a plain database name: {name!r}")
        con = self.connect()
        try:
            con.autocommit = True
            with con.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            con.close()
        return PostgresDatabase(self, name)


@dataclass(frozen=True)
class PostgresDatabase:
    server: PostgresServer
    name: str

    def env(self) -> dict[str, str]:
        """The environment deploy/dagster.postgres.yaml reads its connection from."""
        return {
            "DAGSTER_PG_HOST": self.server.host,
            "DAGSTER_PG_PORT": str(self.server.port),
            "DAGSTER_PG_USERNAME": self.server.username,
            "DAGSTER_PG_PASSWORD": self.server.password,
            "DAGSTER_PG_DB": self.name,
        }

    def connect(self):
        return self.server.connect(self.name)

    def url(self) -> str:
        """A postgresql:// URL for this database (SMM_WAREHOUSE_URL), password quoted."""
        from urllib.parse import quote

        s = self.server
        return (
            f"postgresql://{s.username}:{quote(s.password, safe='')}@{s.host}:{s.port}/{self.name}"
        )

    def sqlalchemy_url(self):
        return self.server.sqlalchemy_url(self.name)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _pgserver():
    """The pgserver package (importing it warns when XDG_RUNTIME_DIR is unset, as in CI; we
    use only its binaries and its user helper, not its runtime directory)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver._commands
        import pgserver.utils
    return pgserver


def _run_as() -> tuple[str | None, int | None, int | None]:
    """(user for subprocess, uid, gid) of the server: ourselves, or `pgserver` when root."""
    if os.geteuid() != 0:
        return None, None, None
    # One process at a time creates the user: the suite's xdist workers start together.
    with open(Path(tempfile.gettempdir()) / "smm_pgserver_user.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entry = _pgserver().utils.ensure_user_exists("pgserver")
    return entry.pw_name, entry.pw_uid, entry.pw_gid


def _bin(name: str, bin_dir: Path | None = None) -> str:
    return str((bin_dir or _pgserver()._commands.POSTGRES_BIN_PATH) / name)


def _reachable_bin_dir(user: str | None, scratch: Path) -> Path:
    """Where `user` can run the server binaries from. As root the server runs as `pgserver`,
    which cannot reach a venv under a private directory (a `mktemp -d` checkout, /root): then
    pgserver's installation (and the libraries beside it) is copied into `scratch`, which that
    user can read."""
    installed = _pgserver()._commands.POSTGRES_BIN_PATH
    if user is None:
        return installed
    try:
        subprocess.run(
            [str(installed / "initdb"), "--version"], user=user, capture_output=True, check=True
        )
        return installed
    except (PermissionError, subprocess.CalledProcessError):
        # The binaries find their libraries at $ORIGIN/../../../pgserver.libs: keep that shape.
        install = installed.parent  # site-packages/pgserver/pginstall
        site = install.parent.parent
        shutil.copytree(
            install, scratch / "pgserver" / "pginstall", ignore=shutil.ignore_patterns("include")
        )
        shutil.copytree(site / "pgserver.libs", scratch / "pgserver.libs")
        return scratch / "pgserver" / "pginstall" / "bin"


def _pg(args: list[str], user: str | None, timeout: float = 60) -> None:
    result = subprocess.run(
        args,
        user=user,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "LC_ALL": "C"},
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{Path(args[0]).name} failed ({result.returncode}): {result.stderr}")


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Start a Postgres on 127.0.0.1 (a free port) with a random password; stop and delete it
    on exit."""
    user, uid, gid = _run_as()
    root = Path(tempfile.mkdtemp(prefix="smm-pg-"))
    root.chmod(0o755)  # the binaries copied here (as root) must be readable by the server
    data = root / "data"
    # Characters that must be quoted in a URL: the password travels through dagster-postgres's
    # connection string, so a test with it proves the quoting.
    password = f"{secrets.token_hex(8)}@:/%"
    bin_dir: Path | None = None
    try:
        bin_dir = _reachable_bin_dir(user, root)
        if uid is not None:
            os.chown(root, uid, gid)
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        if uid is not None:
            os.chown(pwfile, uid, gid)
        _pg(
            [_bin("initdb", bin_dir), "-D", str(data), "-U", USERNAME, f"--pwfile={pwfile}",
             "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "--encoding=UTF8",
             "--locale=C", "--no-sync"],
            user,
        )  # fmt: skip
        pwfile.unlink()
        for attempt in range(START_ATTEMPTS):
            port = _free_port()
            # A throwaway server: no durability needed, so no fsync.
            options = (
                f"-c listen_addresses={HOST} -p {port} -k {root} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                _pg(
                    [_bin("pg_ctl", bin_dir), "-D", str(data), "-l", str(root / "log"),
                     "-o", options, "-w", "-t", "30", "start"],
                    user,
                )  # fmt: skip
                break
            except RuntimeError:
                if attempt == START_ATTEMPTS - 1:
                    log = root / "log"
                    raise RuntimeError(
                        "postgres did not start: " + (log.read_text() if log.exists() else "")
                    ) from None
        yield PostgresServer(HOST, port, USERNAME, password, root)
    finally:
        if (data / "postmaster.pid").exists():
            _pg([_bin("pg_ctl", bin_dir), "-D", str(data), "-m", "immediate", "-w", "stop"], user)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One Postgres for the session (see the module docstring)."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_database(
    postgres_server: PostgresServer, request: pytest.FixtureRequest
) -> PostgresDatabase:
    """A fresh, empty database for this test, named after it."""
    slug = re.sub(r"[^a-z0-9_]+", "_", request.node.name.lower())
    name = f"t{next(_database_numbers)}_{slug}"[:63]
    return postgres_server.create_database(name)
