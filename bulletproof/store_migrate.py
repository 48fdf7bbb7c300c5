"""`bulletproof store migrate`: bring the configured store's schema up to date, and copy a SQLite
history into a PostgreSQL store."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bulletproof.audit import AUDIT_COLUMNS
from bulletproof.database_url import is_postgres_url
from bulletproof.errors import StoreError
from bulletproof.queries import STORED_COLUMNS
from bulletproof.sqlite_store import SqliteJobStore
from bulletproof.store import JobStore
from bulletproof.store_factory import open_store

if TYPE_CHECKING:  # psycopg is optional: the module loads without it
    from bulletproof.postgres_store import PostgresJobStore

# A stored job: its fields and the store's own columns (queue position, claim).


# Settings that belong to one database (the PostgreSQL store does not take them either).
_LOCAL_META_KEYS = frozenset({"schema_version", "health_probe"})


@dataclass(frozen=True, slots=True)
class CopiedHistory:
    """How much a copy brought over."""

    jobs: int
    done_files: int
    audit: int
    meta: int


def read_sqlite_history(path: Path) -> tuple[list[dict[str, Any]], list[tuple[str, int, int]],
                                              list[dict[str, Any]], dict[str, str]]:
    """Every job, done file version, audit entry and setting of a SQLite store (brought to the
    current schema first; its lock is held while reading, so no monitor writes meanwhile)."""
    if not path.is_file():
        raise StoreError(f"no SQLite job store at {path}", path=path)
    owner = SqliteJobStore(path)  # migrates the file, and refuses one a monitor has open
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        db.row_factory = sqlite3.Row
        try:
            jobs = [dict(r) for r in db.execute(f"SELECT {', '.join(STORED_COLUMNS)} FROM jobs")]
            done = [(r[0], r[1], r[2]) for r in
                    db.execute("SELECT source_path, size, mtime_ns FROM done_files")]
            audit = [dict(r) for r in
                     db.execute(f"SELECT id, {', '.join(AUDIT_COLUMNS)} FROM audit")]
            meta = {r[0]: r[1] for r in db.execute("SELECT key, value FROM meta")}
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the SQLite job store {path}: {exc}", path=path) from None
    finally:
        owner.close()
    return jobs, done, audit, meta


def migrate_store(database: Path | str) -> JobStore:
    """Open (and so create or upgrade) the store `database` names; the caller closes it."""
    return open_store(database)


def copy_sqlite_history(source: Path, target: PostgresJobStore, *, force: bool = False) -> CopiedHistory:
    """Copy a SQLite store's whole history into `target` in one transaction."""
    jobs, done, audit, meta = read_sqlite_history(source)
    target.import_history(jobs=jobs, done_files=done, audit=audit, meta=meta,
                          replace_existing=force)
    return CopiedHistory(jobs=len(jobs), done_files=len(done), audit=len(audit),
                         meta=len([k for k in meta if k not in _LOCAL_META_KEYS]))


def require_postgres(database: Path | str) -> None:
    """Refuse copying a history into anything but a PostgreSQL store."""
    if not is_postgres_url(database):
        raise StoreError(f"--from-sqlite copies into a PostgreSQL store; the config's database is "
                         f"the SQLite file {database}", path=database)
