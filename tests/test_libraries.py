"""Libraries: one storage mounted at a different place on each node, one queue for all of them.

The mapping both ways and its refusals; then real monitors: node A queues through one mount,
node B runs the jobs through another (SQLite, one after the other), a node without the library
leaves them queued and touches nothing, hostile rows stay inside the folders, two monitors on one
PostgreSQL store watching one folder through two mounts queue each file version once.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bulletproof import events as ev
from bulletproof.config import Config, load_config
from bulletproof.errors import ConfigError, PathError, UnknownLibrary
from bulletproof.libraries import PathMap, split_fleet_path
from bulletproof.models import FailureReason, IgnoreReason, JobState
from bulletproof.safe_yaml import load_yaml
from bulletproof.service import Monitor
from bulletproof.state import QueueState
from bulletproof.store import NewJob
from bulletproof.store_factory import open_store
from tests.api_fixtures import Api, ApiFactory, api_factory_fixture  # noqa: F401
from tests.conftest import until, write_config

MAP_A = PathMap({"media": Path("/mnt/nas/media"), "tv": Path("/srv/tv")})
MAP_B = PathMap({"media": Path("/Volumes/media")})


# -- the mapping ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("local", "fleet"), [
    ("/mnt/nas/media/incoming/a.mp4", "media:incoming/a.mp4"),
    ("/mnt/nas/media/incoming", "media:incoming"),
    ("/mnt/nas/media", "media:"),
    ("/srv/tv/show s01/e01 (1).mkv", "tv:show s01/e01 (1).mkv"),
    ("/mnt/nas/media2/a.mp4", "/mnt/nas/media2/a.mp4"),  # a prefix string, not a sub-folder
    ("/mnt/nas/other/a.mp4", "/mnt/nas/other/a.mp4"),  # under no library: the local path
])
def test_to_fleet_names_the_library_and_the_path_inside_it(local: str, fleet: str) -> None:
    assert MAP_A.to_fleet(Path(local)) == fleet
    assert MAP_A.to_local(fleet) == Path(local)  # and back, on the same node


def test_another_node_reads_the_same_fleet_path_under_its_own_root() -> None:
    fleet = MAP_A.to_fleet(Path("/mnt/nas/media/incoming/sub/a.mp4"))
    assert MAP_B.to_local(fleet) == Path("/Volumes/media/incoming/sub/a.mp4")
    assert MAP_B.to_fleet(MAP_B.to_local(fleet)) == fleet
    assert MAP_B.to_local("media:") == Path("/Volumes/media")


def test_without_libraries_a_path_is_stored_exactly_as_it_is() -> None:
    none = PathMap()
    for raw in ("/data/in/a.mp4", "/data/in/with:colon.mp4", "/data/in/ä é.mov"):
        assert none.to_fleet(Path(raw)) == str(Path(raw)) == raw
        assert none.to_local(raw) == Path(raw)


def test_a_fleet_form_is_never_a_local_path() -> None:
    assert split_fleet_path("media:incoming/a.mp4") == ("media", "incoming/a.mp4")
    assert split_fleet_path("/media:incoming/a.mp4") is None  # absolute: a local path
    with pytest.raises(PathError, match="neither an absolute local path nor a library path"):
        MAP_A.to_local("incoming/a.mp4")
    with pytest.raises(PathError, match="neither an absolute local path nor a library path"):
        MAP_A.to_local("Media:incoming/a.mp4")


def test_a_library_this_node_does_not_have_is_a_clear_error() -> None:
    with pytest.raises(UnknownLibrary) as refused:
        MAP_B.to_local("tv:show/e01.mkv")
    assert str(refused.value) == (
        "the library 'tv' of tv:show/e01.mkv is not configured on this node (its libraries: "
        "media); add it under `libraries` to use the path here")
    assert refused.value.library == "tv" and isinstance(refused.value, PathError)
    with pytest.raises(UnknownLibrary, match=r"\(its libraries: none\)"):
        PathMap().to_local("media:a.mp4")


@pytest.mark.parametrize(("fleet", "says"), [
    ("media:../etc/passwd", "has a '.' or '..' part"),
    ("media:incoming/../../../etc/passwd", "has a '.' or '..' part"),
    ("media:incoming/./a.mp4", "has a '.' or '..' part"),
    ("media:..", "has a '.' or '..' part"),
    ("media:/etc/passwd", "has an absolute part after the library"),
    ("media:incoming/a\x00.mp4", "contains a NUL character"),
])
def test_a_hostile_relative_part_is_refused(fleet: str, says: str) -> None:
    with pytest.raises(PathError, match=says):
        MAP_A.to_local(fleet)


# -- the config key ------------------------------------------------------------------------------


def _libraries(tmp_path: Path, libraries: Any) -> dict[str, Path]:
    return load_config(write_config(tmp_path, libraries=libraries)).libraries


def _refusals(tmp_path: Path, libraries: Any) -> list[str]:
    with pytest.raises(ConfigError) as refused:
        _libraries(tmp_path, libraries)
    return [str(issue) for issue in refused.value.issues]


def test_the_default_is_no_libraries(tmp_path: Path) -> None:
    assert load_config(write_config(tmp_path)).libraries == {}


def test_roots_are_absolute_and_normalised(tmp_path: Path) -> None:
    assert _libraries(tmp_path, {"media": "/mnt/media/", "media2": "/mnt/media2",
                                 "tv_4k-1": "/srv//tv"}) == {
        "media": Path("/mnt/media"), "media2": Path("/mnt/media2"), "tv_4k-1": Path("/srv/tv")}
    assert _refusals(tmp_path, {"media": "nas/media"}) == [
        "libraries.media: must be an absolute path (this node's mount point of the library), "
        "not 'nas/media'"]


def test_nested_or_shared_roots_and_bad_ids_are_refused(tmp_path: Path) -> None:
    assert _refusals(tmp_path, {"media": "/mnt/media", "tv": "/mnt/media/tv"}) == [
        "libraries.tv: /mnt/media/tv lies inside library 'media' (/mnt/media): library roots "
        "must not be nested"]
    assert _refusals(tmp_path, {"a": "/mnt/media", "b": "/mnt/media/"}) == [
        "libraries.b: the same folder as library 'a' (/mnt/media): each library needs a root "
        "of its own"]
    bad_id = ("not a library id: lower-case letters, digits, '-' and '_', starting with a "
              "letter or a digit")
    assert _refusals(tmp_path, {"Media": "/a", "-x": "/b", "a:b": "/c", "a/b": "/d"}) == [
        f"libraries.{name}: {bad_id}" for name in ("Media", "-x", "a:b", "a/b")]


def test_a_library_id_given_twice_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text() + "libraries:\n  media: /mnt/a\n  media: /mnt/b\n")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert "invalid YAML: the key 'media' is given twice (first on line" in str(refused.value)


def test_a_key_given_twice_anywhere_is_refused_but_merge_keys_may_be_overridden(
        tmp_path: Path) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text() + "retry:\n  max_attempts: 2\n")  # `retry` is there already
    with pytest.raises(ConfigError, match=r"the key 'retry' is given twice \(first on line \d+\)"):
        load_config(path)
    merged = load_yaml("base: &b {nice: 5, threads: 2}\nffmpeg:\n  <<: *b\n  nice: 0\n")
    assert merged["ffmpeg"] == {"nice": 0, "threads": 2}


# -- nodes on one store --------------------------------------------------------------------------


def _pause(database: Path | str) -> None:
    """Pause the queue in the store before any node starts: node A must only queue."""
    store = open_store(database)
    QueueState(store).pause()
    store.close()


def _node(folder: Path, root: Path, database: Path | str, **overrides: Any) -> Config:
    """A node's config: library `media` at `root`, its folders under it."""
    folder.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {
        "libraries": {"media": str(root)}, "monitor_folder": str(root / "incoming"),
        "output_folder": str(root / "out"), "done_folder": str(root / "done"),
        "on_success": "move", "database": str(database)}
    return load_config(write_config(folder, **{**settings, **overrides}))


