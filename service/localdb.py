"""A PostgreSQL + PostGIS cluster the project runs itself: for the demo service and for the test session.

Municipal IT runs its own database (or docker compose); this is for a developer's machine and CI, where
we want a real PostGIS without touching the system cluster. `initdb` refuses to run as root, so as root
the cluster belongs to the `postgres` system user and its commands run through `runuser`.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "geotwin"


def find_bindir() -> Path:
    """The newest PostgreSQL server whose share directory has PostGIS installed."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    for bindir in reversed(candidates):
        version = bindir.split("/")[-2]
        if Path(f"/usr/share/postgresql/{version}/extension/postgis.control").exists():
            return Path(bindir)
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(pg_ctl).resolve().parent
    raise RuntimeError("no PostgreSQL server with PostGIS found; install postgresql and postgis")


def port_is_free(port: int) -> bool:
    """Nobody listens there. SO_REUSEADDR, as PostgreSQL itself binds: connections of a server just stopped
    (TIME_WAIT) do not keep it from starting again."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def running_port(data_dir: Path) -> int | None:
    """The port of this data directory's cluster (`data_dir/pg`) while its server runs, from postmaster.pid."""
    try:
        lines = (data_dir / "pg" / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    if len(lines) < 4 or not lines[0].strip().isdigit() or not lines[3].strip().isdigit():
        return None
    try:
        os.kill(int(lines[0]), 0)
    except ProcessLookupError:
        return None  # left behind by a server that did not stop cleanly
    except PermissionError:
        pass  # it runs, as another user
    return int(lines[3])


def remembered_port(data_dir: Path, preferred: int) -> int:
    """The port this data directory's cluster uses: remembered from its first start; on the first start the
    preferred port if free, else any free one (a second checkout on the same machine must just work)."""
    record = data_dir / "port"
    if record.exists():
        return int(record.read_text().strip())
    running = running_port(data_dir)
    port = preferred if running is None else running  # a cluster already running here keeps its port
    if running is None and not port_is_free(port):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    data_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(f"{port}\n")
    return port


@dataclass
class LocalCluster:
    """One data directory, one port on 127.0.0.1, trust authentication for the local superuser."""

    datadir: Path
    port: int
    bindir: Path | None = None

    def __post_init__(self) -> None:
        self.datadir = Path(self.datadir).absolute()
        self.bindir = self.bindir or find_bindir()
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def is_running(self) -> bool:
        if not (self.datadir / "PG_VERSION").exists():
            return False
        return self._run("pg_ctl", "status", "-D", str(self.datadir), check=False).returncode == 0

    def start(self) -> None:
        """Create the cluster if it does not exist and start it; a running one is left as it is."""
        if not (self.datadir / "PG_VERSION").exists():
            self.datadir.mkdir(parents=True, exist_ok=True)
            if self._as_postgres:
                shutil.chown(self.datadir, "postgres", "postgres")
            self._run("initdb", "-D", str(self.datadir), "-U", SUPERUSER, "--auth=trust",
                      "--encoding=UTF8", "--locale=C.UTF-8")
        if self.is_running():
            return
        if not port_is_free(self.port):
            raise RuntimeError(
                f"port {self.port} on 127.0.0.1 is taken by another program, so the project's PostgreSQL in "
                f"{self.datadir} cannot start there; stop that program or choose another port")
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{self.datadir}'"
                " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                " -c shared_buffers=256MB -c max_connections=200")
        result = self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.datadir),
                           "-l", str(self.datadir / "server.log"), "-o", opts, check=False)
        if result.returncode != 0:
            log = (self.datadir / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"PostgreSQL did not start: {result.stderr}\n{log}")

    def stop(self) -> None:
        if self.is_running():
            self._run("pg_ctl", "stop", "-D", str(self.datadir), "-m", "fast", check=False)

    def replica(self, datadir: Path, port: int) -> LocalCluster:
        """A streaming replica of this (running) cluster in `datadir` (pg_basebackup -R), not yet started."""
        replica = LocalCluster(datadir, port, self.bindir)
        replica.datadir.mkdir(parents=True, exist_ok=True)
        replica.datadir.chmod(0o700)  # PostgreSQL refuses a data directory others can read
        if self._as_postgres:
            shutil.chown(replica.datadir, "postgres", "postgres")
        result = self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER,
                           "-D", str(replica.datadir), "-R", "-X", "stream", "-c", "fast", check=False)
        if result.returncode != 0:
            raise RuntimeError(f"pg_basebackup failed: {result.stderr}")
        return replica

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.url(database), "-c", sql],
            check=True, capture_output=True, text=True,
        )
        return result.stdout.strip()

    def create_database(self, name: str) -> str:
        """Create `name` with PostGIS if it is missing; returns its URL."""
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if not exists:
            self.psql(f'CREATE DATABASE "{name}"')
        self.psql("CREATE EXTENSION IF NOT EXISTS postgis", database=name)
        return self.url(name)

    def wait(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._run("pg_isready", "-h", "127.0.0.1", "-p", str(self.port), check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError("PostgreSQL is not accepting connections")
