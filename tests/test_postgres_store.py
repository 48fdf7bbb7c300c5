"""What only a shared PostgreSQL store must show: several instances (like several monitors) on one
database, on a real server, including the server going away and coming back."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (the postgres extra)")

from bulletproof.errors import StaleClaim, StoreError  # noqa: E402
from bulletproof.postgres_schema import SCHEMA_VERSION  # noqa: E402
from bulletproof.postgres_store import PostgresJobStore  # noqa: E402
from bulletproof.store import ChangeKind, StoreChange  # noqa: E402
from tests.postgres import PostgresCluster  # noqa: E402
from tests.promstack import free_port  # noqa: E402
from tests.store_contract import added, new  # noqa: E402

T = TypeVar("T")


@pytest.fixture
def two(postgres_url: str) -> Iterator[tuple[PostgresJobStore, PostgresJobStore]]:
    """Two store instances on one database: two connections, as two monitors would have."""
    first, second = PostgresJobStore(postgres_url), PostgresJobStore(postgres_url)
    yield first, second
    first.close()
    second.close()


def at_once(calls: list[Callable[[], T]]) -> list[T]:
    """Run the calls in threads released together by a barrier; their results in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_concurrent_claimers_never_share_a_job(two: tuple[PostgresJobStore, PostgresJobStore]) -> None:
    first, second = two
    for i in range(40):
        added(first, new(f"{i}.mp4"))

    def drain(store: PostgresJobStore, node: str) -> Callable[[], list[int]]:
        def take() -> list[int]:
            taken = []
            while (claim := store.claim(node, now=1000, lease_seconds=60)) is not None:
                taken.append(claim.job.id)
            return taken
        return take

    a, b = at_once([drain(first, "node-a"), drain(second, "node-b")])
    assert not set(a) & set(b)
    assert sorted(a + b) == list(range(1, 41))  # every job taken, each once


def test_a_stale_token_is_refused_after_another_instance_swept_the_lease(
        two: tuple[PostgresJobStore, PostgresJobStore]) -> None:
    first, second = two
    job = added(first, new("a.mp4"))
    stale = first.claim("node-a", now=100, lease_seconds=10)
    assert stale is not None
    swept = second.requeue_expired(now=111)
    assert [j.id for j in swept] == [job.id]
    fresh = second.claim("node-b", now=112, lease_seconds=10)
    assert fresh is not None and fresh.token > stale.token
    with pytest.raises(StaleClaim):
        first.mark_completed(job.id, now=113, output_bytes=1, media_duration=None,
                             token=stale.token)
    with pytest.raises(StaleClaim):
        first.renew(job.id, stale.token, until=200)
    done = second.mark_completed(job.id, now=114, output_bytes=1, media_duration=None,
                                 token=fresh.token)
    assert done.state == "completed"


def test_one_unfinished_job_per_file_version_even_from_two_instances_at_once(
        two: tuple[PostgresJobStore, PostgresJobStore]) -> None:
    first, second = two
    for round_ in range(10):
        version = new("a.mp4", mtime=round_)
        got = at_once([lambda v=version: first.add(v), lambda v=version: second.add(v)])
        assert sum(job is not None for job in got) == 1, got
    assert first.counts_by_state()["queued"] == 10


def test_the_database_itself_refuses_a_second_unfinished_job_of_a_version(postgres_url: str) -> None:
    store = PostgresJobStore(postgres_url)
    job = added(store, new("a.mp4"))
    store.close()
    with psycopg.connect(postgres_url) as conn, pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            "INSERT INTO jobs (source_path, rel_path, watch_folder, size, mtime_ns, profile, rule, "
            "output_path, state, created_at, queued_at) SELECT source_path, rel_path, "
            "watch_folder, size, mtime_ns, profile, rule, output_path, 'queued', 1, 1 "
            "FROM jobs WHERE id = %s", (job.id,))


def test_an_explicit_requeue_of_a_finished_version_is_allowed(postgres_url: str) -> None:
    store = PostgresJobStore(postgres_url)
    try:
        job = added(store, new("a.mp4"))
        store.mark_started(job.id, now=1)
        store.mark_completed(job.id, now=2, output_bytes=1, media_duration=None)
        assert store.add(new("a.mp4")) is None  # done: not again by itself
        again = store.add(new("a.mp4"), force=True)
        assert again is not None and again.state == "queued"
        assert store.requeue(job.id, now=3).state == "queued"  # and a manual retry beside it
    finally:
        store.close()


