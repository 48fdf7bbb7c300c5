"""A real PostgreSQL cluster for the tests: Debian's initdb and pg_ctl in a temp folder, run as postgres."""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.promstack import free_port

try:
    import psycopg
except ImportError:  # the `postgres` extra is not installed: the PostgreSQL tests skip
    psycopg = None  # type: ignore[assignment]


def postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL bin folder holding initdb and pg_ctl, if installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(found[-1]).parent if found else None


def skip_reason() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None when they can."""
    if psycopg is None:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    if postgres_bin() is None:
        return "PostgreSQL is not installed (scripts/setup.sh --test installs it)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "there is no postgres user to run the server as"
    return None


def _as_postgres(*argv: str | Path) -> list[str]:
    """A command run as the postgres user (PostgreSQL refuses to run as root)."""
    command = [str(a) for a in argv]
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@dataclass
class PostgresCluster:
    """One running cluster on 127.0.0.1:`port`; `database()` makes a fresh empty database."""

    bindir: Path
    root: Path
    port: int
    _names: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        """The URL of one database of the cluster (trust authentication, user postgres)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start the server and wait until it takes connections."""
        subprocess.run(_as_postgres(self.bindir / "pg_ctl", "-D", self.data, "-l",
                                    self.root / "server.log", "-w", "-t", "30", "start"),
                       check=True, capture_output=True)

    def stop(self) -> None:
        """Stop the server at once (connections are cut)."""
        subprocess.run(_as_postgres(self.bindir / "pg_ctl", "-D", self.data, "-m", "fast",
                                    "-w", "stop"), check=False, capture_output=True)

    def database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"t{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def start_cluster() -> PostgresCluster:
    """initdb a cluster in a temp folder owned by postgres, tuned for tests, and start it."""
    bindir = postgres_bin()
    assert bindir is not None
    root = Path(tempfile.mkdtemp(prefix="bp-pg-"))
    user = pwd.getpwnam("postgres")
    os.chown(root, user.pw_uid, user.pw_gid)
    cluster = PostgresCluster(bindir=bindir, root=root, port=free_port())
    subprocess.run(_as_postgres(bindir / "initdb", "-D", cluster.data, "-U", "postgres",
                                "-A", "trust", "-E", "UTF8", "--no-sync"),
                   check=True, capture_output=True)
    settings = (f"port = {cluster.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{root}'\n"
                # A test cluster: durability buys nothing, speed keeps the suite short.
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 200\n")
    with (cluster.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
        conf.write(settings)
    cluster.start()
    return cluster


def remove_cluster(cluster: PostgresCluster) -> None:
    """Stop the server and delete its folder."""
    cluster.stop()
    shutil.rmtree(cluster.root, ignore_errors=True)
