"""A real PostgreSQL server for tests: Debian's binaries in a temporary directory.

`PostgresServer` runs `initdb` and `postgres` from the `postgresql` package (the newest
`/usr/lib/postgresql/N/bin`, else `PG_BINDIR`, else what `PATH` has) on a free 127.0.0.1 port,
with a password (scram-sha-256 over TCP, like a real install; no Unix socket) and durability
off (fsync, full-page writes: a test's database is thrown away). PostgreSQL refuses to run as
root, so when the tests run as root the server runs as the `postgres` system user through
`setpriv` (which execs, so the pid we hold is the server's own), its directory chowned to it.

`database()` makes a fresh database per test with `CREATE DATABASE ... TEMPLATE`: from
`MIGRATED`, a template the store has already migrated (a few milliseconds), or from
`template0`, an empty one (for migration tests). `url(db)` carries the password, the way
`CANARY_STORE_URL` does in production; several `canary-bot serve` processes can share it.
`stop()` stops the server (fast shutdown) and deletes the directory.
"""

from __future__ import annotations

import itertools
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

MIGRATED = "canary_migrated"
EMPTY = "template0"
USER = "canary"
START_TIMEOUT_S = 60.0


class PostgresUnavailable(Exception):
    """No PostgreSQL binaries on this machine."""


def find_bindir() -> Path | None:
    """Where `initdb` and `postgres` are: PG_BINDIR, Debian's newest version, else PATH."""
    candidates: list[Path] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(Path(os.environ["PG_BINDIR"]))
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += versions
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "postgres").exists():
            return bindir
    return None


class PostgresServer:
    def __init__(self, *, bindir: Path | None = None) -> None:
        found = bindir or find_bindir()
        if found is None:
            raise PostgresUnavailable(
                "no PostgreSQL server binaries (initdb, postgres): apt-get install postgresql "
                "(or set PG_BINDIR)"
            )
        self.bindir = found
        self.password = secrets.token_hex(12)
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)
        # As root: run as the `postgres` system user (initdb and postgres refuse root).
        self._owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._owner = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    "running as root needs the `postgres` system user (PostgreSQL refuses "
                    "root): apt-get install postgresql creates it"
                ) from None
        self._as: list[str] = []
        self._dir = Path(tempfile.mkdtemp(prefix="canary-pg-"))
        if self._owner is not None:
            uid, gid = self._owner.pw_uid, self._owner.pw_gid
            os.chown(self._dir, uid, gid)
            self._as = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]

    @property
    def data(self) -> Path:
        return self._dir / "data"

    def start(self) -> None:
        pwfile = self._dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._owner is not None:
            os.chown(pwfile, self._owner.pw_uid, self._owner.pw_gid)
        self._run(
            str(self.bindir / "initdb"),
            f"--pgdata={self.data}",
            f"--username={USER}",
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )
        pwfile.unlink()
        self.port = _free_port()
        log = open(self._dir / "postgres.log", "ab")  # noqa: SIM115 - the server's own stderr
        self._process = subprocess.Popen(
            [
                *self._as,
                str(self.bindir / "postgres"),
                "-D",
                str(self.data),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                "",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "max_connections=200",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self._dir,
        )
        log.close()
        self._wait_until_accepting()
        self._admin(f"CREATE DATABASE {MIGRATED}")
        from rollout.stores.postgres import PostgresStore

        PostgresStore(self.url(MIGRATED)).close()  # migrate once; tests copy it

    def url(self, database: str = "postgres") -> str:
        """A `postgresql://` URL with the password in it, as `CANARY_STORE_URL` has it."""
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def database(self, *, template: str = MIGRATED) -> str:
        """A new database copied from `template` (migrated by default); its URL."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        self._admin(f"CREATE DATABASE {name} TEMPLATE {template}")
        return self.url(name)

    def log(self) -> str:
        path = self._dir / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)  # fast shutdown: abort sessions, stop
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def _admin(self, sql: str) -> None:
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(sql.encode())

    def _run(self, *argv: str) -> None:
        done = subprocess.run(
            [*self._as, *argv], cwd=self._dir, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()}")

    def _wait_until_accepting(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"postgres exited at start:\n{self.log()}")
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres never accepted:\n{self.log()}") from None
                time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
