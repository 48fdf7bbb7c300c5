"""The watcher does not follow a symlink out of its watch folder: real symlinks to /etc/passwd, to
a folder outside, and a watch folder that is itself a symlink."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bulletproof import events as ev
from bulletproof.config import WatchFolder
from bulletproof.models import IgnoreReason
from bulletproof.service import Monitor
from tests.conftest import until
from tests.test_watcher import MakeWatcher, make_watcher, scan_only, write  # noqa: F401 (fixture)

MODES = pytest.mark.parametrize("polling", [False, True], ids=["events", "scans-only"])


def folder_spec(path: Path, polling: bool) -> WatchFolder:
    return scan_only(path) if polling else WatchFolder(path=path)


@MODES
async def test_a_symlink_to_a_file_outside_is_ignored(tmp_path: Path,
                                                      make_watcher: MakeWatcher,  # noqa: F811
                                                      polling: bool) -> None:
    watched = tmp_path / "in"
    write(watched / "ok.mp4")
    (watched / "passwd.mp4").symlink_to("/etc/passwd")
    (watched / "inner.mp4").symlink_to(watched / "ok.mp4")  # inside, pointing inside: fine
    _, rec = await make_watcher(folder_spec(watched, polling), rescan=0.2)
    await until(lambda: sorted(rec.rels()) == ["inner.mp4", "ok.mp4"]
                and (watched / "passwd.mp4", IgnoreReason.OUTSIDE_WATCH_FOLDER) in rec.ignored)
    # One made later, seen by an event or the next rescan, is ignored the same way (once).
    (watched / "shadow.mp4").symlink_to(tmp_path / "secret.mp4")
    write(tmp_path / "secret.mp4")
    await until(lambda: (watched / "shadow.mp4", IgnoreReason.OUTSIDE_WATCH_FOLDER) in rec.ignored)
    write(watched / "later.mp4")
    await until(lambda: "later.mp4" in rec.rels())
    assert sorted(rec.rels()) == ["inner.mp4", "later.mp4", "ok.mp4"]
    assert [p for p, _ in rec.ignored].count(watched / "passwd.mp4") == 1


@MODES
async def test_a_symlinked_folder_is_not_entered(tmp_path: Path,
                                                 make_watcher: MakeWatcher,  # noqa: F811
                                                 polling: bool) -> None:
    outside = tmp_path / "outside"
    write(outside / "video.mp4")
    watched = tmp_path / "in"
    watched.mkdir()
    (watched / "linked").symlink_to(outside, target_is_directory=True)
    _, rec = await make_watcher(folder_spec(watched, polling), rescan=0.2)
    write(outside / "new.mp4")
    write(watched / "sentinel.mp4")
    await until(lambda: "sentinel.mp4" in rec.rels())
    write(watched / "sentinel2.mp4")  # a further rescan (or event) has come and gone
    await until(lambda: "sentinel2.mp4" in rec.rels())
    assert sorted(rec.rels()) == ["sentinel.mp4", "sentinel2.mp4"]


async def test_a_watch_folder_that_is_a_symlink_still_works(tmp_path: Path,
                                                            make_watcher: MakeWatcher,  # noqa: F811
                                                            ) -> None:
    real = tmp_path / "real"
    write(real / "a.mp4")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    _, rec = await make_watcher(link, rescan=0.2)
    await until(lambda: rec.rels() == ["a.mp4"])
    assert rec.ignored == []


async def test_the_monitor_never_queues_or_deletes_through_a_symlink(config_factory, ffmpeg_binaries,
                                                                     tmp_path: Path, clip_cache) -> None:
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    target = sentinel / "victim.mp4"
    target.write_bytes(clip_cache().read_bytes())
    before = target.read_bytes()
    config, path = config_factory(on_success="delete")
    (config.monitor_folder[0].path / "victim.mp4").symlink_to(target)
    (config.monitor_folder[0].path / "passwd.mp4").symlink_to("/etc/passwd")
    seen: list[ev.Event] = []
    bus = ev.EventBus()
    bus.subscribe(seen.append)
    monitor = Monitor(config, config_path=path, binaries=ffmpeg_binaries, bus=bus)
    await monitor.start()
    try:
        await until(lambda: sum(isinstance(e, ev.FileIgnored) for e in seen) == 2)
        assert {e.reason for e in seen if isinstance(e, ev.FileIgnored)} \
            == {IgnoreReason.OUTSIDE_WATCH_FOLDER}
        assert monitor.view.list_jobs(limit=10)[0] == []
    finally:
        await monitor.stop()
    assert target.read_bytes() == before and os.path.islink(config.monitor_folder[0].path / "victim.mp4")