def test_a_change_from_one_instance_reaches_the_others_subscriber(
        two: tuple[PostgresJobStore, PostgresJobStore]) -> None:
    first, second = two
    heard: list[StoreChange] = []
    arrived = threading.Event()

    def listener(change: StoreChange) -> None:
        heard.append(change)
        if change.kind is ChangeKind.META:
            arrived.set()

    second.subscribe(listener)
    # The listener thread LISTENs once it is connected: write until a change comes through.
    for _ in range(100):
        first.set_meta("queue_paused", "1")
        if arrived.wait(0.1):
            break
    assert arrived.is_set()
    # Another writer's change, marked as such (this one names no node: origin "").
    assert StoreChange(kind=ChangeKind.META, key="queue_paused", origin="") in heard
    job = added(first, new("a.mp4"))
    assert _until(lambda: any(c.job_id == job.id and c.state == "queued" for c in heard))


def test_own_changes_are_told_once(postgres_url: str) -> None:
    store = PostgresJobStore(postgres_url)
    heard: list[StoreChange] = []
    store.subscribe(heard.append)
    try:
        job = added(store, new("a.mp4"))
        assert heard == [StoreChange(kind=ChangeKind.JOB, job_id=job.id, state="queued")]
    finally:
        store.close()


def _until(predicate: Callable[[], bool], attempts: int = 200) -> bool:
    event = threading.Event()
    for _ in range(attempts):
        if predicate():
            return True
        event.wait(0.05)
    return predicate()


def test_the_server_going_away_is_a_store_error_and_coming_back_heals(
        postgres_cluster: PostgresCluster, postgres_url: str) -> None:
    store = PostgresJobStore(postgres_url)
    try:
        job = added(store, new("a.mp4"))
        postgres_cluster.stop()
        try:
            with pytest.raises(StoreError) as refused:
                store.set_meta("queue_paused", "1")
            assert "job store write failed" in str(refused.value)
            assert not store.probe()
            health = store.health()
            assert not health.writable and health.error and health.outages == 1
            with pytest.raises(StoreError):
                store.get(job.id)
        finally:
            postgres_cluster.start()
        assert store.probe()  # the same instance, a new connection
        assert store.health().writable
        assert store.get(job.id).state == "queued"
        store.set_meta("queue_paused", "1")
        assert store.get_meta("queue_paused") == "1"
    finally:
        store.close()


def test_an_unreachable_server_is_a_clear_error_without_the_password() -> None:
    url = f"postgresql://bulletproof:s3cret-pw@127.0.0.1:{free_port()}/jobs"
    with pytest.raises(StoreError) as refused:
        PostgresJobStore(url)
    message = str(refused.value)
    assert message.startswith("cannot open job store postgresql://bulletproof:***@127.0.0.1:")
    assert "s3cret-pw" not in message
    assert "refused" in message.lower()


def test_a_newer_schema_is_refused(postgres_url: str) -> None:
    PostgresJobStore(postgres_url).close()
    with psycopg.connect(postgres_url) as conn:
        conn.execute("UPDATE meta SET value = %s WHERE key = 'schema_version'",
                     (str(SCHEMA_VERSION + 1),))
    with pytest.raises(StoreError, match="newer than this version supports"):
        PostgresJobStore(postgres_url)


def test_opening_twice_migrates_once(postgres_url: str) -> None:
    stores = at_once([lambda: PostgresJobStore(postgres_url) for _ in range(4)])
    try:
        assert {s.get_meta("schema_version") for s in stores} == {str(SCHEMA_VERSION)}
    finally:
        for store in stores:
            store.close()


