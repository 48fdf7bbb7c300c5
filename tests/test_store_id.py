"""The store's id (the `fleet` label of the metrics): made once per store, the same for every
monitor that opens it, different for every other store; SQLite and a real PostgreSQL."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bulletproof.sqlite_store import SqliteJobStore

STORE_ID = re.compile(r"[0-9a-f]{16}")


def test_a_sqlite_store_keeps_its_id_and_another_file_has_its_own(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "a.db")
    first = store.get_meta("store_id")
    store.close()
    assert first is not None and STORE_ID.fullmatch(first)
    again = SqliteJobStore(tmp_path / "a.db")
    other = SqliteJobStore(tmp_path / "b.db")
    try:
        assert again.get_meta("store_id") == first
        assert other.get_meta("store_id") not in (None, first)
    finally:
        again.close()
        other.close()


def test_monitors_opening_one_postgresql_store_together_read_one_id(postgres_url: str) -> None:
    pytest.importorskip("psycopg", reason="psycopg is not installed (the postgres extra)")
    from bulletproof.postgres_store import PostgresJobStore  # the optional driver, as open_store does

    with ThreadPoolExecutor(4) as pool:  # four monitors starting at once: one migrates
        stores = list(pool.map(lambda _: PostgresJobStore(postgres_url), range(4)))
    try:
        ids = {s.get_meta("store_id") for s in stores}
        assert len(ids) == 1 and STORE_ID.fullmatch(ids.pop() or "")
    finally:
        for s in stores:
            s.close()
