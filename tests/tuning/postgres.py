"""A throw-away PostgreSQL server for the tests of studies that many workers share.

`running_postgres()` runs `initdb` into a fresh directory under the system temp dir, starts the
server on a free port of 127.0.0.1 (its Unix socket in that directory), creates a login role with
a password (allowed to create more databases) and a database it owns, and yields the SQLAlchemy URL
`postgresql+psycopg2://tuner:<password>@127.0.0.1:<port>/studies`. TCP connections must give the
password (scram-sha-256), so the password is really used; only the socket trusts, for setup.
On exit the server is stopped (`-m immediate`: nothing in it is worth a clean shutdown) and the
directory deleted.

PostgreSQL refuses to run as root, so when the tests run as root the server runs as `nobody`.
Without `initdb`/`pg_ctl` (on PATH or in Debian's /usr/lib/postgresql/*/bin) the tests skip,
saying why, except where `CI` is set: there a missing server is an error, not a silent skip.
Any other problem starting the server fails with the server's log.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROLE, DATABASE = "tuner", "studies"
_BINARIES = ("initdb", "pg_ctl")


def find_binaries() -> dict[str, str] | None:
    """Paths of `initdb` and `pg_ctl`: from PATH, else the newest Debian/Ubuntu install."""
    found = {name: shutil.which(name) for name in _BINARIES}
    if all(found.values()):
        return found  # type: ignore[return-value]
    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        found = {name: shutil.which(name, path=bindir) for name in _BINARIES}
        if all(found.values()):
            return found  # type: ignore[return-value]
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user() -> dict[str, int] | None:
    """`subprocess` arguments that run the server unprivileged when we are root, else None."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        pytest.fail("the tests run as root and there is no `nobody` user to run PostgreSQL as")
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


class _Server:
    def __init__(self, binaries: dict[str, str]) -> None:
        self.binaries = binaries
        self.as_user = _server_user()
        self.base = Path(tempfile.mkdtemp(prefix="recforge-pg-"))
        if self.as_user is not None:
            os.chown(self.base, self.as_user["user"], self.as_user["group"])
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.port = 0
        self.password = "pw-" + secrets.token_hex(8)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        # cwd: the server user may not be able to enter the test's working directory
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        return subprocess.run(
            args, cwd=self.base, env=env, capture_output=True, text=True, timeout=60, **(self.as_user or {})
        )  # fmt: skip

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-6000:]
        except OSError:
            return "(no server log)"

    def fail(self, what: str, proc: subprocess.CompletedProcess | None = None) -> None:
        output = f"\n--- {proc.args[0]} output ---\n{proc.stdout}{proc.stderr}" if proc is not None else ""
        pytest.fail(f"the throw-away PostgreSQL server {what}{output}\n--- server log ({self.log}) ---\n{self.log_text()}")

    def init(self) -> None:
        proc = self.run(
            self.binaries["initdb"], "-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--locale=C",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync",
        )  # fmt: skip
        if proc.returncode != 0:
            self.fail("could not be initialised (initdb)", proc)

    def start(self) -> None:
        # a port found free can be taken before the server binds it: try another a few times
        for _ in range(3):
            self.port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -k '{self.base}' -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=40 -c shared_buffers=16MB"
            )
            proc = self.run(self.binaries["pg_ctl"], "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30",
                            "-o", options, "start")  # fmt: skip
            if proc.returncode == 0:
                return
            if "could not bind" not in self.log_text():
                break
        self.fail("did not start (pg_ctl start)", proc)

    def create_role_and_database(self) -> None:
        import psycopg2

        try:
            conn = psycopg2.connect(host=str(self.base), port=self.port, user="postgres", dbname="postgres")
        except psycopg2.Error as exc:
            self.fail(f"started but refuses the setup connection on its socket: {exc}")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD %s", (self.password,))
            cur.execute(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
        conn.close()

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.run(self.binaries["pg_ctl"], "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{ROLE}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"


@contextlib.contextmanager
def running_postgres() -> Iterator[str]:
    """A PostgreSQL server for the duration of the block; yields its SQLAlchemy URL."""
    binaries = find_binaries()
    if binaries is None:
        reason = "PostgreSQL's initdb and pg_ctl are not installed (on PATH or /usr/lib/postgresql/*/bin)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so the shared-storage tests must run there: install postgresql")
        pytest.skip(f"{reason}: the shared-storage tuning tests need a local server")
    server = _Server(binaries)
    try:
        server.init()
        server.start()
        server.create_role_and_database()
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The SQLAlchemy URL (with a password) of a throw-away PostgreSQL database, for the session."""
    with running_postgres() as url:
        yield url
