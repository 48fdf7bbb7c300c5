"""Putting a finished file at its output name: once, idempotently, and never over another file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bulletproof.errors import StoreError, TranscodeError
from bulletproof.models import FailureReason, JobState
from bulletproof.paths import temp_path_for
from bulletproof.publication import KeptSource, OutputPublication, remove_earlier_attempts
from bulletproof.sqlite_store import SqliteJobStore
from bulletproof.store import NewJob


def test_placing_again_after_a_lost_commit_is_a_no_op(tmp_path: Path) -> None:
    temp, output = tmp_path / ".a.bp-tmp-1-1.mp4", tmp_path / "a.mp4"
    temp.write_bytes(b"transcoded")
    publication = OutputPublication(temp, output, replace_existing=False)
    assert not publication.placed()
    publication.place()
    assert output.read_bytes() == b"transcoded" and not temp.exists() and publication.placed()
    publication.place()  # the retry of a transaction whose commit answer was lost
    assert output.read_bytes() == b"transcoded"


def test_a_file_at_the_name_is_not_ours_and_is_left_alone(tmp_path: Path) -> None:
    temp, output = tmp_path / ".a.bp-tmp-1-2.mp4", tmp_path / "a.mp4"
    temp.write_bytes(b"mine")
    output.write_bytes(b"another node's")
    publication = OutputPublication(temp, output, replace_existing=False)
    assert not publication.placed()
    with pytest.raises(TranscodeError) as refused:
        publication.place()
    assert refused.value.reason is FailureReason.OUTPUT_CONFLICT
    publication.discard()
    assert output.read_bytes() == b"another node's" and not temp.exists()


@pytest.mark.parametrize("action", ["copy", "link"])
def test_a_kept_source_is_staged_then_placed_once(tmp_path: Path, action: str) -> None:
    source, output = tmp_path / "in.mp4", tmp_path / "out" / "in.mp4"
    source.write_bytes(b"source")
    kept = KeptSource(source, output, temp_path_for(output, 7, attempt=1), action)
    kept.stage()
    assert kept.size == 6 and not output.exists()  # nothing shows before the fenced write
    kept.place()
    kept.place()
    assert output.read_bytes() == b"source" and kept.placed()
    assert (output.stat().st_ino == source.stat().st_ino) is (action == "link")
    assert sorted(p.name for p in output.parent.iterdir()) == ["in.mp4"]


def test_a_kept_source_never_replaces_a_file(tmp_path: Path) -> None:
    source, output = tmp_path / "in.mp4", tmp_path / "in-out.mp4"
    source.write_bytes(b"source")
    kept = KeptSource(source, output, tmp_path / ".in-out.bp-tmp-7-1.mp4", "copy")
    kept.stage()
    output.write_bytes(b"appeared meanwhile")
    with pytest.raises(FileExistsError):
        kept.place()
    kept.discard()
    assert output.read_bytes() == b"appeared meanwhile"
    assert sorted(os.listdir(tmp_path)) == ["in-out.mp4", "in.mp4"]
    with pytest.raises(FileExistsError):
        KeptSource(source, output, tmp_path / ".t", "link").stage()


def test_a_new_claim_removes_only_earlier_attempts_temporaries(tmp_path: Path) -> None:
    output = tmp_path / "a.mp4"
    temps = {n: temp_path_for(output, 5, attempt=n) for n in (1, 2, 3, 4)}
    for path in temps.values():
        path.write_bytes(b"x")
    other_job = temp_path_for(output, 6, attempt=1)
    other_job.write_bytes(b"x")
    assert remove_earlier_attempts(output, 5, 3) == [temps[1], temps[2]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [temps[3].name, temps[4].name, other_job.name])


def test_a_publish_whose_commit_was_lost_is_recorded_by_the_retry_without_a_second_rename(
        tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.db")
    try:
        output = tmp_path / "out" / "a.mp4"
        output.parent.mkdir()
        store.add(NewJob(source_path="/in/a.mp4", rel_path="a.mp4", watch_folder="/in", size=1,
                         mtime_ns=1, profile="h264_mp4", rule="videos", output_path=str(output)))
        claim = store.claim("n1", now=1, lease_seconds=60)
        assert claim is not None
        temp = temp_path_for(output, claim.job.id, attempt=claim.token)
        temp.write_bytes(b"transcoded")
        publication = OutputPublication(temp, output, replace_existing=False)

        def placed_then_lost() -> None:  # the rename happens, the commit never does
            publication.place()
            raise StoreError("job store write failed: server closed the connection", path="db")

        with pytest.raises(StoreError):
            store.mark_completed(claim.job.id, now=2, output_bytes=10, media_duration=None,
                                 token=claim.token, publish=placed_then_lost)
        assert store.get(claim.job.id).state is JobState.PROCESSING and output.exists()
        inode = output.stat().st_ino
        done = store.mark_completed(claim.job.id, now=3, output_bytes=10, media_duration=None,
                                    token=claim.token, publish=publication.place)
        assert done.state is JobState.COMPLETED and output.stat().st_ino == inode
        assert sorted(p.name for p in output.parent.iterdir()) == ["a.mp4"]
    finally:
        store.close()
