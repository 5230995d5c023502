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

from tests.ports import kept_port

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


@dataclass
class PgServer:
    """A running cluster; `new_database` gives each test its own database."""

    root: Path
    port: int
    _names: itertools.count[int]
    #: keeps ``port`` for the cluster from its start to `stop` (`tests.ports.kept_port`),
    #: also while a test keeps it halted. Before, the port was bound and let go at once: a
    #: server the other pytest-xdist worker started on port 0 could be given it before the
    #: postmaster's bind or during a halt, and the start failed: 'could not bind IPv4
    #: address "127.0.0.1": Address already in use'
    _hold: socket.socket

    @classmethod
    def start(cls) -> PgServer:
        root = Path(tempfile.mkdtemp(prefix="prov-pg-"))
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(root, pw.pw_uid, pw.pw_gid)
        hold = kept_port()
        srv = cls(root, int(hold.getsockname()[1]), itertools.count(1), hold)
        try:
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
        except BaseException:
            srv.stop()
            raise
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
        """Stop the cluster if it runs (a test may end with it halted), remove its files,
        and give its port back."""
        try:
            if (self.root / "data" / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self._hold.close()