async def test_node_b_runs_what_node_a_queued_through_another_mount(
        tmp_path: Path, monitor_factory, clip_cache) -> None:
    storage = tmp_path / "storage"
    (storage / "incoming").mkdir(parents=True)
    mount_a, mount_b = tmp_path / "mount-a", tmp_path / "mount-b"
    mount_a.symlink_to(storage, target_is_directory=True)
    mount_b.symlink_to(storage, target_is_directory=True)
    database = tmp_path / "state" / "jobs.db"
    database.parent.mkdir()
    _pause(database)

    node_a = await monitor_factory(_node(tmp_path / "node-a", mount_a, database))
    for i in range(2):
        shutil.copy(clip_cache(), storage / "incoming" / f"clip-{i}.mp4")
    await until(lambda: node_a.view.counts()[JobState.QUEUED] == 2)
    jobs = sorted(node_a.view.list_jobs()[0], key=lambda j: j.rel_path)
    assert [(j.source_path, j.watch_folder, j.output_path) for j in jobs] == [
        (f"media:incoming/clip-{i}.mp4", "media:incoming", f"media:out/clip-{i}.mp4")
        for i in range(2)]
    await node_a.stop()
    mount_a.unlink()  # node A's mount is gone: whatever runs now can only go through mount-b

    # A node without the library leaves those jobs to others: it runs only what it can resolve.
    other = tmp_path / "other"
    (other / "incoming").mkdir(parents=True)
    (tmp_path / "node-c").mkdir()
    node_c = await monitor_factory(load_config(write_config(
        tmp_path / "node-c", libraries={"other": str(other)}, monitor_folder=str(other / "incoming"),
        output_folder=str(other / "out"), database=str(database))))
    node_c.resume_queue()
    shutil.copy(clip_cache(), other / "incoming" / "own.mp4")  # queued after node A's two
    await until(lambda: node_c.view.counts()[JobState.COMPLETED] == 1, timeout=60)
    assert [node_c.store.get(j.id).state for j in jobs] == [JobState.QUEUED, JobState.QUEUED]
    assert (other / "out" / "own.mp4").is_file()
    assert sorted(p.name for p in (storage / "incoming").iterdir()) == ["clip-0.mp4", "clip-1.mp4"]
    assert not (storage / "out").exists() or not any((storage / "out").iterdir())
    await node_c.stop()

    node_b = await monitor_factory(_node(tmp_path / "node-b", mount_b, database))
    await until(lambda: node_b.view.counts()[JobState.COMPLETED] == 3, timeout=90)
    assert node_b.view.list_jobs()[1] == 3  # node B's own scans found the same two versions
    for i in range(2):
        job = node_b.store.get(jobs[i].id)
        assert job.output_path == f"media:out/clip-{i}.mp4"
        assert (storage / "out" / f"clip-{i}.mp4").stat().st_size == job.output_bytes
        assert (storage / "done" / f"clip-{i}.mp4").is_file()  # moved: the very file read
    assert not any(p.suffix == ".mp4" for p in (storage / "incoming").iterdir())


