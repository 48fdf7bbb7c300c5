"""The JobStore contract: the behaviour every store implementation must show.

`tests/test_store_contract.py` runs `JobStoreContract` once per implementation through the
`harness` fixture (a `StoreHarness`); adding an implementation is adding one fixture param.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from bulletproof.audit import AUDIT_MAX_AGE_SECONDS, AuditEntry
from bulletproof.errors import InvalidTransition, JobNotFound, NodeNotFound, StaleClaim, StoreError
from bulletproof.models import FailureReason, Job, JobState, SkipReason
from bulletproof.store import (
    SORT_KEYS,
    ChangeKind,
    Claim,
    ControlAction,
    JobStore,
    NewJob,
    NodeInfo,
    StoreChange,
)


@dataclass
class StoreHarness:
    """One implementation under test: the open store and the few things only it can do."""

    store: JobStore
    reopen: Callable[[], JobStore]  # close the store and open the same data again
    refuse_writes: Callable[[], None]  # make the database itself refuse writes...
    allow_writes: Callable[[], None]  # ...and take them again


def new(name: str, size: int = 100, mtime: int = 1, priority: int = 0,
        out: Path | str = "/out") -> NewJob:
    return NewJob(source_path=f"/in/{name}", rel_path=name, watch_folder="/in", size=size,
                  mtime_ns=mtime, profile="h264_mp4", rule="videos",
                  output_path=f"{out}/{name}", priority=priority)


def added(store: JobStore, job: NewJob) -> Job:
    got = store.add(job)
    assert got is not None
    return got


def audit(at: float, **values: object) -> AuditEntry:
    base: dict[str, object] = {"at": at, "action": "queue.pause", "method": "POST",
                               "route": "/api/v1/queue/pause", "status": 200, "result": "ok",
                               "address": "192.0.2.1"}
    return AuditEntry(**{**base, **values})  # type: ignore[arg-type]


def claimed_again(store: JobStore) -> tuple[Job, Claim, Claim]:
    """Job "a", claimed by n1 whose lease lapsed and was swept, then claimed by n2."""
    job = added(store, new("a"))
    old = store.claim("n1", now=1, lease_seconds=5)
    assert old is not None
    store.requeue_expired(now=10)
    current = store.claim("n2", now=11, lease_seconds=30)
    assert current is not None
    return job, old, current


class JobStoreContract:
    """Tests any JobStore must pass; the `harness` fixture supplies the implementation."""

    @pytest.fixture
    def store(self, harness: StoreHarness) -> JobStore:
        return harness.store

    def test_is_a_job_store(self, store: JobStore) -> None:
        assert isinstance(store, JobStore)

    # -- adding: file versions are queued once, done versions never again ----------------------

    def test_same_file_version_is_queued_once(self, store: JobStore) -> None:
        assert store.add(new("a.mp4")) is not None
        assert store.add(new("a.mp4")) is None
        assert store.add(new("a.mp4", mtime=2)) is not None  # changed file: a new job
        assert store.add(new("a.mp4"), force=True) is not None  # explicit request
        assert getattr(store.find("/in/a.mp4", 100, 1), "id", None) == 3  # the newest job of that version
        assert store.find("/in/a.mp4", 100, 9) is None

    def test_an_unfinished_job_of_a_version_is_found_behind_a_finished_one(self, store: JobStore) -> None:
        older = added(store, new("a.mp4"))
        store.mark_started(older.id, now=1)
        newer = store.add(new("a.mp4"), force=True)
        assert newer is not None
        store.cancel_queued(newer.id, now=2)  # the newest job of that version is finished...
        assert getattr(store.unfinished_job("/in/a.mp4", 100, 1), "id", None) == older.id  # ...not this one
        store.mark_completed(older.id, now=3, output_bytes=10, media_duration=1.0)
        assert store.unfinished_job("/in/a.mp4", 100, 1) is None

    def test_seen_tells_a_version_that_had_a_job(self, store: JobStore) -> None:
        job = added(store, new("a"))
        assert store.seen("/in/a", 100, 1) and not store.seen("/in/a", 100, 2)
        assert not store.seen("/in/b", 100, 1)
        store.mark_started(job.id, now=1)
        store.mark_completed(job.id, now=2, output_bytes=1, media_duration=1.0)
        store.delete(job.id)
        assert store.seen("/in/a", 100, 1)  # done_files outlives the job

    def test_done_files_survive_deleting_the_job(self, store: JobStore) -> None:
        job = added(store, new("a.mp4"))
        store.mark_started(job.id, now=1)
        store.mark_completed(job.id, now=2, output_bytes=10, media_duration=1.0)
        store.delete(job.id)
        assert store.add(new("a.mp4")) is None
        with pytest.raises(JobNotFound):
            store.get(job.id)

    def test_skipped_jobs_count_and_are_done(self, store: JobStore) -> None:
        job = added(store, new("a.mp4"))
        store.mark_started(job.id, now=1.0)
        skipped = store.mark_skipped(job.id, now=2.0, reason=SkipReason.ALREADY_TARGET,
                                     message="m", output_bytes=None, media_duration=1.0)
        assert (skipped.state, skipped.reason) == (JobState.SKIPPED, SkipReason.ALREADY_TARGET)
        assert store.counts_by_state()[JobState.SKIPPED] == 1
        assert store.last_finished_at()[JobState.SKIPPED] == 2.0
        store.delete(job.id)
        assert store.add(new("a.mp4")) is None  # remembered as done

    def test_a_job_that_cannot_run_is_recorded_failed(self, store: JobStore) -> None:
        job = store.add_failed(new("a.mp4"), reason=FailureReason.OUTPUT_PATH_INVALID,
                               error="too long", now=5)
        assert job is not None and job.state is JobState.FAILED
        assert (job.reason, job.error, job.finished_at) == (
            FailureReason.OUTPUT_PATH_INVALID, "too long", 5)
        assert store.add_failed(new("a.mp4"), reason=FailureReason.OUTPUT_PATH_INVALID,
                                error="again") is None

    # -- output names --------------------------------------------------------------------------

    def test_output_names_are_reserved_per_source(self, store: JobStore, tmp_path: Path) -> None:
        out = tmp_path / "out"
        first, applied = store.add_reserving(new("clip.mp4", out=out), policy="rename")
        assert first is not None and applied is None
        namesake = NewJob(source_path="/in/other/clip.mp4", rel_path="other/clip.mp4",
                          watch_folder="/in", size=5, mtime_ns=1, profile="h264_mp4",
                          rule="videos", output_path=first.output_path)
        renamed, applied = store.add_reserving(namesake, policy="rename")
        assert renamed is not None and applied == "rename"
        assert Path(renamed.output_path).name == "clip (1).mp4"
        failed, applied = store.add_reserving(replace(namesake, source_path="/in/x/clip.mp4"),
                                              policy="fail")
        assert failed is not None and applied == "fail"
        assert (failed.state, failed.reason) == (JobState.FAILED, FailureReason.OUTPUT_CONFLICT)
        skipped, applied = store.add_reserving(replace(namesake, source_path="/in/y/clip.mp4"),
                                               policy="skip")
        assert skipped is not None and applied == "skip"
        assert (skipped.state, skipped.reason) == (JobState.SKIPPED, SkipReason.OUTPUT_EXISTS)

    def test_a_new_version_of_the_same_source_keeps_its_name(self, store: JobStore,
                                                              tmp_path: Path) -> None:
        out = tmp_path / "out"
        first, _ = store.add_reserving(new("clip.mp4", out=out), policy="rename")
        assert first is not None
        store.mark_started(first.id, now=1.0)
        store.mark_completed(first.id, now=2.0, output_bytes=1, media_duration=1.0)
        out.mkdir()
        Path(first.output_path).write_bytes(b"our own output")
        again, applied = store.add_reserving(new("clip.mp4", size=200, out=out), policy="rename")
        assert again is not None and again.output_path == first.output_path and applied is None

    def test_a_file_that_appeared_at_the_output_is_handled_on_the_first_claim(
            self, store: JobStore, tmp_path: Path) -> None:
        out = tmp_path / "out"
        out.mkdir()
        job, _ = store.add_reserving(new("clip.mp4", out=out), policy="rename")
        assert job is not None
        (out / "clip.mp4").write_bytes(b"someone else's")
        moved, applied = store.reserve_again(job.id, policy="rename")
        assert applied == "rename" and Path(moved.output_path).name == "clip (1).mp4"
        assert store.get(job.id).output_path == moved.output_path
        kept, applied = store.reserve_again(job.id, policy="rename")
        assert applied is None and kept.output_path == moved.output_path

    # -- the queue order -------------------------------------------------------------------------

    def test_fifo_within_priority_and_move_to_front(self, store: JobStore) -> None:
        a, b, c = (added(store, new(n)) for n in ("a", "b", "c"))
        urgent = added(store, new("u", priority=5))
        assert [j.id for j in store.queued()] == [urgent.id, a.id, b.id, c.id]
        store.prioritize(c.id)
        assert [j.id for j in store.queued()] == [c.id, urgent.id, a.id, b.id]
        assert getattr(store.next_queued(now=0), "id", None) == c.id
        assert [j.id for j in store.queued(limit=2, offset=1)] == [urgent.id, a.id]

    def test_backoff_delays_a_queued_job(self, store: JobStore) -> None:
        job = added(store, new("a"))
        store.mark_started(job.id, now=10)
        store.mark_failed(job.id, now=11, reason=FailureReason.STALLED, error="stalled",
                          stderr_tail="", retry_at=50)
        assert store.get(job.id).state is JobState.QUEUED
        assert store.next_queued(now=49) is None
        assert store.claim("n1", now=49, lease_seconds=10) is None
        assert getattr(store.next_queued(now=50), "id", None) == job.id
        assert store.next_wakeup() == 50
        claim = store.claim("n1", now=50, lease_seconds=10)
        assert claim is not None and claim.job.id == job.id

    def test_claims_follow_the_queue_order(self, store: JobStore) -> None:
        a, b = added(store, new("a")), added(store, new("b"))
        urgent = added(store, new("u", priority=5))
        order = [store.claim("n1", now=1, lease_seconds=10) for _ in range(3)]
        assert [c.job.id for c in order if c] == [urgent.id, a.id, b.id]
        assert store.claim("n1", now=1, lease_seconds=10) is None
        assert all(c.job.state is JobState.PROCESSING and c.job.attempts == 1 for c in order if c)

    def test_claims_within_path_prefixes_leave_other_jobs_queued(self, store: JobStore) -> None:
        # A node claims only jobs whose stored paths it can resolve (bulletproof.libraries).
        def stored(name: str, source: str, output: str) -> Job:
            return added(store, replace(new(name), source_path=source, output_path=output))

        tv = stored("t", "tv:show/e1.mkv", "tv:out/e1.mp4")
        media = stored("m", "media:in/a.mp4", "media:out/a.mp4")
        local = stored("l", "/in/l.mp4", "/out/l.mp4")
        unnamed = stored("u", "media:in/u.mp4", "")  # no output name yet: the source decides
        mixed = stored("x", "media:in/x.mp4", "tv:out/x.mp4")  # its output is in a library too
        tricky = stored("p", "media_2:in/p.mp4", "media_2:out/p.mp4")  # `_` is no wildcard
        within = ["/", "media:"]
        assert store.next_queued(now=1, within=within).id == media.id
        claimed = [store.claim("n1", now=1, lease_seconds=10, within=within) for _ in range(4)]
        assert [c.job.id for c in claimed if c] == [media.id, local.id, unnamed.id]
        assert store.next_queued(now=1, within=within) is None
        assert store.claim("n2", now=1, lease_seconds=10, within=["tv:"]).job.id == tv.id
        assert store.claim("n2", now=1, lease_seconds=10, within=[]) is None
        assert [store.get(j.id).state for j in (mixed, tricky)] == [JobState.QUEUED] * 2
        assert store.claim("n3", now=1, lease_seconds=10).job.id == mixed.id  # None: any job

    def test_output_names_are_looked_up_through_the_callers_file_system(
            self, store: JobStore, tmp_path: Path) -> None:
        # Stored output paths may be fleet forms: the caller says what exists on its disk.
        on_disk = {"media:out/clip.mp4"}
        job, applied = store.add_reserving(
            replace(new("clip.mp4"), source_path="media:in/clip.mp4", output_path="media:out/clip.mp4"),
            policy="rename", file_exists=on_disk.__contains__)
        assert job is not None and applied == "rename" and job.output_path == "media:out/clip (1).mp4"
        on_disk.add("media:out/clip (1).mp4")
        moved, applied = store.reserve_again(job.id, policy="rename", file_exists=on_disk.__contains__)
        assert applied == "rename" and moved.output_path == "media:out/clip (1) (1).mp4"

    # -- transitions -------------------------------------------------------------------------

    def test_attempts_and_failure_details(self, store: JobStore) -> None:
        job = added(store, new("a"))
        started = store.mark_started(job.id, now=10)
        assert started.attempts == 1 and started.state is JobState.PROCESSING
        failed = store.mark_failed(job.id, now=12, reason=FailureReason.INPUT_INVALID, error="bad",
                                   stderr_tail="moov atom not found", retry_at=None)
        assert failed.state is JobState.FAILED and failed.reason is FailureReason.INPUT_INVALID
        assert failed.stderr_tail == "moov atom not found" and failed.duration == 2
        retried = store.requeue(job.id, now=13)
        assert retried.state is JobState.QUEUED and retried.attempts == 0 and retried.reason is None

    def test_pause_resume_complete_and_details(self, store: JobStore) -> None:
        job = added(store, new("a"))
        store.mark_started(job.id, now=1)
        store.set_media_duration(job.id, 8.0)
        store.set_source_inode(job.id, 42)
        store.set_progress(job.id, 0.5, 2.0, 3.0)
        assert store.mark_paused(job.id, True).state is JobState.PAUSED
        assert store.mark_paused(job.id, False).state is JobState.PROCESSING
        store.set_quality_score(job.id, 0.97)
        got = store.get(job.id)
        assert (got.progress, got.speed, got.eta_seconds) == (0.5, 2.0, 3.0)
        assert (got.media_duration, got.source_inode, got.quality_score) == (8.0, 42, 0.97)
        done = store.mark_completed(job.id, now=5, output_bytes=7, media_duration=None,
                                    stderr_tail="tail")
        assert done.state is JobState.COMPLETED and done.progress == 1
        assert (done.output_bytes, done.media_duration, done.stderr_tail) == (7, 8.0, "tail")

    def test_a_cancelled_attempt_ends_cancelled(self, store: JobStore) -> None:
        job = added(store, new("a"))
        store.mark_started(job.id, now=1)
        cancelled = store.mark_failed(job.id, now=2, reason=FailureReason.CANCELLED, error="c",
                                      stderr_tail="", retry_at=None, progress=0.25)
        assert cancelled.state is JobState.CANCELLED and cancelled.progress == 0.25

    def test_invalid_transitions_and_unknown_ids(self, store: JobStore) -> None:
        job = added(store, new("a"))
        with pytest.raises(InvalidTransition, match="cannot retry job 1: it is queued"):
            store.requeue(job.id, now=1)
        with pytest.raises(InvalidTransition):
            store.delete(job.id)
        with pytest.raises(InvalidTransition):
            store.mark_paused(job.id, True)
        with pytest.raises(InvalidTransition):
            store.mark_completed(job.id, now=1, output_bytes=1, media_duration=None)
        with pytest.raises(InvalidTransition):
            store.mark_failed(job.id, now=1, reason=FailureReason.INTERNAL, error="",
                              stderr_tail="", retry_at=None)
        with pytest.raises(InvalidTransition):
            store.mark_skipped(job.id, now=1, reason=SkipReason.LARGER_OUTPUT, message="",
                               output_bytes=None, media_duration=None)
        with pytest.raises(InvalidTransition):
            store.requeue_interrupted(job.id, now=1)
        store.mark_started(job.id, now=1)
        with pytest.raises(InvalidTransition, match="cannot start job 1: it is processing"):
            store.mark_started(job.id, now=1)
        with pytest.raises(InvalidTransition):
            store.cancel_queued(job.id, now=1)
        with pytest.raises(InvalidTransition):
            store.prioritize(job.id)
        with pytest.raises(InvalidTransition):
            store.mark_paused(job.id, False)  # not paused
        with pytest.raises(JobNotFound, match="job 999 not found"):
            store.get(999)
        for call in (lambda: store.cancel_queued(999, now=1), lambda: store.delete(999),
                     lambda: store.mark_started(999, now=1), lambda: store.requeue(999, now=1),
                     lambda: store.prioritize(999), lambda: store.mark_paused(999, True)):
            with pytest.raises(JobNotFound):
                call()

    def test_cancel_and_clear(self, store: JobStore) -> None:
        a, b, c = (added(store, new(n)) for n in ("a", "b", "c"))
        assert store.cancel_queued(a.id, now=1).state is JobState.CANCELLED
        store.mark_started(b.id, now=1)
        assert store.clear_queue(now=2) == [c.id]
        counts = store.counts_by_state()
        assert counts[JobState.CANCELLED] == 2 and counts[JobState.PROCESSING] == 1
        assert counts[JobState.QUEUED] == 0 and set(counts) == set(JobState)

    def test_recovery_after_a_crash(self, store: JobStore) -> None:
        a, b, c = (added(store, new(n)) for n in ("a", "b", "c"))
        store.mark_started(a.id, now=1)
        store.mark_started(b.id, now=1)
        store.mark_paused(b.id, True)
        for _ in range(2):  # c exhausted its attempts
            store.mark_started(c.id, now=1)
            store.mark_failed(c.id, now=2, reason=FailureReason.STALLED, error="", stderr_tail="",
                              retry_at=2)
        store.mark_started(c.id, now=3)
        recovered = {j.id: j for j in store.recover_interrupted(now=5, max_attempts=3,
                                                                retry_interrupted=True)}
        assert recovered[a.id].state is JobState.QUEUED and recovered[a.id].attempts == 1
        assert recovered[a.id].reason is FailureReason.INTERRUPTED
        assert recovered[b.id].state is JobState.QUEUED
        assert recovered[c.id].state is JobState.FAILED and recovered[c.id].attempts == 3
        # Interrupted jobs go to the front.
        assert getattr(store.next_queued(now=6), "id", None) in (a.id, b.id)

    def test_clean_shutdown_requeue_does_not_count_the_attempt(self, store: JobStore) -> None:
        first = added(store, new("first"))
        job = added(store, new("a"))
        store.mark_started(job.id, now=1)
        again = store.requeue_interrupted(job.id, now=2)
        assert again.state is JobState.QUEUED and again.attempts == 0
        assert getattr(store.next_queued(now=3), "id", None) == job.id != first.id  # back at the front

    # -- claims, leases, fencing tokens ------------------------------------------------------

    def test_every_claim_gets_a_new_token(self, store: JobStore) -> None:
        job = added(store, new("a"))
        first = store.claim("n1", now=1, lease_seconds=30)
        assert first is not None and first.job.id == job.id
        assert (first.node, first.lease_until) == ("n1", 31)
        store.requeue_interrupted(job.id, now=2, token=first.token)
        second = store.claim("n2", now=3, lease_seconds=30)
        assert second is not None and second.job.id == job.id and second.token > first.token

    def test_a_stale_token_is_refused(self, store: JobStore) -> None:
        job = added(store, new("a"))
        old = store.claim("n1", now=1, lease_seconds=30)
        assert old is not None
        store.requeue_interrupted(job.id, now=2, token=old.token)
        current = store.claim("n2", now=3, lease_seconds=30)
        assert current is not None
        for call in (
            lambda t: store.mark_completed(job.id, now=4, output_bytes=1, media_duration=None,
                                           token=t),
            lambda t: store.mark_failed(job.id, now=4, reason=FailureReason.FFMPEG_ERROR,
                                        error="x", stderr_tail="", retry_at=None, token=t),
            lambda t: store.mark_skipped(job.id, now=4, reason=SkipReason.LARGER_OUTPUT,
                                         message="", output_bytes=None, media_duration=None,
                                         token=t),
            lambda t: store.mark_paused(job.id, True, token=t),
            lambda t: store.requeue_interrupted(job.id, now=4, token=t),
            lambda t: store.renew(job.id, t, until=100),
        ):
            with pytest.raises(StaleClaim, match="claim .* is stale"):
                call(old.token)
        assert store.get(job.id).state is JobState.PROCESSING  # nothing the stale node did stuck
        done = store.mark_completed(job.id, now=5, output_bytes=1, media_duration=None,
                                    token=current.token)
        assert done.state is JobState.COMPLETED
        with pytest.raises(StaleClaim, match="the attempt is over"):
            store.mark_failed(job.id, now=6, reason=FailureReason.INTERNAL, error="", stderr_tail="",
                              retry_at=None, token=current.token)

    def test_an_expired_lease_is_swept_back_to_the_queue(self, store: JobStore) -> None:
        waiting = added(store, new("waiting"))
        job = added(store, new("held", priority=1))
        claim = store.claim("n1", now=10, lease_seconds=30)
        assert claim is not None and claim.job.id == job.id
        assert store.requeue_expired(now=40) == []  # the lease holds until 40
        store.renew(job.id, claim.token, until=100)
        assert store.requeue_expired(now=99) == []
        swept = store.requeue_expired(now=101)
        assert [j.id for j in swept] == [job.id]
        assert swept[0].state is JobState.QUEUED and swept[0].reason is FailureReason.INTERRUPTED
        assert swept[0].attempts == 1  # the attempt counted
        assert [j.id for j in store.queued()] == [job.id, waiting.id]  # at the front
        with pytest.raises(StaleClaim):  # the node that lost it cannot record an outcome
            store.mark_completed(job.id, now=102, output_bytes=1, media_duration=None,
                                 token=claim.token)
        again = store.claim("n2", now=103, lease_seconds=30)
        assert again is not None and again.job.id == job.id and again.job.attempts == 2

    def test_a_stale_token_writes_no_attempt_detail(self, store: JobStore) -> None:
        job, old, current = claimed_again(store)
        store.set_media_duration(job.id, 8.0, token=current.token)
        store.set_source_inode(job.id, 42, token=current.token)
        store.set_progress(job.id, 0.5, 2.0, 3.0, token=current.token)
        store.set_quality_score(job.id, 0.97, token=current.token)
        for call in (
            lambda t: store.set_media_duration(job.id, 1.0, token=t),
            lambda t: store.set_source_inode(job.id, 7, token=t),
            lambda t: store.set_progress(job.id, 0.9, 9.0, 9.0, token=t),
            lambda t: store.set_quality_score(job.id, 0.1, token=t),
            lambda t: store.reserve_again(job.id, policy="rename", path="/out/other", token=t),
        ):
            with pytest.raises(StaleClaim, match="claim .* is stale"):
                call(old.token)
        got = store.get(job.id)
        assert (got.media_duration, got.source_inode, got.quality_score) == (8.0, 42, 0.97)
        assert (got.progress, got.speed, got.eta_seconds, got.output_path) == (
            0.5, 2.0, 3.0, "/out/a")
        assert got.claimed_by == "n2" and got.state is JobState.PROCESSING

    def test_the_publish_runs_only_under_the_current_claim(self, store: JobStore) -> None:
        job, old, current = claimed_again(store)
        ran: list[str] = []
        with pytest.raises(StaleClaim):
            store.mark_completed(job.id, now=12, output_bytes=1, media_duration=None,
                                 token=old.token, publish=lambda: ran.append("old"))
        with pytest.raises(StaleClaim):
            store.mark_skipped(job.id, now=12, reason=SkipReason.ALREADY_TARGET, message="",
                               output_bytes=1, media_duration=None, token=old.token,
                               publish=lambda: ran.append("old skip"))
        assert ran == [] and store.get(job.id).state is JobState.PROCESSING
        done = store.mark_completed(job.id, now=13, output_bytes=1, media_duration=None,
                                    token=current.token, publish=lambda: ran.append("current"))
        assert done.state is JobState.COMPLETED and ran == ["current"]
        # Completing again with the same claim (a commit whose answer was lost) is a no-op.
        again = store.mark_completed(job.id, now=14, output_bytes=2, media_duration=None,
                                     token=current.token, publish=lambda: ran.append("twice"))
        assert again.state is JobState.COMPLETED and again.output_bytes == 1 and ran == ["current"]

    def test_a_publish_that_fails_records_nothing(self, store: JobStore) -> None:
        job = added(store, new("a"))
        claim = store.claim("n1", now=1, lease_seconds=30)
        assert claim is not None

        def broken() -> None:
            raise FileExistsError("/out/a")

        with pytest.raises(FileExistsError):
            store.mark_completed(job.id, now=2, output_bytes=1, media_duration=None,
                                 token=claim.token, publish=broken)
        with pytest.raises(FileExistsError):
            store.mark_skipped(job.id, now=2, reason=SkipReason.ALREADY_TARGET, message="",
                               output_bytes=1, media_duration=None, token=claim.token,
                               publish=broken)
        got = store.get(job.id)
        assert got.state is JobState.PROCESSING and got.finished_at is None
        assert store.find("/in/a", 100, 1) is not None and store.add(new("a")) is None
        skipped = store.mark_skipped(job.id, now=3, reason=SkipReason.ALREADY_TARGET, message="m",
                                     output_bytes=None, media_duration=None, token=claim.token)
        assert skipped.state is JobState.SKIPPED

    def test_fenced_runs_only_while_the_claim_holds(self, store: JobStore) -> None:
        job = added(store, new("a"))
        claim = store.claim("n1", now=1, lease_seconds=5)
        assert claim is not None
        assert store.fenced(job.id, claim.token, lambda: "ran") == "ran"
        with pytest.raises(StaleClaim, match=r"cannot delete the source of job \d+: claim \d+ is "
                           r"stale \(the job is processing\)"):
            store.fenced(job.id, claim.token, lambda: "no", states=frozenset({JobState.COMPLETED}),
                         doing="delete the source of")
        store.mark_completed(job.id, now=2, output_bytes=1, media_duration=None, token=claim.token)
        assert store.fenced(job.id, claim.token, lambda: "after",
                            states=frozenset({JobState.COMPLETED})) == "after"
        with pytest.raises(StaleClaim, match="the job is completed"):
            store.fenced(job.id, claim.token, lambda: "no")
        store.requeue(job.id, now=3)
        retry = store.claim("n2", now=4, lease_seconds=5)
        assert retry is not None and retry.token > claim.token
        ran: list[int] = []
        with pytest.raises(StaleClaim, match="claim .* is stale"):
            store.fenced(job.id, claim.token, lambda: ran.append(1),
                         states=frozenset({JobState.COMPLETED}))
        assert ran == []
        with pytest.raises(JobNotFound):
            store.fenced(999, 1, lambda: None)

    def test_a_swept_job_out_of_attempts_fails(self, store: JobStore) -> None:
        job = added(store, new("a"))
        assert store.claim("n1", now=1, lease_seconds=5) is not None
        swept = store.requeue_expired(now=10, max_attempts=1)
        assert [(j.id, j.state, j.reason) for j in swept] == [
            (job.id, JobState.FAILED, FailureReason.INTERRUPTED)]

    def test_jobs_taken_without_a_lease_are_never_swept(self, store: JobStore) -> None:
        job = added(store, new("a"))
        store.mark_started(job.id, now=1)
        assert store.requeue_expired(now=10**9) == []
        assert store.get(job.id).state is JobState.PROCESSING

    # -- controls asked of the node that runs a job ----------------------------------------------

    def test_a_control_request_is_addressed_to_the_node_holding_the_claim(
            self, store: JobStore) -> None:
        job = added(store, new("a"))
        with pytest.raises(InvalidTransition, match="cannot cancel job .*: it is queued"):
            store.request_control(job.id, ControlAction.CANCEL, now=1)
        with pytest.raises(JobNotFound):
            store.request_control(9999, ControlAction.CANCEL, now=1)
        claim = store.claim("n2", now=1, lease_seconds=30)
        assert claim is not None
        with pytest.raises(InvalidTransition, match="cannot resume job .*: it is processing"):
            store.request_control(job.id, ControlAction.RESUME, now=2)
        heard: list[StoreChange] = []
        store.subscribe(heard.append)
        asked = store.request_control(job.id, ControlAction.PAUSE, now=2)
        assert (asked.node, asked.action, asked.token) == ("n2", ControlAction.PAUSE, claim.token)
        assert [(c.kind, c.job_id, c.key) for c in heard] == [(ChangeKind.CONTROL, job.id, "n2")]
        # A later request replaces the pending one; only the addressee sees it.
        store.request_control(job.id, ControlAction.CANCEL, now=3)
        assert [(r.job_id, r.action, r.requested_at) for r in store.control_requests("n2")] == [
            (job.id, ControlAction.CANCEL, 3)]
        assert store.control_requests("n1") == []
        store.clear_control(job.id, claim.token + 1)  # another attempt's: not this one
        assert len(store.control_requests("n2")) == 1
        store.clear_control(job.id, claim.token)
        assert store.control_requests("n2") == []

    def test_a_paused_job_takes_resume_and_cancel_requests_only(self, store: JobStore) -> None:
        job = added(store, new("a"))
        claim = store.claim("n2", now=1, lease_seconds=30)
        assert claim is not None
        store.mark_paused(job.id, True, token=claim.token)
        with pytest.raises(InvalidTransition, match="cannot pause job"):
            store.request_control(job.id, ControlAction.PAUSE, now=2)
        assert store.request_control(job.id, ControlAction.RESUME, now=2).node == "n2"
        assert store.request_control(job.id, ControlAction.CANCEL, now=3).node == "n2"
        store.mark_completed(job.id, now=4, output_bytes=1, media_duration=None,
                             token=claim.token)
        with pytest.raises(InvalidTransition, match="it is completed"):
            store.request_control(job.id, ControlAction.CANCEL, now=5)

    # -- notifications ---------------------------------------------------------------------------

    def test_listeners_hear_committed_changes(self, store: JobStore) -> None:
        heard: list[StoreChange] = []
        unsubscribe = store.subscribe(heard.append)
        job = added(store, new("a"))
        claim = store.claim("n1", now=1, lease_seconds=30)
        assert claim is not None
        store.mark_completed(job.id, now=2, output_bytes=1, media_duration=None, token=claim.token)
        store.set_meta("queue_paused", "1")
        with pytest.raises(InvalidTransition):
            store.cancel_queued(job.id, now=3)  # refused: nothing to hear
        store.delete(job.id)
        assert [(c.kind, c.job_id, c.state, c.key) for c in heard] == [
            (ChangeKind.JOB, job.id, JobState.QUEUED, None),
            (ChangeKind.JOB, job.id, JobState.PROCESSING, None),
            (ChangeKind.JOB, job.id, JobState.COMPLETED, None),
            (ChangeKind.META, None, None, "queue_paused"),
            (ChangeKind.JOB, job.id, None, None),
        ]
        unsubscribe()
        added(store, new("b"))
        assert len(heard) == 5

    def test_a_failing_listener_does_not_undo_the_write(self, store: JobStore) -> None:
        def broken(change: StoreChange) -> None:
            raise RuntimeError("listener bug")

        store.subscribe(broken)
        job = added(store, new("a"))
        assert store.get(job.id).state is JobState.QUEUED

    # -- reads -----------------------------------------------------------------------------------

    def test_list_filters_sort_and_pagination(self, store: JobStore) -> None:
        for i, name in enumerate(["alpha.mp4", "beta.mov", "gamma_100%.mp4"]):
            job = added(store, new(name, size=100 * (i + 1)))
            store.mark_started(job.id, now=10 * i)
            store.mark_completed(job.id, now=10 * i + i + 1, output_bytes=5, media_duration=1)
        store.add(new("delta.mp4", size=50))
        jobs, total = store.list_jobs(states=[JobState.COMPLETED], sort="duration", descending=True)
        assert total == 3 and [j.rel_path for j in jobs] == ["gamma_100%.mp4", "beta.mov", "alpha.mp4"]
        assert store.list_jobs(search="100%")[1] == 1
        assert store.list_jobs(search="_")[1] == 1  # LIKE wildcards are literal
        page, total = store.list_jobs(sort="size", descending=False, limit=2, offset=1)
        assert total == 4 and [j.size for j in page] == [100, 200]
        assert store.list_jobs(profile="nope")[1] == 0
        assert store.list_jobs(profile="h264_mp4")[1] == 4
        # Unfinished jobs sort last either way.
        for descending in (True, False):
            ordered, _ = store.list_jobs(sort="finished", descending=descending)
            assert ordered[-1].rel_path == "delta.mp4"
        assert [j.rel_path for j in store.list_jobs(since=11, until=22)[0]] == ["beta.mov"]
        for key in SORT_KEYS:  # every sort key the API offers works
            assert store.list_jobs(sort=key)[1] == 4

    def test_summary_and_history(self, store: JobStore) -> None:
        for i in range(3):
            job = added(store, new(f"{i}"))
            store.mark_started(job.id, now=1000 + i)
            if i < 2:
                store.mark_completed(job.id, now=1004 + i, output_bytes=1, media_duration=1)
            else:
                store.mark_failed(job.id, now=1010, reason=FailureReason.FFMPEG_ERROR, error="x",
                                  stderr_tail="", retry_at=None)
        skipped = added(store, new("3"))
        store.mark_started(skipped.id, now=1003)
        store.mark_skipped(skipped.id, now=1003, reason=SkipReason.ALREADY_TARGET, message="x",
                           output_bytes=None, media_duration=1)
        summary = store.summary(now=1100)
        assert (summary["total_jobs"], summary["successful"], summary["failed"]) == (4, 2, 1)
        assert summary["skipped"] == 1
        assert summary["avg_duration"] == 4
        assert len(summary["last_24h"]) == 24
        buckets = store.history(since=1000, until=1020, step=10)
        assert [b["start"] for b in buckets] == [1000, 1010]
        assert [(b["completed"], b["failed"]) for b in buckets] == [(2, 0), (0, 1)]
        assert buckets[0]["avg_duration"] == 4 and buckets[1]["avg_duration"] is None
        assert store.last_finished_at()[JobState.FAILED] == 1010
        assert store.last_finished_at()[JobState.CANCELLED] is None
        assert store.oldest_queued_at() is None
        queued = added(store, new("q"))
        assert store.oldest_queued_at() == queued.queued_at

    def test_space_saved_sums_completed_jobs_only(self, store: JobStore) -> None:
        sizes = {"a.mp4": (1000, 400), "b.mp4": (500, 600), "c.mp4": (2000, None)}
        for name, (size, output) in sizes.items():
            job = added(store, new(name, size=size))
            store.mark_started(job.id, now=1000)
            if output is None:
                store.mark_failed(job.id, now=1001, reason=FailureReason.FFMPEG_ERROR, error="x",
                                  stderr_tail="", retry_at=None)
            else:
                store.mark_completed(job.id, now=1001, output_bytes=output, media_duration=1)
        store.add(new("d.mp4", size=9000))  # queued: not counted
        summary = store.summary(now=1100)
        assert {k: summary[k] for k in ("sized_jobs", "input_bytes", "output_bytes", "saved_bytes")} == {
            "sized_jobs": 2, "input_bytes": 1500, "output_bytes": 1000, "saved_bytes": 500}
        assert summary["saved_ratio"] == pytest.approx(1 / 3)

    def test_space_saved_with_no_history(self, store: JobStore) -> None:
        assert store.space_saved() == {"sized_jobs": 0, "input_bytes": 0, "output_bytes": 0,
                                       "saved_bytes": 0, "saved_ratio": None}

    # -- meta, persistence, audit --------------------------------------------------------------

    def test_meta_round_trip(self, store: JobStore) -> None:
        assert store.get_meta("queue_paused") is None
        assert store.get_meta("queue_paused", "0") == "0"
        store.set_meta("queue_paused", "1")
        assert store.get_meta("queue_paused") == "1"

    def test_the_queue_and_meta_persist(self, harness: StoreHarness) -> None:
        job = added(harness.store, new("a.mp4"))
        harness.store.set_meta("queue_paused", "1")
        again = harness.reopen()
        assert again.get(job.id).rel_path == "a.mp4"
        assert again.get_meta("queue_paused") == "1"
        assert again.counts_by_state()[JobState.QUEUED] == 1

    def test_audit_pages_newest_first(self, store: JobStore) -> None:
        first = store.record_audit(audit(1000, principal_kind="grafana", principal="eddie"))
        second = store.record_audit(audit(1001, action="job.cancel", job_id=7, status=409,
                                          result="rejected", code="invalid_state"))
        assert second > first
        newest = store.audit_entries(limit=1)
        assert [(e.id, e.action, e.job_id) for e in newest] == [(second, "job.cancel", 7)]
        older = store.audit_entries(limit=10, before=second)
        assert [(e.id, e.principal) for e in older] == [(first, "eddie")]
        assert store.audit_count() == 2

    def test_audit_entries_past_the_age_bound_go(self, harness: StoreHarness) -> None:
        harness.store.record_audit(audit(1000))
        store = harness.reopen()
        store.record_audit(audit(1000 + AUDIT_MAX_AGE_SECONDS + 1))
        assert [e.at for e in store.audit_entries()] == [1000 + AUDIT_MAX_AGE_SECONDS + 1]

    # -- health ----------------------------------------------------------------------------------

    def test_health_after_an_error(self, harness: StoreHarness) -> None:
        store = harness.store
        assert store.health().writable and store.probe()
        harness.refuse_writes()
        with pytest.raises(StoreError):
            store.set_meta("queue_paused", "1")
        health = store.health()
        assert not health.writable and health.outages == 1 and health.error
        assert not store.probe()
        assert store.get_meta("queue_paused") is None  # the refused write changed nothing
        harness.allow_writes()
        assert store.probe() and store.health().writable and store.health().outages == 1
        assert store.health().last_error == health.error

    # -- the node registry --------------------------------------------------------------------

    def test_a_heartbeat_registers_a_node_and_keeps_its_draining(self, harness: StoreHarness) -> None:
        store = harness.store
        beat = node("encoder-1", last_seen=1000.0)
        assert store.nodes() == []
        assert store.heartbeat(beat) == beat
        with pytest.raises(NodeNotFound, match="no node named 'encoder-9'"):
            store.set_draining("encoder-9", True)
        assert store.set_draining("encoder-1", True).draining
        later = replace(beat, busy=2, last_seen=1010.0, api_address="10.0.0.5:8080")
        row = store.heartbeat(later)  # a heartbeat never ends draining: only set_draining does
        assert row == replace(later, draining=True)
        store.heartbeat(node("alpha", last_seen=1005.0))
        store = harness.reopen()
        assert [n.name for n in store.nodes()] == ["alpha", "encoder-1"]
        assert store.nodes()[1].draining and store.nodes()[1].api_address == "10.0.0.5:8080"
        assert not store.set_draining("encoder-1", False).draining
        store.forget_node("alpha")
        assert [n.name for n in store.nodes()] == ["encoder-1"]
        with pytest.raises(NodeNotFound):
            store.forget_node("alpha")

    def test_draining_is_told_to_listeners(self, store: JobStore) -> None:
        store.heartbeat(node("encoder-1"))
        told: list[StoreChange] = []
        store.subscribe(told.append)
        store.set_draining("encoder-1", True)
        assert StoreChange(kind=ChangeKind.NODE, key="encoder-1") in told

    def test_a_node_is_alive_until_it_misses_three_heartbeats_or_stops(self) -> None:
        beat = node("n", last_seen=1000.0)  # every 10 s
        assert beat.alive(1030.0) and not beat.alive(1030.5)
        assert not replace(beat, stopped_at=1001.0).alive(1001.0)


def node(name: str, *, last_seen: float = 1000.0) -> NodeInfo:
    return NodeInfo(name=name, instance="i-1", host="host-a", pid=4242, version="1.0",
                    workers=2, busy=0, started_at=900.0, last_seen=last_seen,
                    heartbeat_seconds=10.0)
