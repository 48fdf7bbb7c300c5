"""Monitor: the running service. Wires watcher, rules, store and workers; offers the controls."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

import yaml

from bulletproof import __version__
from bulletproof import events as ev
from bulletproof.audit import AuditEntry
from bulletproof.config import (
    Config,
    default_config_text,
    load_config,
    parse_config,
    write_config_atomically,
)
from bulletproof.config_checks import check_against_ffmpeg
from bulletproof.config_file import updated_config_text
from bulletproof.config_policy import ApiChangePolicy, keep_file_settings
from bulletproof.database_url import store_identity, with_database_secret
from bulletproof.errors import (
    ConfigError,
    ConfigIssue,
    InvalidTransition,
    NodeRunning,
    NodeUnavailable,
    PathError,
    StoreError,
    UnknownProfile,
)
from bulletproof.ffprobe import FfmpegBinaries, find_ffmpeg
from bulletproof.fleet import NodePresence, publish_recovered
from bulletproof.fleet_controls import ControlRelay
from bulletproof.fleet_events import FleetEvents
from bulletproof.libraries import PathMap
from bulletproof.logs import TransitionLogger
from bulletproof.models import FailureReason, IgnoreReason, Job, JobState, QueueTrigger
from bulletproof.owner import FolderLock
from bulletproof.paths import (
    excluded_folders,
    is_own_temporary,
    is_within,
    locate_source,
    output_path_for,
    relative_posix,
)
from bulletproof.plugins import PluginContext
from bulletproof.preflight import check_folders, prepare_folders, remove_created
from bulletproof.quality import available_metrics
from bulletproof.rules import RuleMatch
from bulletproof.state import ConfigState, Lifecycle, QueueState
from bulletproof.store import ControlAction, JobStore, NewJob, NodeInfo
from bulletproof.store_factory import is_shared, open_store
from bulletproof.view import MonitorView
from bulletproof.watcher import FolderWatcher, StableFile
from bulletproof.workers import WorkerPool

log = logging.getLogger(__name__)

STORE_PROBE_INTERVAL = 2.0  # seconds between store health checks
STORE_PROBE_AFTER = 5.0  # a tiny probe write is made when no write succeeded for this long
PROGRESS_SAVE_SECONDS = 2.0  # on a shared store, a running job's progress is saved this often


class Monitor:
    """One monitor process: watch, queue, transcode; implements `Controls` (every control)."""

    def __init__(self, config: Config, *, config_path: Path | None = None,
                 binaries: FfmpegBinaries | None = None, bus: ev.EventBus | None = None) -> None:
        # The config in force and the one this process started with (restart-only keys).
        self.settings = ConfigState(config, Path(config_path) if config_path else None)
        # What the API may change is fixed from the operator's file at start (api.config_roots).
        self.change_policy = ApiChangePolicy(config)
        self.bus = bus or ev.EventBus()
        self.binaries = binaries or find_ffmpeg(config.ffmpeg)
        # Before anything is opened: a profile this ffmpeg cannot run fails every job.
        self._check_against_ffmpeg(config, source=config_path or "config")
        self.version = __version__
        self.lifecycle = Lifecycle()
        self.store: JobStore = open_store(config.database, node=config.node_name)
        self.store_closed = False
        self.queue = QueueState(self.store)
        # Where this node mounts the fleet's libraries (restart-only): the store keeps fleet forms.
        self.paths = PathMap(config.libraries)
        # Other monitors share the store (restart-only: the store opened is the start-up one's).
        self._shared = shared = is_shared(config.database)
        self._pool = WorkerPool(self.store, self.bus, lambda: self.config, self.binaries, self.queue,
                                paths=self.paths)
        if shared:  # other nodes show this node's running jobs from the saved progress
            self._pool.progress_save_seconds = PROGRESS_SAVE_SECONDS
        self.presence = NodePresence(self.store, self.bus, lambda: self.config, self._pool,
                                     version=self.version, shared=shared)
        # The fleet: its queue pause and the controls other nodes ask of this one; its jobs'
        # events on this node's bus.
        self.relay = ControlRelay(self.store, self.bus, self._pool, self.queue,
                                  node=lambda: self.presence.name, shared=shared)
        self.fleet_events = FleetEvents(self.store, self.bus, shared=shared)
        self._watcher: FolderWatcher | None = None
        self._stopped = asyncio.Event()
        self._health_task: asyncio.Task[None] | None = None
        self._output_lock: FolderLock | None = None
        self.view = MonitorView(version=self.version, binaries=self.binaries, store=self.store,
                                settings=self.settings, queue=self.queue, lifecycle=self.lifecycle,
                                pool=self._pool, watcher=lambda: self._watcher,
                                presence=self.presence)
        self.bus.subscribe(TransitionLogger())
        self.bus.subscribe(self._on_fleet_event)

    @property
    def config(self) -> Config:
        """The config in force."""
        return self.settings.current

    @property
    def startup_config(self) -> Config:
        """The config this process started with: restart-only keys keep its values."""
        return self.settings.startup

    @property
    def config_path(self) -> Path | None:
        """The config file the monitor was started from, if any."""
        return self.settings.path

    @property
    def started_at(self) -> float | None:
        """When the monitor started (unix time), None before."""
        return self.lifecycle.started_at

    def context(self) -> PluginContext:
        """What a plugin gets: the event bus, the read-only view and the controls (this monitor)."""
        return PluginContext(bus=self.bus, view=self.view, controls=self)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Lock the output folder, recover from any crash, then start workers and watchers."""
        self.lock_output_folder()
        now = time.time()
        self.lifecycle.started_at = now
        log.info("starting", extra={"version": self.version, "ffmpeg": self.binaries.ffmpeg,
                                    "ffmpeg_source": self.binaries.source,
                                    "ffmpeg_version": self.binaries.version,
                                    "quality_metrics": ",".join(available_metrics(self.binaries.filters))})
        self.presence.claim_name(now)  # a second monitor under this name stops here
        # On a shared store others' attempts run on: the heartbeat sweeps lapsed leases, from one
        # lease after this start (every node renews its own first).
        if not self._shared:
            publish_recovered(self.bus, self.store.recover_interrupted(
                now=now, max_attempts=self.config.retry.max_attempts,
                retry_interrupted="interrupted" in self.config.retry.retry_on))
        if self._output_lock is None or self._output_lock.alone:  # not another node's work
            await asyncio.to_thread(self._remove_stale_temporaries)
        self._pool.resize(self.config.max_workers)
        await self._start_watcher()
        self._health_task = asyncio.get_running_loop().create_task(
            self._watch_store(), name="bulletproof-store-health")
        await self.presence.start()
        await self.relay.start()
        self.fleet_events.start()

    async def stop(self) -> None:
        """Stop watching, end running ffmpeg processes and put their jobs back in the queue."""
        if self._health_task is not None:
            self._health_task.cancel()
            await asyncio.gather(self._health_task, return_exceptions=True)
        if self._watcher is not None:
            await self._watcher.stop()
        self.fleet_events.stop()
        await self.relay.stop()
        await self._pool.stop()
        await self.presence.stop()
        self.store.close()
        self.store_closed = True
        if self._output_lock is not None:
            self._output_lock.release()
            self._output_lock = None
        self._stopped.set()
        if self.started_at is not None:  # a refused start says only why
            log.info("stopped")

    def request_stop(self) -> None:
        """Ask `run_forever` to return (signal-handler safe when called on the loop)."""
        self._stopped.set()

    async def wait_stopped(self) -> None:
        """Wait until `request_stop` is called."""
        await self._stopped.wait()

    async def _start_watcher(self) -> None:
        config = self.config
        for folder in config.output_folder, *( [config.done_folder] if config.done_folder else []):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log.error("cannot create folder", extra={"folder": str(folder), "error": str(exc)})
        watcher = FolderWatcher(
            config.monitor_folder, stability_seconds=config.stability_seconds,
            rescan_interval=config.rescan_interval, excluded=excluded_folders(config),
            on_stable=self._on_stable, on_ignored=self._on_ignored,
            on_folder_status=self._on_folder_status)
        await watcher.start()
        # Only a started watcher is shown: it owns the folder status the view reads.
        self._watcher = watcher

    def lock_output_folder(self) -> None:
        """Lock the output folder before anything deletes temporaries in it (raises StoreLocked).

        Idempotent; `start` calls it, and `runner.serve` earlier, before any port is bound.
        """
        if self._output_lock is not None:
            return
        folder = self.config.output_folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.error("cannot create folder", extra={"folder": str(folder), "error": str(exc)})
            return
        store = store_identity(str(self.startup_config.database)) if self._shared else None
        self._output_lock = FolderLock(folder, shared_store=store)
        if not self._output_lock.held:
            log.warning("cannot lock the output folder (no flock on its file system); make sure "
                        "no other monitor writes there", extra={"folder": str(folder)})

    async def _watch_store(self) -> None:
        """Notice the store failing or coming back; on recovery, rescan and wake the workers."""
        seen = self.store.health()
        while True:
            await asyncio.sleep(STORE_PROBE_INTERVAL)
            health = self.store.health()
            if not health.writable or time.monotonic() - health.last_ok > STORE_PROBE_AFTER:
                self.store.probe()
                health = self.store.health()
            if health.corrupt is not None and seen.corrupt is None:
                log.error("the job store is damaged: no new job starts; stop the monitor and "
                          "follow the runbook (The state database is damaged)",
                          extra={"database": str(self.store.path), "error": health.corrupt})
                self.bus.publish(ev.StoreStatus(writable=False, error=health.corrupt, corrupt=True))
            elif health.outages != seen.outages:  # went down since the last look
                log.error("the job store refuses writes; new files wait until it recovers",
                          extra={"database": str(self.store.path), "error": health.last_error})
                self.bus.publish(ev.StoreStatus(writable=False, error=health.last_error))
            if health.corrupt is None and health.writable and (
                    health.outages != seen.outages or not seen.writable):
                log.info("the job store takes writes again; rescanning the watch folders")
                self.bus.publish(ev.StoreStatus(writable=True))
                if self._watcher is not None:
                    self._watcher.rescan_now()
                self._pool.store_recovered()
            seen = health

    def _remove_stale_temporaries(self) -> None:
        """Delete temporaries an interrupted attempt left in the output folder."""
        for root, _dirs, files in os.walk(self.config.output_folder):
            for name in files:
                if is_own_temporary(name):
                    path = Path(root, name)
                    path.unlink(missing_ok=True)
                    log.info("removed stale temporary", extra={"path": str(path)})

    # -- detection ----------------------------------------------------------------------------

    def _on_folder_status(self, folder: Path, up: bool, error: str | None) -> None:
        self.bus.publish(ev.WatchFolderStatus(folder=str(folder), up=up, error=error))

    def _on_ignored(self, path: Path, reason: IgnoreReason) -> None:
        self.bus.publish(ev.FileIgnored(path=str(path), reason=reason))

    def _on_stable(self, found: StableFile) -> None:
        self.bus.publish(ev.FileDetected(path=str(found.path), watch_folder=str(found.watch_folder),
                                         size=found.size))
        match = self.settings.rules.match(found.rel_path, found.size)
        if match is None:
            self._on_ignored(found.path, IgnoreReason.NO_RULE)
            return
        former = self.paths.former_form(found.path)
        if former is not None and self.store.seen(former, found.size, found.mtime_ns):
            # Queued or done before its library was configured: the same version, not a new file.
            self._on_ignored(found.path, IgnoreReason.ALREADY_DONE)
            return
        try:
            job = self._add_job(found, match, force=False)
        except StoreError as exc:
            # Raised on purpose: the watcher then keeps the file unsettled, and a rescan
            # (at the latest the one made when the store recovers) offers it again.
            log.warning("cannot queue the file yet", extra={"path": str(found.path), "error": str(exc)})
            raise
        if job is None:
            self._on_ignored(found.path, IgnoreReason.ALREADY_DONE)

    def _add_job(self, found: StableFile, match: RuleMatch, *, force: bool,
                 priority: int | None = None, trigger: QueueTrigger = QueueTrigger.DETECTED) -> Job | None:
        new = NewJob(
            source_path=self.paths.to_fleet(found.path), rel_path=found.rel_path,
            watch_folder=self.paths.to_fleet(found.watch_folder), size=found.size,
            mtime_ns=found.mtime_ns,
            profile=match.profile_name, rule=match.rule_name, output_path="",
            priority=match.priority if priority is None else priority)
        try:
            output = output_path_for(self.config, found.rel_path, match.profile_name, match.profile,
                                     match.rule_name)
        except PathError as exc:
            return self._add_unrunnable(new, str(exc), force=force)
        new = dataclasses.replace(new, output_path=self.paths.to_fleet(output))
        job, applied = self.store.add_reserving(new, policy=self.config.output_conflict, force=force,
                                                file_exists=self.paths.exists)
        if job is None:
            return None
        if applied is not None:
            log.warning("output name taken", extra={"job": job.id, "wanted": new.output_path,
                                                    "output": job.output_path, "policy": applied})
            self.bus.publish(ev.OutputConflict(job=job, policy=applied, wanted=new.output_path))
        if job.state is JobState.QUEUED:
            self.bus.publish(ev.JobQueued(job=job, trigger=trigger))
            self._wake()
        else:  # output_conflict skip or fail ended it at once
            outcome = ev.Outcome.SKIPPED if job.state is JobState.SKIPPED else ev.Outcome.FAILED
            self.bus.publish(ev.JobFinished(job=job, worker=None, outcome=outcome, reason=job.reason,
                                            busy_seconds=0.0))
        return job

    def _add_unrunnable(self, new: NewJob, error: str, *, force: bool) -> Job | None:
        """Record a job whose output path cannot be made (hostile names): failed, with the reason."""
        log.warning("invalid output path", extra={"source": new.source_path, "error": error})
        # No output path could be made: the job records none (a retry makes it again).
        job = self.store.add_failed(new, reason=FailureReason.OUTPUT_PATH_INVALID, error=error,
                                    force=force)
        if job is not None:
            self.bus.publish(ev.JobFinished(job=job, worker=None, outcome=ev.Outcome.FAILED,
                                            reason=FailureReason.OUTPUT_PATH_INVALID, busy_seconds=0.0))
        return job

    def _wake(self) -> None:
        self._pool.wake()

    def _on_fleet_event(self, event: ev.Event) -> None:
        # Another node queued a job (or one came back to the queue): idle slots look now.
        if event.origin is not None and isinstance(event, ev.JobQueued):
            self._pool.wake()

    # -- controls -----------------------------------------------------------------------------

    def enqueue_path(self, path: str, *, profile: str | None = None, priority: int | None = None) -> Job:
        """Queue a file inside a watch folder (explicitly, even if done before).

        `path` is absolute, or relative to a watch folder (the first watch folder that has the
        file). `priority` None takes the matching rule's priority (0 with an explicit profile).
        Raises UnknownProfile, PathError (outside, not a file, unreadable, no rule) or
        InvalidTransition (this version of the file has an unfinished job).
        """
        profiles = self.config.all_profiles()
        if profile is not None and profile not in profiles:
            raise UnknownProfile(profile, path=path, known=sorted(profiles))
        source, folder = locate_source([f.path for f in self.config.monitor_folder], path)
        if folder is None:
            raise PathError(f"not inside a watch folder: {path}", path=path)
        try:
            return self._enqueue_file(source, folder, path, profile, priority)
        except (OSError, ValueError) as exc:  # unreadable, too long a name, undecodable...
            raise PathError(f"cannot read {path}: {exc}", path=path) from None

    def _enqueue_file(self, source: Path, folder: Path, path: str, profile: str | None,
                      priority: int | None) -> Job:
        # Lexically inside is not enough: a symlink must not lead outside the watch folder.
        if not is_within(Path(os.path.realpath(source)), Path(os.path.realpath(folder))):
            raise PathError(f"leads outside the watch folder: {path}", path=path)
        if not source.is_file():
            raise PathError(f"not a file: {path}", path=path)
        rel = relative_posix(source, folder)
        stat = source.stat()
        if profile is not None:
            match = RuleMatch("api", -1, profile, self.config.all_profiles()[profile], priority or 0)
        else:
            found = self.settings.rules.match(rel, stat.st_size)
            if found is None:
                raise PathError(f"no rule matches {rel!r} and no profile was given", path=path)
            match = found
        existing = self.store.unfinished_job(self.paths.to_fleet(source), stat.st_size,
                                             stat.st_mtime_ns)
        if existing is not None:
            raise InvalidTransition(existing.id, action="enqueue", state=existing.state)
        found_file = StableFile(path=source, watch_folder=folder, rel_path=rel,
                                size=stat.st_size, mtime_ns=stat.st_mtime_ns)
        job = self._add_job(found_file, match, force=True, priority=priority, trigger=QueueTrigger.API)
        assert job is not None
        return job

    def pause_queue(self) -> None:
        """Stop starting new jobs; running ones finish; the watcher keeps queueing. On a shared
        store every node's queue: the others follow the store."""
        self.relay.follow_queue()  # what another node did first is told as such
        if self.queue.pause():
            self.bus.publish(ev.QueuePaused())

    def resume_queue(self) -> None:
        """Start taking jobs again (on a shared store, on every node)."""
        self.relay.follow_queue()
        if self.queue.resume():
            self._pool.queue_resumed()
            self.bus.publish(ev.QueueResumed())

    def cancel_job(self, job_id: int) -> Job:
        """Cancel a queued job now, or end a running one (its outcome follows as an event); a
        job another node runs is asked of that node (the job is returned as it is)."""
        job = self.store.get(job_id)
        if job.state is JobState.QUEUED:
            job = self.store.cancel_queued(job_id, now=time.time())
            self.bus.publish(ev.JobFinished(job=job, worker=None, outcome=ev.Outcome.CANCELLED,
                                            reason=None, busy_seconds=0.0))
            return job
        if job.state.is_active and self._pool.cancel(job_id):
            return job
        return self._ask_owner(job, ControlAction.CANCEL)

    def pause_job(self, job_id: int) -> Job:
        """Suspend a running job's ffmpeg (SIGSTOP); another node's job is asked of it."""
        job = self.store.get(job_id)
        if self._pool.runs(job_id) or not self._runs_elsewhere(job):
            return self._pool.pause_job(job_id)
        return self._ask_owner(job, ControlAction.PAUSE)

    def resume_job(self, job_id: int) -> Job:
        """Continue a paused job's ffmpeg (SIGCONT); another node's job is asked of it."""
        job = self.store.get(job_id)
        if self._pool.runs(job_id) or not self._runs_elsewhere(job):
            return self._pool.resume_job(job_id)
        return self._ask_owner(job, ControlAction.RESUME)

    def _runs_elsewhere(self, job: Job) -> bool:
        """True when another node holds the claim of a running job."""
        return job.state.is_active and job.claimed_by not in (None, self.presence.name)

    def _ask_owner(self, job: Job, action: ControlAction) -> Job:
        """Leave a control for the node that runs the job (it acts within about a second);
        InvalidTransition when no node runs it, NodeUnavailable when that node is not running."""
        if not self._runs_elsewhere(job) or job.claimed_by is None:
            raise InvalidTransition(job.id, action=action.value, state=job.state)
        now = time.time()
        node = next((n for n in self.store.nodes() if n.name == job.claimed_by), None)
        if node is None or not node.alive(now):
            raise NodeUnavailable(job.id, action=action.value, node=job.claimed_by,
                                  seen_ago=None if node is None else max(0.0, now - node.last_seen))
        request = self.store.request_control(job.id, action, now=now)
        log.info("control asked of the node that runs the job",
                 extra={"job": job.id, "action": action.value, "node": request.node})
        return self.store.get(job.id)

    def retry_job(self, job_id: int) -> Job:
        """Queue a failed, cancelled, completed or skipped job again."""
        job = self.store.requeue(job_id, now=time.time())
        self.bus.publish(ev.JobQueued(job=job, trigger=QueueTrigger.MANUAL_RETRY))
        self._wake()
        return job

    def retry_failed(self) -> list[Job]:
        """Queue every failed job again."""
        jobs, _ = self.store.list_jobs(states=[JobState.FAILED], limit=1_000_000, sort="id",
                                       descending=False)
        return [self.retry_job(job.id) for job in jobs]

    def clear_queue(self) -> int:
        """Cancel every queued job; returns how many."""
        now = time.time()
        ids = self.store.clear_queue(now=now)
        for job_id in ids:
            job = self.store.get(job_id)
            self.bus.publish(ev.JobFinished(job=job, worker=None, outcome=ev.Outcome.CANCELLED,
                                            reason=None, busy_seconds=0.0))
        self.bus.publish(ev.QueueCleared(count=len(ids)))
        return len(ids)

    def delete_job(self, job_id: int) -> None:
        """Remove a finished job from history."""
        self.store.delete(job_id)
        self.bus.publish(ev.JobRemoved(job_id=job_id))

    def prioritize_job(self, job_id: int) -> Job:
        """Move a queued job to the front of the queue."""
        job = self.store.prioritize(job_id)
        self._wake()
        return job

    # -- the fleet ----------------------------------------------------------------------------

    def drain_node(self, name: str, draining: bool = True) -> NodeInfo:
        """Let a node of the store finish its jobs and take no more (or take jobs again)."""
        node = self.store.set_draining(name, draining)
        if name == self.presence.name:  # this node: at once (others hear it from the store)
            self.presence.follow(node)
        log.info("node draining" if draining else "node draining ended", extra={"node": name})
        return node

    def advertise_api(self, address: str) -> None:
        """Publish this node's API address (host:port) in the node registry, for discovery."""
        self.presence.api_address = address
        if self.presence.started_at is not None:  # now, not a heartbeat later: discovery waits on it
            try:
                self.presence.beat(time.time())
            except StoreError as exc:  # the next heartbeat carries it
                log.warning("API address not yet in the node registry", extra={"error": str(exc)})

    def forget_node(self, name: str) -> None:
        """Remove a node that is not alive from the registry (NodeRunning while it is)."""
        node = next((n for n in self.store.nodes() if n.name == name), None)
        if node is not None and node.alive(time.time()):
            raise NodeRunning(name)
        self.store.forget_node(name)  # NodeNotFound when there is none
        log.info("node forgotten", extra={"node": name})

    # -- audit trail --------------------------------------------------------------------------

    def record_audit(self, entry: AuditEntry) -> int:
        """Keep one audit entry of a control call (plugins record them; see bulletproof.audit)."""
        return self.store.record_audit(entry)

    # -- config -------------------------------------------------------------------------------

    async def reload_config(self) -> Config:
        """Re-read the config file; an invalid one is rejected and the old one stays."""
        if self.config_path is None:
            raise ConfigError([ConfigIssue("", "the monitor was not started from a config file")])
        try:
            new = load_config(self.config_path)
            issues = check_against_ffmpeg(new, self.binaries) + check_folders(new, self.config)
            if issues:
                raise ConfigError(issues, source=self.config_path)
        except ConfigError as exc:
            self._reload_failed(exc)
            raise
        await self.apply_config(new)
        return new

    def _check_against_ffmpeg(self, config: Config, *, source: str | Path) -> None:
        """ConfigError when a profile needs an encoder or a filter (vmaf) this ffmpeg lacks."""
        issues = check_against_ffmpeg(config, self.binaries)
        if issues:
            raise ConfigError(issues, source=source)

    def _reload_failed(self, exc: ConfigError) -> None:
        self.settings.reload_failed()
        self.bus.publish(ev.ConfigReloaded(success=False, source=str(self.config_path), error=str(exc)))

    def _base_dir(self) -> Path:
        return self.config_path.resolve().parent if self.config_path else Path.cwd()

    def validate_config(self, data: Any) -> Config:
        """Validate a config submitted from outside (a dry run): the model, what the API may
        change (`config_policy`), and whether its folders can be created. Raises ConfigError."""
        data = with_database_secret(data, self.config.database)
        new = parse_config(data, base_dir=self._base_dir(), source=self.config_path or "request")
        issues = (self.change_policy.check(self.config, new) + check_folders(new, self.config)
                  + check_against_ffmpeg(new, self.binaries))
        if issues:
            raise ConfigError(issues, source="request")
        return new

    async def update_config(self, data: Any) -> Config:
        """Validate whole, pre-flight the folders, write atomically (keeping a .bak), then apply;
        if applying fails, the old config and the old file are put back."""
        data = with_database_secret(data, self.config.database)
        new = self.validate_config(data)
        created = await asyncio.to_thread(prepare_folders, new, self.config)
        try:
            saved = self._saved_files()
            if self.config_path is not None:
                write_config_atomically(self.config_path,
                                        updated_config_text(self.config_path, data, new))
        except BaseException:
            remove_created(created)
            raise
        old = self.config
        try:
            await self.apply_config(new)
        except BaseException:
            log.exception("a validated config could not be applied; putting the previous one back")
            self._restore_files(saved)
            remove_created(created)
            await self.apply_config(old)
            raise
        return new

    def _saved_files(self) -> dict[Path, str | None]:
        """The config file and its .bak as they are now (None: absent), to put back on a failure."""
        if self.config_path is None:
            return {}
        paths = (self.config_path, self.config_path.with_name(self.config_path.name + ".bak"))
        return {p: p.read_text(encoding="utf-8") if p.exists() else None for p in paths}

    def _restore_files(self, saved: dict[Path, str | None]) -> None:
        for path, text in saved.items():
            if text is None:
                path.unlink(missing_ok=True)
                continue
            tmp = path.with_name(f".{path.name}.restore")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)

    async def reset_config(self) -> Config:
        """The defaults for what the API may change; file-only keys and the folders stay."""
        defaults = yaml.safe_load(default_config_text())
        return await self.update_config(keep_file_settings(defaults, self.config))

    async def apply_config(self, new: Config) -> None:
        """Put a validated config in force without a restart (restart-only keys wait for one)."""
        old = self.config
        # `config` mirrors the file (so a config read back and sent again keeps the operator's
        # pending edits); what still runs on the start-up values is listed here and by the API.
        self.settings.applied(new)
        pending = self.settings.restart_pending()
        if pending:
            log.warning("some changed settings take effect only on restart",
                        extra={"keys": ",".join(pending)})
        if self._pool.started:
            self._pool.resize(new.max_workers)
        watch_keys = ("monitor_folder", "output_folder", "done_folder", "stability_seconds",
                      "rescan_interval")
        if self._watcher is not None and any(getattr(old, k) != getattr(new, k) for k in watch_keys):
            await self._watcher.stop()
            await self._start_watcher()
        self.bus.publish(ev.ConfigReloaded(success=True, source=str(self.config_path or "api")))

    # -- parts, for tests and the command line ---------------------------------------------

    @property
    def pool(self) -> WorkerPool:
        """The worker pool (its slots run once the monitor started)."""
        return self._pool

    @property
    def watcher(self) -> FolderWatcher | None:
        """The folder watcher once started."""
        return self._watcher