async def test_hostile_rows_never_lead_a_node_out_of_its_folders(
        tmp_path: Path, monitor_factory, clip_cache) -> None:
    storage = tmp_path / "storage"
    (storage / "incoming").mkdir(parents=True)
    (storage / "elsewhere").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    for place in (outside / "secret.mp4", storage / "incoming" / "clip.mp4",
                  storage / "elsewhere" / "keep.mp4"):
        shutil.copy(clip_cache(), place)
    database = tmp_path / "state" / "jobs.db"
    database.parent.mkdir()
    _pause(database)
    config = _node(tmp_path / "node", storage, database, on_success="delete", done_folder=None,
                   monitor_folder=str(storage / "incoming" / "none-here"))
    node = await monitor_factory(config)

    def row(source: str, output: str, file: Path) -> int:
        # As a hostile writer of the shared database would: the real file's size and mtime.
        stat = file.stat()
        job = node.store.add(NewJob(source_path=source, rel_path=file.name,
                                    watch_folder="media:incoming", size=stat.st_size,
                                    mtime_ns=stat.st_mtime_ns, profile="h264_mp4", rule="videos",
                                    output_path=output))
        assert job is not None
        return job.id

    escaping_source = row("media:../outside/secret.mp4", "media:out/secret.mp4",
                          outside / "secret.mp4")
    escaping_output = row("media:incoming/clip.mp4", "media:out/../../escape.mp4",
                          storage / "incoming" / "clip.mp4")
    unwatched_source = row("media:elsewhere/keep.mp4", "media:out/keep.mp4",
                           storage / "elsewhere" / "keep.mp4")
    node.resume_queue()
    await until(lambda: node.view.counts()[JobState.FAILED] == 2
                and node.view.counts()[JobState.COMPLETED] == 1, timeout=60)
    job = node.store.get(escaping_source)
    assert job.reason == FailureReason.INPUT_INVALID.value and "'..' part" in (job.error or "")
    job = node.store.get(escaping_output)
    assert job.reason == FailureReason.OUTPUT_PATH_INVALID.value and "'..' part" in (job.error or "")
    assert (outside / "secret.mp4").is_file() and not (tmp_path / "escape.mp4").exists()
    assert (storage / "incoming" / "clip.mp4").is_file()
    # Transcoded, but on_success: delete removes only sources in this node's watch folders.
    assert (storage / "out" / "keep.mp4").is_file()
    assert node.store.get(unwatched_source).state is JobState.COMPLETED
    assert (storage / "elsewhere" / "keep.mp4").is_file()


