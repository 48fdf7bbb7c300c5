"""WorkerPool: worker slots that take queued jobs, run ffmpeg, and record the outcome."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Concatenate, ParamSpec

from bulletproof import events as ev
from bulletproof.config import Config
from bulletproof.disposal import SourceCheck, dispose_source
from bulletproof.errors import (
    InvalidTransition,
    JobError,
    JobNotFound,
    PathError,
    StaleClaim,
    StoreError,
    TranscodeError,
    UnknownLibrary,
)
from bulletproof.ffmpeg import FfmpegRunner, RunningTranscode
from bulletproof.ffprobe import FfmpegBinaries, MediaInfo, Progress, probe
from bulletproof.libraries import PathMap
from bulletproof.models import (
    FailureReason,
    Job,
    JobState,
    Outcome,
    QueueTrigger,
    SkipReason,
    WorkerSnapshot,
)
from bulletproof.paths import confine, output_path_for, temp_path_for
from bulletproof.profiles import Profile, QualityGate
from bulletproof.publication import KeptSource, OutputPublication, remove_earlier_attempts
from bulletproof.quality import score
from bulletproof.state import QueueState
from bulletproof.store import ControlAction, ControlRequest, JobStore, NewJob
from bulletproof.target import target_mismatch
from bulletproof.verify import VerifyPlan, plan_for, result_of, verify_output

log = logging.getLogger(__name__)

_IDLE_POLL = 1.0  # upper bound on how long an idle worker sleeps without a wake-up
_BACKOFF_FIRST = 0.5  # seconds a slot waits after an error, doubled on each one in a row...
_BACKOFF_MAX = 30.0  # ...up to this


@dataclass
class _Slot:
    index: int
    job: Job | None = None
    token: int | None = None  # the claim's fencing token, carried by every write of the attempt
    lease_until: float | None = None
    claim_lost: bool = False  # the lease ran out and another claim owns the job: stop, record nothing
    run: RunningTranscode | None = None
    started_at: float | None = None
    progress: Progress | None = None
    last_progress_at: float | None = None
    progress_saved_at: float = 0.0  # when the progress was last saved for other nodes to show
    media_duration: float | None = None
    paused: bool = False
    paused_at: float | None = None
    paused_total: float = 0.0
    cancel_requested: bool = False
    shutdown: bool = False
    # An outcome the store has not taken yet (disk full, read-only...): the slot retries it
    # before claiming anything, so a finished transcode is recorded, never re-run.
    pending: Callable[[], None] | None = field(default=None, repr=False)
    pending_error: str | None = None
    # A finished output the store has not let this attempt publish yet (kept with `pending`).
    publication: OutputPublication | KeptSource | None = field(default=None, repr=False)
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def busy_seconds(self, now: float) -> float:
        if self.started_at is None:
            return 0.0
        paused = self.paused_total + ((now - self.paused_at) if self.paused_at else 0.0)
        return max(0.0, now - self.started_at - paused)


_P = ParamSpec("_P")


def _backoff(failures: int) -> float:
    """Capped exponential delay after `failures` errors in a row."""
    return min(_BACKOFF_MAX, _BACKOFF_FIRST * 2 ** max(0, failures - 1))


def _keeps_pending(
    record: Callable[Concatenate[WorkerPool, _Slot, _P], None],
) -> Callable[Concatenate[WorkerPool, _Slot, _P], None]:
    """Make an outcome recorder keep its outcome in the slot when the store refuses the write."""

    @functools.wraps(record)
    def wrapper(pool: WorkerPool, slot: _Slot, *args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            record(pool, slot, *args, **kwargs)
        except StaleClaim as exc:  # another claim owns the job now: this outcome is not its
            log.warning("the claim on the job was lost; its outcome is dropped",
                        extra={"job": slot.job.id if slot.job else None, "worker": slot.index,
                               "error": str(exc)})
        except StoreError as exc:
            slot.pending = functools.partial(record, pool, slot, *args, **kwargs)
            slot.pending_error = str(exc)
            log.warning("cannot record the outcome yet; keeping it and retrying",
                        extra={"job": slot.job.id if slot.job else None, "worker": slot.index,
                               "error": str(exc)})

    return wrapper


class WorkerPool:
    """Runs up to `size` jobs at once; a paused pool finishes running jobs but starts none."""

    def __init__(self, store: JobStore, bus: ev.EventBus, config: Callable[[], Config],
                 binaries: FfmpegBinaries, queue: QueueState, *,
                 paths: PathMap | None = None) -> None:
        self._store = store
        self._paths = paths or PathMap()  # jobs name fleet forms; files are touched by local paths
        self._queue = queue  # the owner of the pause state; the pool only reads it
        # A draining node finishes its jobs and claims none (NodePresence sets it from the store).
        self._draining = False
        self._bus = bus
        self._config = config
        self._binaries = binaries
        self._slots: dict[int, _Slot] = {}
        self._size = 0
        self._work = asyncio.Event()
        self._stopping = False
        self._started = False
        self._troubled: dict[int, str] = {}  # slot -> the error it is backing off from
        self._store_epoch = 0  # bumped when the store takes writes again: backoffs end early
        # On a shared store a running job's progress is saved at most this often (seconds), so
        # the other nodes can show it; None: only when the attempt ends.
        self.progress_save_seconds: float | None = None
        # Last time a slot claimed or freed, or the queue was resumed (monotonic): the queue
        # check in the view compares it with how long runnable jobs have waited.
        self.last_activity = time.monotonic()

    # -- lifecycle ----------------------------------------------------------------------------

    def resize(self, size: int) -> None:
        """Run `size` worker slots; extra slots exit once their current job ends."""
        self._size = size
        self._started = True
        for index in range(size):
            slot = self._slots.get(index)
            if slot is None or slot.task is None or slot.task.done():
                slot = slot or _Slot(index)
                self._slots[index] = slot
                slot.task = asyncio.get_running_loop().create_task(
                    self._worker(slot), name=f"bulletproof-worker-{index}")
        self.wake()

    @property
    def size(self) -> int:
        """The configured number of slots."""
        return self._size

    @property
    def claim_prefixes(self) -> list[str]:
        """How the stored paths of the jobs this pool may claim begin (its node's libraries)."""
        return self._paths.claim_prefixes()

    @property
    def started(self) -> bool:
        """True once the slots run (the first `resize`)."""
        return self._started

    @property
    def draining(self) -> bool:
        """True while this node takes no new jobs."""
        return self._draining

    def set_draining(self, draining: bool) -> None:
        """Stop claiming jobs (running ones finish), or claim again."""
        if draining != self._draining:
            self._draining = draining
            self.wake()

    def queue_resumed(self) -> None:
        """The queue was resumed: look at it now (and the stall clock starts over)."""
        self.last_activity = time.monotonic()
        self.wake()

    # -- health ---------------------------------------------------------------------------------

    def dead_slots(self) -> list[int]:
        """Configured slots whose coroutine is not running (never expected: the loop is supervised)."""
        return [i for i in range(self._size)
                if (slot := self._slots.get(i)) is None or slot.task is None or slot.task.done()]

    def troubled_slots(self) -> dict[int, str]:
        """Slots backing off after an error, with the error."""
        return dict(self._troubled)

    def pending_outcomes(self) -> dict[int, str]:
        """Slots holding an outcome the store has not taken yet, with the store's error."""
        return {i: s.pending_error or "" for i, s in self._slots.items() if s.pending is not None}

    def wake(self) -> None:
        """Tell idle workers to look at the queue again."""
        self._work.set()

    def store_recovered(self) -> None:
        """The store takes writes again: slots backing off retry now."""
        self._store_epoch += 1
        self.wake()

    async def stop(self, timeout: float = 20.0) -> None:
        """End running ffmpeg processes, put their jobs back at the front of the queue."""
        self._stopping = True
        for slot in self._slots.values():
            if slot.job is not None:
                slot.shutdown = True
                if slot.run is not None:
                    slot.run.cancel()
        self.wake()
        tasks = [s.task for s in self._slots.values() if s.task is not None]
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for slot in self._slots.values():
            if slot.pending is not None and slot.publication is not None:
                # The store never took the outcome: the job goes back by its lease, and its
                # next attempt writes a temporary of its own; this one would be junk.
                slot.publication.discard()

    # -- views and controls -------------------------------------------------------------------

    def snapshots(self) -> list[WorkerSnapshot]:
        """One snapshot per slot, busy or not."""
        out = []
        for index in sorted(self._slots):
            slot = self._slots[index]
            if index >= self._size and slot.job is None:
                continue
            if slot.job is None:
                out.append(WorkerSnapshot(slot=index))
                continue
            p = slot.progress
            out.append(WorkerSnapshot(
                slot=index, job_id=slot.job.id, filename=slot.job.filename,
                profile=slot.job.profile, paused=slot.paused, started_at=slot.started_at,
                progress=p.ratio if p else 0.0, speed=p.speed if p else None,
                eta_seconds=p.eta_seconds if p else None,
                last_progress_at=slot.last_progress_at, media_duration=slot.media_duration,
            ))
        return out

    def busy_count(self) -> int:
        """Slots that hold a job."""
        return sum(1 for s in self._slots.values() if s.job is not None)

    def _slot_for(self, job_id: int) -> _Slot | None:
        for slot in self._slots.values():
            if slot.job is not None and slot.job.id == job_id:
                return slot
        return None

    def runs(self, job_id: int) -> bool:
        """True when a slot of this pool runs the job."""
        return self._slot_for(job_id) is not None

    def apply_control(self, request: ControlRequest) -> bool:
        """Carry out a control another node asked for; False when no slot runs that attempt
        (it ended, or a later claim runs it) or the job is already as asked."""
        slot = self._slot_for(request.job_id)
        if slot is None or slot.token != request.token or slot.claim_lost:
            return False
        if request.action is ControlAction.CANCEL:
            return self.cancel(request.job_id)
        if request.action is ControlAction.PAUSE and not slot.paused:
            self.pause_job(request.job_id)
            return True
        if request.action is ControlAction.RESUME and slot.paused:
            self.resume_job(request.job_id)
            return True
        return False

    def cancel(self, job_id: int) -> bool:
        """Cancel a running job; False when no slot runs it."""
        slot = self._slot_for(job_id)
        if slot is None:
            return False
        slot.cancel_requested = True
        if slot.run is not None:
            slot.run.cancel()
        return True

    def pause_job(self, job_id: int) -> Job:
        """SIGSTOP a running job's ffmpeg."""
        slot = self._require_running(job_id, "pause")
        if slot.paused:
            raise InvalidTransition(job_id, action="pause", state=JobState.PAUSED)
        job = self._store.mark_paused(job_id, True, token=slot.token)
        slot.paused, slot.paused_at = True, time.time()
        if slot.run is not None:
            slot.run.pause()
        self._bus.publish(ev.JobPaused(job=job, worker=slot.index))
        return job

    def resume_job(self, job_id: int) -> Job:
        """SIGCONT a paused job's ffmpeg."""
        slot = self._require_running(job_id, "resume")
        if not slot.paused:
            raise InvalidTransition(job_id, action="resume", state=JobState.PROCESSING)
        job = self._store.mark_paused(job_id, False, token=slot.token)
        self._unpause(slot)
        self._bus.publish(ev.JobResumed(job=job, worker=slot.index))
        return job

    def _unpause(self, slot: _Slot) -> None:
        if slot.paused_at is not None:
            slot.paused_total += time.time() - slot.paused_at
        slot.paused, slot.paused_at = False, None
        if slot.run is not None:
            slot.run.resume()

    def _require_running(self, job_id: int, action: str) -> _Slot:
        slot = self._slot_for(job_id)
        if slot is None:
            raise InvalidTransition(job_id, action=action, state=self._store.get(job_id).state)
        return slot

    # -- the worker loop ----------------------------------------------------------------------

    async def _worker(self, slot: _Slot) -> None:
        # The slot's supervisor: nothing that goes wrong in one turn ends the slot.
        failures = 0
        while not self._stopping and (slot.index < self._size or slot.pending is not None):
            epoch = self._store_epoch
            try:
                await self._turn(slot)
            except Exception as exc:
                failures += 1
                delay = _backoff(failures)
                self._troubled[slot.index] = str(exc) or type(exc).__name__
                log.error("worker slot failed; restarting it in %.1f s", delay,
                          exc_info=not isinstance(exc, StoreError),
                          extra={"worker": slot.index, "error": str(exc)})
                self._bus.publish(ev.WorkerRestarted(worker=slot.index, error=str(exc), delay=delay))
                await self._rest(delay, epoch)
            else:
                failures = 0
                self._troubled.pop(slot.index, None)

    async def _turn(self, slot: _Slot) -> None:
        """Record a kept outcome, or claim and run one job, or wait for work."""
        if slot.pending is not None:
            await self._flush_pending(slot)
            return
        idle = self._queue.paused or self._draining or self._store.health().corrupt
        job = None if idle else self._claim(slot)
        if job is None:
            self._work.clear()
            await self._sleep_until_work()
            return
        self._troubled.pop(slot.index, None)  # it claimed: whatever failed before is behind it
        try:
            await self._run(slot, job)
        except Exception as exc:  # a bug in one job must not kill the slot
            log.exception("worker crashed on a job", extra={"job": job.id, "worker": slot.index})
            if slot.run is not None:
                slot.run.cancel()
            self._record_failure(slot, FailureReason.INTERNAL, f"internal error: {exc}", "")
        finally:
            if slot.pending is None:
                self._reset(slot)

    async def _flush_pending(self, slot: _Slot) -> None:
        """Retry a kept outcome until the store takes it (or the pool stops)."""
        failures = 0
        while slot.pending is not None and not self._stopping:
            epoch = self._store_epoch
            try:
                slot.pending()
            except StoreError as exc:
                failures += 1
                slot.pending_error = str(exc)
                await self._rest(_backoff(failures), epoch)
                continue
            except StaleClaim as exc:  # another claim owns the job now: this outcome is not its
                log.warning("the claim on the job was lost; its outcome is dropped",
                            extra={"worker": slot.index, "error": str(exc)})
            except JobError as exc:  # the job changed meanwhile (deleted...): nothing to record
                log.warning("dropping a kept outcome", extra={"worker": slot.index, "error": str(exc)})
            else:
                log.info("kept outcome recorded", extra={"worker": slot.index})
            slot.pending = slot.pending_error = None
            self._reset(slot)

    async def _rest(self, delay: float, epoch: int) -> None:
        """Sleep `delay` seconds, less when the pool stops or the store recovered since `epoch`."""
        deadline = time.monotonic() + delay
        while (not self._stopping and self._store_epoch == epoch
               and (left := deadline - time.monotonic()) > 0):
            await asyncio.sleep(min(left, 0.25))

    async def _sleep_until_work(self) -> None:
        timeout = _IDLE_POLL
        wakeup = self._store.next_wakeup()
        if wakeup is not None:
            timeout = min(timeout, max(0.01, wakeup - time.time()))
        try:
            await asyncio.wait_for(self._work.wait(), timeout)
        except TimeoutError:
            pass

    def _claim(self, slot: _Slot) -> Job | None:
        now = time.time()
        config = self._config()
        claim = self._store.claim(config.node_name, now=now, lease_seconds=config.fleet.lease_seconds,
                                  within=self.claim_prefixes)
        if claim is None:
            return None
        job = claim.job
        slot.job, slot.started_at = job, now
        slot.token, slot.lease_until = claim.token, claim.lease_until
        self.last_activity = time.monotonic()
        self._bus.publish(ev.JobStarted(job=job, worker=slot.index, queue_wait=max(0.0, now - job.queued_at)))
        return job

    def _reset(self, slot: _Slot) -> None:
        # In place: the worker coroutine and the control calls must keep seeing the same slot.
        fresh = _Slot(slot.index, task=slot.task)
        for name in _Slot.__dataclass_fields__:
            setattr(slot, name, getattr(fresh, name))
        self.last_activity = time.monotonic()
        self.wake()

    async def _run(self, slot: _Slot, job: Job) -> None:
        config = self._config()
        profile = config.all_profiles().get(job.profile)
        if profile is None:
            self._record_failure(slot, FailureReason.FFMPEG_ERROR,
                                 f"profile {job.profile!r} is no longer configured", "")
            return
        try:
            source = self._local_source(job)
            if job.output_path:  # its library must be mounted here before a name is settled
                self._local_output(job.output_path)
            job = self._settle_output(slot, job, config)
            if job is None:
                return
            output = self._confined(self._local_output(job.output_path), config.output_folder)
            self._note_source_inode(slot, job, source)
            info = await probe(self._binaries, source)
            if profile.video_codec is not None and not info.has_video:
                raise TranscodeError("the input has no video stream", reason=FailureReason.INPUT_INVALID)
            if profile.video_codec is None and not info.has_audio:
                raise TranscodeError("the input has no audio stream", reason=FailureReason.INPUT_INVALID)
            slot.media_duration = info.duration
            self._note_detail(slot, "media duration", functools.partial(
                self._store.set_media_duration, job.id, info.duration, token=slot.token))
            if slot.shutdown or slot.cancel_requested:
                raise TranscodeError("cancelled before ffmpeg started", reason=FailureReason.CANCELLED)
            self._check_claim(slot, "start ffmpeg for")
            if profile.skip_if_target and target_mismatch(profile, info, source) is None:
                self._skip(slot, profile, SkipReason.ALREADY_TARGET,
                           "the source already matches the profile's target", output)
                return
            plan = plan_for(config.verify, profile, info)
            if slot.token is not None:
                remove_earlier_attempts(output, job.id, slot.token)
            runner = FfmpegRunner(self._binaries, config.ffmpeg, config.timeouts)
            replace_existing = config.output_conflict == "overwrite" or not _first_claim(job)
            slot.run = await runner.start(
                source=source, output=output,
                temp_output=temp_path_for(output, job.id, attempt=slot.token),
                profile=profile, duration=info.duration,
                on_progress=lambda p: self._on_progress(slot, p),
                before_publish=lambda temp, last, tail: self._before_publish(
                    slot, profile, plan, temp, last, tail),
                replace_existing=replace_existing, defer_publish=True)
            if slot.paused:
                slot.run.pause()
            result = await slot.run.wait()
        except StaleClaim as exc:
            self._drop_lost_attempt(slot, exc)
            return
        except TranscodeError as exc:
            if slot.claim_lost:
                self._drop_lost_attempt(slot, exc)
            elif slot.shutdown:
                self._requeue_for_shutdown(slot)
            else:
                self._record_failure(slot, exc.reason, str(exc), exc.stderr_tail)
            return
        if not result.published:
            self._skip(slot, profile, SkipReason.LARGER_OUTPUT,
                       f"the output ({result.output_bytes} bytes) is larger than the source "
                       f"({job.size} bytes); the source is kept", output)
            return
        assert result.temp_output is not None
        slot.publication = OutputPublication(result.temp_output, output,
                                             replace_existing=replace_existing)
        self._record_success(slot, result.output_bytes, result.stderr_tail)

    def _local_source(self, job: Job) -> Path:
        """This node's path of the job's source; a library not mounted here fails the job."""
        try:
            return self._paths.to_local(job.source_path)
        except UnknownLibrary as exc:
            raise TranscodeError(str(exc), reason=FailureReason.INPUT_MISSING) from None
        except PathError as exc:
            raise TranscodeError(str(exc), reason=FailureReason.INPUT_INVALID) from None

    def _local_output(self, stored: str) -> Path:
        """This node's path of a stored output name (OUTPUT_PATH_INVALID when it has none)."""
        try:
            return self._paths.to_local(stored)
        except PathError as exc:
            raise TranscodeError(str(exc), reason=FailureReason.OUTPUT_PATH_INVALID) from None

    # -- the claim: every write of the attempt, and the publish, only while it holds ------------

    def _check_claim(self, slot: _Slot, action: str) -> None:
        """StaleClaim once the heartbeat found the claim lost (the next step would be wasted)."""
        if slot.claim_lost and slot.job is not None and slot.token is not None:
            raise StaleClaim(slot.job.id, token=slot.token, action=action,
                             why="the lease ran out and the job was given to another claim")

    def _drop_lost_attempt(self, slot: _Slot, error: Exception | str) -> None:
        """The claim is gone: record nothing (the job is another attempt's now)."""
        log.warning("the claim on the job was lost; the attempt stops and records nothing",
                    extra={"job": slot.job.id if slot.job else None, "worker": slot.index,
                           "error": str(error)})

    def _refuse_publish(self, slot: _Slot, publication: OutputPublication | KeptSource,
                        exc: StaleClaim) -> None:
        """The store refused the publish: the output stays unpublished and nothing is recorded."""
        placed = publication.placed()
        publication.discard()
        job_id = slot.job.id if slot.job else None
        if placed:  # a commit whose answer was lost put it there; the next attempt replaces it
            log.warning("the claim on the job was lost after its output was placed by a commit "
                        "that did not complete; the job's next attempt replaces that output",
                        extra={"job": job_id, "worker": slot.index, "output": str(publication.output),
                               "error": str(exc)})
            return
        log.warning("the claim on the job was lost; its output is not published",
                    extra={"job": job_id, "worker": slot.index, "output": str(publication.output),
                           "error": str(exc)})

    def _note_detail(self, slot: _Slot, what: str, write: Callable[[], None]) -> None:
        """Write a detail of the attempt; the store being away costs the detail, not the job."""
        try:
            write()
        except StoreError as exc:
            log.warning("cannot record the %s of the job; going on", what,
                        extra={"job": slot.job.id if slot.job else None, "worker": slot.index,
                               "error": str(exc)})

    @staticmethod
    def _confined(path: Path, folder: Path) -> Path:
        """`path` checked again just before use: a symlink may have been planted since queueing."""
        try:
            return confine(path, folder)
        except PathError as exc:
            raise TranscodeError(str(exc), reason=FailureReason.OUTPUT_PATH_INVALID) from None

    def _settle_output(self, slot: _Slot, job: Job, config: Config) -> Job | None:
        """On a job's first claim, re-apply output_conflict to a file that appeared since queueing.

        Later attempts keep the recorded name (a retry or a recovery writes where the first
        attempt did). Returns the job to run, or None when the conflict ended it.
        """
        path = None
        if not job.output_path:  # none could be made when it was queued: try again (a retry)
            try:
                path = self._paths.to_fleet(output_path_for(config, job.rel_path, job.profile,
                                                            config.all_profiles()[job.profile],
                                                            job.rule))
            except PathError as exc:
                raise TranscodeError(str(exc), reason=FailureReason.OUTPUT_PATH_INVALID) from None
        elif not _first_claim(job):
            return job
        wanted = path or job.output_path
        job, applied = self._store.reserve_again(job.id, policy=config.output_conflict, path=path,
                                                 file_exists=self._paths.exists, token=slot.token)
        slot.job = job
        if applied is None:
            return job
        log.warning("output name taken", extra={"job": job.id, "wanted": wanted,
                                                "output": job.output_path, "policy": applied})
        self._bus.publish(ev.OutputConflict(job=job, policy=applied, wanted=wanted))
        if applied == "skip":
            self._skip(slot, None, SkipReason.OUTPUT_EXISTS,
                       f"the output {job.output_path} already exists; output_conflict is skip", None)
            return None
        if applied == "fail":
            raise TranscodeError(f"the output {job.output_path} already exists and belongs to no "
                                 "job of this source; output_conflict is fail",
                                 reason=FailureReason.OUTPUT_CONFLICT)
        return job

    def _note_source_inode(self, slot: _Slot, job: Job, source: Path) -> None:
        try:
            inode = source.stat().st_ino
        except OSError:
            return  # probing reports the missing input with its own reason
        self._note_detail(slot, "source inode", functools.partial(
            self._store.set_source_inode, job.id, inode, token=slot.token))

    async def _before_publish(self, slot: _Slot, profile: Profile, plan: VerifyPlan, temp: Path,
                              last: Progress | None, tail: str) -> bool:
        """Verify the finished temporary; False keeps the source instead of a larger output."""
        assert slot.job is not None
        job = slot.job
        self._check_claim(slot, "verify the output of")
        try:
            verdict = await verify_output(self._binaries, temp, plan,
                                          source=self._paths.to_local(job.source_path),
                                          stderr_tail=tail)
        except TranscodeError as exc:
            self._bus.publish(ev.OutputVerified(
                job_id=job.id, profile=job.profile, level=plan.level, result=result_of(exc),
                expected=plan.expected_duration))
            raise
        self._bus.publish(ev.OutputVerified(
            job_id=job.id, profile=job.profile, level=plan.level, result=verdict.result,
            expected=plan.expected_duration, actual=verdict.actual_duration))
        if profile.quality is not None and plan.need_video:
            self._check_claim(slot, "score the output of")
            await self._quality_gate(slot, job, profile.quality, temp, verdict.output)
        if profile.keep_source_if_larger and temp.stat().st_size > job.size:
            return False
        return True

    async def _quality_gate(self, slot: _Slot, job: Job, gate: QualityGate, temp: Path,
                            output: MediaInfo | None) -> None:
        """Score the output against its source; TranscodeError under the profile's threshold."""
        if output is None:  # verification is off: the gate still needs the picture size
            output = await probe(self._binaries, temp)
        if output.width is None or output.height is None:
            raise TranscodeError("cannot score the output: its picture size is unknown",
                                 reason=FailureReason.VERIFICATION_FAILED)
        value = await score(self._binaries, temp, self._paths.to_local(job.source_path), gate.metric,
                            width=output.width, height=output.height, duration=output.duration)
        self._note_detail(slot, "quality score", functools.partial(
            self._store.set_quality_score, job.id, value, token=slot.token))
        passed = value >= gate.min
        self._bus.publish(ev.QualityScored(job_id=job.id, profile=job.profile, metric=gate.metric,
                                           score=value, threshold=gate.min, passed=passed))
        if not passed:
            raise TranscodeError(f"{gate.metric} score {value:.4g} is under the profile's "
                                 f"minimum {gate.min:g}",
                                 reason=FailureReason.QUALITY_BELOW_THRESHOLD)

    def _skip(self, slot: _Slot, profile: Profile | None, reason: SkipReason, message: str,
              output: Path | None) -> None:
        """End the job `skipped`; the profile's skip_action may put the source at the output
        (staged here, placed by the store's fenced write that records the skip)."""
        assert slot.job is not None
        job = slot.job
        if slot.claim_lost:  # the heartbeat found the claim gone: no copy, nothing to record
            self._drop_lost_attempt(slot, "the lease ran out before the skip was recorded")
            return
        if profile is not None and output is not None and profile.skip_action != "none":
            kept = KeptSource(self._paths.to_local(job.source_path), output,
                              temp_path_for(output, job.id, attempt=slot.token), profile.skip_action)
            try:
                kept.stage()
            except FileExistsError:
                message += f"; {output} already exists and is left alone"
            except OSError as exc:
                kept.discard()
                message += f"; could not {profile.skip_action} the source to {output}: {exc}"
            else:
                slot.publication = kept
        self._record_skipped(slot, reason, message)

    def _on_progress(self, slot: _Slot, progress: Progress) -> None:
        if slot.job is None:
            return
        # The slot owns a running job's progress (the view reads it here); the store gets what
        # was reached when the attempt ends.
        now = time.time()
        slot.progress, slot.last_progress_at = progress, now
        every = self.progress_save_seconds
        if every is not None and not slot.claim_lost and now - slot.progress_saved_at >= every:
            slot.progress_saved_at = now
            try:
                self._store.set_progress(slot.job.id, progress.ratio, progress.speed,
                                         progress.eta_seconds)
            except StoreError:  # only a display for other nodes: the next save tries again
                pass
        self._bus.publish(ev.JobProgress(job_id=slot.job.id, worker=slot.index, progress=progress.ratio,
                                         speed=progress.speed, eta_seconds=progress.eta_seconds))

    def renew_leases(self, now: float) -> list[int]:
        """Extend the lease of every running attempt (the heartbeat calls it); returns the jobs
        whose claim was lost meanwhile: their ffmpeg is stopped and their outcome not recorded."""
        lost: list[int] = []
        until = now + self._config().fleet.lease_seconds
        for slot in list(self._slots.values()):
            if slot.job is None or slot.token is None or slot.claim_lost:
                continue
            try:
                self._store.renew(slot.job.id, slot.token, until=until)
            except StoreError:
                continue  # the store is away: the next beat tries again, the lease may still hold
            except StaleClaim as exc:
                log.warning("the claim on the job was lost (its lease ran out); stopping its ffmpeg",
                            extra={"job": slot.job.id, "worker": slot.index, "error": str(exc)})
                slot.claim_lost = True
                if slot.run is not None:
                    slot.run.cancel()
                lost.append(slot.job.id)
                continue
            slot.lease_until = until
        return lost

    # -- outcomes -----------------------------------------------------------------------------

    @_keeps_pending
    def _record_success(self, slot: _Slot, output_bytes: int, stderr_tail: str) -> None:
        """Publish the output and record the success, in one fenced store transaction."""
        assert slot.job is not None and isinstance(slot.publication, OutputPublication)
        publication = slot.publication
        now = time.time()
        try:
            job = self._store.mark_completed(
                slot.job.id, now=now, output_bytes=output_bytes, media_duration=slot.media_duration,
                stderr_tail=stderr_tail, token=slot.token, publish=publication.place)
        except StaleClaim as exc:
            self._refuse_publish(slot, publication, exc)
            raise  # and the outcome is dropped (logged by whoever called)
        except TranscodeError as exc:  # the rename failed (the name taken...): nothing recorded
            publication.discard()
            slot.publication = None
            self._record_failure(slot, exc.reason, str(exc), stderr_tail)
            return
        slot.publication = None
        self._bus.publish(ev.JobFinished(job=job, worker=slot.index, outcome=Outcome.COMPLETED,
                                         reason=None, busy_seconds=slot.busy_seconds(now)))
        self._dispose_source(slot, job)

    @_keeps_pending
    def _record_skipped(self, slot: _Slot, reason: SkipReason, message: str) -> None:
        """Record the skip; a kept source is placed at the output in the same fenced transaction."""
        assert slot.job is not None
        kept = slot.publication if isinstance(slot.publication, KeptSource) else None
        now = time.time()
        try:
            job = self._store.mark_skipped(
                slot.job.id, now=now, reason=reason, message=message,
                output_bytes=kept.size if kept else None, media_duration=slot.media_duration,
                token=slot.token, publish=kept.place if kept else None)
        except StaleClaim as exc:
            if kept is not None:
                self._refuse_publish(slot, kept, exc)
            raise
        except OSError as exc:  # placing the kept source failed: the skip is recorded without it
            assert kept is not None
            kept.discard()
            slot.publication = None
            done = "already exists and is left alone" if isinstance(exc, FileExistsError) else \
                f"could not be made: {exc}"
            self._record_skipped(slot, reason, f"{message}; {kept.output} {done}")
            return
        slot.publication = None
        self._bus.publish(ev.JobFinished(job=job, worker=slot.index, outcome=Outcome.SKIPPED,
                                         reason=reason, busy_seconds=slot.busy_seconds(now)))

    @_keeps_pending
    def _record_failure(self, slot: _Slot, reason: FailureReason, error: str, stderr_tail: str) -> None:
        if slot.job is None:
            return
        now = time.time()
        policy = self._config().retry
        retry_at = None
        if reason.value in policy.retry_on and slot.job.attempts < policy.max_attempts:
            retry_at = now + policy.delay(slot.job.attempts)
        reached = slot.progress.ratio if slot.progress is not None and not slot.progress.ended else None
        try:
            job = self._store.mark_failed(slot.job.id, now=now, reason=reason, error=error,
                                          stderr_tail=stderr_tail, retry_at=retry_at,
                                          progress=reached, token=slot.token)
        except JobNotFound:
            return
        outcome = Outcome.CANCELLED if reason is FailureReason.CANCELLED else Outcome.FAILED
        self._bus.publish(ev.JobFinished(
            job=job, worker=slot.index, outcome=outcome,
            reason=None if outcome is Outcome.CANCELLED else reason,
            busy_seconds=slot.busy_seconds(now), will_retry=retry_at is not None))
        if retry_at is not None:
            self._bus.publish(ev.JobQueued(job=job, trigger=QueueTrigger.AUTO_RETRY))

    @_keeps_pending
    def _requeue_for_shutdown(self, slot: _Slot) -> None:
        assert slot.job is not None
        job = self._store.requeue_interrupted(slot.job.id, now=time.time(), token=slot.token)
        self._bus.publish(ev.JobQueued(job=job, trigger=QueueTrigger.RECOVERED))

    def _dispose_source(self, slot: _Slot, job: Job) -> None:
        config = self._config()
        if config.on_success == "keep" or slot.token is None:
            return
        try:
            # Only while the job is still this attempt's completion: a retry claimed since may
            # be reading the source right now.
            found = self._store.fenced(job.id, slot.token, lambda: dispose_source(
                config, job, self._paths.to_local(job.source_path)),
                                       states=_COMPLETED, doing=f"{config.on_success} the source of")
        except (OSError, PathError, StoreError, JobError) as exc:
            # The output is done; a source we cannot (or may no longer) move is a warning.
            log.warning("could not %s the source after success; it is left in place",
                        config.on_success, extra={"job": job.id, "error": str(exc)})
            return
        if found is SourceCheck.REPLACED:  # the watcher cannot tell this file from the one done
            self._queue_replaced(job)

    def _queue_replaced(self, job: Job) -> None:
        new = NewJob(source_path=job.source_path, rel_path=job.rel_path,
                     watch_folder=job.watch_folder, size=job.size, mtime_ns=job.mtime_ns,
                     profile=job.profile, rule=job.rule, output_path=job.output_path,
                     priority=job.priority)
        queued, _ = self._store.add_reserving(new, policy=self._config().output_conflict, force=True,
                                              file_exists=self._paths.exists)
        if queued is not None:
            self._bus.publish(ev.JobQueued(job=queued, trigger=QueueTrigger.DETECTED))


_COMPLETED = frozenset({JobState.COMPLETED})


def _first_claim(job: Job) -> bool:
    """True on a job's very first attempt (never retried, recovered or requeued)."""
    return job.attempts == 1 and job.queued_at == job.created_at
