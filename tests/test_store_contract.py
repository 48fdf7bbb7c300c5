"""The JobStore contract (tests/store_contract.py) run against every implementation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bulletproof.postgres_store import PostgresJobStore
from bulletproof.sqlite_store import SqliteJobStore
from tests.store_contract import JobStoreContract, StoreHarness


def sqlite_harness(tmp_path: Path) -> Iterator[StoreHarness]:
    """SqliteJobStore on a real file; writes refused by SQLite itself (query_only)."""
    path = tmp_path / "state" / "jobs.db"
    opened = [SqliteJobStore(path)]

    def reopen() -> SqliteJobStore:
        opened[-1].close()
        opened.append(SqliteJobStore(path))
        made.store = opened[-1]
        return opened[-1]

    def query_only(on: bool) -> Callable[[], None]:
        def switch() -> None:
            opened[-1]._db.execute(f"PRAGMA query_only = {int(on)}")
        return switch

    made = StoreHarness(store=opened[0], reopen=reopen, refuse_writes=query_only(True),
                        allow_writes=query_only(False))
    yield made
    opened[-1].close()


def postgres_harness(request: pytest.FixtureRequest) -> Iterator[StoreHarness]:
    """PostgresJobStore on a fresh database of the session's cluster; writes refused by the
    server itself (the session's transactions made read-only)."""
    url = request.getfixturevalue("postgres_url")
    opened = [PostgresJobStore(url)]

    def reopen() -> PostgresJobStore:
        opened[-1].close()
        opened.append(PostgresJobStore(url))
        made.store = opened[-1]
        return opened[-1]

    def read_only(on: bool) -> Callable[[], None]:
        def switch() -> None:
            with opened[-1]._lock:
                opened[-1]._connection().execute(
                    f"SET default_transaction_read_only = {'on' if on else 'off'}")
        return switch

    made = StoreHarness(store=opened[0], reopen=reopen, refuse_writes=read_only(True),
                        allow_writes=read_only(False))
    yield made
    opened[-1].close()


# One entry per implementation, each making a harness from the test's request.
IMPLEMENTATIONS: dict[str, Callable[[pytest.FixtureRequest], Iterator[StoreHarness]]] = {
    "sqlite": lambda request: sqlite_harness(request.getfixturevalue("tmp_path")),
    "postgres": postgres_harness,
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def harness(request: pytest.FixtureRequest) -> Iterator[StoreHarness]:
    yield from IMPLEMENTATIONS[request.param](request)


class TestJobStoreContract(JobStoreContract):
    """Every implementation in IMPLEMENTATIONS passes the whole contract."""