def test_a_sweep_passes_by_a_job_while_its_output_is_published(
        two: tuple[PostgresJobStore, PostgresJobStore]) -> None:
    publisher, sweeper = two
    job = added(publisher, new("a.mp4"))
    claim = publisher.claim("node-a", now=1, lease_seconds=1)  # its lease lapsed long ago
    assert claim is not None
    seen: list[list[int]] = []

    def publish() -> None:  # runs with the row locked: another node's sweep skips it
        seen.append([j.id for j in sweeper.requeue_expired(now=1000)])

    done = publisher.mark_completed(job.id, now=2, output_bytes=1, media_duration=None,
                                    token=claim.token, publish=publish)
    assert seen == [[]] and done.state == "completed"
    assert sweeper.requeue_expired(now=1000) == []  # and once committed there is nothing to sweep
    assert sweeper.get(job.id).attempts == 1


def test_a_publish_behind_a_sweep_holding_the_row_is_refused(postgres_url: str,
                                                              two: tuple[PostgresJobStore,
                                                                         PostgresJobStore]) -> None:
    publisher, _ = two
    job = added(publisher, new("a.mp4"))
    claim = publisher.claim("node-a", now=1, lease_seconds=1)
    assert claim is not None
    ran: list[str] = []
    with psycopg.connect(postgres_url) as sweep:  # a sweep caught mid-transaction
        sweep.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (job.id,))
        with ThreadPoolExecutor(1) as pool:
            attempt = pool.submit(lambda: publisher.mark_completed(
                job.id, now=2, output_bytes=1, media_duration=None, token=claim.token,
                publish=lambda: ran.append("published")))
            assert _until(lambda: _waiting_on_a_lock(postgres_url))  # the publish waits...
            sweep.execute("UPDATE jobs SET state = 'queued', claim_token = claim_token + 1, "
                          "lease_until = NULL WHERE id = %s", (job.id,))
            sweep.commit()
            with pytest.raises(StaleClaim, match="claim .* is stale"):  # ...then sees the sweep
                attempt.result(timeout=10)
    assert ran == [] and publisher.get(job.id).state == "queued"


def _waiting_on_a_lock(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                           "AND datname = current_database()").fetchone()
    return bool(row and row[0])


def test_a_store_idle_across_a_server_restart_reads_and_writes_at_once(
        postgres_cluster: PostgresCluster, postgres_url: str) -> None:
    reader, writer = PostgresJobStore(postgres_url), PostgresJobStore(postgres_url)
    try:
        job = added(writer, new("a.mp4"))
        assert reader.get(job.id).state == "queued"
        postgres_cluster.stop()
        postgres_cluster.start()
        # Neither used its connection while the server was away: the first call finds it ended
        # and is made again on a new connection instead of failing.
        assert reader.get(job.id).state == "queued"
        writer.set_meta("queue_paused", "1")
        assert writer.health().outages == 0 and reader.get_meta("queue_paused") == "1"
    finally:
        reader.close()
        writer.close()


def test_transitions_in_opposite_directions_at_once_do_not_deadlock(postgres_url: str) -> None:
    store = PostgresJobStore(postgres_url)
    try:
        running, waiting, other = (added(store, new(f"{n}.mp4")) for n in "abc")
        store.mark_started(running.id, now=1)
    finally:
        store.close()
    with psycopg.connect(postgres_url) as first, psycopg.connect(postgres_url) as second:
        first.execute("SET deadlock_timeout = '100ms'")
        second.execute("SET deadlock_timeout = '100ms'")
        # processing -> paused: the first holds the counts of both states...
        first.execute("UPDATE jobs SET state = 'paused' WHERE id = %s", (running.id,))
        with ThreadPoolExecutor(1) as pool:
            # ...a claim (queued -> processing) waits for it...
            claim = pool.submit(lambda: second.execute(
                "UPDATE jobs SET state = 'processing' WHERE id = %s", (waiting.id,)))
            assert _until(lambda: _waiting_on_a_lock(postgres_url))
            # ...and the first, going on with queued -> completed, must not wait for the claim.
            first.execute("UPDATE jobs SET state = 'completed' WHERE id = %s", (other.id,))
            first.commit()
            claim.result(timeout=10)
            second.commit()
    reopened = PostgresJobStore(postgres_url)
    try:
        counts = reopened.counts_by_state()
        assert (counts["paused"], counts["processing"], counts["completed"], counts["queued"]) == (
            1, 1, 1, 0)
    finally:
        reopened.close()
