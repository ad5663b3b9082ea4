"""A throwaway PostgreSQL cluster for the test run, and a fresh database per test.

Debian's package puts the server's programs under /usr/lib/postgresql/<version>/bin,
not on PATH, so they are looked for there as well. initdb refuses to run as root (CI
and this machine run tests as root): the cluster then belongs to the ``postgres`` user
the package creates, and its programs run as that user through ``runuser``. The data
and socket folders live in a temporary folder owned by whoever runs the server; it
listens on 127.0.0.1 on a free port, with fsync off (a crash loses only test data).

Each test gets a database copied from a template that is already migrated to the
newest schema (CREATE DATABASE ... TEMPLATE copies files: tens of milliseconds), or an
empty one when the test is about migrating.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

REQUIRE_ENV = "RAG_TEST_REQUIRE_POSTGRES"
"""Set to 1 (``.ci/run`` does) to fail, not skip, the PostgreSQL tests when the server's
programs are missing. Read before conftest strips RAG_* variables."""
REQUIRED = os.environ.get(REQUIRE_ENV) == "1"
TEMPLATE = "rag_template"


def find_program(name: str) -> str | None:
    """``name`` on PATH, or in the newest /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    candidates.sort(key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Cluster:
    """One server, started by ``start`` and stopped by ``stop`` (also at exit)."""

    def __init__(self) -> None:
        self.port = 0
        self.folder: Path | None = None
        self._as_user: list[str] = []
        self._names = itertools.count(1)
        self._stopped = False
        self.bin = Path()

    @staticmethod
    def missing() -> str | None:
        """Why no cluster can be started here, or None."""
        for name in ("initdb", "pg_ctl", "psql"):
            if find_program(name) is None:
                return f"PostgreSQL's {name} is not installed (apt-get install postgresql)"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root and there is no postgres user to run the server as"
            if shutil.which("runuser") is None:
                return "running as root and runuser is missing"
        return None

    def start(self) -> None:
        initdb = find_program("initdb")
        assert initdb is not None
        self.bin = Path(initdb).resolve().parent  # past Debian's /usr/bin wrappers
        self.folder = Path(tempfile.mkdtemp(prefix="rag-pg-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        data, sockets = self.folder / "data", self.folder / "run"
        self._run("mkdir", str(sockets))
        self._run(
            "initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
            "--locale=C", "--no-sync",
        )  # fmt: skip
        self.port = _free_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={sockets} -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=300"
        )
        atexit.register(self.stop)  # a Ctrl-C or a crash of the run must not leave it going
        self._run("pg_ctl", "-D", str(data), "-l", str(self.folder / "log"), "-o", options,
                  "-w", "start")  # fmt: skip
        self.sql(f"CREATE DATABASE {TEMPLATE}")

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def migrate_template(self) -> None:
        from rag.db.engine import upgrade_sync

        upgrade_sync(self.url(TEMPLATE))

    def new_database(self, *, migrated: bool = True) -> str:
        """The URL of a new database: at the newest schema, or empty."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        template = TEMPLATE if migrated else "template0"
        self.sql(f"CREATE DATABASE {name} TEMPLATE {template}")
        return self.url(name)

    def drop(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        # FORCE: a test that failed may have left a connection open.
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def sql(self, statement: str, database: str = "postgres") -> str:
        result = self._run(
            "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
            "-v", "ON_ERROR_STOP=1", "-At", "-c", statement,
        )  # fmt: skip
        return result.stdout.strip()

    def stop(self) -> None:
        if self._stopped or self.folder is None:
            return
        self._stopped = True
        data = self.folder / "data"
        if (data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.folder, ignore_errors=True)

    def _run(
        self, program: str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        path = program if program == "mkdir" else str(self.bin / program)
        done = subprocess.run(
            [*self._as_user, path, *args], capture_output=True, text=True, cwd=self.folder,
            timeout=120,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise RuntimeError(f"{program} {' '.join(args)} failed: {done.stderr.strip()}")
        return done
