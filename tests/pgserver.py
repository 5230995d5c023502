"""A real PostgreSQL server for tests: the Debian ``postgresql`` package's initdb and
pg_ctl on a temporary directory and a free loopback port, stopped afterwards.

CI runs as root and initdb refuses root, so the binaries run as the package's
``postgres`` user (``runuser -u postgres --``) on a directory that user owns.
`.ci/run` installs the package; where it is missing the tests that need it are skipped
with the reason.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path(os.environ.get("PROV_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def missing_reason() -> str | None:
    """Why a PostgreSQL server cannot be started here, or None when it can."""
    if not (PG_BIN / "initdb").exists():
        return (
            f"PostgreSQL is not installed ({PG_BIN}/initdb missing):"
            " apt-get update && apt-get install -y postgresql (.ci/run does this)"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, and there is no postgres user to run initdb as"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    """A running cluster; `new_database` gives each test its own database."""

    root: Path
    port: int
    _names: itertools.count[int]

    @classmethod
    def start(cls) -> PgServer:
        root = Path(tempfile.mkdtemp(prefix="prov-pg-"))
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(root, pw.pw_uid, pw.pw_gid)
        port = _free_port()
        srv = cls(root, port, itertools.count(1))
        srv._run(
            "initdb",
            "-D",
            str(root / "data"),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        srv.resume()
        return srv

    def resume(self) -> None:
        """Start the cluster (again, after `halt`) on the same port and data."""
        self._run(
            "pg_ctl",
            "-D",
            str(self.root / "data"),
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=300",
            "start",
        )

    def halt(self, mode: str = "fast") -> None:
        """Stop the cluster, keeping its data (`resume` starts it again): ``mode`` is
        pg_ctl's shutdown mode, "fast" (sessions ended, a clean shutdown) or "immediate"
        (processes killed, crash recovery at the next start)."""
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", mode, "-w", "stop")

    def require_password(self, role: str) -> None:
        """Make ``role`` log in over TCP with its password (scram-sha-256) instead of the
        cluster's trust, from now on (the server re-reads pg_hba.conf)."""
        hba = self.root / "data" / "pg_hba.conf"
        hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        self._run("pg_ctl", "-D", str(self.root / "data"), "reload")

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(PG_BIN / tool), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr}\n{tail}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh empty database; returns its URL."""
        import psycopg

        name = f"prov_test_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
