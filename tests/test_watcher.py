"""FolderWatcher against real files and real watchdog observers."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bulletproof.config import WatchFolder
from bulletproof.models import IgnoreReason
from bulletproof.watcher import FolderWatcher, StableFile
from tests.conftest import until as poll_until

MakeWatcher = Callable[..., Awaitable[tuple[FolderWatcher, "Recorder"]]]


@dataclass
class Recorder:
    """Collects every callback, with the monotonic time of each stable report."""

    stable: list[tuple[float, StableFile]] = field(default_factory=list)
    ignored: list[tuple[Path, IgnoreReason]] = field(default_factory=list)
    status: list[tuple[Path, bool, str | None]] = field(default_factory=list)

    def on_stable(self, item: StableFile) -> None:
        self.stable.append((time.monotonic(), item))

    def on_ignored(self, path: Path, reason: IgnoreReason) -> None:
        self.ignored.append((path, reason))

    def on_status(self, folder: Path, up: bool, error: str | None) -> None:
        self.status.append((folder, up, error))

    def rels(self) -> list[str]:
        return [s.rel_path for _, s in self.stable]

    def reported(self, rel: str) -> list[StableFile]:
        return [s for _, s in self.stable if s.rel_path == rel]


async def until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    """conftest's `until`, with this file's shorter default and finer polling."""
    await poll_until(pred, timeout, interval=0.02)


def write(path: Path, data: bytes = b"x" * 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def scan_only(path: Path, recursive: bool = True) -> WatchFolder:
    """A folder whose events never arrive (poll once an hour): only the rescans can find files."""
    return WatchFolder(path=path, recursive=recursive, polling=True, poll_interval=3600)


@pytest.fixture
async def make_watcher() -> AsyncIterator[MakeWatcher]:
    watchers: list[FolderWatcher] = []

    async def make(
        folders: WatchFolder | Path | list[WatchFolder],
        *,
        stability: float = 0.3,
        rescan: float = 30.0,
        excluded: list[Path] | None = None,
        recorder: Recorder | None = None,
    ) -> tuple[FolderWatcher, Recorder]:
        if isinstance(folders, Path):
            folders = WatchFolder(path=folders)
        rec = recorder or Recorder()
        watcher = FolderWatcher(
            folders if isinstance(folders, list) else [folders],
            stability_seconds=stability,
            rescan_interval=rescan,
            excluded=excluded or [],
            on_stable=rec.on_stable,
            on_ignored=rec.on_ignored,
            on_folder_status=rec.on_status,
        )
        watchers.append(watcher)
        await watcher.start()
        return watcher, rec

    yield make
    for watcher in watchers:
        await watcher.stop()


async def test_initial_scan_recursive(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    write(tmp_path / "a.mp4")
    write(tmp_path / "sub" / "b.mp4", b"12345")
    write(tmp_path / "sub" / "deep" / "c.mkv")
    watcher, rec = await make_watcher(tmp_path)
    assert rec.status == [(tmp_path, True, None)]
    assert watcher.running and watcher.folder_status() == {tmp_path: True}
    await until(lambda: len(rec.stable) == 3)
    assert sorted(rec.rels()) == ["a.mp4", "sub/b.mp4", "sub/deep/c.mkv"]
    b = rec.reported("sub/b.mp4")[0]
    assert b.path == tmp_path / "sub" / "b.mp4" and b.watch_folder == tmp_path
    assert b.size == 5 and b.mtime_ns == (tmp_path / "sub" / "b.mp4").stat().st_mtime_ns
    assert watcher.pending_count() == 0


@pytest.mark.parametrize("polling", [False, True], ids=["events", "scans-only"])
async def test_non_recursive_ignores_sub_folders(tmp_path: Path, make_watcher: MakeWatcher, polling: bool) -> None:
    write(tmp_path / "a.mp4")
    write(tmp_path / "sub" / "b.mp4")
    folder = scan_only(tmp_path, recursive=False) if polling else WatchFolder(path=tmp_path, recursive=False)
    _, rec = await make_watcher(folder, rescan=0.2)
    await until(lambda: rec.rels() == ["a.mp4"])
    write(tmp_path / "sub" / "late.mp4")
    write(tmp_path / "sentinel.mp4")  # found after late.mp4 existed, by event or by a later scan
    await until(lambda: "sentinel.mp4" in rec.rels())
    assert sorted(rec.rels()) == ["a.mp4", "sentinel.mp4"]


async def test_new_file_waits_for_the_stability_window(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    _, rec = await make_watcher(tmp_path, stability=1.0)
    with open(tmp_path / "new.mp4", "wb") as handle:
        handle.write(b"data" * 1000)
        handle.flush()
        last_write = time.monotonic()
    await until(lambda: rec.stable != [], timeout=5)
    reported_at, item = rec.stable[0]
    assert reported_at - last_write >= 1.0
    assert item.rel_path == "new.mp4" and item.size == 4000


async def test_slow_copy_is_reported_once_after_the_last_chunk(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    _, rec = await make_watcher(tmp_path, stability=1.0)
    chunk = b"v" * 4096
    with open(tmp_path / "big movie.mkv", "wb") as handle:
        for _ in range(10):
            handle.write(chunk)
            handle.flush()
            last_write = time.monotonic()
            await asyncio.sleep(0.3)
            assert rec.stable == [], "reported while still being written"
    await until(lambda: rec.stable != [], timeout=5)
    reported_at, item = rec.stable[0]
    assert reported_at - last_write >= 1.0
    assert item.size == 10 * len(chunk)
    write(tmp_path / "sentinel.mp4")  # events flow in order: once it is in, no second report is due
    await until(lambda: "sentinel.mp4" in rec.rels())
    assert rec.rels().count("big movie.mkv") == 1


TEMPORARY_NAMES = [
    ".hidden.mp4",
    "movie.mp4.part",
    "clip.mp4.crdownload",
    "edit.mp4~",
    ".movie.mp4.Xa81Qz",  # rsync's in-flight name
    ".out.bp-tmp-12.mp4",  # the monitor's own temporary output
    "grab.tmp",
    ".sync/inner.mp4",  # inside a hidden folder
]


async def test_temporary_names_are_ignored_once(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    for name in TEMPORARY_NAMES[:4]:
        write(tmp_path / name)
    _, rec = await make_watcher(scan_only(tmp_path), rescan=0.2)
    for name in TEMPORARY_NAMES[4:]:
        write(tmp_path / name)
    write(tmp_path / "real.mp4")
    expected = {tmp_path / name for name in TEMPORARY_NAMES}
    await until(lambda: {p for p, _ in rec.ignored} == expected and rec.rels() == ["real.mp4"])
    # Each sentinel is found by a later rescan, so the ignored files were seen again meanwhile.
    for i in range(3):
        write(tmp_path / f"sentinel{i}.mp4")
        await until(lambda i=i: f"sentinel{i}.mp4" in rec.rels())
    assert len(rec.ignored) == len(TEMPORARY_NAMES)
    assert {reason for _, reason in rec.ignored} == {IgnoreReason.TEMPORARY}
    assert sorted(rec.rels()) == ["real.mp4", "sentinel0.mp4", "sentinel1.mp4", "sentinel2.mp4"]


@pytest.mark.parametrize("spelling", ["plain", "via-symlink"])
async def test_excluded_folder_inside_the_watch_folder_is_silent(
    tmp_path: Path, make_watcher: MakeWatcher, spelling: str
) -> None:
    watched, out = tmp_path / "in", tmp_path / "in" / "out"
    write(out / "done.mp4")
    write(out / "nested" / "done2.mp4")
    excluded = out
    if spelling == "via-symlink":  # the config may name the output folder through a symlink
        excluded = tmp_path / "out-link"
        excluded.symlink_to(out)
    _, rec = await make_watcher(watched, excluded=[excluded], rescan=0.2)
    write(out / "fresh.mp4")
    write(out / ".fresh.bp-tmp-3.mp4")
    write(watched / "outside.mp4")
    await until(lambda: "outside.mp4" in rec.rels())
    write(watched / "sentinel.mp4")
    await until(lambda: "sentinel.mp4" in rec.rels())
    assert sorted(rec.rels()) == ["outside.mp4", "sentinel.mp4"]
    assert rec.ignored == []


async def test_partial_file_renamed_when_complete_is_reported_by_final_name(
    tmp_path: Path, make_watcher: MakeWatcher
) -> None:
    _, rec = await make_watcher(tmp_path, stability=0.5)
    partial = tmp_path / ".movie.mp4.Xa81Qz"  # how rsync writes before its final rename
    with open(partial, "wb") as handle:
        for _ in range(4):
            handle.write(b"p" * 1000)
            handle.flush()
            await asyncio.sleep(0.1)
    partial.rename(tmp_path / "movie.mp4")
    await until(lambda: rec.rels() == ["movie.mp4"])
    assert rec.stable[0][1].size == 4000
    assert rec.ignored == []


async def test_rescans_do_not_report_again(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    write(tmp_path / "a.mp4")
    write(tmp_path / "sub" / "b.mp4")
    watcher, rec = await make_watcher(scan_only(tmp_path), rescan=0.2)
    await until(lambda: len(rec.stable) == 2)
    for i in range(3):
        watcher.rescan_now()
        write(tmp_path / f"s{i}.mp4")
        await until(lambda i=i: f"s{i}.mp4" in rec.rels())
    assert sorted(rec.rels()) == ["a.mp4", "s0.mp4", "s1.mp4", "s2.mp4", "sub/b.mp4"]


async def test_missed_events_are_reconciled_by_the_rescan(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    _, rec = await make_watcher(scan_only(tmp_path), rescan=0.5)
    write(tmp_path / "missed.mp4")
    write(tmp_path / "deep" / "er" / "missed2.mp4")
    await until(lambda: sorted(rec.rels()) == ["deep/er/missed2.mp4", "missed.mp4"])


async def test_modified_file_is_reported_again(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    path = write(tmp_path / "a.mp4", b"first")
    _, rec = await make_watcher(tmp_path)
    await until(lambda: len(rec.stable) == 1)
    with open(path, "ab") as handle:
        handle.write(b" and more")
    await until(lambda: len(rec.stable) == 2)
    assert [s.size for _, s in rec.stable] == [5, 14]


async def test_folder_missing_at_start_comes_up_later(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    folder = tmp_path / "not yet"
    watcher, rec = await make_watcher(folder, rescan=0.5)
    assert rec.status == [(folder, False, "does not exist")]
    assert watcher.folder_status() == {folder: False}
    write(folder / "early.mp4")
    await until(lambda: rec.status[-1] == (folder, True, None))
    await until(lambda: rec.rels() == ["early.mp4"])
    write(folder / "by event.mp4")
    await until(lambda: sorted(rec.rels()) == ["by event.mp4", "early.mp4"])
    assert watcher.running


async def test_folder_removed_while_running(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    folder = tmp_path / "w"
    write(folder / "a.mp4")
    other = tmp_path / "other"
    other.mkdir()
    watcher, rec = await make_watcher([WatchFolder(path=folder), WatchFolder(path=other)], rescan=0.5)
    await until(lambda: rec.rels() == ["a.mp4"])
    shutil.rmtree(folder)
    await until(lambda: (folder, False, "does not exist") in rec.status)
    assert watcher.folder_status() == {folder: False, other: True}
    assert watcher.running  # the down folder does not count; the other one still has its observer
    write(folder / "back.mp4")
    await until(lambda: rec.status[-1] == (folder, True, None) and "back.mp4" in rec.rels())
    write(other / "o.mp4")
    await until(lambda: "o.mp4" in rec.rels())


async def test_dead_observer_is_restarted(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    watcher, rec = await make_watcher(tmp_path, rescan=0.3)
    observer = watcher._folders[0].observer  # a real watchdog observer, stopped as if it crashed
    assert observer is not None
    observer.stop()
    await until(lambda: not observer.is_alive())
    await until(lambda: watcher.running and watcher._folders[0].observer is not observer)
    write(tmp_path / "after.mp4")
    await until(lambda: rec.rels() == ["after.mp4"])
    assert rec.status == [(tmp_path, True, None)]


async def test_polling_observer_reports_new_files(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    folder = WatchFolder(path=tmp_path, polling=True, poll_interval=0.2)
    watcher, rec = await make_watcher(folder, rescan=60)
    write(tmp_path / "polled.mp4")
    write(tmp_path / "sub" / "polled2.mp4")
    await until(lambda: sorted(rec.rels()) == ["polled.mp4", "sub/polled2.mp4"])
    assert watcher.running


ODD_NAMES = ["with space.mp4", "ünïcødé 映画.mkv", "new\nline.mp4", "-leading.mp4", "sub dir/-x y.mov"]


async def test_odd_names_keep_their_rel_path(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    write(tmp_path / ODD_NAMES[0])
    _, rec = await make_watcher(tmp_path)
    for name in ODD_NAMES[1:]:
        write(tmp_path / name)
    await until(lambda: sorted(rec.rels()) == sorted(ODD_NAMES))
    for _, item in rec.stable:
        assert item.path == tmp_path / item.rel_path and item.path.is_file()


# watchdog notes (harmlessly) that it added a watch twice when sub-folders appear during its walk.
@pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")
async def test_burst_of_300_files_each_reported_once(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    watcher, rec = await make_watcher(tmp_path, rescan=0.5)
    names = {f"burst/{i // 100}/file {i:03}.mp4" for i in range(300)}
    for name in names:
        write(tmp_path / name, name.encode())
    await until(lambda: len(rec.stable) >= 300, timeout=15)
    watcher.rescan_now()
    write(tmp_path / "sentinel.mp4")
    await until(lambda: "sentinel.mp4" in rec.rels())
    counts = Counter(rec.rels())
    assert set(counts) == names | {"sentinel.mp4"}
    assert max(counts.values()) == 1


async def test_special_files_are_skipped_silently(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    target = write(tmp_path.parent / f"{tmp_path.name}-elsewhere" / "inner.mp4")
    os.symlink(target.parent, tmp_path / "linked dir")
    os.mkfifo(tmp_path / "pipe.mp4")
    (tmp_path / "empty dir").mkdir()
    write(tmp_path / "zero.mp4", b"")
    _, rec = await make_watcher(scan_only(tmp_path), rescan=0.2)
    await until(lambda: "zero.mp4" in rec.rels())
    write(tmp_path / "sentinel.mp4")
    await until(lambda: "sentinel.mp4" in rec.rels())
    assert sorted(rec.rels()) == ["sentinel.mp4", "zero.mp4"]
    assert rec.reported("zero.mp4")[0].size == 0
    assert rec.ignored == []


async def test_zero_stability_reports_on_first_check(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    write(tmp_path / "a.mp4")
    _, rec = await make_watcher(tmp_path, stability=0)
    await until(lambda: rec.rels() == ["a.mp4"], timeout=2)


async def test_raising_callbacks_do_not_kill_the_watcher(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    class Angry(Recorder):
        def on_stable(self, item: StableFile) -> None:
            super().on_stable(item)
            raise RuntimeError("boom")

        def on_status(self, folder: Path, up: bool, error: str | None) -> None:
            super().on_status(folder, up, error)
            raise RuntimeError("boom")

    write(tmp_path / "a.mp4")
    watcher, rec = await make_watcher(tmp_path, recorder=Angry())
    await until(lambda: rec.rels() == ["a.mp4"])
    write(tmp_path / "b.mp4")
    await until(lambda: sorted(rec.rels()) == ["a.mp4", "b.mp4"])
    assert watcher.running


async def test_stop_is_idempotent(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    watcher, rec = await make_watcher(tmp_path)
    assert watcher.running
    await watcher.stop()
    await watcher.stop()
    assert not watcher.running
    write(tmp_path / "late.mp4")
    watcher.rescan_now()
    assert watcher.pending_count() == 0 and rec.stable == []