async def test_without_libraries_the_store_keeps_absolute_local_paths(
        tmp_path: Path, monitor_factory, clip_cache) -> None:
    config = load_config(write_config(tmp_path))
    database = Path(config.database)
    database.parent.mkdir(parents=True, exist_ok=True)
    _pause(database)
    node = await monitor_factory(config)
    shutil.copy(clip_cache(), tmp_path / "incoming" / "clip.mp4")
    await until(lambda: node.view.counts()[JobState.QUEUED] == 1)
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT source_path, watch_folder, output_path FROM jobs").fetchall()
    assert rows == [(str(tmp_path / "incoming" / "clip.mp4"), str(tmp_path / "incoming"),
                     str(tmp_path / "processed" / "clip.mp4"))]


async def test_configuring_a_library_later_does_not_redo_what_was_done(
        tmp_path: Path, monitor_factory, clip_cache, ffmpeg_binaries) -> None:
    path = write_config(tmp_path)
    shutil.copy(clip_cache(), tmp_path / "incoming" / "clip.mp4")
    before = await monitor_factory(load_config(path))
    await until(lambda: before.view.counts()[JobState.COMPLETED] == 1, timeout=60)
    await before.stop()
    # The same node, now with a library over its folders: the file is not queued again.
    ignored: list[str] = []
    bus = ev.EventBus()
    bus.subscribe(lambda e: ignored.append(Path(e.path).name)
                  if isinstance(e, ev.FileIgnored) and e.reason is IgnoreReason.ALREADY_DONE
                  else None)
    node = Monitor(load_config(write_config(tmp_path, libraries={"media": str(tmp_path)})),
                   binaries=ffmpeg_binaries, bus=bus)
    await node.start()
    try:
        await until(lambda: "clip.mp4" in ignored)
        jobs, total = node.view.list_jobs()
    finally:
        await node.stop()
    assert total == 1 and jobs[0].source_path == str(tmp_path / "incoming" / "clip.mp4")


