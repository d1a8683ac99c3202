"""Where studies live: an embedded SQLite file by default, any SQLAlchemy URL for many workers.

Every URL that reaches a log line or an error goes through `redact` first, so a database
password never leaves this module. A running trial sends a heartbeat; when a worker dies (even
by SIGKILL) the next worker that starts a trial marks its trial failed after the grace period
and enqueues it again once (`RetryHeartbeatStaleTrialCallback`), so no trial stays "running" forever.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_SQLITE_MAGIC = b"SQLite format 3\x00"
_CREATE_TRIES = 4


@dataclass(frozen=True)
class TuningStorage:
    """A study's storage as the catalog hands it to the tuning node: the Kedro credentials' URL
    (`from_credentials`) or the family's default SQLite file. `choose` applies the precedence
    credentials > the `storage` parameter > the default file."""

    url: str
    from_credentials: bool = False

    def choose(self, parameter: str | None) -> str:
        if self.from_credentials or not parameter:
            return self.url
        return parameter

    def __repr__(self) -> str:  # never the password
        return f"TuningStorage({redact(self.url)!r}, from_credentials={self.from_credentials})"


class TuningStorageError(RuntimeError):
    """The study storage cannot be opened; the message names host and database, never a password."""


def sqlite_url(path: str | Path) -> str:
    """The SQLAlchemy URL of an SQLite file (absolute, so it does not depend on the cwd)."""
    return f"sqlite:///{Path(path).resolve()}"


def redact(url: str) -> str:
    """`url` with its password replaced by `***` (SQLAlchemy's own rendering)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<an unparsable storage URL>"


def describe(url: str) -> str:
    """`host H, port P, database D` (or `SQLite file F`) for messages."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        return f"SQLite file {u.database}"
    return f"{u.get_backend_name()} host {u.host}, port {u.port or 'default'}, database {u.database}"


def _scrub(text: str, url: str) -> str:
    from sqlalchemy.engine import make_url

    password = make_url(url).password
    return text.replace(str(password), "***") if password else text


def _check_sqlite_file(url: str) -> None:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return
    path = Path(u.database)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size > 0:
        with path.open("rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
        if head != _SQLITE_MAGIC:
            raise TuningStorageError(
                f"the tuning study file {path} is not an SQLite database (corrupt or another kind of "
                "file); it was left untouched. Move it aside (or delete it) to start a new study, or "
                "point `storage` at another file"
            )


def open_storage(url: str, heartbeat_seconds: int = 30) -> Any:
    """An `optuna.storages.RDBStorage` on `url` with heartbeats and one retry of a dead worker's
    trial; raises `TuningStorageError` naming the host and database when it cannot be reached."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from sqlalchemy.exc import ArgumentError, IntegrityError, ProgrammingError

    try:
        backend_url = redact(url)
        from sqlalchemy.engine import make_url

        backend = make_url(url).get_backend_name()
    except ArgumentError:
        raise TuningStorageError("the tuning storage is not a valid SQLAlchemy URL (e.g. postgresql://user@host/db)") from None
    _check_sqlite_file(url)
    engine_kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        # several local workers share one file: wait for a lock instead of failing at once
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    try:
        for attempt in range(_CREATE_TRIES):
            try:
                with warnings.catch_warnings():
                    # heartbeats are "experimental" in Optuna since 2.8; they make dead workers safe
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    storage = RDBStorage(
                        url,
                        engine_kwargs=engine_kwargs,
                        heartbeat_interval=heartbeat_seconds,
                        grace_period=2 * heartbeat_seconds,
                        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
                    )
                break
            except (IntegrityError, ProgrammingError):
                # two workers creating Optuna's tables in a new database at once: one loses the
                # race; on the next try the tables exist
                if backend == "sqlite" or attempt == _CREATE_TRIES - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))
    except ModuleNotFoundError as exc:
        raise TuningStorageError(f"the driver for {backend_url} is not installed ({exc.name})") from None
    except Exception as exc:  # noqa: BLE001 - every driver has its own error classes
        reason = _scrub(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, url)
        if backend == "sqlite":
            raise TuningStorageError(
                f"cannot open the tuning study at {describe(url)}: {reason}. If the file is corrupt, "
                "move it aside to start a new study"
            ) from None
        raise TuningStorageError(f"cannot reach the tuning storage ({describe(url)}): {reason}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logger.info("tuning storage: %s", backend_url)
    return storage
