"""The JobStore contract (tests/store_contract.py) run against every implementation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

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


# One entry per implementation: a PostgreSQL store adds its own harness here.
IMPLEMENTATIONS: dict[str, Callable[[Path], Iterator[StoreHarness]]] = {"sqlite": sqlite_harness}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreHarness]:
    yield from IMPLEMENTATIONS[request.param](tmp_path)


class TestJobStoreContract(JobStoreContract):
    """Every implementation in IMPLEMENTATIONS passes the whole contract."""