async def test_two_nodes_on_postgresql_through_two_mounts_queue_each_version_once(
        tmp_path: Path, postgres_url: str, monitor_factory, clip_cache) -> None:
    pytest.importorskip("psycopg", reason="psycopg is not installed (the postgres extra)")
    storage = tmp_path / "storage"
    (storage / "incoming").mkdir(parents=True)
    mounts = [tmp_path / "mount-a", tmp_path / "mount-b"]
    for mount in mounts:
        mount.symlink_to(storage, target_is_directory=True)
    _pause(postgres_url)
    nodes = [await monitor_factory(_node(tmp_path / f"node-{i}", mount, postgres_url,
                                         on_success="keep", done_folder=None))
             for i, mount in enumerate(mounts)]
    seen: list[set[str]] = [set(), set()]  # per node: the files it queued or found queued

    def recorder(names: set[str]):
        def record(event: ev.Event) -> None:
            if isinstance(event, ev.JobQueued):
                names.add(event.job.rel_path)
            elif isinstance(event, ev.FileIgnored) and event.reason is IgnoreReason.ALREADY_DONE:
                names.add(Path(event.path).name)
        return record

    for node, names in zip(nodes, seen, strict=True):
        node.bus.subscribe(recorder(names))
    (storage / "out").mkdir(exist_ok=True)
    (storage / "out" / "clip-2.mp4").write_bytes(b"no job wrote this")  # a name taken on disk
    files = {"clip-0.mp4", "clip-1.mp4", "clip-2.mp4"}
    for name in files:
        shutil.copy(clip_cache(), storage / "incoming" / name)
    shutil.copy(clip_cache(suffix=".mov"), storage / "incoming" / "clip-0.mov")  # -> clip-0.mp4
    files.add("clip-0.mov")
    await until(lambda: seen[0] == files and seen[1] == files, timeout=30)
    jobs, total = nodes[1].view.list_jobs()
    assert total == 4  # each version once, whichever mount it was seen through
    assert sorted(j.source_path for j in jobs) == sorted(f"media:incoming/{n}" for n in files)
    # Output names are reserved across nodes, and a file on disk is found through this mount.
    outputs = {j.rel_path: j.output_path for j in jobs}
    assert outputs["clip-2.mp4"] == "media:out/clip-2 (1).mp4"
    assert outputs["clip-1.mp4"] == "media:out/clip-1.mp4"
    assert sorted([outputs["clip-0.mp4"], outputs["clip-0.mov"]]) == [
        "media:out/clip-0 (1).mp4", "media:out/clip-0.mp4"]


async def test_the_api_takes_local_paths_and_shows_fleet_paths(
        tmp_path: Path, api_factory: ApiFactory, clip_cache) -> None:
    api: Api = await api_factory(libraries={"media": str(tmp_path)})
    await api.post("/api/v1/queue/pause")
    (api.incoming / "sub").mkdir()
    shutil.copy(clip_cache(), api.incoming / "sub" / "manual.mp4")
    status, job = await api.post("/api/v1/jobs", json={"path": "sub/manual.mp4"})
    assert status == 201, job
    status, detail = await api.get(f"/api/v1/jobs/{job['id']}")
    assert status == 200
    assert (detail["source_path"], detail["watch_folder"], detail["output_path"]) == (
        "media:incoming/sub/manual.mp4", "media:incoming", "media:processed/sub/manual.mp4")
    assert detail["rel_path"] == "sub/manual.mp4" and detail["filename"] == "manual.mp4"
    # The same file by its absolute local path: the version already waits (the lookup compares
    # fleet forms), and a fleet path is no path the API takes.
    absolute = str(api.incoming / "sub" / "manual.mp4")
    status, body = await api.post("/api/v1/jobs", json={"path": absolute})
    assert status == 409, body
    status, body = await api.post("/api/v1/jobs", json={"path": "media:incoming/sub/manual.mp4"})
    assert status == 422 and body["error"]["code"] == "invalid_path", body
