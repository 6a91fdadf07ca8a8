"""A throwaway PostgreSQL server for the MLflow store tests, from the installed binaries.

``postgres_server`` (one per session) finds ``initdb`` and ``pg_ctl`` on ``PATH`` or
under ``/usr/lib/postgresql/*/bin`` (Debian's ``apt-get install postgresql``),
creates a cluster in a temporary folder (trust authentication, listening on
127.0.0.1 only, its socket in that folder, no fsync), starts it on a free port
and stops it with ``pg_ctl stop -m immediate`` at the end. PostgreSQL refuses to
run as root, so under uid 0 the server runs as the ``postgres`` user that the
Debian package creates. Without the binaries, psycopg2 or that user the tests
that need it are skipped with the reason; ``AIOPS_REQUIRE_SERVERS=1`` makes that
a failure instead (for CI, where a skip would hide a broken set-up).

``postgres_mlflow_uri`` is a fresh, empty database per test; MLflow creates its
tables there on first use (about a second). ``mlflow_backend_store`` is the
tracking store of a test that runs once per backend: SQLite (the suite's
``mlflow_store``) and PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.ports import free_port
from training.tracking import ARTIFACT_ROOT_ENV

#: SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3; the project installs psycopg2.
DRIVER = "postgresql+psycopg2"
SUPERUSER = "postgres"
START_TIMEOUT_S = 60

_database_numbers = itertools.count(1)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "postgres: runs against a PostgreSQL MLflow store (tests/postgres.py)")


@dataclasses.dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str

    @property
    def url(self) -> str:
        """``postgresql+psycopg2://USER@HOST:PORT``; append ``/DBNAME``."""
        return f"{DRIVER}://{self.user}@{self.host}:{self.port}"

    def connect(self, dbname: str = "postgres"):
        import psycopg2

        connection = psycopg2.connect(host=self.host, port=self.port, user=self.user,
                                      dbname=dbname, connect_timeout=5)
        connection.autocommit = True
        return connection

    def create_database(self, name: str) -> str:
        """A new empty database; its SQLAlchemy URL."""
        connection = self.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return f"{self.url}/{name}"


def find_binaries() -> tuple[Path, Path] | None:
    """``initdb`` and ``pg_ctl`` of one PostgreSQL installation, newest Debian one last resort."""
    candidates = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    candidates += [Path(d) for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                                           key=_version_key, reverse=True)]
    for folder in candidates:
        initdb, pg_ctl = folder / "initdb", folder / "pg_ctl"
        if os.access(initdb, os.X_OK) and os.access(pg_ctl, os.X_OK):
            return initdb, pg_ctl
    return None


def _version_key(folder: str) -> tuple[int, ...]:
    version = Path(folder).parent.name
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def _unavailable(reason: str) -> None:
    """Skip (or fail, with ``AIOPS_REQUIRE_SERVERS=1``) the tests that need the server."""
    if os.environ.get("AIOPS_REQUIRE_SERVERS") == "1":
        pytest.fail(f"PostgreSQL required (AIOPS_REQUIRE_SERVERS=1) but {reason}")
    pytest.skip(f"no PostgreSQL for the MLflow store tests: {reason}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server on 127.0.0.1 and a free port, for the session."""
    binaries = find_binaries()
    if binaries is None:
        _unavailable("initdb/pg_ctl are neither on PATH nor in /usr/lib/postgresql/*/bin "
                     "(apt-get install postgresql)")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        _unavailable("psycopg2 is not installed (pip install 'novaevo-aiops[postgres]')")
    initdb, pg_ctl = binaries
    run_as: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root, and there is no 'postgres' user to run the server "
                         "as (the Debian package creates it)")
        runuser = shutil.which("runuser")
        if runuser is None:
            _unavailable("running as root, and runuser is missing to start the server as "
                         "'postgres'")
        run_as = [runuser, "-u", owner.pw_name, "--"]

    # Not under pytest's tmp_path: that folder is private to root, and the server runs as
    # 'postgres'. A short path also keeps the Unix socket under its 107-character limit.
    root = Path(tempfile.mkdtemp(prefix="aiops-pg-"))
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    data, log = root / "data", root / "server.log"

    def run(*command: str | Path, timeout_s: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([*run_as, *map(str, command)], capture_output=True, text=True,
                              timeout=timeout_s, check=False)

    started = False
    try:
        made = run(initdb, "-D", data, "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                   "--no-locale", "--no-sync")
        if made.returncode != 0:
            pytest.fail(f"initdb failed ({made.returncode}): {made.stderr or made.stdout}")
        for _ in range(3):  # the free port can be taken between choosing and binding it
            port = free_port()
            options = (f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off")
            start = run(pg_ctl, "-D", data, "-l", log, "-o", options, "-w", "-t",
                        str(START_TIMEOUT_S), "start", timeout_s=START_TIMEOUT_S + 10)
            if start.returncode == 0:
                started = True
                break
            run(pg_ctl, "-D", data, "-m", "immediate", "stop")
        if not started:
            tail = log.read_text()[-2000:] if log.exists() else ""
            pytest.fail(f"PostgreSQL did not start: {start.stderr or start.stdout}\n{tail}")
        server = PostgresServer("127.0.0.1", port, SUPERUSER)
        server.connect().close()  # ready for TCP clients, not only for pg_ctl's probe
        yield server
    finally:
        if started:
            stopped = run(pg_ctl, "-D", data, "-m", "immediate", "stop")
            if stopped.returncode != 0:
                warnings.warn(f"pg_ctl stop failed, PostgreSQL may still run from {data}: "
                              f"{stopped.stderr or stopped.stdout}", stacklevel=1)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_mlflow_uri(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> str:
    """A fresh empty database: ``postgresql+psycopg2://postgres@127.0.0.1:PORT/DBNAME``."""
    name = f"aiops_{next(_database_numbers)}_{request.node.originalname}".lower()
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in name)[:63]
    return postgres_server.create_database(name)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def mlflow_backend_store(request: pytest.FixtureRequest, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> str:
    """The tracking store of one test, once per backend; ``MLFLOW_TRACKING_URI`` points at it.

    SQLite is the suite's ``mlflow_store``. PostgreSQL is a fresh database, with the
    artifacts of new experiments in ``tmp_path`` (``AIOPS_ARTIFACT_ROOT``).
    """
    if request.param == "sqlite":
        monkeypatch.delenv(ARTIFACT_ROOT_ENV, raising=False)  # artifacts beside the database
        return request.getfixturevalue("mlflow_store")
    uri = request.getfixturevalue("postgres_mlflow_uri")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv(ARTIFACT_ROOT_ENV, str(tmp_path / "mlruns" / "artifacts"))
    return uri
