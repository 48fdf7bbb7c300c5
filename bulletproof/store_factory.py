"""Opening the job store a config names: a SQLite file, or a PostgreSQL server by URL."""

from __future__ import annotations

import importlib
from pathlib import Path

from bulletproof.database_url import is_postgres_url
from bulletproof.errors import StoreError
from bulletproof.sqlite_store import SqliteJobStore
from bulletproof.store import JobStore


def open_store(database: Path | str, *, node: str | None = None) -> JobStore:
    """The store `database` names (a `postgresql://` URL or a SQLite path), open and migrated;
    a shared store names `node` (this node) to the others in its change notifications."""
    if not is_postgres_url(database):
        return SqliteJobStore(database)
    try:
        # psycopg is the optional `postgres` extra: imported only when a URL asks for it.
        module = importlib.import_module("bulletproof.postgres_store")
    except ImportError as exc:
        raise StoreError("the database is a PostgreSQL URL but its driver is not installed "
                         f"({exc.name}): pip install 'bulletproof[postgres]'") from None
    return module.PostgresJobStore(str(database), node=node)


def is_shared(database: Path | str) -> bool:
    """True when the store can be shared by several monitors (PostgreSQL; SQLite is one's own)."""
    return is_postgres_url(database)
