"""Folder watching: watchdog events plus periodic rescans, reporting files once they are stable.

Events only make detection prompt; the rescans make it complete (inotify drops events on bursts,
a polling emitter stops when its folder vanishes), and the stability check makes it safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from watchdog import events as wde
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from bulletproof.config import WatchFolder
from bulletproof.errors import BulletproofError
from bulletproof.models import IgnoreReason
from bulletproof.paths import is_within
from bulletproof.scan import (
    Fingerprint,
    exclusions_for,
    fingerprints,
    is_inside,
    is_temporary_rel,
    leads_outside,
    probe_folder,
    rel_under,
    scan_tree,
)

log = logging.getLogger(__name__)

# Opens, reads and close-without-write never mean new content; leaving them out of the filter
# also keeps them out of the inotify mask, so ffmpeg reading a source costs nothing here.
_EVENT_FILTER: list[type[wde.FileSystemEvent]] = [
    wde.FileCreatedEvent, wde.FileModifiedEvent, wde.FileAttribEvent, wde.FileMovedEvent,
    wde.FileClosedEvent, wde.FileDeletedEvent, wde.DirDeletedEvent,
]
_PROBE_TIMEOUT = 15.0  # a hung network mount must not freeze the health checks
_HEALTH_MAX_INTERVAL = 5.0
_APPLY_CHUNK = 2000  # scan results applied per event-loop turn
_SETTLE_CHUNK = 50  # stable files handed over per event-loop turn (each one is a store write)
_JOIN_TIMEOUT = 5.0  # a stuck observer thread is a daemon: give up on it rather than hang stop()

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class StableFile:
    """A regular file whose size and mtime stayed unchanged for the stability window."""

    path: Path
    watch_folder: Path
    rel_path: str
    size: int
    mtime_ns: int


@dataclass(slots=True, eq=False)
class _Pending:
    root: str
    fp: Fingerprint | None = None  # None: (re)start observing at the next check
    since: float = 0.0
    gen: int = 0


@dataclass(slots=True, eq=False)
class _Folder:
    spec: WatchFolder
    root: str
    up: bool | None = None
    observer: BaseObserver | None = None
    ident: tuple[int, int] | None = None  # (st_dev, st_ino) the observer was started on
    excluded: frozenset[str] = frozenset()


class _Handler(wde.FileSystemEventHandler):
    """Hands every watchdog event to a callable (on watchdog's thread)."""

    def __init__(self, sink: Callable[[wde.FileSystemEvent], None]) -> None:
        super().__init__()
        self._sink = sink

    def dispatch(self, event: wde.FileSystemEvent) -> None:
        """Forward the event."""
        self._sink(event)


class FolderWatcher:
    """Watches folders with watchdog, rescans periodically, and reports files once they are stable."""

    def __init__(
        self,
        folders: list[WatchFolder],
        *,
        stability_seconds: float,
        rescan_interval: float,
        excluded: list[Path],
        on_stable: Callable[[StableFile], None],
        on_ignored: Callable[[Path, IgnoreReason], None],
        on_folder_status: Callable[[Path, bool, str | None], None],
    ) -> None:
        if stability_seconds < 0 or rescan_interval <= 0:
            raise ValueError("stability_seconds must be >= 0 and rescan_interval > 0")
        self._folders: list[_Folder] = []
        for spec in folders:
            root = os.path.abspath(os.fspath(spec.path))
            if any(f.root == root for f in self._folders):
                log.warning("watch folder %r is listed twice; watching it once", root)
                continue
            self._folders.append(_Folder(spec, root))
        self._excluded = [os.path.abspath(os.fspath(p)) for p in excluded]
        for f in self._folders:
            for ex in self._excluded:
                if is_within(Path(f.root), Path(ex)):  # e.g. output folder == watch folder
                    log.warning("excluded folder %r contains watch folder %r; not excluded there", ex, f.root)
        self._stability = float(stability_seconds)
        self._rescan_interval = float(rescan_interval)
        self._health_interval = min(self._rescan_interval, _HEALTH_MAX_INTERVAL)
        self._tick = max(0.05, min(0.5, self._stability / 4))
        self._on_stable = on_stable
        self._on_ignored = on_ignored
        self._on_folder_status = on_folder_status
        self._pending: dict[str, _Pending] = {}
        self._scans = 0  # folder scans completed: what a caller waits on to know a rescan ran
        # Each watch folder's realpath, so a symlink leading out of it is recognised.
        self._real_roots: dict[str, str] = {f.root: os.path.realpath(f.root) for f in self._folders}
        # Fingerprints already reported (stable or ignored) per path: each is reported once.
        self._settled: dict[str, tuple[Fingerprint, ...]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._rescan_wanted = asyncio.Event()
        self._health_wanted = asyncio.Event()
        self._health_lock = asyncio.Lock()
        self._scan_lock = asyncio.Lock()
        self._live: set[BaseObserver] = set()
        self._live_lock = threading.Lock()

    async def start(self) -> None:
        """Start observers, run the initial scan, then the rescan, health and stability tasks."""
        if self._loop is not None:
            raise RuntimeError("FolderWatcher.start() called twice")
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bp-watch")
        await self._reconcile(everything=False)
        self._tasks = [
            asyncio.create_task(self._periodic(self._rescan_wanted, self._rescan_interval, everything=True)),
            asyncio.create_task(self._periodic(self._health_wanted, self._health_interval, everything=False)),
            asyncio.create_task(self._stability_loop()),
        ]

    async def stop(self) -> None:
        """Stop the tasks and observers; safe to call more than once."""
        if self._loop is None or self._stopping:
            return
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with self._live_lock:
            observers = list(self._live)
        await asyncio.gather(*(self._in_thread(self._halt, o) for o in observers), return_exceptions=True)
        for folder in self._folders:
            folder.observer = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def rescan_now(self) -> None:
        """Schedule an immediate reconcile scan (thread-safe)."""
        loop = self._loop
        if loop is None or self._stopping:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(self._rescan_wanted.set)

    def folder_status(self) -> dict[Path, bool]:
        """Whether each watch folder is up."""
        return {Path(f.root): f.up is True for f in self._folders}

    @property
    def running(self) -> bool:
        """True while started and every up folder has a live observer."""
        if self._loop is None or self._stopping:
            return False
        return all(f.observer is not None and self._alive(f.observer) for f in self._folders if f.up)

    def pending_count(self) -> int:
        """Files seen but not yet stable."""
        return len(self._pending)

    @property
    def scans(self) -> int:
        """How many folder scans have completed since start (each folder's scan counts once)."""
        return self._scans

    async def _periodic(self, wanted: asyncio.Event, interval: float, *, everything: bool) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wanted.wait(), interval)
            wanted.clear()
            await self._guard(self._reconcile(everything=everything))

    async def _reconcile(self, *, everything: bool) -> None:
        """Check the folders, then scan all of them or only those whose observer just started."""
        fresh = await self._check_folders()
        for folder in self._folders if everything else fresh:
            await self._scan_folder(folder)

    async def _stability_loop(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            await self._guard(self._check_pending())

    @staticmethod
    async def _guard(step: Awaitable[None]) -> None:
        try:
            await step
        except Exception:  # a bug or an odd file system must not end the watching
            log.exception("folder watcher step failed; retrying at the next one")

    async def _check_folders(self) -> list[_Folder]:
        """Probe every folder and (re)start observers; returns the folders that need a scan."""
        async with self._health_lock:
            return [f for f in self._folders if await self._refresh(f)]

    async def _refresh(self, folder: _Folder) -> bool:
        try:
            ident, error = await asyncio.wait_for(self._in_thread(probe_folder, folder.root), _PROBE_TIMEOUT)
        except TimeoutError:
            ident, error = None, f"not responding within {_PROBE_TIMEOUT:.0f} s"
        started = False
        obs = folder.observer
        # A new inode means the folder was replaced: the old watch sees nothing of the new one.
        if error is None and (obs is None or not self._alive(obs) or folder.ident != ident):
            if obs is not None:
                log.warning("observer of %r stopped or folder replaced; restarting it", folder.root)
            await self._stop_observer(folder)
            try:
                folder.excluded = await self._in_thread(exclusions_for, folder.root, self._excluded)
                self._real_roots[folder.root] = await self._in_thread(os.path.realpath, folder.root)
                folder.observer = await self._in_thread(self._start_observer, folder)
                folder.ident, started = ident, True
            except OSError as exc:
                error = f"cannot watch: {exc.strerror or exc}"
        if error is not None:
            await self._stop_observer(folder)
        self._set_status(folder, error is None, error)
        return started

    def _start_observer(self, folder: _Folder) -> BaseObserver:
        """Start an observer for a folder (worker thread); falls back to polling if inotify fails."""
        try:
            return self._launch(folder, polling=folder.spec.polling)
        except OSError as exc:
            if folder.spec.polling or not os.path.isdir(folder.root):
                raise
            # Typically the inotify watch limit (fs.inotify.max_user_watches) on a big tree.
            log.warning("inotify failed for %r (%s); polling every %s s instead",
                        folder.root, exc, folder.spec.poll_interval)
            return self._launch(folder, polling=True)

    def _launch(self, folder: _Folder, *, polling: bool) -> BaseObserver:
        obs: BaseObserver = PollingObserver(timeout=folder.spec.poll_interval) if polling else Observer()
        with self._live_lock:
            self._live.add(obs)
        try:
            sink = functools.partial(self._hand_over, folder)
            obs.schedule(_Handler(sink), folder.root, recursive=folder.spec.recursive,
                         event_filter=_EVENT_FILTER)
            obs.start()
        except BaseException:
            self._halt(obs)
            raise
        if self._stopping:  # stop() ran while this one was starting; it may not have seen it
            self._halt(obs)
        return obs

    def _halt(self, obs: BaseObserver) -> None:
        with self._live_lock:
            self._live.discard(obs)
        with contextlib.suppress(Exception):
            obs.stop()
        with contextlib.suppress(RuntimeError):
            obs.join(_JOIN_TIMEOUT)

    async def _stop_observer(self, folder: _Folder) -> None:
        obs, folder.observer = folder.observer, None
        if obs is not None:
            await self._in_thread(self._halt, obs)

    @staticmethod
    def _alive(obs: BaseObserver) -> bool:
        # An emitter stops on its own when its folder is deleted, leaving the observer thread alive.
        emitters = list(obs.emitters)
        return obs.is_alive() and bool(emitters) and all(e.is_alive() for e in emitters)

    def _set_status(self, folder: _Folder, up: bool, error: str | None) -> None:
        if folder.up is up:
            return
        folder.up = up
        if up:
            log.info("watch folder %r is up", folder.root)
        else:
            log.warning("watch folder %r is down: %s", folder.root, error)
        self._call(self._on_folder_status, Path(folder.root), up, error)

    def _hand_over(self, folder: _Folder, event: wde.FileSystemEvent) -> None:
        """Runs on a watchdog thread: pass the event to the loop thread."""
        loop = self._loop
        if loop is None or self._stopping:
            return
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(event.dest_path) if event.event_type == "moved" else ""
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(self._on_event, folder, event.event_type, event.is_directory, src, dest)

    def _on_event(self, folder: _Folder, kind: str, is_dir: bool, src: str, dest: str) -> None:
        if self._stopping or not folder.up:
            return
        if is_dir:
            if kind == "deleted" and src == folder.root:
                self._health_wanted.set()
            return
        if kind in ("deleted", "moved"):
            self._pending.pop(src, None)
        path = dest if kind == "moved" else src
        if kind != "deleted" and path and self._accepts(folder, path):
            entry = self._pending.get(path)
            if entry is None:
                self._pending[path] = _Pending(folder.root)
            else:  # written again: the window restarts at the next check
                entry.fp = None
                entry.gen += 1

    def _accepts(self, folder: _Folder, path: str) -> bool:
        if not is_inside(folder.root, path):
            return False
        if not folder.spec.recursive and "/" in rel_under(folder.root, path):
            return False
        return not any(path == ex or is_inside(ex, path) for ex in folder.excluded)

    async def _scan_folder(self, folder: _Folder) -> None:
        async with self._scan_lock:
            if not folder.up:
                return
            try:
                found = await self._in_thread(scan_tree, folder.root, folder.spec.recursive, folder.excluded)
            except OSError as exc:
                log.warning("cannot scan %r: %s", folder.root, exc)
                self._health_wanted.set()
                return
            now = time.monotonic()
            for i, (path, size, mtime_ns) in enumerate(found):
                if i and i % _APPLY_CHUNK == 0:
                    await asyncio.sleep(0)  # let events and callbacks through on huge folders
                fp = (size, mtime_ns)
                if path not in self._pending and fp not in self._settled.get(path, ()):
                    self._pending[path] = _Pending(folder.root, fp, now)
            self._scans += 1

    async def _check_pending(self) -> None:
        if not self._pending:
            return
        batch = [(path, entry, entry.gen) for path, entry in self._pending.items()]
        before = time.monotonic()
        results = await self._in_thread(fingerprints, [path for path, _, _ in batch])
        after = time.monotonic()
        for index, ((path, entry, gen), fp) in enumerate(zip(batch, results, strict=True)):
            if index and index % _SETTLE_CHUNK == 0:
                await asyncio.sleep(0)  # a burst must not freeze the API sharing this loop
            if self._pending.get(path) is not entry or entry.gen != gen:
                continue  # an event or a drop arrived while we were stat-ing
            if fp is None or fp in self._settled.get(path, ()):
                del self._pending[path]
                continue
            if entry.fp != fp:
                # Changed (or first look): the window starts now, after the stat, never earlier.
                entry.fp, entry.since = fp, after
                if self._stability > 0:
                    continue
            elif before - entry.since < self._stability:
                continue
            del self._pending[path]
            self._settle(entry.root, path, fp)

    def _settle(self, root: str, path: str, fp: Fingerprint) -> None:
        rel = rel_under(root, path)
        if is_temporary_rel(rel):
            self._call(self._on_ignored, Path(path), IgnoreReason.TEMPORARY)
        elif leads_outside(self._real_roots.get(root, root), path):
            self._call(self._on_ignored, Path(path), IgnoreReason.OUTSIDE_WATCH_FOLDER)
        else:
            try:
                self._on_stable(StableFile(Path(path), Path(root), rel, fp[0], fp[1]))
            except BulletproofError as exc:
                # Not settled: the next rescan offers the file again (say the store was full).
                log.warning("file not taken, offered again at the next rescan: %s", exc)
                return
            except Exception:
                log.exception("watcher callback on_stable raised; the next rescan offers the file again")
                return
        # Only now: a file whose hand-over failed must stay visible to the rescans.
        self._settled[path] = (*self._settled.get(path, ()), fp)

    async def _in_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._executor, functools.partial(fn, *args))

    @staticmethod
    def _call(callback: Callable[..., object], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("watcher callback %r raised", getattr(callback, "__name__", callback))
