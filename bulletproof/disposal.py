"""What `on_success` does to a source: only to the very file transcoded, never over another file."""

from __future__ import annotations

import logging
import os
import shutil
from enum import StrEnum
from pathlib import Path

from bulletproof.config import Config
from bulletproof.errors import PathError
from bulletproof.models import Job
from bulletproof.paths import candidate_paths, confine, done_path_for, is_within

log = logging.getLogger(__name__)


class SourceCheck(StrEnum):
    """Whether the file at a job's source path is the one the job read."""

    SAME = "same"
    GONE = "gone"
    UNKNOWN = "unknown"  # the job never recorded which file it read
    REPLACED = "replaced"  # same size and mtime, another file: only the inode tells
    CHANGED = "changed"  # rewritten: the watcher sees a new version and queues it


def check_source(job: Job, source: Path) -> SourceCheck:
    """Compare the file at `source` with what the job read (inode, size, mtime)."""
    try:
        st = source.lstat()
    except FileNotFoundError:
        return SourceCheck.GONE
    if job.source_inode is None:
        return SourceCheck.UNKNOWN
    same_version = (st.st_size, st.st_mtime_ns) == (job.size, job.mtime_ns)
    if not same_version:
        return SourceCheck.CHANGED
    return SourceCheck.SAME if st.st_ino == job.source_inode else SourceCheck.REPLACED


def free_done_path(config: Config, job: Job) -> Path:
    """The done-folder name for the source: `name (1).ext` when an earlier file has the name."""
    assert config.done_folder is not None
    wanted = done_path_for(config, job.rel_path)
    for candidate in candidate_paths(wanted):
        if not os.path.lexists(candidate):
            if candidate != wanted:
                log.info("done folder already has the name; renamed",
                         extra={"job": job.id, "wanted": str(wanted), "path": str(candidate)})
            return confine(candidate, config.done_folder, "done-folder")
    raise PathError(f"no free name for {wanted} in the done folder", path=str(wanted))


def dispose_source(config: Config, job: Job, source: Path) -> SourceCheck:
    """Delete or move a completed job's source (`source`: its path on this node) as `on_success`
    says, if it is the file read and lies in one of this node's watch folders.

    Returns what the check found; only `SAME` sources are touched. Raises OSError or PathError
    when the delete or move itself fails, or the source lies in no watch folder.
    """
    # A row of a shared store names the source: only what this node watches may be removed.
    if not any(is_within(source, folder.path) and source != folder.path
               for folder in config.monitor_folder):
        raise PathError(f"the source {source} lies in none of this node's watch folders; "
                        "it is left in place", path=str(source))
    found = check_source(job, source)
    if found is not SourceCheck.SAME:
        if found is not SourceCheck.GONE:
            log.warning("the source is not the file its job read; it is left in place",
                        extra={"job": job.id, "source": job.source_path, "check": found.value})
        return found
    if config.on_success == "delete":
        source.unlink()
    elif config.on_success == "move" and config.done_folder is not None:
        target = free_done_path(config, job)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(os.fspath(source), os.fspath(target))
    return found
